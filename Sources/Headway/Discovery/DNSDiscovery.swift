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
/// - Each resolution runs on a thread pool (libresolv blocks), every `refresh` (or the answer's TTL,
///   clamped to `[min_refresh, max_refresh]`, with `respect_ttl`), with ±10% jitter so that a fleet of
///   sidecars does not query in lockstep.
/// - A failed query (timeout, SERVFAIL, no server) keeps the last known set and is retried with backoff
///   (0.5 s doubling, capped at `refresh`); the failure is logged once when it starts and once when it ends.
/// - NXDOMAIN or an empty answer for a name that had pods empties the set only when a second query, a
///   second later, confirms it: a single odd answer does not take every pod away.
final class DNSDiscovery: Service, Sendable {
    let settings: DNSDiscoverySettings
    let cluster: UpstreamCluster
    private let threadPool: NIOThreadPool
    private let logger: Logger
    private let metrics: DiscoveryMetrics
    private let state = NIOLockedValueBox(State())

    struct State {
        var addresses: [String] = []
        var ttl: UInt32?
        var resolvedAt: Date?
        var nextResolutionAt: Date?
        var lastError: String?
        var consecutiveFailures = 0
        /// An NXDOMAIN or empty answer waits for confirmation by the next query.
        var scaleToZeroPending = false
        var nextDelay: TimeAmount?
    }

    init(
        settings: DNSDiscoverySettings,
        cluster: UpstreamCluster,
        threadPool: NIOThreadPool,
        metrics: ProxyMetrics,
        logger: Logger
    ) {
        self.settings = settings
        self.cluster = cluster
        self.threadPool = threadPool
        self.metrics = metrics.discoveryMetrics(upstream: cluster.configuration.name)
        var logger = logger
        logger[metadataKey: "upstream"] = "\(cluster.configuration.name)"
        logger[metadataKey: "dns.name"] = "\(settings.name)"
        self.logger = logger
    }

    var status: State { self.state.withLockedValue { $0 } }

    func run() async throws {
        do {
            try await cancelWhenGracefulShutdown {
                var delay = self.state.withLockedValue { $0.nextDelay } ?? .zero
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
        let resolver = self.settings.resolver
        let name = self.settings.name
        let port = self.settings.port
        let isSRV = self.settings.isSRV
        let result: Result<DNSAnswer, DNSResolutionError>
        do {
            result = try await self.threadPool.runIfActive {
                Result { () throws(DNSResolutionError) in
                    isSRV ? try resolver.resolveSRV(name) : try resolver.resolve(name, port: port)
                }
            }
        } catch {
            result = .failure(.failure("resolver thread pool stopped"))
        }
        let delay = self.apply(result)
        return delay
    }

    private func apply(_ result: Result<DNSAnswer, DNSResolutionError>) -> TimeAmount {
        let now = Date()
        var delay = self.settings.refresh
        switch result {
        case .success(let answer) where !answer.addresses.isEmpty:
            self.metrics.resolved(.success)
            self.metrics.lastSuccess(at: now)
            let addresses = answer.addresses.sorted { UpstreamCluster.label(for: $0) < UpstreamCluster.label(for: $1) }
            let wasFailing = self.state.withLockedValue { state -> Bool in
                let wasFailing = state.consecutiveFailures > 0
                state.addresses = addresses.map(UpstreamCluster.label(for:))
                state.ttl = answer.ttl
                state.resolvedAt = now
                state.lastError = nil
                state.consecutiveFailures = 0
                state.scaleToZeroPending = false
                return wasFailing
            }
            if wasFailing {
                self.logger.notice("DNS resolution recovered", metadata: ["dns.addresses": "\(addresses.count)"])
            }
            self.cluster.setEndpoints(addresses, weights: answer.weights)
            if self.settings.respectTTL {
                let ttl = TimeAmount.seconds(Int64(answer.ttl))
                delay = .nanoseconds(
                    min(
                        max(ttl.nanoseconds, self.settings.minRefresh.nanoseconds),
                        self.settings.maxRefresh.nanoseconds
                    )
                )
            }

        case .success, .failure(.nameNotFound), .failure(.noRecords):
            let error: DNSResolutionError = if case .failure(let error) = result { error } else { .noRecords }
            self.metrics.resolved(error == .nameNotFound ? .nameNotFound : .noRecords)
            let (confirmed, hadPods) = self.state.withLockedValue { state -> (Bool, Bool) in
                let hadPods = !state.addresses.isEmpty
                let confirmed = state.scaleToZeroPending || !hadPods
                state.scaleToZeroPending = !confirmed
                state.lastError = error.description
                if confirmed {
                    state.addresses = []
                    state.ttl = nil
                    state.resolvedAt = now
                }
                return (confirmed, hadPods)
            }
            if confirmed {
                if hadPods {
                    self.logger.warning(
                        "DNS confirms the service has no pods; requests now get 503",
                        metadata: ["error": "\(error)"]
                    )
                }
                self.cluster.setEndpoints([], emptyReason: "DNS name \(self.settings.name) has no pods (\(error))")
            } else {
                self.logger.info(
                    "DNS answered with no pods; confirming before emptying the set",
                    metadata: ["error": "\(error)"]
                )
                delay = min(.seconds(1), self.settings.refresh)
            }

        case .failure(let error):
            self.metrics.resolved(.failure)
            let failures = self.state.withLockedValue { state -> Int in
                state.consecutiveFailures += 1
                state.lastError = error.description
                return state.consecutiveFailures
            }
            if failures == 1 {
                self.logger.warning(
                    "DNS resolution failing; keeping the last known endpoints",
                    metadata: ["error": "\(error)", "dns.addresses": "\(self.status.addresses.count)"]
                )
            }
            let backoff = TimeAmount.milliseconds(500 * Int64(1 << min(failures - 1, 10)))
            delay = min(backoff, self.settings.refresh)
        }
        // ±10% jitter so that a fleet of sidecars does not query in lockstep.
        let jittered = TimeAmount.nanoseconds(Int64(Double(delay.nanoseconds) * Double.random(in: 0.9...1.1)))
        self.state.withLockedValue {
            $0.nextDelay = jittered
            $0.nextResolutionAt = now.addingTimeInterval(Double(jittered.nanoseconds) / 1e9)
        }
        return jittered
    }
}
