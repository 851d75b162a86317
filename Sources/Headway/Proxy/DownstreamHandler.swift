import Logging
import NIOCore
import NIOHTTP1

/// The last handler of an HTTP/1 client connection, or the handler of one HTTP/2 client stream (in no
/// pipeline: its ``HTTP2ClientStream`` hands it the request as HTTP/1.1 bytes, see `DownstreamHandler+Client`):
/// it parses requests, runs one exchange at a time over a leased upstream connection on the same event loop,
/// and frames the responses.
///
/// It is a shell: each exchange's decisions (attempts, retries and replay, timeouts, which error answers a
/// failure) are a ``ProxyExchange/StateMachine`` value; this class turns channel and upstream events into
/// that machine's events and carries out its actions. What stays here is HTTP/1 and connection-wide:
/// parsing, pipelining (the parts of later requests wait in `pending`, and reading stops until they are
/// gone, so responses leave in request order), response framing and write coalescing, client timeouts,
/// and the lingering close.
///
/// Backpressure both ways holds `read` rather than buffering: the client is read only while the upstream
/// connection is writable, and the upstream only while the client is writable.
final class DownstreamHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    /// Nothing is written through this handler; it is outbound only to hold back `read`.
    typealias OutboundIn = ByteBuffer
    /// Responses are written as bytes: Headway frames them itself (see ``ResponseHead``).
    typealias OutboundOut = ByteBuffer

    let cluster: LoopCluster
    let client: ClientSettings
    /// This loop's access log; `nil` when it is off, and then nothing is gathered for it.
    let accessLog: LoopAccessLog?
    /// Headway's logger, shared: a line logged for this connection gets the client's address then (see
    /// ``logger``), so that an idle connection keeps no metadata dictionary of its own.
    private let sharedLogger: Logger
    /// The client connection's context; `nil` for an HTTP/2 stream, and once the handler is removed.
    var context: ChannelHandlerContext?
    /// The HTTP/2 client stream this handler serves; `nil` on an HTTP/1 connection, and once it closed.
    var stream: HTTP2ClientStream?
    var clientIP: String?
    var clientPort = 0

    var parser: RequestParser
    /// Set after a malformed request: its answer is on the way and nothing more is read.
    var stoppedParsing = false
    /// Parts of pipelined requests behind the current one, oldest first. An array: empty, as it nearly always
    /// is, it takes no memory (a ring buffer would hold room for several events on every idle connection).
    var pending: [RequestParser.Event] = []
    var exchange: Exchange?
    /// Incremented for every upstream attempt, so that a late connect result for an abandoned attempt is
    /// recognised and ignored.
    var attemptCounter = 0
    /// A `read` from the pipeline that we held back.
    var readHeld = false
    /// Close the client connection once the current response is complete.
    var closeAfterResponse = false
    /// Headway answered a bodyless request before its `.end` arrived: drop parts up to that `.end`.
    var discardingUntilRequestEnd = false
    var isActive = true
    /// The answer is out and the output side closed; what the client still sends is read and dropped.
    var lingerTimer: Scheduled<Void>?
    /// This handler's slot in its loop's ``ResponseDeadlines`` while it waits on the upstream.
    var deadlineSlot: Int?
    /// Response bytes not yet written: small pieces are gathered into one write per read batch.
    var unwrittenResponse: ByteBuffer?
    /// `unwrittenResponse` came from the loop's ``HeadBufferRecycler``.
    var unwrittenResponseIsRecycled = false

    // Client timeouts, checked by the loop's client sweep against its coarse clock (no timer per connection).
    /// This handler's slot in its loop's client list.
    var clientSlot: Int?
    /// The last byte from the client, or the end of the last response (for the idle and body timeouts).
    var lastClientActivity = NIODeadline.uptimeNanoseconds(0)
    /// When the first byte of the request head being read arrived (for the header timeout).
    var headStartedAt = NIODeadline.uptimeNanoseconds(0)
    /// Since when the client has not taken response bytes (for the write timeout).
    var notWritableSince: NIODeadline?
    /// Body bytes of the current request so far, against `max_request_body`.
    var requestBodyBytes = 0
    /// The deadline the client gave the next request (`grpc-timeout`, told by ``HTTP2StreamBridge``).
    var clientDeadline: TimeAmount?

    init(cluster: LoopCluster, client: ClientSettings, accessLog: LoopAccessLog?, logger: Logger) {
        self.cluster = cluster
        self.client = client
        self.accessLog = accessLog
        self.sharedLogger = logger
        self.parser = RequestParser(limits: client.requestLimits)
    }

    /// The request being served: its machine, and what the HTTP/1 shell keeps beside it.
    ///
    /// A class, so that an idle keep-alive connection holds one optional reference instead of room for a whole
    /// exchange (about 450 bytes, most of what the handler weighed), at one allocation per request.
    final class Exchange {
        var machine: ProxyExchange.StateMachine
        let requestHead: RequestHead
        /// The serialized head for the upstream, kept to replay the request on another endpoint.
        let upstreamHead: ByteBuffer
        let start: NIODeadline
        /// The request's key for the `hash` policy.
        let hashKey: UInt64?
        var attempt = 0
        var pool: UpstreamPool?
        var connection: UpstreamConnection?
        /// The pool that failed the previous attempt; the retry avoids it when it can.
        var failedPool: UpstreamPool?
        var responseStatus: UInt = 0
        /// The response body goes to the client in chunks that Headway frames.
        var chunksResponse = false
        /// The response's trailer section, relayed after the last chunk.
        var responseTrailers: ByteBuffer?
        /// Body bytes read from the client, and relayed to it.
        var requestBodyBytes = 0
        var responseBodyBytes = 0
        /// For the access log (gathered only while it is on): every endpoint an attempt went to, and the time
        /// from sending the request to the response head on the attempt that answered.
        var firstEndpointTried: String?
        var laterEndpointsTried: [String] = []
        var upstreamFirstByte: TimeAmount?
        /// The pod's grpc-status (gathered only while the access log is on, and only on HTTP/2 streams).
        var grpcStatus: Int?

        init(
            machine: ProxyExchange.StateMachine,
            requestHead: RequestHead,
            upstreamHead: ByteBuffer,
            start: NIODeadline,
            hashKey: UInt64?
        ) {
            self.machine = machine
            self.requestHead = requestHead
            self.upstreamHead = upstreamHead
            self.start = start
            self.hashKey = hashKey
        }

        var isHeadRequest: Bool { self.requestHead.method == .head }
        var isChunkedRequest: Bool { self.requestHead.framing == .chunked }
        var clientVersionMinor: UInt8 { self.requestHead.versionMinor }
    }

    // MARK: Channel events

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        self.clientStarted(remote: context.channel.remoteAddress)
    }

    /// The client connection (or stream) is there: it joins the loop's client sweep.
    func clientStarted(remote: SocketAddress?) {
        self.lastClientActivity = self.cluster.coarseNow
        self.clientSlot = self.cluster.clientConnected(self)
        self.clientIP = remote?.ipAddress
        self.clientPort = remote?.port ?? 0
    }

    /// The logger for a line about this connection: the shared one with the client's address.
    var logger: Logger {
        var logger = self.sharedLogger
        logger[metadataKey: "client.address"] = "\(ClientAddress.describe(ip: self.clientIP, port: self.clientPort))"
        return logger
    }

    /// Whether a line at `level` would be written (checked before building per-request trace lines).
    func logs(_ level: Logger.Level) -> Bool { self.sharedLogger.logLevel <= level }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        self.leaveClientList()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        self.clientBytesReceived(self.unwrapInboundIn(data))
    }

    func clientBytesReceived(_ bytes: ByteBuffer) {
        guard !self.stoppedParsing else { return }
        var buffer = bytes
        if self.exchange?.machine.isTunnel == true {
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
                self.startExchange(head, parts: [])
            } else {
                self.pending.append(event)
            }
        case .body(let buffer):
            self.requestBodyBytes += buffer.readableBytes
            if let limit = self.client.maxRequestBody, self.requestBodyBytes > limit {
                self.refuseRequest(.requestTooLarge(limit: limit))
                return
            }
            guard self.exchange != nil, !self.exchange!.machine.requestEndReceived else {
                self.pending.append(event)
                return
            }
            self.exchange!.requestBodyBytes += buffer.readableBytes
            let connection = self.exchange!.connection
            if self.exchange!.machine.requestBodyReceived(buffer, isConnected: connection != nil) == .send {
                self.sendBody(buffer, to: connection!)
            }
        case .end:
            guard self.exchange != nil, !self.exchange!.machine.requestEndReceived else {
                self.pending.append(event)
                return
            }
            let connection = self.exchange!.connection
            let deadline = self.exchange!.machine.deadline
            if self.exchange!.machine.requestEndReceived(isConnected: connection != nil) == .send {
                self.sendEnd(to: connection!)
                // Whole now, the request may have earned `per_try_timeout`; without it the clock stays as it is.
                if self.exchange!.machine.deadline != deadline { self.restartClock() }
            }
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        self.clientReadComplete()
    }

    func clientReadComplete() {
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
        self.clientWritabilityChanged(isWritable: context.channel.isWritable)
        context.fireChannelWritabilityChanged()
    }

    func clientWritabilityChanged(isWritable: Bool) {
        if isWritable {
            self.notWritableSince = nil
            self.exchange?.connection?.resumeReading()
        } else {
            self.notWritableSince = self.cluster.coarseNow
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        switch event {
        case is ChannelShouldQuiesceEvent:
            self.shouldQuiesce()
        case ChannelEvent.inputClosed where self.lingerTimer != nil:
            context.close(promise: nil)
        case ChannelEvent.inputClosed where self.exchange?.machine.isTunnel == true:
            // The client has finished sending; the pod may still answer.
            self.exchange?.connection?.closeOutput()
        case ChannelEvent.inputClosed:
            // The client half-closed: answer what it sent, then close. A request cut short cannot be answered.
            self.closeAfterResponse = true
            if self.parser.isInsideRequest && self.exchange?.machine.requestEndReceived != true {
                self.abortExchange()
                context.close(promise: nil)
                return
            }
            if self.exchange == nil {
                if !self.startNextPendingExchange() {
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

    func channelInactive(context: ChannelHandlerContext) {
        self.clientClosed()
        context.fireChannelInactive()
    }

    /// Graceful shutdown: finish the current exchange, then close.
    func shouldQuiesce() {
        self.closeAfterResponse = true
        if self.exchange == nil {
            self.closeClient()
        }
    }

    /// The client connection (or stream) closed: whatever is in flight for it is abandoned.
    func clientClosed() {
        self.isActive = false
        self.lingerTimer?.cancel()
        self.leaveClientList()
        self.pending.removeAll()
        if let exchange = self.exchange, !exchange.machine.hasRespondedToClient || exchange.connection != nil {
            self.logger.debug("client closed the connection during an exchange")
            self.logAccess(
                exchange,
                status: exchange.machine.hasRespondedToClient ? exchange.responseStatus : 0,
                bytesOut: exchange.responseBodyBytes,
                endpoint: exchange.pool?.endpoint.label,
                localReason: "client closed the connection"
            )
        }
        self.abortExchange()
    }

    /// Stops reading requests and answers `error` once (or aborts the connection when an answer has started):
    /// for malformed requests, bodies over `max_request_body` and client timeouts. The connection closes.
    func refuseRequest(_ error: ProxyError) {
        guard self.hasClient else { return }
        self.stoppedParsing = true
        self.closeAfterResponse = true
        self.pending.removeAll()
        self.logger.info(
            "refusing the request; answering \(error.status.code) and closing",
            metadata: ["reason": "\(error.detail)"]
        )
        if let exchange = self.exchange, exchange.machine.hasRespondedToClient {
            self.logAccess(
                exchange,
                status: exchange.responseStatus,
                bytesOut: exchange.responseBodyBytes,
                endpoint: exchange.pool?.endpoint.label,
                localReason: "\(error.detail); connection aborted"
            )
            self.abortExchange()
            self.closeClient()
        } else {
            self.logAccess(self.exchange, answeredWith: error)
            let versionMinor = self.exchange?.clientVersionMinor ?? 1
            self.abortExchange()
            self.respondLocally(error, clientVersionMinor: versionMinor)
        }
    }

    // MARK: Reading

    var shouldHoldRead: Bool {
        if !self.pending.isEmpty { return true }
        guard let exchange = self.exchange else { return false }
        if exchange.machine.hasUnsentRequestParts { return true }
        if let connection = exchange.connection, !connection.isWritable { return true }
        return false
    }

    func resumeReadingIfPossible() {
        if self.readHeld, !self.shouldHoldRead, self.hasClient {
            self.readHeld = false
            self.readFromClient()
        }
    }
}

@available(*, unavailable)
extension DownstreamHandler: Sendable {}
