import NIOCore
import NIOHPACK
import NIOHTTP1
import NIOHTTP2

/// The translation of one HTTP/2 client stream, as a value: its request frames become the HTTP/1.1 bytes the
/// stream's ``DownstreamHandler`` reads, and the response that handler relays (the pod's head, as its parser
/// read it, body pieces and trailers, or Headway's own answer) becomes frames, with no HTTP/1.1 in between.
///
/// So every stream is an exchange of its own: it picks its pod with the upstream's policy, whatever
/// connection it came on (per-request balancing of multiplexed streams), and gets the retries, timeouts,
/// limits, access log line and metrics of any request, from the same code. ``HTTP2ClientStream`` carries out
/// what it returns.
///
/// Headway's own answer to a gRPC request (`content-type: application/grpc…`) is a gRPC answer: HTTP 200
/// with `grpc-status` and `grpc-message` in a trailers-only response, as gRPC clients read it.
struct HTTP2StreamBridge {
    /// What a request frame comes to.
    enum RequestPiece {
        /// HTTP/1.1 bytes for the handler.
        case bytes(ByteBuffer)
        /// The client's own deadline for the request (`grpc-timeout`), told before its head.
        case clientDeadline(TimeAmount)
        /// The request cannot be carried on: the stream is reset with PROTOCOL_ERROR.
        case malformed(reason: String)
    }

    /// How the request body is framed towards the handler behind; `nil` until the request's HEADERS.
    private var requestBody: HTTP2Translation.RequestBody?
    private(set) var isGRPC = false
    /// The response's HEADERS, held until the next piece shows whether they also end the stream.
    private var pendingHeaders: HPACKHeaders?
    /// The last piece of the response body, held until the next piece shows whether it ends the stream.
    private var heldData: ByteBuffer?
    /// The pod's head was handed over: from then on only a reset can replace the response.
    private var responseBegan = false
    private(set) var responseEnded = false

    // MARK: Request in

    mutating func requestFrame(
        _ payload: HTTP2Frame.FramePayload,
        allocator: ByteBufferAllocator,
        _ piece: (RequestPiece) -> Void
    ) {
        switch payload {
        case .headers(let headers) where self.requestBody == nil:
            self.requestHeadersReceived(headers, allocator: allocator, piece)
        case .headers(let trailers):
            // Request trailers have no HTTP/1 counterpart Headway relays; they end the body.
            if trailers.endStream { self.requestEnded(piece) }
        case .data(let data):
            guard case .byteBuffer(let bytes) = data.data else { break }
            if bytes.readableBytes > 0 {
                if self.requestBody == .chunked {
                    HTTPSyntax.frameChunk(bytes, allocator: allocator) { piece(.bytes($0)) }
                } else {
                    piece(.bytes(bytes))
                }
            }
            if data.endStream { self.requestEnded(piece) }
        default:
            // RST_STREAM ends the stream by its StreamClosedEvent, and the handler abandons its exchange then.
            break
        }
    }

    private mutating func requestHeadersReceived(
        _ frame: HTTP2Frame.FramePayload.Headers,
        allocator: ByteBufferAllocator,
        _ piece: (RequestPiece) -> Void
    ) {
        var head = allocator.buffer(capacity: 256)
        do {
            self.requestBody = try HTTP2Translation.writeRequestHead(
                frame.headers,
                endStream: frame.endStream,
                into: &head
            )
        } catch {
            piece(.malformed(reason: "\(error)"))
            return
        }
        self.isGRPC = frame.headers.first(name: "content-type")?.hasPrefix("application/grpc") ?? false
        if self.isGRPC, let timeout = frame.headers.first(name: "grpc-timeout").flatMap(HTTP2Translation.grpcTimeout) {
            piece(.clientDeadline(timeout))
        }
        piece(.bytes(head))
    }

    private func requestEnded(_ piece: (RequestPiece) -> Void) {
        if self.requestBody == .chunked {
            piece(.bytes(HTTPSyntax.lastChunk))
        }
    }

    // MARK: Response out

    /// The frames a piece of the response comes to, at most two, in order (no array to allocate).
    struct ResponseFrames {
        private(set) var first: HTTP2Frame.FramePayload?
        private(set) var second: HTTP2Frame.FramePayload?

        fileprivate mutating func append(_ frame: HTTP2Frame.FramePayload?) {
            guard let frame else { return }
            if self.first == nil {
                self.first = frame
            } else {
                assert(self.second == nil)
                self.second = frame
            }
        }

        func forEach(_ body: (HTTP2Frame.FramePayload) -> Void) {
            if let first = self.first { body(first) }
            if let second = self.second { body(second) }
        }
    }

    /// A 1xx from the pod (100 Continue, 103 Early Hints): HEADERS of their own.
    func informationalResponse(_ head: ResponseHead) -> ResponseFrames {
        var frames = ResponseFrames()
        frames.append(.headers(.init(headers: HTTP2Translation.responseHeaders(head))))
        return frames
    }

    /// The pod's response head, held until the next piece shows whether it also ends the stream.
    mutating func responseHead(_ head: ResponseHead) {
        self.responseBegan = true
        self.pendingHeaders = HTTP2Translation.responseHeaders(head)
    }

    /// A piece of the response body. Each DATA frame is held until the next piece, so that the last one
    /// carries END_STREAM (no empty frame after it).
    mutating func responseBody(_ bytes: ByteBuffer) -> ResponseFrames {
        var frames = ResponseFrames()
        frames.append(self.pendingHeaders.take().map { .headers(.init(headers: $0)) })
        frames.append(self.heldData.take().map { .data(.init(data: .byteBuffer($0))) })
        self.heldData = bytes
        return frames
    }

    /// The end of the response, with the trailer section the pod sent (lines checked by its parser), if any.
    mutating func responseEnded(trailers: ByteBuffer?) -> ResponseFrames {
        self.responseEnded = true
        var frames = ResponseFrames()
        if let trailers {
            frames.append(self.pendingHeaders.take().map { .headers(.init(headers: $0)) })
            frames.append(self.heldData.take().map { .data(.init(data: .byteBuffer($0))) })
            frames.append(.headers(.init(headers: HTTP2Translation.trailerFields(trailers), endStream: true)))
        } else if let headers = self.pendingHeaders.take() {
            frames.append(.headers(.init(headers: headers, endStream: true)))
        } else {
            frames.append(.data(.init(data: .byteBuffer(self.heldData.take() ?? ByteBuffer()), endStream: true)))
        }
        return frames
    }

    /// The DATA frame held back, if any, for a flush that cannot wait for the next piece.
    mutating func takeHeldData() -> ResponseFrames {
        var frames = ResponseFrames()
        frames.append(self.heldData.take().map { .data(.init(data: .byteBuffer($0))) })
        return frames
    }

    /// Headway's own answer for `error`, as the whole response: for a gRPC request a trailers-only gRPC
    /// answer, otherwise the status and the reason as a short text. `nil` once the pod's response has begun:
    /// the stream can only be reset then.
    mutating func localAnswer(_ error: ProxyError, allocator: ByteBufferAllocator) -> ResponseFrames? {
        guard !self.responseBegan, !self.responseEnded else { return nil }
        self.responseEnded = true
        var frames = ResponseFrames()
        if self.isGRPC {
            frames.append(.headers(.init(headers: Self.grpcAnswer(error), endStream: true)))
            return frames
        }
        var headers: HPACKHeaders = [
            ":status": String(error.status.code),
            "content-type": ProxyError.bodyContentType,
            "content-length": String(error.bodyLength),
        ]
        if error.isRetryableLater { headers.add(name: "retry-after", value: "1") }
        frames.append(.headers(.init(headers: headers)))
        frames.append(.data(.init(data: .byteBuffer(allocator.buffer(string: error.body)), endStream: true)))
        return frames
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
