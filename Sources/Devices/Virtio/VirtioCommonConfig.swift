import ActorVmm

/// The common configuration structure (virtio 1.2 §4.1.4.3), at BAR0 offset 0:
///
/// ```
/// 0x00 le32 device_feature_select   0x04 le32 device_feature       0x08 le32 driver_feature_select
/// 0x0C le32 driver_feature          0x10 le16 config_msix_vector   0x12 le16 num_queues
/// 0x14 u8   device_status           0x15 u8   config_generation    0x16 le16 queue_select
/// 0x18 le16 queue_size              0x1A le16 queue_msix_vector    0x1C le16 queue_enable
/// 0x1E le16 queue_notify_off        0x20 le64 queue_desc           0x28 le64 queue_driver
/// 0x30 le64 queue_device
/// ```
extension VirtioPciDevice {
    func readCommon(offset: UInt64, width: Int) -> UInt64 {
        let q = Int(queueSelect) < queues.count ? queues[Int(queueSelect)] : nil
        return ConfigImage.read(offset: Int(offset), width: width) { image in
            image.append(deviceFeatureSelect)
            image.append(deviceFeatureSelect < 2 ? UInt32(truncatingIfNeeded: offeredFeatures >> (32 * UInt64(deviceFeatureSelect))) : 0)
            image.append(driverFeatureSelect)
            image.append(driverFeatureSelect < 2 ? UInt32(truncatingIfNeeded: acceptedFeatures >> (32 * UInt64(driverFeatureSelect))) : 0)
            image.append(configVector)
            image.append(UInt16(queues.count))
            image.append(reportedStatus)
            image.append(configGeneration)
            image.append(queueSelect)
            image.append(q?.size ?? 0)
            image.append(q?.msixVector ?? Self.noVector)
            image.append(UInt16(q?.ready == true ? 1 : 0))
            image.append(q == nil ? UInt16(0) : queueSelect)  // queue_notify_off = queue index
            image.append(q?.descriptorTable.rawValue ?? 0)
            image.append(q?.availableRing.rawValue ?? 0)
            image.append(q?.usedRing.rawValue ?? 0)
        }
    }

    func writeCommon(offset: UInt64, width: Int, value: UInt64) {
        let v32 = UInt32(truncatingIfNeeded: value), v16 = UInt16(truncatingIfNeeded: value)
        let index = Int(queueSelect)
        let selected = index < queues.count
        switch (offset, width) {
        case (0x00, 4): deviceFeatureSelect = v32
        case (0x08, 4): driverFeatureSelect = v32
        case (0x0C, 4):
            // Features can change only before FEATURES_OK (§2.2); later writes are ignored.
            guard status & Self.featuresOK == 0, driverFeatureSelect < 2 else { return }
            let shift = 32 * UInt64(driverFeatureSelect)
            acceptedFeatures = (acceptedFeatures & ~(0xFFFF_FFFF << shift)) | (UInt64(v32) << shift)
        case (0x10, 2): configVector = Int(v16) < msix.vectorCount ? v16 : Self.noVector
        case (0x14, 1): writeStatus(UInt8(truncatingIfNeeded: value))
        case (0x16, 2): queueSelect = v16
        case (0x18, 2) where selected && !queues[index].ready:
            queues[index].size = v16  // validated when the queue is enabled
        case (0x1A, 2) where selected:
            queues[index].msixVector = Int(v16) < msix.vectorCount ? v16 : Self.noVector
        case (0x1C, 2) where selected && v16 == 1: enableQueue(index)
        case (0x20, 4), (0x20, 8), (0x24, 4), (0x28, 4), (0x28, 8), (0x2C, 4), (0x30, 4), (0x30, 8), (0x34, 4):
            guard selected, !queues[index].ready else { return }
            setQueueAddress(index, offset: offset, width: width, value: value)
        default:
            break  // read-only or unknown fields, wrong widths
        }
    }

    private func setQueueAddress(_ index: Int, offset: UInt64, width: Int, value: UInt64) {
        func merged(_ old: GuestAddress) -> GuestAddress {
            if width == 8 { return GuestAddress(value) }
            let low = offset % 8 == 0
            let part = value & 0xFFFF_FFFF
            return GuestAddress(low ? (old.rawValue & ~0xFFFF_FFFF) | part : (old.rawValue & 0xFFFF_FFFF) | part << 32)
        }
        switch offset & ~7 {
        case 0x20: queues[index].descriptorTable = merged(queues[index].descriptorTable)
        case 0x28: queues[index].availableRing = merged(queues[index].availableRing)
        default: queues[index].usedRing = merged(queues[index].usedRing)
        }
    }

    private func enableQueue(_ index: Int) {
        do {
            guard queues[index].size <= backend.maxQueueSize else {
                throw QueueError.invalidConfiguration("size \(queues[index].size) is over the \(backend.maxQueueSize) the device offers")
            }
            try queues[index].validate(memory: memory)
            queues[index].eventIndex = acceptedFeatures & VirtioFeature.ringEventIndex != 0
            queues[index].indirectDescriptors = acceptedFeatures & VirtioFeature.ringIndirectDescriptors != 0
            queues[index].ready = true
        } catch {
            Log.guestWarning(&guestLog, source: name, "queue \(index) not enabled: \(error)")
            counters.errors &+= 1
            failDevice()
        }
    }

    /// The status state machine (§2.1, §3.1.1).
    private func writeStatus(_ new: UInt8) {
        if new == 0 {
            reset()
            return
        }
        var accepted = new | (status & Self.needsReset)
        if new & Self.featuresOK != 0 && status & Self.featuresOK == 0 {
            // FEATURES_OK sticks only for a subset of what we offered, including VERSION_1.
            let valid = acceptedFeatures & ~offeredFeatures == 0 && acceptedFeatures & VirtioFeature.version1 != 0
            if !valid {
                Log.guest(.info, &guestLog, source: name, "driver features \(hex(acceptedFeatures)) refused (offered \(hex(offeredFeatures)))")
                accepted &= ~Self.featuresOK
            }
        }
        let activating = accepted & Self.driverOK != 0 && status & Self.driverOK == 0
        status = accepted
        if activating {
            guard status & Self.featuresOK != 0 else {
                failDevice()
                return
            }
            do {
                try backend.activate(device: self)
                for index in queues.indices where servesDoorbell(index) && canDMA && queues[index].ready
                    && queues[index].hasPending(memory: memory) {
                    backend.queueNotified(index, device: self)  // requests posted before DRIVER_OK
                }
                startWorkers()
            } catch {
                Log.warning("\(name): activation failed: \(error)")
                failDevice()
            }
        }
    }

    /// Device reset (§2.1): back to the initial state; MSI-X table and PCI configuration are not touched.
    func reset() {
        let statusBefore = status
        backend.reset(device: self)
        resetWorkers(statusBefore: statusBefore)
        if coordinator != nil {  // a queue worker forgets its queues and anything noted while quiesced
            holdsQueues = false
            quiesced = false
            pendingDoorbells = Array(repeating: false, count: queues.count)
        }
        for index in queues.indices { queues[index].reset(size: backend.maxQueueSize) }
        unsignalled = Array(repeating: false, count: queues.count)
        Log.flushSuppressed(&guestLog, source: name)
        status = 0
        acceptedFeatures = 0
        deviceFeatureSelect = 0
        driverFeatureSelect = 0
        queueSelect = 0
        configVector = Self.noVector
        isr = 0
        configGeneration &+= 1
    }
}
