@testable import Cli

/// The HTTP/1.1 request parser, fed the input in pieces as a socket delivers it (the first byte picks the
/// piece size), with pipelined requests. Invariants: feeding in pieces gives the same first result as
/// feeding everything at once (the same request, or a refusal either way); a request consumes at least one byte and no more than was buffered; its body
/// is no larger than the limit.
func httpTarget(_ bytes: [UInt8]) {
    var input = FuzzInput(bytes)
    let piece = Int(input.byte() % 64) + 1
    let stream = input.rest()
    let limits = HttpLimits(maxRequestLine: 256, maxHeaderBytes: 1024, maxHeaderCount: 16, maxBodyBytes: 2048)
    var whole = HttpRequestParser(limits: limits)
    let expected = whole.parse(stream)

    var parser = HttpRequestParser(limits: limits)
    var buffer: [UInt8] = []
    var fed = 0, requests = 0
    var first: HttpParseResult?
    while true {
        let result = parser.parse(buffer)
        switch result {
        case .incomplete:
            guard fed < stream.count else {
                if first == nil { first = result }
                break
            }
            let n = min(piece, stream.count - fed)
            buffer += stream[fed..<(fed + n)]
            fed += n
            continue
        case .request(let request, let consumed):
            if first == nil { first = result }
            guard consumed > 0, consumed <= buffer.count else { finding("consumed \(consumed) of \(buffer.count) bytes") }
            guard request.body.count <= limits.maxBodyBytes else { finding("a body of \(request.body.count) bytes") }
            buffer.removeFirst(consumed)
            requests += 1
            if requests < 16 { continue }
        case .failure(let failure):
            if first == nil { first = result }
            guard !failure.message.isEmpty, !failure.message.contains("\n") else { finding("failure message \(failure.message)") }
        }
        break
    }
    // The same outcome whatever the pieces (the message of a failure may name whichever fault showed first).
    let same: Bool = switch (first, expected) {
    case (.request(let a, let n)?, .request(let b, let m)): a == b && n == m
    case (.incomplete(let a)?, .incomplete(let b)): a == b
    case (.failure?, .failure): true
    default: false
    }
    guard same else { finding("in pieces of \(piece): \(String(describing: first)); at once: \(expected)") }
}

/// The JSON parser (API bodies). Invariants: it returns a value or a JsonParseError (never traps, even on
/// deep nesting); what it returns serialises to text that parses back to the same value.
func jsonTarget(_ bytes: [UInt8]) {
    guard let value = try? JsonParser.parse(bytes) else { return }
    let text = value.serialized()
    do {
        let again = try JsonParser.parse(Array(text.utf8))
        guard again == value else { finding("round trip changed the value: \(text)") }
    } catch {
        finding("serialised JSON does not parse: \(error): \(text)")
    }
}

/// `vm.create`'s body: JSON into a VmConfig. Invariants: a value or a ConfigError naming a field, with a
/// one-line message; an accepted config's own JSON is accepted again as the same config.
func vmConfigTarget(_ bytes: [UInt8]) {
    guard let json = try? JsonParser.parse(bytes) else { return }
    let config: VmConfig
    do {
        config = try VmConfig(json: json)
    } catch {
        guard !error.description.isEmpty, !error.description.contains("\n") else { finding("error text: \(error)") }
        return
    }
    do {
        let again = try VmConfig(json: try JsonParser.parse(Array(config.json.serialized().utf8)))
        guard again == config else { finding("round trip changed the config: \(config.json.serialized())") }
    } catch {
        finding("a config's own JSON is refused: \(error): \(config.json.serialized())")
    }
}

/// The command line: the input split at NUL bytes into arguments. Invariants: options or a CliError with
/// a one-line, non-empty message; parsing reads no file (nothing here may block or touch the host).
func cliOptionsTarget(_ bytes: [UInt8]) {
    let arguments = bytes.split(separator: 0, omittingEmptySubsequences: false).map { String(decoding: $0, as: UTF8.self) }
    do {
        _ = try VmmOptions.parse(arguments)
    } catch {
        guard !error.message.isEmpty, !error.message.contains("\n") else { finding("error message: \(error.message)") }
    }
}
