/// Smooth weighted round-robin: over every cycle each endpoint gets exactly its share of the requests,
/// interleaved rather than in bursts (earliest-deadline-first, as Envoy schedules weighted hosts).
///
/// Each endpoint's next turn is a deadline `k / weight`; a pick takes the earliest (ties by position) and
/// moves it on by `1 / weight`: O(log n) with a binary heap. With equal weights it is a plain rotation, O(1).
/// Every loop starts at a random point of the rotation, so that a fleet of sidecars restarted together does
/// not send its first requests to the same pod. A set change (a pod joins or leaves, turns healthy or not, or
/// ramps its slow-start weight) carries the rotation on: the endpoints that stay keep their turns, so neither
/// a change nor a repeat of the same set skews the shares.
final class RoundRobinBalancer: LoadBalancer {
    private var endpoints: [ObjectIdentifier] = []
    private var weights = Weights()
    /// Equal weights: the next position of the rotation.
    private var next = 0
    /// Weighted: the endpoints by their next deadline.
    private var schedule = DeadlineHeap()
    /// Weighted: the deadline of the last pick, the schedule's present.
    private var now = 0.0

    private var count: Int { self.endpoints.count }

    func endpointsChanged(_ endpoints: [Endpoint], weights: [Int]) {
        let identities = endpoints.map(ObjectIdentifier.init)
        let weights = Weights(weights)
        guard identities != self.endpoints || weights.values != self.weights.values else { return }
        let wasUniform = self.weights.areUniform
        let previous = self.endpoints
        let previousSchedule = self.schedule
        let previousWeights = self.weights
        self.endpoints = identities
        self.weights = weights
        self.schedule = DeadlineHeap()
        guard self.count > 0 else { return }
        var newIndex: [ObjectIdentifier: Int] = [:]
        for (index, identity) in identities.enumerated() { newIndex[identity] = index }

        if weights.areUniform {
            // Go on from the first endpoint, in the old rotation's order, that is still here.
            let survivor =
                wasUniform && !previous.isEmpty
                ? previous.indices.lazy.compactMap { newIndex[previous[(self.next + $0) % previous.count]] }.first
                : nil
            self.next = survivor ?? Int.random(in: 0..<self.count)
            return
        }
        var turns: [ObjectIdentifier: (deadline: Double, weight: Int)] = [:]
        if !wasUniform {
            for entry in previousSchedule.entries {
                turns[previous[entry.index]] = (entry.deadline, previousWeights[entry.index])
            }
        }
        for index in 0..<self.count {
            let deadline: Double
            if let turn = turns[identities[index]] {
                // What is left of the endpoint's period is rescaled to its new weight: a pod that ramps up in
                // slow start would otherwise wait out the long period of its last, light pick.
                let left = max(turn.deadline - self.now, 0)
                deadline = self.now + left * Double(turn.weight) / Double(weights[index])
            } else {
                // A newcomer gets a random phase within its first period: no burst, no common starting pod.
                deadline = self.now + Double.random(in: 0..<1) / Double(weights[index])
            }
            self.schedule.push(deadline: deadline, index: index)
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
        self.now = first.deadline
        self.schedule.push(deadline: first.deadline + 1 / Double(self.weights[first.index]), index: first.index)
        return first.index
    }
}

/// A binary min-heap of (deadline, index), ties broken by the lower index so that a schedule is exact.
struct DeadlineHeap {
    private(set) var entries: [(deadline: Double, index: Int)] = []

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
