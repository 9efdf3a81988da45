import CKvm
import Glibc

/// Puts stdin in raw mode for `--serial tty` and restores it on every way out: normal exit (`atexit`),
/// and fatal signals (restored in the handler, then the signal is re-raised with its default action).
enum Terminal {
    /// The saved settings, in static storage so the signal handler can reach them without allocating.
    nonisolated(unsafe) private static var saved = termios()
    nonisolated(unsafe) private static var isRaw = false
    // SAFETY (nonisolated(unsafe)): written once by the main thread in `enterRawMode` before any other
    // thread exists; afterwards only read (restore is idempotent and async-signal-safe: tcsetattr).

    /// Switches stdin to raw input if it is a terminal: no line editing, echo or signal keys (Ctrl-C goes
    /// to the guest, as with Cloud Hypervisor). Output processing is left on.
    static func enterRawMode() {
        guard isatty(0) == 1, tcgetattr(0, &saved) == 0 else { return }
        var raw = saved
        raw.c_iflag &= ~tcflag_t(IGNBRK | BRKINT | PARMRK | ISTRIP | INLCR | IGNCR | ICRNL | IXON)
        raw.c_lflag &= ~tcflag_t(ECHO | ECHONL | ICANON | ISIG | IEXTEN)
        raw.c_cflag |= tcflag_t(CS8)
        guard tcsetattr(0, TCSANOW, &raw) == 0 else { return }
        isRaw = true
        atexit { Terminal.restore() }
        for signal in [SIGSEGV, SIGBUS, SIGILL, SIGTRAP, SIGABRT, SIGFPE] {
            var action = sigaction()
            action.__sigaction_handler.sa_handler = restoreAndReraise
            sigemptyset(&action.sa_mask)
            action.sa_flags = Int32(SA_RESETHAND)
            sigaction(signal, &action, nil)
        }
    }

    /// Restores the saved terminal settings (safe to call more than once, and from a signal handler).
    static func restore() {
        if isRaw { tcsetattr(0, TCSANOW, &saved) }
    }
}

private func restoreAndReraise(_ signal: Int32) {
    Terminal.restore()
    raise(signal)  // SA_RESETHAND restored the default action
}
