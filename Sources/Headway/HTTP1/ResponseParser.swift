import NIOCore

/// Reads HTTP/1.x responses from the bytes of one upstream connection, strictly, and hands back what the
/// proxy needs to relay them: the head (kept as bytes, to be rewritten) and the body as plain data.
///
/// Headway parses responses itself rather than through NIO's decoder and encoder: relaying bytes avoids
/// building header strings that are only written out again, which is where a straightforward NIO proxy
/// spends most of its user time (PERFORMANCE-NOTES, variant C). The price is that correctness is ours, so
/// the parser is strict where RFC 9112 lets a recipient be (HTTP-EDGE-CASES U5–U10): a malformed status
/// line or field, obs-fold, bare CR or LF, control characters, an invalid or repeated `Content-Length`, a
/// `Transfer-Encoding` other than `chunked`, both framings at once, or bytes after a complete response all
/// make the response invalid, and the connection is never reused.
///
/// Chunked bodies are decoded here (extensions are dropped), so the relayed data is always plain; the
/// downstream side frames it again for its client. A trailer section is relayed as it came (gRPC's status is
/// in it).
struct ResponseParser {
    /// Longest accepted response head; longer ones are refused (U11).
    static let maximumHeadLength = 64 * 1024

    enum Event {
        /// A 1xx response other than 101; the final response follows.
        case informational(ResponseHead)
        case head(ResponseHead)
        case body(ByteBuffer)
        /// A chunked body's trailer fields, as lines ending with the empty line; `.end` follows.
        case trailers(ByteBuffer)
        case end
    }

    private enum State {
        case head
        case body(BodyReader)
        /// The response ended; any further byte is unsolicited.
        case done
    }

    private var state: State = .head
    private var head = HeadAccumulator()

    /// Prepares for the response to the next request.
    mutating func expectResponse() {
        self.state = .head
        self.head.reset()
    }

    /// Consumes bytes from `buffer` and returns the next event, or `nil` when more bytes are needed.
    ///
    /// Call it again until it returns `nil`: one buffer can hold a head, a body and the end.
    /// - Parameter isHeadRequest: the response answers a HEAD request (no body, whatever it says).
    /// - Parameter upgradeRequested: the request asked to switch protocols: a 101 is its answer, and every
    ///   byte after it is body, until the close.
    mutating func next(
        from buffer: inout ByteBuffer,
        isHeadRequest: Bool,
        upgradeRequested: Bool = false
    ) throws(HTTP1ParseError) -> Event? {
        switch self.state {
        case .head:
            return try self.parseHead(from: &buffer, isHeadRequest: isHeadRequest, upgradeRequested: upgradeRequested)

        case .body(var reader):
            let data = try reader.next(from: &buffer)
            if let data {
                self.state = .body(reader)
                return .body(data)
            }
            if reader.isComplete {
                if let trailers = reader.takeTrailers() {
                    self.state = .body(reader)
                    return .trailers(trailers)
                }
                self.state = .done
                return .end
            }
            self.state = .body(reader)
            return nil

        case .done:
            guard buffer.readableBytes == 0 else {
                throw .init("bytes after the end of the response")
            }
            return nil
        }
    }

    /// The upstream closed its side. Returns `.end` if that completes the response (a body delimited by
    /// the close), `nil` if no response was in progress, and throws if a response was cut short.
    mutating func inputClosed() throws(HTTP1ParseError) -> Event? {
        switch self.state {
        case .body(let reader) where reader.endsAtClose || reader.isComplete:
            self.state = .done
            return .end
        case .done:
            return nil
        case .head where self.head.pending.readableBytes == 0:
            return nil
        case .head, .body:
            throw .init("the connection closed in the middle of the response")
        }
    }

    // MARK: Head

    private mutating func parseHead(
        from buffer: inout ByteBuffer,
        isHeadRequest: Bool,
        upgradeRequested: Bool
    ) throws(HTTP1ParseError) -> Event? {
        guard let headBytes = self.head.nextHead(from: &buffer) else {
            if self.head.pending.readableBytes > Self.maximumHeadLength {
                throw .init("response head larger than \(Self.maximumHeadLength) bytes")
            }
            return nil
        }
        // A head that arrived whole in one read is held to the same limit.
        guard headBytes.readableBytes <= Self.maximumHeadLength else {
            throw .init("response head larger than \(Self.maximumHeadLength) bytes")
        }
        let head = try ResponseHead(
            parsing: headBytes,
            isHeadRequest: isHeadRequest,
            upgradeRequested: upgradeRequested
        )
        if head.isInformational {
            self.state = .head
            return .informational(head)
        }
        self.state = .body(BodyReader(head.framing))
        return .head(head)
    }
}
