import NIOCore

/// The whole configuration of one Headway process: the YAML file with the command-line flags laid over it.
///
/// ## Configuration keys
/// - `admin` (`HOST:PORT`, default `127.0.0.1:9901`): the admin endpoint.
/// - `ready_requires_endpoints` (default `true`): `/ready` answers 503 while an upstream has no healthy,
///   non-ejected endpoint; `false` ties the sidecar's readiness to Headway alone.
/// - `threads` (integer, default: number of cores): event loops.
/// - `drain_timeout` (duration, default `10s`): how long SIGTERM waits for in-flight requests.
/// - `shutdown_delay` (duration, default `0s`): after SIGTERM, how long the listeners keep accepting (with
///   `/ready` at 503) before the drain starts; a second SIGTERM, or SIGINT, skips it.
/// - `log_level` (`trace`…`critical`, default `info`).
/// - `access_log` (off): `path` (`stdout`, `stderr` or a file), `format` (`json` or `combined`).
/// - `listeners[]`: `listen` (`HOST:PORT`), `upstream` (the name of an upstream).
/// - `upstreams.NAME`: `endpoints` (list of `HOST:PORT`) or `service` (`NAME:PORT`, resolved by DNS with the
///   `dns` block: `servers`, `resolv_conf`, `refresh` (5s), `respect_ttl` (false), `min_refresh` (1s),
///   `max_refresh` (60s), `family` (auto)), `policy` (default `round-robin`),
///   `connect_timeout` (`1s`), `request_timeout` (`15s`), `idle_timeout` (`60s`), `keepalive_timeout` (`60s`),
///   `max_connections_per_endpoint` (`1024`), `max_pending_requests` (`1024`), `min_idle_connections_per_endpoint`
///   (`1`), `health_check` (off), `gate_new_endpoints` (`true`), `outlier_detection`, `panic_threshold` (`50%`),
///   `max_retries` (`2`), `retry_on`, `retry_budget`, `retry_buffer_limit` (`64KiB`). See README for each.
package struct HeadwayConfiguration: Sendable, Equatable {
    package var admin: HostAndPort
    /// `/ready` needs a healthy endpoint in every upstream.
    package var readyRequiresEndpoints = true
    package var threads: Int
    package var drainTimeout: TimeAmount
    /// After SIGTERM the listeners keep serving new connections this long (readiness already 503), because the
    /// app beside a sidecar gets its SIGTERM at the same moment and often still sends requests.
    package var shutdownDelay: TimeAmount = .zero
    package var logLevel: String
    /// How Headway's own log lines are written.
    package var logFormat: LogFormat = .text
    /// One line per request; `nil`: off.
    package var accessLog: AccessLogSettings?
    /// Limits and timeouts for client connections, on every listener.
    package var client: ClientSettings = .init()
    package var listeners: [Listener]
    /// Upstreams in the order the file lists them; names are unique.
    package var upstreams: [Upstream]

    package struct Listener: Sendable, Equatable {
        package var listen: HostAndPort
        package var upstream: String

        package init(listen: HostAndPort, upstream: String) {
            self.listen = listen
            self.upstream = upstream
        }
    }

    package struct Upstream: Sendable, Equatable {
        package var name: String
        /// Static discovery: the pods' addresses.
        package var endpoints: [HostAndPort]
        /// Weights of static endpoints other than 1.
        package var endpointWeights: [HostAndPort: Int] = [:]
        /// DNS discovery: the headless service's name, resolved continuously; `nil` for static upstreams.
        package var dns: DNSDiscoverySettings?
        package var policy: LoadBalancingPolicy
        /// What Headway speaks to the pods, whatever its clients speak.
        package var httpProtocol: UpstreamProtocol
        /// What the `hash` policy hashes; required by it.
        package var hashKey: HashKey?
        /// How fast the `ewma` policy forgets a slow response.
        package var ewmaDecay: TimeAmount
        /// A newly routable endpoint's share ramps up over this window (any policy but `hash`); `nil`: off.
        package var slowStart: TimeAmount?
        /// Slow start applies to the endpoints present at start-up too.
        package var slowStartAtStartup: Bool
        package var connectTimeout: TimeAmount
        /// From the end of the request to the first byte of the response.
        package var requestTimeout: TimeAmount
        /// Longest silence between two pieces of a response once it has started.
        package var idleTimeout: TimeAmount
        /// Pooled keep-alive connections unused this long are closed.
        package var keepaliveTimeout: TimeAmount
        package var maxConnectionsPerEndpoint: Int
        /// Requests waiting for a connection to open, over all event loops; past it they get 503 at once.
        package var maxPendingRequests: Int
        /// Keep-alive connections kept open to every routable endpoint on each event loop, so that no request
        /// pays for a connect after a scale-up.
        package var minIdleConnectionsPerEndpoint: Int
        /// Active checks; `nil` leaves only the passive ones (``outlierDetection``).
        package var healthCheck: HealthCheckSettings?
        /// A new endpoint takes requests only after its first passing check (when checks are on).
        package var gateNewEndpoints: Bool
        package var outlierDetection: OutlierDetectionSettings
        /// Below this share of endpoints passing their active checks, requests are spread over every endpoint not
        /// ejected (0 turns this off).
        package var panicThresholdPercent: Int
        package var retries: RetrySettings

        package init(
            name: String,
            endpoints: [HostAndPort] = [],
            policy: LoadBalancingPolicy = .roundRobin,
            httpProtocol: UpstreamProtocol = .http1,
            hashKey: HashKey? = nil,
            ewmaDecay: TimeAmount = .seconds(10),
            slowStart: TimeAmount? = nil,
            slowStartAtStartup: Bool = false,
            connectTimeout: TimeAmount = .seconds(1),
            requestTimeout: TimeAmount = .seconds(15),
            idleTimeout: TimeAmount = .seconds(60),
            keepaliveTimeout: TimeAmount = .seconds(60),
            maxConnectionsPerEndpoint: Int = 1024,
            maxPendingRequests: Int = 1024,
            minIdleConnectionsPerEndpoint: Int = 1,
            healthCheck: HealthCheckSettings? = nil,
            gateNewEndpoints: Bool = true,
            outlierDetection: OutlierDetectionSettings = .init(),
            panicThresholdPercent: Int = 50,
            retries: RetrySettings = .init()
        ) {
            self.name = name
            self.endpoints = endpoints
            self.policy = policy
            self.httpProtocol = httpProtocol
            self.hashKey = hashKey
            self.ewmaDecay = ewmaDecay
            self.slowStart = slowStart
            self.slowStartAtStartup = slowStartAtStartup
            self.connectTimeout = connectTimeout
            self.requestTimeout = requestTimeout
            self.idleTimeout = idleTimeout
            self.keepaliveTimeout = keepaliveTimeout
            self.maxConnectionsPerEndpoint = maxConnectionsPerEndpoint
            self.maxPendingRequests = maxPendingRequests
            self.minIdleConnectionsPerEndpoint = minIdleConnectionsPerEndpoint
            self.healthCheck = healthCheck
            self.gateNewEndpoints = gateNewEndpoints
            self.outlierDetection = outlierDetection
            self.panicThresholdPercent = panicThresholdPercent
            self.retries = retries
        }
    }

    package static let defaultListen = HostAndPort(host: "127.0.0.1", port: 15001)
    package static let defaultAdmin = HostAndPort(host: "127.0.0.1", port: 9901)

    package init(
        admin: HostAndPort = Self.defaultAdmin,
        threads: Int = System.coreCount,
        drainTimeout: TimeAmount = .seconds(10),
        logLevel: String = "info",
        listeners: [Listener],
        upstreams: [Upstream]
    ) {
        self.admin = admin
        self.threads = threads
        self.drainTimeout = drainTimeout
        self.logLevel = logLevel
        self.listeners = listeners
        self.upstreams = upstreams
    }

    package func upstream(named name: String) -> Upstream? {
        self.upstreams.first { $0.name == name }
    }

    /// One line for the start-up log: every effective setting, so an operator can see what is running.
    package var summary: String {
        let listeners = self.listeners.map { "\($0.listen)->\($0.upstream)" }.joined(separator: ",")
        let upstreams = self.upstreams.map { upstream in
            let discovery =
                upstream.dns.map { dns in
                    "service=\(dns.name):\(dns.port) dns_servers=[\(dns.servers.map(\.description).joined(separator: ","))]"
                        + " resolv_conf=\(dns.resolvConfPath ?? "system") refresh=\(DurationText.format(dns.refresh))"
                        + " respect_ttl=\(dns.respectTTL) family=\(dns.family.rawValue)"
                } ?? "endpoints=[\(upstream.endpoints.map(\.description).joined(separator: ","))]"
            return "\(upstream.name){\(discovery)"
                + " protocol=\(upstream.httpProtocol.rawValue) policy=\(upstream.policy.rawValue)"
                + (upstream.hashKey.map { " hash_key=\($0)" } ?? "")
                + (upstream.policy == .peakEWMA ? " ewma_decay=\(DurationText.format(upstream.ewmaDecay))" : "")
                + " slow_start=\(upstream.slowStart.map(DurationText.format) ?? "off")"
                + (upstream.slowStart != nil ? " slow_start_at_startup=\(upstream.slowStartAtStartup)" : "")
                + " connect_timeout=\(DurationText.format(upstream.connectTimeout))"
                + " request_timeout=\(DurationText.format(upstream.requestTimeout))"
                + " idle_timeout=\(DurationText.format(upstream.idleTimeout))"
                + " keepalive_timeout=\(DurationText.format(upstream.keepaliveTimeout))"
                + " max_connections_per_endpoint=\(upstream.maxConnectionsPerEndpoint)"
                + " max_pending_requests=\(upstream.maxPendingRequests)"
                + " min_idle_connections_per_endpoint=\(upstream.minIdleConnectionsPerEndpoint)"
                + " health_check=\(upstream.healthCheck.map { "{\($0.summary)}" } ?? "off")"
                + " gate_new_endpoints=\(upstream.gateNewEndpoints)"
                + " outlier_detection={consecutive_5xx=\(upstream.outlierDetection.consecutive5xx)"
                + " consecutive_gateway_failures=\(upstream.outlierDetection.consecutiveGatewayFailures)"
                + " base_ejection_time=\(DurationText.format(upstream.outlierDetection.baseEjectionTime))"
                + " max_ejection_percent=\(upstream.outlierDetection.maxEjectionPercent)}"
                + " panic_threshold=\(upstream.panicThresholdPercent)%"
                + " max_retries=\(upstream.retries.maxRetries)"
                + " per_try_timeout=\(upstream.retries.perTryTimeout.map(DurationText.format) ?? "off")"
                + " retry_on=\(upstream.retries.statuses.sorted())"
                + " retry_budget=\(upstream.retries.budgetPercent)%+\(upstream.retries.budgetMinPerSecond)/s}"
        }.joined(separator: " ")
        return
            "listeners=[\(listeners)] admin=\(self.admin) ready_requires_endpoints=\(self.readyRequiresEndpoints) threads=\(self.threads) client={\(self.client.summary)}"
            + " drain_timeout=\(DurationText.format(self.drainTimeout))"
            + " shutdown_delay=\(DurationText.format(self.shutdownDelay)) log_level=\(self.logLevel) log_format=\(self.logFormat.rawValue)"
            + " access_log=\(self.accessLog?.summary ?? "off") upstreams: \(upstreams)"
    }
}

/// An upstream's `protocol`: HTTP/1.1 keep-alive connections, one request at a time on each, or HTTP/2 with
/// prior knowledge (h2c), many streams on each connection, as gRPC servers speak it.
package enum UpstreamProtocol: String, Sendable, CaseIterable {
    case http1
    case h2c
}

/// `log_format`: `text` (swift-log's standard lines) or `json` (one object per line, for log pipelines).
package enum LogFormat: String, Sendable, CaseIterable {
    case text
    case json
}
