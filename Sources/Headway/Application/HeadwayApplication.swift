import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Prometheus
import ServiceLifecycle
import Synchronization
import UnixSignals

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// A whole Headway process, built from a configuration: the event loops, one ``UpstreamCluster`` per
/// upstream with its discovery, one ``ProxyServer`` per listener and the ``AdminServer``.
///
/// `headway run` and the in-process tests build it the same way; ``run()`` serves until SIGTERM/SIGINT (or
/// until ``triggerGracefulShutdown()``), waits out `shutdown_delay`, drains, and returns. SIGHUP (or
/// ``reload(_:)``) applies a new configuration while it serves.
package final class HeadwayApplication: Sendable {
    package let metrics: ProxyMetrics
    let group: MultiThreadedEventLoopGroup
    let admin: AdminServer
    let accessLog: AccessLog?
    private let listeners: ListenerSet
    /// Runs the blocking libresolv calls of DNS discovery, off the event loops.
    private let resolverThreads: NIOThreadPool
    let logger: Logger
    private let adminState: AdminState
    private let serviceGroup: ServiceGroup
    private let handlesSignals: Bool
    private let shutdown: Mutex<ShutdownSequence>
    private let running: NIOLockedValueBox<Running>
    /// Reads the configuration again for SIGHUP: the file, with the command line's flags laid over it.
    private let reloadSource: (@Sendable () throws -> HeadwayConfiguration)?
    /// `--watch-config`: this file is read every couple of seconds and a change reloads as SIGHUP does.
    private let watchedFile: String?
    private let reloadsSucceeded: Counter
    private let reloadsFailed: Counter
    private let bound = NIOLockedValueBox(BoundAddresses())
    private let boundStream: AsyncStream<Void>
    private let boundContinuation: AsyncStream<Void>.Continuation

    /// What serves now; a reload replaces parts of it.
    private struct Running {
        var configuration: HeadwayConfiguration
        var generation = 1
        var loadedAt = Date()
        var clusters: [UpstreamCluster]
        /// DNS discovery of the upstreams that have it, and the task that runs each after start-up.
        var discoveries: [String: (discovery: DNSDiscovery, task: Task<Void, Never>?)] = [:]
        /// One per listener of `configuration`, in its order.
        var servers: [ProxyServer]
        var isServing = false

        func cluster(named name: String) -> UpstreamCluster? {
            self.clusters.first { $0.name == name }
        }
    }

    private struct BoundAddresses {
        var admin: SocketAddress?
        var listeners = false
    }

    /// - Parameters:
    ///   - reloadSource: how SIGHUP reads the configuration again; without it SIGHUP only reopens the access log.
    ///   - watchedFile: a file whose every change reloads (a ConfigMap's file in Kubernetes, which changes
    ///     without anyone to send SIGHUP); needs `reloadSource`.
    package init(
        configuration: HeadwayConfiguration,
        logger: Logger,
        handleSignals: Bool = true,
        reloadSource: (@Sendable () throws -> HeadwayConfiguration)? = nil,
        watchedFile: String? = nil
    ) throws {
        self.logger = logger
        self.handlesSignals = handleSignals
        self.reloadSource = reloadSource
        self.watchedFile = watchedFile
        self.shutdown = Mutex(ShutdownSequence(delay: configuration.shutdownDelay))
        self.group = MultiThreadedEventLoopGroup(numberOfThreads: configuration.threads)
        let loops = Array(self.group.makeIterator())
        do {
            self.accessLog = try configuration.accessLog.map { try AccessLog(settings: $0, eventLoops: loops) }
        } catch {
            try? self.group.syncShutdownGracefully()
            throw error
        }
        let metrics = ProxyMetrics()
        self.metrics = metrics
        self.reloadsSucceeded = metrics.counter(.configReloads, [("result", "success")])
        self.reloadsFailed = metrics.counter(.configReloads, [("result", "error")])
        let resolverThreads = NIOThreadPool(numberOfThreads: 1)
        self.resolverThreads = resolverThreads

        var running = Running(configuration: configuration, clusters: [], servers: [])
        for upstream in configuration.upstreams {
            let cluster = UpstreamCluster(configuration: upstream, eventLoops: loops, metrics: metrics, logger: logger)
            running.clusters.append(cluster)
            if let dns = upstream.dns {
                running.discoveries[upstream.name] = (
                    DNSDiscovery(
                        settings: dns,
                        cluster: cluster,
                        threadPool: resolverThreads,
                        metrics: metrics,
                        logger: logger
                    ), nil
                )
            } else {
                try Self.setStaticEndpoints(of: cluster, from: upstream)
            }
        }
        for listener in configuration.listeners {
            guard let cluster = running.cluster(named: listener.upstream) else {
                continue  // Ruled out by configuration loading.
            }
            running.servers.append(
                try Self.makeServer(
                    listener,
                    cluster: cluster,
                    configuration: configuration,
                    group: self.group,
                    accessLog: self.accessLog,
                    metrics: metrics,
                    logger: logger
                )
            )
        }
        self.running = NIOLockedValueBox(running)

        (self.boundStream, self.boundContinuation) = AsyncStream.makeStream()
        let bound = self.bound
        let continuation = self.boundContinuation
        let runningBox = self.running
        let adminState = AdminState(
            metrics: metrics,
            readyRequiresEndpoints: configuration.readyRequiresEndpoints
        ) {
            runningBox.withLockedValue { running in
                AdminState.Running(
                    clusters: running.clusters,
                    discoveries: running.discoveries.values.map(\.discovery),
                    generation: running.generation,
                    loadedAt: running.loadedAt
                )
            }
        }
        self.adminState = adminState
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
        self.listeners = ListenerSet(initial: running.servers, logger: logger) {
            bound.withLockedValue { $0.listeners = true }
            continuation.yield()
        }
        // Graceful shutdown runs in reverse order: the listeners drain first while discovery, health checks and
        // admin go on; then the control plane stops; admin last. The signals are the application's own (see
        // `stopRequested`): the group only runs the services.
        let controlPlane = StopOnShutdown { [running = self.running] in
            let (clusters, tasks) = running.withLockedValue { running in
                (running.clusters, running.discoveries.values.compactMap(\.task))
            }
            for task in tasks { task.cancel() }
            for cluster in clusters { await cluster.shutDown() }
        }
        self.serviceGroup = ServiceGroup(
            configuration: .init(
                services: [.init(service: self.admin), .init(service: controlPlane), .init(service: self.listeners)],
                gracefulShutdownSignals: [],
                cancellationSignals: [],
                logger: logger
            )
        )
    }

    private static func setStaticEndpoints(
        of cluster: UpstreamCluster,
        from upstream: HeadwayConfiguration.Upstream
    ) throws {
        // Static discovery: the set is known now; DNS discovery publishes through the same call.
        var weights: [SocketAddress: Int] = [:]
        for (address, weight) in upstream.endpointWeights {
            weights[try address.socketAddress()] = weight
        }
        cluster.setEndpoints(try upstream.endpoints.map { try $0.socketAddress() }, weights: weights)
    }

    private static func makeServer(
        _ listener: HeadwayConfiguration.Listener,
        cluster: UpstreamCluster,
        configuration: HeadwayConfiguration,
        group: MultiThreadedEventLoopGroup,
        accessLog: AccessLog?,
        metrics: ProxyMetrics,
        logger: Logger
    ) throws -> ProxyServer {
        ProxyServer(
            address: try listener.listen.socketAddress(),
            cluster: cluster,
            group: group,
            client: configuration.client,
            drainTimeout: configuration.drainTimeout,
            accessLog: accessLog,
            metrics: metrics,
            logger: logger
        )
    }

    /// The configuration running now.
    package var configuration: HeadwayConfiguration { self.running.withLockedValue { $0.configuration } }

    /// The upstreams running now, in the configuration's order.
    package var clusters: [UpstreamCluster] { self.running.withLockedValue { $0.clusters } }

    /// Raises the open-file limit to the hard limit, and warns when even that is below what the listeners
    /// may accept: past it, accepts and connects fail with "too many open files".
    private func raiseOpenFileLimit() {
        guard let limit = OpenFileLimit.raiseToHardLimit() else { return }
        let configuration = self.configuration
        // One descriptor per client connection, and headroom for the pods' connections and the admin port.
        let wanted = configuration.client.maxConnections * max(configuration.listeners.count, 1) + 1024
        let metadata: Logger.Metadata = ["limit.before": "\(limit.before)", "limit.now": "\(limit.after)"]
        if limit.after < wanted {
            self.logger.warning(
                "open-file limit is below client.max_connections for every listener plus 1024 for pods; raise the hard limit (ulimit -Hn) or lower client.max_connections",
                metadata: metadata.merging(["wanted": "\(wanted)"]) { $1 }
            )
        } else if limit.after != limit.before {
            self.logger.info("open-file limit raised", metadata: metadata)
        }
    }

    /// Serves until shutdown, then closes every connection and stops the event loops.
    package func run() async throws {
        self.logger.info("starting headway", metadata: ["config": "\(self.configuration.summary)"])
        self.raiseOpenFileLimit()
        self.resolverThreads.start()
        let (discoveries, clusters) = self.running.withLockedValue { running in
            (running.discoveries.values.map(\.discovery), running.clusters)
        }
        // Resolve every DNS upstream once before accepting requests, so the first ones find pods.
        await withTaskGroup(of: Void.self) { group in
            for discovery in discoveries {
                group.addTask { await discovery.resolveOnce() }
            }
        }
        // Then let the first health checks judge every endpoint (within one check timeout), so that
        // gate_new_endpoints holds from the very first request.
        await withTaskGroup(of: Void.self) { group in
            for cluster in clusters {
                group.addTask { await cluster.waitForFirstChecks() }
            }
        }
        for cluster in clusters {
            cluster.startupFinished()
        }
        self.running.withLockedValue { running in
            running.isServing = true
            for (name, entry) in running.discoveries {
                running.discoveries[name] = (entry.discovery, Self.startDiscovery(entry.discovery))
            }
        }
        do {
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                if self.handlesSignals {
                    let signals = await UnixSignalsSequence(trapping: .sigterm, .sigint, .sighup)
                    tasks.addTask {
                        for await signal in signals {
                            switch signal {
                            case .sighup: await self.reloadFromSource()
                            case .sigint: await self.stopRequested(by: .interrupt)
                            default: await self.stopRequested(by: .terminate)
                            }
                        }
                    }
                }
                if let path = self.watchedFile {
                    tasks.addTask { await self.watch(path) }
                }
                try await self.serviceGroup.run()
                tasks.cancelAll()
            }
        } catch {
            await self.finish()
            throw error
        }
        await self.finish()
        self.logger.info("headway stopped")
    }

    private func finish() async {
        self.boundContinuation.finish()
        await self.accessLog?.finish()
        try? await self.resolverThreads.shutdownGracefully()
        try? await self.group.shutdownGracefully()
    }

    private static func startDiscovery(_ discovery: DNSDiscovery) -> Task<Void, Never> {
        Task { try? await discovery.run() }
    }

    // MARK: Shutdown

    /// Starts the same shutdown as SIGTERM: `shutdown_delay`, then the drain.
    package func triggerGracefulShutdown() async {
        await self.stopRequested(by: .terminate)
    }

    private func stopRequested(by signal: ShutdownSequence.Signal) async {
        let action = self.shutdown.withLock { $0.received(signal) }
        await self.perform(action, after: signal)
    }

    private func perform(_ action: ShutdownSequence.Action, after signal: ShutdownSequence.Signal?) async {
        guard action != .none else { return }
        self.adminState.isShuttingDown = true
        self.running.withLockedValue { $0.isServing = false }
        let name = signal.map { $0 == .interrupt ? "SIGINT" : "SIGTERM" }
        switch action {
        case .none:
            break
        case .reportNotReadyAndWait(let delay):
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
            self.logger.notice(
                signal == nil ? "shutdown_delay over: draining" : "\(name ?? "stop") received: draining"
            )
            await self.serviceGroup.triggerGracefulShutdown()
        }
    }

    // MARK: Reload

    /// SIGHUP: reads the configuration again and applies it, or logs every problem and keeps the one running.
    /// Either way the access log file is opened again (after log rotation).
    private func reloadFromSource() async {
        do {
            try self.accessLog?.reopen()
        } catch {
            self.logger.error("cannot reopen the access log; lines go to the old file", metadata: ["error": "\(error)"])
        }
        guard let source = self.reloadSource else {
            self.logger.notice("SIGHUP: access log reopened (no configuration file to read again)")
            return
        }
        let configuration: HeadwayConfiguration
        do {
            configuration = try source()
        } catch let error as ConfigurationError {
            self.reloadsFailed.increment()
            self.logger.error(
                "configuration reload refused: \(error.problems.count) problem(s); the running configuration stays"
            )
            for problem in error.problems {
                self.logger.error("configuration problem: \(problem)")
            }
            return
        } catch {
            self.reloadsFailed.increment()
            self.logger.error(
                "configuration reload refused; the running configuration stays",
                metadata: ["error": "\(error)"]
            )
            return
        }
        do {
            try await self.reload(configuration)
        } catch {
            self.logger.error(
                "configuration reload refused; the running configuration stays",
                metadata: ["error": "\(error)"]
            )
        }
    }

    /// Applies `configuration` while serving: upstreams that stay are changed in place (their endpoints that
    /// stay keep their connections), new ones start, removed ones stop once their listeners have drained;
    /// listeners are bound and drained as the new configuration says. Requests in flight finish as they
    /// started. Throws (and changes nothing) when a new listener cannot bind.
    package func reload(_ configuration: HeadwayConfiguration) async throws {
        let (old, isServing) = self.running.withLockedValue { ($0.configuration, $0.isServing) }
        let plan = ReloadPlan(from: old, to: configuration)
        guard isServing else {
            self.reloadsFailed.increment()
            throw ReloadRefused.notServing
        }
        if !plan.needsRestart.isEmpty {
            self.logger.warning(
                "configuration reload: \(plan.needsRestart.joined(separator: ", ")) changed and take effect at the next start"
            )
        }
        let loops = Array(self.group.makeIterator())

        // New upstreams exist before the listeners that send to them.
        var addedClusters: [UpstreamCluster] = []
        for name in plan.upstreamsAdded {
            let upstream = configuration.upstream(named: name)!
            addedClusters.append(
                UpstreamCluster(configuration: upstream, eventLoops: loops, metrics: self.metrics, logger: self.logger)
            )
        }
        let clusterNamed = { (name: String) -> UpstreamCluster? in
            addedClusters.first { $0.name == name } ?? self.running.withLockedValue { $0.cluster(named: name) }
        }
        let makeServer = { (listener: HeadwayConfiguration.Listener) in
            try Self.makeServer(
                listener,
                cluster: clusterNamed(listener.upstream)!,
                configuration: configuration,
                group: self.group,
                accessLog: self.accessLog,
                metrics: self.metrics,
                logger: self.logger
            )
        }

        // Bind the listeners on free addresses first: one that cannot bind refuses the whole reload.
        let freedAddresses = Set(plan.listenersRemoved.map(\.listen))
        var boundServers: [(HeadwayConfiguration.Listener, ProxyServer)] = []
        var rebinding: [HeadwayConfiguration.Listener] = []
        for listener in plan.listenersAdded {
            if freedAddresses.contains(listener.listen) {
                rebinding.append(listener)
                continue
            }
            let server = try makeServer(listener)
            do {
                try await server.bind()
            } catch {
                for (_, bound) in boundServers { await bound.stopAccepting() }
                self.reloadsFailed.increment()
                throw error
            }
            boundServers.append((listener, server))
        }

        // Upstreams that stay take their new settings in place.
        var discoveriesToStart: [DNSDiscovery] = []
        for name in plan.upstreamsChanged {
            guard let cluster = clusterNamed(name), let upstream = configuration.upstream(named: name) else { continue }
            cluster.reconfigure(upstream)
            if plan.discoveryChanged.contains(name) {
                let previous = self.running.withLockedValue { $0.discoveries.removeValue(forKey: name) }
                previous?.task?.cancel()
                if let dns = upstream.dns {
                    discoveriesToStart.append(self.makeDiscovery(dns, for: cluster))
                }
            }
            if plan.staticEndpointsChanged.contains(name) {
                try Self.setStaticEndpoints(of: cluster, from: upstream)
            }
        }
        for cluster in addedClusters {
            let upstream = cluster.configuration
            if let dns = upstream.dns {
                discoveriesToStart.append(self.makeDiscovery(dns, for: cluster))
            } else {
                try Self.setStaticEndpoints(of: cluster, from: upstream)
            }
            cluster.startupFinished()
        }

        // Listeners that go stop accepting; those whose address is now free again are bound anew.
        let removedServers = self.running.withLockedValue { running in
            running.servers.filter { server in
                plan.listenersRemoved.contains {
                    $0.upstream == server.cluster.name && (try? $0.listen.socketAddress()) == server.address
                }
            }
        }
        for server in removedServers {
            await server.stopAccepting()
        }
        for listener in rebinding {
            let server = try makeServer(listener)
            do {
                try await server.bind()
                boundServers.append((listener, server))
            } catch {
                self.logger.error(
                    "configuration reload: listener not bound again",
                    metadata: ["listen.address": "\(listener.listen)", "error": "\(error)"]
                )
            }
        }
        for (_, server) in boundServers {
            self.listeners.add(server)
        }

        // Commit: the new configuration, its servers in its order, and the upstreams it names.
        let removedClusters = self.running.withLockedValue { running -> [UpstreamCluster] in
            let kept = running.servers.filter { server in !removedServers.contains { $0 === server } }
            var servers: [ProxyServer] = []
            for listener in configuration.listeners {
                let address = try? listener.listen.socketAddress()
                if let server = boundServers.first(where: { $0.0 == listener })?.1
                    ?? kept.first(where: { $0.address == address && $0.cluster.name == listener.upstream })
                {
                    servers.append(server)
                }
            }
            running.servers = servers
            for server in servers {
                server.update(client: configuration.client, drainTimeout: configuration.drainTimeout)
            }
            let removed = running.clusters.filter { plan.upstreamsRemoved.contains($0.name) }
            running.clusters = configuration.upstreams.compactMap { upstream in
                running.cluster(named: upstream.name) ?? addedClusters.first { $0.name == upstream.name }
            }
            for name in plan.upstreamsRemoved {
                running.discoveries.removeValue(forKey: name)?.task?.cancel()
            }
            for discovery in discoveriesToStart {
                let name = discovery.cluster.name
                running.discoveries[name] = (discovery, Self.startDiscovery(discovery))
            }
            running.configuration = configuration
            running.generation += 1
            running.loadedAt = Date()
            return removed
        }
        self.shutdown.withLock { $0.delayChanged(to: configuration.shutdownDelay) }
        // A removed upstream stops once the listeners that sent to it have drained.
        if !removedClusters.isEmpty {
            let drained = removedServers.compactMap(\.drained)
            Task {
                for future in drained { try? await future.get() }
                for cluster in removedClusters { await cluster.shutDown() }
            }
        }
        self.reloadsSucceeded.increment()
        let generation = self.running.withLockedValue { $0.generation }
        self.logger.notice(
            "configuration reloaded",
            metadata: ["generation": "\(generation)", "changes": "\(plan.summary)"]
        )
    }

    /// Polls `path` (a ConfigMap's file is replaced through a symlink, which no inotify watch on the file
    /// itself would see) and reloads when its content changed.
    private func watch(_ path: String) async {
        var last = FileManager.default.contents(atPath: path)
        while !Task.isCancelled {
            try? await Task.sleep(for: Self.watchInterval)
            let now = FileManager.default.contents(atPath: path)
            guard let now, now != last else { continue }
            last = now
            self.logger.info("configuration file changed; reloading", metadata: ["config.path": "\(path)"])
            await self.reloadFromSource()
        }
    }

    static let watchInterval: Duration = .seconds(2)

    private func makeDiscovery(_ settings: DNSDiscoverySettings, for cluster: UpstreamCluster) -> DNSDiscovery {
        DNSDiscovery(
            settings: settings,
            cluster: cluster,
            threadPool: self.resolverThreads,
            metrics: self.metrics,
            logger: self.logger
        )
    }

    // MARK: Addresses

    /// Waits until the admin endpoint and every listener are bound, and returns their addresses (useful
    /// with port 0). Returns `nil` if the application stopped first.
    package func waitUntilBound() async -> (admin: SocketAddress, listeners: [SocketAddress])? {
        func current() -> (admin: SocketAddress, listeners: [SocketAddress])? {
            let admin = self.bound.withLockedValue { bound in bound.listeners ? bound.admin : nil }
            guard let admin else { return nil }
            return (admin, self.running.withLockedValue { $0.servers.compactMap(\.boundAddress) })
        }
        if let addresses = current() { return addresses }
        for await _ in self.boundStream {
            if let addresses = current() { return addresses }
        }
        return current()
    }
}

/// Why ``HeadwayApplication/reload(_:)`` changed nothing.
package enum ReloadRefused: Error, CustomStringConvertible {
    /// Start-up has not finished, or shutdown has begun.
    case notServing

    package var description: String { "Headway is not serving (starting or stopping)" }
}

/// A service that only waits for graceful shutdown, then runs `stop`.
private struct StopOnShutdown: Service {
    let stop: @Sendable () async -> Void

    func run() async throws {
        try? await gracefulShutdown()
        await self.stop()
    }
}
