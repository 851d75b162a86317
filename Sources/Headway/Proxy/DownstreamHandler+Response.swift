import Logging
import NIOCore
import NIOHTTP1

/// The way back: relaying the pod's response as HTTP/1.1 framed for this client, Headway's own answers, and
/// what happens to the connection after each response.
extension DownstreamHandler {
    /// A response event arrived on the leased connection.
    func upstreamReceived(_ event: ResponseParser.Event, from connection: UpstreamConnection) {
        // The exchange is read in place, not copied: a copy of the struct would retain each of its references,
        // several times per response.
        guard self.exchange?.connection === connection, self.hasClient else {
            connection.close()
            return
        }
        let clientVersionMinor = self.exchange!.clientVersionMinor
        switch event {
        case .informational(let head):
            // 1xx (100 Continue, 103 Early Hints) go on to HTTP/1.1 clients; HTTP/1.0 ones must not see them.
            if let stream = self.stream {
                stream.writeInformational(head)
            } else if clientVersionMinor >= 1 {
                var bytes = self.clientAllocator.buffer(capacity: head.bytes.readableBytes + 32)
                head.writeClientHead(
                    into: &bytes,
                    clientVersionMinor: clientVersionMinor,
                    chunked: false,
                    closeConnection: false
                )
                self.writeToClient(bytes)
            }
        case .head(let head):
            self.responseHeadReceived(head, on: connection)
        case .body(let buffer):
            self.exchange!.machine.responseBodyReceived(now: self.cluster.coarseNow)
            self.exchange!.responseBodyBytes += buffer.readableBytes
            if let stream = self.stream {
                stream.writeResponseBody(buffer)
            } else if self.exchange!.chunksResponse {
                HTTPSyntax.frameChunk(buffer, allocator: self.clientAllocator) {
                    self.writeToClient($0)
                }
            } else {
                self.writeToClient(buffer)
            }
        case .trailers(let trailers):
            self.exchange!.responseTrailers = trailers
            if self.accessLog != nil, self.stream != nil {
                self.exchange!.grpcStatus = HTTP2Translation.grpcStatus(ofTrailers: trailers)
            }
        case .end:
            self.finishExchange()
        }
    }

    private func responseHeadReceived(_ head: ResponseHead, on connection: UpstreamConnection) {
        let pool = self.exchange!.pool!
        let sentAt = self.exchange!.machine.requestSentAt
        let action = self.exchange!.machine.responseHeadReceived(
            status: head.status,
            upstreamKeepsAlive: head.isKeepAlive,
            budget: &self.cluster.retryBudget,
            now: self.cluster.coarseNow
        )
        switch action {
        case .retry(let reason):
            // This answer never reaches the client: its connection goes, another endpoint gets the request.
            connection.lessee = nil
            connection.close()
            self.stopClock()
            pool.endpoint.requestEnded()
            self.cluster.responseFinished(pool.endpoint, status: head.status)
            self.exchange!.connection = nil
            self.exchange!.pool = nil
            self.retryElsewhere(after: pool, reason: reason)
            return
        case .openTunnel:
            self.startTunnel(head)
            return
        case .relay(let closeClient, let budgetRefusedRetry):
            if budgetRefusedRetry {
                self.retryRefusedByBudget(on: pool, reason: "answered \(head.status) (retry_on)")
            }
            if closeClient { self.closeAfterResponse = true }
        }
        if let slot = self.deadlineSlot, let deadline = self.exchange!.machine.deadline {
            self.cluster.moveDeadline(slot: slot, to: deadline)
        }
        if let sentAt, self.cluster.measuresLatency || self.accessLog != nil {
            let now = NIODeadline.now()
            if self.cluster.measuresLatency {
                self.cluster.responseHeadArrived(pool.endpoint, latency: now - sentAt, now: now)
            }
            self.exchange!.upstreamFirstByte = now - sentAt
        }
        let clientVersionMinor = self.exchange!.clientVersionMinor
        let hasOpenEndedBody = head.framing == .chunked || head.framing == .untilClose
        if hasOpenEndedBody && clientVersionMinor == 0 {
            // An HTTP/1.0 client learns where such a body ends only from the close.
            self.closeAfterResponse = true
        }
        self.exchange!.responseStatus = head.status
        if let stream = self.stream {
            if self.accessLog != nil {
                self.exchange!.grpcStatus = HTTP2Translation.grpcStatus(of: head)
            }
            // HTTP/2 frames the body itself: the head goes over as the parser read it.
            stream.writeResponseHead(head)
            return
        }
        self.exchange!.chunksResponse = hasOpenEndedBody && clientVersionMinor >= 1
        // Room for a small body too: it usually arrives in the same read and then leaves in one write.
        var bytes = self.cluster.headBuffers.take(
            minimumCapacity: head.bytes.readableBytes + 64 + Self.coalescingLimit,
            allocator: self.clientAllocator
        )
        head.writeClientHead(
            into: &bytes,
            clientVersionMinor: clientVersionMinor,
            chunked: self.exchange!.chunksResponse,
            closeConnection: self.closeAfterResponse
        )
        self.writeToClient(bytes, isRecycled: true)
    }

    /// The pod switched protocols: relay its 101, then carry bytes both ways, unparsed and without timeouts
    /// (a WebSocket may stay quiet for hours), until either side closes; the connection ends with the tunnel.
    private func startTunnel(_ head: ResponseHead) {
        self.stopClock()
        self.exchange!.responseStatus = head.status
        var bytes = self.clientAllocator.buffer(capacity: head.bytes.readableBytes + 64)
        head.writeClientHead(into: &bytes, clientVersionMinor: 1, chunked: false, closeConnection: false)
        self.writeToClient(bytes)
        self.closeAfterResponse = true
        self.logAccess(
            self.exchange,
            status: head.status,
            bytesOut: 0,
            endpoint: self.exchange!.pool?.endpoint.label,
            localReason: nil
        )
        self.logger.debug(
            "tunnel open",
            metadata: ["endpoint.address": "\(self.exchange!.pool?.endpoint.label ?? "?")"]
        )
    }

    /// Response pieces up to this size are copied into one buffer rather than written one by one.
    static let coalescingLimit = 4096

    /// Queues response bytes for the client: small pieces are appended to the bytes not yet written (one
    /// write and one iovec instead of several), large ones are written as they are, without copying.
    ///
    /// - Parameter isRecycled: `buffer` came from the loop's ``HeadBufferRecycler`` and goes back to it
    ///   once written.
    func writeToClient(_ buffer: ByteBuffer, isRecycled: Bool = false) {
        if buffer.readableBytes <= Self.coalescingLimit {
            if self.unwrittenResponse == nil {
                self.unwrittenResponse = buffer
                self.unwrittenResponseIsRecycled = isRecycled
            } else {
                var piece = buffer
                self.unwrittenResponse!.writeBuffer(&piece)
                if isRecycled { self.cluster.headBuffers.giveBack(buffer) }
            }
            return
        }
        self.writeUnwrittenResponse()
        self.writeToClientNow(buffer)
        if isRecycled { self.cluster.headBuffers.giveBackOnceFlushed(buffer) }
    }

    func writeUnwrittenResponse() {
        if let bytes = self.takeUnwrittenResponse() {
            self.writeToClientNow(bytes)
        }
    }

    /// The response bytes not yet written, now the caller's to write; a recycled buffer among them goes
    /// back to the loop's recycler (it is reused only once the write has let go of it).
    private func takeUnwrittenResponse() -> ByteBuffer? {
        guard let bytes = self.unwrittenResponse.take() else { return nil }
        if self.unwrittenResponseIsRecycled {
            self.unwrittenResponseIsRecycled = false
            self.cluster.headBuffers.giveBackOnceFlushed(bytes)
        }
        return bytes
    }

    /// The response ended: give the connection back, then tell the client, then go on with the next request.
    private func finishExchange() {
        guard let connection = self.exchange?.connection, let pool = self.exchange?.pool else { return }
        // State first, write last: writing `.end` may re-enter this handler.
        self.stopClock()
        let exchange = self.exchange.take()!
        // The pod answered, so the request head has been written: its buffer can serve the next exchange.
        self.cluster.headBuffers.giveBack(exchange.upstreamHead)
        let completion = exchange.machine.responseEnded()
        if completion.requestWasCutShort {
            // The pod answered before reading the whole request; the rest of it cannot be resynchronised.
            self.closeAfterResponse = true
        }
        // The request ends before the release, which may close the last connection of a drained endpoint.
        pool.endpoint.requestEnded()
        pool.release(connection, reusable: completion.connectionIsReusable)
        let duration = NIODeadline.now() - exchange.start
        pool.responseFinished(status: exchange.responseStatus, after: duration)
        self.cluster.responseFinished(pool.endpoint, status: exchange.responseStatus)
        self.logAccess(
            exchange,
            status: exchange.responseStatus,
            bytesOut: exchange.responseBodyBytes,
            endpoint: pool.endpoint.label,
            localReason: nil
        )
        if self.logs(.trace) {
            self.logger.trace(
                "request done",
                metadata: ["endpoint.address": "\(pool.endpoint.label)", "status": "\(exchange.responseStatus)"]
            )
        }
        var lastBytes: ByteBuffer?
        if let stream = self.stream {
            stream.writeResponseEnd(trailers: exchange.responseTrailers)
        } else if exchange.chunksResponse {
            if var trailers = exchange.responseTrailers {
                // Trailers follow the last chunk; a body that is not chunked (to HTTP/1.0) drops them.
                var last = self.clientAllocator.buffer(capacity: trailers.readableBytes + 3)
                last.writeStaticString("0\r\n")
                last.writeBuffer(&trailers)
                lastBytes = last
            } else {
                lastBytes = HTTPSyntax.lastChunk
            }
        }
        self.writeEndAndContinue(lastBytes: lastBytes)
    }

    /// Answers the current request (or a request that never became an exchange) with Headway's own response.
    func failExchange(_ error: ProxyError) {
        let versionMinor = self.exchange?.clientVersionMinor ?? 1
        self.logAccess(self.exchange, answeredWith: error)
        if let exchange = self.exchange {
            self.logger.warning(
                "answering \(error.status.code) \(error.status.reasonPhrase)",
                metadata: ["reason": "\(error.detail)", "request.method": "\(exchange.requestHead.methodName)"]
            )
            if !exchange.machine.requestEndReceived {
                if exchange.requestHead.framing == .none {
                    // Only the `.end` of a bodyless request is still to come: skip it and keep the connection.
                    self.discardingUntilRequestEnd = true
                } else {
                    // A body is still coming; reading it just to throw it away is not worth it.
                    self.closeAfterResponse = true
                }
            }
        }
        self.stopClock()
        self.exchange = nil
        self.respondLocally(error, clientVersionMinor: versionMinor)
    }

    func respondLocally(_ error: ProxyError, clientVersionMinor: UInt8) {
        guard self.hasClient else { return }
        self.cluster.metrics.localResponseSent()
        if let stream = self.stream {
            stream.answerLocally(error)
            self.writeEndAndContinue(lastBytes: nil)
            return
        }
        let bytes = error.response(
            clientVersionMinor: clientVersionMinor,
            closeConnection: self.closeAfterResponse,
            allocator: self.clientAllocator
        )
        self.writeEndAndContinue(lastBytes: bytes)
    }

    /// Writes the last bytes of a response and flushes; then closes, or starts the next pipelined request.
    private func writeEndAndContinue(lastBytes: ByteBuffer?) {
        if let lastBytes {
            self.writeToClient(lastBytes)
        }
        if self.closeAfterResponse {
            self.pending.removeAll()
            guard let context = self.context else {
                // On an HTTP/2 stream the response ended the stream; a client still sending is told to stop.
                self.writeUnwrittenResponse()
                self.stream?.flush()
                self.stream?.finish()
                return
            }
            let bytes = self.takeUnwrittenResponse() ?? self.clientAllocator.buffer(capacity: 0)
            let clientMaySendMore = self.stoppedParsing || self.parser.isInsideRequest
            context.writeAndFlush(self.wrapOutboundOut(bytes)).assumeIsolated().whenComplete { result in
                if clientMaySendMore, case .success = result {
                    self.lingerThenClose(context: context)
                } else {
                    context.close(promise: nil)
                }
            }
            return
        }
        self.writeUnwrittenResponse()
        self.flushClientAtEndOfTick()
        self.lastClientActivity = self.cluster.coarseNow
        _ = self.startNextPendingExchange()
        self.resumeReadingIfPossible()
    }

    /// Closes the output side and drops what the client still sends, for at most ``lingerTime``, before
    /// closing: closing a socket with unread input makes the kernel send RST, which can destroy the answer
    /// before the client reads it (a client uploading a body it was refused must see the 413 or 502).
    private func lingerThenClose(context: ChannelHandlerContext) {
        self.stoppedParsing = true
        context.close(mode: .output, promise: nil)
        self.lingerTimer = context.eventLoop.assumeIsolated().scheduleTask(in: Self.lingerTime) {
            context.close(promise: nil)
        }
    }

    private static let lingerTime: TimeAmount = .seconds(2)
}
