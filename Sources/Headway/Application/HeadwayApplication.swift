import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import ServiceLifecycle
import Synchronization
import UnixSignals

/// A whole Headway process, built from a configuration: the event loops, one ``UpstreamCluster`` per
/// upstream, one ``ProxyServer`` per listener and the ``AdminServer``.
///
/// `headway run` and the in-process tests build it the same way; ``run()`` serves until SIGTERM/SIGINT (or
/// until ``triggerGracefulShutdown()``), waits out `shutdown_delay`, drains, and returns.
package final class HeadwayApplication: Sendable {
    package let configuration: HeadwayConfiguration
    package let clusters: [UpstreamCluster]
    package let metrics: ProxyMetrics
    let group: MultiThreadedEventLoopGroup
    let admin: AdminServer
    let proxies: [ProxyServer]
    let discoveries: [DNSDiscovery]
    let accessLog: AccessLog?
    /// Runs the blocking libresolv calls of DNS discovery, off the event loops.
    private let resolverThreads: NIOThreadPool
    let logger: Logger
    private let adminState: AdminState
    private let serviceGroup: ServiceGroup
    private let handlesSignals: Bool
    private let shutdown: Mutex<ShutdownSequence>
    private let bound = NIOLockedValueBox(BoundAddresses())
    private let boundStream: AsyncStream<Void>
    private let boundContinuation: AsyncStream<Void>.Continuation

    private struct BoundAddresses {
        var admin: SocketAddress?
        var listeners: [Int: SocketAddress] = [:]
    }

    package init(configuration: HeadwayConfiguration, logger: Logger, handleSignals: Bool = true) throws {
        self.configuration = configuration
        self.logger = logger
        self.handlesSignals = handleSignals
        self.shutdown = Mutex(ShutdownSequence(delay: configuration.shutdownDelay))
        self.group = MultiThreadedEventLoopGroup(numberOfThreads: configuration.threads)
        let metrics = ProxyMetrics()
        self.metrics = metrics
        let loops = Array(self.group.makeIterator())
        do {
            self.accessLog = try configuration.accessLog.map { try AccessLog(settings: $0, eventLoops: loops) }
        } catch {
            try? self.group.syncShutdownGracefully()
            throw error
        }
        self.clusters = configuration.upstreams.map { upstream in
            UpstreamCluster(configuration: upstream, eventLoops: loops, metrics: metrics, logger: logger)
        }
        let resolverThreads = NIOThreadPool(numberOfThreads: 1)
        self.resolverThreads = resolverThreads
        var discoveries: [DNSDiscovery] = []
        for cluster in self.clusters {
            if let dns = cluster.configuration.dns {
                discoveries.append(
                    DNSDiscovery(
                        settings: dns,
                        cluster: cluster,
                        threadPool: resolverThreads,
                        metrics: metrics,
                        logger: logger
                    )
                )
            } else {
                // Static discovery: the set is known now; DNS discovery publishes through the same call.
                var weights: [SocketAddress: Int] = [:]
                for (address, weight) in cluster.configuration.endpointWeights {
                    weights[try address.socketAddress()] = weight
                }
                cluster.setEndpoints(
                    try cluster.configuration.endpoints.map { try $0.socketAddress() },
                    weights: weights
                )
            }
        }
        self.discoveries = discoveries
        (self.boundStream, self.boundContinuation) = AsyncStream.makeStream()
        let adminState = AdminState(
            clusters: self.clusters,
            discoveries: discoveries,
            metrics: self.metrics,
            readyRequiresEndpoints: configuration.readyRequiresEndpoints
        )
        self.adminState = adminState
        let bound = self.bound
        let continuation = self.boundContinuation
        self.admin = AdminServer(
            address: try configuration.admin.socketAddress(),
            state: adminState,
            group: self.group,
            logger: logger,
            onBound: { address in
                bound.withLockedValue { $0.admin = address }
                continuation.yield()
            }
        )
        var proxies: [ProxyServer] = []
        for (index, listener) in configuration.listeners.enumerated() {
            guard let cluster = self.clusters.first(where: { $0.configuration.name == listener.upstream }) else {
                continue  // Ruled out by configuration loading.
            }
            proxies.append(
                ProxyServer(
                    address: try listener.listen.socketAddress(),
                    cluster: cluster,
                    group: self.group,
                    client: configuration.client,
                    drainTimeout: configuration.drainTimeout,
                    accessLog: self.accessLog,
                    metrics: metrics,
                    logger: logger,
                    onBound: { address in
                        bound.withLockedValue { $0.listeners[index] = address }
                        continuation.yield()
                    },
                    onDrainStarted: { adminState.isShuttingDown = true }
                )
            )
        }
        self.proxies = proxies
        // Graceful shutdown runs in reverse order: listeners drain first while discovery, health checks and
        // admin go on. The signals are the application's own (see `stopRequested`): the group only runs it.
        self.serviceGroup = ServiceGroup(
            configuration: .init(
                services: [.init(service: self.admin)] + discoveries.map { .init(service: $0) }
                    + self.clusters.compactMap(\.healthChecker).map { .init(service: $0) }
                    + proxies.map { .init(service: $0) },
                gracefulShutdownSignals: [],
                cancellationSignals: [],
                logger: logger
            )
        )
    }

    /// Serves until shutdown, then closes every connection and stops the event loops.
    package func run() async throws {
        self.logger.info("starting headway", metadata: ["config": "\(self.configuration.summary)"])
        self.resolverThreads.start()
        // Resolve every DNS upstream once before accepting requests, so the first ones find pods.
        await withTaskGroup(of: Void.self) { group in
            for discovery in self.discoveries {
                group.addTask { await discovery.resolveOnce() }
            }
        }
        // Then let the first health checks judge every endpoint (within one check timeout), so that
        // gate_new_endpoints holds from the very first request.
        await withTaskGroup(of: Void.self) { group in
            for cluster in self.clusters where cluster.healthChecker != nil {
                group.addTask { await cluster.waitForFirstChecks() }
            }
        }
        for cluster in self.clusters {
            cluster.startupFinished()
        }
        do {
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                if self.handlesSignals {
                    let signals = await UnixSignalsSequence(trapping: .sigterm, .sigint)
                    tasks.addTask {
                        for await signal in signals {
                            await self.stopRequested(by: signal == .sigint ? .interrupt : .terminate)
                        }
                    }
                }
                try await self.serviceGroup.run()
                tasks.cancelAll()
            }
        } catch {
            self.boundContinuation.finish()
            await self.accessLog?.finish()
            try? await self.resolverThreads.shutdownGracefully()
            try? await self.group.shutdownGracefully()
            throw error
        }
        self.boundContinuation.finish()
        await self.accessLog?.finish()
        try await self.resolverThreads.shutdownGracefully()
        try await self.group.shutdownGracefully()
        self.logger.info("headway stopped")
    }

    /// Starts the same shutdown as SIGTERM: `shutdown_delay`, then the drain.
    package func triggerGracefulShutdown() async {
        await self.stopRequested(by: .terminate)
    }

    private func stopRequested(by signal: ShutdownSequence.Signal) async {
        let action = self.shutdown.withLock { $0.received(signal) }
        await self.perform(action, after: signal)
    }

    private func perform(_ action: ShutdownSequence.Action, after signal: ShutdownSequence.Signal?) async {
        let name = signal.map { $0 == .interrupt ? "SIGINT" : "SIGTERM" }
        switch action {
        case .none:
            break
        case .reportNotReadyAndWait(let delay):
            self.adminState.isShuttingDown = true
            self.logger.notice(
                "\(name ?? "stop") received: /ready is 503, still serving for shutdown_delay, then draining (a second SIGTERM drains now)",
                metadata: ["shutdown_delay": "\(DurationText.format(delay))"]
            )
            Task {
                try? await Task.sleep(for: .nanoseconds(delay.nanoseconds))
                let next = self.shutdown.withLock { $0.delayElapsed() }
                await self.perform(next, after: nil)
            }
        case .drain:
            self.adminState.isShuttingDown = true
            self.logger.notice(
                signal == nil ? "shutdown_delay over: draining" : "\(name ?? "stop") received: draining"
            )
            await self.serviceGroup.triggerGracefulShutdown()
        }
    }

    /// Waits until the admin endpoint and every listener are bound, and returns their addresses (useful
    /// with port 0). Returns `nil` if the application stopped first.
    package func waitUntilBound() async -> (admin: SocketAddress, listeners: [SocketAddress])? {
        let expected = self.proxies.count
        func current() -> (admin: SocketAddress, listeners: [SocketAddress])? {
            self.bound.withLockedValue { bound in
                guard let admin = bound.admin, bound.listeners.count == expected else { return nil }
                return (admin, (0..<expected).compactMap { bound.listeners[$0] })
            }
        }
        if let addresses = current() { return addresses }
        for await _ in self.boundStream {
            if let addresses = current() { return addresses }
        }
        return current()
    }
}
