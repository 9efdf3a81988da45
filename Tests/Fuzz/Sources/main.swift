import Glibc

// The fuzz executable's entry: libFuzzer's driver, which calls LLVMFuzzerInitialize and then
// LLVMFuzzerTestOneInput (Registry.swift) for each input. SwiftPM gives every executable its own entry
// symbol, so libFuzzer's own main() is not used; LLVMFuzzerRunDriver is its documented replacement.

/// libFuzzer's `int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*UserCb)(const uint8_t *, size_t))`.
/// Every argument and the result are passed in integer registers, where the Swift and C conventions agree.
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(_ argc: UnsafeMutablePointer<Int32>,
                         _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
                         _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32) -> Int32

var argc = CommandLine.argc
var argv = CommandLine.unsafeArgv
exit(LLVMFuzzerRunDriver(&argc, &argv, { fuzzOneInput($0, $1) }))
