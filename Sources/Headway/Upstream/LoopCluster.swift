import Logging
import NIOCore

/// The part of one upstream that lives on one event loop: the picker and one ``UpstreamPool`` per endpoint.
///
/// Downstream connections accepted on this loop pick and lease from here without a lock: everything is
/// touched only on `eventLoop`. The control plane (``UpstreamCluster``) swaps the endpoint set by posting a
/// snapshot with `eventLoop.execute`.
///
/// `@unchecked Sendable`: the object is shared with the control plane only so that it can post work to
/// `eventLoop`; every method asserts it runs there, and no state is read or written from another thread.
final class LoopCluster: @unchecked Sendable {
    let eventLoop: any EventLoop
    let configuration: HeadwayConfiguration.Upstream
    let metrics: UpstreamMetrics
    let logger: Logger

    /// Pools of the active endpoints, in the snapshot's order; the picker indexes into this array.
    private(set) var pools: [UpstreamPool] = []
    /// Pools of removed endpoints that still have connections; dropped once empty.
    private var drainingPools: [UpstreamPool] = []
    private var picker: EndpointPicker
    private var snapshotVersion = 0
    /// Why the set is empty, when it is and discovery said why; quoted in the 503 answer.
    private(set) var emptyReason: String?
    private var idleSweep: RepeatedTask?
    private var deadlineSweep: RepeatedTask?
    /// Exchanges waiting for a response head, checked against `request_timeout` by a periodic sweep.
    private var deadlines = ResponseDeadlines()
    private var isShutDown = false

    init(eventLoop: any EventLoop, configuration: HeadwayConfiguration.Upstream, metrics: UpstreamMetrics, logger: Logger) {
        self.eventLoop = eventLoop
        self.configuration = configuration
        self.metrics = metrics
        self.logger = logger
        self.picker = EndpointPicker(policy: configuration.policy)
    }

    /// Installs a new endpoint set: new endpoints get a pool, unchanged ones keep theirs, removed ones drain.
    func install(_ snapshot: EndpointSnapshot) {
        self.eventLoop.assertInEventLoop()
        guard !self.isShutDown, snapshot.version > self.snapshotVersion else { return }
        self.snapshotVersion = snapshot.version
        self.emptyReason = snapshot.emptyReason
        var previous: [ObjectIdentifier: UpstreamPool] = [:]
        for pool in self.pools { previous[ObjectIdentifier(pool.endpoint)] = pool }
        self.pools = snapshot.endpoints.map { endpoint in
            if let pool = previous.removeValue(forKey: ObjectIdentifier(endpoint)) {
                return pool
            }
            if let index = self.drainingPools.firstIndex(where: { $0.endpoint === endpoint }) {
                let pool = self.drainingPools.remove(at: index)
                pool.isDraining = false
                return pool
            }
            return UpstreamPool(endpoint: endpoint, cluster: self)
        }
        for pool in previous.values {
            pool.drain()
            self.drainingPools.append(pool)
        }
        self.drainingPools.removeAll { $0.isEmpty }
        self.picker.endpointSetChanged(count: self.pools.count)
        self.startIdleSweepIfNeeded()
    }

    /// Chooses the pool for a request with the upstream's policy, avoiding `excluded` when another exists.
    func pickPool(excluding excluded: UpstreamPool?) -> UpstreamPool? {
        let excludedIndex = excluded.flatMap { excluded in self.pools.firstIndex { $0 === excluded } }
        guard let index = self.picker.pick(count: self.pools.count, excluding: excludedIndex) else {
            return nil
        }
        return self.pools[index]
    }

    /// Starts the `request_timeout` clock for `handler`; returns its slot for ``responseStarted(slot:)``.
    func awaitResponse(_ handler: DownstreamHandler) -> Int {
        if self.deadlineSweep == nil {
            let period = ResponseDeadlines.sweepPeriod(for: self.configuration.requestTimeout)
            self.deadlineSweep = self.eventLoop.scheduleRepeatedTask(initialDelay: period, delay: period) {
                [weak self] (_: RepeatedTask) in
                guard let self else { return }
                for handler in self.deadlines.takeExpired(now: .now()) {
                    handler.requestTimedOut()
                }
            }
        }
        return self.deadlines.add(handler, deadline: .now() + self.configuration.requestTimeout)
    }

    /// Stops the clock started by ``awaitResponse(_:)``.
    func responseStarted(slot: Int) {
        self.deadlines.remove(slot: slot)
    }

    /// Closes every idle connection and stops opening new ones; busy connections close after their response.
    func shutdown() {
        self.eventLoop.assertInEventLoop()
        self.isShutDown = true
        self.idleSweep?.cancel()
        self.idleSweep = nil
        self.deadlineSweep?.cancel()
        self.deadlineSweep = nil
        for pool in self.pools + self.drainingPools { pool.drain() }
    }

    private func startIdleSweepIfNeeded() {
        guard self.idleSweep == nil else { return }
        // Closing idle connections a little late is harmless; a sweep per loop avoids a timer per connection.
        let period = TimeAmount.nanoseconds(
            min(max(self.configuration.idleTimeout.nanoseconds / 4, TimeAmount.milliseconds(50).nanoseconds),
                TimeAmount.seconds(5).nanoseconds)
        )
        self.idleSweep = self.eventLoop.scheduleRepeatedTask(initialDelay: period, delay: period) {
            [weak self] (_: RepeatedTask) in
            guard let self else { return }
            let cutoff = NIODeadline.now() - self.configuration.idleTimeout
            for pool in self.pools { pool.closeConnections(idleSince: cutoff) }
            self.drainingPools.removeAll { $0.isEmpty }
        }
    }
}
