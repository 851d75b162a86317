import Foundation
import Headway
import HeadwayTestSupport
import Testing

extension IntegrationTests {
    /// `access_log`: one line per request, on disk within a second, with the pods tried and why Headway
    /// answered itself.
    @Suite struct AccessLog {
        @Test func jsonLinesNameThePodsTriedAndTheLocalAnswers() async throws {
            let pods = try await NginxPods.start(count: 2)
            defer { pods.stop() }
            let file = temporaryFile("access.log")
            defer { try? FileManager.default.removeItem(at: file) }
            // A third endpoint that refuses connections: requests that go to it first are retried on a pod.
            let dead = "127.0.0.9:\(NginxPods.port)"
            let headway = try await InProcessHeadway.start {
                $0[list: "--endpoints"] = pods.endpoints + [dead]
                $0["--access-log"] = file.path
            }
            for index in 1...6 {
                try await curl([
                    "--output", "/dev/null", "--user-agent", "probe/\(index)", "\(headway.listenURL)/a\(index)",
                ])
            }
            try await curl(["--output", "/dev/null", "--data-binary", "0123456789", "\(headway.listenURL)/post"])
            let port = Int(headway.listenURL.split(separator: ":").last!)!
            _ = try await RawHTTP.exchange(
                host: "127.0.0.1",
                port: port,
                request: "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"
            )
            let written = try await waitFor(timeout: .seconds(3)) { fileLines(file).count >= 8 }
            try await headway.stop()
            #expect(
                written.map { $0 < .milliseconds(1200) } == true,
                "lines reached the file after \(String(describing: written))"
            )
            let entries = try jsonLines(file)
            #expect(entries.count == 8, "\(entries)")
            let gets = entries.filter { ($0["target"] as? String)?.hasPrefix("/a") == true }
            #expect(gets.count == 6)
            for entry in gets {
                let tried = entry["endpoints_tried"] as? [String] ?? []
                #expect(entry["status"] as? Int == 200, "\(entry)")
                #expect(pods.endpoints.contains(entry["endpoint"] as? String ?? ""), "\(entry)")
                #expect(tried.last == entry["endpoint"] as? String && entry["attempts"] as? Int == tried.count)
                #expect(tried.dropLast().allSatisfy { $0 == dead }, "only the dead endpoint may fail: \(entry)")
                #expect((entry["user_agent"] as? String)?.hasPrefix("probe/") == true)
                #expect((entry["upstream_first_byte_ms"] as? Double).map { $0 > 0 } == true)
                #expect((entry["duration_ms"] as? Double).map { $0 > 0 && $0 < 1000 } == true)
                #expect((entry["bytes_out"] as? Int).map { $0 > 0 } == true)
            }
            #expect(
                gets.contains { $0["attempts"] as? Int == 2 },
                "round-robin over 3 must send some first to the dead one"
            )
            let post = try #require(entries.first { $0["target"] as? String == "/post" })
            #expect(post["method"] as? String == "POST" && post["bytes_in"] as? Int == 10, "\(post)")
            let malformed = try #require(entries.first { $0["status"] as? Int == 400 })
            #expect(malformed["endpoint"] is NSNull && malformed["attempts"] as? Int == 0, "\(malformed)")
            #expect((malformed["local_reason"] as? String)?.contains("Host") == true, "\(malformed)")
        }

        @Test func combinedLinesParseAsApachesFormat() async throws {
            let pods = try await NginxPods.start(count: 1)
            defer { pods.stop() }
            let file = temporaryFile("combined.log")
            defer { try? FileManager.default.removeItem(at: file) }
            let headway = try await InProcessHeadway.start {
                $0[list: "--endpoints"] = pods.endpoints
                $0["--access-log"] = file.path
                $0["--access-log-format"] = "combined"
            }
            try await curl([
                "--output", "/dev/null", "--referer", "http://from/", "--user-agent", "probe", "\(headway.listenURL)/c",
            ])
            try await headway.stop()
            let line = try String(contentsOf: file, encoding: .utf8).trimmingCharacters(in: .newlines)
            let pattern =
                #"^127\.0\.0\.1 - - \[\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} \+0000\] "GET /c HTTP/1\.1" 200 \d+ "http://from/" "probe" rt=\d+\.\d{6} uft=\d+\.\d{6} endpoint="#
                + NSRegularExpression.escapedPattern(for: pods.endpoints[0])
                + #" attempts=1 tried=\S+ bytes_in=0 grpc_status=- reason="-"$"#
            #expect(line.range(of: pattern, options: .regularExpression) != nil, "\(line)")
        }

        @Test func aFileThatCannotBeOpenedStopsHeadwayNamingIt() async throws {
            let result = try await Command.run(
                [
                    IntegrationEnvironment.headwayBinary, "--endpoints", "127.0.0.2:80", "--listen", "127.0.0.1:0",
                    "--admin", "127.0.0.1:0", "--access-log", "/nonexistent-directory/access.log",
                ],
                timeout: 10
            )
            #expect(result.status == 2)
            #expect(
                result.stderr.contains(
                    "headway: access_log.path: cannot open /nonexistent-directory/access.log: No such file or directory"
                ),
                "\(result.stderr)"
            )
        }
    }
}
