import Foundation
import Headway
import HeadwayTestSupport
import NIOCore
import NIOPosix
import Testing

extension IntegrationTests {
    /// The `headway` binary itself: signals, exit codes, messages.
    @Suite struct CommandLine {

        @Test func sigtermLetsInFlightRequestsFinish() async throws {
            let pods = try await EchoPods.start()
            let listen = FreePort.onAll(["127.0.0.1"])
            let admin = FreePort.onAll(["127.0.0.1"], except: [listen])
            let logFile = temporaryFile("headway.log")
            _ = FileManager.default.createFile(atPath: logFile.path, contents: nil)
            defer { try? FileManager.default.removeItem(at: logFile) }
            let process = Process()
            process.executableURL = URL(fileURLWithPath: IntegrationEnvironment.headwayBinary)
            process.arguments = [
                "--endpoints", pods.endpoints.joined(separator: ","), "--listen", "127.0.0.1:\(listen)",
                "--admin", "127.0.0.1:\(admin)", "--threads", "1", "--drain-timeout", "10s",
            ]
            process.standardError = try FileHandle(forWritingTo: logFile)
            process.standardOutput = FileHandle.nullDevice
            try process.run()
            defer { if process.isRunning { process.terminate() } }
            for _ in 0..<100 where !RawHTTP.canConnect(host: "127.0.0.1", port: listen) {
                try await Task.sleep(for: .milliseconds(50))
            }
            let results = try await withThrowingTaskGroup(of: CommandResult.self) { group in
                for index in 0..<8 {
                    group.addTask {
                        try await curl([
                            "--write-out", "\n%{http_code}", "http://127.0.0.1:\(listen)/delay/1000?\(index)",
                        ])
                    }
                }
                try await Task.sleep(for: .milliseconds(400))
                kill(process.processIdentifier, SIGTERM)
                try await Task.sleep(for: .milliseconds(200))
                #expect(!RawHTTP.canConnect(host: "127.0.0.1", port: listen), "the listener must close on SIGTERM")
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

        /// The sidecar's stop: the app beside it keeps sending for a while after both got SIGTERM. During
        /// `shutdown_delay` every request on a new connection is served and `/ready` says 503; then the drain.
        @Test func shutdownDelayKeepsAcceptingNewConnections() async throws {
            let pods = try await EchoPods.start()
            let listen = FreePort.onAll(["127.0.0.1"])
            let admin = FreePort.onAll(["127.0.0.1"], except: [listen])
            let headway = try HeadwayProcess([
                "--endpoints", pods.endpoints.joined(separator: ","), "--listen", "127.0.0.1:\(listen)",
                "--admin", "127.0.0.1:\(admin)", "--threads", "1", "--shutdown-delay", "1500ms",
            ])
            try await headway.waitUntilListening(on: listen)
            headway.signal(SIGTERM)
            let signalled = ContinuousClock.now
            let ready = try await curl([
                "--write-out", "%{http_code}", "--output", "/dev/null", "http://127.0.0.1:\(admin)/ready",
            ])
            var statuses: [String] = []
            // One connection per request (a new curl each time), for 1.2 s of the 1.5 s delay.
            while ContinuousClock.now - signalled < .milliseconds(1200) {
                let result = try await curl([
                    "--write-out", "%{http_code}", "--output", "/dev/null", "http://127.0.0.1:\(listen)/",
                ])
                statuses.append(result.stdout)
            }
            #expect(try await headway.waitForExit(timeout: .seconds(10)))
            let stoppedAfter = ContinuousClock.now - signalled
            try await pods.stop()
            #expect(ready.stdout == "503", "/ready during shutdown_delay")
            #expect(statuses.count >= 5 && statuses.allSatisfy { $0 == "200" }, "\(statuses)")
            #expect(stoppedAfter >= .milliseconds(1500), "the drain began before shutdown_delay was over")
            #expect(headway.process.terminationStatus == 0, "\(headway.log)")
            #expect(headway.log.contains("still serving for shutdown_delay"), "\(headway.log)")
            #expect(headway.log.contains("shutdown_delay over: draining"), "\(headway.log)")
        }

        @Test func aSecondSigtermSkipsTheShutdownDelay() async throws {
            let listen = FreePort.onAll(["127.0.0.1"])
            let headway = try HeadwayProcess([
                "--endpoints", "127.0.0.2:1", "--listen", "127.0.0.1:\(listen)", "--admin", "127.0.0.1:0",
                "--shutdown-delay", "60s",
            ])
            try await headway.waitUntilListening(on: listen)
            headway.signal(SIGTERM)
            try await Task.sleep(for: .milliseconds(300))
            #expect(headway.process.isRunning, "the first SIGTERM must wait out the delay")
            #expect(RawHTTP.canConnect(host: "127.0.0.1", port: listen), "still accepting during the delay")
            headway.signal(SIGTERM)
            #expect(try await headway.waitForExit(timeout: .seconds(5)), "the second SIGTERM did not skip the delay")
            #expect(headway.process.terminationStatus == 0, "\(headway.log)")
        }

        @Test func gigabyteBodiesStreamThroughWithBoundedMemory() async throws {
            let pods = try await NginxPods.start(count: 1)
            defer { pods.stop() }
            let echo = try await EchoPods.start(count: 1)
            // A sparse file: 1 GiB of zeros that costs no disk.
            let big = pods.pods[0].filesDirectory.appendingPathComponent("big")
            _ = FileManager.default.createFile(atPath: big.path, contents: nil)
            let handle = try FileHandle(forWritingTo: big)
            try handle.truncate(atOffset: 1 << 30)
            try handle.close()
            let files = FreePort.onAll(["127.0.0.1"])
            let echoPort = FreePort.onAll(["127.0.0.1"], except: [files])
            let admin = FreePort.onAll(["127.0.0.1"], except: [files, echoPort])
            let config = temporaryFile("stream.yaml")
            defer { try? FileManager.default.removeItem(at: config) }
            try """
            admin: 127.0.0.1:\(admin)
            threads: 1
            log_level: warning
            listeners:
              - {listen: 127.0.0.1:\(files), upstream: files}
              - {listen: 127.0.0.1:\(echoPort), upstream: echo}
            upstreams:
              files: {endpoints: [\(pods.endpoints[0])]}
              echo: {endpoints: [\(echo.endpoints[0])]}
            """.write(to: config, atomically: true, encoding: .utf8)
            let process = Process()
            process.executableURL = URL(fileURLWithPath: IntegrationEnvironment.headwayBinary)
            process.arguments = ["--config", config.path]
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            defer { if process.isRunning { process.terminate() } }
            for _ in 0..<100 where !RawHTTP.canConnect(host: "127.0.0.1", port: echoPort) {
                try await Task.sleep(for: .milliseconds(50))
            }
            let download = try await curl(
                ["--output", "/dev/null", "--write-out", "%{size_download}", "http://127.0.0.1:\(files)/files/big"],
                timeout: 120
            )
            let upload = try await curl(
                [
                    "--upload-file", big.path, "--output", "/dev/null", "--write-out",
                    "%{size_upload} %{size_download}", "http://127.0.0.1:\(echoPort)/echo",
                ],
                timeout: 120
            )
            // A client reading at 64 MB/s while the pod could send at 1 GB/s: without backpressure Headway
            // would hold most of the 256 MiB in memory.
            let slowReader = try await curl(
                [
                    "--limit-rate", "64M", "--range", "0-268435455", "--output", "/dev/null", "--write-out",
                    "%{size_download}",
                    "http://127.0.0.1:\(files)/files/big",
                ],
                timeout: 60
            )
            let status =
                (try? String(contentsOfFile: "/proc/\(process.processIdentifier)/status", encoding: .utf8)) ?? ""
            let peakKilobytes =
                status.split(separator: "\n").first { $0.hasPrefix("VmHWM:") }
                .flatMap { Int($0.split(separator: " ", omittingEmptySubsequences: true)[1]) } ?? 0
            process.terminate()
            try await echo.stop()
            #expect(download.stdout == "\(1 << 30)", "\(download.stderr)")
            #expect(upload.stdout == "\(1 << 30) \(1 << 30)", "\(upload.stderr)")
            #expect(slowReader.stdout == "\(1 << 28)", "\(slowReader.stderr)")
            #expect(peakKilobytes > 0 && peakKilobytes < 100 * 1024, "peak RSS \(peakKilobytes) kB")
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
            let result = try await Command.run([
                IntegrationEnvironment.headwayBinary, "validate", "--config", file.path,
            ])
            #expect(result.status == 2)
            let expected = [
                "admin: bad address", "threads: must be a whole number",
                "listeners[0].upstream: names upstream 'missing'",
                "upstreams.web.endpoints[1]: bad address", "upstreams.web.policy: unknown policy 'fastest'",
                "upstreams.web.connect_timeout: bad duration 'soon'", "upstreams.web.colour: unknown key",
            ]
            for line in expected {
                #expect(result.stderr.contains(line), "missing '\(line)' in:\n\(result.stderr)")
            }
            // `run` refuses the same file with the same messages.
            let run = try await Command.run(
                [IntegrationEnvironment.headwayBinary, "run", "--config", file.path],
                timeout: 10
            )
            #expect(run.status == 2)
            #expect(run.stderr == result.stderr)
        }

        @Test func validateAcceptsTheExampleConfiguration() async throws {
            let example = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
                .deletingLastPathComponent().appendingPathComponent("config/headway.yaml")
            let result = try await Command.run([
                IntegrationEnvironment.headwayBinary, "validate", "--config", example.path,
            ])
            #expect(result.status == 0, "\(result.stderr)")
            #expect(result.stdout.contains("configuration is valid"))
        }

        @Test(arguments: ["--listen", "--admin"])
        func anAddressInUseIsNamedInOneLineAndExitsTwo(flag: String) async throws {
            let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
            let holder = try await ServerBootstrap(group: group).bind(host: "127.0.0.1", port: 0).get()
            let port = holder.localAddress!.port!
            var arguments = [IntegrationEnvironment.headwayBinary, "--endpoints", "127.0.0.2:80"]
            arguments += ["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"]
            arguments[arguments.firstIndex(of: flag)! + 1] = "127.0.0.1:\(port)"
            let result = try await Command.run(arguments, timeout: 30)
            try await holder.close()
            try await group.shutdownGracefully()
            #expect(result.status == 2)
            let owner = flag == "--admin" ? "the admin endpoint" : "the listener for upstream 'default'"
            let line = "headway: cannot listen on 127.0.0.1:\(port) for \(owner): Address already in use"
            #expect(result.stderr.split(separator: "\n").contains { $0 == line }, "\(result.stderr)")
            #expect(!result.stderr.contains("bind(descriptor"), "NIO's own wording should not reach the operator")
        }

        @Test func jsonLogsAreOneObjectPerLine() async throws {
            let logFile = temporaryFile("headway-json.log")
            _ = FileManager.default.createFile(atPath: logFile.path, contents: nil)
            defer { try? FileManager.default.removeItem(at: logFile) }
            let listen = FreePort.onAll(["127.0.0.1"])
            let process = Process()
            process.executableURL = URL(fileURLWithPath: IntegrationEnvironment.headwayBinary)
            process.arguments = [
                "--endpoints", "127.0.0.2:1", "--listen", "127.0.0.1:\(listen)", "--admin", "127.0.0.1:0",
                "--log-format", "json",
            ]
            process.standardError = try FileHandle(forWritingTo: logFile)
            process.standardOutput = FileHandle.nullDevice
            try process.run()
            defer { if process.isRunning { process.terminate() } }
            for _ in 0..<100 where !RawHTTP.canConnect(host: "127.0.0.1", port: listen) {
                try await Task.sleep(for: .milliseconds(50))
            }
            kill(process.processIdentifier, SIGTERM)
            process.waitUntilExit()
            let lines = try String(contentsOf: logFile, encoding: .utf8).split(separator: "\n")
            let objects = try lines.map { line in
                try #require(
                    try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                    "not a JSON object: \(line)"
                )
            }
            #expect(objects.count >= 3, "\(lines)")
            for object in objects {
                #expect(
                    object["level"] is String && object["time"] is String && object["message"] is String,
                    "\(object)"
                )
            }
            let listening = objects.first { $0["message"] as? String == "listening" }
            #expect(listening?["listen.address"] as? String == "127.0.0.1:\(listen)", "metadata keeps its own key")
            #expect((objects.first?["time"] as? String)?.hasSuffix("Z") == true)
        }

        @Test func versionIsPrinted() async throws {
            let result = try await Command.run([IntegrationEnvironment.headwayBinary, "--version"])
            #expect(result.status == 0)
            #expect(result.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == HeadwayVersion.string)
        }

        /// A newcomer's first command: the top-level help shows the subcommands and `run`'s flags.
        @Test func topLevelHelpListsTheRunOptions() async throws {
            let help = try await Command.run([IntegrationEnvironment.headwayBinary, "--help"])
            #expect(help.status == 0)
            #expect(help.stdout.contains("SUBCOMMANDS:"), "\(help.stdout)")
            for flag in ["--endpoints", "--service", "--listen", "--policy", "--config"] {
                #expect(help.stdout.contains(flag + " "), "headway --help lacks \(flag)")
            }
            #expect(help.stdout.contains("--generate-completion-script"), "completions are not mentioned")
        }

        @Test func completionScriptsOfferTheRunFlags() async throws {
            for shell in ["bash", "zsh", "fish"] {
                let script = try await Command.run([
                    IntegrationEnvironment.headwayBinary, "--generate-completion-script", shell,
                ])
                #expect(script.status == 0, "\(shell): \(script.stderr)")
                #expect(script.stdout.contains("endpoints"), "\(shell) completion lacks --endpoints")
                #expect(script.stdout.contains("validate"), "\(shell) completion lacks the subcommands")
            }
        }

        /// The executable declares its options by hand (swift-argument-parser needs them spelled out); this
        /// holds it to the settings tables: every flag they declare is offered, and a bad value is checked by
        /// the table's setting (with the file's message), not by the argument parser.
        @Test func everyFlagOfTheSettingsTablesIsAnOption() async throws {
            let help = try await Command.run([IntegrationEnvironment.headwayBinary, "run", "--help"])
            #expect(help.status == 0)
            for flag in HeadwayConfiguration.flags {
                #expect(
                    help.stdout.contains(flag + " ") || help.stdout.contains(flag + "\n"),
                    "run --help lacks \(flag)"
                )
            }
            let bad = try await Command.run([
                IntegrationEnvironment.headwayBinary, "validate", "--endpoints", "127.0.0.2:80", "--max-retries",
                "many",
            ])
            #expect(bad.status == 2)
            #expect(
                bad.stderr.contains("--max-retries: must be a whole number of 0 or more, got 'many'"),
                "\(bad.stderr)"
            )
        }

        @Test func demoRunsOnABuiltInDefault() async throws {
            let result = try await Command.run(
                [
                    IntegrationEnvironment.headwayBinary, "demo", "--exit", "--pod-port", "\(FreePort.onAll(podHosts))",
                    "--listen",
                    "127.0.0.1:0", "--admin", "127.0.0.1:0",
                ],
                timeout: 30
            )
            #expect(result.status == 0, "\(result.stderr)")
            let lines = result.stdout.split(separator: "\n")
            let first = lines.first { $0.hasPrefix("pods 1-3 in DNS:") }
            let joined = lines.first { $0.hasPrefix("pod-4 joined:") }
            let left = lines.first { $0.hasPrefix("pod-1 left:") }
            #expect(first?.hasSuffix("[pod-1: 2, pod-2: 2, pod-3: 2]") == true, "\(result.stdout)")
            #expect(joined?.contains("pod-4: ") == true, "the pod added to DNS got no request: \(result.stdout)")
            let afterRemoval = left?.dropFirst("pod-1 left:".count)
            #expect(afterRemoval.map { !$0.contains("pod-1") && $0.contains("pod-4: ") } == true, "\(result.stdout)")
        }
    }
}
