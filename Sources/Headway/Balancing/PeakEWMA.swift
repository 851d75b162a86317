import NIOCore

#if canImport(Glibc)
import Glibc
#endif

/// One endpoint's peak-EWMA latency estimate, as tower's and linkerd's balancers keep it: a slower response
/// raises it at once (the peak), a faster one pulls it down with weight `1 - e^(-elapsed / decay)`, and with no
/// response it decays towards zero, so that a pod that was slow once is tried again.
struct PeakEWMA: Sendable, Equatable {
    /// Nanoseconds; zero: never measured.
    private(set) var estimate: Double = 0
    private var stamp = NIODeadline.uptimeNanoseconds(0)

    /// The estimate as of `now`.
    func estimate(at now: NIODeadline, decay: TimeAmount) -> Double {
        guard self.estimate > 0 else { return 0 }
        return self.estimate * Self.keep(since: self.stamp, now: now, decay: decay)
    }

    /// Folds a response time into the estimate.
    mutating func record(_ duration: TimeAmount, now: NIODeadline, decay: TimeAmount) {
        let rtt = Double(max(duration.nanoseconds, 1))
        if rtt >= self.estimate {
            self.estimate = rtt
        } else {
            let keep = Self.keep(since: self.stamp, now: now, decay: decay)
            self.estimate = self.estimate * keep + rtt * (1 - keep)
        }
        self.stamp = now
    }

    private static func keep(since stamp: NIODeadline, now: NIODeadline, decay: TimeAmount) -> Double {
        let elapsed = Double(max(now.uptimeNanoseconds, stamp.uptimeNanoseconds) - stamp.uptimeNanoseconds)
        return exp(-elapsed / Double(max(decay.nanoseconds, 1)))
    }
}
