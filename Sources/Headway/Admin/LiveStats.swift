import NIOCore
import Synchronization

/// The live page's figures over the last minute: once a second (``sample(_:)``) each endpoint's request and
/// failure counters and its response times summed over the event loops; rates, sparklines and percentiles
/// are differences between samples.
final class LiveStats: Sendable {
    struct EndpointSample: Sendable {
        var requests: Int
        var failures: Int
        var latency: LatencyHistogram
    }

    struct Sample: Sendable {
        var time: NIODeadline
        /// By `upstream/endpoint`.
        var endpoints: [String: EndpointSample]
    }

    /// What the page shows of one endpoint.
    struct Figures: Equatable, Sendable {
        var requestsPerSecond: Double
        /// Failures over requests in the last minute; `nil` without requests.
        var errorRate: Double?
        var p50: TimeAmount?
        var p99: TimeAmount?
        /// Requests per second, one value per second, oldest first.
        var sparkline: [Double]
    }

    static let window = 60
    private let samples = Mutex<[Sample]>([])

    static func key(upstream: String, endpoint: String) -> String { "\(upstream)/\(endpoint)" }

    /// Takes a sample of every endpoint of `clusters`.
    func sample(_ clusters: [UpstreamCluster]) async {
        var endpoints: [String: EndpointSample] = [:]
        for cluster in clusters {
            var latencies: [ObjectIdentifier: LatencyHistogram] = [:]
            if let eventLoop = cluster.loops.first?.eventLoop {
                for figures in (try? await cluster.responseTotals(on: eventLoop).get())?.endpoints ?? [] {
                    latencies[ObjectIdentifier(figures.endpoint)] = figures.latency
                }
            }
            for endpoint in cluster.endpoints {
                let status = endpoint.countersForLivePage
                endpoints[Self.key(upstream: cluster.name, endpoint: endpoint.label)] = EndpointSample(
                    requests: status.requests,
                    failures: status.failures,
                    latency: latencies[ObjectIdentifier(endpoint)] ?? LatencyHistogram()
                )
            }
        }
        self.record(Sample(time: .now(), endpoints: endpoints))
    }

    func record(_ sample: Sample) {
        self.samples.withLock { samples in
            samples.append(sample)
            if samples.count > Self.window + 1 { samples.removeFirst(samples.count - Self.window - 1) }
        }
    }

    /// The figures of every endpoint sampled, by key.
    func figures() -> [String: Figures] {
        let samples = self.samples.withLock { $0 }
        guard let last = samples.last else { return [:] }
        var figures: [String: Figures] = [:]
        for (key, now) in last.endpoints {
            figures[key] = Self.figures(of: key, now: now, in: samples)
        }
        return figures
    }

    static func figures(of key: String, now: EndpointSample, in samples: [Sample]) -> Figures {
        var sparkline: [Double] = []
        for (earlier, later) in zip(samples, samples.dropFirst()) {
            guard let before = earlier.endpoints[key], let after = later.endpoints[key] else {
                sparkline.append(0)
                continue
            }
            let seconds = Double((later.time - earlier.time).nanoseconds) / 1e9
            sparkline.append(seconds > 0 ? Double(max(after.requests - before.requests, 0)) / seconds : 0)
        }
        // The oldest sample that has the endpoint starts the minute.
        let first = samples.first { $0.endpoints[key] != nil }
        let start = first?.endpoints[key] ?? now
        let requests = now.requests - start.requests
        let failures = now.failures - start.failures
        let recent = now.latency - start.latency
        return Figures(
            requestsPerSecond: sparkline.last ?? 0,
            errorRate: requests > 0 ? Double(failures) / Double(requests) : nil,
            p50: recent.quantile(0.5),
            p99: recent.quantile(0.99),
            sparkline: sparkline
        )
    }
}
