import NIOCore

/// Passive health: decides when an endpoint that failed real requests leaves rotation, and when it comes back.
///
/// A value type with no clock and no I/O: the caller passes the time with each event and performs the
/// ``Decision`` it gets back (set the endpoint's ejected flag, schedule the end of the ejection, log).
/// The runs of failures that lead to a report are counted on the hot path by atomic counters on
/// ``Endpoint``; this type only sees the reports.
///
/// Rules:
/// - a reported outlier is ejected for `base_ejection_time` × its multiplier, capped at `max_ejection_time`;
///   the multiplier grows by one for a repeat offender (ejected again before a base time has passed since its
///   last ejection ended) and starts again at 1 otherwise;
/// - an endpoint is ejected only while less than `max_ejection_percent` of the endpoints are, as in Envoy and
///   gRPC (three at 50% allow two; found by scripts/chaos, where a pod answering 503 stayed in rotation beside a
///   recovered pod still serving its ejection), and one endpoint always may be;
///   an ejected endpoint that its active checks hold out of rotation anyway takes no capacity away, so it does
///   not count (found by scripts/chaos: a killed pod, out by its checks, kept a pod answering 503 in rotation);
/// - an ejection ends when its time is up; one for gateway failures (the pod could not be reached or did not
///   answer) ends earlier once the active checks pass `healthy_threshold` times in a row after it began (as
///   Envoy's `successful_active_health_check_uneject_host` and HAProxy's `rise`): a pod that was ejected for
///   refusing connections and then restarted is back as soon as its checks say so, not 30 s later. One for
///   5xx answers runs its time: a pod that answers its health check but fails real requests is not shown
///   healthy by that check (found by scripts/chaos, where such a pod came back every second and failed again).
struct OutlierDetector: Sendable {
    /// A reload may change them; ejections in progress keep the duration they were given.
    var settings: OutlierDetectionSettings
    private var records: [SocketAddress: Record] = [:]

    init(settings: OutlierDetectionSettings) {
        self.settings = settings
    }

    /// A run of failed real requests that reached its threshold.
    struct Report: Sendable, Equatable {
        enum Run: Sendable, Equatable {
            /// 5xx answers: the pod answers, wrongly.
            case consecutive5xx
            /// Connect failures, resets, timeouts, bad responses: what a passing active check contradicts.
            case consecutiveGatewayFailures
        }
        var run: Run
        /// For the log and the admin page.
        var reason: String
    }

    /// What the detector remembers of one endpoint, shown on the admin page.
    struct Record: Sendable, Equatable {
        /// Ejections so far; also names the current one, so that a late timer for an earlier one is ignored.
        var ejections = 0
        /// Set while ejected.
        var ejectedUntil: NIODeadline?
        /// The run that caused the current or last ejection.
        var lastEjectionRun: Report.Run?
        var lastEjectionReason: String?
        var lastEjectionEnd: NIODeadline?
        /// `base_ejection_time` multiplier of the current or last ejection.
        var multiplier = 0
        /// Active checks passed in a row since the current ejection began.
        var passesWhileEjected = 0

        var isEjected: Bool { self.ejectedUntil != nil }
    }

    enum Decision: Equatable, Sendable {
        /// Take the endpoint out of rotation for `duration`; the timer that ends it carries `ejection`.
        case eject(duration: TimeAmount, ejection: Int)
        /// Ejecting would take more than `max_ejection_percent` of the endpoints out: `ejected` already are.
        case refuseAtLimit(ejected: Int)
        /// Put the endpoint back in rotation.
        case uneject
        case none
    }

    func record(for address: SocketAddress) -> Record? {
        self.records[address]
    }

    /// Endpoints ejected now, but for those in `notCounting`.
    func ejectedCount(notCounting: Set<SocketAddress> = []) -> Int {
        self.records.count { $0.value.isEjected && !notCounting.contains($0.key) }
    }

    /// Real requests to `address` failed in a run that reached its threshold.
    ///
    /// - Parameters:
    ///   - endpointCount: endpoints in the set, for `max_ejection_percent`.
    ///   - outOfRotationAnyway: endpoints the active checks hold out of rotation, whose ejections do not count.
    mutating func outlierReported(
        _ address: SocketAddress,
        _ report: Report,
        endpointCount: Int,
        outOfRotationAnyway: Set<SocketAddress> = [],
        now: NIODeadline
    ) -> Decision {
        var record = self.records[address, default: Record()]
        guard !record.isEjected else { return .none }
        let ejected = self.ejectedCount(notCounting: outOfRotationAnyway)
        // Envoy's and gRPC's rule: eject while the share already ejected is below the limit (so that three pods
        // at 50% allow two), and always the first.
        guard ejected == 0 || ejected * 100 < endpointCount * self.settings.maxEjectionPercent else {
            return .refuseAtLimit(ejected: ejected)
        }
        let base = self.settings.baseEjectionTime.nanoseconds
        if let end = record.lastEjectionEnd, (now - end).nanoseconds < base * Int64(max(record.multiplier, 1)) {
            record.multiplier += 1
        } else {
            record.multiplier = 1
        }
        let duration = TimeAmount.nanoseconds(
            min(base * Int64(record.multiplier), self.settings.maxEjectionTime.nanoseconds)
        )
        record.ejections += 1
        record.ejectedUntil = now + duration
        record.lastEjectionRun = report.run
        record.lastEjectionReason = report.reason
        record.passesWhileEjected = 0
        self.records[address] = record
        return .eject(duration: duration, ejection: record.ejections)
    }

    /// The timer of ejection number `ejection` fired.
    mutating func ejectionTimeEnded(_ address: SocketAddress, ejection: Int, now: NIODeadline) -> Decision {
        guard let record = self.records[address], record.isEjected, record.ejections == ejection else {
            // Ended earlier by the active checks, or the endpoint left the set.
            return .none
        }
        return self.endEjection(address, now: now)
    }

    /// An active check of `address` finished.
    mutating func activeCheckFinished(
        _ address: SocketAddress,
        passed: Bool,
        healthyThreshold: Int,
        now: NIODeadline
    ) -> Decision {
        guard var record = self.records[address], record.isEjected,
            record.lastEjectionRun == .consecutiveGatewayFailures
        else { return .none }
        record.passesWhileEjected = passed ? record.passesWhileEjected + 1 : 0
        self.records[address] = record
        guard record.passesWhileEjected >= max(healthyThreshold, 1) else { return .none }
        return self.endEjection(address, now: now)
    }

    /// The endpoint left the set: whatever it did is forgotten with it.
    mutating func endpointRemoved(_ address: SocketAddress) {
        self.records.removeValue(forKey: address)
    }

    private mutating func endEjection(_ address: SocketAddress, now: NIODeadline) -> Decision {
        self.records[address]?.ejectedUntil = nil
        self.records[address]?.lastEjectionEnd = now
        self.records[address]?.passesWhileEjected = 0
        return .uneject
    }
}
