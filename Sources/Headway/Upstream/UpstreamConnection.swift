import Logging
import NIOCore
import NIOHTTP1

/// The last handler of an upstream connection's pipeline: it hands response parts to the downstream
/// connection that leased it and carries that connection's request parts out.
///
/// Loop-confined: it shares its event loop with its ``UpstreamPool`` and with every lessee, so the two
/// halves of an exchange call each other directly.
final class UpstreamConnection: ChannelDuplexHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundIn = HTTPClientRequestPart
    typealias OutboundOut = HTTPClientRequestPart

    let endpoint: Endpoint
    private let logger: Logger
    /// Set once the connection is established and handed to its pool.
    var pool: UpstreamPool?
    /// The downstream connection whose exchange uses this connection now; `nil` while idle.
    var lessee: DownstreamHandler?
    var idleSince: NIODeadline = .now()
    private(set) var isOpen = true
    private var context: ChannelHandlerContext?
    /// A `read` held back because the lessee's client could not take more bytes.
    private var pendingRead = false
    private var closeReason: (any Error)?

    init(endpoint: Endpoint, logger: Logger) {
        self.endpoint = endpoint
        self.logger = logger
    }

    var isWritable: Bool { self.context?.channel.isWritable ?? false }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    // MARK: Requests out

    func write(_ part: HTTPClientRequestPart) {
        self.context?.write(self.wrapOutboundOut(part), promise: nil)
    }

    func flush() {
        self.context?.flush()
    }

    func close() {
        guard self.isOpen else { return }
        self.context?.close(promise: nil)
    }

    /// The lessee's client became writable again: deliver the response bytes we held back.
    func resumeReading() {
        if self.pendingRead {
            self.pendingRead = false
            self.context?.read()
        }
    }

    func read(context: ChannelHandlerContext) {
        if let lessee = self.lessee, !lessee.isClientWritable {
            self.pendingRead = true
        } else {
            context.read()
        }
    }

    // MARK: Responses in

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = self.unwrapInboundIn(data)
        guard let lessee = self.lessee else {
            // Bytes from an idle connection answer nothing we asked: never let them reach a later request.
            self.logger.debug(
                "unsolicited bytes from upstream; closing the connection",
                metadata: ["endpoint.address": "\(self.endpoint.label)"]
            )
            self.close()
            return
        }
        lessee.upstreamReceived(part, from: self)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        self.lessee?.flushToClient()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            self.lessee?.upstreamBecameWritable()
        }
        context.fireChannelWritabilityChanged()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // Malformed responses, resets: the connection cannot be trusted any more.
        self.closeReason = error
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.isOpen = false
        self.pool?.connectionClosed(self)
        self.pool = nil
        if let lessee = self.lessee {
            self.lessee = nil
            lessee.upstreamClosed(self, error: self.closeReason)
        } else {
            self.logger.debug("upstream connection closed", metadata: ["endpoint.address": "\(self.endpoint.label)"])
        }
        context.fireChannelInactive()
    }
}

@available(*, unavailable)
extension UpstreamConnection: Sendable {}
