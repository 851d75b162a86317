/// Smooth weighted round-robin: over every cycle each endpoint gets exactly its share of the requests,
/// interleaved rather than in bursts (earliest-deadline-first, as Envoy schedules weighted hosts).
///
/// Each endpoint's next turn is a deadline `k / weight`; a pick takes the earliest (ties by position) and
/// moves it on by `1 / weight`: O(log n) with a binary heap. With equal weights it is a plain rotation, O(1).
/// Every loop and every new set starts at a random point of the rotation, so that a fleet of sidecars
/// restarted together does not send its first requests to the same pod, and a set change causes no burst.
final class RoundRobinBalancer: LoadBalancer {
    private var count = 0
    private var weights = Weights()
    /// Equal weights: the next position of the rotation.
    private var next = 0
    /// Weighted: the endpoints by their next deadline.
    private var schedule = DeadlineHeap()

    func endpointsChanged(_ endpoints: [Endpoint], weights: [Int]) {
        self.count = endpoints.count
        self.weights = Weights(weights)
        self.next = self.count > 0 ? Int.random(in: 0..<self.count) : 0
        self.schedule = DeadlineHeap()
        guard !self.weights.areUniform else { return }
        for index in 0..<self.count {
            // A random phase within each endpoint's first period: no burst, no common starting pod.
            self.schedule.push(deadline: Double.random(in: 0..<1) / Double(self.weights[index]), index: index)
        }
    }

    func pick(_ request: PickRequest) -> Int? {
        guard self.count > 0 else { return nil }
        if self.weights.areUniform {
            let index = self.next % self.count
            guard let excluding = request.excluding else {
                self.next = index + 1
                return index
            }
            // A retry takes the next endpoint without moving the rotation: otherwise every retry would shift
            // it by one, and a failing endpoint would get the first attempt of every request.
            return index == excluding && self.count > 1 ? (index + 1) % self.count : index
        }
        var first = self.schedule.pop()
        if first.index == request.excluding, self.count > 1 {
            // Take the runner-up for the retry; the excluded endpoint keeps its turn.
            let second = self.schedule.pop()
            self.schedule.push(deadline: first.deadline, index: first.index)
            first = second
        }
        self.schedule.push(deadline: first.deadline + 1 / Double(self.weights[first.index]), index: first.index)
        return first.index
    }
}

/// A binary min-heap of (deadline, index), ties broken by the lower index so that a schedule is exact.
struct DeadlineHeap {
    private var entries: [(deadline: Double, index: Int)] = []

    var isEmpty: Bool { self.entries.isEmpty }

    mutating func push(deadline: Double, index: Int) {
        self.entries.append((deadline, index))
        var child = self.entries.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard Self.precedes(self.entries[child], self.entries[parent]) else { break }
            self.entries.swapAt(child, parent)
            child = parent
        }
    }

    /// Removes and returns the earliest entry; the heap must not be empty.
    mutating func pop() -> (deadline: Double, index: Int) {
        let top = self.entries[0]
        let last = self.entries.removeLast()
        if !self.entries.isEmpty {
            self.entries[0] = last
            var parent = 0
            while true {
                let left = 2 * parent + 1
                let right = left + 1
                var smallest = parent
                if left < self.entries.count, Self.precedes(self.entries[left], self.entries[smallest]) {
                    smallest = left
                }
                if right < self.entries.count, Self.precedes(self.entries[right], self.entries[smallest]) {
                    smallest = right
                }
                guard smallest != parent else { break }
                self.entries.swapAt(parent, smallest)
                parent = smallest
            }
        }
        return top
    }

    private static func precedes(_ a: (deadline: Double, index: Int), _ b: (deadline: Double, index: Int)) -> Bool {
        a.deadline < b.deadline || (a.deadline == b.deadline && a.index < b.index)
    }
}
