import NIOCore

/// Caps retries at a share of the requests of the last ten seconds, plus a small floor per second, so that a
/// sick fleet is not hit by a retry storm (linkerd's retry budget; Envoy's `retry_budget`).
///
/// Kept per event loop, with no lock: each loop counts its own requests in one-second buckets. Counting a
/// request is a division and an increment; summing the window happens only when a retry is asked for.
struct RetryBudget {
    private static let bucketCount = 10
    private let percent: Int
    private let minPerSecond: Double
    private var requests = [Int](repeating: 0, count: Self.bucketCount)
    private var retries = [Int](repeating: 0, count: Self.bucketCount)
    private var currentSecond: UInt64 = 0

    init(percent: Int, minPerSecond: Double) {
        self.percent = percent
        self.minPerSecond = minPerSecond
    }

    mutating func requestStarted(at now: NIODeadline) {
        let bucket = self.advance(to: now)
        self.requests[bucket] += 1
    }

    /// Takes one retry from the budget; `false` when the window's retries already reached the cap.
    mutating func spendRetry(at now: NIODeadline) -> Bool {
        let bucket = self.advance(to: now)
        let requests = self.requests.reduce(0, +)
        let allowed = Double(requests * self.percent) / 100 + self.minPerSecond * Double(Self.bucketCount)
        guard Double(self.retries.reduce(0, +)) < allowed.rounded(.down) else { return false }
        self.retries[bucket] += 1
        return true
    }

    /// Clears the buckets of the seconds that went by; returns the current second's bucket.
    private mutating func advance(to now: NIODeadline) -> Int {
        let second = now.uptimeNanoseconds / 1_000_000_000
        if second != self.currentSecond {
            let elapsed = second > self.currentSecond ? second - self.currentSecond : UInt64(Self.bucketCount)
            for step in 1...min(elapsed, UInt64(Self.bucketCount)) {
                let bucket = Int((self.currentSecond &+ step) % UInt64(Self.bucketCount))
                self.requests[bucket] = 0
                self.retries[bucket] = 0
            }
            self.currentSecond = second
        }
        return Int(second % UInt64(Self.bucketCount))
    }
}
