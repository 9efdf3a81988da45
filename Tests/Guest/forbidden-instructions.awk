# forbidden-instructions.awk: prints each instruction the guest must not contain, reading
# `objdump -d --no-show-raw-insn` (GNU or LLVM) output; run with awk -F"\t". build.sh fails
# the build if anything is printed. Ring-0 guest code may run in the host's instruction emulator,
# so: no SSE/AVX/MMX/x87 (no xmm/ymm/zmm/mm/st operand, no f... mnemonic), popcnt,
# cmpxchg16b, xsave/xrstor, int3, clac/stac, (f)wait.
/^ *[0-9a-f]+:/ {
    insn = $0
    sub(/^[^\t]*\t/, "", insn)          # drop the address column
    sub(/[<#].*/, "", insn)             # drop symbol names and comments
    gsub(/\t/, " ", insn)
    mnemonic = insn
    while (mnemonic ~ /^(lock|rep|repz|repnz|repe|repne|data16|addr32|cs|ds|es|ss|fs|gs) /)
        sub(/^[a-z0-9]+ +/, "", mnemonic)
    sub(/ .*/, "", mnemonic)
    if (insn ~ /%[xyz]?mm[0-9]|%st/ ||
        mnemonic ~ /^(f[a-z0-9]*|wait|popcnt[a-z]*|cmpxchg16b|xsave[a-z0-9]*|xrstor[a-z0-9]*|int3|clac|stac)$/)
        print $1 " " insn
}
