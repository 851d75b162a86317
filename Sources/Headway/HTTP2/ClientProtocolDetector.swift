import NIOCore

/// Which protocol a client connection speaks, told from its first bytes: HTTP/2 with prior knowledge opens
/// with the connection preface (RFC 9113 §3.4), anything else is HTTP/1.
enum ClientProtocol: Equatable {
    case http1
    case http2

    /// The client connection preface: `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`.
    static let http2Preface: [UInt8] = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)

    /// What the bytes received so far say; `nil` while they are a proper prefix of the preface.
    static func detect(_ bytes: ByteBuffer) -> ClientProtocol? {
        bytes.withUnsafeReadableBytes { raw in
            let count = min(raw.count, Self.http2Preface.count)
            for index in 0..<count where raw[index] != Self.http2Preface[index] {
                return .http1
            }
            return count == Self.http2Preface.count ? .http2 : nil
        }
    }
}

/// The first handler of a client connection: it reads until ``ClientProtocol/detect(_:)`` decides, has the
/// pipeline configured for that protocol, then hands on what it read and removes itself.
///
/// An HTTP/1 request that differs from the preface in its first bytes (every method but `PRI`) is decided
/// on its first read, so HTTP/1 pays one handler removal per connection, never anything per request. Until
/// then the connection has nothing to answer: it closes when the client half-closes, when Headway drains, or
/// after `idle_timeout` without a byte (a port probe, or a client that connects and waits).
final class ClientProtocolDetector: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let idleTimeout: TimeAmount
    private let configure: (ClientProtocol, ChannelPipeline.SynchronousOperations) throws -> Void
    private var received: ByteBuffer?
    private var idleTimer: Scheduled<Void>?

    /// - Parameter configure: adds the handlers of the protocol after this one.
    init(
        idleTimeout: TimeAmount,
        configure: @escaping (ClientProtocol, ChannelPipeline.SynchronousOperations) throws -> Void
    ) {
        self.idleTimeout = idleTimeout
        self.configure = configure
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.idleTimer = context.eventLoop.assumeIsolated().scheduleTask(in: self.idleTimeout) {
            context.close(promise: nil)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.idleTimer?.cancel()
        self.idleTimer = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = self.unwrapInboundIn(data)
        if var received = self.received.take() {
            received.writeBuffer(&bytes)
            bytes = received
        }
        guard let detected = ClientProtocol.detect(bytes) else {
            self.received = bytes
            return
        }
        do {
            try self.configure(detected, context.pipeline.syncOperations)
        } catch {
            context.fireErrorCaught(error)
            context.close(promise: nil)
            return
        }
        // Hand on first: a removed handler's context no longer reaches the next one.
        context.fireChannelRead(self.wrapInboundOut(bytes))
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        // Only reached while undecided (the handler is gone once it decides): nothing after it has read yet.
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        switch event {
        case ChannelEvent.inputClosed, is ChannelShouldQuiesceEvent:
            // No request has begun: nothing to answer, and nothing to wait for.
            context.close(promise: nil)
        default:
            context.fireUserInboundEventTriggered(event)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.received = nil
        self.idleTimer?.cancel()
        self.idleTimer = nil
        context.fireChannelInactive()
    }
}
