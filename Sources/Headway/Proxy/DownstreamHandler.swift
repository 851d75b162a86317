import Logging
import NIOCore
import NIOHTTP1

/// The last handler of a client connection: it runs one exchange at a time, each over a leased upstream
/// connection on the same event loop.
///
/// Request parts that cannot be forwarded yet (the upstream connection is still opening, or they belong to a
/// pipelined request behind the current one) wait in `pending`, and reading from the client stops until
/// they are gone. Responses therefore leave in request order.
///
/// Backpressure both ways holds `read` rather than buffering: the client is read only while the upstream
/// connection is writable, and the upstream only while the client is writable.
final class DownstreamHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    /// Nothing is written through this handler; it is outbound only to hold back `read`.
    typealias OutboundIn = ByteBuffer
    /// Responses are written as bytes: Headway frames them itself (see ``ResponseHead``).
    typealias OutboundOut = ByteBuffer

    private let cluster: LoopCluster
    private let client: ClientSettings
    private var logger: Logger
    private var context: ChannelHandlerContext?
    private var clientIP: String?

    private var parser: RequestParser
    /// Set after a malformed request: its answer is on the way and nothing more is read.
    private var stoppedParsing = false
    /// Request parts received but not yet forwarded, oldest first.
    private var pending = CircularBuffer<RequestParser.Event>(initialCapacity: 4)
    private var exchange: Exchange?
    /// Incremented for every upstream attempt, so that a late connect result for an abandoned attempt is
    /// recognised and ignored.
    private var attemptCounter = 0
    /// A `read` from the pipeline that we held back.
    private var readHeld = false
    /// Close the client connection once the current response is complete.
    private var closeAfterResponse = false
    /// Headway answered a bodyless request before its `.end` arrived: drop parts up to that `.end`.
    private var discardingUntilRequestEnd = false
    private var isActive = true
    /// The answer is out and the output side closed; what the client still sends is read and dropped.
    private var lingerTimer: Scheduled<Void>?
    /// This handler's slot in its loop's ``ResponseDeadlines`` while it waits on the upstream.
    private var deadlineSlot: Int?
    /// Response bytes not yet written: small pieces are gathered into one write per read batch.
    private var unwrittenResponse: ByteBuffer?

    // Client timeouts, checked by the loop's client sweep against its coarse clock (no timer per connection).
    /// This handler's slot in its loop's client list.
    private var clientSlot: Int?
    /// The last byte from the client, or the end of the last response (for the idle and body timeouts).
    private var lastClientActivity = NIODeadline.uptimeNanoseconds(0)
    /// When the first byte of the request head being read arrived (for the header timeout).
    private var headStartedAt = NIODeadline.uptimeNanoseconds(0)
    /// Since when the client has not taken response bytes (for the write timeout).
    private var notWritableSince: NIODeadline?
    /// Body bytes of the current request so far, against `max_request_body`.
    private var requestBodyBytes = 0

    init(cluster: LoopCluster, client: ClientSettings, logger: Logger) {
        self.cluster = cluster
        self.client = client
        self.logger = logger
        self.parser = RequestParser(limits: client.requestLimits)
    }

    /// The state of the request being served.
    private struct Exchange {
        let requestHead: RequestHead
        /// The serialized head for the upstream, kept to replay the request on another endpoint.
        let upstreamHead: ByteBuffer
        let start: NIODeadline
        /// The request's key for the `hash` policy.
        var hashKey: UInt64?
        /// When the current attempt's request was sent, for the `ewma` policy's latency.
        var attemptSent: NIODeadline?
        var attempt: Int
        var pool: UpstreamPool?
        var connection: UpstreamConnection?
        /// The pool that failed the previous attempt; the retry avoids it when it can.
        var failedPool: UpstreamPool?
        var retries = 0
        /// The client's `.end` has arrived (it may still wait in `pending`).
        var requestEndReceived = false
        /// The `.end` has been written upstream.
        var requestEndForwarded = false
        /// Body parts written upstream in this attempt, kept while they fit `retry_buffer_limit` so that the
        /// request can be replayed on another endpoint.
        var forwardedBody: [ByteBuffer] = []
        var forwardedBodyBytes = 0
        /// Every body part forwarded so far is in `forwardedBody`; cleared for good once the body outgrows it.
        var bodyIsReplayable = true
        var responseHeadSent = false
        /// The loop's coarse clock when the last piece of the response arrived, for `idle_timeout`.
        var lastResponseProgress = NIODeadline.uptimeNanoseconds(0)
        var responseStatus: UInt = 0
        /// The response body goes to the client in chunks that Headway frames.
        var chunksResponse = false
        /// The upstream connection can serve another request after this response.
        var upstreamReusable = false
        /// The request asks to switch protocols and may become a tunnel.
        var offersUpgrade = false
        /// The pod answered 101: bytes now flow unparsed both ways until either side closes.
        var isTunnel = false

        var isHeadRequest: Bool { self.requestHead.method == .head }
        var isChunkedRequest: Bool { self.requestHead.framing == .chunked }
        var clientVersionMinor: UInt8 { self.requestHead.versionMinor }
    }

    var isClientWritable: Bool { self.context?.channel.isWritable ?? false }

    // MARK: Channel events

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        self.lastClientActivity = self.cluster.coarseNow
        self.clientSlot = self.cluster.clientConnected(self)
        self.clientIP = context.channel.remoteAddress?.ipAddress
        self.logger[metadataKey: "client.address"] = "\(context.channel.remoteAddress.map { "\($0)" } ?? "?")"
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        self.leaveClientList()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !self.stoppedParsing else { return }
        var buffer = self.unwrapInboundIn(data)
        if self.exchange?.isTunnel == true {
            self.exchange!.connection?.write(buffer)
            return
        }
        let now = self.cluster.coarseNow
        if !self.parser.isInsideRequest {
            self.headStartedAt = now
        }
        self.lastClientActivity = now
        do {
            while !self.stoppedParsing, let event = try self.parser.next(from: &buffer) {
                self.received(event)
            }
        } catch {
            // After a framing error the connection cannot be resynchronised: answer once, then close.
            self.refuseRequest(.malformedRequest(error))
        }
    }

    private func received(_ event: RequestParser.Event) {
        if self.discardingUntilRequestEnd {
            if case .end = event { self.discardingUntilRequestEnd = false }
            return
        }
        switch event {
        case .head(let head):
            self.requestBodyBytes = 0
            if let limit = self.client.maxRequestBody, case .contentLength(let length) = head.framing, length > limit {
                // Refused before anything is sent upstream; the body need not be read.
                self.refuseRequest(.requestTooLarge(limit: limit))
                return
            }
            if self.exchange == nil && self.pending.isEmpty && !self.closeAfterResponse {
                self.startExchange(head)
            } else {
                self.pending.append(event)
            }
        case .body(let buffer):
            self.requestBodyBytes += buffer.readableBytes
            if let limit = self.client.maxRequestBody, self.requestBodyBytes > limit {
                self.refuseRequest(.requestTooLarge(limit: limit))
                return
            }
            guard self.exchange != nil, self.exchange?.requestEndReceived == false else {
                self.pending.append(event)
                return
            }
            if let connection = self.exchange?.connection, self.pending.isEmpty {
                self.forwardBody(buffer, to: connection)
            } else {
                self.pending.append(event)
            }
        case .end:
            guard self.exchange != nil, self.exchange?.requestEndReceived == false else {
                self.pending.append(event)
                return
            }
            self.exchange!.requestEndReceived = true
            if let connection = self.exchange?.connection, self.pending.isEmpty {
                self.forwardEnd(to: connection)
            } else {
                self.pending.append(event)
            }
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        self.exchange?.connection?.flush()
    }

    func read(context: ChannelHandlerContext) {
        if self.shouldHoldRead {
            self.readHeld = true
        } else {
            context.read()
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            self.notWritableSince = nil
            self.exchange?.connection?.resumeReading()
        } else {
            self.notWritableSince = self.cluster.coarseNow
        }
        context.fireChannelWritabilityChanged()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        switch event {
        case is ChannelShouldQuiesceEvent:
            // Graceful shutdown: finish the current exchange, then close.
            self.closeAfterResponse = true
            if self.exchange == nil {
                context.close(promise: nil)
            }
        case ChannelEvent.inputClosed where self.lingerTimer != nil:
            context.close(promise: nil)
        case ChannelEvent.inputClosed where self.exchange?.isTunnel == true:
            // The client has finished sending; the pod may still answer.
            self.exchange?.connection?.closeOutput()
        case ChannelEvent.inputClosed:
            // The client half-closed: answer what it sent, then close. A request cut short cannot be answered.
            self.closeAfterResponse = true
            if self.parser.isInsideRequest && self.exchange?.requestEndReceived != true {
                self.abortExchange()
                context.close(promise: nil)
                return
            }
            if self.exchange == nil {
                if let head = self.nextPendingHead() {
                    self.startPendingExchange(head)
                } else {
                    context.close(promise: nil)
                }
            }
        default:
            context.fireUserInboundEventTriggered(event)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // Resets and other I/O errors: nobody is left to answer.
        self.logger.debug("client connection error", metadata: ["error": "\(error)"])
        self.abortExchange()
        context.close(promise: nil)
    }

    /// Stops reading requests and answers `error` once (or aborts the connection when an answer has started):
    /// for malformed requests, bodies over `max_request_body` and client timeouts. The connection closes.
    private func refuseRequest(_ error: ProxyError) {
        guard let context = self.context else { return }
        self.stoppedParsing = true
        self.closeAfterResponse = true
        self.pending.removeAll()
        self.logger.info(
            "refusing the request; answering \(error.status.code) and closing",
            metadata: ["reason": "\(error.detail)"]
        )
        if self.exchange?.responseHeadSent == true {
            self.abortExchange()
            context.close(promise: nil)
        } else {
            let versionMinor = self.exchange?.clientVersionMinor ?? 1
            self.abortExchange()
            self.respondLocally(error, clientVersionMinor: versionMinor)
        }
    }

    // MARK: Client timeouts

    /// Called by the loop's client sweep: enforces the header, body, idle and write timeouts.
    func checkClientTimeouts(now: NIODeadline) {
        guard self.isActive, self.lingerTimer == nil, let context = self.context else { return }
        if let since = self.notWritableSince, now - since > self.client.writeTimeout {
            self.logger.info(
                "client took no response byte for write_timeout (\(DurationText.format(self.client.writeTimeout))); closing"
            )
            self.abortExchange()
            context.close(promise: nil)
            return
        }
        if self.readHeld {
            // The client waits on us (backpressure), not the other way round.
            self.lastClientActivity = now
            return
        }
        if self.parser.isReadingHead {
            if now - self.headStartedAt > self.client.headerTimeout {
                self.refuseRequest(.requestTimeout("no complete request head within header_timeout (\(DurationText.format(self.client.headerTimeout)))"))
            }
        } else if self.parser.isInsideRequest {
            if now - self.lastClientActivity > self.client.bodyTimeout {
                self.refuseRequest(.requestTimeout("no request body byte for body_timeout (\(DurationText.format(self.client.bodyTimeout)))"))
            }
        } else if self.exchange == nil, self.pending.isEmpty, now - self.lastClientActivity > self.client.idleTimeout {
            // A quiet keep-alive connection: closed without a word, as every server does.
            context.close(promise: nil)
        }
    }

    func clientSlotMoved(to slot: Int) {
        self.clientSlot = slot
    }

    private func leaveClientList() {
        if let slot = self.clientSlot {
            self.clientSlot = nil
            self.cluster.clientDisconnected(slot: slot)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.isActive = false
        self.lingerTimer?.cancel()
        self.leaveClientList()
        self.pending.removeAll()
        if let exchange = self.exchange, !exchange.responseHeadSent || exchange.connection != nil {
            self.logger.debug("client closed the connection during an exchange")
        }
        self.abortExchange()
        context.fireChannelInactive()
    }

    // MARK: Exchange

    private func startExchange(_ head: RequestHead, endReceived: Bool = false) {
        if !head.isKeepAlive {
            self.closeAfterResponse = true
        }
        if head.wantsUpgrade && !head.canTunnel {
            // An upgrade Headway cannot carry (h2c, or a request with a body) goes on without Upgrade. The
            // h2c client goes on in HTTP/1.1; any other may follow with bytes of the protocol it asked for,
            // so that connection closes after the answer.
            if !head.upgradeIsH2C { self.closeAfterResponse = true }
        }
        if head.method == .connect || head.method == .trace {
            // A reverse proxy has no use for CONNECT; TRACE would echo credentials (RFC 9110 §9.3.8).
            self.closeAfterResponse = true
            self.respondLocally(.methodNotAllowed(head.methodName), clientVersionMinor: head.versionMinor)
            if !endReceived { self.discardingUntilRequestEnd = head.framing == .none }
            return
        }
        var upstreamHead = self.context!.channel.allocator.buffer(capacity: head.bytes.readableBytes + 160)
        head.writeUpstreamHead(into: &upstreamHead, clientIP: self.clientIP, upgrade: head.canTunnel)
        let start = NIODeadline.now()
        self.exchange = Exchange(requestHead: head, upstreamHead: upstreamHead, start: start, attempt: 0)
        self.exchange!.offersUpgrade = head.canTunnel
        if let key = self.cluster.configuration.hashKey {
            self.exchange!.hashKey = head.hashKey(key, clientIP: self.clientIP)
        }
        self.exchange!.requestEndReceived = endReceived
        self.cluster.requestStarted(at: start)
        self.dispatch()
    }

    /// Picks an endpoint and leases a connection to it for the current exchange.
    private func dispatch() {
        guard self.exchange != nil else { return }
        guard let pool = self.cluster.pickPool(excluding: self.exchange!.failedPool, hashKey: self.exchange!.hashKey) else {
            self.failExchange(.noEndpoint(upstream: self.cluster.configuration.name, reason: self.cluster.emptyReason))
            return
        }
        self.attemptCounter &+= 1
        let attempt = self.attemptCounter
        self.exchange!.attempt = attempt
        self.exchange!.pool = pool
        pool.endpoint.requestStarted()
        switch pool.lease(for: self, attempt: attempt) {
        case .leased(let connection):
            self.attach(connection)
        case .connecting:
            break
        case .limitReached:
            pool.endpoint.requestEnded()
            self.exchange!.pool = nil
            self.failExchange(
                .connectionLimit(endpoint: pool.endpoint.label, limit: self.cluster.configuration.maxConnectionsPerEndpoint)
            )
        case .pendingLimitReached:
            pool.endpoint.requestEnded()
            self.exchange!.pool = nil
            self.failExchange(
                .pendingLimit(upstream: self.cluster.configuration.name, limit: self.cluster.configuration.maxPendingRequests)
            )
        }
    }

    /// Tries the current exchange again on another endpoint, if `max_retries` and the retry budget allow.
    ///
    /// The caller has checked that replaying is safe; the body parts already forwarded go out again first.
    private func retryElsewhere(after failedPool: UpstreamPool, why: String) -> Bool {
        guard self.mayRetry(after: failedPool, why: why) else { return false }
        self.replay(after: failedPool)
        return true
    }

    /// Whether `max_retries` and the retry budget allow one more attempt; spends the budget if so.
    private func mayRetry(after failedPool: UpstreamPool, why: String) -> Bool {
        let metadata: Logger.Metadata = ["endpoint.address": "\(failedPool.endpoint.label)", "reason": "\(why)"]
        guard self.exchange!.retries < self.cluster.configuration.retries.maxRetries else { return false }
        guard self.cluster.spendRetry() else {
            self.logger.warning("retry budget exhausted; not retrying", metadata: metadata)
            return false
        }
        self.logger.info("retrying on another endpoint", metadata: metadata)
        return true
    }

    /// Sends the request again, to an endpoint other than `failedPool` when there is one.
    private func replay(after failedPool: UpstreamPool) {
        self.exchange!.retries += 1
        self.exchange!.failedPool = failedPool
        if self.exchange!.requestEndForwarded {
            self.exchange!.requestEndForwarded = false
            self.pending.prepend(.end)
        }
        for part in self.exchange!.forwardedBody.reversed() {
            self.pending.prepend(.body(part))
        }
        self.exchange!.forwardedBody = []
        self.exchange!.forwardedBodyBytes = 0
        self.dispatch()
    }

    /// A connection opened for `attempt` is ready. Returns `false` if the attempt was abandoned meanwhile.
    func connectionReady(_ connection: UpstreamConnection, attempt: Int) -> Bool {
        guard self.isActive, self.exchange?.attempt == attempt, self.exchange?.connection == nil else {
            return false
        }
        self.attach(connection)
        return true
    }

    /// Opening a connection for `attempt` failed: retry on another endpoint (nothing was sent, so that is
    /// safe for every method), then answer 504 for a timeout, 503 when no endpoint is healthy, else 502.
    func connectFailed(pool: UpstreamPool, attempt: Int, error: any Error) {
        let isTimeout = (error as? ChannelError) == .connectTimeout(self.cluster.configuration.connectTimeout)
        let what = isTimeout
            ? "connect timed out after \(DurationText.format(self.cluster.configuration.connectTimeout))"
            : "connect failed: \(ProxyError.describe(error))"
        self.cluster.gatewayFailed(pool.endpoint, what: what)
        guard self.exchange?.attempt == attempt else { return }
        pool.endpoint.requestEnded()
        self.exchange!.pool = nil
        if self.retryElsewhere(after: pool, why: what) { return }
        if isTimeout {
            self.failExchange(
                .connectTimeout(endpoint: pool.endpoint.label, timeout: DurationText.format(self.cluster.configuration.connectTimeout))
            )
        } else if self.cluster.healthyCount == 0 {
            self.failExchange(
                .noHealthyEndpoint(
                    upstream: self.cluster.configuration.name,
                    total: self.cluster.pools.count,
                    lastError: "\(pool.endpoint.label): \(what)"
                )
            )
        } else {
            self.failExchange(.connectFailed(endpoint: pool.endpoint.label, error: error))
        }
    }

    private func attach(_ connection: UpstreamConnection) {
        guard self.exchange != nil else { return }
        self.exchange!.connection = connection
        connection.startRequest(
            head: self.exchange!.upstreamHead,
            isHeadRequest: self.exchange!.isHeadRequest,
            upgradeRequested: self.exchange!.offersUpgrade
        )
        // Forward what arrived while the connection was opening, up to this request's end.
        while !self.exchange!.requestEndForwarded, let part = self.pending.first {
            switch part {
            case .head:
                preconditionFailure("a pipelined request head is queued before the current request ended")
            case .body(let buffer):
                self.pending.removeFirst()
                self.forwardBody(buffer, to: connection)
            case .end:
                self.pending.removeFirst()
                self.forwardEnd(to: connection)
            }
        }
        connection.flush()
        self.stopClock()
        self.deadlineSlot = self.cluster.awaitResponse(self)
        if self.cluster.configuration.policy == .peakEWMA {
            self.exchange!.attemptSent = self.cluster.coarseNow
        }
        self.resumeReadingIfPossible()
    }

    /// A response event arrived on the leased connection.
    func upstreamReceived(_ event: ResponseParser.Event, from connection: UpstreamConnection) {
        // The exchange is read in place, not copied: a copy of the struct would retain each of its references,
        // several times per response.
        guard self.exchange?.connection === connection, let context = self.context else {
            connection.close()
            return
        }
        let clientVersionMinor = self.exchange!.clientVersionMinor
        switch event {
        case .informational(let head):
            // 1xx (100 Continue, 103 Early Hints) go on to HTTP/1.1 clients; HTTP/1.0 ones must not see them.
            if clientVersionMinor >= 1 {
                var bytes = context.channel.allocator.buffer(capacity: head.bytes.readableBytes + 32)
                head.writeClientHead(into: &bytes, clientVersionMinor: clientVersionMinor, chunked: false, closeConnection: false)
                self.writeToClient(bytes, context: context)
            }
        case .head(let head):
            if self.cluster.configuration.retries.statuses.contains(Int(head.status)),
                self.exchange!.requestEndForwarded, self.exchange!.bodyIsReplayable, let pool = self.exchange!.pool,
                self.mayRetry(after: pool, why: "answered \(head.status) (retry_on)")
            {
                // This answer never reaches the client: its connection goes, another endpoint gets the request.
                connection.lessee = nil
                connection.close()
                self.stopClock()
                pool.endpoint.requestEnded()
                self.cluster.responseFinished(pool.endpoint, status: head.status)
                self.exchange!.connection = nil
                self.exchange!.pool = nil
                self.replay(after: pool)
                return
            }
            if head.status == 101 {
                self.startTunnel(head, context: context)
                return
            }
            if self.exchange!.offersUpgrade {
                // The pod declined the upgrade: the client may already be sending the new protocol.
                self.closeAfterResponse = true
            }
            if let slot = self.deadlineSlot {
                self.cluster.responseStarted(slot: slot)
            }
            if let sent = self.exchange!.attemptSent, let pool = self.exchange!.pool {
                let now = NIODeadline.now()
                self.cluster.responseHeadArrived(pool.endpoint, latency: now - sent, now: now)
            }
            self.exchange!.lastResponseProgress = self.cluster.coarseNow
            let hasOpenEndedBody = head.framing == .chunked || head.framing == .untilClose
            if hasOpenEndedBody && clientVersionMinor == 0 {
                // An HTTP/1.0 client learns where such a body ends only from the close.
                self.closeAfterResponse = true
            }
            self.exchange!.chunksResponse = hasOpenEndedBody && clientVersionMinor >= 1
            self.exchange!.upstreamReusable = head.isKeepAlive
            self.exchange!.responseHeadSent = true
            self.exchange!.responseStatus = head.status
            // Room for a small body too: it usually arrives in the same read and then leaves in one write.
            var bytes = context.channel.allocator.buffer(capacity: head.bytes.readableBytes + 64 + Self.coalescingLimit)
            head.writeClientHead(
                into: &bytes,
                clientVersionMinor: clientVersionMinor,
                chunked: self.exchange!.chunksResponse,
                closeConnection: self.closeAfterResponse
            )
            self.writeToClient(bytes, context: context)
        case .body(let buffer):
            self.exchange!.lastResponseProgress = self.cluster.coarseNow
            if self.exchange!.chunksResponse {
                let header = HTTPSyntax.chunkHeader(for: buffer.readableBytes, allocator: context.channel.allocator)
                self.writeToClient(header, context: context)
                self.writeToClient(buffer, context: context)
                self.writeToClient(Self.crlf, context: context)
            } else {
                self.writeToClient(buffer, context: context)
            }
        case .end:
            self.finishExchange(context: context)
        }
    }

    /// The pod switched protocols: relay its 101, then carry bytes both ways, unparsed and without timeouts
    /// (a WebSocket may stay quiet for hours), until either side closes; the connection ends with the tunnel.
    private func startTunnel(_ head: ResponseHead, context: ChannelHandlerContext) {
        self.stopClock()
        self.exchange!.isTunnel = true
        self.exchange!.responseHeadSent = true
        self.exchange!.responseStatus = head.status
        var bytes = context.channel.allocator.buffer(capacity: head.bytes.readableBytes + 64)
        head.writeClientHead(into: &bytes, clientVersionMinor: 1, chunked: false, closeConnection: false)
        self.writeToClient(bytes, context: context)
        self.closeAfterResponse = true
        self.logger.debug("tunnel open", metadata: ["endpoint.address": "\(self.exchange!.pool?.endpoint.label ?? "?")"])
    }

    /// Response pieces up to this size are copied into one buffer rather than written one by one.
    private static let coalescingLimit = 4096

    /// Queues response bytes for the client: small pieces are appended to the bytes not yet written (one
    /// write and one iovec instead of several), large ones are written as they are, without copying.
    private func writeToClient(_ buffer: ByteBuffer, context: ChannelHandlerContext) {
        if buffer.readableBytes <= Self.coalescingLimit {
            if self.unwrittenResponse == nil {
                self.unwrittenResponse = buffer
            } else {
                var piece = buffer
                self.unwrittenResponse!.writeBuffer(&piece)
            }
            return
        }
        self.writeUnwrittenResponse(context: context)
        context.write(self.wrapOutboundOut(buffer), promise: nil)
    }

    private func writeUnwrittenResponse(context: ChannelHandlerContext) {
        if let bytes = self.unwrittenResponse {
            self.unwrittenResponse = nil
            context.write(self.wrapOutboundOut(bytes), promise: nil)
        }
    }

    private static let crlf = ByteBuffer(string: "\r\n")
    private static let lastChunk = ByteBuffer(string: "0\r\n\r\n")

    /// Sends a piece of the request body upstream, framed as the upstream head announced.
    private func forwardBody(_ buffer: ByteBuffer, to connection: UpstreamConnection) {
        guard buffer.readableBytes > 0, let context = self.context else { return }
        if self.exchange!.bodyIsReplayable {
            if self.exchange!.forwardedBodyBytes + buffer.readableBytes <= self.cluster.configuration.retries.bufferLimit {
                self.exchange!.forwardedBody.append(buffer)
                self.exchange!.forwardedBodyBytes += buffer.readableBytes
            } else {
                self.exchange!.bodyIsReplayable = false
                self.exchange!.forwardedBody = []
            }
        }
        if self.exchange!.isChunkedRequest {
            connection.write(HTTPSyntax.chunkHeader(for: buffer.readableBytes, allocator: context.channel.allocator))
            connection.write(buffer)
            connection.write(Self.crlf)
        } else {
            connection.write(buffer)
        }
    }

    private func forwardEnd(to connection: UpstreamConnection) {
        self.exchange!.requestEndForwarded = true
        if self.exchange!.isChunkedRequest {
            connection.write(Self.lastChunk)
        }
    }

    func flushToClient() {
        guard let context = self.context else { return }
        self.writeUnwrittenResponse(context: context)
        context.flush()
    }

    func upstreamBecameWritable() {
        self.resumeReadingIfPossible()
    }

    /// The leased connection closed before the exchange ended.
    func upstreamClosed(_ connection: UpstreamConnection, error: (any Error)?) {
        guard let exchange = self.exchange, exchange.connection === connection, let pool = exchange.pool else { return }
        self.stopClock()
        pool.endpoint.requestEnded()
        self.exchange!.connection = nil
        self.exchange!.pool = nil
        let what = (error as? ResponseParserError).map { "invalid response: \($0.reason)" }
            ?? "connection closed before the response ended" + (error.map { ": \(ProxyError.describe($0))" } ?? "")
        pool.endpoint.recordUpstreamError()
        self.cluster.gatewayFailed(pool.endpoint, what: what)
        if exchange.responseHeadSent {
            // Part of the response is with the client already; it must see the truncation, not a clean end.
            self.logger.warning(
                "endpoint closed the connection mid-response; aborting the client connection",
                metadata: ["endpoint.address": "\(pool.endpoint.label)", "error": "\(error.map { "\($0)" } ?? "eof")"]
            )
            self.exchange = nil
            self.context?.close(promise: nil)
            return
        }
        // A keep-alive connection the pod closed just as we reused it is the classic stale-connection race:
        // replay the request elsewhere if nothing of it is lost by doing so. A request the pod may have acted
        // on (not idempotent, and sent whole) is not replayed.
        let isSafeToReplay = exchange.bodyIsReplayable
            && (exchange.requestHead.isIdempotent || !exchange.requestEndForwarded)
        if isSafeToReplay, self.retryElsewhere(after: pool, why: what) {
            return
        }
        if let invalid = error as? ResponseParserError {
            self.failExchange(.badUpstreamResponse(endpoint: pool.endpoint.label, reason: invalid.reason))
        } else {
            self.failExchange(.upstreamClosed(endpoint: pool.endpoint.label, error: error))
        }
    }

    /// Asked by the loop's sweep when this handler's deadline passed: a response that made progress since
    /// gets a later deadline; `nil` means the deadline stands.
    func extendedDeadline(now: NIODeadline) -> NIODeadline? {
        guard let exchange = self.exchange, exchange.responseHeadSent else { return nil }
        let deadline = exchange.lastResponseProgress + self.cluster.configuration.idleTimeout
        return deadline > now ? deadline : nil
    }

    /// The sweep found this handler's deadline passed (and forgot the handler): `request_timeout` before the
    /// response head (answered 504), `idle_timeout` after it (the client connection is aborted).
    func deadlinePassed() {
        self.deadlineSlot = nil
        guard let exchange = self.exchange, let pool = exchange.pool else { return }
        // The late response must never reach a later request: the connection goes.
        if let connection = exchange.connection {
            connection.lessee = nil
            connection.close()
        }
        pool.endpoint.requestEnded()
        pool.endpoint.recordUpstreamError()
        self.exchange!.connection = nil
        self.exchange!.pool = nil
        if exchange.responseHeadSent {
            let timeout = DurationText.format(self.cluster.configuration.idleTimeout)
            self.cluster.gatewayFailed(pool.endpoint, what: "response stalled for idle_timeout (\(timeout))")
            self.logger.warning(
                "endpoint sent nothing for idle_timeout (\(timeout)) mid-response; aborting the client connection",
                metadata: ["endpoint.address": "\(pool.endpoint.label)"]
            )
            self.exchange = nil
            self.context?.close(promise: nil)
            return
        }
        let timeout = DurationText.format(self.cluster.configuration.requestTimeout)
        self.cluster.gatewayFailed(pool.endpoint, what: "no response within request_timeout (\(timeout))")
        self.failExchange(.upstreamTimeout(endpoint: pool.endpoint.label, timeout: timeout))
    }

    /// The response ended: give the connection back, then tell the client, then go on with the next request.
    private func finishExchange(context: ChannelHandlerContext) {
        guard let connection = self.exchange?.connection, let pool = self.exchange?.pool else { return }
        // State first, write last: writing `.end` may re-enter this handler.
        self.stopClock()
        let exchange = self.exchange.take()!
        if !exchange.requestEndForwarded {
            // The pod answered before reading the whole request; the rest of it cannot be resynchronised.
            self.closeAfterResponse = true
        }
        pool.release(connection, reusable: exchange.upstreamReusable && exchange.requestEndForwarded)
        let lastChunk = exchange.chunksResponse
        pool.endpoint.requestEnded()
        pool.endpoint.metrics.recordResponse(status: exchange.responseStatus, duration: NIODeadline.now() - exchange.start)
        self.cluster.responseFinished(pool.endpoint, status: exchange.responseStatus)
        self.logger.trace(
            "request done",
            metadata: ["endpoint.address": "\(pool.endpoint.label)", "status": "\(exchange.responseStatus)"]
        )
        self.writeEndAndContinue(context: context, lastBytes: lastChunk ? Self.lastChunk : nil)
    }

    /// Answers the current request (or a request that never became an exchange) with Headway's own response.
    private func failExchange(_ error: ProxyError) {
        let versionMinor = self.exchange?.clientVersionMinor ?? 1
        if let exchange = self.exchange {
            self.logger.warning(
                "answering \(error.status.code) \(error.status.reasonPhrase)",
                metadata: ["reason": "\(error.detail)", "request.method": "\(exchange.requestHead.methodName)"]
            )
            if !exchange.requestEndReceived {
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

    private func respondLocally(_ error: ProxyError, clientVersionMinor: UInt8) {
        guard let context = self.context else { return }
        self.cluster.metrics.localResponseSent()
        let bytes = error.response(
            clientVersionMinor: clientVersionMinor,
            closeConnection: self.closeAfterResponse,
            allocator: context.channel.allocator
        )
        self.writeEndAndContinue(context: context, lastBytes: bytes)
    }

    /// Writes the last bytes of a response and flushes; then closes, or starts the next pipelined request.
    private func writeEndAndContinue(context: ChannelHandlerContext, lastBytes: ByteBuffer?) {
        if let lastBytes {
            self.writeToClient(lastBytes, context: context)
        }
        if self.closeAfterResponse {
            self.pending.removeAll()
            let bytes = self.unwrittenResponse ?? context.channel.allocator.buffer(capacity: 0)
            self.unwrittenResponse = nil
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
        self.writeUnwrittenResponse(context: context)
        context.flush()
        self.lastClientActivity = self.cluster.coarseNow
        if let head = self.nextPendingHead() {
            self.startPendingExchange(head)
        }
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

    /// Removes and returns the next pipelined request head, dropping parts of requests that were abandoned.
    private func nextPendingHead() -> RequestHead? {
        while let part = self.pending.popFirst() {
            if case .head(let head) = part {
                return head
            }
        }
        return nil
    }

    /// Starts the exchange for a pipelined request whose parts (some or all) already wait in `pending`.
    private func startPendingExchange(_ head: RequestHead) {
        var endReceived = false
        scan: for part in self.pending {
            switch part {
            case .head: break scan
            case .body: continue
            case .end:
                endReceived = true
                break scan
            }
        }
        self.startExchange(head, endReceived: endReceived)
    }

    /// Forgets the current exchange; a half-finished upstream connection is closed, never reused.
    private func abortExchange() {
        guard let exchange = self.exchange else { return }
        self.stopClock()
        self.exchange = nil
        if let pool = exchange.pool {
            pool.endpoint.requestEnded()
            if let connection = exchange.connection {
                connection.lessee = nil
                connection.close()
            }
        }
    }

    private func stopClock() {
        if let slot = self.deadlineSlot {
            self.deadlineSlot = nil
            self.cluster.stopClock(slot: slot)
        }
    }

    func deadlineSlotMoved(to slot: Int) {
        self.deadlineSlot = slot
    }

    // MARK: Reading

    private var shouldHoldRead: Bool {
        if !self.pending.isEmpty { return true }
        if let connection = self.exchange?.connection, !connection.isWritable { return true }
        return false
    }

    private func resumeReadingIfPossible() {
        if self.readHeld, !self.shouldHoldRead, let context = self.context {
            self.readHeld = false
            context.read()
        }
    }
}

@available(*, unavailable)
extension DownstreamHandler: Sendable {}
