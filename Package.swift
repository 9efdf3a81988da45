// swift-tools-version: 6.1
// ActorVMM: a KVM virtual machine monitor whose devices are actors on epoll executors.
// Toolchain libraries only (Glibc, Synchronization, Swift Testing): no package dependencies.
import PackageDescription

let strict: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
]

let package = Package(
    name: "ActorVmm",
    products: [
        .executable(name: "actor-vmm", targets: ["Cli"]),
        // The same program: it runs as the API client when invoked as actor-vmm-remote (see main.swift).
        .executable(name: "actor-vmm-remote", targets: ["Cli"]),
        .executable(name: "actor-vmm-bench", targets: ["Benchmarks"]),
    ],
    targets: [
        // <linux/kvm.h>, epoll, eventfd, termios helpers and ioctl wrappers (ioctl is variadic).
        .target(name: "CKvm", cSettings: [.define("_GNU_SOURCE")]),
        .target(name: "EpollLoop", dependencies: ["CKvm"], swiftSettings: strict),
        .target(name: "ActorVmm", dependencies: ["CKvm", "EpollLoop"], swiftSettings: strict),
        .target(name: "Devices", dependencies: ["ActorVmm", "EpollLoop", "CKvm"], swiftSettings: strict),
        .target(name: "Boot", dependencies: ["ActorVmm", "CKvm"], swiftSettings: strict),
        .executableTarget(
            name: "Cli",
            dependencies: ["ActorVmm", "Devices", "Boot", "EpollLoop", "CKvm"],
            swiftSettings: strict,
            linkerSettings: [.unsafeFlags(["-static-stdlib"], .when(configuration: .release))]
        ),
        .executableTarget(
            name: "Benchmarks",
            dependencies: ["ActorVmm", "Devices", "Boot", "EpollLoop", "CKvm"],
            path: "Benchmarks",
            // The comparisons with QEMU in the nested tier's L1: boot time, and block and network I/O.
            exclude: ["nested-boot-vs-qemu.sh", "nested-io-vs-qemu.sh", "nested-io-guest.sh", "nested-io-report.py"],
            swiftSettings: strict
        ),
        .testTarget(name: "EpollLoopTests", dependencies: ["EpollLoop"], swiftSettings: strict),
        .testTarget(name: "ActorVmmTests", dependencies: ["ActorVmm", "EpollLoop", "Boot", "CKvm"], swiftSettings: strict),
        .testTarget(name: "DevicesTests", dependencies: ["Devices", "ActorVmm", "EpollLoop", "CKvm"], swiftSettings: strict),
        .testTarget(name: "BootTests", dependencies: ["Boot", "ActorVmm", "Devices", "CKvm"], swiftSettings: strict),
        .testTarget(name: "CliTests", dependencies: ["Cli", "ActorVmm", "CKvm"], swiftSettings: strict),
        .testTarget(name: "EndToEndTests", dependencies: ["CKvm"], swiftSettings: strict),
        .testTarget(name: "BenchmarksTests", dependencies: ["Benchmarks", "ActorVmm"], swiftSettings: strict),
    ]
)

// The libFuzzer build (Tests/Fuzz/run.sh sets ACTORVMM_FUZZ=1 and builds into .build-fuzz with
// -sanitize=fuzzer,address). The package then holds only the libraries, Cli as a library (without its
// main.swift, so the fuzz targets can reach its parsers) and one fuzz executable; an ordinary `swift build`
// or `swift test` never sees these targets.
if Context.environment["ACTORVMM_FUZZ"] == "1" {
    let libraries = package.targets.filter { $0.type == .regular }
    package.products = [.executable(name: "actor-vmm-fuzz", targets: ["ActorVmmFuzz"])]
    package.targets = libraries + [
        .target(name: "Cli", dependencies: ["ActorVmm", "Devices", "Boot", "EpollLoop", "CKvm"],
                exclude: ["main.swift"], swiftSettings: strict),
        .executableTarget(
            name: "ActorVmmFuzz",
            dependencies: ["Cli", "ActorVmm", "Devices", "Boot", "EpollLoop", "CKvm"],
            path: "Tests/Fuzz/Sources",
            swiftSettings: strict
        ),
    ]
}
