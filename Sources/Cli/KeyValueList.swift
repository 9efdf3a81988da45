/// Cloud Hypervisor's option syntax: `key=value,key=value`, where some options also take a bare word
/// (`--serial tty`, `--rng`). Values may not contain commas.
struct KeyValueList {
    let option: String
    private(set) var pairs: [(key: String, value: String)] = []

    /// Parses `text` for `option`, accepting only `allowedKeys`. A bare word (no `=`) is stored under the
    /// key "" when `allowsBareWord` is true.
    init(option: String, text: String, allowedKeys: Set<String>, allowsBareWord: Bool = false) throws(CliError) {
        self.option = option
        for item in text.split(separator: ",", omittingEmptySubsequences: false) {
            guard !item.isEmpty else { throw CliError("\(option) \(text): empty item (expected key=value[,key=value…])") }
            if let equals = item.firstIndex(of: "=") {
                let key = String(item[..<equals]), value = String(item[item.index(after: equals)...])
                guard allowedKeys.contains(key) else {
                    let known = allowedKeys.sorted().joined(separator: ", ")
                    throw CliError("\(option): unknown key '\(key)' (expected one of: \(known))")
                }
                guard !pairs.contains(where: { $0.key == key }) else { throw CliError("\(option): key '\(key)' given twice") }
                pairs.append((key, value))
            } else {
                guard allowsBareWord, pairs.isEmpty else {
                    throw CliError("\(option) \(text): '\(item)' is not key=value")
                }
                pairs.append(("", String(item)))
            }
        }
    }

    subscript(key: String) -> String? { pairs.first { $0.key == key }?.value }

    /// An integer value in `range`.
    func integer(_ key: String, in range: ClosedRange<Int>) throws(CliError) -> Int? {
        guard let text = self[key] else { return nil }
        guard let value = Int(text), range.contains(value) else {
            throw CliError("\(option) \(key)=\(text): expected an integer from \(range.lowerBound) to \(range.upperBound)")
        }
        return value
    }

    /// An on/off value (also true/false).
    func bool(_ key: String) throws(CliError) -> Bool? {
        guard let text = self[key] else { return nil }
        switch text {
        case "on", "true": return true
        case "off", "false": return false
        default: throw CliError("\(option) \(key)=\(text): expected on or off")
        }
    }
}

/// Parses sizes as Cloud Hypervisor does: a number of bytes, or a number with K, M or G (powers of 1024).
func parseByteSize(_ text: String) -> UInt64? {
    guard let last = text.last else { return nil }
    let shift: UInt64
    var digits = Substring(text)
    switch last {
    case "K", "k": shift = 10; digits = digits.dropLast()
    case "M", "m": shift = 20; digits = digits.dropLast()
    case "G", "g": shift = 30; digits = digits.dropLast()
    case "T", "t": shift = 40; digits = digits.dropLast()
    default: shift = 0
    }
    // ASCII digits only, compared as bytes: `Character.isNumber` would read the standard library's Unicode
    // property tables, 64 KiB more resident in every VMM (docs/benchmarks.md, "Footprint").
    guard !digits.isEmpty, digits.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }),
          let number = UInt64(digits) else { return nil }
    let (value, overflow) = number.multipliedReportingOverflow(by: 1 << shift)
    return overflow ? nil : value
}
