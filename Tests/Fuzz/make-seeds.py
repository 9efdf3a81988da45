#!/usr/bin/env python3
"""Writes the small seed corpora under Tests/Fuzz/corpus/<target> (committed; run.sh grows copies elsewhere)."""
import os, struct

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")

def seed(target, name, data):
    os.makedirs(os.path.join(root, target), exist_ok=True)
    with open(os.path.join(root, target, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())

# A minimal ELF64 x86-64 executable: one PT_LOAD at 1 MiB, a PT_NOTE with Xen's PHYS32_ENTRY.
def elf(pvh):
    code = b"\xf4" * 16
    note = struct.pack("<III", 4, 8, 18) + b"Xen\0" + struct.pack("<Q", 0x100000)
    phnum = 2 if pvh else 1
    header = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9) + struct.pack("<HHIQQQIHHHHHH", 2, 62, 1, 0x100000, 64, 0, 0, 64, 56, phnum, 0, 0, 0)
    data_at = 64 + 56 * phnum
    load = struct.pack("<IIQQQQQQ", 1, 5, data_at, 0x100000, 0x100000, len(code), len(code) + 0x1000, 0x1000)
    notes = struct.pack("<IIQQQQQQ", 4, 4, data_at + len(code), 0, 0, len(note), len(note), 4)
    return header + load + (notes if pvh else b"") + code + (note if pvh else b"")

seed("kernel_elf", "elf64", elf(False))
seed("kernel_elf", "pvh", elf(True))

# kernel_bzimage input: bytes 0x1F1..0x270 of the header, a keep-magic flag, a u16 length, the kernel.
hdr = bytearray(0x7F)
def put(offset, fmt, value): struct.pack_into(fmt, hdr, offset - 0x1F1, value)
put(0x1F1, "<B", 1)          # setup_sects
put(0x1FE, "<H", 0xAA55)
put(0x200, "<B", 0xEB); put(0x201, "<B", 0x66)  # jump over a header ending at 0x268
hdr[0x202 - 0x1F1:0x206 - 0x1F1] = b"HdrS"
put(0x206, "<H", 0x020F)     # protocol 2.15
put(0x211, "<B", 1)          # LOADED_HIGH
put(0x22C, "<I", 0x37FFFFFF) # initrd_addr_max
put(0x236, "<H", 1)          # XLF_KERNEL_64
put(0x238, "<I", 2047)       # cmdline_size
put(0x260, "<I", 0x10000)    # init_size
seed("kernel_bzimage", "minimal", bytes(hdr) + b"\x01" + struct.pack("<H", 0x600) + b"\xf4" * 0x600)

# kernel_pvh input: segment count, entry, then per segment a kind byte and its fields.
seed("kernel_pvh", "load-and-note", bytes([1]) + struct.pack("<I", 0) + bytes([1]) + struct.pack("<I", 0) + bytes([16]) + b"\xf4" * 16
     + struct.pack("<H", 0x100) + bytes([0, 0]) + struct.pack("<I", 0) + bytes([0]) + b"console=ttyS0")

seed("http", "put", b"\x07PUT /api/v1/vm.boot HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n")
seed("http", "get-pipelined", b"\x40GET /api/v1/vm.info HTTP/1.1\r\nHost: x\r\n\r\nGET /api/v1/vmm.ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
seed("http", "body", b"\x03PUT /api/v1/vm.create HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 13\r\nExpect: 100-continue\r\n\r\n{\"payload\":1}")

config = ('{"cpus": {"boot_vcpus": 2, "max_vcpus": 2}, "memory": {"size": 268435456}, '
          '"payload": {"kernel": "/k", "cmdline": "console=ttyS0", "initramfs": "/i"}, '
          '"disks": [{"path": "/d.img", "readonly": true, "id": "disk0"}], '
          '"net": [{"tap": "tap0", "mac": "52:54:00:12:34:56", "ip": "192.168.4.1", "mask": "255.255.255.0"}], '
          '"rng": {"src": "/dev/urandom"}, "serial": {"mode": "Tty"}, "console": {"mode": "Off"}}')
seed("vmconfig", "full", config)
seed("vmconfig", "minimal", '{"payload": {"kernel": "/k", "cmdline": "tests=pio"}, "memory": {"size": 67108864}}')
seed("json", "config", config)
seed("json", "values", '[null, true, false, -1.5e+10, "a\\u00e9\\n\\"", {"": [[]]}, 18446744073709551615]')

args = ["--kernel", "vmlinux", "--cmdline", "console=ttyS0", "--cpus", "boot=2", "--memory", "size=512M",
        "--disk", "path=disk.img,readonly=on", "--net", "tap=tap0,mac=52:54:00:12:34:56", "--rng", "src=/dev/urandom",
        "--serial", "tty", "--console", "off", "--api-socket", "path=/tmp/api.sock", "-v"]
seed("cli_options", "full", "\0".join(args))

seed("x86_decoder", "mov", bytes.fromhex("48 8b 84 c8 78 56 34 12".replace(" ", "")))
seed("x86_decoder", "lock-cmpxchg16b", bytes.fromhex("f0 48 0f c7 0f".replace(" ", "")))

# Virtio scripts: setup byte (indirect, event idx, device features), queue sizes, then operations:
# post (op 0, shape, per buffer a u16 length with bit 15 = writable, readable data), doorbell (op 3).
def post(queue, buffers, kick=True, indirect=False):
    out = bytes([queue << 4 | 0, (len(buffers) - 1) | (8 if indirect else 0) | (0x40 if kick else 0)])
    for data, length, writable in buffers:
        out += struct.pack("<H", length | (0x8000 if writable else 0)) + (b"" if writable else data)
    return out

blk_read = struct.pack("<IIQ", 0, 0, 1)
blk_write = struct.pack("<IIQ", 1, 0, 2)
blk_id = struct.pack("<IIQ", 8, 0, 0)
seed("virtio_blk", "read-write-id", bytes([0x07, 0x55])
     + post(0, [(blk_read, 16, False), (b"", 512, True), (b"", 1, True)])
     + post(0, [(blk_write, 16, False), (b"\xab" * 512, 512, False), (b"", 1, True)], indirect=True)
     + post(0, [(blk_id, 16, False), (b"", 20, True), (b"", 1, True)]))
seed("virtio_blk", "discard", bytes([0x07, 0x55]) + post(0, [(struct.pack("<IIQ", 11, 0, 0), 16, False),
     (struct.pack("<QII", 0, 8, 0), 16, False), (b"", 1, True)]))
frame = bytes(12) + bytes.fromhex("ffffffffffff525400123456 0806".replace(" ", "")) + bytes(28)
seed("virtio_net", "tx-rx", bytes([0x07, 0x55]) + post(0, [(b"", 1526, True)]) + post(1, [(frame, len(frame), False)])
     + bytes([0x0A]) + struct.pack("<H", len(frame)) + frame)
seed("virtio_console", "tx-rx", bytes([0x07, 0x55]) + post(0, [(b"", 64, True)]) + post(1, [(b"hello\n", 6, False)])
     + bytes([0x0A]) + struct.pack("<H", 5) + b"input")
seed("virtio_rng", "two", bytes([0x03, 0x55]) + post(0, [(b"", 64, True)]) + post(0, [(b"", 16, True), (b"", 4096, True)], indirect=True))
mem = lambda t, a, n: struct.pack("<HHHHQHHHH", t, 0, 0, 0, a, n, 0, 0, 0)
seed("virtio_mem", "plug-state-unplug", bytes([0x03, 0x55]) + post(0, [(mem(0, 0x8000000, 2), 24, False), (b"", 10, True)])
     + post(0, [(mem(3, 0x8000000, 3), 24, False), (b"", 10, True)]) + post(0, [(mem(1, 0x8200000, 1), 24, False), (b"", 10, True)])
     + post(0, [(mem(2, 0, 0), 24, False), (b"", 10, True)], indirect=True))
seed("virtio_pci", "registers", bytes([0x03, 0x55, 0x07]) + struct.pack("<H", 0x14) + bytes([0]) + bytes(8)
     + bytes([0x06]) + struct.pack("<H", 0x16) + bytes([1]) + struct.pack("<Q", 0))
seed("split_queue", "one-chain", bytes([0x03, 0x04]) + struct.pack("<QIHH", 0x10000, 16, 1, 1) + struct.pack("<QIHH", 0x10100, 64, 2, 0)
     + bytes(16 * 14) + struct.pack("<HH", 1, 0) + struct.pack("<H", 0) + bytes(30) + b"data")
seed("pci_config", "bar-sizing", bytes([0x11, 2, 0]) + struct.pack("<Q", 0x80000810) + bytes([0x11, 2, 4]) + struct.pack("<Q", 0xFFFFFFFF)
     + bytes([0x00, 2, 4]))
seed("msix", "unmask", bytes([2, 0x20]) + struct.pack("<H", 12) + struct.pack("<Q", 0) + bytes([3, 0x80, 4, 1, 0, 2, 0, 0]))
seed("uart", "hello", bytes([16]) + b"".join(bytes([0x00, 0]) + struct.pack("<Q", c) for c in b"hi") + bytes([0x03, 0, 4]) + b"abcd")
seed("i8042", "reset", bytes([0x04, 4]) + struct.pack("<Q", 0xFE))
print("seeds written to", root)
