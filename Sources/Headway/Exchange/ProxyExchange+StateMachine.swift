import NIOCore

/// One request's way through the proxy: attempts on endpoints, retries and replay, timeouts, and the choice
/// between relaying the pod's answer and Headway's own.
enum ProxyExchange {}

extension ProxyExchange {
    /// The decisions of one exchange, as a value: events in, an action out; no channel, no clock, no bytes of
    /// any wire format.
    ///
    /// The shell that runs it (today the HTTP/1 ``DownstreamHandler``; an HTTP/2 stream next) picks the
    /// endpoint, leases the connection, writes what the actions say, and reports what happened. The machine
    /// owns:
    /// - the request body parts not yet sent on the current attempt, and those sent but kept to be replayed
    ///   (while they fit `retry_buffer_limit`);
    /// - when a failed attempt may be retried on another endpoint: never once any of the response reached the
    ///   client; for a connect failure always (nothing was sent; a refused connect spends no retry budget, as it
    ///   cost no pod anything, and the first `max_retries` of them are not counted as retries either, so that a
    ///   request meeting stopped pods still has its retries for pods that fail it otherwise); after a close or an invalid response only if the body is still whole and the
    ///   request idempotent or not yet sent whole; after a `retry_on` status only while what was sent is kept
    ///   for a replay (an answer before the body's end proves the pod did not process it: the rest of the body
    ///   follows on the next attempt); and always within `max_retries` and the loop's retry budget;
    /// - the deadline: `request_timeout` from the request's sending to the response head, then `idle_timeout`
    ///   between two pieces of the response; for an attempt that could go elsewhere (an idempotent request
    ///   sent whole, kept for a replay, with retries left), `per_try_timeout` first, then a retry;
    /// - which ``ProxyError`` answers a failure (and so its status).
    ///
    /// State transitions: `connecting` → `awaitingResponse` → `responding` → `finished`; `awaitingResponse` →
    /// `tunnelling` on a 101; `connecting` or `awaitingResponse` → `connecting` on a retry; any → `finished`.
    struct StateMachine {
        /// What the machine needs to know of the request.
        struct Request: Sendable, Equatable {
            /// RFC 9110 §9.2.2: a request that may be sent again after the pod saw it.
            var isIdempotent: Bool
            /// The request asks to switch protocols and may become a tunnel.
            var offersUpgrade: Bool
        }

        struct Policy: Sendable, Equatable {
            var maxRetries: Int
            /// Response statuses that are retried (`retry_on`).
            var retryStatuses: Set<Int>
            /// Body bytes kept for a replay; a longer body is never replayed.
            var replayBufferLimit: Int
            var requestTimeout: TimeAmount
            /// An attempt that may be retried elsewhere waits this long for its response head (`per_try_timeout`).
            var perTryTimeout: TimeAmount?
            var idleTimeout: TimeAmount
        }

        private enum State {
            /// An endpoint was picked and a connection is being opened (or an idle one leased).
            case connecting
            /// The request is going or has gone to the pod; no response head yet. `until` is `per_try_timeout`
            /// after `since` while a timed-out attempt could be retried, else `request_timeout`.
            case awaitingResponse(since: NIODeadline, until: NIODeadline)
            /// The response head went to the client; its body is flowing.
            case responding(lastProgress: NIODeadline, upstreamKeepsAlive: Bool)
            /// The pod switched protocols: bytes flow unparsed both ways until either side closes.
            case tunnelling
            /// The response is complete, Headway answered, or the exchange was abandoned.
            case finished
        }

        let request: Request
        let policy: Policy
        private var state = State.connecting
        /// Body parts received but not sent on the current attempt, oldest first. An array, because an empty
        /// one allocates nothing, and most requests never queue a part.
        private var unsent: [ByteBuffer] = []
        /// Body parts sent on the current attempt, kept for a replay.
        private var sent: [ByteBuffer] = []
        private var sentBytes = 0
        /// Every body part sent so far is in `sent`; cleared for good once the body outgrows the buffer.
        private var isReplayable = true
        private(set) var requestEndReceived: Bool
        private(set) var requestEndSent = false
        private(set) var retries = 0
        /// Refused connects retried without counting as retries: at most `max_retries` of them.
        private(set) var freeRetries = 0

        /// - Parameter requestEndReceived: the whole request had arrived already (a pipelined one).
        init(request: Request, policy: Policy, requestEndReceived: Bool = false) {
            self.request = request
            self.policy = policy
            self.requestEndReceived = requestEndReceived
        }

        // MARK: State, for the shell

        /// Whether the response head reached the client: a failure can then only cut the connection.
        var hasRespondedToClient: Bool {
            switch self.state {
            case .responding, .tunnelling: true
            case .connecting, .awaitingResponse, .finished: false
            }
        }

        var isTunnel: Bool {
            if case .tunnelling = self.state { return true }
            return false
        }

        /// Body parts wait for a connection: reading more from the client would only queue more.
        var hasUnsentRequestParts: Bool { !self.unsent.isEmpty || (self.requestEndReceived && !self.requestEndSent) }

        /// When the exchange times out unless something happens first; `nil` when no clock runs.
        var deadline: NIODeadline? {
            switch self.state {
            case .awaitingResponse(_, let until): until
            case .responding(let lastProgress, _): lastProgress + self.policy.idleTimeout
            case .connecting, .tunnelling, .finished: nil
            }
        }

        /// When the current attempt's request was sent, while its response head is awaited.
        var requestSentAt: NIODeadline? {
            if case .awaitingResponse(let since, _) = self.state { return since }
            return nil
        }

        // MARK: Request events

        enum RequestPartAction: Equatable {
            /// Send this part on the current connection now.
            case send
            /// Keep it: no connection yet, or earlier parts still wait.
            case wait
        }

        /// A piece of the request body arrived; `isConnected` says whether the current attempt has its
        /// connection. A part that is sent is also kept for a replay while the body fits the buffer.
        mutating func requestBodyReceived(_ part: ByteBuffer, isConnected: Bool) -> RequestPartAction {
            guard isConnected, self.unsent.isEmpty else {
                self.unsent.append(part)
                return .wait
            }
            self.keepForReplay(part)
            return .send
        }

        /// The request's end arrived. Sent now, the request is whole: its attempt may get `per_try_timeout`, so
        /// the shell reads ``deadline`` again.
        mutating func requestEndReceived(isConnected: Bool) -> RequestPartAction {
            self.requestEndReceived = true
            guard isConnected, self.unsent.isEmpty else { return .wait }
            self.requestEndSent = true
            if case .awaitingResponse(let since, _) = self.state {
                self.state = .awaitingResponse(since: since, until: since + self.attemptTimeout)
            }
            return .send
        }

        /// What to send on a connection that was just leased for this exchange, after the request head.
        struct Send: Equatable {
            var bodyParts: [ByteBuffer]
            var end: Bool
        }

        /// The current attempt's connection is ready: the clock starts; everything that waited goes out.
        mutating func connectionLeased(now: NIODeadline) -> Send {
            guard case .connecting = self.state else { preconditionFailure("Invalid state: \(self.state)") }
            let parts = self.unsent
            self.unsent = []
            for part in parts {
                self.keepForReplay(part)
            }
            let end = self.requestEndReceived && !self.requestEndSent
            if end { self.requestEndSent = true }
            self.state = .awaitingResponse(since: now, until: now + self.attemptTimeout)
            return Send(bodyParts: parts, end: end)
        }

        /// How long this attempt waits for its response head: `per_try_timeout` when a timeout could send the
        /// request elsewhere (it is whole, idempotent, kept for a replay, with a retry left), else
        /// `request_timeout`.
        private var attemptTimeout: TimeAmount {
            guard let perTry = self.policy.perTryTimeout, perTry < self.policy.requestTimeout,
                self.request.isIdempotent, self.requestEndSent, self.isReplayable,
                self.retries < self.policy.maxRetries
            else { return self.policy.requestTimeout }
            return perTry
        }

        private mutating func keepForReplay(_ part: ByteBuffer) {
            guard self.isReplayable else { return }
            if self.sentBytes + part.readableBytes <= self.policy.replayBufferLimit {
                self.sent.append(part)
                self.sentBytes += part.readableBytes
            } else {
                self.isReplayable = false
                self.sent = []
                self.sentBytes = 0
            }
        }

        // MARK: Response events

        enum ResponseHeadAction: Equatable {
            /// Relay the head; `closeClient`: the client connection closes after this response.
            /// `budgetRefusedRetry`: the status is in `retry_on`, but the retry budget is spent.
            case relay(closeClient: Bool, budgetRefusedRetry: Bool)
            /// The pod switched protocols: relay the 101 and carry bytes both ways.
            case openTunnel
            /// Drop this answer and its connection; dispatch the request again, elsewhere.
            case retry(reason: String)
        }

        /// The pod's response head arrived.
        mutating func responseHeadReceived(
            status: UInt,
            upstreamKeepsAlive: Bool,
            budget: inout RetryBudget,
            now: NIODeadline
        ) -> ResponseHeadAction {
            guard case .awaitingResponse = self.state else { preconditionFailure("Invalid state: \(self.state)") }
            var budgetRefusedRetry = false
            if self.policy.retryStatuses.contains(Int(status)), self.isReplayable {
                switch self.retry(budget: &budget, now: now) {
                case .retry: return .retry(reason: "answered \(status) (retry_on)")
                case .budgetExhausted: budgetRefusedRetry = true
                case .retriesExhausted: break
                }
            }
            if status == 101 {
                self.state = .tunnelling
                return .openTunnel
            }
            self.state = .responding(lastProgress: now, upstreamKeepsAlive: upstreamKeepsAlive)
            // A declined upgrade: the client may already be sending the protocol it asked for. An answer before
            // the whole request went out: the rest of it cannot follow (``Completion/requestWasCutShort``), so
            // this head tells the client the connection closes, or it would send its next request into the
            // close (found by scripts/chaos: a pod answering 503 before reading a POST's body).
            return .relay(
                closeClient: self.request.offersUpgrade || !self.requestEndSent,
                budgetRefusedRetry: budgetRefusedRetry
            )
        }

        /// A piece of the response body arrived (it resets the idle clock).
        mutating func responseBodyReceived(now: NIODeadline) {
            if case .responding(_, let keepsAlive) = self.state {
                self.state = .responding(lastProgress: now, upstreamKeepsAlive: keepsAlive)
            }
        }

        struct Completion: Equatable {
            /// The upstream connection can serve another request.
            var connectionIsReusable: Bool
            /// The pod answered before the whole request was sent: the rest of it cannot be resynchronised,
            /// so the client connection closes after this response.
            var requestWasCutShort: Bool
        }

        /// The response ended (for a tunnel: the pod closed it).
        mutating func responseEnded() -> Completion {
            let keepsAlive: Bool
            switch self.state {
            case .responding(_, let upstreamKeepsAlive): keepsAlive = upstreamKeepsAlive
            case .tunnelling: keepsAlive = false
            case .connecting, .awaitingResponse, .finished: preconditionFailure("Invalid state: \(self.state)")
            }
            self.state = .finished
            return Completion(
                connectionIsReusable: keepsAlive && self.requestEndSent,
                requestWasCutShort: !self.requestEndSent
            )
        }

        // MARK: Failures

        /// What went wrong with the current attempt, as the shell saw it.
        enum Failure {
            /// No endpoint to try, or a limit refused the attempt before anything was sent: not retried.
            case refused(ProxyError)
            case connectTimedOut(endpoint: String, timeout: TimeAmount)
            /// The connect failed; `noneHealthy` names the upstream and its size when no endpoint is healthy.
            case connectFailed(endpoint: String, error: any Error, noneHealthy: (upstream: String, total: Int)?)
            /// The connection closed before the response ended.
            case upstreamClosed(endpoint: String, error: (any Error)?)
            /// An HTTP/2 pod refused the stream (REFUSED_STREAM, or GOAWAY below it): it processed nothing, so
            /// any request may go elsewhere, even one sent whole (RFC 9113 §8.7).
            case streamRefused(endpoint: String)
            case invalidResponse(endpoint: String, reason: String)

            /// How the operator reads it, in logs and in outlier reasons.
            var summary: String {
                switch self {
                case .refused(let error): error.detail
                case .connectTimedOut(_, let timeout): "connect timed out after \(DurationText.format(timeout))"
                case .connectFailed(_, let error, _): "connect failed: \(ProxyError.describe(error))"
                case .upstreamClosed(_, let error):
                    "connection closed before the response ended" + (error.map { ": \(ProxyError.describe($0))" } ?? "")
                case .streamRefused: "stream refused by the endpoint before processing"
                case .invalidResponse(_, let reason): "invalid response: \(reason)"
                }
            }
        }

        enum FailureAction: Equatable {
            /// Dispatch the request again, to another endpoint when there is one.
            case retry
            /// Answer the client with Headway's own response.
            case answer(ProxyError, retryRefused: RetryRefusal?)
            /// Part of the response is with the client already: it must see the truncation, not a clean end.
            case abortClient
        }

        enum RetryRefusal: Equatable {
            case notSafe
            case retriesExhausted
            case budgetExhausted
        }

        /// The current attempt failed.
        mutating func attemptFailed(_ failure: Failure, budget: inout RetryBudget, now: NIODeadline) -> FailureAction {
            if self.hasRespondedToClient {
                self.state = .finished
                return .abortClient
            }
            let answer: ProxyError
            let replayIsSafe: Bool
            // A refused connection reached no pod and cost none anything: retrying it cannot feed a retry storm,
            // so it spends no budget (a connect timeout may be an overloaded pod, and does).
            var spendsBudget = true
            var isFree = false
            switch failure {
            case .refused(let error):
                self.state = .finished
                return .answer(error, retryRefused: nil)
            case .connectTimedOut(let endpoint, let timeout):
                answer = .connectTimeout(endpoint: endpoint, timeout: DurationText.format(timeout))
                replayIsSafe = true
            case .connectFailed(let endpoint, let error, let noneHealthy):
                if let noneHealthy {
                    answer = .noHealthyEndpoint(
                        upstream: noneHealthy.upstream,
                        total: noneHealthy.total,
                        lastError: "\(endpoint): connect failed: \(ProxyError.describe(error))"
                    )
                } else {
                    answer = .connectFailed(endpoint: endpoint, error: error)
                }
                replayIsSafe = true
                spendsBudget = false
                isFree = self.freeRetries < self.policy.maxRetries
            case .upstreamClosed(let endpoint, let error):
                answer = .upstreamClosed(endpoint: endpoint, error: error)
                replayIsSafe = self.request.isIdempotent || !self.requestEndSent
            case .streamRefused(let endpoint):
                answer = .upstreamClosed(endpoint: endpoint, error: nil)
                replayIsSafe = true
            case .invalidResponse(let endpoint, let reason):
                answer = .badUpstreamResponse(endpoint: endpoint, reason: reason)
                replayIsSafe = self.request.isIdempotent || !self.requestEndSent
            }
            guard replayIsSafe, self.isReplayable else {
                self.state = .finished
                return .answer(answer, retryRefused: .notSafe)
            }
            switch self.retry(budget: &budget, now: now, spendsBudget: spendsBudget, isFree: isFree) {
            case .retry:
                return .retry
            case .retriesExhausted:
                self.state = .finished
                return .answer(answer, retryRefused: .retriesExhausted)
            case .budgetExhausted:
                self.state = .finished
                return .answer(answer, retryRefused: .budgetExhausted)
            }
        }

        enum TimeoutAction: Equatable {
            /// The response made progress since: the clock runs on to this deadline.
            case extend(to: NIODeadline)
            /// `per_try_timeout` passed: this attempt's connection goes, the request goes elsewhere.
            case retry
            /// No response head within `request_timeout`: the connection goes, Headway answers 504.
            case answer(ProxyError)
            /// The response stalled for `idle_timeout`: its connection goes and the client's is cut.
            case abortClient
            /// No clock runs in this state (the exchange moved on): nothing to do.
            case none
        }

        /// The deadline the shell last saw passed (the sweep runs a little late).
        mutating func deadlinePassed(now: NIODeadline, endpoint: String, budget: inout RetryBudget) -> TimeoutAction {
            if let deadline = self.deadline, deadline > now {
                return .extend(to: deadline)
            }
            switch self.state {
            case .awaitingResponse(let since, _) where now < since + self.policy.requestTimeout:
                // `per_try_timeout` passed. Without a retry to spend, this attempt may still answer in time.
                guard case .retry = self.retry(budget: &budget, now: now) else {
                    self.state = .awaitingResponse(since: since, until: since + self.policy.requestTimeout)
                    return .extend(to: since + self.policy.requestTimeout)
                }
                return .retry
            case .awaitingResponse:
                self.state = .finished
                return .answer(
                    .upstreamTimeout(endpoint: endpoint, timeout: DurationText.format(self.policy.requestTimeout))
                )
            case .responding:
                self.state = .finished
                return .abortClient
            case .connecting, .tunnelling, .finished:
                return .none
            }
        }

        /// The client went away, or the exchange is given up: nothing more happens.
        mutating func abandoned() {
            self.state = .finished
        }

        // MARK: Retries

        private enum RetryDecision {
            case retry
            case retriesExhausted
            case budgetExhausted
        }

        /// Starts another attempt if `max_retries` and the budget allow (a free one, after a refused connect,
        /// needs neither): what was sent goes back in front of what waits, and the machine waits for a new
        /// connection.
        private mutating func retry(
            budget: inout RetryBudget,
            now: NIODeadline,
            spendsBudget: Bool = true,
            isFree: Bool = false
        ) -> RetryDecision {
            if isFree {
                self.freeRetries += 1
            } else {
                guard self.retries < self.policy.maxRetries else { return .retriesExhausted }
                guard !spendsBudget || budget.spendRetry(at: now) else { return .budgetExhausted }
                self.retries += 1
            }
            self.unsent = self.sent + self.unsent
            self.sent = []
            self.sentBytes = 0
            self.requestEndSent = false
            self.state = .connecting
            return .retry
        }
    }
}
