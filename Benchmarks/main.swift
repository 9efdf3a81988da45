// actor-vmm-bench: device-path latency benchmarks (exit round trips per hand-off strategy, notify path,
// virtio-blk service time, placement, VMM start and memory). Not written yet; see docs/status.md.
import Glibc

let message = "actor-vmm-bench: not implemented yet (see docs/status.md)\n"
_ = message.utf8CString.withUnsafeBufferPointer { write(2, $0.baseAddress, $0.count - 1) }
exit(1)
