/// The AML encoder's control-method vocabulary (ACPI 6.5 §20.2.5): operation regions and fields, mutexes,
/// locals and arguments, stores, arithmetic, comparisons, `If`/`While`, `Notify` and method calls. Enough for
/// the hotplug controllers' methods (`HotplugAml.swift`); each function names the ASL it is equivalent to.
extension Aml {
    // MARK: Opcodes (§20.3, Table 20.2)

    static let local0Op: UInt8 = 0x60
    static let arg0Op: UInt8 = 0x68
    static let storeOp: UInt8 = 0x70
    static let addOp: UInt8 = 0x72
    static let subtractOp: UInt8 = 0x74
    static let shiftLeftOp: UInt8 = 0x79
    static let andOp: UInt8 = 0x7B
    static let orOp: UInt8 = 0x7D
    static let notifyOp: UInt8 = 0x86
    static let createDWordFieldOp: UInt8 = 0x8A
    static let createQWordFieldOp: UInt8 = 0x8F
    static let lEqualOp: UInt8 = 0x93
    static let lLessOp: UInt8 = 0x95
    static let ifOp: UInt8 = 0xA0
    static let whileOp: UInt8 = 0xA2
    // After ExtOpPrefix:
    static let mutexOp: UInt8 = 0x01
    static let acquireOp: UInt8 = 0x23
    static let releaseOp: UInt8 = 0x27
    static let opRegionOp: UInt8 = 0x80
    static let fieldOp: UInt8 = 0x81

    // MARK: Operands

    /// `Local0`…`Local7`.
    public static func local(_ n: Int) -> [UInt8] {
        precondition((0...7).contains(n), "Local0-Local7")
        return [local0Op + UInt8(n)]
    }

    /// `Arg0`…`Arg6`.
    public static func arg(_ n: Int) -> [UInt8] {
        precondition((0...6).contains(n), "Arg0-Arg6")
        return [arg0Op + UInt8(n)]
    }

    /// A reference to a named object (a field, a name, a method called without arguments).
    public static func path(_ path: String) -> [UInt8] { nameString(path) }

    /// "No target": the result of an expression is only used as an operand.
    public static let noTarget: [UInt8] = [0x00]  // NullName

    // MARK: Statements and expressions

    /// `Store (value, target)`, in ASL 2.0 `target = value`.
    public static func store(_ value: [UInt8], into target: [UInt8]) -> [UInt8] { [storeOp] + value + target }

    /// `Add (a, b, target)`; with no target, an expression.
    public static func add(_ a: [UInt8], _ b: [UInt8], into target: [UInt8] = noTarget) -> [UInt8] { [addOp] + a + b + target }
    /// `Subtract (a, b, target)`.
    public static func subtract(_ a: [UInt8], _ b: [UInt8], into target: [UInt8] = noTarget) -> [UInt8] { [subtractOp] + a + b + target }
    /// `ShiftLeft (a, b, target)`: a << b.
    public static func shiftLeft(_ a: [UInt8], _ b: [UInt8], into target: [UInt8] = noTarget) -> [UInt8] { [shiftLeftOp] + a + b + target }
    /// `And (a, b, target)`.
    public static func and(_ a: [UInt8], _ b: [UInt8], into target: [UInt8] = noTarget) -> [UInt8] { [andOp] + a + b + target }
    /// `Or (a, b, target)`.
    public static func or(_ a: [UInt8], _ b: [UInt8], into target: [UInt8] = noTarget) -> [UInt8] { [orOp] + a + b + target }

    /// `LEqual (a, b)`, in ASL 2.0 `a == b`.
    public static func equal(_ a: [UInt8], _ b: [UInt8]) -> [UInt8] { [lEqualOp] + a + b }
    /// `LLess (a, b)`, `a < b`.
    public static func less(_ a: [UInt8], _ b: [UInt8]) -> [UInt8] { [lLessOp] + a + b }

    /// `If (predicate) { terms }`: IfOp, PkgLength, Predicate, TermList.
    public static func ifThen(_ predicate: [UInt8], _ terms: [[UInt8]]) -> [UInt8] {
        [ifOp] + withPkgLength(predicate + terms.flatMap { $0 })
    }

    /// `While (predicate) { terms }`: WhileOp, PkgLength, Predicate, TermList.
    public static func whileLoop(_ predicate: [UInt8], _ terms: [[UInt8]]) -> [UInt8] {
        [whileOp] + withPkgLength(predicate + terms.flatMap { $0 })
    }

    /// `Notify (object, value)` (§5.6.6): 0x80 for a button press, 1 "device check", 3 "eject request".
    public static func notify(_ object: String, _ value: [UInt8]) -> [UInt8] { [notifyOp] + nameString(object) + value }

    /// A method invocation: the method's name, then its arguments. The callee must take exactly
    /// `arguments.count` arguments: AML has no argument count at the call site.
    public static func call(_ method: String, _ arguments: [[UInt8]] = []) -> [UInt8] {
        nameString(method) + arguments.flatMap { $0 }
    }

    /// `CreateDWordField (buffer, byteIndex, name)` (§19.6.19).
    public static func createDWordField(_ buffer: String, byteIndex: Int, _ name: String) -> [UInt8] {
        [createDWordFieldOp] + nameString(buffer) + integer(UInt64(byteIndex)) + nameString(name)
    }

    /// `CreateQWordField (buffer, byteIndex, name)` (§19.6.23).
    public static func createQWordField(_ buffer: String, byteIndex: Int, _ name: String) -> [UInt8] {
        [createQWordFieldOp] + nameString(buffer) + integer(UInt64(byteIndex)) + nameString(name)
    }

    // MARK: Synchronization (§19.6.87, §19.6.1, §19.6.116)

    /// `Mutex (name, syncLevel)`.
    public static func mutex(_ name: String, syncLevel: UInt8 = 0) -> [UInt8] {
        precondition(syncLevel <= 15, "a sync level is 0-15")
        return [extOpPrefix, mutexOp] + nameString(name) + [syncLevel]
    }

    /// `Acquire (mutex, timeout)`; 0xFFFF waits for ever.
    public static func acquire(_ mutex: String, timeout: UInt16 = 0xFFFF) -> [UInt8] {
        var bytes = [extOpPrefix, acquireOp] + nameString(mutex)
        bytes.appendLittleEndian(timeout)
        return bytes
    }

    /// `Release (mutex)`.
    public static func release(_ mutex: String) -> [UInt8] { [extOpPrefix, releaseOp] + nameString(mutex) }

    // MARK: Operation regions and fields (§19.6.100, §19.6.48)

    /// Region space of an `OperationRegion` (Table 19.25).
    public enum RegionSpace: UInt8, Sendable { case systemMemory = 0, systemIO = 1 }

    /// `OperationRegion (name, space, offset, length)`.
    public static func operationRegion(_ name: String, _ space: RegionSpace, offset: UInt64, length: UInt64) -> [UInt8] {
        [extOpPrefix, opRegionOp] + nameString(name) + [space.rawValue] + integer(offset) + integer(length)
    }

    /// A field's access width (FieldFlags bits 0–3).
    public enum FieldAccess: UInt8, Sendable { case any = 0, byte = 1, word = 2, dword = 3, qword = 4 }
    /// What happens to the unnamed bits of a partial write (FieldFlags bits 5–6).
    public enum FieldUpdate: UInt8, Sendable { case preserve = 0, writeAsOnes = 1, writeAsZeros = 2 }
    /// One element of a field list: a named field of `bits` bits, or `bits` skipped.
    public enum FieldEntry: Sendable {
        case named(String, bits: Int)
        case reserved(bits: Int)
    }

    /// `Field (region, access, NoLock, update) { entries }`: ExtOpPrefix FieldOp, PkgLength, NameString,
    /// FieldFlags, FieldList. A NamedField is a NameSeg and its bit count as a PkgLength; a ReservedField
    /// is 0x00 and a PkgLength.
    public static func field(_ region: String, _ access: FieldAccess, _ update: FieldUpdate, _ entries: [FieldEntry]) -> [UInt8] {
        var list: [UInt8] = []
        for entry in entries {
            switch entry {
            case .named(let name, let bits): list += nameSeg(name) + encodePkgLength(bits)
            case .reserved(let bits): list += [0x00] + encodePkgLength(bits)
            }
        }
        let flags = access.rawValue | update.rawValue << 5  // bit 4 (lock rule) 0: NoLock
        return [extOpPrefix, fieldOp] + withPkgLength(nameString(region) + [flags] + list)
    }
}
