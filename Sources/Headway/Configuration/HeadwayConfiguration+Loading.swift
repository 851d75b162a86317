import Foundation
import NIOCore
import Yams

/// Values given on the command line. Each is optional: a flag that was not given leaves the file's value alone.
///
/// Values stay text until ``HeadwayConfiguration/load(yaml:overrides:)`` checks them, so a bad flag gets the
/// same kind of message as a bad key in the file, with the flag's name as the key path.
package struct ConfigurationOverrides: Sendable, Equatable {
    package var listen: String?
    package var admin: String?
    package var threads: Int?
    package var logLevel: String?
    package var drainTimeout: String?
    package var endpoints: [String]?
    package var service: String?
    package var dnsServers: [String]?
    package var resolvConf: String?
    package var refresh: String?
    package var respectTTL: Bool?
    package var policy: String?
    package var hashKey: String?
    package var slowStart: String?
    package var connectTimeout: String?
    package var requestTimeout: String?
    package var idleTimeout: String?
    package var keepaliveTimeout: String?
    package var maxConnectionsPerEndpoint: Int?
    package var healthPath: String?
    package var healthInterval: String?
    package var healthTimeout: String?
    package var healthyThreshold: Int?
    package var unhealthyThreshold: Int?
    package var maxRetries: Int?

    package init() {}

    /// Flags that only make sense for a configuration with one listener and one upstream.
    var singleUpstreamFlags: [String] {
        var names: [String] = []
        if self.listen != nil { names.append("--listen") }
        if self.endpoints != nil { names.append("--endpoints") }
        if self.service != nil { names.append("--service") }
        if self.dnsServers != nil { names.append("--dns-server") }
        if self.resolvConf != nil { names.append("--resolv-conf") }
        if self.refresh != nil { names.append("--refresh") }
        if self.respectTTL != nil { names.append("--respect-ttl") }
        if self.policy != nil { names.append("--policy") }
        if self.hashKey != nil { names.append("--hash-key") }
        if self.slowStart != nil { names.append("--slow-start") }
        if self.connectTimeout != nil { names.append("--connect-timeout") }
        if self.requestTimeout != nil { names.append("--request-timeout") }
        if self.idleTimeout != nil { names.append("--idle-timeout") }
        if self.keepaliveTimeout != nil { names.append("--keepalive-timeout") }
        if self.maxConnectionsPerEndpoint != nil { names.append("--max-connections-per-endpoint") }
        if self.healthPath != nil { names.append("--health-path") }
        if self.healthInterval != nil { names.append("--health-interval") }
        if self.healthTimeout != nil { names.append("--health-timeout") }
        if self.healthyThreshold != nil { names.append("--healthy-threshold") }
        if self.unhealthyThreshold != nil { names.append("--unhealthy-threshold") }
        if self.maxRetries != nil { names.append("--max-retries") }
        return names
    }
}

extension HeadwayConfiguration {
    static let logLevels = ["trace", "debug", "info", "notice", "warning", "error", "critical"]

    /// Builds the configuration from a YAML document (or none) and command-line flags, checking everything.
    ///
    /// This is the only way a configuration is made: `headway validate` and `headway run` both call it, so
    /// they accept and refuse exactly the same input with the same messages.
    /// - Throws: ``ConfigurationError`` listing every problem found, each naming its key path.
    package static func load(yaml: String?, overrides: ConfigurationOverrides) throws(ConfigurationError) -> Self {
        var reader = Reader()
        var configuration = HeadwayConfiguration(
            listeners: [.init(listen: Self.defaultListen, upstream: "default")],
            upstreams: [.init(name: "default")]
        )
        if let yaml {
            reader.read(yaml: yaml, into: &configuration)
        }
        reader.apply(overrides, to: &configuration)
        reader.checkConsistency(
            of: configuration,
            flagsGaveEndpoints: overrides.endpoints != nil || overrides.service != nil
        )
        guard reader.problems.isEmpty else {
            throw ConfigurationError(problems: reader.problems)
        }
        return configuration
    }
}

/// Walks the YAML node tree key by key so that unknown keys and malformed values are reported, never
/// silently replaced by a default.
private struct Reader {
    var problems: [ConfigurationProblem] = []

    mutating func problem(_ keyPath: String, _ message: String) {
        self.problems.append(ConfigurationProblem(keyPath: keyPath, message: message))
    }

    mutating func read(yaml: String, into configuration: inout HeadwayConfiguration) {
        let root: Node?
        do {
            root = try Yams.compose(yaml: yaml)
        } catch {
            self.problem("(file)", "not valid YAML: \(error)")
            return
        }
        guard let root else { return }  // An empty file is the default configuration.
        guard let mapping = root.mapping else {
            self.problem("(file)", "the top level must be a mapping of keys to values")
            return
        }
        var sawListeners = false
        var sawUpstreams = false
        for (keyNode, value) in mapping {
            let key = keyNode.string ?? "?"
            switch key {
            case "admin":
                if let address = self.address(value, at: "admin", bindable: true) { configuration.admin = address }
            case "ready_requires_endpoints":
                if let flag = self.bool(value, at: "ready_requires_endpoints") {
                    configuration.readyRequiresEndpoints = flag
                }
            case "threads":
                if let threads = self.positiveInt(value, at: "threads") { configuration.threads = threads }
            case "drain_timeout":
                if let amount = self.duration(value, at: "drain_timeout") { configuration.drainTimeout = amount }
            case "log_level":
                if let level = self.logLevel(value.string, at: "log_level") { configuration.logLevel = level }
            case "client":
                self.readClient(value, at: "client", into: &configuration.client)
            case "listeners":
                sawListeners = true
                configuration.listeners = self.listeners(value)
            case "upstreams":
                sawUpstreams = true
                configuration.upstreams = self.upstreams(value)
            default:
                self.problem(
                    key,
                    "unknown key (known: admin, ready_requires_endpoints, threads, drain_timeout, log_level, client, listeners, upstreams)"
                )
            }
        }
        if sawUpstreams && !sawListeners {
            // A file with upstreams but no listeners: listen on the default address for its only upstream.
            configuration.listeners =
                configuration.upstreams.count == 1
                ? [.init(listen: HeadwayConfiguration.defaultListen, upstream: configuration.upstreams[0].name)]
                : []
        }
    }

    mutating func listeners(_ node: Node) -> [HeadwayConfiguration.Listener] {
        guard let sequence = node.sequence else {
            self.problem("listeners", "must be a list of {listen, upstream}")
            return []
        }
        var listeners: [HeadwayConfiguration.Listener] = []
        for (index, item) in sequence.enumerated() {
            let path = "listeners[\(index)]"
            guard let mapping = item.mapping else {
                self.problem(path, "must be a mapping with keys listen and upstream")
                continue
            }
            var listen = HeadwayConfiguration.defaultListen
            var upstream: String?
            for (keyNode, value) in mapping {
                let key = keyNode.string ?? "?"
                switch key {
                case "listen":
                    if let address = self.address(value, at: "\(path).listen", bindable: true) { listen = address }
                case "upstream":
                    upstream = value.string
                default:
                    self.problem("\(path).\(key)", "unknown key (known: listen, upstream)")
                }
            }
            guard let upstream, !upstream.isEmpty else {
                self.problem("\(path).upstream", "missing: name the upstream this listener sends requests to")
                continue
            }
            listeners.append(.init(listen: listen, upstream: upstream))
        }
        return listeners
    }

    mutating func upstreams(_ node: Node) -> [HeadwayConfiguration.Upstream] {
        guard let mapping = node.mapping else {
            self.problem("upstreams", "must be a mapping of upstream names to settings")
            return []
        }
        var upstreams: [HeadwayConfiguration.Upstream] = []
        for (nameNode, value) in mapping {
            let name = nameNode.string ?? "?"
            let path = "upstreams.\(name)"
            guard let settings = value.mapping else {
                self.problem(path, "must be a mapping of settings")
                continue
            }
            var upstream = HeadwayConfiguration.Upstream(name: name)
            var sawEndpoints = false
            var dnsBlock: Node?
            for (keyNode, value) in settings {
                let key = keyNode.string ?? "?"
                let keyPath = "\(path).\(key)"
                switch key {
                case "endpoints":
                    sawEndpoints = true
                    guard let list = value.sequence else {
                        self.problem(keyPath, "must be a list of HOST:PORT")
                        continue
                    }
                    upstream.endpoints = list.enumerated().compactMap { index, item in
                        self.endpoint(item, at: "\(keyPath)[\(index)]", weights: &upstream.endpointWeights)
                    }
                case "service":
                    if let text = value.scalar?.string, let service = self.service(text: text, at: keyPath) {
                        upstream.dns = service
                    } else if value.scalar == nil {
                        self.problem(keyPath, "must be NAME:PORT, e.g. nginx-headless-service:80")
                    }
                case "srv":
                    if let text = value.scalar?.string, var settings = self.service(text: text, at: keyPath),
                        !text.contains(":")
                    {
                        settings.isSRV = true
                        upstream.dns = settings
                    } else {
                        self.problem(
                            keyPath,
                            "must be an SRV name such as _http._tcp.web (ports come from the records)"
                        )
                    }
                case "dns":
                    dnsBlock = value
                case "policy":
                    if let policy = self.policy(value.string, at: keyPath) { upstream.policy = policy }
                case "hash_key":
                    if let key = self.hashKey(value.scalar?.string ?? "", at: keyPath) { upstream.hashKey = key }
                case "ewma_decay":
                    if let amount = self.duration(value, at: keyPath) { upstream.ewmaDecay = amount }
                case "slow_start":
                    if let amount = self.duration(value, at: keyPath) { upstream.slowStart = amount }
                case "slow_start_at_startup":
                    if let flag = self.bool(value, at: keyPath) { upstream.slowStartAtStartup = flag }
                case "connect_timeout":
                    if let amount = self.duration(value, at: keyPath) { upstream.connectTimeout = amount }
                case "request_timeout":
                    if let amount = self.duration(value, at: keyPath) { upstream.requestTimeout = amount }
                case "idle_timeout":
                    if let amount = self.duration(value, at: keyPath) { upstream.idleTimeout = amount }
                case "keepalive_timeout":
                    if let amount = self.duration(value, at: keyPath) { upstream.keepaliveTimeout = amount }
                case "max_connections_per_endpoint":
                    if let count = self.positiveInt(value, at: keyPath) { upstream.maxConnectionsPerEndpoint = count }
                case "max_pending_requests":
                    if let count = self.positiveInt(value, at: keyPath) { upstream.maxPendingRequests = count }
                case "min_idle_connections_per_endpoint":
                    if let count = self.nonNegativeInt(value, at: keyPath) {
                        upstream.minIdleConnectionsPerEndpoint = count
                    }
                case "health_check":
                    upstream.healthCheck = self.healthCheck(value, at: keyPath)
                case "gate_new_endpoints":
                    if let flag = self.bool(value, at: keyPath) { upstream.gateNewEndpoints = flag }
                case "outlier_detection":
                    self.readOutlierDetection(value, at: keyPath, into: &upstream.outlierDetection)
                case "panic_threshold":
                    if let percent = self.percent(value, at: keyPath) { upstream.panicThresholdPercent = percent }
                case "max_retries":
                    if let count = self.nonNegativeInt(value, at: keyPath) { upstream.retries.maxRetries = count }
                case "retry_on":
                    if let statuses = self.retryOn(value, at: keyPath) { upstream.retries.statuses = statuses }
                case "retry_budget":
                    self.readRetryBudget(value, at: keyPath, into: &upstream.retries)
                case "retry_buffer_limit":
                    if let bytes = self.size(value, at: keyPath) { upstream.retries.bufferLimit = bytes }
                default:
                    self.problem(keyPath, "unknown key (known: \(Self.upstreamKeys))")
                }
            }
            if let dnsBlock {
                if upstream.dns == nil {
                    self.problem("\(path).dns", "applies only to an upstream with service")
                } else {
                    self.readDNS(dnsBlock, at: "\(path).dns", into: &upstream.dns!)
                }
            }
            if sawEndpoints && upstream.dns != nil {
                self.problem(path, "has both endpoints and service; give one")
            } else if !sawEndpoints && upstream.dns == nil {
                self.problem("\(path).endpoints", "missing: list at least one HOST:PORT, or give service")
            }
            upstreams.append(upstream)
        }
        return upstreams
    }

    static let upstreamKeys =
        "endpoints, service, srv, dns, policy, hash_key, ewma_decay, slow_start, slow_start_at_startup, connect_timeout, request_timeout, idle_timeout, keepalive_timeout,"
        + " max_connections_per_endpoint, max_pending_requests, min_idle_connections_per_endpoint, health_check,"
        + " gate_new_endpoints, outlier_detection, panic_threshold, max_retries, retry_on, retry_budget, retry_buffer_limit"

    /// `health_check:` as a mapping; an empty mapping (`health_check: {}`) turns checks on with the defaults.
    mutating func healthCheck(_ node: Node, at path: String) -> HealthCheckSettings? {
        guard let mapping = node.mapping else {
            self.problem(path, "must be a mapping, e.g. {path: /healthz, interval: 2s} ({} for the defaults)")
            return nil
        }
        var settings = HealthCheckSettings()
        for (keyNode, value) in mapping {
            let key = keyNode.string ?? "?"
            let keyPath = "\(path).\(key)"
            switch key {
            case "type":
                if let text = value.scalar?.string, let kind = HealthCheckSettings.Kind(rawValue: text) {
                    settings.kind = kind
                } else {
                    self.problem(
                        keyPath,
                        "must be one of \(HealthCheckSettings.Kind.allCases.map(\.rawValue).joined(separator: ", "))"
                    )
                }
            case "path":
                if let path = self.healthPath(value.scalar?.string ?? "", at: keyPath) { settings.path = path }
            case "host":
                if let text = value.scalar?.string, !text.isEmpty, text.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) {
                    settings.host = text
                } else {
                    self.problem(keyPath, "must be a host name for the check's Host header")
                }
            case "interval":
                if let amount = self.duration(value, at: keyPath) { settings.interval = amount }
            case "timeout":
                if let amount = self.duration(value, at: keyPath) { settings.timeout = amount }
            case "healthy_threshold":
                if let count = self.positiveInt(value, at: keyPath) { settings.healthyThreshold = count }
            case "unhealthy_threshold":
                if let count = self.positiveInt(value, at: keyPath) { settings.unhealthyThreshold = count }
            case "expected_statuses":
                if let ranges = self.statusRanges(value, at: keyPath) { settings.expectedStatuses = ranges }
            case "jitter":
                if let percent = self.percent(value, at: keyPath) { settings.jitterPercent = percent }
            default:
                self.problem(
                    keyPath,
                    "unknown key (known: type, path, host, interval, timeout, healthy_threshold, unhealthy_threshold,"
                        + " expected_statuses, jitter)"
                )
            }
        }
        self.checkHealthTimeout(settings, at: "\(path).timeout")
        return settings
    }

    /// A check that may outlast its interval would overlap the next one.
    mutating func checkHealthTimeout(_ settings: HealthCheckSettings, at keyPath: String) {
        if settings.timeout > settings.interval {
            self.problem(keyPath, "is longer than the interval (\(DurationText.format(settings.interval)))")
        }
    }

    mutating func healthPath(_ text: String, at keyPath: String) -> String? {
        guard text.hasPrefix("/"), text.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else {
            self.problem(keyPath, "must be an absolute path such as /healthz, without spaces or control characters")
            return nil
        }
        return text
    }

    /// `[200-399, 404]`: statuses or inclusive ranges of statuses.
    mutating func statusRanges(_ node: Node, at keyPath: String) -> [ClosedRange<Int>]? {
        guard let list = node.sequence, list.count > 0 else {
            self.problem(keyPath, "must be a list of statuses or ranges, e.g. [200-399]")
            return nil
        }
        var ranges: [ClosedRange<Int>] = []
        for (index, item) in list.enumerated() {
            let text = item.scalar?.string ?? ""
            let bounds = text.split(separator: "-", omittingEmptySubsequences: false).map { Int($0) }
            guard (1...2).contains(bounds.count), let low = bounds.first!, let high = bounds.last!,
                (100...599).contains(low), (low...599).contains(high)
            else {
                self.problem("\(keyPath)[\(index)]", "bad status range '\(text)': write 200 or 200-399, within 100-599")
                continue
            }
            ranges.append(low...high)
        }
        return ranges.isEmpty ? nil : ranges
    }

    mutating func readOutlierDetection(_ node: Node, at path: String, into settings: inout OutlierDetectionSettings) {
        self.readBlock(
            node,
            at: path,
            known:
                "consecutive_5xx, consecutive_gateway_failures, base_ejection_time, max_ejection_time, max_ejection_percent"
        ) { reader, key, value, keyPath in
            switch key {
            case "consecutive_5xx":
                if let count = reader.nonNegativeInt(value, at: keyPath) { settings.consecutive5xx = count }
            case "consecutive_gateway_failures":
                if let count = reader.nonNegativeInt(value, at: keyPath) { settings.consecutiveGatewayFailures = count }
            case "base_ejection_time":
                if let amount = reader.duration(value, at: keyPath) { settings.baseEjectionTime = amount }
            case "max_ejection_time":
                if let amount = reader.duration(value, at: keyPath) { settings.maxEjectionTime = amount }
            case "max_ejection_percent":
                if let percent = reader.percent(value, at: keyPath) { settings.maxEjectionPercent = percent }
            default:
                return false
            }
            return true
        }
        if settings.baseEjectionTime > settings.maxEjectionTime {
            self.problem("\(path).base_ejection_time", "is longer than max_ejection_time")
        }
    }

    /// `[503, gateway-error]`: statuses to retry; `gateway-error` means 502, 503 and 504, `5xx` any 5xx.
    mutating func retryOn(_ node: Node, at keyPath: String) -> Set<Int>? {
        guard let list = node.sequence else {
            self.problem(keyPath, "must be a list of statuses, gateway-error or 5xx, e.g. [503, gateway-error]")
            return nil
        }
        var statuses = Set<Int>()
        for (index, item) in list.enumerated() {
            let text = item.scalar?.string ?? ""
            switch text {
            case "gateway-error": statuses.formUnion([502, 503, 504])
            case "5xx": statuses.formUnion(500...599)
            default:
                if let status = Int(text), (500...599).contains(status) {
                    statuses.insert(status)
                } else {
                    self.problem("\(keyPath)[\(index)]", "'\(text)' is not a 5xx status, gateway-error or 5xx")
                }
            }
        }
        return statuses
    }

    mutating func readRetryBudget(_ node: Node, at path: String, into settings: inout RetrySettings) {
        self.readBlock(
            node,
            at: path,
            known: "percent, min_per_second",
            mustBe: "must be a mapping, e.g. {percent: 20, min_per_second: 10}"
        ) { reader, key, value, keyPath in
            switch key {
            case "percent":
                if let percent = reader.percent(value, at: keyPath) { settings.budgetPercent = percent }
            case "min_per_second":
                if let count = reader.nonNegativeInt(value, at: keyPath) { settings.budgetMinPerSecond = count }
            default:
                return false
            }
            return true
        }
    }

    mutating func readDNS(_ node: Node, at path: String, into settings: inout DNSDiscoverySettings) {
        self.readBlock(
            node,
            at: path,
            known: "servers, resolv_conf, refresh, respect_ttl, min_refresh, max_refresh, family"
        ) { reader, key, value, keyPath in
            switch key {
            case "servers":
                guard let list = value.sequence else {
                    reader.problem(keyPath, "must be a list of IPv4:PORT")
                    return true
                }
                settings.servers = list.enumerated().compactMap { index, item in
                    item.scalar.flatMap { reader.dnsServer(text: $0.string, at: "\(keyPath)[\(index)]") }
                }
            case "resolv_conf":
                if let text = value.scalar?.string { reader.resolvConf(path: text, at: keyPath, into: &settings) }
            case "refresh":
                if let amount = reader.duration(value, at: keyPath) { settings.refresh = amount }
            case "min_refresh":
                if let amount = reader.duration(value, at: keyPath) { settings.minRefresh = amount }
            case "max_refresh":
                if let amount = reader.duration(value, at: keyPath) { settings.maxRefresh = amount }
            case "respect_ttl":
                if let flag = reader.bool(value, at: keyPath) { settings.respectTTL = flag }
            case "family":
                if let text = value.scalar?.string, let family = AddressFamily(rawValue: text) {
                    settings.family = family
                } else {
                    reader.problem(
                        keyPath,
                        "must be one of \(AddressFamily.allCases.map(\.rawValue).joined(separator: ", "))"
                    )
                }
            default:
                return false
            }
            return true
        }
        if settings.minRefresh > settings.maxRefresh {
            self.problem("\(path).min_refresh", "is longer than max_refresh")
        }
    }

    /// `NAME:PORT` (port 80 when omitted): a DNS name as the pod's resolver would look it up.
    mutating func service(text: String, at keyPath: String) -> DNSDiscoverySettings? {
        var name = Substring(text)
        var port = 80
        if let colon = text.lastIndex(of: ":") {
            name = text[..<colon]
            guard let parsed = Int(text[text.index(after: colon)...]), (1...65535).contains(parsed) else {
                self.problem(keyPath, "bad service '\(text)': the port must be 1-65535")
                return nil
            }
            port = parsed
        }
        let labels = name.hasSuffix(".") ? name.dropLast() : name
        let isValidName =
            !labels.isEmpty && labels.count <= 253
            && labels.split(separator: ".", omittingEmptySubsequences: false).allSatisfy { label in
                (1...63).contains(label.count)
                    && label.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") }
            }
        guard isValidName else {
            self.problem(keyPath, "bad service '\(text)': not a DNS name")
            return nil
        }
        return DNSDiscoverySettings(name: String(name), port: port)
    }

    mutating func dnsServer(text: String, at keyPath: String) -> HostAndPort? {
        let withPort = text.contains(":") ? text : "\(text):53"
        guard let address = self.address(text: withPort, at: keyPath) else { return nil }
        guard !address.host.contains(":") else {
            self.problem(keyPath, "DNS servers must be IPv4 addresses (libresolv's server list is IPv4)")
            return nil
        }
        return address
    }

    mutating func resolvConf(path: String, at keyPath: String, into settings: inout DNSDiscoverySettings) {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            self.problem(keyPath, "cannot read '\(path)'")
            return
        }
        settings.resolvConf = ResolvConf(parsing: text)
        settings.resolvConfPath = path
    }

    mutating func apply(_ overrides: ConfigurationOverrides, to configuration: inout HeadwayConfiguration) {
        if let admin = overrides.admin, let address = self.address(text: admin, at: "--admin", bindable: true) {
            configuration.admin = address
        }
        if let threads = overrides.threads {
            if threads >= 1 { configuration.threads = threads } else { self.problem("--threads", "must be at least 1") }
        }
        if let level = overrides.logLevel, let valid = self.logLevel(level, at: "--log-level") {
            configuration.logLevel = valid
        }
        if let text = overrides.drainTimeout, let amount = self.duration(text: text, at: "--drain-timeout") {
            configuration.drainTimeout = amount
        }
        let singleFlags = overrides.singleUpstreamFlags
        guard !singleFlags.isEmpty else { return }
        guard configuration.upstreams.count == 1, configuration.listeners.count == 1 else {
            for flag in singleFlags {
                self.problem(
                    flag,
                    "applies to a configuration with one listener and one upstream; this file has"
                        + " \(configuration.listeners.count) listeners and \(configuration.upstreams.count) upstreams"
                )
            }
            return
        }
        if let listen = overrides.listen, let address = self.address(text: listen, at: "--listen", bindable: true) {
            configuration.listeners[0].listen = address
        }
        var upstream = configuration.upstreams[0]
        if let endpoints = overrides.endpoints {
            upstream.endpoints = endpoints.compactMap { self.address(text: $0, at: "--endpoints") }
            upstream.dns = nil
        }
        if let service = overrides.service {
            if overrides.endpoints != nil {
                self.problem("--service", "give either --service or --endpoints, not both")
            } else if let settings = self.service(text: service, at: "--service") {
                upstream.endpoints = []
                upstream.dns = settings
            }
        }
        let dnsFlags = [
            overrides.dnsServers != nil, overrides.resolvConf != nil, overrides.refresh != nil,
            overrides.respectTTL != nil,
        ]
        if dnsFlags.contains(true) {
            if upstream.dns == nil {
                self.problem(
                    "--service",
                    "--dns-server, --resolv-conf, --refresh and --respect-ttl need a service to resolve"
                )
            } else {
                if let servers = overrides.dnsServers {
                    upstream.dns!.servers = servers.compactMap { self.dnsServer(text: $0, at: "--dns-server") }
                }
                if let path = overrides.resolvConf {
                    self.resolvConf(path: path, at: "--resolv-conf", into: &upstream.dns!)
                }
                if let text = overrides.refresh, let amount = self.duration(text: text, at: "--refresh") {
                    upstream.dns!.refresh = amount
                }
                if let respectTTL = overrides.respectTTL { upstream.dns!.respectTTL = respectTTL }
            }
        }
        if let policy = overrides.policy, let valid = self.policy(policy, at: "--policy") {
            upstream.policy = valid
        }
        if let text = overrides.hashKey, let key = self.hashKey(text, at: "--hash-key") {
            upstream.hashKey = key
        }
        if let text = overrides.slowStart, let amount = self.duration(text: text, at: "--slow-start") {
            upstream.slowStart = amount
        }
        if let text = overrides.connectTimeout, let amount = self.duration(text: text, at: "--connect-timeout") {
            upstream.connectTimeout = amount
        }
        if let text = overrides.requestTimeout, let amount = self.duration(text: text, at: "--request-timeout") {
            upstream.requestTimeout = amount
        }
        if let text = overrides.idleTimeout, let amount = self.duration(text: text, at: "--idle-timeout") {
            upstream.idleTimeout = amount
        }
        if let text = overrides.keepaliveTimeout, let amount = self.duration(text: text, at: "--keepalive-timeout") {
            upstream.keepaliveTimeout = amount
        }
        self.applyHealthFlags(overrides, to: &upstream)
        if let count = overrides.maxRetries {
            if count >= 0 {
                upstream.retries.maxRetries = count
            } else {
                self.problem("--max-retries", "must be 0 or more")
            }
        }
        if let count = overrides.maxConnectionsPerEndpoint {
            if count >= 1 {
                upstream.maxConnectionsPerEndpoint = count
            } else {
                self.problem("--max-connections-per-endpoint", "must be at least 1")
            }
        }
        configuration.upstreams[0] = upstream
    }

    /// `--health-path` turns HTTP checks on; the other health flags adjust checks that are on.
    mutating func applyHealthFlags(
        _ overrides: ConfigurationOverrides,
        to upstream: inout HeadwayConfiguration.Upstream
    ) {
        let adjustments = [
            ("--health-interval", overrides.healthInterval != nil),
            ("--health-timeout", overrides.healthTimeout != nil),
            ("--healthy-threshold", overrides.healthyThreshold != nil),
            ("--unhealthy-threshold", overrides.unhealthyThreshold != nil),
        ]
        if let path = overrides.healthPath, let valid = self.healthPath(path, at: "--health-path") {
            var settings = upstream.healthCheck ?? HealthCheckSettings()
            settings.kind = .http
            settings.path = valid
            upstream.healthCheck = settings
        }
        guard var settings = upstream.healthCheck else {
            for (flag, given) in adjustments where given {
                self.problem(flag, "needs active health checks: give --health-path or a health_check block")
            }
            return
        }
        if let text = overrides.healthInterval, let amount = self.duration(text: text, at: "--health-interval") {
            settings.interval = amount
        }
        if let text = overrides.healthTimeout, let amount = self.duration(text: text, at: "--health-timeout") {
            settings.timeout = amount
        }
        if let count = overrides.healthyThreshold {
            if count >= 1 {
                settings.healthyThreshold = count
            } else {
                self.problem("--healthy-threshold", "must be at least 1")
            }
        }
        if let count = overrides.unhealthyThreshold {
            if count >= 1 {
                settings.unhealthyThreshold = count
            } else {
                self.problem("--unhealthy-threshold", "must be at least 1")
            }
        }
        if adjustments.contains(where: \.1) { self.checkHealthTimeout(settings, at: "--health-timeout") }
        upstream.healthCheck = settings
    }

    mutating func checkConsistency(of configuration: HeadwayConfiguration, flagsGaveEndpoints: Bool) {
        if configuration.listeners.isEmpty {
            self.problem("listeners", "no listener: add one with listen and upstream")
        }
        var seenListen = Set<HostAndPort>()
        for (index, listener) in configuration.listeners.enumerated() {
            if configuration.upstream(named: listener.upstream) == nil {
                self.problem(
                    "listeners[\(index)].upstream",
                    "names upstream '\(listener.upstream)', which is not defined"
                )
            }
            if listener.listen.port != 0, !seenListen.insert(listener.listen).inserted {
                self.problem("listeners[\(index)].listen", "\(listener.listen) is used by another listener")
            }
            if listener.listen.port != 0, listener.listen == configuration.admin {
                self.problem("listeners[\(index)].listen", "\(listener.listen) is also the admin address")
            }
        }
        for upstream in configuration.upstreams {
            if upstream.policy == .hash && upstream.hashKey == nil {
                self.problem(
                    "upstreams.\(upstream.name).hash_key",
                    "missing: the hash policy needs header:NAME, cookie:NAME or client-ip"
                )
            } else if upstream.policy != .hash && upstream.hashKey != nil {
                self.problem("upstreams.\(upstream.name).hash_key", "applies only to policy: hash")
            }
        }
        for upstream in configuration.upstreams where upstream.endpoints.isEmpty && upstream.dns == nil {
            let keyPath = "upstreams.\(upstream.name).endpoints"
            if self.problems.contains(where: { $0.keyPath.hasPrefix(keyPath) || $0.keyPath == "--endpoints" }) {
                continue  // Already reported: its endpoints were malformed or missing.
            }
            if upstream.name == "default" && !flagsGaveEndpoints {
                self.problem(
                    "--endpoints",
                    "no endpoints: give --endpoints HOST:PORT,..., --service NAME:PORT or --config FILE"
                )
            } else {
                self.problem(keyPath, "is empty: list at least one HOST:PORT")
            }
        }
    }

    // MARK: Scalars

    /// Reads an address; `bindable` ones (listen, admin) may use port 0.
    mutating func address(_ node: Node, at keyPath: String, bindable: Bool = false) -> HostAndPort? {
        guard let text = node.scalar?.string else {
            self.problem(keyPath, "must be HOST:PORT")
            return nil
        }
        return self.address(text: text, at: keyPath, bindable: bindable)
    }

    mutating func address(text: String, at keyPath: String, bindable: Bool = false) -> HostAndPort? {
        switch HostAndPort.parse(text, allowsAnyPort: bindable) {
        case .success(let address):
            return address
        case .failure(let failure):
            self.problem(keyPath, "bad address: \(failure)")
            return nil
        }
    }

    mutating func duration(_ node: Node, at keyPath: String) -> TimeAmount? {
        guard let text = node.scalar?.string else {
            self.problem(keyPath, "must be a duration such as 250ms, 2s or 1m")
            return nil
        }
        return self.duration(text: text, at: keyPath)
    }

    mutating func duration(text: String, at keyPath: String) -> TimeAmount? {
        guard let amount = DurationText.parse(text), amount.nanoseconds > 0 else {
            self.problem(
                keyPath,
                "bad duration '\(text)': write a positive number with a unit, such as 250ms, 2s or 1m"
            )
            return nil
        }
        return amount
    }

    mutating func positiveInt(_ node: Node, at keyPath: String) -> Int? {
        guard let text = node.scalar?.string, let value = Int(text), value >= 1 else {
            self.problem(
                keyPath,
                "must be a whole number of at least 1, got '\(node.scalar?.string ?? "a non-scalar")'"
            )
            return nil
        }
        return value
    }

    mutating func nonNegativeInt(_ node: Node, at keyPath: String) -> Int? {
        guard let text = node.scalar?.string, let value = Int(text), value >= 0 else {
            self.problem(keyPath, "must be a whole number of 0 or more, got '\(node.scalar?.string ?? "a non-scalar")'")
            return nil
        }
        return value
    }

    /// `50%` or `50`, from 0 to 100.
    mutating func percent(_ node: Node, at keyPath: String) -> Int? {
        let text = node.scalar?.string ?? ""
        let digits = text.hasSuffix("%") ? String(text.dropLast()) : text
        guard let value = Int(digits), (0...100).contains(value) else {
            self.problem(keyPath, "must be a percentage from 0% to 100%, got '\(text)'")
            return nil
        }
        return value
    }

    mutating func bool(_ node: Node, at keyPath: String) -> Bool? {
        switch node.scalar?.string {
        case "true": return true
        case "false": return false
        default:
            self.problem(keyPath, "must be true or false")
            return nil
        }
    }

    /// A size in bytes: `65536`, `64KiB` or `1MiB` (`K`, `KB`, `M`, `MB` are read as powers of 1024 too).
    mutating func size(_ node: Node, at keyPath: String) -> Int? {
        let text = node.scalar?.string ?? ""
        let units: [(suffix: String, factor: Int)] = [
            ("KiB", 1 << 10), ("MiB", 1 << 20), ("KB", 1 << 10), ("MB", 1 << 20), ("K", 1 << 10), ("M", 1 << 20),
        ]
        let unit = units.first { text.hasSuffix($0.suffix) }
        let digits = text.dropLast(unit?.suffix.count ?? 0)
        let factor = unit?.factor ?? 1
        guard let value = Int(digits), value >= 0, value <= Int(Int32.max) / factor else {
            self.problem(keyPath, "must be a size such as 65536, 64KiB or 1MiB, got '\(text)'")
            return nil
        }
        return value * factor
    }

    mutating func readClient(_ node: Node, at path: String, into settings: inout ClientSettings) {
        self.readBlock(
            node,
            at: path,
            known: "header_timeout, body_timeout, idle_timeout, write_timeout, max_connections, max_request_body,"
                + " max_request_line, max_request_head, max_header_fields"
        ) { reader, key, value, keyPath in
            switch key {
            case "header_timeout":
                if let amount = reader.duration(value, at: keyPath) { settings.headerTimeout = amount }
            case "body_timeout":
                if let amount = reader.duration(value, at: keyPath) { settings.bodyTimeout = amount }
            case "idle_timeout":
                if let amount = reader.duration(value, at: keyPath) { settings.idleTimeout = amount }
            case "write_timeout":
                if let amount = reader.duration(value, at: keyPath) { settings.writeTimeout = amount }
            case "max_connections":
                if let count = reader.positiveInt(value, at: keyPath) { settings.maxConnections = count }
            case "max_request_line":
                if let bytes = reader.size(value, at: keyPath) { settings.requestLimits.requestLineBytes = bytes }
            case "max_request_head":
                if let bytes = reader.size(value, at: keyPath) { settings.requestLimits.headBytes = bytes }
            case "max_header_fields":
                if let count = reader.positiveInt(value, at: keyPath) { settings.requestLimits.fieldCount = count }
            case "max_request_body":
                if value.scalar?.string == "unlimited" {
                    settings.maxRequestBody = nil
                } else if let bytes = reader.size(value, at: keyPath) {
                    settings.maxRequestBody = bytes
                }
            default:
                return false
            }
            return true
        }
        if settings.requestLimits.requestLineBytes < 64 {
            self.problem("\(path).max_request_line", "must be at least 64 bytes")
        } else if settings.requestLimits.headBytes < settings.requestLimits.requestLineBytes {
            self.problem("\(path).max_request_head", "is smaller than max_request_line")
        }
    }

    /// Reads a block of settings key by key: `read` handles one key and returns `false` for a key it does not
    /// know, which is reported with the `known` keys. Returns `false` (reported too) when `node` is no mapping.
    @discardableResult
    mutating func readBlock(
        _ node: Node,
        at path: String,
        known: String,
        mustBe: String = "must be a mapping of settings",
        _ read: (inout Reader, _ key: String, _ value: Node, _ keyPath: String) -> Bool
    ) -> Bool {
        guard let mapping = node.mapping else {
            self.problem(path, mustBe)
            return false
        }
        for (keyNode, value) in mapping {
            let key = keyNode.string ?? "?"
            let keyPath = "\(path).\(key)"
            if !read(&self, key, value, keyPath) {
                self.problem(keyPath, "unknown key (known: \(known))")
            }
        }
        return true
    }

    /// `HOST:PORT`, or `{address: HOST:PORT, weight: N}` for a weighted endpoint.
    mutating func endpoint(_ node: Node, at keyPath: String, weights: inout [HostAndPort: Int]) -> HostAndPort? {
        guard let mapping = node.mapping else { return self.address(node, at: keyPath) }
        var address: HostAndPort?
        var weight = 1
        for (keyNode, value) in mapping {
            let key = keyNode.string ?? "?"
            switch key {
            case "address":
                address = self.address(value, at: "\(keyPath).address")
            case "weight":
                guard let text = value.scalar?.string, let number = Int(text), (1...10_000).contains(number) else {
                    self.problem("\(keyPath).weight", "must be a whole number from 1 to 10000")
                    continue
                }
                weight = number
            default:
                self.problem("\(keyPath).\(key)", "unknown key (known: address, weight)")
            }
        }
        guard let address else {
            self.problem("\(keyPath).address", "missing: give HOST:PORT")
            return nil
        }
        if weight != 1 { weights[address] = weight }
        return address
    }

    mutating func hashKey(_ text: String, at keyPath: String) -> HashKey? {
        guard let key = HashKey(text) else {
            self.problem(keyPath, "bad hash key '\(text)': write header:NAME, cookie:NAME or client-ip")
            return nil
        }
        return key
    }

    mutating func policy(_ text: String?, at keyPath: String) -> LoadBalancingPolicy? {
        guard let text, let policy = LoadBalancingPolicy(rawValue: text) else {
            self.problem(keyPath, "unknown policy '\(text ?? "")' (known: \(LoadBalancingPolicy.knownNames))")
            return nil
        }
        return policy
    }

    mutating func logLevel(_ text: String?, at keyPath: String) -> String? {
        guard let text, HeadwayConfiguration.logLevels.contains(text) else {
            self.problem(
                keyPath,
                "unknown log level '\(text ?? "")' (known: \(HeadwayConfiguration.logLevels.joined(separator: ", ")))"
            )
            return nil
        }
        return text
    }
}
