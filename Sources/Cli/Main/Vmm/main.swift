import Cli

// actor-vmm: the VMM (Sources/Cli/VmmProgram.swift).
VmmProgram.run(Array(CommandLine.arguments.dropFirst()))
