#!/usr/bin/env python3
"""Extracts the ELF vmlinux from a bzImage. The setup header says where the compressed payload is
(payload_offset, payload_length at 0x248, boot protocol 2.08+); its magic says how it is compressed.
The same job as the kernel's scripts/extract-vmlinux. Usage: extract-vmlinux.py BZIMAGE OUT"""
import bz2, gzip, io, lzma, struct, subprocess, sys

data = open(sys.argv[1], "rb").read()
setup_sects = data[0x1F1] or 4
offset, length = struct.unpack_from("<II", data, 0x248)
payload = data[(setup_sects + 1) * 512 + offset:][:length]

def tool(*argv):
    return lambda b: subprocess.run(list(argv), input=b, capture_output=True, check=False).stdout

formats = [
    (b"\x02\x21\x4c\x18", "lz4", tool("lz4", "-dc")),
    (b"\x28\xb5\x2f\xfd", "zstd", tool("zstd", "-qdc")),
    (b"\xfd7zXZ\x00", "xz", lambda b: lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(b)),
    (b"\x1f\x8b", "gzip", lambda b: gzip.GzipFile(fileobj=io.BytesIO(b)).read()),
    (b"BZh", "bzip2", lambda b: bz2.BZ2Decompressor().decompress(b)),
    (b"\x5d\x00", "lzma", lambda b: lzma.LZMADecompressor(format=lzma.FORMAT_ALONE).decompress(b)),
    (b"\x89LZO", "lzo", tool("lzop", "-dc")),
]
for magic, name, decompress in formats:
    if payload.startswith(magic):
        out = decompress(payload)
        if out[:4] != b"\x7fELF":
            sys.exit(f"extract-vmlinux: the {name} payload did not decompress to an ELF (is the {name} tool installed?)")
        open(sys.argv[2], "wb").write(out)
        print(f"extract-vmlinux: {len(out)} bytes ({name})", file=sys.stderr)
        sys.exit(0)
sys.exit(f"extract-vmlinux: unknown payload format {payload[:6].hex()}")
