import NIOCore
import Testing

@testable import Headway

/// The live page's arithmetic: histogram quantiles and the last minute's rates, without a clock.
struct LiveStatsTests {
    @Test func quantilesAreTheUpperBoundOfTheirBucket() {
        var histogram = LatencyHistogram()
        #expect(histogram.quantile(0.5) == nil)
        for _ in 0..<98 { histogram.record(.microseconds(90)) }
        histogram.record(.milliseconds(10))
        histogram.record(.seconds(100))
        #expect(histogram.total == 100)
        #expect(histogram.quantile(0.5) == .microseconds(100), "the first bucket ends at 100 µs")
        let p99 = histogram.quantile(0.99)!
        #expect(p99 >= .milliseconds(10) && p99 < .milliseconds(15))
        #expect(histogram.quantile(1) == .nanoseconds(LatencyHistogram.upperBounds.last!), "beyond the last bound")
    }

    @Test func differencesKeepOnlyWhatCameAfter() {
        var earlier = LatencyHistogram()
        earlier.record(.seconds(1))
        var later = earlier
        later.record(.microseconds(50))
        later.record(.microseconds(60))
        let recent = later - earlier
        #expect(recent.total == 2)
        #expect(recent.quantile(0.99) == .microseconds(100))
        #expect((earlier + recent) == later)
    }

    @Test func ratesSparklineAndErrorsComeFromTheSamples() {
        let start = NIODeadline.uptimeNanoseconds(1_000_000_000_000)
        var latency = LatencyHistogram()
        var samples: [LiveStats.Sample] = []
        for second in 0...3 {
            if second > 0 { latency.record(.milliseconds(2)) }
            samples.append(
                .init(
                    time: start + .seconds(Int64(second)),
                    endpoints: ["web/a": .init(requests: second * 10, failures: second, latency: latency)]
                )
            )
        }
        let figures = LiveStats.figures(of: "web/a", now: samples.last!.endpoints["web/a"]!, in: samples)
        #expect(figures.sparkline == [10, 10, 10])
        #expect(figures.requestsPerSecond == 10)
        #expect(figures.errorRate == 0.1)
        let p50 = figures.p50!
        #expect(p50 >= .milliseconds(2) && p50 < .milliseconds(3))
    }
}
