// Main.swift: the test guest's Swift entry point, called by `_start` (start.S).
//
// Output on the serial port (COM1), one line each:
//   TESTGUEST START
//   TEST <name> PASS|FAIL <detail>      for each check asked for by `tests=a,b,c` on the
//                                       command line (all of `allTests` if there is none)
//   TESTGUEST DONE pass=<N> fail=<M>
// then the guest powers the machine off.

@_cdecl("guest_main")
func guestMain(bootParams: UInt) -> Never {
    var console = Serial.com1
    console.write("TESTGUEST START\n")
    // Exceptions print a line instead of triple-faulting; MSI-X vectors get counted.
    Interrupts.install()

    let boot = BootParams(address: bootParams)
    var passed = 0
    var failed = 0

    /// Runs one check and prints its result line.
    func run(_ test: GuestTest) {
        var context = TestContext(boot: boot)
        let ok = test.run(&context)
        if ok { passed += 1 } else { failed += 1 }
        console.write("TEST ")
        console.write(test.name)
        console.write(ok ? " PASS " : " FAIL ")
        context.detail.write(to: &console)
        console.write("\n")
    }

    if let names = boot.commandLine.commandLineValue(of: "tests") {
        names.forEachPiece(separatedBy: UInt8(ascii: ",")) { name in
            if let test = allTests.first(where: { name.equals($0.name) }) {
                run(test)
            } else {
                failed += 1
                console.write("TEST ")
                console.write(bytes: name)
                console.write(" FAIL unknown test\n")
            }
        }
    } else {
        for test in allTests where !test.byNameOnly { run(test) }
    }

    console.write("TESTGUEST DONE pass=")
    console.write(decimal: passed)
    console.write(" fail=")
    console.write(decimal: failed)
    console.write("\n")
    CPU.powerOff()
}
