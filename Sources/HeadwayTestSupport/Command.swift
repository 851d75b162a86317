import Foundation

/// Runs an external program to completion, with a deadline, and captures what it printed.
package struct CommandResult: Sendable {
    package var status: Int32
    package var stdout: String
    package var stderr: String
    package var timedOut: Bool
}

package enum Command {
    /// Runs `arguments[0]` (looked up on PATH) and waits at most `timeout` seconds; then it is killed.
    ///
    /// The wait happens on a thread of its own, so that concurrent tests' tasks keep running.
    @discardableResult
    package static func run(
        _ arguments: [String],
        timeout: Double = 60,
        environment: [String: String]? = nil
    ) async throws -> CommandResult {
        try await withCheckedThrowingContinuation { continuation in
            Thread.detachNewThread {
                continuation.resume(
                    with: Result { try Self.runBlocking(arguments, timeout: timeout, environment: environment) }
                )
            }
        }
    }

    private static func runBlocking(
        _ arguments: [String],
        timeout: Double,
        environment: [String: String]?
    ) throws -> CommandResult {
        let process = Process()
        guard
            let executable = IntegrationEnvironment.path(of: arguments[0])
                ?? (arguments[0].hasPrefix("/") ? arguments[0] : nil)
        else {
            throw CommandError(description: "program not found: \(arguments[0])")
        }
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = Array(arguments.dropFirst())
        if let environment { process.environment = environment }
        let outURL = FileManager.default.temporaryDirectory.appendingPathComponent(
            "headway-cmd-\(UUID().uuidString).out"
        )
        let errURL = outURL.appendingPathExtension("err")
        _ = FileManager.default.createFile(atPath: outURL.path, contents: nil)
        _ = FileManager.default.createFile(atPath: errURL.path, contents: nil)
        defer {
            try? FileManager.default.removeItem(at: outURL)
            try? FileManager.default.removeItem(at: errURL)
        }
        let outHandle = try FileHandle(forWritingTo: outURL)
        let errHandle = try FileHandle(forWritingTo: errURL)
        process.standardOutput = outHandle
        process.standardError = errHandle
        process.standardInput = FileHandle.nullDevice
        try process.run()
        let deadline = Date().addingTimeInterval(timeout)
        var timedOut = false
        while process.isRunning {
            if Date() > deadline {
                timedOut = true
                process.terminate()
                Thread.sleep(forTimeInterval: 0.2)
                if process.isRunning { kill(process.processIdentifier, SIGKILL) }
                break
            }
            Thread.sleep(forTimeInterval: 0.01)
        }
        process.waitUntilExit()
        try outHandle.close()
        try errHandle.close()
        return CommandResult(
            status: process.terminationStatus,
            stdout: (try? String(contentsOf: outURL, encoding: .utf8)) ?? "",
            stderr: (try? String(contentsOf: errURL, encoding: .utf8)) ?? "",
            timedOut: timedOut
        )
    }
}

package struct CommandError: Error, CustomStringConvertible {
    package var description: String
    package init(description: String) { self.description = description }
}
