#!/usr/bin/env python3
"""Writes a directory as a newc (SVR4 with no CRC) cpio archive, the initramfs format Linux reads.
Usage: newc.py DIR OUT. Owner root, sorted order, symlinks kept."""
import os, stat, sys

root, out = sys.argv[1], sys.argv[2]
ino = 1
with open(out, "wb") as f:
    def entry(name, mode, data=b"", nlink=1):
        global ino
        name_bytes = name.encode() + b"\0"
        header = "070701" + "".join(f"{v:08x}" for v in (ino, mode, 0, 0, nlink, 0, len(data), 0, 0, 0, 0, len(name_bytes), 0))
        f.write(header.encode() + name_bytes)
        f.write(b"\0" * ((4 - (110 + len(name_bytes)) % 4) % 4))
        f.write(data)
        f.write(b"\0" * ((4 - len(data) % 4) % 4))
        ino += 1
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel = os.path.relpath(dirpath, root)
        if rel != ".":
            entry(rel, stat.S_IFDIR | 0o755, nlink=2)
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            relname = os.path.normpath(os.path.join(rel, name))
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                entry(relname, stat.S_IFLNK | 0o777, os.readlink(path).encode())
            else:
                entry(relname, stat.S_IFREG | (st.st_mode & 0o777), open(path, "rb").read())
    entry("TRAILER!!!", 0)
