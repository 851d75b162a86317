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
        overrides.endpoints = ["127.0.0.2:8080", "127.0.0.3:8080"]
        overrides.requestTimeout = "5s"
        let configuration = try HeadwayConfiguration.load(yaml: nil, overrides: overrides)
        #expect(configuration.listeners == [.init(listen: HeadwayConfiguration.defaultListen, upstream: "default")])
        #expect(configuration.upstreams[0].endpoints.count == 2)
        #expect(configuration.upstreams[0].requestTimeout == .seconds(5))
        #expect(configuration.upstreams[0].connectTimeout == .seconds(1))
    }

    @Test func flagsWinOverTheFile() throws {
        var overrides = ConfigurationOverrides()
        overrides.connectTimeout = "3s"
        overrides.listen = "127.0.0.1:16000"
        let configuration = try HeadwayConfiguration.load(
            yaml: "upstreams:\n  web:\n    endpoints: [127.0.0.2:8080]\n    connect_timeout: 1s\n",
            overrides: overrides
        )
        #expect(configuration.upstreams[0].connectTimeout == .seconds(3))
        #expect(configuration.listeners[0].listen.port == 16000)
        #expect(configuration.listeners[0].upstream == "web")
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
        #expect(found.contains { $0.hasPrefix("upstreams.web.policy: unknown policy 'fastest' (known: round-robin)") })
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
        ) { $0.endpoints = ["127.0.0.4:8080"] }
        #expect(found == ["--endpoints: applies to a configuration with one listener and one upstream; this file has 2 listeners and 2 upstreams"])
    }

    @Test func noEndpointsAtAllIsExplained() {
        #expect(self.problems(yaml: nil) == ["--endpoints: no endpoints: give --endpoints HOST:PORT,..., --service NAME:PORT or --config FILE"])
    }

    @Test func badFlagsAreNamedLikeKeys() {
        let found = self.problems(yaml: nil) {
            $0.endpoints = ["127.0.0.2:8080"]
            $0.connectTimeout = "fast"
            $0.listen = "127.0.0.1"
            $0.policy = "lucky"
            $0.threads = 0
        }
        #expect(found.contains { $0.hasPrefix("--connect-timeout: bad duration 'fast'") })
        #expect(found.contains { $0.hasPrefix("--listen: bad address: '127.0.0.1' needs a port") })
        #expect(found.contains { $0.hasPrefix("--policy: unknown policy 'lucky'") })
        #expect(found.contains { $0.hasPrefix("--threads: must be at least 1") })
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
        overrides.service = "web"
        overrides.dnsServers = ["127.0.0.1:5353"]
        overrides.refresh = "1s"
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
        let conf = ResolvConf(parsing: "# comment\nnameserver 10.96.0.10\nsearch default.svc.cluster.local svc.cluster.local\noptions ndots:5 timeout:2 attempts:3\n")
        #expect(conf.nameservers == [HostAndPort(host: "10.96.0.10", port: 53)])
        #expect(conf.search == ["default.svc.cluster.local", "svc.cluster.local"])
        #expect(conf.ndots == 5)
        #expect(conf.timeoutSeconds == 2)
        #expect(conf.attempts == 3)
    }
}
