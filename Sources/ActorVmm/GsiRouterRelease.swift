extension GsiRouter {
    /// Gives back `targets` (vectors this router allocated): their MSI routes are removed from the table,
    /// their irqfds unregistered and closed. Used when a device is detached; the GSIs are not reused.
    public func release(_ targets: [any MsiTarget]) {
        let gsis = Set(targets.map(\.gsi))
        guard !gsis.isEmpty else { return }
        let released = vectors.withLock { vectors -> [MsiVector] in
            let released = vectors.filter { gsis.contains($0.gsi) }
            vectors.removeAll { gsis.contains($0.gsi) }
            return released
        }
        do {
            try state.withLock { s throws(KvmError) in
                for gsi in gsis { s.msiRoutes[gsi] = nil }
                try install(s.msiRoutes)
            }
        } catch {
            Log.warning("MSI routes for GSIs \(gsis.sorted()) not removed: \(error)")
        }
        for vector in released { vm.unregisterIrqfd(eventFD: vector.rawFD, gsi: vector.gsi) }
    }

    /// How many vectors are allocated and not released (for tests).
    public var allocatedVectorCount: Int { vectors.withLock { $0.count } }
}
