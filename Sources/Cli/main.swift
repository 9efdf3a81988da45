print("actor-vmm")
