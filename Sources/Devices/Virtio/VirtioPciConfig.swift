import ActorVmm

/// The device's PCI configuration space: the header and capabilities (``PciConfigSpace``), plus what a
/// configuration write sets in motion — MSI-X enable and mask, Bus Master Enable, and accesses through the
/// VIRTIO_PCI_CAP_PCI_CFG window (virtio 1.2 §4.1.4.9).
///
/// The window's layout, at `pciCfgCapability`:
/// ```
/// +0 id 0x09, next, cap_len 20, cfg_type 5   +4 bar, id, padding[2]
/// +8 le32 offset                               +12 le32 length (1, 2 or 4)
/// +16 u8 pci_cfg_data[4]
/// ```
/// Reading `pci_cfg_data` reads `length` bytes of BAR `bar` at `offset` into it; writing it writes its
/// first `length` bytes there. Only BAR0 exists; other BARs, other lengths, a misaligned offset or one past
/// the BAR make the access do nothing (reads see the data bytes as they were).
extension VirtioPciDevice {
    public func configRead(offset: UInt64, width: Int) -> UInt64 {
        if touchesWindowData(offset: offset, width: width), let (barOffset, length) = windowTarget() {
            let value = readBar(offset: barOffset, width: length)
            for i in 0..<length {
                config.setByte(pciCfgCapability + 16 + i, UInt8(truncatingIfNeeded: value >> (8 * UInt64(i))))
            }
        }
        return config.read(offset: Int(offset), width: width)
    }

    public func configWrite(offset: UInt64, width: Int, value: UInt64) {
        let couldDMA = canDMA
        config.write(offset: Int(offset), width: width, value: value)
        let controlHigh = msixCapability + 3
        if Int(offset) <= controlHigh && controlHigh < Int(offset) + width {
            msix.setControl(highByte: config.bytes[controlHigh])
        }
        // BAR sizing happens with decoding off; a different address with decoding on is a move we do not
        // follow (the bus table is fixed): say so once.
        if config.memoryDecoding, config.barAddress(0) != barAddress, !warnedAboutBarMove {
            warnedAboutBarMove = true
            Log.warning("\(name): guest moved BAR0 to \(hex(config.barAddress(0))); BAR relocation is not supported, it stays at \(hex(barAddress))")
        }
        if touchesWindowData(offset: offset, width: width), let (barOffset, length) = windowTarget() {
            let data = config.read(offset: pciCfgCapability + 16, width: length)
            writeBar(offset: barOffset, width: length, value: data)
        }
        if !couldDMA && canDMA {
            // Bus mastering is back: serve what the driver queued meanwhile, as after DRIVER_OK.
            for index in queues.indices where queues[index].ready && servesDoorbell(index) {
                backend.queueNotified(index, device: self)
            }
        }
        updateWorkerView()  // BME and MSI-X enable or mask, for the queue workers
    }

    private func touchesWindowData(offset: UInt64, width: Int) -> Bool {
        let data = pciCfgCapability + 16
        return Int(offset) < data + 4 && data < Int(offset) + width
    }

    /// The BAR0 offset and length the window's fields select, or nil when they select nothing.
    private func windowTarget() -> (UInt64, Int)? {
        let bar = config.read(offset: pciCfgCapability + 4, width: 1)
        let offset = config.read(offset: pciCfgCapability + 8, width: 4)
        let length = Int(config.read(offset: pciCfgCapability + 12, width: 4))
        guard bar == 0, [1, 2, 4].contains(length), offset % UInt64(length) == 0,
              offset + UInt64(length) <= Self.barSize else { return nil }
        return (offset, length)
    }
}
