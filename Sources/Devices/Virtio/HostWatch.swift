import EpollLoop

/// A host descriptor a virtio backend reads into its receive queue (a TAP, a terminal, a pty), watched on
/// the device's loop only while the guest has posted buffers: `stop()` when the receive queue runs dry,
/// `start()` again when the guest notifies it. That is the back-pressure of net and console — input waits
/// in the host's queue instead of being read and dropped.
struct HostWatch {
    let fd: Int32
    private(set) var registration: Registration?

    init(fd: Int32) { self.fd = fd }

    var isWatching: Bool { registration != nil }

    /// Watches `fd` (readiness calls the backend's `hostEvent(0)`); does nothing if already watching.
    mutating func start(device: isolated VirtioPciDevice) {
        guard registration == nil else { return }
        registration = try? device.watch(fd: fd, token: 0)
    }

    /// Stops watching; does nothing if not watching.
    mutating func stop(device: isolated VirtioPciDevice) {
        if let registration { device.loop.deregister(registration) }
        registration = nil
    }
}
