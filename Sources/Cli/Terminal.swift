import CKvm
import Glibc
import Synchronization

/// Puts stdin in raw mode for `--serial tty`/`--console tty` and restores it on every way out: normal exit
/// (`atexit`, and `teardown` before a reboot), and fatal signals (restored in the handler, then the signal
/// is re-raised with its default action).
enum Terminal {
    /// The settings found before the first switch to raw mode, in static storage so that a signal handler
    /// can reach them without allocating.
    nonisolated(unsafe) private static var saved = termios()
    // SAFETY (nonisolated(unsafe)): written only by the first `enterRawMode`, before `state` publishes it
    // with a releasing store; every reader (restore, on any thread or in a signal handler) first loads
    // `state` acquiring and reads `saved` only once it is `.saved`. Later calls never write it again.
    private static let state = Atomic<Int>(0)  // 0: nothing saved; 1: saving (one caller); 2: saved
    /// Raw mode is on (restore has something to undo).
    private static let isRaw = Atomic<Bool>(false)

    /// Switches stdin to raw input if it is a terminal: no line editing, echo or signal keys (Ctrl-C goes
    /// to the guest, as with Cloud Hypervisor). Output processing is left on. Safe to call again (a reboot
    /// does): the settings saved are always the ones from before the first call.
    static func enterRawMode() {
        guard isatty(0) == 1 else { return }
        if state.compareExchange(expected: 0, desired: 1, ordering: .acquiring).exchanged {
            guard tcgetattr(0, &saved) == 0 else {
                state.store(0, ordering: .releasing)
                return
            }
            state.store(2, ordering: .releasing)
            atexit { Terminal.restore() }
            installFatalSignalHandlers()
        }
        guard state.load(ordering: .acquiring) == 2 else { return }
        var raw = saved
        raw.c_iflag &= ~tcflag_t(IGNBRK | BRKINT | PARMRK | ISTRIP | INLCR | IGNCR | ICRNL | IXON)
        raw.c_lflag &= ~tcflag_t(ECHO | ECHONL | ICANON | ISIG | IEXTEN)
        raw.c_cflag |= tcflag_t(CS8)
        guard tcsetattr(0, TCSANOW, &raw) == 0 else { return }
        isRaw.store(true, ordering: .releasing)
    }

    /// Restores the saved terminal settings (safe to call more than once, from any thread, and from a
    /// signal handler: an atomic exchange and tcsetattr).
    static func restore() {
        guard isRaw.exchange(false, ordering: .acquiringAndReleasing), state.load(ordering: .acquiring) == 2 else { return }
        tcsetattr(0, TCSANOW, &saved)
    }

    /// A crash restores the terminal before the process dies, so the user's shell is not left raw.
    private static func installFatalSignalHandlers() {
        for signal in [SIGSEGV, SIGBUS, SIGILL, SIGTRAP, SIGABRT, SIGFPE] {
            var action = sigaction()
            action.__sigaction_handler.sa_handler = restoreAndReraise
            sigemptyset(&action.sa_mask)
            // SA_RESETHAND is 0x8000_0000: it does not fit in Int32 as a value (Int32(SA_RESETHAND) traps
            // at run time), only as a bit pattern.
            action.sa_flags = Int32(bitPattern: UInt32(truncatingIfNeeded: SA_RESETHAND))
            sigaction(signal, &action, nil)
        }
    }
}

private func restoreAndReraise(_ signal: Int32) {
    Terminal.restore()
    raise(signal)  // SA_RESETHAND restored the default action
}
