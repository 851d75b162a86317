import NIOCore
import NIOHPACK
import NIOHTTP1
import NIOHTTP2

/// The translation of one request stream to an h2c pod, as a value: the HTTP/1.1 request that an
/// ``UpstreamConnection`` writes goes out as HEADERS and DATA, and the pod's frames come back as the HTTP/1.1
/// response that connection's ``ResponseParser`` reads, trailers included.
///
/// The mirror of ``HTTP2StreamBridge``: with both, an exchange is the same code whatever either side speaks.
/// ``HTTP2UpstreamStream`` carries out what it returns.
struct HTTP2UpstreamStreamCodec {
    /// Headway framed the request itself, under the client's limits: these only bound a bug.
    private static let limits: RequestLimits = {
        var limits = RequestLimits()
        limits.requestLineBytes = 1 << 30
        limits.headBytes = 1 << 30
        limits.fieldCount = 1 << 20
        return limits
    }()

    private var requestParser = RequestParser(limits: HTTP2UpstreamStreamCodec.limits)
    /// The last request frame, held until the next piece or the flush shows whether it ends the stream.
    private var heldFrame: HTTP2Frame.FramePayload?
    private(set) var requestEnded = false
    /// How the response body is framed towards the connection behind; `nil` until the response's HEADERS.
    private var responseIsChunked: Bool?

    /// Whether the pod has answered anything yet (its first HEADERS).
    var responseStarted: Bool { self.responseIsChunked != nil }

    // MARK: Request out

    /// Turns request bytes into frames; `emit` gets those ready to write (the last one waits for ``flush()``).
    mutating func requestBytes(
        _ bytes: inout ByteBuffer,
        emit: (HTTP2Frame.FramePayload) -> Void
    ) throws(HTTP1ParseError) {
        while !self.requestEnded, let event = try self.requestParser.next(from: &bytes) {
            switch event {
            case .head(let head):
                self.hold(.headers(.init(headers: Self.requestHeaders(head))), emit: emit)
            case .body(let body):
                self.hold(.data(.init(data: .byteBuffer(body))), emit: emit)
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
    }

    /// The frame held back for the flush, if any.
    mutating func flush() -> HTTP2Frame.FramePayload? {
        self.heldFrame.take()
    }

    private mutating func hold(_ frame: HTTP2Frame.FramePayload, emit: (HTTP2Frame.FramePayload) -> Void) {
        if let previous = self.heldFrame {
            emit(previous)
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

    // MARK: Response in

    /// The HTTP/1.1 bytes for a frame of the pod's response, given to `emit` in order.
    mutating func responseFrame(
        _ payload: HTTP2Frame.FramePayload,
        allocator: ByteBufferAllocator,
        emit: (ByteBuffer) -> Void
    ) {
        switch payload {
        case .headers(let frame) where self.responseIsChunked == nil:
            emit(self.responseHead(frame, allocator: allocator))
        case .headers(let frame):
            // Trailers: the end of a chunked body carries them; a body framed by its length cannot.
            if self.responseIsChunked == true {
                var last = allocator.buffer(capacity: 64)
                last.writeStaticString("0\r\n")
                for field in frame.headers where field.name.utf8.first != UInt8(ascii: ":") {
                    Self.writeField(field.name, field.value, into: &last)
                }
                last.writeStaticString("\r\n")
                emit(last)
            }
        case .data(let frame):
            guard case .byteBuffer(let bytes) = frame.data else { return }
            if self.responseIsChunked == true {
                if bytes.readableBytes > 0 {
                    HTTPSyntax.frameChunk(bytes, allocator: allocator, emit)
                }
                if frame.endStream {
                    emit(HTTPSyntax.lastChunk)
                }
            } else {
                emit(bytes)
            }
        default:
            // RST_STREAM ends the stream by its StreamClosedEvent; the other frames carry nothing of the answer.
            break
        }
    }

    private mutating func responseHead(
        _ frame: HTTP2Frame.FramePayload.Headers,
        allocator: ByteBufferAllocator
    ) -> ByteBuffer {
        let status = frame.headers.first(name: ":status").flatMap { Int($0) } ?? 0
        var head = allocator.buffer(capacity: 256)
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
        return head
    }

    /// swift-nio-http2 validated the field (RFC 9113 §8.2.1: no CR, LF or NUL); the response parser checks
    /// the rest as it would any pod's.
    private static func writeField(_ name: String, _ value: String, into buffer: inout ByteBuffer) {
        buffer.writeString(name)
        buffer.writeStaticString(": ")
        buffer.writeString(value)
        buffer.writeStaticString("\r\n")
    }
}

/// The pod reset a request's stream (or closed it by GOAWAY before processing it).
struct UpstreamStreamReset: Error, CustomStringConvertible {
    var code: HTTP2ErrorCode

    /// The pod did not process the request (RFC 9113 §8.7): retrying it elsewhere is safe for any method.
    var wasRefused: Bool { self.code == .refusedStream }

    var description: String { "stream reset by the endpoint (\(self.code))" }
}
