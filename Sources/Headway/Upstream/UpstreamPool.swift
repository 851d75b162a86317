import Logging
import NIOCore
import NIOPosix

/// Keep-alive connections to one endpoint, opened and used on one event loop only.
///
/// Invariants:
/// - every connection in `idle` is open and has no lessee;
/// - `Endpoint.connections` counts this pool's connections that are opening or open, so the sum over all
///   loops never exceeds `max_connections_per_endpoint`;
/// - a connection the upstream closed, or that failed, is never handed out again (it leaves `idle` in
///   ``connectionClosed(_:)`` before any other event can lease it).
final class UpstreamPool {
    let endpoint: Endpoint
    unowned let cluster: LoopCluster
    /// Set when the endpoint left the set or the proxy shuts down: no new connection, released ones close.
    var isDraining = false

    /// Idle connections, most recently used last: leasing from the end keeps the warmest connection busy
    /// and lets the others reach the idle timeout.
    private var idle: [UpstreamConnection] = []
    /// Connections of this pool that are opening or open.
    private var ownedConnections = 0

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
    }

    /// Leases an idle connection, or starts opening one for `exchange` (identified by `attempt`).
    func lease(for exchange: DownstreamHandler, attempt: Int) -> LeaseResult {
        if let connection = self.idle.popLast() {
            self.idleConnectionsChanged(by: -1)
            connection.lessee = exchange
            return .leased(connection)
        }
        let limit = self.cluster.configuration.maxConnectionsPerEndpoint
        guard self.endpoint.reserveConnection(limit: limit) else {
            return .limitReached
        }
        self.ownedConnections += 1
        self.connect(for: exchange, attempt: attempt)
        return .connecting
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

    /// The upstream connection closed (either side); forget it.
    func connectionClosed(_ connection: UpstreamConnection) {
        self.ownedConnections -= 1
        self.endpoint.releaseConnection()
        self.cluster.metrics.connectionClosed()
        if let index = self.idle.firstIndex(where: { $0 === connection }) {
            self.idle.remove(at: index)
            self.idleConnectionsChanged(by: -1)
        }
    }

    /// Closes connections that have been idle since before `cutoff`.
    func closeConnections(idleSince cutoff: NIODeadline) {
        for connection in self.idle where connection.idleSince < cutoff {
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

    private func connect(for exchange: DownstreamHandler, attempt: Int) {
        let endpoint = self.endpoint
        let logger = self.cluster.logger
        ClientBootstrap(group: self.cluster.eventLoop)
            .connectTimeout(self.cluster.configuration.connectTimeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    // No HTTP codec: requests go out as bytes Headway framed, responses are parsed by
                    // the connection's own ResponseParser.
                    try channel.pipeline.syncOperations.addHandler(UpstreamConnection(endpoint: endpoint, logger: logger))
                }
            }
            .connect(to: endpoint.address)
            .assumeIsolated()
            .whenComplete { result in
                switch result {
                case .success(let channel):
                    guard let connection = try? channel.pipeline.syncOperations.handler(type: UpstreamConnection.self),
                        connection.isOpen
                    else {
                        channel.close(promise: nil)
                        self.connectFailed(exchange: exchange, attempt: attempt, error: ProxyError.upstreamClosedEarly)
                        return
                    }
                    connection.pool = self
                    endpoint.metrics.connectionOpened()
                    self.cluster.metrics.connectionOpened()
                    logger.debug("upstream connection opened", metadata: ["endpoint.address": "\(endpoint.label)"])
                    connection.lessee = exchange
                    if !exchange.connectionReady(connection, attempt: attempt) {
                        // The client went away while we were connecting: keep the fresh connection for the next one.
                        self.release(connection, reusable: true)
                    }
                case .failure(let error):
                    self.connectFailed(exchange: exchange, attempt: attempt, error: error)
                }
            }
    }

    private func connectFailed(exchange: DownstreamHandler, attempt: Int, error: any Error) {
        self.ownedConnections -= 1
        self.endpoint.releaseConnection()
        self.endpoint.recordFailure()
        self.endpoint.metrics.connectFailed()
        exchange.connectFailed(pool: self, attempt: attempt, error: error)
    }
}
