import Foundation
import Headway
import HeadwayTestSupport
import Testing

extension IntegrationTests {
    /// The admin port's live page, in a real browser: headless Chromium runs its script against `/live.json`.
    @Suite struct LivePage {
        /// The page after its script ran, as Chromium serialises it.
        private func renderedPage(_ url: String) async throws -> String {
            let result = try await Command.run(
                [
                    "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=3000",
                    "--dump-dom", url,
                ],
                timeout: 60
            )
            #expect(result.status == 0, "chromium: \(result.stderr)")
            return result.stdout
        }

        /// Each endpoint row's address and the state it names in words.
        private func rows(in page: String) -> [String: String] {
            var rows: [String: String] = [:]
            let pattern =
                #"<tr data-endpoint="([0-9.:\[\]]+)" data-state="([a-z]+)">\s*<td>[^<]*</td>\s*<td><span class="state state-[a-z]+">([a-z]+)</span>"#
            let regex = try! NSRegularExpression(pattern: pattern)
            for match in regex.matches(in: page, range: NSRange(page.startIndex..., in: page)) {
                let address = String(page[Range(match.range(at: 1), in: page)!])
                let word = String(page[Range(match.range(at: 3), in: page)!])
                rows[address] = word
            }
            return rows
        }

        @Test func everyPodAndItsStateAppearAndChange() async throws {
            let pods = try await NginxPods.start()
            defer { pods.stop() }
            let headway = try await InProcessHeadway.start {
                $0[list: "--endpoints"] = pods.endpoints
                $0["--health-path"] = "/healthz"
                $0["--health-interval"] = "200ms"
                $0["--health-timeout"] = "100ms"
            }
            _ = try await curl((1...30).flatMap { ["--output", "/dev/null", "\(headway.listenURL)/l\($0)"] })
            let before = self.rows(in: try await self.renderedPage("\(headway.adminURL)/"))
            try pods.pods[1].setHealthCheckFailing(true)
            let unhealthy = try await waitFor(timeout: .seconds(5)) {
                try await EndpointsDocument.endpoint(pods.endpoints[1], of: headway)?.health == "unhealthy"
            }
            let page = try await self.renderedPage("\(headway.adminURL)/")
            let after = self.rows(in: page)
            let screenshot = temporaryFile("live.png")
            defer { try? FileManager.default.removeItem(at: screenshot) }
            let shot = try await Command.run(
                [
                    "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--window-size=1280,640", "--virtual-time-budget=3000", "--screenshot=\(screenshot.path)",
                    "\(headway.adminURL)/",
                ],
                timeout: 60
            )
            try await headway.stop()
            #expect(
                before == [pods.endpoints[0]: "healthy", pods.endpoints[1]: "healthy", pods.endpoints[2]: "healthy"]
            )
            #expect(unhealthy != nil)
            #expect(after[pods.endpoints[1]] == "unhealthy", "\(after)")
            #expect(after[pods.endpoints[0]] == "healthy" && after[pods.endpoints[2]] == "healthy", "\(after)")
            #expect(page.contains("unhealthy: HTTP 503"), "the event log should show the pod turning unhealthy")
            let png = try Data(contentsOf: screenshot)
            #expect(shot.status == 0 && png.count > 10_000 && png.starts(with: [0x89, 0x50, 0x4E, 0x47]))
        }

        /// 1,000 endpoints: one refresh stays under a megabyte and the page draws a row for each.
        @Test func aThousandEndpointsFitOnePage() async throws {
            let endpoints = (0..<1000).map { "127.0.\(10 + $0 / 250).\(1 + $0 % 250):9" }
            let headway = try await InProcessHeadway.start(
                yaml: """
                    admin: 127.0.0.1:0
                    threads: 1
                    listeners:
                      - {listen: 127.0.0.1:0, upstream: many}
                    upstreams:
                      many:
                        min_idle_connections_per_endpoint: 0
                        endpoints: [\(endpoints.joined(separator: ", "))]
                    """
            )
            try await Task.sleep(for: .milliseconds(1200))
            let live = try await curl(["\(headway.adminURL)/live.json"])
            let rows = self.rows(in: try await self.renderedPage("\(headway.adminURL)/"))
            try await headway.stop()
            #expect(live.stdout.utf8.count < 1_000_000, "\(live.stdout.utf8.count) bytes a refresh")
            #expect(rows.count == 1000 && rows.values.allSatisfy { $0 == "healthy" })
        }
    }
}
