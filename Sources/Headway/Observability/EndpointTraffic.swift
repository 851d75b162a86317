import NIOCore

/// One endpoint's responses as one event loop saw them: counts by status class and a histogram of their
/// durations, in the buckets `/metrics` exports.
///
/// These two figures change on every response, so each loop keeps its own as a value, written by no other
/// core: recording one is arithmetic, with no atomic, no lock and no cache line shared between loops. The
/// admin server adds up the loops' values when it is scraped (``TrafficExposition``).
struct EndpointTraffic: Equatable, Sendable {
    /// Upper bounds of the exported buckets, in nanoseconds; one more bucket takes everything above.
    static let bucketBounds: [Int64] = [
        500_000, 1_000_000, 2_000_000, 5_000_000, 10_000_000, 25_000_000, 50_000_000, 100_000_000, 250_000_000,
        500_000_000, 1_000_000_000, 2_500_000_000, 5_000_000_000, 10_000_000_000,
    ]

    private(set) var responses = StatusClassCounts()
    /// Responses in each bucket alone (not cumulative); the last is above every bound.
    private(set) var bucketCounts = [UInt64](repeating: 0, count: bucketBounds.count + 1)
    private(set) var durationSum = TimeAmount.zero

    var count: UInt64 { self.responses.total }

    mutating func record(status: UInt, duration: TimeAmount) {
        self.responses.record(status: status)
        var index = 0
        while index < Self.bucketBounds.count && duration.nanoseconds > Self.bucketBounds[index] {
            index += 1
        }
        self.bucketCounts[index] &+= 1
        self.durationSum = self.durationSum + duration
    }

    static func + (left: Self, right: Self) -> Self {
        var sum = left
        sum.responses = sum.responses + right.responses
        for index in sum.bucketCounts.indices { sum.bucketCounts[index] &+= right.bucketCounts[index] }
        sum.durationSum = sum.durationSum + right.durationSum
        return sum
    }
}

/// The families recorded on every response (`headway_responses_total`, `headway_upstream_responses_total` and
/// `headway_upstream_request_duration_seconds`) in Prometheus' text format, from the loops' sums.
enum TrafficExposition {
    struct Row: Equatable, Sendable {
        var upstream: String
        var endpoint: String
        var traffic: EndpointTraffic
    }

    /// What the clients of one upstream's listeners were answered, the pods' answers and Headway's own.
    struct ClientRow: Equatable, Sendable {
        var upstream: String
        var responses: StatusClassCounts
    }

    static func render(_ rows: [Row], clients: [ClientRow]) -> String {
        var text = ""
        let answered = MetricFamily.responses
        text += "# HELP \(answered.rawValue) \(answered.help)\n# TYPE \(answered.rawValue) counter\n"
        for row in clients {
            text += row.responses.exposition(answered.rawValue, labels: "upstream=\"\(Self.escaped(row.upstream))\"")
        }
        let responses = MetricFamily.upstreamResponses
        text += "# HELP \(responses.rawValue) \(responses.help)\n# TYPE \(responses.rawValue) counter\n"
        for row in rows {
            text += row.traffic.responses.exposition(responses.rawValue, labels: Self.labels(row))
        }
        let duration = MetricFamily.upstreamRequestDuration
        text += "# HELP \(duration.rawValue) \(duration.help)\n# TYPE \(duration.rawValue) histogram\n"
        for row in rows {
            let labels = Self.labels(row)
            var cumulative: UInt64 = 0
            for (index, count) in row.traffic.bucketCounts.enumerated() {
                cumulative += count
                let bound =
                    index < EndpointTraffic.bucketBounds.count
                    ? "\(Double(EndpointTraffic.bucketBounds[index]) / 1e9)" : "+Inf"
                text += "\(duration.rawValue)_bucket{\(labels),le=\"\(bound)\"} \(cumulative)\n"
            }
            text += "\(duration.rawValue)_sum{\(labels)} \(Double(row.traffic.durationSum.nanoseconds) / 1e9)\n"
            text += "\(duration.rawValue)_count{\(labels)} \(cumulative)\n"
        }
        return text
    }

    private static func labels(_ row: Row) -> String {
        "upstream=\"\(Self.escaped(row.upstream))\",endpoint=\"\(Self.escaped(row.endpoint))\""
    }

    /// A label value as the text format wants it: backslash, double quote and line feed escaped.
    static func escaped(_ value: String) -> String {
        guard value.contains(where: { $0 == "\\" || $0 == "\"" || $0 == "\n" }) else { return value }
        var escaped = ""
        for character in value {
            switch character {
            case "\\": escaped += "\\\\"
            case "\"": escaped += "\\\""
            case "\n": escaped += "\\n"
            default: escaped.append(character)
            }
        }
        return escaped
    }
}
