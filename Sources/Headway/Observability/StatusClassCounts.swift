/// Responses counted by status class, 1xx to 5xx, as a value that one event loop writes alone.
struct StatusClassCounts: Equatable, Sendable {
    /// Index 0 is 1xx … index 4 is 5xx; a status outside 100-599 counts in the nearest class.
    private(set) var byClass = [UInt64](repeating: 0, count: 5)

    var total: UInt64 { self.byClass.reduce(0, &+) }

    mutating func record(status: UInt) {
        self.byClass[Int(min(max(status / 100, 1), 5)) - 1] &+= 1
    }

    static func + (left: Self, right: Self) -> Self {
        var sum = left
        for index in sum.byClass.indices { sum.byClass[index] &+= right.byClass[index] }
        return sum
    }

    /// `NAME{LABELS,status_class="1xx"} N` … one line a class, in Prometheus' text format.
    func exposition(_ name: String, labels: String) -> String {
        var text = ""
        for (index, count) in self.byClass.enumerated() {
            text += "\(name){\(labels),status_class=\"\(index + 1)xx\"} \(count)\n"
        }
        return text
    }
}
