import Foundation
import NIOCore
import Testing

@testable import Headway

struct HeadwayConfigurationTests {
    private func problems(yaml: String?, _ configure: (inout ConfigurationOverrides) -> Void = { _ in }) -> [String] {
        var overrides = ConfigurationOverrides()
        configure(&overrides)
        do {
            _ = try HeadwayConfiguration.load(yaml: yaml, overrides: overrides)
            return []
        } catch {
            return error.problems.map(\.description)
        }
    }

    @Test func fullFileIsRead() throws {
        let configuration = try HeadwayConfiguration.load(
            yaml: """
                admin: 127.0.0.1:9000
                threads: 3
                drain_timeout: 2s
                log_level: debug
                listeners:
                  - listen: 127.0.0.1:15001
                    upstream: web
                upstreams:
                  web:
                    endpoints: [127.0.0.2:8080, "[::1]:8081"]
                    policy: round-robin
                    connect_timeout: 250ms
                    request_timeout: 1.5s
                    idle_timeout: 1m
                    max_connections_per_endpoint: 64
                """,
            overrides: .init()
        )
        #expect(configuration.admin == HostAndPort(host: "127.0.0.1", port: 9000))
        #expect(configuration.threads == 3)
        #expect(configuration.drainTimeout == .seconds(2))
        #expect(configuration.logLevel == "debug")
        let web = try #require(configuration.upstream(named: "web"))
        #expect(web.endpoints == [HostAndPort(host: "127.0.0.2", port: 8080), HostAndPort(host: "::1", port: 8081)])
        #expect(web.connectTimeout == .milliseconds(250))
        #expect(web.requestTimeout == .milliseconds(1500))
        #expect(web.idleTimeout == .seconds(60))
        #expect(web.maxConnectionsPerEndpoint == 64)
    }

    @Test func flagsAloneMakeAOneUpstreamConfiguration() throws {
        var overrides = ConfigurationOverrides()
        overrides[list: "--endpoints"] = ["127.0.0.2:8080", "127.0.0.3:8080"]
        overrides["--request-timeout"] = "5s"
        let configuration = try HeadwayConfiguration.load(yaml: nil, overrides: overrides)
        #expect(configuration.listeners == [.init(listen: HeadwayConfiguration.defaultListen, upstream: "default")])
        #expect(configuration.upstreams[0].endpoints.count == 2)
        #expect(configuration.upstreams[0].requestTimeout == .seconds(5))
        #expect(configuration.upstreams[0].connectTimeout == .seconds(1))
    }

    @Test func theUpstreamProtocolIsHTTP1UnlessSaid() throws {
        let plain = try HeadwayConfiguration.load(
            yaml: "upstreams: {web: {endpoints: [127.0.0.2:8080]}}",
            overrides: .init()
        )
        #expect(plain.upstreams[0].httpProtocol == .http1)
        let grpc = try HeadwayConfiguration.load(
            yaml: """
                upstreams:
                  web:
                    endpoints: [127.0.0.2:50051]
                    protocol: h2c
                    health_check: {type: grpc, service: my.pkg.Svc}
                """,
            overrides: .init()
        )
        #expect(grpc.upstreams[0].httpProtocol == .h2c)
        #expect(grpc.upstreams[0].healthCheck?.kind == .grpc)
        #expect(grpc.upstreams[0].healthCheck?.service == "my.pkg.Svc")
        var overrides = ConfigurationOverrides()
        overrides[list: "--endpoints"] = ["127.0.0.2:50051"]
        overrides["--upstream-protocol"] = "h2c"
        #expect(try HeadwayConfiguration.load(yaml: nil, overrides: overrides).upstreams[0].httpProtocol == .h2c)
        let refused = self.problems(yaml: nil) {
            $0[list: "--endpoints"] = ["127.0.0.2:50051"]
            $0["--upstream-protocol"] = "http2"
        }
        #expect(refused == ["--upstream-protocol: must be one of http1, h2c"])
    }

    @Test func flagsWinOverTheFile() throws {
        var overrides = ConfigurationOverrides()
        overrides["--connect-timeout"] = "3s"
        overrides["--listen"] = "127.0.0.1:16000"
        let configuration = try HeadwayConfiguration.load(
            yaml: "upstreams:\n  web:\n    endpoints: [127.0.0.2:8080]\n    connect_timeout: 1s\n",
            overrides: overrides
        )
        #expect(configuration.upstreams[0].connectTimeout == .seconds(3))
        #expect(configuration.listeners[0].listen.port == 16000)
        #expect(configuration.listeners[0].upstream == "web")
    }

    @Test func shutdownDelayIsOffByDefaultAndTakesZeroButNotLess() throws {
        let defaults = try HeadwayConfiguration.load(
            yaml: "upstreams:\n  web: {endpoints: [127.0.0.2:80]}\n",
            overrides: .init()
        )
        #expect(defaults.shutdownDelay == .zero)
        let set = try HeadwayConfiguration.load(
            yaml: "shutdown_delay: 5s\nupstreams:\n  web: {endpoints: [127.0.0.2:80]}\n",
            overrides: .init()
        )
        #expect(set.shutdownDelay == .seconds(5))
        #expect(self.problems(yaml: "shutdown_delay: 0s\nupstreams:\n  web: {endpoints: [127.0.0.2:80]}\n").isEmpty)
        let negative = self.problems(yaml: "upstreams:\n  web: {endpoints: [127.0.0.2:80]}\n") {
            $0["--shutdown-delay"] = "-1s"
        }
        #expect(
            negative == [
                "--shutdown-delay: bad duration '-1s': write 0s or a positive number with a unit, such as 250ms, 2s or 1m"
            ]
        )
    }

    @Test func everyProblemIsReportedWithItsKeyPath() {
        let found = self.problems(
            yaml: """
                threads: many
                listeners:
                  - listen: 127.0.0.1:15001
                    upstream: nowhere
                upstreams:
                  web:
                    endpoints: [127.0.0.2]
                    idle_timeout: 10 minutes
                    policy: fastest
                    retries: 3
                  empty:
                    endpoints: []
                extra: 1
                """
        )
        #expect(found.contains { $0.hasPrefix("threads: must be a whole number") })
        #expect(found.contains { $0.hasPrefix("listeners[0].upstream: names upstream 'nowhere'") })
        #expect(found.contains { $0.hasPrefix("upstreams.web.endpoints[0]: bad address") })
        #expect(found.contains { $0.hasPrefix("upstreams.web.idle_timeout: bad duration '10 minutes'") })
        #expect(
            found.contains {
                $0.hasPrefix(
                    "upstreams.web.policy: unknown policy 'fastest' (known: round-robin, random, least-connections, p2c, ewma, hash)"
                )
            }
        )
        #expect(found.contains { $0.hasPrefix("upstreams.web.retries: unknown key") })
        #expect(found.contains { $0.hasPrefix("upstreams.empty.endpoints: is empty") })
        #expect(found.contains { $0.hasPrefix("extra: unknown key") })
        #expect(found.count == 8, "\(found)")
    }

    @Test func singleUpstreamFlagsNeedASingleUpstream() {
        let found = self.problems(
            yaml: """
                listeners:
                  - {listen: 127.0.0.1:15001, upstream: a}
                  - {listen: 127.0.0.1:15002, upstream: b}
                upstreams:
                  a: {endpoints: [127.0.0.2:8080]}
                  b: {endpoints: [127.0.0.3:8080]}
                """
        ) { $0[list: "--endpoints"] = ["127.0.0.4:8080"] }
        #expect(
            found == [
                "--endpoints: applies to a configuration with one listener and one upstream; this file has 2 listeners and 2 upstreams"
            ]
        )
    }

    @Test func noEndpointsAtAllIsExplained() {
        #expect(
            self.problems(yaml: nil) == [
                "--endpoints: no endpoints: give --endpoints HOST:PORT,..., --service NAME:PORT or --config FILE"
            ]
        )
    }

    @Test func badFlagsAreNamedLikeKeys() {
        let found = self.problems(yaml: nil) {
            $0[list: "--endpoints"] = ["127.0.0.2:8080"]
            $0["--connect-timeout"] = "fast"
            $0["--listen"] = "127.0.0.1"
            $0["--policy"] = "lucky"
            $0["--threads"] = "0"
        }
        #expect(found.contains { $0.hasPrefix("--connect-timeout: bad duration 'fast'") })
        #expect(found.contains { $0.hasPrefix("--listen: bad address: '127.0.0.1' needs a port") })
        #expect(found.contains { $0.hasPrefix("--policy: unknown policy 'lucky'") })
        #expect(found.contains { $0 == "--threads: must be a whole number of at least 1, got '0'" })
    }

    /// A flag is read through its key's setting: the same bad value gets the same message under either name.
    @Test(arguments: [
        ("connect_timeout", "--connect-timeout", "soon"),
        ("max_connections_per_endpoint", "--max-connections-per-endpoint", "0"),
        ("max_retries", "--max-retries", "-1"),
        ("policy", "--policy", "lucky"),
        ("protocol", "--upstream-protocol", "grpc"),
        ("slow_start", "--slow-start", "0s"),
    ])
    func aFlagAndItsKeyRefuseTheSameValueAlike(key: String, flag: String, value: String) {
        let fromFile = self.problems(yaml: "upstreams: {web: {endpoints: [127.0.0.2:80], \(key): '\(value)'}}")
        let fromFlag = self.problems(yaml: nil) {
            $0[list: "--endpoints"] = ["127.0.0.2:80"]
            $0[flag] = value
        }
        #expect(fromFile.count == 1 && fromFlag.count == 1, "\(fromFile) \(fromFlag)")
        #expect(fromFile.first?.replacingOccurrences(of: "upstreams.web.\(key):", with: "\(flag):") == fromFlag.first)
    }

    /// The example file says it shows every key at its default but three; hold it to that.
    @Test func theExampleFileIsTheDefaultsButForWhatItSays() throws {
        let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("config/headway.yaml").path
        var example = try HeadwayConfiguration.load(
            yaml: try String(contentsOfFile: path, encoding: .utf8),
            overrides: .init()
        )
        let defaults = try HeadwayConfiguration.load(
            yaml: "upstreams: {web: {endpoints: [127.0.0.2:8080, 127.0.0.3:8080, 127.0.0.4:8080]}}",
            overrides: .init()
        )
        #expect(example.threads == 2)
        #expect(example.upstreams[0].healthCheck == HealthCheckSettings())
        example.threads = defaults.threads
        example.upstreams[0].healthCheck = nil
        #expect(example == defaults)
    }

    @Test func everyFlagBelongsToOneSetting() {
        let flags = HeadwayConfiguration.flags
        #expect(Set(flags).count == flags.count, "a flag is declared twice: \(flags)")
        for flag in flags where !["--listen", "--endpoints", "--service"].contains(flag) {
            #expect(!HeadwayConfiguration.help(forFlag: flag).isEmpty)
        }
    }

    @Test func invalidYAMLIsOneProblem() {
        #expect(self.problems(yaml: "upstreams: [unclosed").first?.hasPrefix("(file): not valid YAML") == true)
    }

    @Test(arguments: [
        ("250ms", TimeAmount.milliseconds(250)), ("2s", .seconds(2)), ("1.5s", .milliseconds(1500)),
        ("1m", .seconds(60)), ("1h", .seconds(3600)),
    ])
    func durationsParse(text: String, expected: TimeAmount) {
        #expect(DurationText.parse(text) == expected)
        #expect(DurationText.parse(DurationText.format(expected)) == expected)
    }

    @Test(arguments: ["", "5", "s", "-1s", "1 s", "1d", "1.2.3s"])
    func badDurationsAreRejected(text: String) {
        #expect(DurationText.parse(text) == nil)
    }

    @Test(arguments: ["127.0.0.2:8080", "[::1]:80", "localhost:15001"])
    func addressesParse(text: String) throws {
        let address = try HostAndPort.parse(text).get()
        #expect(address.description == text)
    }

    @Test(arguments: ["127.0.0.2", "127.0.0.2:0", "127.0.0.2:70000", "::1:80", "example.com:80", "[::1"])
    func badAddressesAreRejected(text: String) {
        #expect((try? HostAndPort.parse(text).get()) == nil)
    }

    @Test func serviceAndDNSBlockAreRead() throws {
        let configuration = try HeadwayConfiguration.load(
            yaml: """
                upstreams:
                  web:
                    service: nginx-headless-service.default.svc.cluster.local.:8080
                    dns: {servers: [127.0.0.1:5353, 10.0.0.10], refresh: 2s, respect_ttl: true, min_refresh: 500ms, family: dual}
                """,
            overrides: .init()
        )
        let dns = try #require(configuration.upstreams[0].dns)
        #expect(dns.name == "nginx-headless-service.default.svc.cluster.local.")
        #expect(dns.port == 8080)
        #expect(dns.servers == [HostAndPort(host: "127.0.0.1", port: 5353), HostAndPort(host: "10.0.0.10", port: 53)])
        #expect(dns.refresh == .seconds(2))
        #expect(dns.respectTTL)
        #expect(dns.minRefresh == .milliseconds(500))
        #expect(dns.family == .dual)
    }

    @Test func serviceFlagsMakeADNSUpstream() throws {
        var overrides = ConfigurationOverrides()
        overrides["--service"] = "web"
        overrides[list: "--dns-server"] = ["127.0.0.1:5353"]
        overrides["--refresh"] = "1s"
        let configuration = try HeadwayConfiguration.load(yaml: nil, overrides: overrides)
        #expect(configuration.upstreams[0].dns?.name == "web")
        #expect(configuration.upstreams[0].dns?.port == 80)
        #expect(configuration.upstreams[0].dns?.refresh == .seconds(1))
    }

    @Test func dnsProblemsAreNamed() {
        let found = self.problems(
            yaml: """
                upstreams:
                  both:
                    endpoints: [127.0.0.2:8080]
                    service: web:80
                  stray:
                    endpoints: [127.0.0.2:8080]
                    dns: {refresh: 1s}
                  bad:
                    service: "not a name:80"
                  worse:
                    service: web:80
                    dns: {servers: ["[::1]:53"], resolv_conf: /nonexistent/resolv.conf, family: ipv5, colour: blue}
                listeners:
                  - {listen: 127.0.0.1:15001, upstream: both}
                """
        )
        #expect(found.contains("upstreams.both: has both endpoints and service; give one"))
        #expect(found.contains("upstreams.stray.dns: applies only to an upstream with service"))
        #expect(found.contains { $0.hasPrefix("upstreams.bad.service: bad service 'not a name:80'") })
        #expect(found.contains { $0.hasPrefix("upstreams.worse.dns.servers[0]: DNS servers must be IPv4") })
        #expect(found.contains("upstreams.worse.dns.resolv_conf: cannot read '/nonexistent/resolv.conf'"))
        #expect(found.contains { $0.hasPrefix("upstreams.worse.dns.family: must be one of") })
        #expect(found.contains { $0.hasPrefix("upstreams.worse.dns.colour: unknown key") })
    }

    @Test func resolvConfIsParsed() {
        let conf = ResolvConf(
            parsing:
                "# comment\nnameserver 10.96.0.10\nsearch default.svc.cluster.local svc.cluster.local\noptions ndots:5 timeout:2 attempts:3\n"
        )
        #expect(conf.nameservers == [HostAndPort(host: "10.96.0.10", port: 53)])
        #expect(conf.search == ["default.svc.cluster.local", "svc.cluster.local"])
        #expect(conf.ndots == 5)
        #expect(conf.timeoutSeconds == 2)
        #expect(conf.attempts == 3)
    }
}

struct ResilienceConfigurationTests {
    @Test func everyResilienceKeyIsRead() throws {
        let configuration = try HeadwayConfiguration.load(
            yaml: """
                upstreams:
                  web:
                    endpoints: [127.0.0.2:8080]
                    health_check: {path: /ready, interval: 5s, timeout: 2s, healthy_threshold: 3, unhealthy_threshold: 4,
                                   expected_statuses: [200-299, 418], jitter: 20%, host: web.local}
                    gate_new_endpoints: false
                    min_idle_connections_per_endpoint: 0
                    outlier_detection: {consecutive_5xx: 7, consecutive_gateway_failures: 0, base_ejection_time: 10s,
                                        max_ejection_time: 1m, max_ejection_percent: 30%}
                    panic_threshold: 25%
                    max_retries: 1
                    retry_on: [gateway-error, 500]
                    retry_budget: {percent: 10, min_per_second: 3}
                    retry_buffer_limit: 1MiB
                    max_pending_requests: 50
                    keepalive_timeout: 30s
                    idle_timeout: 5s
                """,
            overrides: .init()
        )
        let web = configuration.upstreams[0]
        let check = try #require(web.healthCheck)
        #expect(check.path == "/ready")
        #expect(check.interval == .seconds(5))
        #expect(check.timeout == .seconds(2))
        #expect(check.healthyThreshold == 3)
        #expect(check.unhealthyThreshold == 4)
        #expect(check.expectedStatuses == [200...299, 418...418])
        #expect(check.jitterPercent == 20)
        #expect(check.host == "web.local")
        #expect(check.isExpected(status: 418) && !check.isExpected(status: 302))
        #expect(!web.gateNewEndpoints)
        #expect(web.minIdleConnectionsPerEndpoint == 0)
        #expect(web.outlierDetection.consecutive5xx == 7)
        #expect(web.outlierDetection.consecutiveGatewayFailures == 0)
        #expect(web.outlierDetection.baseEjectionTime == .seconds(10))
        #expect(web.outlierDetection.maxEjectionTime == .seconds(60))
        #expect(web.outlierDetection.maxEjectionPercent == 30)
        #expect(web.panicThresholdPercent == 25)
        #expect(web.retries.maxRetries == 1)
        #expect(web.retries.statuses == [500, 502, 503, 504])
        #expect(web.retries.budgetPercent == 10)
        #expect(web.retries.budgetMinPerSecond == 3)
        #expect(web.retries.bufferLimit == 1 << 20)
        #expect(web.maxPendingRequests == 50)
        #expect(web.keepaliveTimeout == .seconds(30))
        #expect(web.idleTimeout == .seconds(5))
    }

    @Test func staticEndpointsMayCarryWeights() throws {
        let configuration = try HeadwayConfiguration.load(
            yaml: """
                upstreams:
                  web:
                    endpoints: [127.0.0.2:8080, {address: 127.0.0.3:8080, weight: 3}]
                    policy: hash
                    hash_key: cookie:session
                    slow_start: 30s
                """,
            overrides: .init()
        )
        let web = configuration.upstreams[0]
        #expect(
            web.endpoints == [HostAndPort(host: "127.0.0.2", port: 8080), HostAndPort(host: "127.0.0.3", port: 8080)]
        )
        #expect(web.endpointWeights == [HostAndPort(host: "127.0.0.3", port: 8080): 3])
        #expect(web.hashKey == .cookie("session"))
        #expect(web.slowStart == .seconds(30))
    }

    @Test func perTryTimeoutIsReadAndMustBeShorterThanRequestTimeout() throws {
        let configuration = try HeadwayConfiguration.load(
            yaml: """
                upstreams:
                  web: {endpoints: [127.0.0.2:8080], per_try_timeout: 750ms, request_timeout: 5s}
                """,
            overrides: .init()
        )
        #expect(configuration.upstreams[0].retries.perTryTimeout == .milliseconds(750))
        let byDefault = try HeadwayConfiguration.load(
            yaml: "upstreams: {web: {endpoints: [127.0.0.2:8080]}}",
            overrides: .init()
        )
        #expect(byDefault.upstreams[0].retries.perTryTimeout == nil, "off unless asked for, as Envoy's")
        var problems: [String] = []
        do {
            _ = try HeadwayConfiguration.load(
                yaml: "upstreams: {web: {endpoints: [127.0.0.2:8080], per_try_timeout: 15s}}",
                overrides: .init()
            )
        } catch {
            problems = error.problems.map(\.description)
        }
        #expect(
            problems == [
                "upstreams.web.per_try_timeout: is not shorter than request_timeout (15s), so it would never send a"
                    + " request elsewhere"
            ]
        )
    }

    @Test func policyProblemsNameTheirKey() {
        var problems: [String] = []
        do {
            _ = try HeadwayConfiguration.load(
                yaml: """
                    upstreams:
                      web:
                        endpoints: [{address: 127.0.0.2:8080, weight: 0}]
                        policy: hash
                      api:
                        endpoints: [127.0.0.3:8080]
                        hash_key: header:X-User
                    listeners: [{listen: 127.0.0.1:15001, upstream: web}]
                    """,
                overrides: .init()
            )
        } catch {
            problems = error.problems.map(\.description)
        }
        #expect(
            problems.sorted() == [
                "upstreams.api.hash_key: applies only to policy: hash",
                "upstreams.web.endpoints[0].weight: must be a whole number from 1 to 10000",
                "upstreams.web.hash_key: missing: the hash policy needs header:NAME, cookie:NAME or client-ip",
            ]
        )
        var overrides = ConfigurationOverrides()
        overrides[list: "--endpoints"] = ["127.0.0.2:80"]
        overrides["--policy"] = "hash"
        overrides["--hash-key"] = "header:"
        do {
            _ = try HeadwayConfiguration.load(yaml: nil, overrides: overrides)
            Issue.record("accepted an empty header name")
        } catch {
            #expect(
                error.problems.map(\.description).contains(
                    "--hash-key: bad hash key 'header:': write header:NAME, cookie:NAME or client-ip"
                )
            )
        }
    }

    @Test func clientLimitsAreRead() throws {
        let configuration = try HeadwayConfiguration.load(
            yaml: """
                client: {header_timeout: 5s, body_timeout: 7s, idle_timeout: 1m, write_timeout: 9s, max_connections: 50,
                         max_request_body: 10MiB, max_request_line: 4KiB, max_request_head: 16KiB, max_header_fields: 20}
                upstreams: {web: {endpoints: [127.0.0.2:8080]}}
                """,
            overrides: .init()
        )
        let client = configuration.client
        #expect(client.headerTimeout == .seconds(5) && client.bodyTimeout == .seconds(7))
        #expect(client.idleTimeout == .seconds(60) && client.writeTimeout == .seconds(9))
        #expect(client.maxConnections == 50 && client.maxRequestBody == 10 << 20)
        #expect(client.requestLimits.requestLineBytes == 4096 && client.requestLimits.headBytes == 16384)
        #expect(client.requestLimits.fieldCount == 20)
        do {
            _ = try HeadwayConfiguration.load(
                yaml:
                    "client: {max_request_line: 8KiB, max_request_head: 4KiB, slow: 1s}\nupstreams: {web: {endpoints: [127.0.0.2:8080]}}",
                overrides: .init()
            )
            Issue.record("accepted a head limit below the request line limit")
        } catch {
            #expect(
                error.problems.map(\.description).sorted() == [
                    "client.max_request_head: is smaller than max_request_line",
                    "client.slow: unknown key (known: header_timeout, body_timeout, idle_timeout, write_timeout, max_connections,"
                        + " max_concurrent_streams, max_request_body, max_request_line, max_request_head, max_header_fields)",
                ]
            )
        }
    }

    @Test func noHealthCheckBlockMeansPassiveChecksOnly() throws {
        let configuration = try HeadwayConfiguration.load(
            yaml: nil,
            overrides: {
                var o = ConfigurationOverrides()
                o[list: "--endpoints"] = ["127.0.0.2:80"]
                return o
            }()
        )
        #expect(configuration.upstreams[0].healthCheck == nil)
        #expect(configuration.upstreams[0].outlierDetection == OutlierDetectionSettings())
        #expect(configuration.upstreams[0].retries.maxRetries == 2)
    }

    @Test func healthFlagsTurnChecksOn() throws {
        var overrides = ConfigurationOverrides()
        overrides[list: "--endpoints"] = ["127.0.0.2:80"]
        overrides["--health-path"] = "/healthz"
        overrides["--health-interval"] = "500ms"
        overrides["--health-timeout"] = "200ms"
        overrides["--healthy-threshold"] = "1"
        overrides["--unhealthy-threshold"] = "5"
        overrides["--max-retries"] = "0"
        let upstream = try HeadwayConfiguration.load(yaml: nil, overrides: overrides).upstreams[0]
        let check = try #require(upstream.healthCheck)
        #expect(check.kind == .http && check.path == "/healthz")
        #expect(check.interval == .milliseconds(500) && check.timeout == .milliseconds(200))
        #expect(check.healthyThreshold == 1 && check.unhealthyThreshold == 5)
        #expect(upstream.retries.maxRetries == 0)
    }

    @Test func badResilienceSettingsNameTheirKey() {
        var problems: [String] = []
        do {
            _ = try HeadwayConfiguration.load(
                yaml: """
                    upstreams:
                      web:
                        endpoints: [127.0.0.2:8080]
                        health_check: {type: udp, path: healthz, interval: 1s, timeout: 2s, expected_statuses: [200-99], probe: x}
                        outlier_detection: {base_ejection_time: 10m, max_ejection_time: 1m}
                        panic_threshold: 150%
                        retry_on: [404]
                        retry_buffer_limit: lots
                        gate_new_endpoints: maybe
                    """,
                overrides: .init()
            )
        } catch {
            problems = error.problems.map(\.description)
        }
        let expected = [
            "upstreams.web.health_check.type: must be one of http, tcp, grpc",
            "upstreams.web.health_check.path: must be an absolute path",
            "upstreams.web.health_check.expected_statuses[0]: bad status range '200-99'",
            "upstreams.web.health_check.probe: unknown key",
            "upstreams.web.health_check.timeout: is longer than the interval (1s)",
            "upstreams.web.outlier_detection.base_ejection_time: is longer than max_ejection_time",
            "upstreams.web.panic_threshold: must be a percentage from 0% to 100%, got '150%'",
            "upstreams.web.retry_on[0]: '404' is not a 5xx status",
            "upstreams.web.retry_buffer_limit: must be a size",
            "upstreams.web.gate_new_endpoints: must be true or false",
        ]
        for prefix in expected {
            #expect(problems.contains { $0.hasPrefix(prefix) }, "missing '\(prefix)' in \(problems)")
        }
        #expect(problems.count == expected.count, "\(problems)")
    }

    @Test func healthFlagsWithoutAPathAreRefused() {
        var overrides = ConfigurationOverrides()
        overrides[list: "--endpoints"] = ["127.0.0.2:80"]
        overrides["--health-interval"] = "1s"
        do {
            _ = try HeadwayConfiguration.load(yaml: nil, overrides: overrides)
            Issue.record("accepted --health-interval without checks")
        } catch {
            #expect(
                error.problems.map(\.description) == [
                    "--health-interval: needs active health checks: give --health-path or a health_check block"
                ]
            )
        }
    }
}
