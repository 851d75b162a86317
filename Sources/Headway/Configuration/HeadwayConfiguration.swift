import NIOCore

/// The whole configuration of one Headway process: the YAML file with the command-line flags laid over it.
///
/// ## Configuration keys
/// - `admin` (`HOST:PORT`, default `127.0.0.1:9901`): the admin endpoint.
/// - `threads` (integer, default: number of cores): event loops.
/// - `drain_timeout` (duration, default `10s`): how long SIGTERM waits for in-flight requests.
/// - `log_level` (`trace`…`critical`, default `info`).
/// - `listeners[]`: `listen` (`HOST:PORT`), `upstream` (the name of an upstream).
/// - `upstreams.NAME`: `endpoints` (list of `HOST:PORT`) or `service` (`NAME:PORT`, resolved by DNS with the
///   `dns` block: `servers`, `resolv_conf`, `refresh` (5s), `respect_ttl` (false), `min_refresh` (1s),
///   `max_refresh` (60s), `family` (auto)), `policy` (default `round-robin`),
///   `connect_timeout` (default `1s`), `request_timeout` (default `15s`), `idle_timeout` (default `60s`),
///   `max_connections_per_endpoint` (default `1024`).
public struct HeadwayConfiguration: Sendable, Equatable {
    public var admin: HostAndPort
    public var threads: Int
    public var drainTimeout: TimeAmount
    public var logLevel: String
    public var listeners: [Listener]
    /// Upstreams in the order the file lists them; names are unique.
    public var upstreams: [Upstream]

    public struct Listener: Sendable, Equatable {
        public var listen: HostAndPort
        public var upstream: String

        public init(listen: HostAndPort, upstream: String) {
            self.listen = listen
            self.upstream = upstream
        }
    }

    public struct Upstream: Sendable, Equatable {
        public var name: String
        /// Static discovery: the pods' addresses.
        public var endpoints: [HostAndPort]
        /// DNS discovery: the headless service's name, resolved continuously; `nil` for static upstreams.
        public var dns: DNSDiscoverySettings?
        public var policy: LoadBalancingPolicy
        public var connectTimeout: TimeAmount
        public var requestTimeout: TimeAmount
        public var idleTimeout: TimeAmount
        public var maxConnectionsPerEndpoint: Int

        public init(
            name: String,
            endpoints: [HostAndPort] = [],
            policy: LoadBalancingPolicy = .roundRobin,
            connectTimeout: TimeAmount = .seconds(1),
            requestTimeout: TimeAmount = .seconds(15),
            idleTimeout: TimeAmount = .seconds(60),
            maxConnectionsPerEndpoint: Int = 1024
        ) {
            self.name = name
            self.endpoints = endpoints
            self.policy = policy
            self.connectTimeout = connectTimeout
            self.requestTimeout = requestTimeout
            self.idleTimeout = idleTimeout
            self.maxConnectionsPerEndpoint = maxConnectionsPerEndpoint
        }
    }

    public static let defaultListen = HostAndPort(host: "127.0.0.1", port: 15001)
    public static let defaultAdmin = HostAndPort(host: "127.0.0.1", port: 9901)

    public init(
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

    public func upstream(named name: String) -> Upstream? {
        self.upstreams.first { $0.name == name }
    }

    /// One line for the start-up log: every effective setting, so an operator can see what is running.
    public var summary: String {
        let listeners = self.listeners.map { "\($0.listen)->\($0.upstream)" }.joined(separator: ",")
        let upstreams = self.upstreams.map { upstream in
            let discovery = upstream.dns.map { dns in
                "service=\(dns.name):\(dns.port) dns_servers=[\(dns.servers.map(\.description).joined(separator: ","))]"
                    + " resolv_conf=\(dns.resolvConfPath ?? "system") refresh=\(DurationText.format(dns.refresh))"
                    + " respect_ttl=\(dns.respectTTL) family=\(dns.family.rawValue)"
            } ?? "endpoints=[\(upstream.endpoints.map(\.description).joined(separator: ","))]"
            return "\(upstream.name){\(discovery)"
                + " policy=\(upstream.policy.rawValue)"
                + " connect_timeout=\(DurationText.format(upstream.connectTimeout))"
                + " request_timeout=\(DurationText.format(upstream.requestTimeout))"
                + " idle_timeout=\(DurationText.format(upstream.idleTimeout))"
                + " max_connections_per_endpoint=\(upstream.maxConnectionsPerEndpoint)}"
        }.joined(separator: " ")
        return "listeners=[\(listeners)] admin=\(self.admin) threads=\(self.threads)"
            + " drain_timeout=\(DurationText.format(self.drainTimeout)) log_level=\(self.logLevel) upstreams: \(upstreams)"
    }
}
