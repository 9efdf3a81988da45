import EpollLoop

/// A host descriptor a virtio backend reads into its receive queue (a TAP, a terminal, a pty), watched on
/// the device's loop only while the guest has posted buffers: `stop()` when the receive queue runs dry,
/// `start()` again when the guest notifies it. That is the back-pressure of net and console — input waits
/// in the host's queue instead of being read and dropped.
struct HostWatch {
    let fd: Int32
    /// What the backend's `hostEvent` receives when `fd` is ready.
    let token: Int
    private(set) var registration: Registration?

    init(fd: Int32, token: Int = 0) {
        self.fd = fd
        self.token = token
    }

    var isWatching: Bool { registration != nil }

    /// Watches `fd` (readiness calls the backend's `hostEvent(token)`); does nothing if already watching.
    mutating func start(device: isolated VirtioPciDevice) {
        guard registration == nil else { return }
        registration = try? device.watch(fd: fd, token: token)
    }

    /// Stops watching; does nothing if not watching.
    mutating func stop(device: isolated VirtioPciDevice) {
        if let registration { device.loop.deregister(registration) }
        registration = nil
    }
}
