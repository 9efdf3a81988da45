#!/usr/bin/env python3
"""Which pages of actor-vmm are resident in the start row's steady state, and where they are in the binary.

    Tests/Footprint/resident.py [--binary PATH] [--map LLD_MAP] [--env NAME=VALUE ...]
    Tests/Footprint/resident.py --env ACTOR_VMM_NO_FAULT_AROUND=1   (the pages touched, not those mapped around)
    Tests/Footprint/resident.py --write-guest PATH | --touched-functions ORDER | --native-ifuncs ORDER
        (for symbol-order.sh: the guest; the functions a native run needs that ORDER does not place; ORDER
        with the string functions this CPU runs)

Runs actor-vmm as the benchmark's start row does (1 vCPU, 128 MiB, the row's tiny guest: 'S', 10,000 OUT/IN
round trips, 'M', 10,000 more, power-off), stops it (SIGSTOP) when the guest has written 'M', and reads
/proc/PID/smaps and /proc/PID/pagemap (bit 63: the page is mapped in this process, what VmRSS counts). Every
resident page of the binary's own mappings is placed in the ELF section(s) it overlaps (`readelf -SW`); .text
pages are split into the part the order file places (`Tests/Footprint/actor-vmm.order`: lld puts the listed
functions first) and the rest, and the rest's resident pages are named by the symbols on them (`nm -n`), so
what keeps an unordered page resident can be seen. Anonymous mappings (heap, stacks, .bss) are summed by kind.
Prints KiB. See docs/benchmarks.md, "Footprint".
"""
import argparse
import bisect
import collections
import os
import re
import signal
import struct
import subprocess
import sys
import tempfile

PAGE = 4096
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def start_guest():
    """The start row's guest (Benchmarks/StartPrograms.swift, StartGuest): one PT_LOAD at 2 MiB."""
    def serial(byte):
        return bytes([0x66, 0xBA, 0xF8, 0x03, 0xB0, byte, 0xEE])
    trips = bytes([0xB9, 0x10, 0x27, 0, 0, 0x66, 0xBA, 0x00, 0x0A, 0xEF, 0xED, 0xFF, 0xC9, 0x75, 0xFA])
    off = bytes([0x66, 0xBA, 0x00, 0x06, 0xB0, 0x34, 0xEE, 0xF4, 0xEB, 0xFD])
    code = serial(ord('S')) + trips + serial(ord('M')) + trips + serial(ord('\n')) + off
    base = 0x200000
    header = bytearray(120)
    header[0:7] = bytes([0x7F, 0x45, 0x4C, 0x46, 2, 1, 1])
    struct.pack_into('<HHI', header, 16, 2, 62, 1)
    struct.pack_into('<QQ', header, 24, base, 64)
    struct.pack_into('<HHH', header, 52, 64, 56, 1)
    struct.pack_into('<IIQQQQQQ', header, 64, 1, 5, 120, base, base, len(code), len(code), 0x1000)
    return bytes(header) + code


def sections(binary):
    """(start, end, name) of the allocated sections, by address."""
    out = subprocess.run(['readelf', '-SW', binary], capture_output=True, text=True, check=True).stdout
    result = []
    for line in out.splitlines():
        line = line.replace('[ ', '[')
        fields = line.split()
        if len(fields) < 7 or not fields[0].startswith('[') or fields[0] == '[Nr]':
            continue
        try:
            name, address, size = fields[1], int(fields[3], 16), int(fields[5], 16)
        except ValueError:
            continue
        if address and size:
            result.append((address, address + size, name))
    return sorted(result)


def symbols(binary):
    """Sorted (address, name) of the defined symbols, and {name: address}."""
    out = subprocess.run(['nm', '-n', '--defined-only', binary], capture_output=True, text=True, check=True).stdout
    pairs = []
    for line in out.splitlines():
        fields = line.split(' ', 2)
        if len(fields) == 3:
            pairs.append((int(fields[0], 16), fields[2]))
    return pairs, {name: address for address, name in pairs}


def input_sections(map_path):
    """Sorted (start, end, output section, input file) of the non-empty input sections in an lld -Map file."""
    result = []
    output = None
    with open(map_path) as lines:
        for line in lines:
            fields = line.split(None, 4)
            if len(fields) < 5 or not all(c in '0123456789abcdef' for c in fields[0]):
                continue
            indent = len(line) - len(line.lstrip(' ')) + 0
            rest = line[line.index(fields[3], 40) + len(fields[3]):]
            depth = len(rest) - len(rest.lstrip(' '))
            if depth == 1:
                output = rest.strip()
            elif depth == 9 and int(fields[2], 16):
                name = rest.strip()
                start = int(fields[0], 16)
                # "lib.a(member.o):(.text.symbol)": keep the file and the section kind (.text, .rodata, ...)
                file, _, section = name.rpartition(':(')
                kind = section.rstrip(')')
                kind = '.text.*' if kind.startswith('.text.') else kind
                kind = '.rodata.*' if kind.startswith('.rodata.') else kind
                kind = '.data.*' if kind.startswith('.data.') and not kind.startswith('.data.rel.ro') else kind
                kind = '.data.rel.ro.*' if kind.startswith('.data.rel.ro.') else kind
                result.append((start, start + int(fields[2], 16), output, os.path.basename(file), kind))
    return sorted(result)


def attribute(pages, inputs):
    """Resident bytes by (input file, output section): each resident page's bytes go to the input
    sections they belong to (the gaps between them to the page's first one)."""
    starts = [s[0] for s in inputs]
    bytes_by = collections.Counter()
    for page in pages:
        i = max(bisect.bisect_right(starts, page) - 1, 0)
        while i < len(inputs) and inputs[i][0] < page + PAGE:
            start, end, output, file, _ = inputs[i]
            overlap = min(end, page + PAGE) - max(start, page)
            if overlap > 0:
                bytes_by[(file, output)] += overlap
            i += 1
    return bytes_by


def run_stopped(binary, guest, env):
    """Starts actor-vmm on the guest and returns (process, pid) stopped after the guest's 'M'."""
    process = subprocess.Popen([binary, '--kernel', guest, '--memory', 'size=128M', '--cpus', 'boot=1',
                                '--serial', 'tty', '--console', 'off'],
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env=env)
    seen = b''
    while b'M' not in seen:
        chunk = os.read(process.stdout.fileno(), 1)
        if not chunk:
            sys.exit('resident.py: actor-vmm ended before the guest wrote M: ' + process.stderr.read().decode())
        seen += chunk
    os.kill(process.pid, signal.SIGSTOP)
    os.waitpid(process.pid, os.WUNTRACED)
    return process


def mappings(pid):
    """(start, end, offset, path, rss_kib) from /proc/PID/smaps."""
    result = []
    current = None
    with open(f'/proc/{pid}/smaps') as smaps:
        for line in smaps:
            fields = line.split()
            if '-' in fields[0] and not fields[0].endswith(':'):
                start, end = (int(x, 16) for x in fields[0].split('-'))
                path = fields[5] if len(fields) > 5 else ''
                current = [start, end, int(fields[2], 16), path, 0, fields[1]]
                result.append(current)
            elif fields[0] == 'Rss:':
                current[4] = int(fields[1])
    return result


def present_pages(pid, start, end):
    """Addresses of the pages of [start, end) mapped in the process (pagemap bit 63)."""
    with open(f'/proc/{pid}/pagemap', 'rb') as pagemap:
        pagemap.seek(start // PAGE * 8)
        data = pagemap.read((end - start) // PAGE * 8)
    return [start + i * PAGE for i, (entry,) in enumerate(struct.iter_unpack('<Q', data)) if entry >> 63]


IFUNC_VARIANT = re.compile(r'^__([a-z0-9]+?)_(sse|ssse|avx|evex|fma|erms|unaligned)')


def native_ifuncs(binary, guest):
    """{function family: the variant glibc's IFUNC resolvers choose on this CPU}, read from the GOT slots of a
    running actor-vmm (a static binary's R_X86_64_IRELATIVE relocations, applied at start)."""
    relocations = subprocess.run(['readelf', '-rW', binary], capture_output=True, text=True, check=True).stdout
    slots = [(int(f[0], 16), int(f[3], 16)) for f in (line.split() for line in relocations.splitlines())
             if len(f) == 4 and f[2] == 'R_X86_64_IRELATIVE']
    names = collections.defaultdict(list)
    pairs, _ = symbols(binary)
    for address, name in pairs:
        names[address].append(name)
    process = run_stopped(binary, guest, dict(os.environ))
    try:
        with open(f'/proc/{process.pid}/mem', 'rb') as memory:
            chosen = {}
            for slot, resolver in slots:
                memory.seek(slot)
                (target,) = struct.unpack('<Q', memory.read(8))
                variants = [n for n in names.get(target, []) if IFUNC_VARIANT.match(n)]
                for name in names.get(resolver, []):
                    family = re.sub(r'_ifunc$', '', re.sub(r'^(__libc_|__new_|__)', '', name))
                    if variants:
                        chosen.setdefault(family, variants[0])
    finally:
        process.kill()
        process.wait()
    return chosen


def with_native_ifuncs(order, chosen):
    """The order list with, after the first variant of each string or math function that valgrind's CPU
    chose (callgrind runs without AVX-512), the one this CPU runs."""
    result, seen = [], set(order)
    for name in order:
        result.append(name)
        match = IFUNC_VARIANT.match(name)
        native = chosen.get(match.group(1)) if match else None
        if native and native not in seen:
            result.append(native)
            seen.add(native)
    return result


def touched_functions(binary, guest, order, runs=5):
    """The functions on the .text pages a native run of the start row touches (fault-around off: see
    Sources/CKvm/footprint.c), in address order: the ones valgrind does not see run too (seccomp's, the vDSO's
    set-up, paths that depend on timing), with the neighbours that share their pages."""
    text = next(((s, e) for s, e, n in sections(binary) if n == '.text'), (0, 0))
    out = subprocess.run(['nm', '-n', '-S', '--defined-only', binary], capture_output=True, text=True,
                         check=True).stdout
    functions = []
    for line in out.splitlines():
        fields = line.split(' ', 3)
        if len(fields) == 4 and fields[2] in 'tTwW':  # (assembly functions such as crt's have size 0)
            functions.append((int(fields[0], 16), max(int(fields[1], 16), 1), fields[3]))
    env = dict(os.environ, ACTOR_VMM_NO_FAULT_AROUND='1')
    touched = set()
    for _ in range(runs):  # some paths depend on timing (a device's loop busy or not): the union of a few runs
        process = run_stopped(binary, guest, env)
        try:
            for start, end, _, path, _, _ in mappings(process.pid):
                low, high = max(start, text[0] & ~(PAGE - 1)), min(end, text[1])
                if path == binary and low < high:
                    touched.update(present_pages(process.pid, low, high))
        finally:
            process.kill()
            process.wait()
    # Only what the order file does not place yet (beyond the functions it lists, which lld puts first), or
    # placed because an earlier native run added it: not the thousands of symbols inside the big sections
    # lld can only move whole (the standard library's .text), which the order already places.
    listed = set(order)
    ordered_end = max((address + size for address, size, name in functions if name in listed), default=0)
    return [name for address, size, name in functions
            if (address >= ordered_end or name in listed)
            and any(page in touched for page in range(address & ~(PAGE - 1), address + size, PAGE))]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--binary', default=os.path.join(ROOT, '.build/release/actor-vmm'))
    parser.add_argument('--symbols', type=int, default=0, help='list the first symbol of N unordered .text pages')
    parser.add_argument('--env', action='append', default=[], help='NAME=VALUE for actor-vmm')
    parser.add_argument('--map', help="lld's -Map output for this binary: resident KiB by input file and section")
    parser.add_argument('--top', type=int, default=30, help='with --map: how many input files to list')
    parser.add_argument('--write-guest', metavar='PATH', help="only write the start row's guest to PATH")
    parser.add_argument('--native-ifuncs', metavar='ORDER', help='only print the order file ORDER with the '
                        'string and math function variants this CPU runs added (symbol-order.sh)')
    parser.add_argument('--touched-functions', metavar='ORDER',
                        help='only print the functions on the .text pages a native run touches that the order '
                        'file ORDER (the one the binary was linked with) does not place (symbol-order.sh)')
    args = parser.parse_args()
    if args.touched_functions:
        with tempfile.TemporaryDirectory() as work:
            guest = os.path.join(work, 'guest.elf')
            with open(guest, 'wb') as f:
                f.write(start_guest())
            with open(args.touched_functions) as f:
                order = [line.rstrip('\n') for line in f]
            print('\n'.join(touched_functions(os.path.realpath(args.binary), guest, order)))
        return
    if args.write_guest:
        with open(args.write_guest, 'wb') as f:
            f.write(start_guest())
        return
    if args.native_ifuncs:
        with open(args.native_ifuncs) as f:
            order = [line.rstrip('\n') for line in f]
        with tempfile.TemporaryDirectory() as work:
            guest = os.path.join(work, 'guest.elf')
            with open(guest, 'wb') as f:
                f.write(start_guest())
            chosen = native_ifuncs(os.path.realpath(args.binary), guest)
        print('\n'.join(with_native_ifuncs(order, chosen)))
        return
    binary = os.path.realpath(args.binary)
    env = dict(os.environ)
    for item in args.env:
        name, _, value = item.partition('=')
        env[name] = value
    section_list = sections(binary)
    section_starts = [s for s, _, _ in section_list]
    pairs, by_name = symbols(binary)
    addresses = [a for a, _ in pairs]
    with open(os.path.join(HERE, 'actor-vmm.order')) as order:
        ordered = [by_name[n] for n in (line.strip() for line in order) if n in by_name]
    text = next(((s, e) for s, e, n in section_list if n == '.text'), (0, 0))
    # The ordered functions are the first ones in .text: their end is the end of the last one placed.
    ordered_end = max((a for a in ordered if text[0] <= a < text[1]), default=text[0])
    following = bisect.bisect_right(addresses, ordered_end)
    ordered_end = addresses[following] if following < len(addresses) else text[1]

    with tempfile.TemporaryDirectory() as work:
        guest = os.path.join(work, 'guest.elf')
        with open(guest, 'wb') as f:
            f.write(start_guest())
        process = run_stopped(binary, guest, env)
        try:
            maps = mappings(process.pid)
            with open(f'/proc/{process.pid}/status') as f:
                status = {l.split(':')[0]: l.split(':')[1].strip() for l in f if ':' in l}
            kinds = collections.Counter()
            pages_by_kind = collections.defaultdict(list)
            anon = collections.Counter()
            all_pages = []
            for start, end, offset, path, rss, perms in maps:
                if path == binary:
                    present = present_pages(process.pid, start, end)
                    all_pages.extend(present)
                    for page in present:
                        i = bisect.bisect_right(section_starts, page + PAGE - 1) - 1
                        names = []
                        while i >= 0 and section_list[i][1] > page:
                            if section_list[i][0] < page + PAGE:
                                names.append(section_list[i][2])
                            i -= 1
                        if not names:
                            names = ['(no section)']
                        kind = names[0] if len(names) == 1 else names[-1] + '..' + names[0]
                        if kind == '.text':
                            kind = '.text ordered' if page < ordered_end else '.text unordered'
                        kinds[kind] += 4
                        pages_by_kind[kind].append(page)
                elif 'actor-vmm-guest-ram' in path:
                    continue
                else:
                    label = path or 'anonymous'
                    if not path and (end - start) >= 128 << 20:
                        continue  # guest RAM, unnamed
                    anon[f'{label} {perms}'] += rss
        finally:
            process.kill()
            process.wait()

    print(f"VmRSS {status['VmRSS']}, RssAnon {status['RssAnon']}, RssFile {status['RssFile']}")
    print(f'.text {text[0]:#x}-{text[1]:#x}; ordered part {text[0]:#x}-{ordered_end:#x} '
          f'({(ordered_end - text[0]) // 1024} KiB, {len(ordered)} functions)')
    print('\nresident pages of the binary, by section (KiB):')
    for kind, kib in sorted(kinds.items(), key=lambda x: -x[1]):
        print(f'  {kib:6d}  {kind}')
    print(f'  {sum(kinds.values()):6d}  total')
    print('\nother mappings (Rss KiB):')
    for label, kib in sorted(anon.items(), key=lambda x: -x[1]):
        if kib:
            print(f'  {kib:6d}  {label}')
    if args.map:
        inputs = input_sections(args.map)
        by = attribute(all_pages, inputs)
        sizes = collections.Counter()
        for start, end, output, file, _ in inputs:
            sizes[(file, output)] += end - start
        print(f'\nresident KiB by input file and output section (of its size), the first {args.top}:')
        for (file, output), count in by.most_common(args.top):
            print(f'  {count / 1024:7.1f} of {sizes[(file, output)] / 1024:7.1f}  {output:16s} {file}')
    if args.symbols:
        print('\nunordered .text: resident 64 KiB blocks and the symbols on their resident pages:')
        for page in pages_by_kind['.text unordered'][:args.symbols]:
            i = bisect.bisect_right(addresses, page) - 1
            j = bisect.bisect_left(addresses, page + PAGE)
            names = [pairs[k][1] for k in range(max(i, 0), j)]
            print(f'  {page:#x} {len(names)} symbols: {" ".join(names[:3])}')


if __name__ == '__main__':
    main()
