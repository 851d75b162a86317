import Logging
import NIOCore

/// The part of one upstream that lives on one event loop: the picker and one ``UpstreamPool`` per endpoint.
///
/// Downstream connections accepted on this loop pick and lease from here without a lock: everything is
/// touched only on `eventLoop`. The control plane (``UpstreamCluster``) swaps the endpoint set by posting a
/// snapshot with `eventLoop.execute`, and posts ``refreshRoutable()`` when an endpoint's health changes.
///
/// `@unchecked Sendable`: the object is shared with the control plane only so that it can post work to
/// `eventLoop`; every method asserts it runs there, and no state is read or written from another thread.
final class LoopCluster: @unchecked Sendable {
    let eventLoop: any EventLoop
    /// Replaced by a reload (``reconfigure(_:)``); read on this loop only.
    private(set) var configuration: HeadwayConfiguration.Upstream
    /// What the pools speak; fixed at start (a reload that changes it says it needs a restart).
    let httpProtocol: UpstreamProtocol
    let metrics: UpstreamMetrics
    let logger: Logger
    /// The control plane, told of outliers and pending requests; set once by the cluster that owns this loop.
    weak var upstream: UpstreamCluster?

    /// Pools of the active endpoints, in the snapshot's order.
    private(set) var pools: [UpstreamPool] = []
    /// The pools requests go to: the healthy ones, or in panic mode every one not ejected. The balancer indexes
    /// into this.
    private var routable: [UpstreamPool] = []
    /// Some routable endpoint is still ramping up (slow start): weights are recomputed by the sweep.
    private var isSlowStarting = false
    /// Pools of the healthy, non-ejected endpoints; the same as `routable` outside panic mode.
    private var healthy: [UpstreamPool] = []
    /// Turns for retries in panic mode, which go round the healthy pools.
    private var panicRetryTurn = 0
    /// Healthy, non-ejected endpoints in the set; zero means every attempt goes to an endpoint known bad.
    var healthyCount: Int { self.healthy.count }
    /// Pools of removed endpoints that still have connections; dropped once empty.
    private var drainingPools: [UpstreamPool] = []
    /// What dropped pools counted, kept while their endpoint is still known to the cluster (draining on another
    /// loop, or back in the set): the endpoint's `/metrics` series are sums over the loops and must not go down.
    private var retiredTraffic: [(endpoint: Endpoint, traffic: EndpointTraffic)] = []
    /// What this loop's clients of the upstream were answered, by status class (`headway_responses_total`).
    private(set) var clientResponses = StatusClassCounts()
    private var balancer: any LoadBalancer
    private let loopCount: Int
    private var snapshotVersion = 0
    /// Why the set is empty, when it is and discovery said why; quoted in the 503 answer.
    private(set) var emptyReason: String?
    private var idleSweep: RepeatedTask?
    private var deadlineSweep: RepeatedTask?
    /// Exchanges waiting for a response head or for the next piece of a response, with their deadlines.
    private var deadlines = ResponseDeadlines()
    /// The loop's clock as of the last deadline sweep: cheap to read on every response piece.
    private(set) var coarseNow = NIODeadline.now()
    /// Head buffers that this loop's exchanges reuse (no allocation per request for them).
    var headBuffers = HeadBufferRecycler()
    /// Flushes of this loop's connections, folded into one task at the end of each tick.
    lazy var flusher = TickFlusher(eventLoop: self.eventLoop) { [unowned self] in self.headBuffers.writesFlushed() }
    /// This loop's share of the retry budget; exchanges spend it as they decide to retry.
    var retryBudget: RetryBudget
    /// Client connections of this loop, swept for their timeouts.
    private var clients: [any ClientTimeoutWaiter] = []
    private var clientSweep: RepeatedTask?
    private var isShutDown = false

    init(
        eventLoop: any EventLoop,
        configuration: HeadwayConfiguration.Upstream,
        loopCount: Int,
        metrics: UpstreamMetrics,
        logger: Logger
    ) {
        self.eventLoop = eventLoop
        self.configuration = configuration
        self.httpProtocol = configuration.httpProtocol
        self.metrics = metrics
        self.logger = logger
        self.loopCount = loopCount
        self.balancer = configuration.policy.makeBalancer(ewmaDecay: configuration.ewmaDecay)
        self.retryBudget = Self.retryBudget(for: configuration, loopCount: loopCount)
    }

    /// Each loop serves its share of the requests, so it keeps its share of the budget's floor.
    private static func retryBudget(for configuration: HeadwayConfiguration.Upstream, loopCount: Int) -> RetryBudget {
        RetryBudget(
            percent: configuration.retries.budgetPercent,
            minPerSecond: Double(configuration.retries.budgetMinPerSecond) / Double(max(loopCount, 1))
        )
    }

    /// A reload's new settings for this upstream: requests that start from now on use them. A new policy
    /// gets a new balancer (its state, such as ewma estimates, starts afresh); pools and their idle
    /// connections stay.
    func reconfigure(_ configuration: HeadwayConfiguration.Upstream) {
        self.eventLoop.assertInEventLoop()
        guard !self.isShutDown else { return }
        let old = self.configuration
        self.configuration = configuration
        if old.policy != configuration.policy || old.ewmaDecay != configuration.ewmaDecay {
            self.balancer = configuration.policy.makeBalancer(ewmaDecay: configuration.ewmaDecay)
        }
        if old.retries.budgetPercent != configuration.retries.budgetPercent
            || old.retries.budgetMinPerSecond != configuration.retries.budgetMinPerSecond
        {
            self.retryBudget = Self.retryBudget(for: configuration, loopCount: self.loopCount)
        }
        // The sweeps' periods follow the timeouts: start them again with the new ones.
        if self.deadlineSweep != nil {
            self.deadlineSweep?.cancel()
            self.deadlineSweep = nil
            self.startDeadlineSweep()
        }
        self.idleSweep?.cancel()
        self.idleSweep = nil
        self.startIdleSweepIfNeeded()
        if old.minIdleConnectionsPerEndpoint != configuration.minIdleConnectionsPerEndpoint {
            for pool in self.pools { pool.minIdleChanged(to: configuration.minIdleConnectionsPerEndpoint) }
        }
        self.refreshRoutable()
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
                pool.revive()
                return pool
            }
            let pool = UpstreamPool(endpoint: endpoint, cluster: self)
            if let index = self.retiredTraffic.firstIndex(where: { $0.endpoint === endpoint }) {
                pool.carryOver(self.retiredTraffic.remove(at: index).traffic)
            }
            return pool
        }
        for pool in previous.values {
            pool.drain()
            self.drainingPools.append(pool)
        }
        self.dropEmptyDrainingPools()
        self.refreshRoutable()
        self.startIdleSweepIfNeeded()
    }

    /// Recomputes which pools take requests from the endpoints' health, and warms the healthy ones.
    func refreshRoutable() {
        self.eventLoop.assertInEventLoop()
        guard !self.isShutDown else { return }
        let gate = self.configuration.healthCheck != nil && self.configuration.gateNewEndpoints
        let healthy = self.pools.filter { $0.endpoint.isRoutable(gateUnknown: gate) }
        self.healthy = healthy
        let panic = UpstreamCluster.isPanic(
            passingChecks: self.pools.count { $0.endpoint.passesChecks(gateUnknown: gate) },
            total: self.pools.count,
            thresholdPercent: self.configuration.panicThresholdPercent
        )
        let routable = panic ? self.pools.filter { !$0.endpoint.isEjected } : healthy
        // Every endpoint ejected (max_ejection_percent at 100%): they all take requests rather than none.
        self.routable = routable.isEmpty ? self.pools : routable
        self.updateBalancer()
        for pool in self.pools {
            pool.routabilityChanged(pool.endpoint.isRoutable(gateUnknown: gate))
        }
    }

    /// Gives the balancer the routable endpoints with their weights, scaled down for those in slow start.
    private func updateBalancer() {
        let now = NIODeadline.now()
        var slowStarting = false
        let weights = self.routable.map { pool -> Int in
            // Weights in hundredths, so that slow start can ramp in small steps.
            let weight = pool.endpoint.weight * 100
            guard let window = self.configuration.slowStart, let since = pool.endpoint.routableSince else {
                return weight
            }
            let elapsed = now - since
            guard elapsed < window else { return weight }
            slowStarting = true
            return Self.slowStartWeight(weight, elapsed: elapsed, window: window)
        }
        self.isSlowStarting = slowStarting
        self.balancer.endpointsChanged(self.routable.map(\.endpoint), weights: weights)
    }

    /// A weight in slow start: a linear ramp from a tenth of it (Envoy's default `min_weight_percent`), so that
    /// a cold pod gets some traffic to warm up on from the start.
    static func slowStartWeight(_ weight: Int, elapsed: TimeAmount, window: TimeAmount) -> Int {
        let share = min(max(Double(elapsed.nanoseconds) / Double(window.nanoseconds), 0.1), 1)
        return max(Int((Double(weight) * share).rounded()), 1)
    }

    /// Chooses the pool for a request with the upstream's policy, avoiding `excluded` when another exists.
    ///
    /// - Parameter hashKey: the request's key for the `hash` policy.
    ///
    /// In panic mode the policy spreads first attempts over every endpoint, the bad ones too; a retry (`excluded`
    /// is the pool that just failed) goes to a healthy endpoint when there is one, as HAProxy's redispatch
    /// does, rather than to another that is known bad (found by scripts/chaos: with two of three pods stopped,
    /// retries went from one stopped pod to the other and back).
    func pickPool(excluding excluded: UpstreamPool?, hashKey: UInt64? = nil) -> UpstreamPool? {
        if let excluded, self.routable.count > self.healthy.count,
            let pool = self.nextHealthyPool(excluding: excluded)
        {
            return pool
        }
        let excludedIndex = excluded.flatMap { excluded in self.routable.firstIndex { $0 === excluded } }
        guard
            let index = self.balancer.pick(PickRequest(excluding: excludedIndex, hashKey: hashKey, now: self.coarseNow))
        else {
            return nil
        }
        return self.routable[index]
    }

    private func nextHealthyPool(excluding excluded: UpstreamPool) -> UpstreamPool? {
        for _ in self.healthy.indices {
            self.panicRetryTurn &+= 1
            let pool = self.healthy[self.panicRetryTurn % self.healthy.count]
            if pool !== excluded { return pool }
        }
        return nil
    }

    // MARK: Retries and passive checks

    /// Counts a request for the retry budget.
    func requestStarted(at now: NIODeadline) {
        self.retryBudget.requestStarted(at: now)
    }

    /// A response head from `endpoint` arrived `latency` after the request was sent (for `ewma`).
    func responseHeadArrived(_ endpoint: Endpoint, latency: TimeAmount, now: NIODeadline) {
        self.balancer.responseHeadArrived(from: endpoint, latency: latency, now: now)
    }

    /// Whether the policy weighs response times: only then is a precise time taken per response.
    var measuresLatency: Bool { self.balancer.measuresLatency }

    /// A response from `endpoint` finished with `status` (passive check).
    func responseFinished(_ endpoint: Endpoint, status: UInt) {
        if let report = endpoint.recordResponseStatus(
            status,
            consecutive5xxThreshold: self.configuration.outlierDetection.consecutive5xx
        ) {
            self.upstream?.reportOutlier(endpoint, report)
        }
    }

    /// Headway saw `endpoint` fail a request itself: `what` says how (passive check only; the failure
    /// counters are the caller's, since a connect failure is counted by the pool that saw it).
    func gatewayFailed(_ endpoint: Endpoint, what: String) {
        let settings = self.configuration.outlierDetection
        if let report = endpoint.recordGatewayFailure(
            gatewayThreshold: settings.consecutiveGatewayFailures,
            fiveXXThreshold: settings.consecutive5xx,
            what: what
        ) {
            self.upstream?.reportOutlier(endpoint, report)
        }
    }

    // MARK: Deadlines

    /// The loop's clock now; also refreshes ``coarseNow``.
    func now() -> NIODeadline {
        self.coarseNow = .now()
        return self.coarseNow
    }

    /// Registers `waiter` until `deadline`; returns its slot for the calls below.
    func startClock(_ waiter: any ResponseDeadlineWaiter, deadline: NIODeadline) -> Int {
        if self.deadlineSweep == nil {
            self.startDeadlineSweep()
        }
        return self.deadlines.add(waiter, deadline: deadline)
    }

    private func startDeadlineSweep() {
        let shortest = min(self.configuration.requestTimeout, self.configuration.idleTimeout)
        let period = ResponseDeadlines.sweepPeriod(for: shortest)
        self.deadlineSweep = self.eventLoop.scheduleRepeatedTask(initialDelay: period, delay: period) {
            [weak self] (_: RepeatedTask) in
            guard let self else { return }
            self.coarseNow = .now()
            for handler in self.deadlines.sweep(now: self.coarseNow) {
                handler.deadlinePassed()
            }
        }
    }

    /// The waiter in `slot` now waits until `deadline`.
    func moveDeadline(slot: Int, to deadline: NIODeadline) {
        self.deadlines.setDeadline(deadline, slot: slot)
    }

    /// Stops the clock started by ``startClock(_:deadline:)``.
    func stopClock(slot: Int) {
        self.deadlines.remove(slot: slot)
    }

    // MARK: Client connections

    /// Client timeouts are checked this often; a timeout fires up to one period late.
    static let clientSweepPeriod: TimeAmount = .milliseconds(250)

    /// Registers a client connection for the timeout sweep; returns its slot.
    func clientConnected(_ handler: any ClientTimeoutWaiter) -> Int {
        if self.clientSweep == nil {
            self.clientSweep = self.eventLoop.scheduleRepeatedTask(
                initialDelay: Self.clientSweepPeriod,
                delay: Self.clientSweepPeriod
            ) {
                [weak self] (_: RepeatedTask) in
                guard let self else { return }
                self.coarseNow = .now()
                // Handlers may leave the list while it is walked (a timeout closes them): walk a copy.
                for client in self.clients {
                    client.checkClientTimeouts(now: self.coarseNow)
                }
            }
        }
        self.clients.append(handler)
        return self.clients.count - 1
    }

    func clientDisconnected(slot: Int) {
        let last = self.clients.count - 1
        if slot != last {
            self.clients[slot] = self.clients[last]
            self.clients[slot].clientSlotMoved(to: slot)
        }
        self.clients.removeLast()
    }

    /// A client's request ended with this status, the pod's or Headway's own.
    func clientAnswered(status: UInt) {
        self.clientResponses.record(status: status)
    }

    /// What this loop recorded of each endpoint's responses; ``UpstreamCluster/responseTotals(on:)`` adds up
    /// the loops' figures.
    func responseFigures() -> [ResponseFigures] {
        self.eventLoop.assertInEventLoop()
        let live = (self.pools + self.drainingPools).map {
            ResponseFigures(endpoint: $0.endpoint, latency: $0.latency, traffic: $0.traffic)
        }
        let retired = self.retiredTraffic.map {
            ResponseFigures(endpoint: $0.endpoint, latency: LatencyHistogram(), traffic: $0.traffic)
        }
        return live + retired
    }

    /// Closes every idle connection and stops opening new ones; busy connections close after their response.
    func shutdown() {
        self.eventLoop.assertInEventLoop()
        self.isShutDown = true
        self.idleSweep?.cancel()
        self.idleSweep = nil
        self.deadlineSweep?.cancel()
        self.deadlineSweep = nil
        self.clientSweep?.cancel()
        self.clientSweep = nil
        for pool in self.pools + self.drainingPools { pool.drain() }
    }

    /// Drops the pools of removed endpoints once their last connection closed; the control plane then
    /// forgets the endpoints that no loop still uses (a lock and a walk of its draining list, once a sweep).
    func dropEmptyDrainingPools() {
        for pool in self.drainingPools where pool.isEmpty {
            self.retiredTraffic.append((pool.endpoint, pool.traffic))
        }
        self.drainingPools.removeAll { $0.isEmpty }
        self.upstream?.forgetDrainedEndpoints()
        if !self.retiredTraffic.isEmpty {
            let known = Set((self.upstream?.endpoints ?? []).map(ObjectIdentifier.init))
            self.retiredTraffic.removeAll { !known.contains(ObjectIdentifier($0.endpoint)) }
        }
    }

    private func startIdleSweepIfNeeded() {
        guard self.idleSweep == nil else { return }
        // Closing idle connections a little late is harmless; a sweep per loop avoids a timer per connection.
        // The same sweep replaces warm connections whose connect failed.
        // Slow start ramps in steps of this period too: at least 20 steps over its window.
        let longest = min(
            self.configuration.keepaliveTimeout.nanoseconds / 4,
            (self.configuration.slowStart?.nanoseconds ?? .max) / 20
        )
        let period = TimeAmount.nanoseconds(
            min(max(longest, TimeAmount.milliseconds(50).nanoseconds), TimeAmount.seconds(1).nanoseconds)
        )
        self.idleSweep = self.eventLoop.scheduleRepeatedTask(initialDelay: period, delay: period) {
            [weak self] (_: RepeatedTask) in
            guard let self else { return }
            let cutoff = NIODeadline.now() - self.configuration.keepaliveTimeout
            for pool in self.pools {
                pool.closeConnections(idleSince: cutoff)
                pool.keepWarm()
            }
            self.dropEmptyDrainingPools()
            if self.isSlowStarting { self.updateBalancer() }
        }
    }
}
