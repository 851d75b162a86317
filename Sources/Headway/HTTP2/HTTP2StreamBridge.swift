import Logging
import NIOCore
import NIOHPACK
import NIOHTTP2

/// The first handler of an HTTP/2 client stream: it carries the stream's request to the
/// ``DownstreamHandler`` behind it as HTTP/1.1 bytes, and that handler's response back as frames.
///
/// So every stream is an exchange of its own: it picks its pod with the upstream's policy, whatever
/// connection it came on (per-request balancing of multiplexed streams), and gets the retries, timeouts,
/// limits, access log line and metrics of any request, from the same code. Backpressure holds: the handler
/// behind holds `read` (so the stream's flow-control window is not reopened) until its pod takes the body,
/// and the stream channel turns unwritable while the client's window is closed.
///
/// Headway's own answer to a gRPC request (`content-type: application/grpc…`) is a gRPC answer: HTTP 200
/// with `grpc-status` and `grpc-message` in a trailers-only response, as gRPC clients read it.
final class HTTP2StreamBridge: ChannelDuplexHandler {
    typealias InboundIn = HTTP2Frame.FramePayload
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = HTTP2Frame.FramePayload

    private let logger: Logger
    /// How the request body is framed towards the handler behind; `nil` until the request's HEADERS.
    private var requestBody: HTTP2Translation.RequestBody?
    private var isGRPC = false
    private var isHeadRequest = false
    private var responseParser = ResponseParser()
    /// The response's HEADERS, held until the next piece shows whether they also end the stream.
    private var pendingHeaders: HPACKHeaders?
    /// The response's trailer fields, sent as the HEADERS that end the stream.
    private var pendingTrailers: HPACKHeaders?
    /// Announced by the handler behind just before it writes Headway's own answer.
    private var localAnswer: ProxyError?
    /// A gRPC answer went out trailers-only: the HTTP/1 answer's body is not for this client.
    private var discardsResponse = false
    private(set) var responseEnded = false

    init(logger: Logger) {
        self.logger = logger
        self.responseParser.expectResponse()
    }

    // MARK: Request in

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch self.unwrapInboundIn(data) {
        case .headers(let headers) where self.requestBody == nil:
            self.requestHeadersReceived(headers, context: context)
        case .headers(let trailers):
            // Request trailers have no HTTP/1 counterpart Headway relays; they end the body.
            if trailers.endStream { self.requestEnded(context: context) }
        case .data(let data):
            guard case .byteBuffer(let bytes) = data.data else { break }
            if bytes.readableBytes > 0 {
                if self.requestBody == .chunked {
                    HTTPSyntax.frameChunk(bytes, allocator: context.channel.allocator) {
                        context.fireChannelRead(self.wrapInboundOut($0))
                    }
                } else {
                    context.fireChannelRead(self.wrapInboundOut(bytes))
                }
            }
            if data.endStream { self.requestEnded(context: context) }
        default:
            // RST_STREAM closes the stream channel, and the handler behind abandons its exchange then.
            break
        }
    }

    private func requestHeadersReceived(_ frame: HTTP2Frame.FramePayload.Headers, context: ChannelHandlerContext) {
        var head = context.channel.allocator.buffer(capacity: 256)
        do {
            self.requestBody = try HTTP2Translation.writeRequestHead(
                frame.headers,
                endStream: frame.endStream,
                into: &head
            )
        } catch {
            self.logger.info("malformed HTTP/2 request; resetting the stream", metadata: ["reason": "\(error)"])
            context.writeAndFlush(self.wrapOutboundOut(.rstStream(.protocolError)), promise: nil)
            context.close(promise: nil)
            return
        }
        self.isGRPC = frame.headers.first(name: "content-type")?.hasPrefix("application/grpc") ?? false
        self.isHeadRequest = frame.headers.first(name: ":method") == "HEAD"
        if self.isGRPC, let timeout = frame.headers.first(name: "grpc-timeout").flatMap(HTTP2Translation.grpcTimeout) {
            context.fireUserInboundEventTriggered(ClientDeadlineEvent(timeout: timeout))
        }
        context.fireChannelRead(self.wrapInboundOut(head))
    }

    private func requestEnded(context: ChannelHandlerContext) {
        if self.requestBody == .chunked {
            context.fireChannelRead(self.wrapInboundOut(HTTPSyntax.lastChunk))
        }
    }

    // MARK: Response out

    func triggerUserOutboundEvent(context: ChannelHandlerContext, event: Any, promise: EventLoopPromise<Void>?) {
        if let answer = event as? LocalAnswerEvent {
            self.localAnswer = answer.error
            promise?.succeed()
        } else {
            context.triggerUserOutboundEvent(event, promise: promise)
        }
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        var bytes = self.unwrapOutboundIn(data)
        var frames: [HTTP2Frame.FramePayload] = []
        do {
            while let event = try self.responseParser.next(
                from: &bytes,
                isHeadRequest: self.isHeadRequest,
                upgradeRequested: false
            ) {
                self.responseEventReady(event, frames: &frames)
            }
        } catch {
            // Headway framed these bytes itself; a parse failure is a bug, and the stream cannot go on.
            self.logger.error("could not carry a response onto an HTTP/2 stream", metadata: ["error": "\(error)"])
            promise?.fail(error)
            context.close(promise: nil)
            return
        }
        if let last = frames.popLast() {
            for frame in frames { context.write(self.wrapOutboundOut(frame), promise: nil) }
            context.write(self.wrapOutboundOut(last), promise: promise)
        } else {
            promise?.succeed()
        }
    }

    private func responseEventReady(_ event: ResponseParser.Event, frames: inout [HTTP2Frame.FramePayload]) {
        guard !self.discardsResponse else { return }
        switch event {
        case .informational(let head):
            frames.append(.headers(.init(headers: HTTP2Translation.responseHeaders(head))))
        case .head(let head):
            if let error = self.localAnswer.take(), self.isGRPC {
                frames.append(.headers(.init(headers: Self.grpcAnswer(error), endStream: true)))
                self.discardsResponse = true
                self.responseEnded = true
                return
            }
            self.pendingHeaders = HTTP2Translation.responseHeaders(head)
        case .body(let bytes):
            if let headers = self.pendingHeaders.take() {
                frames.append(.headers(.init(headers: headers)))
            }
            frames.append(.data(.init(data: .byteBuffer(bytes))))
        case .trailers(let section):
            self.pendingTrailers = HTTP2Translation.trailerFields(section)
        case .end:
            if let trailers = self.pendingTrailers.take() {
                if let headers = self.pendingHeaders.take() {
                    frames.append(.headers(.init(headers: headers)))
                }
                frames.append(.headers(.init(headers: trailers, endStream: true)))
            } else if let headers = self.pendingHeaders.take() {
                frames.append(.headers(.init(headers: headers, endStream: true)))
            } else if case .data(var last) = frames.last {
                // The body's last piece came in the same write: it ends the stream, no empty frame needed.
                last.endStream = true
                frames[frames.count - 1] = .data(last)
            } else {
                frames.append(.data(.init(data: .byteBuffer(ByteBuffer()), endStream: true)))
            }
            self.responseEnded = true
        }
    }

    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        guard mode == .output else {
            context.close(mode: mode, promise: promise)
            return
        }
        // Half-closing is the HTTP/1 way to end an answer; on a stream END_STREAM did that, or a reset must.
        if self.responseEnded {
            promise?.succeed()
        } else {
            context.close(mode: .all, promise: promise)
        }
    }

    /// A trailers-only gRPC response for Headway's own answer (gRPC over HTTP/2, "Responses").
    static func grpcAnswer(_ error: ProxyError) -> HPACKHeaders {
        [
            ":status": "200",
            "content-type": "application/grpc",
            "grpc-status": String(error.grpcStatus),
            "grpc-message": Self.percentEncoded(error.detail),
        ]
    }

    /// `grpc-message` is percent-encoded: bytes outside printable ASCII, and `%`, as `%XX`.
    static func percentEncoded(_ text: String) -> String {
        var encoded = ""
        for byte in text.utf8 {
            if byte >= 0x20 && byte <= 0x7E && byte != UInt8(ascii: "%") {
                encoded.unicodeScalars.append(Unicode.Scalar(byte))
            } else {
                let hex = String(byte, radix: 16, uppercase: true)
                encoded += byte < 0x10 ? "%0\(hex)" : "%\(hex)"
            }
        }
        return encoded
    }
}

/// Sent inbound to ``DownstreamHandler`` before a request whose client set its own deadline (`grpc-timeout`).
struct ClientDeadlineEvent {
    var timeout: TimeAmount
}

/// Sent outbound by ``DownstreamHandler`` just before it writes Headway's own answer, for a protocol below
/// it that answers differently (a gRPC stream); an HTTP/1 connection lets it pass to the socket, which
/// ignores it.
struct LocalAnswerEvent {
    var error: ProxyError
}

@available(*, unavailable)
extension HTTP2StreamBridge: Sendable {}
