import NIOCore
import Yams

// Every scalar key of the configuration, block by block: its name in the file, the flag that overrides it,
// its help line and how it is read. The walker (`ConfigurationReader`) and the flags
// (`HeadwayConfiguration.load`) both read through these tables; a new key is one line here and, if it has a
// flag, one `@Option` in the executable. Keys that hold structure (lists of endpoints, nested blocks) are
// read by the walker itself.

extension HeadwayConfiguration {
    static let settings: [Setting<HeadwayConfiguration>] = [
        .init("admin", flag: "--admin", help: "Admin endpoint address (default 127.0.0.1:9901).") {
            reader,
            value,
            keyPath,
            configuration in
            if let address = reader.address(value, at: keyPath, bindable: true) { configuration.admin = address }
        },
        .bool(
            "ready_requires_endpoints",
            \.readyRequiresEndpoints,
            help: "/ready is 503 while an upstream has no healthy endpoint (default true)."
        ),
        .positiveInt("threads", flag: "--threads", \.threads, help: "Event loops (default: number of cores)."),
        .duration(
            "drain_timeout",
            flag: "--drain-timeout",
            \.drainTimeout,
            help: "How long SIGTERM waits for in-flight requests, e.g. 10s."
        ),
        .duration(
            "shutdown_delay",
            flag: "--shutdown-delay",
            \.shutdownDelay,
            allowsZero: true,
            help: "After SIGTERM, keep accepting this long with /ready at 503 before draining, e.g. 5s."
        ),
        .init("log_level", flag: "--log-level", help: "trace, debug, info, notice, warning, error or critical.") {
            reader,
            value,
            keyPath,
            configuration in
            if let level = reader.logLevel(value.string, at: keyPath) { configuration.logLevel = level }
        },
        .choice(
            "log_format",
            flag: "--log-format",
            \.logFormat,
            help: "text, or json: one object per line with level, time, message and metadata."
        ),
    ]
}

extension AccessLogSettings {
    static let settings: [Setting<Self>] = [
        .init("path", flag: "--access-log", help: "Access log: stdout, stderr or a file's path (off unless given).") {
            reader,
            value,
            keyPath,
            settings in
            guard let path = value.scalar?.string, !path.isEmpty else {
                reader.problem(keyPath, "must be stdout, stderr or a file's path")
                return
            }
            settings.path = path
        },
        .choice(
            "format",
            flag: "--access-log-format",
            \.format,
            help: "Access log lines: json (default) or combined (Apache's, then Headway's fields)."
        ),
    ]
}

extension HeadwayConfiguration.Upstream {
    static let settings: [Setting<Self>] = [
        .init(
            "policy",
            flag: "--policy",
            help: "Balancing policy: round-robin, random, least-connections, p2c, ewma or hash."
        ) { reader, value, keyPath, upstream in
            if let policy = reader.policy(value.string, at: keyPath) { upstream.policy = policy }
        },
        .init(
            "hash_key",
            flag: "--hash-key",
            help: "What the hash policy hashes: header:NAME, cookie:NAME or client-ip."
        ) {
            reader,
            value,
            keyPath,
            upstream in
            if let key = reader.hashKey(value.scalar?.string ?? "", at: keyPath) { upstream.hashKey = key }
        },
        .choice(
            "protocol",
            flag: "--upstream-protocol",
            \.httpProtocol,
            help: "What Headway speaks to the pods: http1 (default) or h2c (HTTP/2 without TLS, for gRPC)."
        ),
        .duration("ewma_decay", \.ewmaDecay, help: "How fast the ewma policy forgets a slow response (default 10s)."),
        .optionalDuration(
            "slow_start",
            flag: "--slow-start",
            \.slowStart,
            help: "Ramp a new endpoint's share up over this window, e.g. 30s."
        ),
        .bool("slow_start_at_startup", \.slowStartAtStartup, help: "Slow start for the endpoints at start-up too."),
        .duration("connect_timeout", flag: "--connect-timeout", \.connectTimeout, help: "Connect timeout, e.g. 1s."),
        .duration(
            "request_timeout",
            flag: "--request-timeout",
            \.requestTimeout,
            help: "Time to wait for the first response byte, e.g. 15s."
        ),
        .duration(
            "idle_timeout",
            flag: "--idle-timeout",
            \.idleTimeout,
            help: "Longest silence between two pieces of a response, e.g. 60s."
        ),
        .duration(
            "keepalive_timeout",
            flag: "--keepalive-timeout",
            \.keepaliveTimeout,
            help: "Close pooled upstream connections unused this long, e.g. 60s."
        ),
        .positiveInt(
            "max_connections_per_endpoint",
            flag: "--max-connections-per-endpoint",
            \.maxConnectionsPerEndpoint,
            help: "Most connections to one endpoint, over all event loops."
        ),
        .positiveInt(
            "max_pending_requests",
            \.maxPendingRequests,
            help: "Requests that may wait for a connection to open, over all event loops."
        ),
        .nonNegativeInt(
            "min_idle_connections_per_endpoint",
            \.minIdleConnectionsPerEndpoint,
            help: "Warm connections kept to every routable endpoint on each event loop."
        ),
        .bool(
            "gate_new_endpoints",
            \.gateNewEndpoints,
            help: "A new endpoint waits for its first passing check (when checks are on)."
        ),
        .percent(
            "panic_threshold",
            \.panicThresholdPercent,
            help: "Below this share of endpoints passing their checks, spread requests over all not ejected."
        ),
        .nonNegativeInt(
            "max_retries",
            flag: "--max-retries",
            \.retries.maxRetries,
            help: "Tries on other endpoints after a failed one (default 2)."
        ),
        .optionalDuration(
            "per_try_timeout",
            flag: "--per-try-timeout",
            \.retries.perTryTimeout,
            help: "Retry an idempotent request elsewhere when an attempt has no response head this long, e.g. 1s."
        ),
        .init("retry_on", help: "Statuses to retry: [503, gateway-error, 5xx].") { reader, value, keyPath, upstream in
            if let statuses = reader.retryOn(value, at: keyPath) { upstream.retries.statuses = statuses }
        },
        .size(
            "retry_buffer_limit",
            \.retries.bufferLimit,
            help: "Request bodies up to this size are kept for a replay (default 64KiB)."
        ),
    ]
}

extension DNSDiscoverySettings {
    static let settings: [Setting<Self>] = [
        .init(
            "servers",
            flag: "--dns-server",
            help: "DNS server IPv4:PORT to ask instead of the system's (repeatable).",
            takesList: true
        ) {
            reader,
            value,
            keyPath,
            settings in
            guard let list = value.sequence else {
                reader.problem(keyPath, "must be a list of IPv4:PORT")
                return
            }
            settings.servers = list.enumerated().compactMap { index, item in
                item.scalar.flatMap { reader.dnsServer(text: $0.string, at: "\(keyPath)[\(index)]") }
            }
        },
        .init(
            "resolv_conf",
            flag: "--resolv-conf",
            help: "resolv.conf-style file whose servers, search list and ndots replace the system's."
        ) { reader, value, keyPath, settings in
            if let text = value.scalar?.string { reader.resolvConf(path: text, at: keyPath, into: &settings) }
        },
        .duration("refresh", flag: "--refresh", \.refresh, help: "How often to resolve the service, e.g. 5s."),
        .bool(
            "respect_ttl",
            flag: "--respect-ttl",
            \.respectTTL,
            help: "Resolve again when the answer's TTL expires (clamped to min/max_refresh)."
        ),
        .duration("min_refresh", \.minRefresh, help: "The shortest TTL-driven refresh (default 1s)."),
        .duration("max_refresh", \.maxRefresh, help: "The longest TTL-driven refresh (default 60s)."),
        .choice("family", \.family, help: "auto, ipv4 or ipv6."),
    ]
}

extension HealthCheckSettings {
    static let settings: [Setting<Self>] = [
        .choice("type", \.kind, help: "http, tcp or grpc (grpc.health.v1.Health/Check over h2c)."),
        .init("service", help: "The service a grpc check asks about (default \"\": the whole server).") {
            reader,
            value,
            keyPath,
            settings in
            if let text = value.scalar?.string, text.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) {
                settings.service = text
            } else {
                reader.problem(keyPath, "must be a gRPC service name, such as my.package.Service")
            }
        },
        .init(
            "path",
            flag: "--health-path",
            help: "Turn on active HTTP health checks of every endpoint at this path, e.g. /healthz."
        ) { reader, value, keyPath, settings in
            if let path = reader.healthPath(value.scalar?.string ?? "", at: keyPath) { settings.path = path }
        },
        .init("host", help: "Host header of the checks (default: the endpoint's address).") {
            reader,
            value,
            keyPath,
            settings in
            if let text = value.scalar?.string, !text.isEmpty, text.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) {
                settings.host = text
            } else {
                reader.problem(keyPath, "must be a host name for the check's Host header")
            }
        },
        .duration(
            "interval",
            flag: "--health-interval",
            \.interval,
            help: "Time between two health checks of an endpoint (default 2s)."
        ),
        .duration("timeout", flag: "--health-timeout", \.timeout, help: "Time a health check may take (default 1s)."),
        .positiveInt(
            "healthy_threshold",
            flag: "--healthy-threshold",
            \.healthyThreshold,
            help: "Passing checks in a row that put an endpoint (back) in rotation (default 2)."
        ),
        .positiveInt(
            "unhealthy_threshold",
            flag: "--unhealthy-threshold",
            \.unhealthyThreshold,
            help: "Failing checks in a row that take an endpoint out of rotation (default 3)."
        ),
        .init("expected_statuses", help: "Statuses that pass: [200-399].") { reader, value, keyPath, settings in
            if let ranges = reader.statusRanges(value, at: keyPath) { settings.expectedStatuses = ranges }
        },
        .percent("jitter", \.jitterPercent, help: "Each interval varies by up to this share (default 10%)."),
    ]
}

extension OutlierDetectionSettings {
    static let settings: [Setting<Self>] = [
        .nonNegativeInt("consecutive_5xx", \.consecutive5xx, help: "5xx answers in a row that eject (0: off)."),
        .nonNegativeInt(
            "consecutive_gateway_failures",
            \.consecutiveGatewayFailures,
            help: "Connect failures, resets and timeouts in a row that eject (0: off)."
        ),
        .duration("base_ejection_time", \.baseEjectionTime, help: "The first ejection's length (default 30s)."),
        .duration("max_ejection_time", \.maxEjectionTime, help: "The longest ejection (default 300s)."),
        .percent("max_ejection_percent", \.maxEjectionPercent, help: "Most endpoints ejected at once (default 50%)."),
    ]
}

extension RetrySettings {
    /// The `retry_budget` block.
    static let budgetSettings: [Setting<Self>] = [
        .percent("percent", \.budgetPercent, help: "Retries as a share of the last 10 s of requests (default 20%)."),
        .nonNegativeInt(
            "min_per_second",
            \.budgetMinPerSecond,
            help: "Retries allowed per second on top (default 10)."
        ),
    ]
}

extension ClientSettings {
    static let settings: [Setting<Self>] = [
        .duration("header_timeout", \.headerTimeout, help: "A request head must be complete within this (408)."),
        .duration("body_timeout", \.bodyTimeout, help: "Longest silence within a request body (408)."),
        .duration("idle_timeout", \.idleTimeout, help: "A quiet keep-alive client connection closes after this."),
        .duration("write_timeout", \.writeTimeout, help: "A client taking no response byte this long is cut off."),
        .positiveInt("max_connections", \.maxConnections, help: "Client connections per listener (503 past it)."),
        .positiveInt(
            "max_concurrent_streams",
            \.maxConcurrentStreams,
            help: "HTTP/2 streams open at once on one client connection (default 100)."
        ),
        .init("max_request_body", help: "Largest request body (413), or unlimited.") {
            reader,
            value,
            keyPath,
            settings in
            if value.scalar?.string == "unlimited" {
                settings.maxRequestBody = nil
            } else if let bytes = reader.size(value, at: keyPath) {
                settings.maxRequestBody = bytes
            }
        },
        .size("max_request_line", \.requestLimits.requestLineBytes, help: "Longest request line (414)."),
        .size("max_request_head", \.requestLimits.headBytes, help: "Largest request head (431)."),
        .positiveInt("max_header_fields", \.requestLimits.fieldCount, help: "Most header fields (431)."),
    ]
}

extension HeadwayConfiguration {
    /// The help line of `flag`, from its setting, for the command line.
    package static func help(forFlag flag: String) -> String {
        let lines =
            Self.settings.map { ($0.flag, $0.help) } + AccessLogSettings.settings.map { ($0.flag, $0.help) }
            + Upstream.settings.map { ($0.flag, $0.help) }
            + DNSDiscoverySettings.settings.map { ($0.flag, $0.help) }
            + HealthCheckSettings.settings.map { ($0.flag, $0.help) }
        guard let line = lines.first(where: { $0.0 == flag }) else {
            preconditionFailure("\(flag) is not in the settings tables")
        }
        return line.1
    }

    /// Every flag the settings tables declare, for a test that the executable offers each of them.
    package static var flags: [String] {
        Self.settings.compactMap(\.flag) + AccessLogSettings.settings.compactMap(\.flag)
            + ConfigurationReader.singleUpstreamFlags
    }
}
