import Logging
import NIOCore
import Synchronization

/// The pool's shell around ``UpstreamPool/HTTP2StateMachine`` for an h2c upstream: it opens the connections
/// and the streams the machine decides on, and hands each stream to its request as a connection of its own.
///
/// `max_connections_per_endpoint` counts connections, as for HTTP/1; `max_pending_requests` counts the
/// requests that wait for a connection to open.
extension UpstreamPool {
    func leaseStream(for waiter: StreamWaiter) -> LeaseResult {
        let upstream = self.cluster.upstream
        let waits = !self.http2!.hasRoom
        if waits, let upstream {
            let (previous, _) = upstream.pendingRequests.add(1, ordering: .relaxed)
            guard previous < self.cluster.configuration.maxPendingRequests else {
                upstream.pendingRequests.subtract(1, ordering: .relaxed)
                return .pendingLimitReached
            }
        }
        switch self.http2!.streamRequested(by: waiter) {
        case .open(let connection):
            self.openStream(on: connection, for: waiter)
        case .wait:
            break
        case .connect:
            guard self.endpoint.reserveConnection(limit: self.cluster.configuration.maxConnectionsPerEndpoint) else {
                if waits { upstream?.pendingRequests.subtract(1, ordering: .relaxed) }
                self.failWaiters(self.http2!.connectNotStarted(isWarm: false))
                return .limitReached
            }
            self.connectHTTP2(isWarm: false)
        }
        return .connecting
    }

    func keepHTTP2Warm() {
        let wanted = self.http2!.warmConnectionsWanted()
        for _ in 0..<wanted {
            if self.endpoint.reserveConnection(limit: self.cluster.configuration.maxConnectionsPerEndpoint) {
                self.connectHTTP2(isWarm: true)
            } else {
                self.failWaiters(self.http2!.connectNotStarted(isWarm: true))
            }
        }
    }

    /// The pod's SETTINGS changed its stream limit.
    func streamLimitChanged(_ limit: Int, on connection: HTTP2UpstreamConnection) {
        self.startWaiters(self.http2?.streamLimitChanged(limit, on: connection) ?? [], on: connection)
    }

    /// The pod sent GOAWAY: the connection takes no new stream and closes after its last; a warm one replaces it.
    func goAwayReceived(on connection: HTTP2UpstreamConnection) {
        if self.http2?.goAwayReceived(on: connection) == true {
            connection.close()
        }
        self.keepWarm()
    }

    func streamClosed(on connection: HTTP2UpstreamConnection) {
        switch self.http2?.streamClosed(on: connection, now: self.cluster.coarseNow) {
        case .close(let drained):
            drained.close()
        case .startWaiters(let waiters):
            self.startWaiters(waiters, on: connection)
        case nil:
            break
        }
    }

    func http2ConnectionClosed(_ connection: HTTP2UpstreamConnection) {
        self.endpoint.releaseConnection()
        self.cluster.metrics.connectionClosed()
        self.http2?.closed(connection)
        self.keepWarm()
        if self.isDraining && self.isEmpty {
            self.cluster.dropEmptyDrainingPools()
        }
    }

    private func startWaiters(_ waiters: [StreamWaiter], on connection: HTTP2UpstreamConnection) {
        for waiter in waiters {
            self.cluster.upstream?.pendingRequests.subtract(1, ordering: .relaxed)
            self.openStream(on: connection, for: waiter)
        }
    }

    private func failWaiters(_ waiters: [StreamWaiter], error: any Error = ProxyError.upstreamClosedEarly) {
        for waiter in waiters {
            self.cluster.upstream?.pendingRequests.subtract(1, ordering: .relaxed)
            waiter.exchange.connectFailed(pool: self, attempt: waiter.attempt, error: error)
        }
    }

    /// Opens the waiter's stream (already counted by the machine) and hands it over as its connection.
    private func openStream(on connection: HTTP2UpstreamConnection, for waiter: StreamWaiter) {
        guard let stream = connection.makeStream() else {
            self.streamClosed(on: connection)
            waiter.exchange.connectFailed(pool: self, attempt: waiter.attempt, error: ProxyError.upstreamClosedEarly)
            return
        }
        let upstream = UpstreamConnection(endpoint: self.endpoint, logger: self.cluster.logger, stream: stream)
        stream.user = upstream
        upstream.pool = self
        upstream.lessee = waiter.exchange
        if !waiter.exchange.connectionReady(upstream, attempt: waiter.attempt) {
            // The request went away meanwhile; the stream sent nothing and closes quietly.
            upstream.lessee = nil
            upstream.close()
        }
    }

    private func connectHTTP2(isWarm: Bool) {
        let endpoint = self.endpoint
        let logger = self.cluster.logger
        HTTP2UpstreamConnection.connect(
            to: endpoint,
            on: self.cluster.eventLoop,
            timeout: self.cluster.configuration.connectTimeout,
            logger: logger
        ) { result in
            switch result {
            case .success(let connection):
                connection.pool = self
                endpoint.metrics.connectionOpened()
                self.cluster.metrics.connectionOpened()
                logger.debug(
                    "upstream HTTP/2 connection opened",
                    metadata: ["endpoint.address": "\(endpoint.label)", "warm": "\(isWarm)"]
                )
                self.startWaiters(self.http2!.connected(connection, now: self.cluster.coarseNow), on: connection)
            case .failure(let error):
                self.http2ConnectFailed(error: error)
            }
        }
    }

    private func http2ConnectFailed(error: any Error) {
        self.endpoint.releaseConnection()
        self.endpoint.recordFailure()
        self.endpoint.metrics.connectFailed()
        let waiters = self.http2!.connectFailed()
        if waiters.isEmpty {
            self.cluster.logger.debug(
                "HTTP/2 connection to endpoint failed",
                metadata: ["endpoint.address": "\(self.endpoint.label)", "error": "\(error)"]
            )
        }
        self.failWaiters(waiters, error: error)
    }
}
