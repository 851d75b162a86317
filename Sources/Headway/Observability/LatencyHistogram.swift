import NIOCore

/// Response times in log-spaced buckets (each 1.5 times the last, from 100 µs to about 50 s), as a value:
/// each event loop keeps one per endpoint without a lock, and the live page adds them up and subtracts an
/// older sample to get the last minute's p50 and p99.
struct LatencyHistogram: Equatable, Sendable {
    static let bucketCount = 34
    /// Upper bound of bucket `i` in nanoseconds; the last bucket takes everything above.
    static let upperBounds: [Int64] = (0..<bucketCount).map { Int64(100_000 * pow1_5($0)) }

    private(set) var counts = [UInt32](repeating: 0, count: bucketCount)

    private static func pow1_5(_ exponent: Int) -> Double {
        var value = 1.0
        for _ in 0..<exponent { value *= 1.5 }
        return value
    }

    var total: Int { self.counts.reduce(0) { $0 + Int($1) } }

    mutating func record(_ duration: TimeAmount) {
        let nanoseconds = duration.nanoseconds
        var index = 0
        while index < Self.bucketCount - 1 && nanoseconds > Self.upperBounds[index] {
            index += 1
        }
        self.counts[index] &+= 1
    }

    static func + (left: Self, right: Self) -> Self {
        var sum = left
        for index in 0..<bucketCount { sum.counts[index] &+= right.counts[index] }
        return sum
    }

    /// What was recorded since `earlier` (a sample of the same histogram).
    static func - (later: Self, earlier: Self) -> Self {
        var difference = later
        for index in 0..<bucketCount { difference.counts[index] &-= earlier.counts[index] }
        return difference
    }

    /// The upper bound of the bucket holding the `quantile` (0…1) of the recorded times; `nil` when empty.
    func quantile(_ quantile: Double) -> TimeAmount? {
        let total = self.total
        guard total > 0 else { return nil }
        let rank = max(Int((Double(total) * quantile).rounded(.up)), 1)
        var seen = 0
        for (index, count) in self.counts.enumerated() {
            seen += Int(count)
            if seen >= rank { return .nanoseconds(Self.upperBounds[index]) }
        }
        return .nanoseconds(Self.upperBounds[Self.bucketCount - 1])
    }
}
