import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// A pod that fails in one precise way, for fault tests: it accepts connections like any server, then
/// misbehaves. It counts the connections on which a request arrived, so a test can tell whether a request
/// was sent to it once or retried.
public final class FaultyPod: Sendable {
    public enum Behaviour: Sendable {
        /// Reads everything, never answers: a hung process or a dropped response.
        case blackhole
        /// Reads until this many request bytes arrived on a connection, then resets it (RST, not FIN).
        case resetAfterRequestBytes(Int)
    }

    public let host: String
    public let port: Int
    private let channel: any Channel
    private let requests: NIOLockedValueBox<Int>

    public var address: String { "\(self.host):\(self.port)" }

    /// Connections on which at least one request byte arrived.
    public var connectionsWithRequests: Int { self.requests.withLockedValue { $0 } }

    private init(host: String, port: Int, channel: any Channel, requests: NIOLockedValueBox<Int>) {
        self.host = host
        self.port = port
        self.channel = channel
        self.requests = requests
    }

    public static func start(host: String, port: Int, behaviour: Behaviour, group: any EventLoopGroup) async throws -> FaultyPod {
        guard !RawHTTP.canConnect(host: host, port: port) else {
            throw CommandError(description: "\(host):\(port) is already in use by another process; stop it first")
        }
        let requests = NIOLockedValueBox(0)
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(FaultHandler(behaviour: behaviour, requests: requests))
                }
            }
            .bind(host: host, port: port)
            .get()
        return FaultyPod(host: host, port: port, channel: channel, requests: requests)
    }

    public func stop() async throws {
        try await self.channel.close()
    }
}

private final class FaultHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private let behaviour: FaultyPod.Behaviour
    private let requests: NIOLockedValueBox<Int>
    private var received = 0

    init(behaviour: FaultyPod.Behaviour, requests: NIOLockedValueBox<Int>) {
        self.behaviour = behaviour
        self.requests = requests
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let bytes = self.unwrapInboundIn(data).readableBytes
        if self.received == 0 && bytes > 0 {
            self.requests.withLockedValue { $0 += 1 }
        }
        self.received += bytes
        if case .resetAfterRequestBytes(let limit) = self.behaviour, self.received >= limit {
            // SO_LINGER with a zero timeout makes close() send RST at once.
            guard let socket = context.channel as? any SocketOptionProvider else {
                context.close(promise: nil)
                return
            }
            socket.setSoLinger(linger(l_onoff: 1, l_linger: 0)).assumeIsolated().whenComplete { _ in
                context.close(promise: nil)
            }
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
