import Logging
import NIOCore
import NIOPosix
import Synchronization

/// Keep-alive connections to one endpoint, opened and used on one event loop only.
///
/// Invariants:
/// - every connection in `idle` is open and has no lessee;
/// - `Endpoint.connections` counts this pool's connections that are opening or open, so the sum over all
///   loops never exceeds `max_connections_per_endpoint`;
/// - a connection the upstream closed, or that failed, is never handed out again (it leaves `idle` in
///   ``connectionClosed(_:)`` before any other event can lease it);
/// - while the endpoint is routable, `min_idle_connections_per_endpoint` connections are idle or opening
///   (warm), so that a request after a scale-up or a lull does not pay for a connect.
final class UpstreamPool {
    let endpoint: Endpoint
    unowned let cluster: LoopCluster
    /// Set when the endpoint left the set or the proxy shuts down: no new connection, released ones close.
    var isDraining = false
    /// Healthy and not ejected: the pool keeps connections warm only then.
    var isRoutable = false

    /// Idle connections, most recently used last: leasing from the end keeps the warmest connection busy
    /// and lets the others reach the idle timeout.
    private var idle: [UpstreamConnection] = []
    /// Connections of this pool that are opening or open.
    private var ownedConnections = 0
    /// Warm connections being opened (no request waits for them).
    private var warming = 0

    init(endpoint: Endpoint, cluster: LoopCluster) {
        self.endpoint = endpoint
        self.cluster = cluster
    }

    var isEmpty: Bool { self.ownedConnections == 0 }

    enum LeaseResult {
        /// An idle keep-alive connection, now leased to the caller.
        case leased(UpstreamConnection)
        /// A new connection is being opened; the caller hears of it through `connectionReady` or `connectFailed`.
        case connecting
        /// `max_connections_per_endpoint` connections are already open or opening.
        case limitReached
        /// `max_pending_requests` requests of the upstream already wait for a connection.
        case pendingLimitReached
    }

    /// Leases an idle connection, or starts opening one for `exchange` (identified by `attempt`).
    func lease(for exchange: any UpstreamLessee, attempt: Int) -> LeaseResult {
        if let connection = self.idle.popLast() {
            self.idleConnectionsChanged(by: -1)
            connection.lessee = exchange
            return .leased(connection)
        }
        let upstream = self.cluster.upstream
        if let upstream {
            let (previous, _) = upstream.pendingRequests.add(1, ordering: .relaxed)
            guard previous < self.cluster.configuration.maxPendingRequests else {
                upstream.pendingRequests.subtract(1, ordering: .relaxed)
                return .pendingLimitReached
            }
        }
        let limit = self.cluster.configuration.maxConnectionsPerEndpoint
        guard self.endpoint.reserveConnection(limit: limit) else {
            upstream?.pendingRequests.subtract(1, ordering: .relaxed)
            return .limitReached
        }
        self.ownedConnections += 1
        self.connect(for: (exchange, attempt))
        return .connecting
    }

    /// Opens connections until `min_idle_connections_per_endpoint` are idle or opening, if the endpoint is
    /// routable. A failed warm connect is not retried here: the loop's sweep calls this again.
    func keepWarm() {
        guard self.isRoutable, !self.isDraining else { return }
        let wanted = self.cluster.configuration.minIdleConnectionsPerEndpoint - self.idle.count - self.warming
        guard wanted > 0 else { return }
        for _ in 0..<wanted {
            guard self.endpoint.reserveConnection(limit: self.cluster.configuration.maxConnectionsPerEndpoint) else {
                return
            }
            self.ownedConnections += 1
            self.warming += 1
            self.connect(for: nil)
        }
    }

    /// Takes a connection back after an exchange. Only a connection whose last exchange ended cleanly
    /// (full request written, full response read, upstream keeps the connection alive) is reused.
    func release(_ connection: UpstreamConnection, reusable: Bool) {
        connection.lessee = nil
        if reusable, connection.isReusable, connection.isOpen, !self.isDraining {
            connection.idleSince = .now()
            self.idle.append(connection)
            self.idleConnectionsChanged(by: 1)
        } else {
            connection.close()
        }
    }

    /// The upstream connection closed (either side); forget it, and replace it if it was keeping the pool warm.
    func connectionClosed(_ connection: UpstreamConnection) {
        self.ownedConnections -= 1
        self.endpoint.releaseConnection()
        self.cluster.metrics.connectionClosed()
        if let index = self.idle.firstIndex(where: { $0 === connection }) {
            self.idle.remove(at: index)
            self.idleConnectionsChanged(by: -1)
            self.keepWarm()
        }
        if self.isDraining && self.isEmpty {
            // The removed endpoint's last connection on this loop: it may be forgotten now, not a sweep later.
            self.cluster.dropEmptyDrainingPools()
        }
    }

    /// Closes connections that have been idle since before `cutoff`, except the warm ones the pool keeps.
    func closeConnections(idleSince cutoff: NIODeadline) {
        let keep = self.isRoutable ? self.cluster.configuration.minIdleConnectionsPerEndpoint : 0
        // `idle` is ordered by last use: the oldest come first.
        for connection in self.idle.dropLast(keep) where connection.idleSince < cutoff {
            connection.close()
        }
    }

    /// Stops handing out connections: idle ones close now, busy ones when they are released.
    func drain() {
        self.isDraining = true
        for connection in self.idle { connection.close() }
    }

    private func idleConnectionsChanged(by delta: Int) {
        self.endpoint.idleConnectionsChanged(by: delta)
        self.cluster.metrics.idleConnectionsChanged(by: delta)
    }

    /// Opens a connection for `waiter` (an exchange and its attempt), or a warm one for the pool when `nil`.
    private func connect(for waiter: (exchange: any UpstreamLessee, attempt: Int)?) {
        let endpoint = self.endpoint
        let logger = self.cluster.logger
        ClientBootstrap(group: self.cluster.eventLoop)
            .connectTimeout(self.cluster.configuration.connectTimeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    // No HTTP codec: requests go out as bytes Headway framed, responses are parsed by
                    // the connection's own ResponseParser.
                    try channel.pipeline.syncOperations.addHandler(
                        UpstreamConnection(endpoint: endpoint, logger: logger)
                    )
                }
            }
            .connect(to: endpoint.address)
            .assumeIsolated()
            .whenComplete { result in
                if waiter == nil {
                    self.warming -= 1
                } else {
                    self.cluster.upstream?.pendingRequests.subtract(1, ordering: .relaxed)
                }
                switch result {
                case .success(let channel):
                    guard let connection = try? channel.pipeline.syncOperations.handler(type: UpstreamConnection.self),
                        connection.isOpen
                    else {
                        channel.close(promise: nil)
                        self.connectFailed(waiter: waiter, error: ProxyError.upstreamClosedEarly)
                        return
                    }
                    connection.pool = self
                    endpoint.metrics.connectionOpened()
                    self.cluster.metrics.connectionOpened()
                    logger.debug("upstream connection opened", metadata: ["endpoint.address": "\(endpoint.label)"])
                    guard let (exchange, attempt) = waiter else {
                        self.release(connection, reusable: true)
                        return
                    }
                    connection.lessee = exchange
                    if !exchange.connectionReady(connection, attempt: attempt) {
                        // The client went away while we were connecting: keep the fresh connection for the next one.
                        self.release(connection, reusable: true)
                    }
                case .failure(let error):
                    self.connectFailed(waiter: waiter, error: error)
                }
            }
    }

    private func connectFailed(waiter: (exchange: any UpstreamLessee, attempt: Int)?, error: any Error) {
        self.ownedConnections -= 1
        self.endpoint.releaseConnection()
        self.endpoint.recordFailure()
        self.endpoint.metrics.connectFailed()
        if let (exchange, attempt) = waiter {
            exchange.connectFailed(pool: self, attempt: attempt, error: error)
        } else {
            // No request waited; health checks and real requests judge the endpoint, the sweep tries again.
            self.cluster.logger.debug(
                "warm connection to endpoint failed",
                metadata: ["endpoint.address": "\(self.endpoint.label)", "error": "\(error)"]
            )
        }
    }
}
