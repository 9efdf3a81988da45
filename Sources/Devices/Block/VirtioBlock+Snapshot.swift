import ActorVmm
import EpollLoop

/// Pause and restore (docs/snapshot.md) for virtio-blk on io_uring. The device's queue state in a snapshot
/// (ring indices) counts a request as taken once it is popped, so no request may still be on the ring when
/// the state is captured: it would be lost in the restored VM (its driver would wait for it forever), and
/// its completion would write guest memory and interrupt after the pause.
extension VirtioBlock {
    /// Quiesced: waits for every request on the ring and completes it (status byte and used entry written;
    /// the interrupt stays owed until resume). The synchronous path has nothing in flight.
    public func quiesce(device: isolated VirtioPciDevice) {
        guard let ring else { return }
        while inFlight.count > 0 {
            reapCompletions(device: device, interrupt: false)
            guard inFlight.count > 0 else { break }
            if let error = ring.submit(wait: 1) {
                Log.warning("\(device.name): cannot wait for \(inFlight.count) request(s) in flight while pausing: \(error)")
                return
            }
        }
    }

    /// After a pause, or a restore into a new VM (whose device never saw DRIVER_OK written): the ring's
    /// completions are watched again, as on activation.
    public func resume(device: isolated VirtioPciDevice) {
        guard device.isActive else { return }
        do throws(VirtioError) {
            try activate(device: device)
        } catch {
            Log.warning("\(device.name): \(error)")
        }
    }
}
