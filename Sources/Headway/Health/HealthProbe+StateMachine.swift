import NIOCore

extension HealthProbe {
    /// One endpoint's check cycle, as a value: when a check starts, what its outcome means, whether its
    /// connection can serve the next check, and when the next one is due.
    ///
    /// A check that ends late (its timeout fired, or the probe stopped, or a newer check started) is ignored:
    /// each check carries its number. The time until the next check is `interval` with ±`jitter` (the caller
    /// draws the random factor), never under a millisecond.
    struct StateMachine: Sendable {
        let settings: HealthCheckSettings
        private var checkNumber = 0
        private var checkUnderWay: Int?
        private(set) var isStopped = false

        init(settings: HealthCheckSettings) {
            self.settings = settings
        }

        /// How a check ended, as the shell saw it.
        enum Outcome: Equatable {
            /// A TCP check connected.
            case connected
            /// An HTTP check got an answer with `status`; `keepAlive`: its connection can serve the next check.
            case answered(status: UInt, keepAlive: Bool)
            /// A gRPC check's call ended (HTTP 200) with this answer.
            case grpcAnswered(GRPCHealthCheck.Answer)
            /// The connect failed, the connection broke or the answer was invalid.
            case failed(String)
            /// No answer within `timeout`.
            case timedOut
        }

        struct Verdict: Equatable {
            var passed: Bool
            /// What `/endpoints` shows as the last check's detail.
            var detail: String
            /// The check's connection must not serve the next check (it may hold a late answer, or the pod
            /// closes it).
            var closeConnection: Bool
        }

        /// A check is due: returns its number, or `nil` once the probe stopped.
        mutating func checkDue() -> Int? {
            guard !self.isStopped else { return nil }
            self.checkNumber += 1
            self.checkUnderWay = self.checkNumber
            return self.checkNumber
        }

        /// Whether check `number` is the one under way (a connect that finishes late is closed unused).
        func isCurrent(_ number: Int) -> Bool {
            !self.isStopped && self.checkUnderWay == number
        }

        /// Check `number` ended; `nil` when it no longer counts.
        mutating func checkEnded(_ number: Int, _ outcome: Outcome) -> Verdict? {
            guard self.isCurrent(number) else { return nil }
            self.checkUnderWay = nil
            switch outcome {
            case .connected:
                return Verdict(passed: true, detail: "connected", closeConnection: true)
            case .answered(let status, let keepAlive):
                return Verdict(
                    passed: self.settings.isExpected(status: Int(status)),
                    detail: "HTTP \(status)",
                    closeConnection: !keepAlive
                )
            case .grpcAnswered(let answer):
                // Each call is a stream of its own: the connection serves the next check whatever this one said.
                return Verdict(passed: answer == .serving, detail: answer.detail, closeConnection: false)
            case .failed(let reason):
                return Verdict(passed: false, detail: reason, closeConnection: true)
            case .timedOut:
                return Verdict(
                    passed: false,
                    detail: "no answer within \(DurationText.format(self.settings.timeout))",
                    closeConnection: true
                )
            }
        }

        /// The time until the next check; `factor` is drawn from -1...1 and scales the jitter.
        func nextCheckDelay(factor: Double) -> TimeAmount {
            let interval = self.settings.interval.nanoseconds
            let spread = Double(interval * Int64(self.settings.jitterPercent) / 100)
            return .nanoseconds(max(interval + Int64(spread * factor), 1_000_000))
        }

        mutating func stopped() {
            self.isStopped = true
            self.checkUnderWay = nil
        }
    }
}
