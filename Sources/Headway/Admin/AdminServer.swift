import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import Prometheus
import ServiceLifecycle
import Synchronization

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The operator's window: `GET /` (the live page, fed by `/live.json`), `GET /endpoints` (JSON), `GET /healthz`,
/// `GET /ready` and `GET /metrics` (Prometheus text).
///
/// It runs as the first service, so it stops last: while the listeners drain it still answers, and `/ready`
/// says 503 so that Kubernetes stops sending new traffic.
package final class AdminServer: Service, Sendable {
    let address: SocketAddress
    let state: AdminState
    let group: any EventLoopGroup
    let logger: Logger
    let onBound: @Sendable (SocketAddress) -> Void

    init(
        address: SocketAddress,
        state: AdminState,
        group: any EventLoopGroup,
        logger: Logger,
        onBound: @escaping @Sendable (SocketAddress) -> Void
    ) {
        self.address = address
        self.state = state
        self.group = group
        self.logger = logger
        self.onBound = onBound
    }

    package func run() async throws {
        let state = self.state
        let bootstrap = ServerBootstrap(group: self.group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(AdminHandler(state: state))
                }
            }
        let channel: any Channel
        do {
            channel = try await bootstrap.bind(to: self.address).get()
        } catch {
            throw BindError.binding(self.address, for: "the admin endpoint", failedWith: error)
        }
        let bound = channel.localAddress ?? self.address
        self.logger.info(
            "admin endpoint listening",
            metadata: ["admin.address": "\(UpstreamCluster.label(for: bound))"]
        )
        self.onBound(bound)
        // The live page's figures: a sample a second while the process runs.
        let sampler = Task {
            while !Task.isCancelled {
                await state.live.sample(state.clusters)
                try? await Task.sleep(for: .seconds(1))
            }
        }
        defer { sampler.cancel() }
        // The channel closes on graceful shutdown and on cancellation: waiting on its close future is not
        // cancellable by itself, and a service that does not return would hold the whole group.
        try await withTaskCancellationHandler {
            try await withGracefulShutdownHandler {
                try await channel.closeFuture.get()
            } onGracefulShutdown: {
                state.isShuttingDown = true
                channel.close(promise: nil)
            }
        } onCancel: {
            channel.close(promise: nil)
        }
    }
}

/// What the admin endpoint reports, shared with the rest of the process.
final class AdminState: Sendable {
    /// What is running now: a reload changes the upstreams and the configuration's generation.
    struct Running: Sendable {
        var clusters: [UpstreamCluster]
        var discoveries: [DNSDiscovery]
        var generation: Int
        var loadedAt: Date
    }

    private let running: @Sendable () -> Running
    let metrics: ProxyMetrics
    /// The last minute of samples behind the live page.
    let live = LiveStats()
    let readyRequiresEndpoints: Bool
    private let shuttingDown = Atomic<Bool>(false)

    init(metrics: ProxyMetrics, readyRequiresEndpoints: Bool, running: @escaping @Sendable () -> Running) {
        self.running = running
        self.readyRequiresEndpoints = readyRequiresEndpoints
        self.metrics = metrics
    }

    var clusters: [UpstreamCluster] { self.running().clusters }
    var runningNow: Running { self.running() }

    var isShuttingDown: Bool {
        get { self.shuttingDown.load(ordering: .relaxed) }
        set { self.shuttingDown.store(newValue, ordering: .relaxed) }
    }

    /// Ready while not shutting down and every upstream has a healthy, non-ejected endpoint (unless
    /// `ready_requires_endpoints` is off).
    var readiness: (ready: Bool, reason: String) {
        if self.isShuttingDown { return (false, "shutting down") }
        guard self.readyRequiresEndpoints else { return (true, "ready") }
        for cluster in self.clusters {
            if let reason = cluster.unavailableReason {
                return (false, "upstream '\(cluster.name)' \(reason)")
            }
        }
        return (true, "ready")
    }

    /// The `/metrics` text, once every event loop has handed over what it counted of the responses.
    func metricsExposition(on eventLoop: any EventLoop) -> EventLoopFuture<[UInt8]> {
        let perUpstream = self.clusters.map { cluster in
            cluster.responseTotals(on: eventLoop).map { totals in
                (
                    endpoints: totals.endpoints.map {
                        TrafficExposition.Row(upstream: cluster.name, endpoint: $0.endpoint.label, traffic: $0.traffic)
                    },
                    clients: TrafficExposition.ClientRow(upstream: cluster.name, responses: totals.clients)
                )
            }
        }
        let metrics = self.metrics
        return EventLoopFuture.whenAllSucceed(perUpstream, on: eventLoop).map { perUpstream in
            metrics.exposition(
                traffic: perUpstream.flatMap(\.endpoints),
                clients: perUpstream.map(\.clients)
            )
        }
    }

    struct EndpointsDocument: Codable {
        struct Upstream: Codable {
            var name: String
            /// What Headway speaks to the pods: http1 or h2c.
            var `protocol`: String
            var policy: String
            var discovery: Discovery
            /// `off`, or the active checks' settings.
            var health_checks: String
            var healthy_endpoints: Int
            /// Too few endpoints are healthy: requests are spread over all of them.
            var panic_mode: Bool
            var endpoints: [Endpoint]
        }
        /// Where the endpoints come from; for DNS, the resolver's last answer and its timing.
        struct Discovery: Codable {
            var type: String
            var service: String?
            var addresses: [String]?
            var ttl: UInt32?
            var resolved_at: String?
            var age_seconds: Double?
            var next_resolution_at: String?
            var last_error: String?
            var consecutive_failures: Int?
        }
        struct Endpoint: Codable {
            var address: String
            var state: String
            /// unknown, healthy, unhealthy or ejected.
            var health: String
            var last_check: String?
            var last_check_detail: String?
            var last_check_at: String?
            var consecutive_check_failures: Int
            var consecutive_5xx: Int
            var consecutive_gateway_failures: Int
            var ejections: Int
            var ejected_until: String?
            var last_ejection_reason: String?
            var weight: Int
            var in_flight: Int
            var requests: Int
            var failures: Int
            var connections: Int
            var idle_connections: Int
            /// h2c upstreams only: the HTTP/2 connections open to the endpoint (all of `connections`), and the
            /// streams in flight on them (each a request, as `in_flight` counts them).
            var http2_connections: Int?
            var streams_in_flight: Int?
        }
        /// Which configuration is running: 1 at start, one more for each reload that applied.
        struct Configuration: Codable {
            var generation: Int
            var loaded_at: String
        }
        var configuration: Configuration
        var upstreams: [Upstream]
    }

    func discoveryDocument(
        for cluster: UpstreamCluster,
        among discoveries: [DNSDiscovery]
    ) -> EndpointsDocument.Discovery {
        guard let discovery = discoveries.first(where: { $0.cluster === cluster }) else {
            return .init(type: "static")
        }
        let status = discovery.status
        let format = Date.ISO8601FormatStyle(includingFractionalSeconds: true)
        return .init(
            type: "dns",
            service: discovery.settings.isSRV
                ? "srv \(discovery.settings.name)" : "\(discovery.settings.name):\(discovery.settings.port)",
            addresses: status.addresses,
            ttl: status.ttl,
            resolved_at: status.resolvedAt.map { $0.formatted(format) },
            age_seconds: status.resolvedAt.map { Date().timeIntervalSince($0) },
            next_resolution_at: status.nextResolutionAt.map { $0.formatted(format) },
            last_error: status.lastError,
            consecutive_failures: status.consecutiveFailures
        )
    }

    var endpointsDocument: EndpointsDocument {
        let format = Date.ISO8601FormatStyle(includingFractionalSeconds: true)
        let running = self.running()
        return EndpointsDocument(
            configuration: .init(generation: running.generation, loaded_at: running.loadedAt.formatted(format)),
            upstreams: running.clusters.map { cluster in
                let health = cluster.healthSummary
                let isHTTP2 = cluster.configuration.httpProtocol == .h2c
                return EndpointsDocument.Upstream(
                    name: cluster.name,
                    protocol: cluster.configuration.httpProtocol.rawValue,
                    policy: cluster.configuration.policy.rawValue,
                    discovery: self.discoveryDocument(for: cluster, among: running.discoveries),
                    health_checks: cluster.configuration.healthCheck?.summary ?? "off",
                    healthy_endpoints: health.healthy,
                    panic_mode: health.isInPanic,
                    endpoints: cluster.endpointStatuses.map { status in
                        EndpointsDocument.Endpoint(
                            address: status.address,
                            state: status.state,
                            health: status.health,
                            last_check: status.lastCheck,
                            last_check_detail: status.lastCheckDetail,
                            last_check_at: status.lastCheckAt.map { $0.formatted(format) },
                            consecutive_check_failures: status.consecutiveCheckFailures,
                            consecutive_5xx: status.consecutive5xx,
                            consecutive_gateway_failures: status.consecutiveGatewayFailures,
                            ejections: status.ejections,
                            ejected_until: status.ejectedUntil.map { $0.formatted(format) },
                            last_ejection_reason: status.lastEjectionReason,
                            weight: status.weight,
                            in_flight: status.inFlight,
                            requests: status.requests,
                            failures: status.failures,
                            connections: status.connections,
                            idle_connections: status.idleConnections,
                            http2_connections: isHTTP2 ? status.connections : nil,
                            streams_in_flight: isHTTP2 ? status.inFlight : nil
                        )
                    }
                )
            }
        )
    }
}

private final class AdminHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let state: AdminState
    private var request: HTTPRequestHead?

    init(state: AdminState) {
        self.state = state
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch self.unwrapInboundIn(data) {
        case .head(let head):
            self.request = head
        case .body:
            break
        case .end:
            guard let head = self.request else { return }
            self.request = nil
            self.respond(to: head, on: context.eventLoop).assumeIsolated().whenSuccess { status, contentType, body in
                self.write(status, contentType, body, to: head, context: context)
            }
        }
    }

    private func write(
        _ status: HTTPResponseStatus,
        _ contentType: String,
        _ body: [UInt8],
        to head: HTTPRequestHead,
        context: ChannelHandlerContext
    ) {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: contentType)
        headers.add(name: "Content-Length", value: String(body.count))
        if !head.isKeepAlive { headers.add(name: "Connection", value: "close") }
        context.write(
            self.wrapOutboundOut(.head(.init(version: head.version, status: status, headers: headers))),
            promise: nil
        )
        if head.method != .HEAD {
            context.write(
                self.wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: body)))),
                promise: nil
            )
        }
        let keepAlive = head.isKeepAlive
        context.writeAndFlush(self.wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in
            if !keepAlive { context.close(promise: nil) }
        }
    }

    typealias Response = (status: HTTPResponseStatus, contentType: String, body: [UInt8])

    /// The answer to `head`; `/metrics` waits for every event loop's figures, the other pages are at hand.
    private func respond(to head: HTTPRequestHead, on eventLoop: any EventLoop) -> EventLoopFuture<Response> {
        guard head.method == .GET || head.method == .HEAD else {
            return eventLoop.makeSucceededFuture(
                (.methodNotAllowed, "text/plain; charset=utf-8", Array("use GET\n".utf8))
            )
        }
        let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
        guard path == "/metrics" else { return eventLoop.makeSucceededFuture(self.respond(toPath: path)) }
        return self.state.metricsExposition(on: eventLoop)
            .map { (.ok, "text/plain; version=0.0.4; charset=utf-8", $0) }
            .recover { (.serviceUnavailable, "text/plain; charset=utf-8", Array("metrics unavailable: \($0)\n".utf8)) }
    }

    private func respond(toPath path: String) -> Response {
        switch path {
        case "/":
            return (.ok, "text/html; charset=utf-8", LivePage.html)
        case "/live.json":
            let encoder = JSONEncoder()
            encoder.dateEncodingStrategy = .iso8601
            let body = (try? encoder.encode(self.state.liveDocument)).map(Array.init) ?? []
            return (.ok, "application/json", body)
        case "/endpoints":
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            let body = (try? encoder.encode(self.state.endpointsDocument)).map(Array.init) ?? []
            return (.ok, "application/json", body + [UInt8(ascii: "\n")])
        case "/healthz":
            // Liveness: the process serves. Readiness (pods, shutdown) is /ready.
            return (.ok, "text/plain; charset=utf-8", Array("ok\n".utf8))
        case "/ready":
            let (ready, reason) = self.state.readiness
            return (ready ? .ok : .serviceUnavailable, "text/plain; charset=utf-8", Array((reason + "\n").utf8))
        default:
            return (
                .notFound, "text/plain; charset=utf-8",
                Array("not found; try /, /endpoints, /healthz, /ready or /metrics\n".utf8)
            )
        }
    }
}
