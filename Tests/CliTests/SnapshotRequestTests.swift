@testable import Cli
import Testing

/// The command line's `--restore`, the API's snapshot/restore/migration bodies and the remote's arguments.
@Suite struct SnapshotRequestTests {
    @Test func restoreOption() throws {
        #expect(try VmmOptions.parse(["--restore", "source_url=file:///tmp/s,resume=on"]).restore == SnapshotRequest(url: "file:///tmp/s", resume: true))
        #expect(try VmmOptions.parse(["--restore", "source_url=file:///tmp/s"]).restore?.resume == false)
        #expect(throws: CliError("--restore source_url=/tmp/s: expected source_url=file:///DIR (an absolute directory)")) {
            try VmmOptions.parse(["--restore", "source_url=/tmp/s"])
        }
        #expect(throws: CliError("--restore resume=maybe: expected source_url=file:///DIR, resume=on|off")) {
            try VmmOptions.parse(["--restore", "source_url=file:///tmp/s,resume=maybe"])
        }
        #expect(throws: CliError.self) { try VmmOptions.parse(["--restore", "source_url=file:///tmp/s", "--kernel", "/k"]) }
    }

    @Test func requestBodies() throws {
        #expect(try SnapshotRequest.parse(Array(#"{"destination_url":"file:///d"}"#.utf8), urlField: "destination_url").url == "file:///d")
        let restore = try SnapshotRequest.parse(Array(#"{"source_url":"file:///d","resume":true,"prepare":false}"#.utf8), urlField: "source_url")
        #expect(restore == SnapshotRequest(url: "file:///d", resume: true))
        #expect(throws: ConfigError(field: "destination_url", "missing")) { try SnapshotRequest.parse(Array("{}".utf8), urlField: "destination_url") }
        #expect(throws: ConfigError.self) { try SnapshotRequest.parse(Array(#"{"destination_url":"x","resume":true}"#.utf8), urlField: "destination_url") }
        #expect(throws: ConfigError.self) { try SnapshotRequest.parse(Array("[1]".utf8), urlField: "source_url") }
    }

    @Test func remoteArguments() throws {
        #expect(try RemoteCommand.requestBody(.vmRestore, "source_url=file:///d,resume=on").get() == Array(#"{"source_url":"file:///d","resume":true}"#.utf8))
        #expect(try RemoteCommand.requestBody(.vmSnapshot, "file:///d").get() == Array(#"{"destination_url":"file:///d"}"#.utf8))
        #expect(try RemoteCommand.requestBody(.vmReceiveMigration, "unix:/m").get() == Array(#"{"receiver_url":"unix:/m"}"#.utf8))
        #expect(throws: RemoteCommand.ArgumentError.self) { try RemoteCommand.requestBody(.vmRestore, "source_url=x,bogus=1").get() }
    }
}
