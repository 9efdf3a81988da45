import ActorVmm

/// virtio-mem's part of a snapshot (docs/snapshot.md): the sizes and the plugged-block bitmap. The plugged
/// blocks' contents travel with guest RAM (the region is a RAM region of its own; unplugged blocks are zero,
/// so they are holes in the memory file).
extension VirtioMem {
    public func captureState() -> [UInt8] {
        var out = SnapshotEncoder()
        for value in [blockSize, start, regionSize, usableRegionSize, pluggedSize, requestedSize] { out.u64(value) }
        out.u32(UInt32(blocks.words.count))
        for word in blocks.words { out.u64(word) }
        return out.bytes
    }

    /// Loads ``captureState()``'s bytes after checking all of them: the same block size and region, sizes
    /// that are block multiples inside the region, and a bitmap whose plugged blocks add up to plugged_size.
    public func restoreState(_ bytes: [UInt8]) throws(SnapshotError) {
        var input = SnapshotDecoder(bytes, context: "virtio-mem backend")
        let block = try input.u64(), address = try input.u64(), size = try input.u64()
        guard block == blockSize, address == start, size == regionSize else {
            throw .mismatch("virtio-mem region \(hex(start))+\(regionSize >> 20) MiB in \(blockSize >> 20) MiB blocks; the snapshot has \(hex(address))+\(size >> 20) MiB in \(block >> 20) MiB blocks")
        }
        let usable = try input.u64(), plugged = try input.u64(), requested = try input.u64()
        for value in [usable, plugged, requested] where value > regionSize || value % blockSize != 0 {
            throw .invalid("virtio-mem backend: size \(value) is not a block multiple within the region")
        }
        let count = try input.u32()
        guard count <= UInt32((blocks.count + 63) / 64) else { throw .invalid("virtio-mem backend: \(count) bitmap words") }
        var words: [UInt64] = []
        for _ in 0..<count { words.append(try input.u64()) }
        try input.finish()
        guard let bitmap = VirtioMemBlocks(count: blocks.count, words: words) else {
            throw .invalid("virtio-mem backend: the bitmap does not fit \(blocks.count) blocks")
        }
        guard UInt64(bitmap.pluggedCount) * blockSize == plugged, plugged <= usable else {
            throw .invalid("virtio-mem backend: \(bitmap.pluggedCount) blocks plugged, plugged_size \(plugged)")
        }
        blocks = bitmap
        usableRegionSize = usable
        pluggedSize = plugged
        requestedSize = requested
        publish()
    }
}
