import Logging
import NIOCore
import Synchronization

/// The control-plane view of one upstream: the current endpoint set and one ``LoopCluster`` per event loop.
///
/// Discovery calls ``setEndpoints(_:)`` with the full set each time it learns something; the cluster diffs it
/// against what it has (new addresses get an ``Endpoint``, unchanged ones keep theirs with their counters,
/// missing ones start draining) and posts an immutable snapshot to every loop. Loops never take this lock.
public final class UpstreamCluster: Sendable {
    public let configuration: HeadwayConfiguration.Upstream
    let loops: [LoopCluster]
    let metrics: UpstreamMetrics
    private let proxyMetrics: ProxyMetrics
    private let logger: Logger
    private let state = Mutex(State())

    private struct State {
        var active: [Endpoint] = []
        /// Removed endpoints that still have requests in flight or open connections.
        var draining: [Endpoint] = []
        var version = 0
    }

    init(
        configuration: HeadwayConfiguration.Upstream,
        eventLoops: [any EventLoop],
        metrics: ProxyMetrics,
        logger: Logger
    ) {
        self.configuration = configuration
        self.proxyMetrics = metrics
        let upstreamMetrics = metrics.upstreamMetrics(upstream: configuration.name)
        self.metrics = upstreamMetrics
        var logger = logger
        logger[metadataKey: "upstream"] = "\(configuration.name)"
        self.logger = logger
        self.loops = eventLoops.map {
            LoopCluster(eventLoop: $0, configuration: configuration, metrics: upstreamMetrics, logger: logger)
        }
    }

    /// The loop-confined half of this upstream that serves connections accepted on `eventLoop`.
    func loopCluster(for eventLoop: any EventLoop) -> LoopCluster {
        for loop in self.loops where loop.eventLoop === eventLoop {
            return loop
        }
        preconditionFailure("event loop \(eventLoop) does not belong to this proxy's group")
    }

    /// Replaces the endpoint set with `addresses`; requests in flight to removed endpoints finish undisturbed.
    ///
    /// - Parameters:
    ///   - weights: relative weights by address (from SRV records), kept for weighted policies.
    ///   - emptyReason: why the set is empty, for the 503 that requests then get (e.g. what DNS said).
    public func setEndpoints(_ addresses: [SocketAddress], weights: [SocketAddress: Int] = [:], emptyReason: String? = nil) {
        let (snapshot, added, removed, draining) = self.state.withLock { state -> (EndpointSnapshot, [Endpoint], [Endpoint], Int) in
            var byAddress: [SocketAddress: Endpoint] = [:]
            for endpoint in state.active { byAddress[endpoint.address] = endpoint }
            var next: [Endpoint] = []
            var added: [Endpoint] = []
            var seen = Set<SocketAddress>()
            for address in addresses where seen.insert(address).inserted {
                if let existing = byAddress[address] {
                    next.append(existing)
                } else {
                    // A pod that comes back while still draining is revived with its counters.
                    if let index = state.draining.firstIndex(where: { $0.address == address }) {
                        let revived = state.draining.remove(at: index)
                        revived.state = .active
                        next.append(revived)
                    } else {
                        let label = Self.label(for: address)
                        let endpoint = Endpoint(
                            address: address,
                            label: label,
                            metrics: self.proxyMetrics.endpointMetrics(upstream: self.configuration.name, endpoint: label)
                        )
                        next.append(endpoint)
                        added.append(endpoint)
                    }
                }
            }
            let removed = state.active.filter { !seen.contains($0.address) }
            for endpoint in removed { endpoint.state = .draining }
            for endpoint in next { endpoint.weight = weights[endpoint.address] ?? 1 }
            state.draining.append(contentsOf: removed)
            state.active = next
            state.version += 1
            let snapshot = EndpointSnapshot(version: state.version, endpoints: next, emptyReason: next.isEmpty ? emptyReason : nil)
            return (snapshot, added, removed, state.draining.count)
        }
        for endpoint in added {
            self.logger.info("endpoint added", metadata: ["endpoint.address": "\(endpoint.label)"])
        }
        for endpoint in removed {
            self.logger.info("endpoint removed; draining", metadata: ["endpoint.address": "\(endpoint.label)"])
        }
        self.metrics.endpointCountsChanged(active: snapshot.endpoints.count, draining: draining)
        for loop in self.loops {
            loop.eventLoop.execute { loop.install(snapshot) }
        }
    }

    /// Active endpoints, then draining ones that still have work; fully drained endpoints are forgotten here.
    public var endpoints: [Endpoint] {
        self.state.withLock { state in
            let finished = state.draining.filter(\.isQuiet)
            for endpoint in finished { endpoint.metrics.destroy() }
            state.draining.removeAll { endpoint in finished.contains { $0 === endpoint } }
            if !finished.isEmpty {
                self.metrics.endpointCountsChanged(active: state.active.count, draining: state.draining.count)
            }
            return state.active + state.draining
        }
    }

    /// Whether at least one endpoint may take a request now (for `/ready`).
    public var hasAvailableEndpoint: Bool {
        self.state.withLock { !$0.active.isEmpty }
    }

    static func label(for address: SocketAddress) -> String {
        let ip = address.ipAddress ?? "\(address)"
        let port = address.port ?? 0
        return address.protocol == .inet6 ? "[\(ip)]:\(port)" : "\(ip):\(port)"
    }
}

/// An immutable endpoint set, as posted to every loop.
struct EndpointSnapshot: Sendable {
    var version: Int
    var endpoints: [Endpoint]
    /// Why there is no endpoint, when there is none and the source knows.
    var emptyReason: String?
}
