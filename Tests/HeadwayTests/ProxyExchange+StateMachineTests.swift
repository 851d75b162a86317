import NIOCore
import NIOHTTP1
import Testing

@testable import Headway

/// Every retry, replay and timeout rule of one exchange, driven without a channel or a clock.
struct ProxyExchangeStateMachineTests {
    typealias Machine = ProxyExchange.StateMachine

    private let start = NIODeadline.uptimeNanoseconds(5_000_000_000_000)
    private let generous = RetryBudget(percent: 100, minPerSecond: 100)
    private let empty = RetryBudget(percent: 0, minPerSecond: 0)

    private func machine(
        idempotent: Bool = true,
        upgrade: Bool = false,
        maxRetries: Int = 2,
        retryStatuses: Set<Int> = [],
        replayLimit: Int = 64,
        perTryTimeout: TimeAmount? = nil,
        endReceived: Bool = false
    ) -> Machine {
        Machine(
            request: .init(isIdempotent: idempotent, offersUpgrade: upgrade),
            policy: .init(
                maxRetries: maxRetries,
                retryStatuses: retryStatuses,
                replayBufferLimit: replayLimit,
                requestTimeout: .seconds(15),
                perTryTimeout: perTryTimeout,
                idleTimeout: .seconds(60)
            ),
            requestEndReceived: endReceived
        )
    }

    private func bytes(_ text: String) -> ByteBuffer { ByteBuffer(string: text) }

    private static let refused = IOError(errnoCode: 111, reason: "connect")

    @Test func partsWaitForTheConnectionAndTheClockStartsWhenItIsLeased() {
        var machine = self.machine()
        #expect(machine.requestBodyReceived(self.bytes("ab"), isConnected: false) == .wait)
        #expect(machine.requestEndReceived(isConnected: false) == .wait)
        #expect(machine.hasUnsentRequestParts, "the client is not read while parts wait")
        #expect(machine.deadline == nil, "no clock while connecting (connect_timeout guards that)")

        let send = machine.connectionLeased(now: self.start)
        #expect(send == .init(bodyParts: [self.bytes("ab")], end: true))
        #expect(!machine.hasUnsentRequestParts)
        #expect(machine.deadline == self.start + .seconds(15), "request_timeout to the response head")
        #expect(machine.requestSentAt == self.start)
    }

    @Test func partsFlowStraightThroughOnceConnected() {
        var machine = self.machine()
        _ = machine.connectionLeased(now: self.start)
        #expect(machine.requestBodyReceived(self.bytes("a"), isConnected: true) == .send)
        #expect(machine.requestEndReceived(isConnected: true) == .send)
        #expect(machine.requestEndSent)
    }

    @Test func aResponseRelaysResetsTheClockOnProgressAndEndsReusable() {
        var budget = self.generous
        var machine = self.machine(endReceived: true)
        _ = machine.connectionLeased(now: self.start)
        let head = machine.responseHeadReceived(
            status: 200,
            upstreamKeepsAlive: true,
            budget: &budget,
            now: self.start + .seconds(1)
        )
        #expect(head == .relay(closeClient: false, budgetRefusedRetry: false))
        #expect(machine.hasRespondedToClient)
        #expect(machine.deadline == self.start + .seconds(61), "idle_timeout from the head")
        machine.responseBodyReceived(now: self.start + .seconds(30))
        #expect(machine.deadline == self.start + .seconds(90), "progress moves the idle deadline")
        #expect(machine.responseEnded() == .init(connectionIsReusable: true, requestWasCutShort: false))
    }

    @Test func aPodThatAnswersBeforeTheWholeRequestIsSentCutsTheRequestShort() {
        var budget = self.generous
        var machine = self.machine()
        _ = machine.connectionLeased(now: self.start)
        #expect(
            machine.responseHeadReceived(status: 413, upstreamKeepsAlive: true, budget: &budget, now: self.start)
                == .relay(closeClient: true, budgetRefusedRetry: false),
            "the head itself says Connection: close, before the client sends its next request"
        )
        #expect(machine.responseEnded() == .init(connectionIsReusable: false, requestWasCutShort: true))
    }

    @Test func aConnectFailureIsRetriedAndTheBodyIsReplayedWhole() {
        var machine = self.machine(idempotent: false)
        var budget = self.generous
        _ = machine.requestBodyReceived(self.bytes("part1"), isConnected: false)
        _ = machine.connectionLeased(now: self.start)
        #expect(machine.requestBodyReceived(self.bytes("part2"), isConnected: true) == .send)
        // The connection was leased, then the connect of a retry... here: the pod closed before any byte,
        // with the request not yet sent whole: safe to replay even for POST.
        let action = machine.attemptFailed(
            .upstreamClosed(endpoint: "pod-1", error: nil),
            budget: &budget,
            now: self.start
        )
        #expect(action == .retry)
        #expect(machine.retries == 1)
        #expect(machine.deadline == nil, "waiting for a connection again")
        _ = machine.requestEndReceived(isConnected: false)
        #expect(
            machine.connectionLeased(now: self.start)
                == .init(bodyParts: [self.bytes("part1"), self.bytes("part2")], end: true)
        )
    }

    @Test func connectFailuresAreAlwaysSafeAndAnsweredByKindOnceRetriesRunOut() {
        var budget = self.generous
        var timedOut = self.machine(idempotent: false, maxRetries: 0, endReceived: true)
        let timeout = timedOut.attemptFailed(
            .connectTimedOut(endpoint: "p:1", timeout: .seconds(1)),
            budget: &budget,
            now: self.start
        )
        #expect(timeout == .answer(.connectTimeout(endpoint: "p:1", timeout: "1s"), retryRefused: .retriesExhausted))
        guard case .answer(let error, _) = timeout else { return }
        #expect(error.status.code == 504)

        var refused = self.machine(idempotent: false, maxRetries: 1, endReceived: true)
        for endpoint in ["p:1", "p:2"] {
            #expect(
                refused.attemptFailed(
                    .connectFailed(endpoint: endpoint, error: Self.refused, noneHealthy: nil),
                    budget: &budget,
                    now: self.start
                ) == .retry
            )
        }
        let second = refused.attemptFailed(
            .connectFailed(endpoint: "p:2", error: Self.refused, noneHealthy: nil),
            budget: &budget,
            now: self.start
        )
        guard case .answer(let badGateway, .retriesExhausted) = second else {
            Issue.record("\(second)")
            return
        }
        #expect(badGateway.status.code == 502)
        #expect(badGateway.detail.contains("p:2"), "the answer names the last pod: \(badGateway.detail)")

        var noneHealthy = self.machine(maxRetries: 0)
        let unavailable = noneHealthy.attemptFailed(
            .connectFailed(endpoint: "p:1", error: Self.refused, noneHealthy: ("web", 3)),
            budget: &budget,
            now: self.start
        )
        guard case .answer(let serviceUnavailable, _) = unavailable else { return }
        #expect(serviceUnavailable.status.code == 503)
        #expect(serviceUnavailable.detail.contains("(3 known, none healthy)"))
    }

    @Test func aRequestThePodMayHaveActedOnIsNotReplayed() {
        var budget = self.generous
        var machine = self.machine(idempotent: false, endReceived: true)
        _ = machine.connectionLeased(now: self.start)
        let action = machine.attemptFailed(
            .upstreamClosed(endpoint: "p:1", error: nil),
            budget: &budget,
            now: self.start
        )
        #expect(action == .answer(.upstreamClosed(endpoint: "p:1", error: nil), retryRefused: .notSafe))

        var invalid = self.machine(idempotent: false, endReceived: true)
        _ = invalid.connectionLeased(now: self.start)
        let answer = invalid.attemptFailed(
            .invalidResponse(endpoint: "p:1", reason: "bad status"),
            budget: &budget,
            now: self.start
        )
        guard case .answer(let error, .notSafe) = answer else {
            Issue.record("\(answer)")
            return
        }
        #expect(error.status.code == 502)
    }

    @Test func aStreamTheHTTP2PodRefusedIsReplayedWhateverTheMethod() {
        var budget = self.generous
        var machine = self.machine(idempotent: false, endReceived: true)
        _ = machine.connectionLeased(now: self.start)
        // REFUSED_STREAM (or a stream above GOAWAY's last one): the pod did nothing with the request.
        #expect(machine.attemptFailed(.streamRefused(endpoint: "p:1"), budget: &budget, now: self.start) == .retry)
    }

    @Test func anIdempotentRequestSentWholeIsReplayed() {
        var budget = self.generous
        var machine = self.machine(idempotent: true, endReceived: true)
        _ = machine.connectionLeased(now: self.start)
        #expect(
            machine.attemptFailed(.upstreamClosed(endpoint: "p:1", error: nil), budget: &budget, now: self.start)
                == .retry
        )
        #expect(machine.connectionLeased(now: self.start) == .init(bodyParts: [], end: true), "the end goes out again")
    }

    @Test func aBodyLargerThanTheReplayBufferIsNeverReplayed() {
        var budget = self.generous
        var machine = self.machine(idempotent: true, replayLimit: 4)
        _ = machine.connectionLeased(now: self.start)
        _ = machine.requestBodyReceived(self.bytes("abc"), isConnected: true)
        _ = machine.requestBodyReceived(self.bytes("def"), isConnected: true)
        let action = machine.attemptFailed(
            .upstreamClosed(endpoint: "p:1", error: nil),
            budget: &budget,
            now: self.start
        )
        #expect(action == .answer(.upstreamClosed(endpoint: "p:1", error: nil), retryRefused: .notSafe))
    }

    @Test func anEmptyBudgetRefusesTheRetry() {
        var machine = self.machine(endReceived: true)
        var budget = self.empty
        let action = machine.attemptFailed(
            .connectTimedOut(endpoint: "p:1", timeout: .seconds(1)),
            budget: &budget,
            now: self.start
        )
        guard case .answer(_, .budgetExhausted) = action else {
            Issue.record("\(action)")
            return
        }
    }

    /// A pod that refuses connections costs nobody anything to retry around: found by scripts/chaos, where a
    /// stopped pod's refusals drained the budget before its health checks caught up, and GETs failed with 502.
    @Test func aRefusedConnectIsRetriedWithoutSpendingTheBudget() {
        var machine = self.machine(endReceived: true)
        var budget = self.empty
        for _ in 1...4 {
            #expect(
                machine.attemptFailed(
                    .connectFailed(endpoint: "p:1", error: Self.refused, noneHealthy: nil),
                    budget: &budget,
                    now: self.start
                ) == .retry
            )
        }
        #expect(machine.freeRetries == 2 && machine.retries == 2, "max_retries free ones, then max_retries counted")
        let last = machine.attemptFailed(
            .connectFailed(endpoint: "p:1", error: Self.refused, noneHealthy: nil),
            budget: &budget,
            now: self.start
        )
        guard case .answer(_, .retriesExhausted) = last else {
            Issue.record("\(last)")
            return
        }
    }

    /// Refused connects do not use up the retries that other failures need. Found by scripts/chaos (seed 33):
    /// with DNS down, one GET met a pod closing its connection, a frozen one (`per_try_timeout`) and a stopped
    /// one that refused, and got 502 with two healthy pods left.
    @Test func refusedConnectsLeaveTheRetriesForOtherFailures() {
        var machine = self.machine(endReceived: true)
        var budget = self.generous
        let failures: [ProxyExchange.StateMachine.Failure] = [
            .upstreamClosed(endpoint: "p:6", error: nil),
            .connectFailed(endpoint: "p:5", error: Self.refused, noneHealthy: nil),
            .connectFailed(endpoint: "p:1", error: Self.refused, noneHealthy: nil),
            .upstreamClosed(endpoint: "p:3", error: nil),
        ]
        for failure in failures {
            #expect(machine.attemptFailed(failure, budget: &budget, now: self.start) == .retry, "\(failure)")
        }
        #expect(machine.retries == 2 && machine.freeRetries == 2)
    }

    @Test func limitsAndAnEmptySetAreAnsweredAtOnce() {
        var budget = self.generous
        var machine = self.machine()
        let limit = ProxyError.pendingLimit(upstream: "web", limit: 8)
        #expect(
            machine.attemptFailed(.refused(limit), budget: &budget, now: self.start)
                == .answer(limit, retryRefused: nil)
        )
    }

    @Test func aRetryOnStatusIsRetriedOnlyWhenTheRequestWentWholeAndFits() {
        var budget = self.generous
        var machine = self.machine(retryStatuses: [503], endReceived: true)
        _ = machine.connectionLeased(now: self.start)
        #expect(
            machine.responseHeadReceived(status: 503, upstreamKeepsAlive: true, budget: &budget, now: self.start)
                == .retry(reason: "answered 503 (retry_on)")
        )
        _ = machine.connectionLeased(now: self.start)
        #expect(
            machine.responseHeadReceived(status: 200, upstreamKeepsAlive: true, budget: &budget, now: self.start)
                == .relay(closeClient: false, budgetRefusedRetry: false)
        )

        // Answered before its body's end (found by scripts/chaos: a pod answering 503 before reading a POST's
        // body): the pod did not process it, so it goes elsewhere, and the rest of the body follows there.
        var unsent = self.machine(retryStatuses: [503])
        _ = unsent.connectionLeased(now: self.start)
        #expect(unsent.requestBodyReceived(self.bytes("ab"), isConnected: true) == .send)
        #expect(
            unsent.responseHeadReceived(status: 503, upstreamKeepsAlive: true, budget: &budget, now: self.start)
                == .retry(reason: "answered 503 (retry_on)")
        )
        #expect(unsent.requestBodyReceived(self.bytes("cd"), isConnected: false) == .wait)
        #expect(
            unsent.connectionLeased(now: self.start)
                == .init(bodyParts: [self.bytes("ab"), self.bytes("cd")], end: false)
        )
        #expect(unsent.requestEndReceived(isConnected: true) == .send)

        var broke = self.machine(retryStatuses: [503], endReceived: true)
        var empty = self.empty
        _ = broke.connectionLeased(now: self.start)
        #expect(
            broke.responseHeadReceived(status: 503, upstreamKeepsAlive: true, budget: &empty, now: self.start)
                == .relay(closeClient: false, budgetRefusedRetry: true)
        )
    }

    @Test func retriesStopAtMaxRetries() {
        var machine = self.machine(maxRetries: 2, retryStatuses: [502], endReceived: true)
        var budget = self.generous
        var answers: [Machine.ResponseHeadAction] = []
        for _ in 0..<3 {
            _ = machine.connectionLeased(now: self.start)
            answers.append(
                machine.responseHeadReceived(status: 502, upstreamKeepsAlive: true, budget: &budget, now: self.start)
            )
        }
        #expect(answers.prefix(2).allSatisfy { if case .retry = $0 { true } else { false } })
        #expect(answers.last == .relay(closeClient: false, budgetRefusedRetry: false))
        #expect(machine.retries == 2)
    }

    @Test func aFailureAfterTheResponseHeadCutsTheClient() {
        var budget = self.generous
        var machine = self.machine(endReceived: true)
        _ = machine.connectionLeased(now: self.start)
        _ = machine.responseHeadReceived(status: 200, upstreamKeepsAlive: true, budget: &budget, now: self.start)
        #expect(
            machine.attemptFailed(.upstreamClosed(endpoint: "p:1", error: nil), budget: &budget, now: self.start)
                == .abortClient
        )
    }

    @Test func timeouts() {
        var budget = self.generous
        var waiting = self.machine(endReceived: true)
        _ = waiting.connectionLeased(now: self.start)
        #expect(
            waiting.deadlinePassed(now: self.start + .seconds(10), endpoint: "p:1", budget: &budget)
                == .extend(to: self.start + .seconds(15))
        )
        let answer = waiting.deadlinePassed(now: self.start + .seconds(15), endpoint: "p:1", budget: &budget)
        #expect(answer == .answer(.upstreamTimeout(endpoint: "p:1", timeout: "15s")))
        guard case .answer(let error) = answer else { return }
        #expect(error.status.code == 504)

        var streaming = self.machine(endReceived: true)
        _ = streaming.connectionLeased(now: self.start)
        _ = streaming.responseHeadReceived(status: 200, upstreamKeepsAlive: true, budget: &budget, now: self.start)
        streaming.responseBodyReceived(now: self.start + .seconds(50))
        #expect(
            streaming.deadlinePassed(now: self.start + .seconds(60), endpoint: "p:1", budget: &budget)
                == .extend(to: self.start + .seconds(110))
        )
        #expect(
            streaming.deadlinePassed(now: self.start + .seconds(111), endpoint: "p:1", budget: &budget) == .abortClient
        )

        var connecting = self.machine()
        #expect(connecting.deadlinePassed(now: self.start, endpoint: "p:1", budget: &budget) == .none)
    }

    /// A pod that accepts a request and never answers (frozen, in a GC pause) holds an idempotent request only
    /// for `per_try_timeout`: found by scripts/chaos, where GETs on a SIGSTOPped pod waited out request_timeout.
    @Test func perTryTimeoutSendsAnIdempotentRequestElsewhere() {
        var budget = self.generous
        var get = self.machine(perTryTimeout: .seconds(1), endReceived: true)
        _ = get.connectionLeased(now: self.start)
        #expect(get.deadline == self.start + .seconds(1))
        #expect(get.deadlinePassed(now: self.start + .seconds(1), endpoint: "p:1", budget: &budget) == .retry)
        #expect(get.retries == 1)
        _ = get.connectionLeased(now: self.start + .seconds(1))
        #expect(get.deadline == self.start + .seconds(2), "each attempt has its own")
        #expect(get.deadlinePassed(now: self.start + .seconds(2), endpoint: "p:2", budget: &budget) == .retry)
        _ = get.connectionLeased(now: self.start + .seconds(2))
        #expect(
            get.deadline == self.start + .seconds(17),
            "the last attempt has no retry left: it waits request_timeout"
        )

        // Not idempotent: a timed-out POST may have been processed; it waits request_timeout and is answered 504.
        var post = self.machine(idempotent: false, perTryTimeout: .seconds(1), endReceived: true)
        _ = post.connectionLeased(now: self.start)
        #expect(post.deadline == self.start + .seconds(15))
        #expect(
            post.deadlinePassed(now: self.start + .seconds(15), endpoint: "p:1", budget: &budget)
                == .answer(.upstreamTimeout(endpoint: "p:1", timeout: "15s"))
        )

        // A body still on its way is not whole: nothing to replay yet, so no per-try clock until its end is sent.
        var upload = self.machine(perTryTimeout: .seconds(1))
        _ = upload.connectionLeased(now: self.start)
        #expect(upload.deadline == self.start + .seconds(15))
        #expect(upload.requestEndReceived(isConnected: true) == .send)
        #expect(upload.deadline == self.start + .seconds(1))
    }

    @Test func perTryTimeoutWithoutBudgetKeepsWaitingForTheSameAttempt() {
        var budget = self.empty
        var get = self.machine(perTryTimeout: .seconds(1), endReceived: true)
        _ = get.connectionLeased(now: self.start)
        #expect(
            get.deadlinePassed(now: self.start + .seconds(1), endpoint: "p:1", budget: &budget)
                == .extend(to: self.start + .seconds(15))
        )
        #expect(get.deadline == self.start + .seconds(15))
        #expect(
            get.responseHeadReceived(
                status: 200,
                upstreamKeepsAlive: true,
                budget: &budget,
                now: self.start + .seconds(3)
            )
                == .relay(closeClient: false, budgetRefusedRetry: false),
            "a late answer is still relayed"
        )
    }

    @Test func an101OpensATunnelAndADeclinedUpgradeClosesTheClient() {
        var budget = self.generous
        var upgrade = self.machine(upgrade: true, endReceived: true)
        _ = upgrade.connectionLeased(now: self.start)
        #expect(
            upgrade.responseHeadReceived(status: 101, upstreamKeepsAlive: true, budget: &budget, now: self.start)
                == .openTunnel
        )
        #expect(upgrade.isTunnel)
        #expect(upgrade.deadline == nil, "a tunnel may stay quiet for hours")
        #expect(upgrade.responseEnded().connectionIsReusable == false)

        var declined = self.machine(upgrade: true, endReceived: true)
        _ = declined.connectionLeased(now: self.start)
        #expect(
            declined.responseHeadReceived(status: 200, upstreamKeepsAlive: true, budget: &budget, now: self.start)
                == .relay(closeClient: true, budgetRefusedRetry: false)
        )
    }
}
