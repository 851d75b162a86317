import NIOCore

extension UpstreamPool {
    /// The decisions of one endpoint's pool on one loop, as a value: which connection a request gets, how
    /// many connections to open to keep the pool warm, which to keep when they come back, which to close when
    /// idle too long or when the endpoint drains.
    ///
    /// Generic over the connection so that tests drive it with plain objects. It counts connections but takes
    /// no reservation: the limits shared by every loop (`max_connections_per_endpoint`,
    /// `max_pending_requests`) are atomics that the pool reserves before it connects; a refused reservation is
    /// reported with ``connectNotStarted(isWarm:)``.
    ///
    /// Each connection is, in turn: opening (counted in `opening` or `warming`) → idle (in `idle`, most
    /// recently used last) ↔ leased (known only to its lessee) → closed. Invariants:
    /// - every connection in `idle` is open and has no lessee;
    /// - `owned` counts the connections opening or open, so the pool is empty exactly when it is zero;
    /// - while the endpoint is routable and the pool not draining, `minIdle` connections are idle or warming.
    struct StateMachine<Connection: AnyObject> {
        /// A reload may change it; the next ``UpstreamPool/keepWarm()`` opens or keeps accordingly.
        var minIdle: Int
        /// Idle connections, most recently used last: leasing from the end keeps the warmest connection busy
        /// and lets the others reach the keep-alive timeout.
        private var idle: [(connection: Connection, since: NIODeadline)] = []
        /// Connections opening or open.
        private(set) var owned = 0
        /// Connections being opened to keep the pool warm (no request waits for them).
        private var warming = 0
        /// The endpoint left the set or the proxy shuts down: no new connection; returned ones close.
        private(set) var isDraining = false
        /// Healthy and not ejected: the pool keeps connections warm only then.
        private(set) var isRoutable = false

        init(minIdle: Int) {
            self.minIdle = minIdle
        }

        var isEmpty: Bool { self.owned == 0 }
        var idleCount: Int { self.idle.count }

        enum LeaseAction {
            /// This idle connection is the request's now.
            case lease(Connection)
            /// Open a connection for the request (after reserving room for it).
            case connect
        }

        /// A request wants a connection.
        mutating func leaseRequested() -> LeaseAction {
            if let (connection, _) = self.idle.popLast() {
                return .lease(connection)
            }
            self.owned += 1
            return .connect
        }

        /// How many warm connections to open now (each after reserving room for it).
        mutating func warmConnectionsWanted() -> Int {
            guard self.isRoutable, !self.isDraining else { return 0 }
            let wanted = max(self.minIdle - self.idle.count - self.warming, 0)
            self.owned += wanted
            self.warming += wanted
            return wanted
        }

        /// A connect that ``leaseRequested()`` or ``warmConnectionsWanted()`` asked for was not started: the
        /// shared limits refused it.
        mutating func connectNotStarted(isWarm: Bool) {
            self.owned -= 1
            if isWarm { self.warming -= 1 }
        }

        /// A connect finished; `isWarm` says whether it was opened to keep the pool warm.
        mutating func connectFinished(isWarm: Bool, succeeded: Bool) {
            if isWarm { self.warming -= 1 }
            if !succeeded { self.owned -= 1 }
        }

        enum ReleaseAction: Equatable {
            case keep
            case close
        }

        /// A connection comes back after an exchange (or a fresh one no request wants any more). Only a
        /// connection whose last exchange ended cleanly is kept, and only while the pool is not draining.
        mutating func released(_ connection: Connection, isReusable: Bool, now: NIODeadline) -> ReleaseAction {
            guard isReusable, !self.isDraining else { return .close }
            self.idle.append((connection, now))
            return .keep
        }

        /// A connection closed (either side); returns whether it was idle (the pool may want another).
        mutating func closed(_ connection: Connection) -> Bool {
            self.owned -= 1
            guard let index = self.idle.firstIndex(where: { $0.connection === connection }) else { return false }
            self.idle.remove(at: index)
            return true
        }

        /// The idle connections to close because they have been idle since before `cutoff`; the warm ones the
        /// pool keeps (the most recently used) are spared. They leave `idle` when they close.
        func expiredIdleConnections(before cutoff: NIODeadline) -> [Connection] {
            let keep = self.isRoutable ? self.minIdle : 0
            // `idle` is ordered by last use: the oldest come first.
            return self.idle.dropLast(keep).filter { $0.since < cutoff }.map(\.connection)
        }

        /// The endpoint's routability changed.
        mutating func routabilityChanged(_ isRoutable: Bool) {
            self.isRoutable = isRoutable
        }

        /// Stops handing out connections; returns the idle ones to close now (busy ones close on release).
        mutating func drain() -> [Connection] {
            self.isDraining = true
            return self.idle.map(\.connection)
        }

        /// The endpoint is back in the set before the pool emptied: it serves again.
        mutating func revived() {
            self.isDraining = false
        }
    }
}
