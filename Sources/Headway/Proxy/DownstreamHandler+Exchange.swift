import Logging
import NIOCore

/// The exchange's way up: starting it, dispatching each attempt, sending the request, and carrying out what
/// the machine decides when an attempt fails.
extension DownstreamHandler: UpstreamLessee, ResponseDeadlineWaiter {
    /// Starts the exchange for `head`; `parts` are its body parts (and end) that already arrived.
    func startExchange(_ head: RequestHead, parts: [RequestParser.Event]) {
        let endReceived = parts.contains { if case .end = $0 { true } else { false } }
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
            let error = ProxyError.methodNotAllowed(head.methodName)
            self.logAccess(nil, head: head, answeredWith: error)
            self.respondLocally(error, clientVersionMinor: head.versionMinor)
            if !endReceived { self.discardingUntilRequestEnd = head.framing == .none }
            return
        }
        var upstreamHead = self.cluster.headBuffers.take(
            minimumCapacity: head.bytes.readableBytes + 160,
            allocator: self.clientAllocator
        )
        head.writeUpstreamHead(into: &upstreamHead, clientIP: self.clientIP, upgrade: head.canTunnel)
        let configuration = self.cluster.configuration
        let machine = ProxyExchange.StateMachine(
            request: .init(isIdempotent: head.isIdempotent, offersUpgrade: head.canTunnel),
            policy: .init(
                maxRetries: configuration.retries.maxRetries,
                retryStatuses: configuration.retries.statuses,
                replayBufferLimit: configuration.retries.bufferLimit,
                // A client's own deadline shortens request_timeout, never lengthens it.
                requestTimeout: min(configuration.requestTimeout, self.clientDeadline.take() ?? .nanoseconds(.max)),
                perTryTimeout: configuration.retries.perTryTimeout,
                idleTimeout: configuration.idleTimeout
            ),
            requestEndReceived: endReceived
        )
        let start = NIODeadline.now()
        self.exchange = Exchange(
            machine: machine,
            requestHead: head,
            upstreamHead: upstreamHead,
            start: start,
            hashKey: configuration.hashKey.flatMap { head.hashKey($0, clientIP: self.clientIP) }
        )
        for case .body(let part) in parts {
            self.exchange!.requestBodyBytes += part.readableBytes
            _ = self.exchange!.machine.requestBodyReceived(part, isConnected: false)
        }
        self.cluster.requestStarted(at: start)
        self.dispatch()
    }

    /// Starts the next pipelined request whose parts (some or all) wait in `pending`; `false` if there is none.
    func startNextPendingExchange() -> Bool {
        // Parts of requests that were abandoned come first; skip them.
        var head: RequestHead?
        var taken = 0
        while head == nil, taken < self.pending.count {
            if case .head(let next) = self.pending[taken] { head = next }
            taken += 1
        }
        guard let head else {
            self.pending.removeAll()
            return false
        }
        var parts: [RequestParser.Event] = []
        while taken < self.pending.count {
            let part = self.pending[taken]
            if case .head = part { break }
            parts.append(part)
            taken += 1
            if case .end = part { break }
        }
        self.pending.removeFirst(taken)
        self.startExchange(head, parts: parts)
        return true
    }

    /// Picks an endpoint and leases a connection to it for the current attempt.
    func dispatch() {
        guard let exchange = self.exchange else { return }
        let configuration = self.cluster.configuration
        guard let pool = self.cluster.pickPool(excluding: exchange.failedPool, hashKey: exchange.hashKey) else {
            self.attemptFailed(
                .refused(.noEndpoint(upstream: configuration.name, reason: self.cluster.emptyReason)),
                on: nil
            )
            return
        }
        self.attemptCounter &+= 1
        self.exchange!.attempt = self.attemptCounter
        self.exchange!.pool = pool
        if self.accessLog != nil {
            if self.exchange!.firstEndpointTried == nil {
                self.exchange!.firstEndpointTried = pool.endpoint.label
            } else {
                self.exchange!.laterEndpointsTried.append(pool.endpoint.label)
            }
        }
        pool.endpoint.requestStarted()
        switch pool.lease(for: self, attempt: self.attemptCounter) {
        case .leased(let connection):
            self.attach(connection)
        case .connecting:
            break
        case .limitReached:
            pool.endpoint.requestEnded()
            self.exchange!.pool = nil
            let error = ProxyError.connectionLimit(
                endpoint: pool.endpoint.label,
                limit: configuration.maxConnectionsPerEndpoint
            )
            self.attemptFailed(.refused(error), on: pool)
        case .pendingLimitReached:
            pool.endpoint.requestEnded()
            self.exchange!.pool = nil
            let error = ProxyError.pendingLimit(upstream: configuration.name, limit: configuration.maxPendingRequests)
            self.attemptFailed(.refused(error), on: pool)
        }
    }

    /// The attempt has its connection: the head goes out, then what waited; the clock starts.
    private func attach(_ connection: UpstreamConnection) {
        guard self.exchange != nil else { return }
        self.exchange!.connection = connection
        connection.startRequest(
            head: self.exchange!.upstreamHead,
            isHeadRequest: self.exchange!.isHeadRequest,
            upgradeRequested: self.exchange!.machine.request.offersUpgrade
        )
        let send = self.exchange!.machine.connectionLeased(now: self.cluster.now())
        for part in send.bodyParts {
            self.sendBody(part, to: connection)
        }
        if send.end {
            self.sendEnd(to: connection)
        }
        connection.flush()
        self.restartClock()
        self.resumeReadingIfPossible()
    }

    /// Sends a piece of the request body upstream, framed as the upstream head announced.
    func sendBody(_ buffer: ByteBuffer, to connection: UpstreamConnection) {
        guard buffer.readableBytes > 0, self.hasClient else { return }
        if self.exchange!.isChunkedRequest {
            HTTPSyntax.frameChunk(buffer, allocator: self.clientAllocator) { connection.write($0) }
        } else {
            connection.write(buffer)
        }
    }

    func sendEnd(to connection: UpstreamConnection) {
        if self.exchange!.isChunkedRequest {
            connection.write(HTTPSyntax.lastChunk)
        }
    }

    /// Carries out what the machine decides after the current attempt failed on `pool`.
    func attemptFailed(_ failure: ProxyExchange.StateMachine.Failure, on pool: UpstreamPool?) {
        let action = self.exchange!.machine.attemptFailed(
            failure,
            budget: &self.cluster.retryBudget,
            now: self.cluster.coarseNow
        )
        let metadata: Logger.Metadata = [
            "endpoint.address": "\(pool?.endpoint.label ?? "-")", "reason": "\(failure.summary)",
        ]
        switch action {
        case .retry:
            self.retryElsewhere(after: pool, reason: failure.summary)
        case .answer(let error, let refusal):
            if refusal == .budgetExhausted {
                self.retryRefusedByBudget(on: pool, reason: failure.summary)
            }
            self.failExchange(error)
        case .abortClient:
            // Part of the response is with the client already; it must see the truncation, not a clean end.
            self.logger.warning("\(failure.summary) mid-response; aborting the client connection", metadata: metadata)
            if let exchange = self.exchange {
                self.logAccess(
                    exchange,
                    status: exchange.responseStatus,
                    bytesOut: exchange.responseBodyBytes,
                    endpoint: pool?.endpoint.label,
                    localReason: "\(failure.summary) mid-response; connection aborted"
                )
            }
            self.exchange = nil
            self.closeClient()
        }
    }

    /// Dispatches the exchange again, avoiding `pool`, after the machine decided to retry (and spent the budget).
    func retryElsewhere(after pool: UpstreamPool?, reason: String) {
        self.cluster.metrics.retried()
        self.logger.info(
            "retrying on another endpoint",
            metadata: ["endpoint.address": "\(pool?.endpoint.label ?? "-")", "reason": "\(reason)"]
        )
        self.exchange!.failedPool = pool
        self.dispatch()
    }

    func retryRefusedByBudget(on pool: UpstreamPool?, reason: String) {
        self.cluster.metrics.retryRefusedByBudget()
        self.logger.warning(
            "retry budget exhausted; not retrying",
            metadata: ["endpoint.address": "\(pool?.endpoint.label ?? "-")", "reason": "\(reason)"]
        )
    }

    // MARK: UpstreamLessee

    var canTakeResponseBytes: Bool { self.clientIsWritable }

    func connectionReady(_ connection: UpstreamConnection, attempt: Int) -> Bool {
        guard self.isActive, self.exchange?.attempt == attempt, self.exchange?.connection == nil else {
            return false
        }
        self.attach(connection)
        return true
    }

    /// Opening a connection for `attempt` failed: the machine retries on another endpoint (nothing was sent,
    /// so that is safe for every method), or answers 504 for a timeout, 503 when no endpoint is healthy, else 502.
    func connectFailed(pool: UpstreamPool, attempt: Int, error: any Error) {
        let configuration = self.cluster.configuration
        let isTimeout = (error as? ChannelError) == .connectTimeout(configuration.connectTimeout)
        // The loops learn of an ejection through a posted task, so the healthy count is the same before and
        // after the report.
        let failure: ProxyExchange.StateMachine.Failure =
            isTimeout
            ? .connectTimedOut(endpoint: pool.endpoint.label, timeout: configuration.connectTimeout)
            : .connectFailed(
                endpoint: pool.endpoint.label,
                error: error,
                noneHealthy: self.cluster.healthyCount == 0 ? (configuration.name, self.cluster.pools.count) : nil
            )
        self.cluster.gatewayFailed(pool.endpoint, what: failure.summary)
        guard self.exchange?.attempt == attempt else { return }
        pool.endpoint.requestEnded()
        self.exchange!.pool = nil
        self.attemptFailed(failure, on: pool)
    }

    func upstreamReadComplete() {
        guard self.hasClient else { return }
        self.writeUnwrittenResponse()
        self.flushClientAtEndOfTick()
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
        let failure: ProxyExchange.StateMachine.Failure =
            if let invalid = error as? HTTP1ParseError {
                .invalidResponse(endpoint: pool.endpoint.label, reason: invalid.reason)
            } else if let reset = error as? UpstreamStreamReset, reset.wasRefused {
                .streamRefused(endpoint: pool.endpoint.label)
            } else {
                .upstreamClosed(endpoint: pool.endpoint.label, error: error)
            }
        pool.endpoint.recordUpstreamError()
        self.cluster.gatewayFailed(pool.endpoint, what: failure.summary)
        self.attemptFailed(failure, on: pool)
    }

    // MARK: ResponseDeadlineWaiter

    func extendedDeadline(now: NIODeadline) -> NIODeadline? {
        guard let deadline = self.exchange?.machine.deadline, deadline > now else { return nil }
        return deadline
    }

    /// The sweep found this handler's deadline passed (and forgot the handler): `per_try_timeout` before the
    /// response head (retried elsewhere), `request_timeout` (answered 504), `idle_timeout` after the head (the
    /// client connection is aborted).
    func deadlinePassed() {
        self.deadlineSlot = nil
        guard let exchange = self.exchange, let pool = exchange.pool else { return }
        let action = self.exchange!.machine.deadlinePassed(
            now: self.cluster.coarseNow,
            endpoint: pool.endpoint.label,
            budget: &self.cluster.retryBudget
        )
        let what: String
        switch action {
        case .none:
            return
        case .extend:
            self.restartClock()
            return
        case .retry:
            let perTry = self.cluster.configuration.retries.perTryTimeout ?? .zero
            what = "no response within per_try_timeout (\(DurationText.format(perTry)))"
        case .answer:
            what =
                "no response within request_timeout (\(DurationText.format(self.cluster.configuration.requestTimeout)))"
        case .abortClient:
            what = "response stalled for idle_timeout (\(DurationText.format(self.cluster.configuration.idleTimeout)))"
        }
        // The late response must never reach a later request: the connection goes.
        if let connection = exchange.connection {
            connection.lessee = nil
            connection.close()
        }
        pool.endpoint.requestEnded()
        pool.endpoint.recordUpstreamError()
        self.exchange!.connection = nil
        self.exchange!.pool = nil
        self.cluster.gatewayFailed(pool.endpoint, what: what)
        switch action {
        case .retry:
            self.retryElsewhere(after: pool, reason: what)
        case .answer(let error):
            self.failExchange(error)
        case .abortClient:
            self.logger.warning(
                "\(what) mid-response; aborting the client connection",
                metadata: ["endpoint.address": "\(pool.endpoint.label)"]
            )
            self.logAccess(
                exchange,
                status: exchange.responseStatus,
                bytesOut: exchange.responseBodyBytes,
                endpoint: pool.endpoint.label,
                localReason: "\(what) mid-response; connection aborted"
            )
            self.exchange = nil
            self.closeClient()
        case .none, .extend:
            break
        }
    }

    func deadlineSlotMoved(to slot: Int) {
        self.deadlineSlot = slot
    }

    /// (Re)registers the machine's deadline with the loop's sweep.
    func restartClock() {
        self.stopClock()
        if let deadline = self.exchange?.machine.deadline {
            self.deadlineSlot = self.cluster.startClock(self, deadline: deadline)
        }
    }

    func stopClock() {
        if let slot = self.deadlineSlot {
            self.deadlineSlot = nil
            self.cluster.stopClock(slot: slot)
        }
    }

    /// Forgets the current exchange; a half-finished upstream connection is closed, never reused.
    func abortExchange() {
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
}
