import NIOCore
import NIOHPACK
import NIOHTTP2

/// The translation of one HTTP/2 client stream, as a value: its request frames become the HTTP/1.1 bytes the
/// stream's ``DownstreamHandler`` reads, and that handler's response bytes become frames again.
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
    private var isGRPC = false
    private var isHeadRequest = false
    private var responseParser = ResponseParser()
    /// The response's HEADERS, held until the next piece shows whether they also end the stream.
    private var pendingHeaders: HPACKHeaders?
    /// The response's trailer fields, sent as the HEADERS that end the stream.
    private var pendingTrailers: HPACKHeaders?
    /// Announced by the handler just before it writes Headway's own answer.
    private var localAnswer: ProxyError?
    /// A gRPC answer went out trailers-only: the HTTP/1 answer's body is not for this client.
    private var discardsResponse = false
    private(set) var responseEnded = false

    init() {
        self.responseParser.expectResponse()
    }

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
        self.isHeadRequest = frame.headers.first(name: ":method") == "HEAD"
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

    /// The handler is about to write Headway's own answer for `error`.
    mutating func localAnswerFollows(_ error: ProxyError) {
        self.localAnswer = error
    }

    /// The frames for response bytes the handler wrote, in order; the last may wait for the next bytes.
    mutating func responseBytes(
        _ bytes: inout ByteBuffer,
        emit: (HTTP2Frame.FramePayload) -> Void
    ) throws(HTTP1ParseError) {
        var frames: [HTTP2Frame.FramePayload] = []
        while let event = try self.responseParser.next(
            from: &bytes,
            isHeadRequest: self.isHeadRequest,
            upgradeRequested: false
        ) {
            self.responseEventReady(event, frames: &frames)
        }
        for frame in frames { emit(frame) }
    }

    private mutating func responseEventReady(_ event: ResponseParser.Event, frames: inout [HTTP2Frame.FramePayload]) {
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
