import Logging
import NIOCore
import NIOExtras
import NIOHTTP1
import NIOPosix
import Prometheus
import ServiceLifecycle
import Synchronization

/// One listener: accepts client connections and hands each to a ``DownstreamHandler`` on its own loop.
///
/// On graceful shutdown it stops accepting, lets every connection finish its current exchange (responses
/// then carry `Connection: close`), and returns once all have closed or `drainTimeout` has passed.
package final class ProxyServer: Service, Sendable {
    let address: SocketAddress
    let cluster: UpstreamCluster
    let group: any EventLoopGroup
    let client: ClientSettings
    /// Client connections open on this listener, against `client.max_connections`.
    let openConnections = Atomic<Int>(0)
    private let openConnectionsGauge: Gauge
    let drainTimeout: TimeAmount
    let accessLog: AccessLog?
    let logger: Logger
    let onBound: @Sendable (SocketAddress) -> Void
    let onDrainStarted: @Sendable () -> Void

    init(
        address: SocketAddress,
        cluster: UpstreamCluster,
        group: any EventLoopGroup,
        client: ClientSettings,
        drainTimeout: TimeAmount,
        accessLog: AccessLog?,
        metrics: ProxyMetrics,
        logger: Logger,
        onBound: @escaping @Sendable (SocketAddress) -> Void,
        onDrainStarted: @escaping @Sendable () -> Void
    ) {
        self.client = client
        self.openConnectionsGauge = metrics.clientConnections(listener: UpstreamCluster.label(for: address))
        self.address = address
        self.cluster = cluster
        self.group = group
        self.drainTimeout = drainTimeout
        self.accessLog = accessLog
        self.logger = logger
        self.onBound = onBound
        self.onDrainStarted = onDrainStarted
    }

    /// The pipeline of an accepted client connection: ``DownstreamHandler`` alone.
    ///
    /// No NIO HTTP codec and no pipelining helper: requests are parsed by ``RequestParser``, responses
    /// leave as bytes that Headway framed, and ``DownstreamHandler`` orders pipelined requests itself
    /// (NIO's helper would drop and re-arm read interest on every request, two `epoll_ctl` calls each).
    static func configureClientPipeline(
        _ pipeline: ChannelPipeline.SynchronousOperations,
        cluster: LoopCluster,
        client: ClientSettings,
        accessLog: LoopAccessLog?,
        logger: Logger
    ) throws {
        try pipeline.addHandler(
            DownstreamHandler(cluster: cluster, client: client, accessLog: accessLog, logger: logger)
        )
    }

    package func run() async throws {
        let quiesce = ServerQuiescingHelper(group: self.group)
        let cluster = self.cluster
        let logger = self.logger
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
            .childChannelInitializer { [self] channel in
                channel.eventLoop.makeCompletedFuture {
                    let open = self.openConnections.add(1, ordering: .relaxed).newValue
                    self.openConnectionsGauge.increment()
                    channel.closeFuture.whenComplete { _ in
                        self.openConnections.subtract(1, ordering: .relaxed)
                        self.openConnectionsGauge.decrement()
                    }
                    guard open <= self.client.maxConnections else {
                        // Past the cap a client gets a fast, clear answer rather than a connection that hangs.
                        try channel.pipeline.syncOperations.addHandler(
                            RefuseConnectionHandler(error: .tooManyConnections(limit: self.client.maxConnections))
                        )
                        return
                    }
                    try Self.configureClientPipeline(
                        channel.pipeline.syncOperations,
                        cluster: cluster.loopCluster(for: channel.eventLoop),
                        client: self.client,
                        accessLog: self.accessLog?.loop(for: channel.eventLoop),
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
                for: "the listener for upstream '\(self.cluster.configuration.name)'",
                failedWith: error
            )
        }
        let boundAddress = channel.localAddress ?? self.address
        let bound = UpstreamCluster.label(for: boundAddress)
        self.logger.info(
            "listening",
            metadata: ["listen.address": "\(bound)", "upstream": "\(self.cluster.configuration.name)"]
        )
        self.onBound(boundAddress)

        let drained = channel.eventLoop.makePromise(of: Void.self)
        let drainTimeout = self.drainTimeout
        let onDrainStarted = self.onDrainStarted
        try await withTaskCancellationHandler {
            try await withGracefulShutdownHandler {
                try await channel.closeFuture.get()
                try await drained.futureResult.get()
            } onGracefulShutdown: {
                onDrainStarted()
                logger.info("draining connections", metadata: ["listen.address": "\(bound)"])
                quiesce.initiateShutdown(promise: drained)
                let deadline = channel.eventLoop.scheduleTask(in: drainTimeout) {
                    logger.warning(
                        "drain_timeout reached with requests still in flight; closing",
                        metadata: ["listen.address": "\(bound)"]
                    )
                    drained.succeed()
                }
                drained.futureResult.whenComplete { _ in deadline.cancel() }
            }
        } onCancel: {
            // Not a graceful shutdown: stop waiting for connections; the event loops close them.
            channel.close(promise: nil)
            drained.succeed()
        }
        for loop in self.cluster.loops {
            loop.eventLoop.execute { loop.shutdown() }
        }
        self.logger.info("listener stopped", metadata: ["listen.address": "\(bound)"])
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
