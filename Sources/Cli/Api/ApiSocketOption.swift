/// `--api-socket path=PATH|fd=N`: where the REST API listens. A bare `PATH` is accepted too, as Cloud
/// Hypervisor does. `fd=N` is an inherited descriptor that is already a listening unix socket.
enum ApiSocketOption: Equatable, Sendable {
    case path(String)
    case fd(Int32)

    static func parse(_ text: String) throws(CliError) -> ApiSocketOption {
        let list = try KeyValueList(option: "--api-socket", text: text, allowedKeys: ["path", "fd"], allowsBareWord: true)
        guard list.pairs.count == 1 else { throw CliError("--api-socket \(text): give either path=PATH or fd=N") }
        if let fd = try list.integer("fd", in: 0...Int(Int32.max)) { return .fd(Int32(fd)) }
        guard let path = list["path"] ?? list[""], !path.isEmpty else { throw CliError("--api-socket \(text): expected path=PATH or fd=N") }
        guard path.utf8.count <= UnixSocket.maxPathLength else {
            throw CliError("--api-socket path=\(path): longer than \(UnixSocket.maxPathLength) bytes (the limit for a unix socket path)")
        }
        return .path(path)
    }

    /// Opens the listener. Failures are bad configuration (exit code 2), reported with the option.
    func listen() throws(CliError) -> UnixSocket.Listener {
        do {
            switch self {
            case .path(let path): return try UnixSocket.listen(path: path)
            case .fd(let fd): return try UnixSocket.adopt(fd: fd)
            }
        } catch {
            throw CliError("--api-socket \(error)")
        }
    }
}
