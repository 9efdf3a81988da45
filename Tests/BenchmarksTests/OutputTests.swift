@testable import ActorVmm
@testable import Benchmarks
import Testing

@Suite struct JsonTests {
    @Test func serialisesValuesInOrder() {
        let value: JSON = .object([("b", .number(1)), ("a", .array([.bool(true), .null, .number(1.5)])),
                                   ("s", .string("q\"\\\n\u{1}")), ("o", .maybe(nil)), ("e", .object([]))])
        #expect(value.serialized() == #"{"b":1,"a":[true,null,1.5],"s":"q\"\\\n\u0001","o":null,"e":{}}"#)
    }

    @Test func numbersAreFiniteAndShort() {
        #expect(JSON.format(1e9) == "1000000000")
        #expect(JSON.format(0.1234567) == "0.1235")
        #expect(JSON.format(-2.5) == "-2.5")
        #expect(JSON.maybe(.infinity) == .null)
        #expect(JSON.number(.nan).serialized() == "null")
    }

    @Test func prettyOutputIndents() {
        let value: JSON = .object([("a", .array([.number(1)]))])
        #expect(value.serialized(pretty: true) == "{\n  \"a\": [\n    1\n  ]\n}")
    }

    @Test func reportJsonHasTheSections() {
        var report = BenchReport(machine: MachineInfo(cpuModel: "X", cpuCount: 2, kernel: "K", kvmModules: [], hypervisorFlag: true),
                                 options: BenchOptions(), tscHertz: 1e9, startedAt: "T")
        var notify = Sections.notify(BenchOptions())
        notify.latency = [LatencyRow(id: "notify", label: "notify path", floorID: nil, unavailable: "not run (--only)")]
        report.sections = [notify]
        report.summary = "summary: s"
        let text = report.json.serialized()
        #expect(text.contains(#""id":"notify""#))
        #expect(text.contains(#""status":"not run (--only)""#))
        #expect(text.contains(#""summary":"summary: s""#))
    }
}

@Suite struct OptionsTests {
    @Test func quickAppliesFirstAndExplicitSizesWin() throws {
        let options = try BenchOptions.parse(["--samples", "500", "--quick"], cpuCount: 2)
        #expect(options.quick && options.exitRoundTrips == 500 && options.rounds == 3)
        #expect(options.pinVcpu == 0 && options.pinLoop == 1 && options.crossCore)
    }

    @Test func pinning() throws {
        let none = try BenchOptions.parse(["--no-pin"], cpuCount: 2)
        #expect(none.pinVcpu == nil && none.pinLoop == nil && !none.crossCore)
        let swapped = try BenchOptions.parse(["--pin-vcpu", "1", "--pin-loop", "0"], cpuCount: 2)
        #expect(swapped.pinVcpu == 1 && swapped.pinLoop == 0)
        #expect(try BenchOptions.parse([], cpuCount: 1).pinLoop == nil)
        #expect(throws: BenchError.self) { try BenchOptions.parse(["--pin-vcpu", "2"], cpuCount: 2) }
    }

    @Test func badArgumentsAreOneLineErrors() {
        for arguments in [["--rounds"], ["--rounds", "0"], ["--only", "exit,nope"], ["--bogus"], ["--placement-seconds", "-1"]] {
            #expect(throws: BenchError.self) { try BenchOptions.parse(arguments, cpuCount: 2) }
        }
    }

    @Test func exitRowsPerPinning() {
        #expect(ExitConfig.all(pinned: true, crossCore: true).count == 14)
        #expect(ExitConfig.all(pinned: false, crossCore: false).map(\.id).contains("pio-enqueue-unpinned"))
        #expect(ExitConfig.all(pinned: true, crossCore: false).count == 10)
        #expect(Set(ExitConfig.all(pinned: true, crossCore: true).map(\.id)).count == 14)
        #expect(ExitConfig.all(pinned: true, crossCore: true).filter { $0.handling == .rawAgain }.allSatisfy { $0.floorID == "\($0.transport.rawValue)-raw" })
    }
}

@Suite struct ProcFilesTests {
    @Test func statusFields() {
        let status = "Name:\tactor-vmm\nVmRSS:\t    8176 kB\nRssAnon:\t     772 kB\n"
        #expect(procStatusKiB(status, field: "VmRSS") == 8176)
        #expect(procStatusKiB(status, field: "RssAnon") == 772)
        #expect(procStatusKiB(status, field: "RssFile") == nil)
    }

    /// Guest RAM is found by its mark (a name, or VmFlags dc), whatever its size.
    @Test func guestMappingIsFoundByItsMark() {
        let smaps = """
            55febc61c000-55febcbeb000 r-xp 00000000 fe:00 5317387                    /bin/actor-vmm
            Size:               5948 kB
            Rss:                4076 kB
            VmFlags: rd ex mr mw me dc
            7f47fd800000-7f4805821000 rw-p 00000000 00:00 0
            Size:             131204 kB
            Rss:                 180 kB
            VmFlags: rd wr mr mw me ac
            7f47f7800000-7f47f8000000 rw-p 00000000 00:00 0                          [anon:actor-vmm-guest-ram]
            Size:               8192 kB
            KernelPageSize:        4 kB
            Rss:                  20 kB
            VmFlags: rd wr mr mw me nr
            7f47f0000000-7f47f1000000 rw-p 00000000 00:00 0
            Size:              16384 kB
            Rss:                   8 kB
            VmFlags: rd wr mr mw me dc nr
            """
        #expect(guestMappingRssKiB(smaps: smaps) == 28)  // the named one and the anonymous dc one
        #expect(guestMappingRssKiB(smaps: smaps, name: "other") == 8)
        #expect(guestMappingRssKiB(smaps: "7f47fd800000-7f4805821000 rw-p 00000000 00:00 0\nRss: 4 kB\nVmFlags: rd wr\n") == nil)
    }

    /// The real thing: the mapping holding a GuestMemory region is marked MADV_DONTFORK, so the kernel never
    /// merges guest RAM with unmarked memory (it used to merge it with a malloc arena, and the start row found
    /// no 128 MiB mapping). Other guest RAM of this process (tests run in parallel) may share the mapping:
    /// it carries the same mark, and the bench sums every marked mapping.
    @Test func guestMemoryMappingIsMarked() throws {
        let memory = try GuestMemory(layout: [(GuestAddress(0), 8 << 20)])
        try memory.write(UInt64(1), at: GuestAddress(0x1000))
        let start = UInt64(UInt(bitPattern: try memory.hostPointer(GuestAddress(0), 0)))
        let lines = (readTextFile("/proc/self/smaps") ?? "").split(separator: "\n")
        let header = try #require(lines.firstIndex { line in
            let range = line.split(separator: " ").first?.split(separator: "-").compactMap { UInt64($0, radix: 16) } ?? []
            return range.count == 2 && range[0] <= start && start < range[1]
        }, "no mapping holds the region's host address")
        let range = lines[header].split(separator: " ")[0].split(separator: "-").compactMap { UInt64($0, radix: 16) }
        #expect(range[0] <= start && start + (8 << 20) <= range[1], "the mapping holds the whole region: \(lines[header])")
        let flags = lines[header...].first { $0.hasPrefix("VmFlags:") } ?? ""
        #expect(flags.split(separator: " ").contains("dc"), "not MADV_DONTFORK: \(flags)")
        withExtendedLifetime(memory) {}
    }

    @Test func startGuestIsAnElfWithOneLoadSegment() throws {
        let image = StartGuest.image()
        #expect(Array(image[0..<4]) == [0x7F, 0x45, 0x4C, 0x46])
        #expect(image.count == 120 + StartGuest.code.count)
        // The code starts by writing 'S' to COM1: mov dx, 0x3f8; mov al, 'S'; out dx, al.
        #expect(Array(StartGuest.code.prefix(7)) == [0x66, 0xBA, 0xF8, 0x03, 0xB0, 0x53, 0xEE])
        #expect(StartGuest.code.suffix(3) == [0xF4, 0xEB, 0xFD])
    }
}

@Suite struct ExitExtractionTests {
    /// Synthetic recording: some exits, marker A, 2 lean round trips, marker B, 2 timed ones, marker C.
    @Test func measuredExitsLieBetweenTheMarkers() throws {
        let magic = ExitKey(kind: .pio, isWrite: false, address: 0xA08)
        let write = ExitKey(kind: .pio, isWrite: true, address: 0xA00)
        let read = ExitKey(kind: .pio, isWrite: false, address: 0xA00)
        let keys = [magic, write, read, magic] + [write, read, write, read] + [magic] + [write, read, write, read] + [magic, read]
        var tsc: UInt64 = 0
        let samples = keys.enumerated().map { index, key in
            tsc += index < 5 ? 1000 : (index < 9 ? 2000 : 3000)
            return ExitRecorder.Sample(exitTSC: tsc, doneTSC: tsc + 10, key: key)
        }
        let memory = try GuestMemory(layout: [(GuestAddress(0), 0x800_0000)])
        for (index, cycles) in [100, 200, 300, 400].enumerated() {
            try memory.write(UInt32(cycles), at: GuestAddress(ExitBench.sampleBuffer + UInt64(4 * index)))
        }
        let bench = ExitBench(guestPath: "", options: BenchOptions(), clock: TscClock(ticksPerNanosecond: 1))
        let config = ExitConfig(transport: .pio, handling: .raw, placement: .sameCore)
        let result = try bench.extract(config, recorder: samples, memory: memory, roundTrips: 2)
        #expect(result.host.count == 4)
        #expect(result.host == [2000, 2000, 2000, 2000])
        #expect(result.hostWrites.count == 2 && result.hostReads.count == 2)
        #expect(result.handler.allSatisfy { $0 == 10 })
        #expect(result.guestWrites == [100, 300] && result.guestReads == [200, 400])
        #expect(result.hostWhileGuestTimes.count == 4)
        #expect(throws: BenchError.self) { try bench.extract(config, recorder: samples, memory: memory, roundTrips: 3) }
    }
}
