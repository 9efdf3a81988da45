// swift-tools-version: 6.1
// ActorVMM: a KVM virtual machine monitor whose devices are actors on epoll executors.
// Toolchain libraries only (Glibc, Synchronization, Swift Testing): no package dependencies.
import PackageDescription

let strict: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    // One section per function, so that the release link can place the functions users run together
    // (`releaseLink` below) and drop the ones nothing calls (--gc-sections).
    .unsafeFlags(["-Xfrontend", "-function-sections"], .when(configuration: .release)),
]

/// The VMM's release link (docs/benchmarks.md, "Footprint"): fully static (no ld.so, libc.so, libstdc++.so:
/// 1.9 MiB less resident code than `-static-stdlib`), with lld, which places the functions users run
/// first and together (Tests/Footprint/actor-vmm.order, made by Tests/Footprint/symbol-order.sh), so the
/// kernel's fault-around keeps less of the 6 MB of code resident; Tests/Footprint/actor-vmm.ld adds two
/// placements the order file cannot make. (SwiftPM does not relink when either file changes: remove
/// .build/release/actor-vmm first.)
let releaseLink: [LinkerSetting] = [.unsafeFlags([
    "-static-executable", "-use-ld=lld",
    "-Xlinker", "--symbol-ordering-file=\(Context.packageDirectory)/Tests/Footprint/actor-vmm.order",
    "-Xlinker", "--no-warn-symbol-ordering",
    "-Xlinker", "--script=\(Context.packageDirectory)/Tests/Footprint/actor-vmm.ld",
], .when(configuration: .release))]

let package = Package(
    name: "ActorVmm",
    products: [
        .executable(name: "actor-vmm", targets: ["ActorVmmProgram"]),
        .executable(name: "actor-vmm-remote", targets: ["ActorVmmRemoteProgram"]),
        .executable(name: "actor-vmm-bench", targets: ["Benchmarks"]),
    ],
    targets: [
        // <linux/kvm.h>, epoll, eventfd, termios helpers and ioctl wrappers (ioctl is variadic).
        .target(name: "CKvm", cSettings: [.define("_GNU_SOURCE")]),
        .target(name: "EpollLoop", dependencies: ["CKvm"], swiftSettings: strict),
        .target(name: "ActorVmm", dependencies: ["CKvm", "EpollLoop"], swiftSettings: strict),
        .target(name: "Devices", dependencies: ["ActorVmm", "EpollLoop", "CKvm"], swiftSettings: strict),
        .target(name: "Boot", dependencies: ["ActorVmm", "CKvm"], swiftSettings: strict),
        // The control plane: config, device manager, machine builder, lifecycle, API, HTTP, JSON, client.
        .target(
            name: "Cli",
            dependencies: ["ActorVmm", "Devices", "Boot", "EpollLoop", "CKvm"],
            exclude: ["Main"],  // the programs below
            swiftSettings: strict
        ),
        // The two programs: a main.swift each that calls into Cli.
        .executableTarget(
            name: "ActorVmmProgram",
            dependencies: ["Cli"],
            path: "Sources/Cli/Main/Vmm",
            swiftSettings: strict,
            linkerSettings: releaseLink
        ),
        .executableTarget(
            name: "ActorVmmRemoteProgram",
            dependencies: ["Cli"],
            path: "Sources/Cli/Main/Remote",
            swiftSettings: strict,
            linkerSettings: releaseLink
        ),
        .executableTarget(
            name: "Benchmarks",
            // CAllocCount: row 3 reports the device loop's malloc calls per request (it interposes malloc).
            dependencies: ["Cli", "ActorVmm", "Devices", "Boot", "EpollLoop", "CKvm", "CAllocCount"],
            path: "Benchmarks",
            // The comparisons with QEMU in the nested tier's L1: boot time, block and network I/O, live migration.
            exclude: ["nested-boot-vs-qemu.sh", "nested-io-vs-qemu.sh", "nested-io-guest.sh", "nested-io-report.py",
                      "nested-migration-vs-qemu.sh", "nested-migration-run.py"],
            swiftSettings: strict
        ),
        .testTarget(name: "EpollLoopTests", dependencies: ["EpollLoop"], swiftSettings: strict),
        .testTarget(name: "ActorVmmTests", dependencies: ["ActorVmm", "EpollLoop", "Boot", "CKvm"], swiftSettings: strict),
        // Counts one thread's malloc calls (it interposes malloc in the test process only): DevicesTests' proof
        // that the block path allocates nothing.
        .target(name: "CAllocCount", path: "Tests/CAllocCount"),
        .testTarget(name: "DevicesTests", dependencies: ["Devices", "ActorVmm", "EpollLoop", "CKvm", "CAllocCount"], swiftSettings: strict),
        .testTarget(name: "BootTests", dependencies: ["Boot", "ActorVmm", "Devices", "CKvm"], swiftSettings: strict),
        .testTarget(name: "CliTests", dependencies: ["Cli", "ActorVmm", "Devices", "Boot", "EpollLoop", "CKvm"], swiftSettings: strict),
        .testTarget(name: "EndToEndTests", dependencies: ["CKvm"], swiftSettings: strict),
        .testTarget(name: "BenchmarksTests", dependencies: ["Benchmarks", "ActorVmm"], swiftSettings: strict),
    ]
)

// The libFuzzer build (Tests/Fuzz/run.sh sets ACTORVMM_FUZZ=1 and builds into .build-fuzz with
// -sanitize=fuzzer,address). The package then holds only the libraries (Cli among them, so the fuzz targets
// reach its parsers) and one fuzz executable; an ordinary `swift build` or `swift test` never sees it.
if Context.environment["ACTORVMM_FUZZ"] == "1" {
    let libraries = package.targets.filter { $0.type == .regular }
    package.products = [.executable(name: "actor-vmm-fuzz", targets: ["ActorVmmFuzz"])]
    package.targets = libraries + [
        .executableTarget(
            name: "ActorVmmFuzz",
            dependencies: ["Cli", "ActorVmm", "Devices", "Boot", "EpollLoop", "CKvm"],
            path: "Tests/Fuzz/Sources",
            swiftSettings: strict
        ),
    ]
}
