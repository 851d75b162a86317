import Logging
import NIOCore
import NIOPosix
import Synchronization

/// Keep-alive connections to one endpoint, opened and used on one event loop only.
///
/// The shell around ``UpstreamPool/StateMachine``, which decides; this class opens the connections, takes
/// the reservations that every loop shares, and keeps the metrics. Invariants it adds to the machine's:
/// - `Endpoint.connections` counts this pool's connections that are opening or open, so the sum over all
///   loops never exceeds `max_connections_per_endpoint`;
/// - a connection the upstream closed, or that failed, is never handed out again (it leaves the idle list in
///   ``connectionClosed(_:)`` before any other event can lease it).
///
/// To an h2c upstream the pool leases streams instead: ``HTTP2StateMachine`` decides which connection a
/// stream goes on, and each stream is an ``UpstreamConnection`` that serves one request.
final class UpstreamPool {
    let endpoint: Endpoint
    unowned let cluster: LoopCluster
    private var machine: StateMachine<UpstreamConnection>
    /// Set when the upstream speaks h2c; `machine` is unused then. Driven from `UpstreamPool+HTTP2.swift`.
    var http2: HTTP2StateMachine<HTTP2UpstreamConnection, StreamWaiter>?
    /// Response times of this loop's requests to the endpoint, summed over the loops by the live page.
    private(set) var latency = LatencyHistogram()
    /// This loop's responses from the endpoint, summed over the loops by `/metrics`.
    private(set) var traffic = EndpointTraffic()

    init(endpoint: Endpoint, cluster: LoopCluster) {
        self.endpoint = endpoint
        self.cluster = cluster
        self.machine = StateMachine(minIdle: cluster.configuration.minIdleConnectionsPerEndpoint)
        if cluster.httpProtocol == .h2c {
            self.http2 = HTTP2StateMachine(minIdle: cluster.configuration.minIdleConnectionsPerEndpoint)
        }
    }

    var isEmpty: Bool { self.http2?.isEmpty ?? self.machine.isEmpty }
    var isDraining: Bool { self.http2?.isDraining ?? self.machine.isDraining }

    /// A request waiting for a stream on a connection that is opening.
    struct StreamWaiter {
        let exchange: any UpstreamLessee
        let attempt: Int
    }

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
        if self.http2 != nil {
            return self.leaseStream(for: StreamWaiter(exchange: exchange, attempt: attempt))
        }
        switch self.machine.leaseRequested() {
        case .lease(let connection):
            self.idleConnectionsChanged(by: -1)
            connection.lessee = exchange
            return .leased(connection)
        case .connect:
            let upstream = self.cluster.upstream
            if let upstream {
                let (previous, _) = upstream.pendingRequests.add(1, ordering: .relaxed)
                guard previous < self.cluster.configuration.maxPendingRequests else {
                    upstream.pendingRequests.subtract(1, ordering: .relaxed)
                    self.machine.connectNotStarted(isWarm: false)
                    return .pendingLimitReached
                }
            }
            guard self.endpoint.reserveConnection(limit: self.cluster.configuration.maxConnectionsPerEndpoint) else {
                upstream?.pendingRequests.subtract(1, ordering: .relaxed)
                self.machine.connectNotStarted(isWarm: false)
                return .limitReached
            }
            self.connect(for: (exchange, attempt))
            return .connecting
        }
    }

    /// Records whether the endpoint takes requests, and opens connections until `min_idle_connections_per_endpoint`
    /// are idle or opening if it does. A failed warm connect is not retried here: the loop's sweep calls
    /// ``keepWarm()`` again.
    func routabilityChanged(_ isRoutable: Bool) {
        self.machine.routabilityChanged(isRoutable)
        self.http2?.routabilityChanged(isRoutable)
        self.keepWarm()
    }

    /// A reload changed `min_idle_connections_per_endpoint`: open up to the new count now; extra idle
    /// connections beyond it expire with `keepalive_timeout` as any idle one does.
    func minIdleChanged(to minIdle: Int) {
        self.machine.minIdle = minIdle
        self.http2?.minIdle = minIdle
        self.keepWarm()
    }

    func keepWarm() {
        if self.http2 != nil {
            self.keepHTTP2Warm()
            return
        }
        let wanted = self.machine.warmConnectionsWanted()
        for _ in 0..<wanted {
            if self.endpoint.reserveConnection(limit: self.cluster.configuration.maxConnectionsPerEndpoint) {
                self.connect(for: nil)
            } else {
                self.machine.connectNotStarted(isWarm: true)
            }
        }
    }

    /// Takes a connection back after an exchange. Only a connection whose last exchange ended cleanly
    /// (full request written, full response read, upstream keeps the connection alive) is reused.
    func release(_ connection: UpstreamConnection, reusable: Bool) {
        connection.lessee = nil
        if connection.isStream {
            // A stream serves one request; one that did not end cleanly is reset (its connection stays).
            if !reusable { connection.close() }
            return
        }
        let isReusable = reusable && connection.isReusable && connection.isOpen
        switch self.machine.released(connection, isReusable: isReusable, now: self.cluster.coarseNow) {
        case .keep:
            self.idleConnectionsChanged(by: 1)
        case .close:
            connection.close()
        }
    }

    /// The upstream connection closed (either side); forget it, and replace it if it was keeping the pool warm.
    func connectionClosed(_ connection: UpstreamConnection) {
        if let stream = connection.stream {
            self.streamClosed(on: stream.connection)
            return
        }
        self.endpoint.releaseConnection()
        self.cluster.metrics.connectionClosed()
        if self.machine.closed(connection) {
            self.idleConnectionsChanged(by: -1)
            self.keepWarm()
        }
        if self.machine.isDraining && self.machine.isEmpty {
            // The removed endpoint's last connection on this loop: it may be forgotten now, not a sweep later.
            self.cluster.dropEmptyDrainingPools()
        }
    }

    /// Closes connections that have been idle since before `cutoff`, except the warm ones the pool keeps.
    func closeConnections(idleSince cutoff: NIODeadline) {
        for connection in self.machine.expiredIdleConnections(before: cutoff) {
            connection.close()
        }
        for connection in self.http2?.expiredIdleConnections(before: cutoff) ?? [] {
            connection.close()
        }
    }

    /// Stops handing out connections: idle ones close now, busy ones when they are released.
    func drain() {
        for connection in self.machine.drain() {
            connection.close()
        }
        for connection in self.http2?.drain() ?? [] {
            connection.close()
        }
    }

    /// Takes over what an earlier pool of this loop counted for the endpoint, so that its sums go on from there.
    func carryOver(_ traffic: EndpointTraffic) {
        self.traffic = self.traffic + traffic
    }

    func responseFinished(status: UInt, after duration: TimeAmount) {
        self.latency.record(duration)
        self.traffic.record(status: status, duration: duration)
    }

    /// The endpoint came back into the set while its pool was still draining.
    func revive() {
        self.machine.revived()
        self.http2?.revived()
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
                if waiter != nil {
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
                    self.machine.connectFinished(isWarm: waiter == nil, succeeded: true)
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
        self.machine.connectFinished(isWarm: waiter == nil, succeeded: false)
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
