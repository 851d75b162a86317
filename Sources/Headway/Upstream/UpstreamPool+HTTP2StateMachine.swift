import NIOCore

extension UpstreamPool {
    /// The decisions of one endpoint's pool on one loop when the upstream speaks h2c, as a value: which
    /// connection a request's stream goes on, when another connection is needed, which requests wait for one
    /// that is opening, and when a connection closes (drained after GOAWAY, idle too long, endpoint gone).
    ///
    /// Generic over the connection and the waiting request so that tests drive it with plain values. It
    /// takes no reservation: the shell reserves `max_connections_per_endpoint` before it connects and reports
    /// a refusal with ``connectNotStarted(isWarm:)``.
    ///
    /// Each connection is, in turn: opening (counted in `opening`) → open, taking streams up to the pod's
    /// `SETTINGS_MAX_CONCURRENT_STREAMS` → going away (the pod's GOAWAY, or the pool drains: no new stream,
    /// the open ones finish) → closed. Invariants:
    /// - a stream is only opened on a connection that is open, not going away, and below its limit;
    /// - every waiting request has room on a connection that is opening (`waiters.count` ≤ opening ×
    ///   ``assumedStreamLimit``), so no request waits for a connection that nobody opens;
    /// - while the endpoint is routable and the pool not draining, `minIdle` usable connections are open or
    ///   opening.
    struct HTTP2StateMachine<Connection: AnyObject, Waiter> {
        /// What a connection is assumed to take before its SETTINGS say (RFC 9113 §6.5.2 recommends at least
        /// 100, and it is what most servers announce).
        static var assumedStreamLimit: Int { 100 }

        private struct Entry {
            let connection: Connection
            var streams = 0
            var streamLimit = HTTP2StateMachine.assumedStreamLimit
            var isGoingAway = false
            /// Since when it has had no stream (set when it opens, too); `nil` while streams are open.
            var idleSince: NIODeadline?

            var hasRoom: Bool { !self.isGoingAway && self.streams < self.streamLimit }
        }

        /// A reload may change it; the next ``warmConnectionsWanted()`` opens accordingly.
        var minIdle: Int
        private var connections: [Entry] = []
        /// Connections being opened, for waiters or to keep the pool warm.
        private(set) var opening = 0
        /// Requests waiting for a connection that is opening, oldest first.
        private(set) var waiters: [Waiter] = []
        private(set) var isDraining = false
        private(set) var isRoutable = false

        init(minIdle: Int) {
            self.minIdle = minIdle
        }

        var isEmpty: Bool { self.connections.isEmpty && self.opening == 0 }
        var openConnections: Int { self.connections.count }
        var openStreams: Int { self.connections.reduce(0) { $0 + $1.streams } }
        /// Open connections without a stream.
        var idleCount: Int { self.connections.count { $0.streams == 0 } }

        enum StreamAction {
            /// Open the request's stream on this connection (counted already).
            case open(on: Connection)
            /// The request waits for a connection being opened.
            case wait
            /// Open a new connection (after reserving room for it); the request waits for it.
            case connect
        }

        /// A request wants a stream.
        mutating func streamRequested(by waiter: Waiter) -> StreamAction {
            // The fullest connection with room: streams gather on few connections and the others can idle out.
            var best: Int?
            for index in self.connections.indices where self.connections[index].hasRoom {
                if best == nil || self.connections[index].streams > self.connections[best!].streams { best = index }
            }
            if let best {
                self.connections[best].streams += 1
                self.connections[best].idleSince = nil
                return .open(on: self.connections[best].connection)
            }
            self.waiters.append(waiter)
            if self.waiters.count <= self.opening * Self.assumedStreamLimit {
                return .wait
            }
            self.opening += 1
            return .connect
        }

        /// How many connections to open to keep the pool warm (each after reserving room for it).
        mutating func warmConnectionsWanted() -> Int {
            guard self.isRoutable, !self.isDraining else { return 0 }
            let usable = self.connections.count { !$0.isGoingAway }
            let wanted = max(self.minIdle - usable - self.opening, 0)
            self.opening += wanted
            return wanted
        }

        /// Whether a stream can be opened at once (no waiting for a connection).
        var hasRoom: Bool { self.connections.contains { $0.hasRoom } }

        /// A connect that ``streamRequested(by:)`` (then that waiter is withdrawn) or ``warmConnectionsWanted()``
        /// asked for was not started; returns the waiters that no opening connection has room for any more
        /// (they must go elsewhere).
        mutating func connectNotStarted(isWarm: Bool) -> [Waiter] {
            self.opening -= 1
            if !isWarm { self.waiters.removeLast() }
            return self.waitersWithoutRoom()
        }

        /// A connection is open (its preface sent); returns the waiters whose streams go on it now (counted).
        mutating func connected(_ connection: Connection, now: NIODeadline) -> [Waiter] {
            self.opening -= 1
            // Idle from the start when no request waits for it (a warm one), so that it can expire.
            self.connections.append(Entry(connection: connection, idleSince: now))
            if self.isDraining {
                self.connections[self.connections.count - 1].isGoingAway = true
            }
            return self.startWaiters(on: self.connections.count - 1)
        }

        /// A connect failed; returns the waiters that no opening connection has room for any more.
        mutating func connectFailed() -> [Waiter] {
            self.opening -= 1
            return self.waitersWithoutRoom()
        }

        /// The pod's SETTINGS gave its stream limit; returns waiters that now fit on the connection.
        mutating func streamLimitChanged(_ limit: Int, on connection: Connection) -> [Waiter] {
            guard let index = self.index(of: connection) else { return [] }
            self.connections[index].streamLimit = limit
            return self.startWaiters(on: index)
        }

        enum StreamClosedAction {
            /// Nothing to do, or start these waiters' streams on the connection (counted).
            case startWaiters([Waiter])
            /// The connection is going away and has no stream left: close it.
            case close(Connection)
        }

        /// A stream on `connection` closed.
        mutating func streamClosed(on connection: Connection, now: NIODeadline) -> StreamClosedAction {
            guard let index = self.index(of: connection) else { return .startWaiters([]) }
            self.connections[index].streams -= 1
            if self.connections[index].streams == 0 {
                if self.connections[index].isGoingAway { return .close(connection) }
                self.connections[index].idleSince = now
            }
            return .startWaiters(self.startWaiters(on: index))
        }

        /// The pod sent GOAWAY: no new stream on the connection; returns whether it has none open (close it now).
        mutating func goAwayReceived(on connection: Connection) -> Bool {
            guard let index = self.index(of: connection) else { return false }
            self.connections[index].isGoingAway = true
            return self.connections[index].streams == 0
        }

        /// A connection closed (either side).
        mutating func closed(_ connection: Connection) {
            if let index = self.index(of: connection) {
                self.connections.remove(at: index)
            }
        }

        /// Connections without a stream since before `cutoff`, except the warm ones the pool keeps (the most
        /// recently idle ones).
        func expiredIdleConnections(before cutoff: NIODeadline) -> [Connection] {
            var spared = self.isRoutable ? self.minIdle : 0
            var expired: [Connection] = []
            let idle = self.connections.filter { $0.streams == 0 }.sorted { $0.idleSince! > $1.idleSince! }
            for entry in idle {
                if spared > 0 && !entry.isGoingAway {
                    spared -= 1
                } else if entry.idleSince! < cutoff {
                    expired.append(entry.connection)
                }
            }
            return expired
        }

        mutating func routabilityChanged(_ isRoutable: Bool) {
            self.isRoutable = isRoutable
        }

        /// No new stream any more; returns the connections without a stream, to close now (the others close
        /// when their last stream does).
        mutating func drain() -> [Connection] {
            self.isDraining = true
            for index in self.connections.indices { self.connections[index].isGoingAway = true }
            return self.connections.filter { $0.streams == 0 }.map(\.connection)
        }

        mutating func revived() {
            self.isDraining = false
        }

        private func index(of connection: Connection) -> Int? {
            self.connections.firstIndex { $0.connection === connection }
        }

        private mutating func startWaiters(on index: Int) -> [Waiter] {
            let room =
                self.connections[index].hasRoom
                ? self.connections[index].streamLimit - self.connections[index].streams : 0
            let started = Array(self.waiters.prefix(room))
            guard !started.isEmpty else { return [] }
            self.waiters.removeFirst(started.count)
            self.connections[index].streams += started.count
            self.connections[index].idleSince = nil
            return started
        }

        private mutating func waitersWithoutRoom() -> [Waiter] {
            let excess = self.waiters.count - self.opening * Self.assumedStreamLimit
            guard excess > 0 else { return [] }
            let failed = Array(self.waiters.prefix(excess))
            self.waiters.removeFirst(excess)
            return failed
        }
    }
}
