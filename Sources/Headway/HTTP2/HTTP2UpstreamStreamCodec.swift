import Logging
import NIOCore
import NIOHPACK
import NIOHTTP1
import NIOHTTP2

/// The first handler of a request stream to an h2c pod: it carries the HTTP/1.1 request that the
/// ``UpstreamConnection`` behind it writes out as HEADERS and DATA, and the pod's frames back as the HTTP/1.1
/// response that connection's ``ResponseParser`` reads, trailers included.
///
/// The mirror of ``HTTP2StreamBridge``: with both, an exchange is the same code whatever either side speaks.
/// Backpressure holds on the way back too: the connection behind holds `read` while its client cannot take
/// more, and the stream's flow-control window is only reopened as frames are read.
final class HTTP2UpstreamStreamCodec: ChannelDuplexHandler {
    typealias InboundIn = HTTP2Frame.FramePayload
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = HTTP2Frame.FramePayload

    /// Headway framed the request itself, under the client's limits: these only bound a bug.
    private static let limits: RequestLimits = {
        var limits = RequestLimits()
        limits.requestLineBytes = 1 << 30
        limits.headBytes = 1 << 30
        limits.fieldCount = 1 << 20
        return limits
    }()

    private let logger: Logger
    private var requestParser = RequestParser(limits: HTTP2UpstreamStreamCodec.limits)
    /// The last request frame, held until the next piece or the flush shows whether it ends the stream.
    private var heldFrame: HTTP2Frame.FramePayload?
    private var requestEnded = false
    /// How the response body is framed towards the connection behind; `nil` until the response's HEADERS.
    private var responseIsChunked: Bool?
    /// The stream was given up before the pod answered; it is reset on the pod's first frame (or after a
    /// second), when the pod surely has it.
    private var resetIsPending = false

    init(logger: Logger) {
        self.logger = logger
    }

    // MARK: Request out

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        var bytes = self.unwrapOutboundIn(data)
        do {
            while !self.requestEnded, let event = try self.requestParser.next(from: &bytes) {
                switch event {
                case .head(let head):
                    self.hold(.headers(.init(headers: Self.requestHeaders(head))), context: context)
                case .body(let body):
                    self.hold(.data(.init(data: .byteBuffer(body))), context: context)
                case .end:
                    self.requestEnded = true
                    switch self.heldFrame {
                    case .headers(var headers):
                        headers.endStream = true
                        self.heldFrame = .headers(headers)
                    case .data(var data):
                        data.endStream = true
                        self.heldFrame = .data(data)
                    default:
                        self.heldFrame = .data(.init(data: .byteBuffer(ByteBuffer()), endStream: true))
                    }
                }
            }
        } catch {
            // Headway framed these bytes itself; a parse failure is a bug, and the stream cannot go on.
            self.logger.error("could not carry a request onto an HTTP/2 stream", metadata: ["error": "\(error)"])
            promise?.fail(error)
            context.close(promise: nil)
            return
        }
        promise?.succeed()
    }

    func flush(context: ChannelHandlerContext) {
        if let frame = self.heldFrame.take() {
            context.write(self.wrapOutboundOut(frame), promise: nil)
        }
        context.flush()
    }

    private func hold(_ frame: HTTP2Frame.FramePayload, context: ChannelHandlerContext) {
        if let previous = self.heldFrame {
            context.write(self.wrapOutboundOut(previous), promise: nil)
        }
        self.heldFrame = frame
    }

    /// The HEADERS for a request head that Headway wrote for the pod: pseudo-fields from the request line and
    /// Host, names in lower case, framing fields dropped (DATA frames and END_STREAM frame the body).
    static func requestHeaders(_ head: RequestHead) -> HPACKHeaders {
        var headers = HPACKHeaders()
        headers.reserveCapacity(12)
        headers.add(name: ":method", value: head.methodName)
        headers.add(name: ":scheme", value: "http")
        headers.add(name: ":path", value: head.target)
        if let host = head.host { headers.add(name: ":authority", value: host) }
        head.forEachField { name, value in
            let lowercased = String(decoding: name.lazy.map(HTTPSyntax.lowercased), as: UTF8.self)
            switch lowercased {
            case "host", "content-length", "transfer-encoding", "connection", "keep-alive", "proxy-connection",
                "upgrade", "te":
                break
            default:
                headers.add(name: lowercased, value: String(decoding: value, as: UTF8.self))
            }
        }
        // Headway relays trailers, so the pod may send them (gRPC servers look for this).
        headers.add(name: "te", value: "trailers")
        return headers
    }

    /// Resetting a stream whose HEADERS swift-nio-http2 may still hold back (the connection at its stream
    /// limit, or not writable) drops the frames but never closes the stream, and every later stream of the
    /// connection then waits behind it. A stream whose request went out whole and that has no answer yet is
    /// therefore reset only once the pod shows it has the stream (its first frame), or after a second.
    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        guard self.requestEnded, self.responseIsChunked == nil, !self.resetIsPending else {
            context.close(mode: mode, promise: promise)
            return
        }
        self.resetIsPending = true
        promise?.succeed()
        context.eventLoop.assumeIsolated().scheduleTask(in: .seconds(1)) {
            context.close(promise: nil)
        }
    }

    // MARK: Response in

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if self.resetIsPending {
            context.close(promise: nil)
            return
        }
        switch self.unwrapInboundIn(data) {
        case .headers(let frame) where self.responseIsChunked == nil:
            self.responseHeadersReceived(frame, context: context)
        case .headers(let frame):
            // Trailers: the end of a chunked body carries them; a body framed by its length cannot.
            if self.responseIsChunked == true {
                var last = context.channel.allocator.buffer(capacity: 64)
                last.writeStaticString("0\r\n")
                for field in frame.headers where field.name.utf8.first != UInt8(ascii: ":") {
                    Self.writeField(field.name, field.value, into: &last)
                }
                last.writeStaticString("\r\n")
                context.fireChannelRead(self.wrapInboundOut(last))
            }
        case .data(let frame):
            guard case .byteBuffer(let bytes) = frame.data else { break }
            if self.responseIsChunked == true {
                if bytes.readableBytes > 0 {
                    HTTPSyntax.frameChunk(bytes, allocator: context.channel.allocator) {
                        context.fireChannelRead(self.wrapInboundOut($0))
                    }
                }
                if frame.endStream {
                    context.fireChannelRead(self.wrapInboundOut(HTTPSyntax.lastChunk))
                }
            } else {
                context.fireChannelRead(self.wrapInboundOut(bytes))
            }
        default:
            // RST_STREAM closes the stream channel with an error, which errorCaught translates.
            break
        }
    }

    private func responseHeadersReceived(_ frame: HTTP2Frame.FramePayload.Headers, context: ChannelHandlerContext) {
        let status = frame.headers.first(name: ":status").flatMap { Int($0) } ?? 0
        var head = context.channel.allocator.buffer(capacity: 256)
        head.writeStaticString("HTTP/1.1 ")
        head.writeString(String(status))
        head.writeStaticString(" ")
        head.writeString(HTTPResponseStatus(statusCode: status).reasonPhrase)
        head.writeStaticString("\r\n")
        var hasLength = false
        for field in frame.headers where field.name.utf8.first != UInt8(ascii: ":") {
            if field.name == "content-length" { hasLength = true }
            Self.writeField(field.name, field.value, into: &head)
        }
        let isInformational = (100..<200).contains(status)
        if !isInformational {
            if frame.endStream {
                if !hasLength { head.writeStaticString("content-length: 0\r\n") }
                self.responseIsChunked = false
            } else if hasLength {
                self.responseIsChunked = false
            } else {
                head.writeStaticString("transfer-encoding: chunked\r\n")
                self.responseIsChunked = true
            }
        }
        head.writeStaticString("\r\n")
        context.fireChannelRead(self.wrapInboundOut(head))
    }

    /// swift-nio-http2 validated the field (RFC 9113 §8.2.1: no CR, LF or NUL); the response parser checks
    /// the rest as it would any pod's.
    private static func writeField(_ name: String, _ value: String, into buffer: inout ByteBuffer) {
        buffer.writeString(name)
        buffer.writeStaticString(": ")
        buffer.writeString(value)
        buffer.writeStaticString("\r\n")
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let closed = error as? NIOHTTP2Errors.StreamClosed {
            // In Headway's words: whether the pod refused the stream (REFUSED_STREAM, or above its GOAWAY's
            // last stream) decides whether any request may be retried.
            context.fireErrorCaught(UpstreamStreamReset(code: closed.errorCode))
        } else {
            context.fireErrorCaught(error)
        }
    }
}

/// The pod reset a request's stream (or closed it by GOAWAY before processing it).
struct UpstreamStreamReset: Error, CustomStringConvertible {
    var code: HTTP2ErrorCode

    /// The pod did not process the request (RFC 9113 §8.7): retrying it elsewhere is safe for any method.
    var wasRefused: Bool { self.code == .refusedStream }

    var description: String { "stream reset by the endpoint (\(self.code))" }
}

@available(*, unavailable)
extension HTTP2UpstreamStreamCodec: Sendable {}
