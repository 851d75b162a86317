import Foundation
import HeadwayTestSupport
import Testing

extension IntegrationTests {
    /// The `headway` binary itself: signals, exit codes, messages.
    @Suite struct CommandLine {

        @Test func sigtermLetsInFlightRequestsFinish() async throws {
            let pods = try await EchoPods.start()
            let logFile = temporaryFile("headway.log")
            FileManager.default.createFile(atPath: logFile.path, contents: nil)
            defer { try? FileManager.default.removeItem(at: logFile) }
            let process = Process()
            process.executableURL = URL(fileURLWithPath: IntegrationEnvironment.headwayBinary)
            process.arguments = [
                "--endpoints", pods.endpoints.joined(separator: ","), "--listen", "127.0.0.1:25001",
                "--admin", "127.0.0.1:25901", "--threads", "1", "--drain-timeout", "10s",
            ]
            process.standardError = try FileHandle(forWritingTo: logFile)
            process.standardOutput = FileHandle.nullDevice
            try process.run()
            defer { if process.isRunning { process.terminate() } }
            for _ in 0..<100 where !RawHTTP.canConnect(host: "127.0.0.1", port: 25001) {
                try await Task.sleep(for: .milliseconds(50))
            }
            let results = try await withThrowingTaskGroup(of: CommandResult.self) { group in
                for index in 0..<8 {
                    group.addTask {
                        try await curl(["--write-out", "\n%{http_code}", "http://127.0.0.1:25001/delay/1000?\(index)"])
                    }
                }
                try await Task.sleep(for: .milliseconds(400))
                kill(process.processIdentifier, SIGTERM)
                try await Task.sleep(for: .milliseconds(200))
                #expect(!RawHTTP.canConnect(host: "127.0.0.1", port: 25001), "the listener must close on SIGTERM")
                var results: [CommandResult] = []
                for try await result in group { results.append(result) }
                return results
            }
            for _ in 0..<100 where process.isRunning {
                try await Task.sleep(for: .milliseconds(50))
            }
            try await pods.stop()
            let log = (try? String(contentsOf: logFile, encoding: .utf8)) ?? ""
            #expect(results.count == 8)
            for result in results {
                #expect(result.status == 0 && result.stdout.hasSuffix("\n200"), "\(result.stdout) \(result.stderr)")
            }
            #expect(!process.isRunning)
            #expect(process.terminationStatus == 0, "\(log)")
            #expect(log.contains("draining connections"))
        }

        @Test func validateNamesEveryProblemAndExitsNonZero() async throws {
            let file = temporaryFile("bad.yaml")
            defer { try? FileManager.default.removeItem(at: file) }
            try """
                admin: 127.0.0.1:99999
                threads: 0
                listeners:
                  - listen: 127.0.0.1:15001
                    upstream: missing
                upstreams:
                  web:
                    endpoints: [127.0.0.2:8080, not-an-address]
                    policy: fastest
                    connect_timeout: soon
                    colour: blue
                """.write(to: file, atomically: true, encoding: .utf8)
            let result = try await Command.run([IntegrationEnvironment.headwayBinary, "validate", "--config", file.path])
            #expect(result.status == 2)
            let expected = [
                "admin: bad address", "threads: must be a whole number", "listeners[0].upstream: names upstream 'missing'",
                "upstreams.web.endpoints[1]: bad address", "upstreams.web.policy: unknown policy 'fastest'",
                "upstreams.web.connect_timeout: bad duration 'soon'", "upstreams.web.colour: unknown key",
            ]
            for line in expected {
                #expect(result.stderr.contains(line), "missing '\(line)' in:\n\(result.stderr)")
            }
            // `run` refuses the same file with the same messages.
            let run = try await Command.run([IntegrationEnvironment.headwayBinary, "run", "--config", file.path], timeout: 10)
            #expect(run.status == 2)
            #expect(run.stderr == result.stderr)
        }

        @Test func validateAcceptsTheExampleConfiguration() async throws {
            let example = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
                .deletingLastPathComponent().appendingPathComponent("config/headway.yaml")
            let result = try await Command.run([IntegrationEnvironment.headwayBinary, "validate", "--config", example.path])
            #expect(result.status == 0, "\(result.stderr)")
            #expect(result.stdout.contains("configuration is valid"))
        }

        @Test func demoRunsOnABuiltInDefault() async throws {
            let result = try await Command.run(
                [IntegrationEnvironment.headwayBinary, "demo", "--exit", "--pod-port", "28080", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"],
                timeout: 30
            )
            #expect(result.status == 0, "\(result.stderr)")
            #expect(result.stdout.contains("round-robin spread over 3 pods: pod-1: 4, pod-2: 4, pod-3: 4"), "\(result.stdout)")
        }
    }
}
