import Logging
import NIOCore
import NIOExtras
import NIOHTTP1
import NIOHTTP2
import NIOPosix
import Prometheus
import ServiceLifecycle
import Synchronization

/// One listener: accepts client connections and hands each to a ``DownstreamHandler`` on its own loop.
///
/// ``bind()`` takes the address (so that start-up and a reload learn at once when it is taken), ``serve()``
/// runs until the listener drains. A drain (graceful shutdown, or ``stopAccepting()`` when a reload removes
/// the listener) stops accepting, lets every connection finish its current exchange (responses then carry
/// `Connection: close`), and ends once all have closed or `drain_timeout` has passed.
package final class ProxyServer: Sendable {
    let address: SocketAddress
    let cluster: UpstreamCluster
    let group: any EventLoopGroup
    /// Client limits and the drain timeout, which a reload may change for connections accepted afterwards.
    private let settings: Mutex<Settings>
    /// Client connections open on this listener, against `client.max_connections`.
    let openConnections = Atomic<Int>(0)
    private let openConnectionsGauge: Gauge
    private let http2Metrics: ClientHTTP2Metrics
    let accessLog: AccessLog?
    let logger: Logger
    private let drainStarted = Atomic<Bool>(false)
    /// Set by ``bind()``.
    private let listening: Mutex<Listening?> = Mutex(nil)

    private struct Listening: Sendable {
        let channel: any Channel
        /// Released once drained: its deinit completes a promise on a loop, which must still run then.
        var quiesce: ServerQuiescingHelper?
        /// Succeeded when the listener has drained.
        let drained: EventLoopPromise<Void>
    }

    struct Settings: Sendable {
        var client: ClientSettings
        var drainTimeout: TimeAmount
    }

    init(
        address: SocketAddress,
        cluster: UpstreamCluster,
        group: any EventLoopGroup,
        client: ClientSettings,
        drainTimeout: TimeAmount,
        accessLog: AccessLog?,
        metrics: ProxyMetrics,
        logger: Logger
    ) {
        self.settings = Mutex(Settings(client: client, drainTimeout: drainTimeout))
        let listener = UpstreamCluster.label(for: address)
        self.openConnectionsGauge = metrics.clientConnections(listener: listener)
        self.http2Metrics = metrics.clientHTTP2(listener: listener)
        self.address = address
        self.cluster = cluster
        self.group = group
        self.accessLog = accessLog
        self.logger = logger
    }

    /// A reload's client limits and drain timeout; connections open now keep the limits they started with.
    func update(client: ClientSettings, drainTimeout: TimeAmount) {
        self.settings.withLock { $0 = Settings(client: client, drainTimeout: drainTimeout) }
    }

    /// The address the listener is bound to (the kernel's pick when the configuration said port 0).
    var boundAddress: SocketAddress? { self.listening.withLock { $0?.channel.localAddress } }

    /// Completes when the listener has drained; `nil` if it was never bound.
    var drained: EventLoopFuture<Void>? { self.listening.withLock { $0?.drained.futureResult } }

    /// The pipeline of an accepted client connection: its first bytes tell HTTP/1 from HTTP/2 (prior
    /// knowledge, h2c), then HTTP/1 is ``DownstreamHandler`` alone, and HTTP/2 is swift-nio-http2's framing
    /// and an ``HTTP2ClientConnection`` running a ``DownstreamHandler`` for each stream.
    ///
    /// No NIO HTTP/1 codec and no pipelining helper: requests are parsed by ``RequestParser``, responses
    /// leave as bytes that Headway framed, and ``DownstreamHandler`` orders pipelined requests itself
    /// (NIO's helper would drop and re-arm read interest on every request, two `epoll_ctl` calls each).
    static func configureClientPipeline(
        _ pipeline: ChannelPipeline.SynchronousOperations,
        cluster: LoopCluster,
        client: ClientSettings,
        accessLog: LoopAccessLog?,
        http2Metrics: ClientHTTP2Metrics? = nil,
        logger: Logger
    ) throws {
        try pipeline.addHandler(
            ClientProtocolDetector(idleTimeout: client.idleTimeout) { detected, pipeline in
                switch detected {
                case .http1:
                    try pipeline.addHandler(
                        DownstreamHandler(cluster: cluster, client: client, accessLog: accessLog, logger: logger)
                    )
                case .http2:
                    try Self.configureHTTP2(
                        pipeline,
                        cluster: cluster,
                        client: client,
                        metrics: http2Metrics,
                        logger: logger,
                        makeStreamHandler: {
                            http2Metrics?.streams.increment()
                            return DownstreamHandler(
                                cluster: cluster,
                                client: client,
                                accessLog: accessLog,
                                logger: logger
                            )
                        }
                    )
                }
            }
        )
    }

    /// HTTP/2 framing for a client connection: the limits it advertises (`max_concurrent_streams`, the header
    /// list size from `max_request_head`), swift-nio-http2's defences against resets and other floods
    /// (CVE-2023-44487 among them), a graceful close (GOAWAY, then the open streams finish) on quiesce, and an
    /// ``HTTP2ClientConnection`` that runs the streams, a ``DownstreamHandler`` each, without a channel each.
    private static func configureHTTP2(
        _ pipeline: ChannelPipeline.SynchronousOperations,
        cluster: LoopCluster,
        client: ClientSettings,
        metrics: ClientHTTP2Metrics?,
        logger: Logger,
        makeStreamHandler: @escaping () -> any HTTP2ClientStreamHandler
    ) throws {
        var connection = NIOHTTP2Handler.ConnectionConfiguration()
        connection.initialSettings = [
            HTTP2Setting(parameter: .maxConcurrentStreams, value: client.maxConcurrentStreams),
            HTTP2Setting(parameter: .maxHeaderListSize, value: client.requestLimits.headBytes),
        ]
        // HTTP2Translation.writeRequestHead checks a request's header list in the pass that translates it, and
        // Headway's response header lists come from heads its parser has checked: a second check costs time.
        connection.headerBlockValidation = .disabled
        let manager = NIOHTTP2ServerConnectionManagementHandler(
            eventLoop: cluster.eventLoop,
            configuration: .init(maxIdleTime: client.idleTimeout, maxAge: nil, maxGraceTime: nil, keepalive: nil)
        )
        // Flushes leave the read path: a flush that fails on a client gone away closes the connection, and
        // NIO must not see that close in the middle of the read that found the client gone.
        try pipeline.addHandler(FlushCoalescer())
        try pipeline.addHandler(NIOHTTP2Handler(mode: .server, connectionConfiguration: connection))
        try pipeline.addHandler(
            HTTP2ClientConnection(
                flusher: cluster.flusher,
                streamDelegate: manager.http2StreamDelegate,
                logger: logger,
                makeHandler: makeStreamHandler
            )
        )
        try pipeline.addHandler(manager)
        try pipeline.addHandler(HTTP2ClientConnectionObserver(metrics: metrics, logger: logger))
    }

    /// Every client connection keeps its last receive buffer between reads, so its first size is what an idle
    /// keep-alive connection costs: 512 bytes holds a usual request head (NIO's default, 2,048, was a third of
    /// an idle connection's memory), and the buffer doubles up to 64 KiB for a client that sends more.
    static let clientReceiveBuffers = AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 512, maximum: 65536)

    /// Takes the address; throws ``BindError`` naming it and this listener when that fails.
    func bind() async throws {
        let cluster = self.cluster
        let logger = self.logger
        let quiesce = ServerQuiescingHelper(group: self.group)
        let bootstrap = ServerBootstrap(group: self.group)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(quiesce.makeServerChannelHandler(channel: channel))
                }
            }
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelOption(.recvAllocator, value: Self.clientReceiveBuffers)
            .childChannelInitializer { [self] channel in
                channel.eventLoop.makeCompletedFuture {
                    let client = self.settings.withLock { $0.client }
                    let open = self.openConnections.add(1, ordering: .relaxed).newValue
                    self.openConnectionsGauge.increment()
                    channel.closeFuture.whenComplete { _ in
                        self.openConnections.subtract(1, ordering: .relaxed)
                        self.openConnectionsGauge.decrement()
                    }
                    guard open <= client.maxConnections else {
                        // Past the cap a client gets a fast, clear answer rather than a connection that hangs.
                        try channel.pipeline.syncOperations.addHandler(
                            RefuseConnectionHandler(error: .tooManyConnections(limit: client.maxConnections))
                        )
                        return
                    }
                    try Self.configureClientPipeline(
                        channel.pipeline.syncOperations,
                        cluster: cluster.loopCluster(for: channel.eventLoop),
                        client: client,
                        accessLog: self.accessLog?.loop(for: channel.eventLoop),
                        http2Metrics: self.http2Metrics,
                        logger: logger
                    )
                }
            }
        let channel: any Channel
        do {
            channel = try await bootstrap.bind(to: self.address).get()
        } catch {
            throw BindError.binding(
                self.address,
                for: "the listener for upstream '\(self.cluster.name)'",
                failedWith: error
            )
        }
        let drained = channel.eventLoop.makePromise(of: Void.self)
        self.listening.withLock { $0 = Listening(channel: channel, quiesce: quiesce, drained: drained) }
        drained.futureResult.whenComplete { _ in
            self.listening.withLock { $0?.quiesce = nil }
        }
        self.logger.info(
            "listening",
            metadata: [
                "listen.address": "\(UpstreamCluster.label(for: channel.localAddress ?? self.address))",
                "upstream": "\(self.cluster.name)",
            ]
        )
    }

    /// Serves until the listener has drained: after graceful shutdown, or after ``stopAccepting()``.
    func serve() async throws {
        guard let listening = self.listening.withLock({ $0 }) else { return }
        let bound = UpstreamCluster.label(for: listening.channel.localAddress ?? self.address)
        try await withTaskCancellationHandler {
            try await withGracefulShutdownHandler {
                try await listening.channel.closeFuture.get()
                try await listening.drained.futureResult.get()
            } onGracefulShutdown: {
                self.startDrain()
            }
        } onCancel: {
            // Not a graceful shutdown: stop waiting for connections; the event loops close them.
            listening.channel.close(promise: nil)
            listening.drained.succeed()
        }
        self.logger.info("listener stopped", metadata: ["listen.address": "\(bound)"])
    }

    /// A reload removed this listener: the drain starts now; returns once the address is free again.
    func stopAccepting() async {
        self.startDrain()
        try? await self.listening.withLock({ $0 })?.channel.closeFuture.get()
    }

    private func startDrain() {
        guard let listening = self.listening.withLock({ $0 }), let quiesce = listening.quiesce,
            !self.drainStarted.exchange(true, ordering: .relaxed)
        else {
            return
        }
        let channel = listening.channel
        let bound = UpstreamCluster.label(for: channel.localAddress ?? self.address)
        let logger = self.logger
        let drained = listening.drained
        logger.info("draining connections", metadata: ["listen.address": "\(bound)"])
        quiesce.initiateShutdown(promise: drained)
        let drainTimeout = self.settings.withLock { $0.drainTimeout }
        let deadline = channel.eventLoop.scheduleTask(in: drainTimeout) {
            logger.warning(
                "drain_timeout reached with requests still in flight; closing",
                metadata: ["listen.address": "\(bound)"]
            )
            drained.succeed()
        }
        drained.futureResult.whenComplete { _ in deadline.cancel() }
    }
}

/// The whole pipeline of a connection over `client.max_connections`: a 503 with `Retry-After`, then close.
final class RefuseConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let error: ProxyError

    init(error: ProxyError) {
        self.error = error
    }

    func channelActive(context: ChannelHandlerContext) {
        let bytes = self.error.response(
            clientVersionMinor: 1,
            closeConnection: true,
            allocator: context.channel.allocator
        )
        context.writeAndFlush(self.wrapOutboundOut(bytes)).assumeIsolated().whenComplete { _ in
            context.close(promise: nil)
        }
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}
}

/// The last handler of an HTTP/2 client connection: it counts the connection in the listener's HTTP/2 gauge
/// while it is open, closes it when the client shuts its side, and when a connection error (a protocol
/// violation, a flood of resets or control frames) ends the connection in swift-nio-http2, says so, once,
/// naming the client.
final class HTTP2ClientConnectionObserver: ChannelInboundHandler {
    typealias InboundIn = HTTP2Frame

    private let metrics: ClientHTTP2Metrics?
    private var logger: Logger

    init(metrics: ClientHTTP2Metrics?, logger: Logger) {
        self.metrics = metrics
        self.logger = logger
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.metrics?.connections.increment()
        self.logger[metadataKey: "client.address"] = "\(ClientAddress.describe(context.channel.remoteAddress))"
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        // The pipeline is torn down once the connection has closed.
        self.metrics?.connections.decrement()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case ChannelEvent.inputClosed = event {
            // HTTP/2 has no half-close: a client that shut its side is gone, and so are its streams. Closing
            // resets their exchanges upstream now instead of leaving them to answer nobody.
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A stream's error reset that stream only (a frame for a stream just reset is an everyday race).
        guard HTTP2ErrorScope.endsConnection(error) else { return }
        self.logger.warning("HTTP/2 client connection closed on an error", metadata: ["error": "\(error)"])
        context.close(promise: nil)
    }
}
