import Cli
import Glibc

// actor-vmm-remote: the API client (Sources/Cli/Remote/RemoteCommand.swift).
exit(RemoteCommand.run(Array(CommandLine.arguments.dropFirst())))
