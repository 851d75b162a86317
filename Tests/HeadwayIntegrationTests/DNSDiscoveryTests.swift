import Foundation
import Headway
import HeadwayTestSupport
import Testing

extension IntegrationTests {
    /// Headway pointed at a name served by a real DNS server (dnsmasq on 127.0.0.1, on a port the kernel found free), with the nginx
    /// pods behind it coming and going while load runs.
    @Suite struct DNSDiscovery {
        /// dnsmasq's UDP and TCP port on 127.0.0.1.
        static let dnsPort = FreePort.onAll(["127.0.0.1"])

        static let name = "web.test"

        private func records(_ pods: [NginxPod], name: String = Self.name) -> [(name: String, ip: String)] {
            pods.map { (name, $0.host) }
        }

        private func startHeadway(
            service: String = "\(Self.name):\(NginxPods.port)",
            refresh: String = "500ms",
            _ configure: @escaping (inout ConfigurationOverrides) -> Void = { _ in }
        ) async throws -> InProcessHeadway {
            try await InProcessHeadway.start {
                $0["--service"] = service
                $0[list: "--dns-server"] = ["127.0.0.1:\(Self.dnsPort)"]
                $0["--refresh"] = refresh
                configure(&$0)
            }
        }

        @Test func podsJoinAndLeaveWithTheAnswerWhileLoadRuns() async throws {
            let pods = try await NginxPods.start(count: 4)
            defer { pods.stop() }
            let dns = try await DNSMasq.start(port: Self.dnsPort, records: self.records(Array(pods.pods.prefix(3))))
            let headway = try await self.startHeadway()
            let load = Task {
                try await Command.run(["wrk", "-t1", "-c4", "-d7s", "\(headway.listenURL)/"], timeout: 30)
            }
            try await Task.sleep(for: .seconds(1))
            let newPod = pods.pods[3]
            #expect(try newPod.accessLog().isEmpty)

            // A fourth record: the pod gets traffic within one refresh period plus one second.
            try dns.setRecords(self.records(pods.pods))
            let joined = try await waitFor(timeout: .milliseconds(1500)) { try !newPod.accessLog().isEmpty }
            #expect(joined != nil, "the added pod got no request within refresh + 1 s")
            if let joined {
                print("DNS change to the first request on the new pod: \(joined)")
            }
            try await Task.sleep(for: .seconds(1))

            // One record removed: no new request reaches that pod after refresh + 1 s, and none fails.
            let removedPod = pods.pods[0]
            try dns.setRecords(self.records(Array(pods.pods.dropFirst())))
            let removed = try await waitFor(timeout: .milliseconds(1500)) {
                let endpoint = try await EndpointsDocument.endpoint(removedPod.address, of: headway)
                return endpoint == nil || endpoint?.state == "draining"
            }
            #expect(removed != nil, "the removed record did not take the pod out within refresh + 1 s")
            let requestsAtRemoval = try removedPod.accessLog().count
            try await Task.sleep(for: .seconds(1))
            #expect(try removedPod.accessLog().count == requestsAtRemoval, "the removed pod still gets requests")

            let result = try await load.value
            let document = try await EndpointsDocument.fetch(from: headway)
            try await headway.stop()
            #expect(result.status == 0)
            #expect(!result.stdout.contains("Non-2xx"), "\(result.stdout)")
            #expect(!result.stdout.contains("Socket errors"), "\(result.stdout)")
            for pod in pods.pods.dropFirst() {
                #expect(try pod.accessLog().count > 100, "\(pod.name) got too little traffic")
            }
            #expect(Set(document.upstreams[0].endpoints.map(\.address)) == Set(pods.endpoints.dropFirst()))
        }

        @Test func dnsOutageKeepsTheLastKnownPodsThenAChangeIsPickedUp() async throws {
            let pods = try await NginxPods.start()
            defer { pods.stop() }
            let dns = try await DNSMasq.start(port: Self.dnsPort, records: self.records(pods.pods))
            let headway = try await self.startHeadway()
            dns.stop()
            let noticed = try await waitFor(timeout: .seconds(3)) {
                try await EndpointsDocument.fetch(from: headway).upstreams[0].discovery?.consecutive_failures ?? 0 > 0
            }
            #expect(noticed != nil, "the outage was never seen")
            let urls = (1...30).flatMap { ["--output", "/dev/null", "\(headway.listenURL)/outage\($0)"] }
            let during = try await curl(["--dump-header", "-"] + urls)
            let failing = try await EndpointsDocument.fetch(from: headway)

            try dns.setRecords(self.records([pods.pods[1]]))
            try await dns.restart()
            let pickedUp = try await waitFor(timeout: .seconds(4)) {
                try await EndpointsDocument.fetch(from: headway).upstreams[0].endpoints.filter { $0.state == "active" }
                    .map(\.address) == [pods.pods[1].address]
            }
            #expect(pickedUp != nil, "the change after the outage was not picked up")
            let after = try await curl(["--dump-header", "-"] + urls)
            try await headway.stop()
            #expect(podCounts(inHeaders: during.stdout) == ["pod-1": 10, "pod-2": 10, "pod-3": 10])
            #expect(failing.upstreams[0].discovery?.consecutive_failures ?? 0 > 0)
            #expect(failing.upstreams[0].discovery?.last_error?.contains("no answer") == true)
            #expect(podCounts(inHeaders: after.stdout) == ["pod-2": 30])
        }

        @Test func oneHundredFiftyPodsAreAllDiscovered() async throws {
            let hosts = (10..<160).map { "127.0.0.\($0)" }
            let nginx = try await NginxPod.start(
                name: "many",
                host: hosts[0],
                port: NginxPods.port,
                moreHosts: Array(hosts.dropFirst())
            )
            defer { nginx.stop() }
            // An answer of 150 records is over 2 KB: it needs EDNS0 or TCP.
            let dns = try await DNSMasq.start(port: Self.dnsPort, records: hosts.map { (Self.name, $0) })
            let headway = try await self.startHeadway()
            let urls = (1...300).flatMap { ["--output", "/dev/null", "\(headway.listenURL)/m\($0)"] }
            let result = try await curl(["--dump-header", "-"] + urls)
            let document = try await EndpointsDocument.fetch(from: headway)
            try await headway.stop()
            _ = dns
            #expect(document.upstreams[0].endpoints.count == 150)
            #expect(document.upstreams[0].discovery?.addresses?.count == 150)
            let counts = podCounts(inHeaders: result.stdout)
            #expect(counts.count == 150, "\(counts.count) distinct pods answered")
            #expect(counts.values.allSatisfy { $0 == 2 })
        }

        @Test func shortNameResolvesThroughTheSearchList() async throws {
            let pods = try await NginxPods.start()
            defer { pods.stop() }
            let dns = try await DNSMasq.start(
                port: Self.dnsPort,
                records: self.records(pods.pods, name: "web.default.svc.cluster.local")
            )
            let resolvConf = temporaryFile("resolv.conf")
            defer { try? FileManager.default.removeItem(at: resolvConf) }
            try "search default.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n"
                .write(to: resolvConf, atomically: true, encoding: .utf8)
            for service in ["web", "web.default", "web.default.svc.cluster.local."] {
                let headway = try await self.startHeadway(service: "\(service):\(NginxPods.port)") {
                    $0["--resolv-conf"] = resolvConf.path
                }
                let document = try await EndpointsDocument.fetch(from: headway)
                let result = try await curl(["--include", "\(headway.listenURL)/"])
                try await headway.stop()
                #expect(document.upstreams[0].endpoints.count == 3, "\(service) did not resolve")
                #expect(result.stdout.hasPrefix("HTTP/1.1 200"), "\(service): \(result.stdout)")
            }
            _ = dns
        }

        @Test func respectingTheTTLDrivesTheRefresh() async throws {
            let pods = try await NginxPods.start(count: 1)
            defer { pods.stop() }
            let dns = try await DNSMasq.start(port: Self.dnsPort, ttl: 1, records: self.records(pods.pods))
            let headway = try await self.startHeadway(refresh: "30s") { $0["--respect-ttl"] = "true" }
            try await Task.sleep(for: .milliseconds(4500))
            try await headway.stop()
            // TTL 1 s over 4.5 s: about five queries (the first at start-up), where refresh alone would make one.
            let queries = dns.queryCount(for: Self.name)
            #expect((4...7).contains(queries), "\(queries) queries")
        }

        @Test func aNameWithoutPodsEmptiesTheSetOnlyWhenConfirmed() async throws {
            let pods = try await NginxPods.start()
            defer { pods.stop() }
            let dns = try await DNSMasq.start(port: Self.dnsPort, records: self.records(pods.pods))
            let headway = try await self.startHeadway(refresh: "300ms")
            try dns.setRecords([])
            let emptied = try await waitFor(timeout: .seconds(5)) {
                // Synchronous peek through the admin document is async; read the cluster directly.
                headway.application.clusters[0].endpoints.allSatisfy { $0.state == .draining }
            }
            let result = try await curl(["--include", "\(headway.listenURL)/"])
            let document = try await EndpointsDocument.fetch(from: headway)
            try await headway.stop()
            let queries = dns.queryCount(for: Self.name)
            #expect(emptied != nil)
            #expect(queries >= 3, "an empty answer must be confirmed by a second query (\(queries) queries)")
            #expect(result.stdout.hasPrefix("HTTP/1.1 503"), "\(result.stdout)")
            #expect(
                result.stdout.contains("DNS name web.test has no pods (NXDOMAIN"),
                "the 503 must say why: \(result.stdout)"
            )
            #expect(document.upstreams[0].discovery?.last_error != nil)
        }

        @Test func srvRecordsGiveEachPodItsPortAndWeight() async throws {
            let pods = try await NginxPods.start()
            defer { pods.stop() }
            // Two pods at priority 0 with weights 10 and 20; the third at priority 1 is a backup and unused.
            let dns = try await DNSMasq.start(
                port: Self.dnsPort,
                records: pods.pods.map { ("\($0.name).test", $0.host) },
                srvHosts: [
                    "_http._tcp.web.test,pod-1.test,\(NginxPods.port),0,10",
                    "_http._tcp.web.test,pod-2.test,\(NginxPods.port),0,20",
                    "_http._tcp.web.test,pod-3.test,\(NginxPods.port),1,10",
                ]
            )
            let headway = try await InProcessHeadway.start(
                yaml: """
                    listeners:
                      - {listen: 127.0.0.1:0, upstream: web}
                    upstreams:
                      web:
                        srv: _http._tcp.web.test
                        dns: {servers: [127.0.0.1:\(Self.dnsPort)], refresh: 500ms}
                    """
            )
            let document = try await EndpointsDocument.fetch(from: headway)
            let urls = (1...30).flatMap { ["--output", "/dev/null", "\(headway.listenURL)/srv\($0)"] }
            let result = try await curl(["--dump-header", "-"] + urls)
            try await headway.stop()
            _ = dns
            let endpoints = document.upstreams[0].endpoints
            #expect(Set(endpoints.map(\.address)) == Set(pods.endpoints.prefix(2)), "\(endpoints)")
            #expect(endpoints.first { $0.address == pods.endpoints[1] }?.weight == 20)
            // Weighted round-robin: the weight-20 pod takes two requests for each one of the weight-10 pod.
            let counts = podCounts(inHeaders: result.stdout)
            #expect(
                abs(counts["pod-1", default: 0] - 10) <= 1 && abs(counts["pod-2", default: 0] - 20) <= 1,
                "\(counts)"
            )
        }
    }
}
