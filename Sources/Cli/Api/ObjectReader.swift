/// Reads the members of one JSON object with their types checked, reporting problems by field path.
///
/// Cloud Hypervisor's rules: a member that is `null` counts as absent. ActorVMM's rule on top: every member
/// must be read (or explicitly accepted as unsupported) before ``finish()``, so a misspelt or unknown field
/// is an error instead of being silently ignored.
struct ObjectReader {
    /// The object's own path ("" for the document root, "cpus", "disks[0]").
    let path: String
    private let members: [JsonMember]
    private var read: Set<String> = []

    init(_ value: JsonValue, at path: String) throws(ConfigError) {
        guard case .object(let members) = value else {
            throw ConfigError(field: path.isEmpty ? "body" : path, "expected an object, got \(value.typeName)")
        }
        self.path = path
        self.members = members
    }

    /// The path of member `key`.
    func field(_ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    /// The error for a required member that is absent.
    func missing(_ key: String, _ why: String = "required") -> ConfigError {
        ConfigError(field: field(key), "missing (\(why))")
    }

    private mutating func take(_ key: String) -> JsonValue? {
        read.insert(key)
        let value = members.first { $0.key == key }?.value
        return value == .null ? nil : value
    }

    private func wrongType(_ key: String, _ expected: String, _ value: JsonValue) -> ConfigError {
        ConfigError(field: field(key), "expected \(expected), got \(value.typeName)")
    }

    /// A string. NUL is refused: paths and command lines go to C APIs, which would stop at it.
    mutating func string(_ key: String) throws(ConfigError) -> String? {
        guard let value = take(key) else { return nil }
        guard case .string(let text) = value else { throw wrongType(key, "a string", value) }
        guard !text.utf8.contains(0) else { throw ConfigError(field: field(key), "must not contain a NUL character") }
        return text
    }

    /// A non-empty string (a path, a name).
    mutating func nonEmptyString(_ key: String) throws(ConfigError) -> String? {
        guard let text = try string(key) else { return nil }
        guard !text.isEmpty else { throw ConfigError(field: field(key), "must not be empty") }
        return text
    }

    mutating func bool(_ key: String) throws(ConfigError) -> Bool? {
        guard let value = take(key) else { return nil }
        guard case .bool(let flag) = value else { throw wrongType(key, "true or false", value) }
        return flag
    }

    mutating func integer<T: FixedWidthInteger>(_ key: String, in range: ClosedRange<T>) throws(ConfigError) -> T? {
        guard let value = take(key) else { return nil }
        guard case .number = value else { throw wrongType(key, "an integer", value) }
        guard let number = value.integer(as: T.self), range.contains(number) else {
            throw ConfigError(field: field(key), "expected an integer from \(range.lowerBound) to \(range.upperBound)")
        }
        return number
    }

    /// One of `choices` (Cloud Hypervisor's enums are case-sensitive strings).
    mutating func choice(_ key: String, _ choices: [String]) throws(ConfigError) -> String? {
        guard let text = try string(key) else { return nil }
        guard choices.contains(text) else {
            throw ConfigError(field: field(key), "\"\(text)\" is not one of \(choices.joined(separator: ", "))")
        }
        return text
    }

    mutating func object(_ key: String) throws(ConfigError) -> ObjectReader? {
        guard let value = take(key) else { return nil }
        return try ObjectReader(value, at: field(key))
    }

    /// An array's elements, each with its path (`disks[0]`).
    mutating func array(_ key: String) throws(ConfigError) -> [(path: String, value: JsonValue)]? {
        guard let value = take(key) else { return nil }
        guard case .array(let elements) = value else { throw wrongType(key, "an array", value) }
        return elements.enumerated().map { (field(key) + "[\($0.offset)]", $0.element) }
    }

    /// A member whose value is only type-checked (shape validation of configuration not used yet).
    mutating func check(_ key: String, _ kind: JsonKind) throws(ConfigError) {
        switch kind {
        case .string: _ = try string(key)
        case .bool: _ = try bool(key)
        case .integer: _ = try integer(key, in: Int64.min...Int64.max)
        case .unsigned: _ = try integer(key, in: UInt64.min...UInt64.max)
        case .object: _ = try object(key)
        case .array: _ = try array(key)
        }
    }

    /// A member Cloud Hypervisor knows whose values ask for something ActorVMM does not do, except those in
    /// `harmless` (Cloud Hypervisor's default, or a value that matches what ActorVMM does anyway). Absent,
    /// `null`, `[]` and `{}` are accepted too; any other value is refused, naming the field and the value
    /// (and `why`, when given), rather than silently ignored.
    mutating func unsupported(_ key: String, harmless: [JsonValue] = [], _ why: String? = nil) throws(ConfigError) {
        guard let value = take(key) else { return }
        if value == .array([]) || value == .object([]) || harmless.contains(value) { return }
        throw refusal(key, value, why)
    }

    /// The error for `value` of member `key`, which asks for what ActorVMM does not do.
    func refusal(_ key: String, _ value: JsonValue, _ why: String? = nil) -> ConfigError {
        var text = value.serialized()
        if text.count > 60 { text = String(text.prefix(57)) + "..." }
        return ConfigError(field: field(key), "\(text) is not supported by actor-vmm" + (why.map { " (\($0))" } ?? ""))
    }

    /// Fails on the first member that was not read: an unknown (or misspelt) field.
    func finish() throws(ConfigError) {
        if let unknown = members.first(where: { !read.contains($0.key) }) {
            throw ConfigError(field: field(unknown.key), "unknown field")
        }
    }
}

/// Value types for ``ObjectReader/check(_:_:)``.
enum JsonKind {
    case string, bool, integer, unsigned, object, array
}
