#!/usr/bin/env bash
# Builds the test guest (Embedded Swift, freestanding x86-64) if any input is newer than the
# ELF, then prints the ELF's absolute path on stdout. Everything else goes to stderr.
# Works from any directory; concurrent runs serialise on a lock file.
#
# Toolchain (Swift 6.3 with Embedded Swift): $SWIFT_BIN, else the directory of `swiftc` on
# PATH, else /opt/swift/usr/bin. Its clang compiles start.S and runtime.c.
set -euo pipefail

guest_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
sources="$guest_dir/Sources"
out_dir="$guest_dir/.build"
elf="$out_dir/testguest.elf"

if [[ -z "${SWIFT_BIN:-}" ]]; then
    if command -v swiftc >/dev/null 2>&1; then
        SWIFT_BIN="$(dirname "$(command -v swiftc)")"
    else
        SWIFT_BIN=/opt/swift/usr/bin
    fi
fi
swiftc="$SWIFT_BIN/swiftc"
clang="$SWIFT_BIN/clang"
# Linker: $LINKER, else GNU ld, else the toolchain's ld.lld (both work with linker.ld; lld
# marks the ELF OS/ABI "GNU" instead of "System V", which loaders ignore).
linker="${LINKER:-$(command -v ld || true)}"
[[ -n "$linker" ]] || linker="$SWIFT_BIN/ld.lld"
for tool in "$swiftc" "$clang" "$linker"; do
    [[ -x "$tool" ]] || { echo "build.sh: missing tool: $tool" >&2; exit 1; }
done

mkdir -p "$out_dir"
exec 9>"$out_dir/lock"
flock 9

# Up to date when the ELF exists and no input (sources, this script, linker.ld, the awk check)
# is newer.
if [[ -f "$elf" ]] && [[ -z "$(find "$sources" "$guest_dir"/{build.sh,linker.ld,forbidden-instructions.awk} \
        -newer "$elf" -print -quit)" ]]; then
    echo "$elf"
    exit 0
fi
echo "build.sh: building the test guest" >&2

obj="$out_dir/obj"
rm -rf "$obj"
mkdir -p "$obj"

# No SSE/AVX/x87 anywhere: ring-0 guest code may run in the host's instruction emulator.
# -mno-sse/-mno-sse2 given to the Clang importer also set Swift's LLVM target features;
# -mno-red-zone too (interrupt handlers will push onto the interrupted stack).
target=x86_64-unknown-none-elf
cpu_flags=(-mno-sse -mno-sse2 -mno-mmx -mno-red-zone -mno-cx16)

swift_flags=(
    -target "$target" -enable-experimental-feature Embedded -swift-version 6
    -wmo -parse-as-library -Osize -module-name TestGuest
    -Xfrontend -disable-stack-protector -Xfrontend -function-sections
    -import-bridging-header "$sources/Hardware.h"
)
for flag in "${cpu_flags[@]}"; do swift_flags+=(-Xcc "$flag"); done

c_flags=(
    --target="$target" -ffreestanding -fno-builtin -nostdlib -fno-pic -fno-stack-protector
    -mgeneral-regs-only "${cpu_flags[@]}" -Os -ffunction-sections -fdata-sections
    -Wall -Wextra
)

shopt -s nullglob
# start.S first (linker.ld also puts its .text.start section at the image base).
objects=()
for src in "$sources"/*.S "$sources"/*.c; do
    o="$obj/$(basename "$src").o"
    "$clang" "${c_flags[@]}" -c "$src" -o "$o" >&2
    objects+=("$o")
done
"$swiftc" "${swift_flags[@]}" -c "$sources"/*.swift -o "$obj/swift.o" >&2
objects+=("$obj/swift.o")

"$linker" -nostdlib -static -z noexecstack -z max-page-size=4096 --build-id=none \
    --gc-sections -T "$guest_dir/linker.ld" -o "$elf.tmp" "${objects[@]}" >&2

# Refuse instructions the host's emulator may not handle (see forbidden-instructions.awk).
objdump="$(command -v objdump || echo "$SWIFT_BIN/llvm-objdump")"
forbidden="$("$objdump" -d --no-show-raw-insn "$elf.tmp" \
    | awk -F'\t' -f "$guest_dir/forbidden-instructions.awk")"
if [[ -n "$forbidden" ]]; then
    echo "build.sh: forbidden instructions in the guest:" >&2
    echo "$forbidden" >&2
    rm -f "$elf.tmp"
    exit 1
fi
mv -f "$elf.tmp" "$elf"
echo "$elf"
