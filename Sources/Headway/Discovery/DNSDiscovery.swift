import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import ServiceLifecycle

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// How a DNS upstream is resolved: the `service:` name and the upstream's `dns:` block.
package struct DNSDiscoverySettings: Sendable, Equatable {
    package var name: String
    /// The port of every address; unused in SRV mode, where each record carries its own.
    package var port: Int
    /// SRV mode: `name` is an SRV name such as `_http._tcp.web`.
    package var isSRV = false
    package var servers: [HostAndPort] = []
    /// A resolv.conf-style file whose search list, ndots and name servers replace the system's.
    package var resolvConf: ResolvConf?
    package var resolvConfPath: String?
    package var refresh: TimeAmount = .seconds(5)
    package var respectTTL = false
    package var minRefresh: TimeAmount = .seconds(1)
    package var maxRefresh: TimeAmount = .seconds(60)
    package var family: AddressFamily = .auto

    package init(name: String, port: Int) {
        self.name = name
        self.port = port
    }

    var resolver: DNSResolver {
        // Servers given explicitly win over the resolv_conf's, which win over the system's.
        DNSResolver(
            servers: self.servers.isEmpty ? (self.resolvConf?.nameservers ?? []) : self.servers,
            resolvConf: self.resolvConf,
            family: self.family
        )
    }
}

/// Keeps an upstream's endpoint set equal to what DNS says its name resolves to, continuously.
///
/// A thin service: each resolution runs on a thread pool (libresolv blocks); what an answer means (the set,
/// the next delay, scale-to-zero confirmation, backoff) is decided by ``DNSDiscovery/StateMachine``.
final class DNSDiscovery: Service, Sendable {
    let cluster: UpstreamCluster
    private let threadPool: NIOThreadPool
    private let logger: Logger
    private let metrics: DiscoveryMetrics
    private let events: EventLog
    private let machine: NIOLockedValueBox<StateMachine>

    var settings: DNSDiscoverySettings { self.machine.withLockedValue { $0.settings } }

    init(
        settings: DNSDiscoverySettings,
        cluster: UpstreamCluster,
        threadPool: NIOThreadPool,
        metrics: ProxyMetrics,
        logger: Logger
    ) {
        self.machine = NIOLockedValueBox(StateMachine(settings: settings))
        self.cluster = cluster
        self.threadPool = threadPool
        self.metrics = metrics.discoveryMetrics(upstream: cluster.name)
        self.events = metrics.events
        var logger = logger
        logger[metadataKey: "upstream"] = "\(cluster.name)"
        logger[metadataKey: "dns.name"] = "\(settings.name)"
        self.logger = logger
    }

    var status: StateMachine.Status { self.machine.withLockedValue { $0.status } }

    func run() async throws {
        do {
            try await cancelWhenGracefulShutdown {
                // Start-up resolves once before the services run: wait what that answer asked for.
                var delay = self.machine.withLockedValue { $0.nextDelay } ?? .zero
                while true {
                    try await Task.sleep(nanoseconds: UInt64(max(delay.nanoseconds, 0)))
                    delay = await self.resolveOnce()
                }
            }
        } catch is CancellationError {
            // Shutdown (graceful or not) ends the refresh loop; that is a normal end for this service.
        }
    }

    /// Resolves the name once, applies the outcome to the endpoint set, and returns the delay until the next.
    @discardableResult
    func resolveOnce() async -> TimeAmount {
        let settings = self.settings
        let resolver = settings.resolver
        let result: Result<DNSAnswer, DNSResolutionError>
        do {
            result = try await self.threadPool.runIfActive {
                Result { () throws(DNSResolutionError) in
                    settings.isSRV
                        ? try resolver.resolveSRV(settings.name)
                        : try resolver.resolve(settings.name, port: settings.port)
                }
            }
        } catch {
            result = .failure(.failure("resolver thread pool stopped"))
        }
        let now = Date()
        let (action, delay) = self.machine.withLockedValue { machine in
            let action = machine.resolved(result, now: now)
            return (action, machine.jittered(action.delay, factor: Double.random(in: 0.9...1.1), now: now))
        }
        self.perform(action, at: now)
        return delay
    }

    private func perform(_ action: StateMachine.Action, at now: Date) {
        self.metrics.resolved(action.result)
        if action.result == .success {
            self.metrics.lastSuccess(at: now)
        }
        switch action.notice {
        case .none:
            break
        case .recovered(let addresses):
            self.logger.notice("DNS resolution recovered", metadata: ["dns.addresses": "\(addresses)"])
            self.events.record(upstream: self.cluster.name, "DNS resolution recovered: \(addresses) addresses")
        case .confirmedEmpty(let error):
            self.logger.warning(
                "DNS confirms the service has no pods; requests now get 503",
                metadata: ["error": "\(error)"]
            )
            self.events.record(upstream: self.cluster.name, "DNS confirms no pods: \(error)")
        case .awaitingConfirmation(let error):
            self.logger.info(
                "DNS answered with no pods; confirming before emptying the set",
                metadata: ["error": "\(error)"]
            )
        case .failing(let error, let keeping):
            self.logger.warning(
                "DNS resolution failing; keeping the last known endpoints",
                metadata: ["error": "\(error)", "dns.addresses": "\(keeping)"]
            )
            self.events.record(upstream: self.cluster.name, "DNS failing (keeping \(keeping) endpoints): \(error)")
        }
        switch action.update {
        case .none:
            break
        case .replace(let addresses, let weights):
            self.cluster.setEndpoints(addresses, weights: weights)
        case .empty(let reason):
            self.cluster.setEndpoints([], emptyReason: reason)
        }
    }
}
