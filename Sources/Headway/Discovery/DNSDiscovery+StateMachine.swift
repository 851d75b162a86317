import NIOCore

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

extension DNSDiscovery {
    /// What discovery makes of each DNS answer: the endpoint set to install, when to ask again, and what to
    /// tell the operator. A value type: the answer and the time go in, an ``Action`` comes out.
    ///
    /// Rules:
    /// - an answer with addresses replaces the set; the next query comes after `refresh`, or after the TTL
    ///   clamped to `[min_refresh, max_refresh]` with `respect_ttl`;
    /// - NXDOMAIN or an empty answer for a name that had pods empties the set only when the next query, a
    ///   second later (at most `refresh`), confirms it: a single odd answer does not take every pod away;
    /// - a failed query (timeout, SERVFAIL, no server) keeps the last set and is retried with backoff: 0.5 s
    ///   doubling, capped at `refresh`;
    /// - every delay gets ±10% jitter (``jittered(_:factor:)``, applied by the caller's random factor) so
    ///   that a fleet of sidecars does not query in lockstep.
    struct StateMachine: Sendable {
        let settings: DNSDiscoverySettings
        private(set) var status = Status()
        /// Until the next query, as the last ``jittered(_:factor:now:)`` decided; `nil` before the first.
        private(set) var nextDelay: TimeAmount?

        init(settings: DNSDiscoverySettings) {
            self.settings = settings
        }

        /// What `/endpoints` shows of discovery.
        struct Status: Sendable, Equatable {
            var addresses: [String] = []
            var ttl: UInt32?
            var resolvedAt: Date?
            var nextResolutionAt: Date?
            var lastError: String?
            var consecutiveFailures = 0
            /// An NXDOMAIN or empty answer waits for confirmation by the next query.
            var scaleToZeroPending = false
        }

        enum EndpointUpdate: Equatable {
            case replace([SocketAddress], weights: [SocketAddress: Int])
            /// No pods, confirmed; `reason` is what requests get in their 503.
            case empty(reason: String)
        }

        /// What the operator is told; `nil` when nothing changed worth a line.
        enum Notice: Equatable {
            /// Answers again after failures.
            case recovered(addresses: Int)
            /// A name that had pods has none, confirmed.
            case confirmedEmpty(DNSResolutionError)
            /// No pods in one answer; the next query decides.
            case awaitingConfirmation(DNSResolutionError)
            /// The first of a run of failed queries.
            case failing(DNSResolutionError, keeping: Int)
        }

        struct Action: Equatable {
            var update: EndpointUpdate?
            var notice: Notice?
            /// Until the next query, before jitter.
            var delay: TimeAmount
            /// For the metrics.
            var result: DiscoveryMetrics.Result
        }

        /// A query finished with `result` at `now`.
        mutating func resolved(_ result: Result<DNSAnswer, DNSResolutionError>, now: Date) -> Action {
            switch result {
            case .success(let answer) where !answer.addresses.isEmpty:
                let addresses = answer.addresses.sorted {
                    UpstreamCluster.label(for: $0) < UpstreamCluster.label(for: $1)
                }
                let wasFailing = self.status.consecutiveFailures > 0
                self.status.addresses = addresses.map(UpstreamCluster.label(for:))
                self.status.ttl = answer.ttl
                self.status.resolvedAt = now
                self.status.lastError = nil
                self.status.consecutiveFailures = 0
                self.status.scaleToZeroPending = false
                var delay = self.settings.refresh
                if self.settings.respectTTL {
                    let ttl = TimeAmount.seconds(Int64(answer.ttl)).nanoseconds
                    delay = .nanoseconds(
                        min(max(ttl, self.settings.minRefresh.nanoseconds), self.settings.maxRefresh.nanoseconds)
                    )
                }
                return Action(
                    update: .replace(addresses, weights: answer.weights),
                    notice: wasFailing ? .recovered(addresses: addresses.count) : nil,
                    delay: delay,
                    result: .success
                )

            case .success, .failure(.nameNotFound), .failure(.noRecords):
                let error: DNSResolutionError = if case .failure(let error) = result { error } else { .noRecords }
                let hadPods = !self.status.addresses.isEmpty
                let confirmed = self.status.scaleToZeroPending || !hadPods
                self.status.scaleToZeroPending = !confirmed
                self.status.lastError = error.description
                let metric: DiscoveryMetrics.Result = error == .nameNotFound ? .nameNotFound : .noRecords
                guard confirmed else {
                    return Action(
                        update: nil,
                        notice: .awaitingConfirmation(error),
                        delay: min(.seconds(1), self.settings.refresh),
                        result: metric
                    )
                }
                self.status.addresses = []
                self.status.ttl = nil
                self.status.resolvedAt = now
                return Action(
                    update: .empty(reason: "DNS name \(self.settings.name) has no pods (\(error))"),
                    notice: hadPods ? .confirmedEmpty(error) : nil,
                    delay: self.settings.refresh,
                    result: metric
                )

            case .failure(let error):
                self.status.consecutiveFailures += 1
                self.status.lastError = error.description
                let failures = self.status.consecutiveFailures
                let backoff = TimeAmount.milliseconds(500 * Int64(1 << min(failures - 1, 10)))
                return Action(
                    update: nil,
                    notice: failures == 1 ? .failing(error, keeping: self.status.addresses.count) : nil,
                    delay: min(backoff, self.settings.refresh),
                    result: .failure
                )
            }
        }

        /// `delay` scaled by `factor` (drawn from 0.9...1.1 by the caller); records when the next query runs.
        mutating func jittered(_ delay: TimeAmount, factor: Double, now: Date) -> TimeAmount {
            let jittered = TimeAmount.nanoseconds(Int64(Double(delay.nanoseconds) * factor))
            self.nextDelay = jittered
            self.status.nextResolutionAt = now.addingTimeInterval(Double(jittered.nanoseconds) / 1e9)
            return jittered
        }
    }
}
