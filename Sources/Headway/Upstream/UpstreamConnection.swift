import Logging
import NIOCore

/// The only handler of an upstream connection's pipeline: it writes the request bytes its lessee gives it
/// and parses the response bytes with a ``ResponseParser``, handing the events to the lessee.
///
/// To an h2c pod, it is the user of one ``HTTP2UpstreamStream`` instead, in no pipeline: the exchange leases a
/// stream as it leases a connection, and a stream serves one request only.
///
/// Loop-confined: it shares its event loop with its ``UpstreamPool`` and with every lessee, so the two
/// halves of an exchange call each other directly.
final class UpstreamConnection: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let endpoint: Endpoint
    /// The h2c stream this connection is; `nil` for an HTTP/1 connection.
    let stream: HTTP2UpstreamStream?
    private let logger: Logger
    /// Set once the connection is established and handed to its pool.
    var pool: UpstreamPool?
    /// The downstream connection whose exchange uses this connection now; `nil` while idle.
    var lessee: (any UpstreamLessee)?
    private(set) var isOpen = true
    /// Cleared when the connection saw something that rules out reuse (bytes after a response).
    private(set) var isReusable = true
    private var context: ChannelHandlerContext?
    private var parser = ResponseParser()
    private var isHeadRequest = false
    /// The request in flight asked to switch protocols: a 101 turns this connection into a tunnel.
    private var upgradeRequested = false
    /// A `read` held back because the lessee's client could not take more bytes.
    private var pendingRead = false
    private var closeReason: (any Error)?

    init(endpoint: Endpoint, logger: Logger, stream: HTTP2UpstreamStream? = nil) {
        self.endpoint = endpoint
        self.logger = logger
        self.stream = stream
    }

    /// Whether it is an h2c stream rather than a connection of its own.
    var isStream: Bool { self.stream != nil }

    var isWritable: Bool {
        if let stream = self.stream { return stream.isWritable }
        return self.context?.channel.isWritable ?? false
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    // MARK: Requests out

    /// Starts a request: the next bytes that arrive are its response.
    func startRequest(head: ByteBuffer, isHeadRequest: Bool, upgradeRequested: Bool) {
        self.parser.expectResponse()
        self.isHeadRequest = isHeadRequest
        self.upgradeRequested = upgradeRequested
        self.write(head)
    }

    func write(_ bytes: ByteBuffer) {
        if let stream = self.stream {
            stream.write(bytes)
        } else {
            self.context?.write(self.wrapOutboundOut(bytes), promise: nil)
        }
    }

    /// Flushes at the end of the loop's tick (see ``TickFlusher``), on a connection of a pool and on a stream's
    /// h2c connection alike: the frames of every stream started in one tick leave in one write.
    func flush() {
        if let stream = self.stream {
            stream.flush()
        } else if let context = self.context {
            if let flusher = self.pool?.cluster.flusher {
                flusher.flushAtEndOfTick(context)
            } else {
                context.flush()
            }
        }
    }

    /// Half-closes: the pod sees the end of what the client sends (a tunnel whose client finished). A stream
    /// is never a tunnel (HTTP/2 has no 101), so it just closes.
    func closeOutput() {
        if let stream = self.stream {
            stream.close()
        } else {
            self.context?.close(mode: .output, promise: nil)
        }
    }

    func close() {
        guard self.isOpen else { return }
        self.isReusable = false
        if let stream = self.stream {
            stream.close()
        } else {
            self.context?.close(promise: nil)
        }
    }

    /// The lessee's client became writable again: deliver the response bytes we held back.
    func resumeReading() {
        if let stream = self.stream {
            stream.resumeDelivery()
        } else if self.pendingRead {
            self.pendingRead = false
            self.context?.read()
        }
    }

    func read(context: ChannelHandlerContext) {
        if let lessee = self.lessee, !lessee.canTakeResponseBytes {
            self.pendingRead = true
        } else {
            context.read()
        }
    }

    // MARK: Responses in

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        self.received(self.unwrapInboundIn(data))
    }

    private func received(_ bytes: ByteBuffer) {
        var buffer = bytes
        guard let lessee = self.lessee else {
            // Bytes from an idle connection answer nothing we asked: never let them reach a later request.
            self.logger.debug(
                "unsolicited bytes from upstream; closing the connection",
                metadata: ["endpoint.address": "\(self.endpoint.label)"]
            )
            self.close()
            return
        }
        do {
            while let event = try self.parser.next(
                from: &buffer,
                isHeadRequest: self.isHeadRequest,
                upgradeRequested: self.upgradeRequested
            ) {
                if case .end = event {
                    // Bytes after a complete response (HTTP-EDGE-CASES U10): relay the response but never
                    // reuse the connection, so the extra bytes can never answer a later request.
                    let hasExtraBytes = buffer.readableBytes > 0
                    if hasExtraBytes { self.isReusable = false }
                    // The lessee releases this connection now and may lease it again at once: stop here.
                    lessee.upstreamReceived(event, from: self)
                    if hasExtraBytes { self.close() }
                    return
                }
                lessee.upstreamReceived(event, from: self)
                guard self.lessee === lessee else { return }
            }
        } catch {
            self.logger.warning(
                "invalid response from endpoint; closing the connection",
                metadata: ["endpoint.address": "\(self.endpoint.label)", "error": "\(error)"]
            )
            self.closeReason = error
            self.close()
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        self.lessee?.upstreamReadComplete()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            self.lessee?.upstreamBecameWritable()
        }
        context.fireChannelWritabilityChanged()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // Resets and other I/O errors: the connection cannot be trusted any more.
        self.closeReason = error
        self.close()
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.closed()
        context.fireChannelInactive()
    }

    private func closed() {
        self.isOpen = false
        self.isReusable = false
        self.pool?.connectionClosed(self)
        self.pool = nil
        if let lessee = self.lessee {
            do {
                if let end = try self.parser.inputClosed() {
                    // A body delimited by the close is complete now.
                    lessee.upstreamReceived(end, from: self)
                } else {
                    self.lessee = nil
                    lessee.upstreamClosed(self, error: self.closeReason)
                }
            } catch {
                self.lessee = nil
                lessee.upstreamClosed(self, error: self.closeReason ?? error)
            }
        } else if self.stream == nil {
            self.logger.debug("upstream connection closed", metadata: ["endpoint.address": "\(self.endpoint.label)"])
        }
    }
}

extension UpstreamConnection: HTTP2StreamUser {
    var takesStreamBytes: Bool { self.lessee?.canTakeResponseBytes ?? true }

    func streamReceived(_ bytes: ByteBuffer) {
        self.received(bytes)
    }

    func streamReadComplete() {
        self.lessee?.upstreamReadComplete()
    }

    func streamBecameWritable() {
        self.lessee?.upstreamBecameWritable()
    }

    func streamClosed(error: (any Error)?) {
        if self.closeReason == nil { self.closeReason = error }
        self.closed()
    }
}

@available(*, unavailable)
extension UpstreamConnection: Sendable {}
