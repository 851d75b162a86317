/// Uniform random choice, or weighted by each endpoint's weight (a binary search over the running sums,
/// O(log n)).
final class RandomBalancer: LoadBalancer {
    private var count = 0
    private var weights = Weights()
    /// Running sums of the weights: endpoint `i` owns `[sums[i-1], sums[i])`.
    private var sums: [Int] = []
    private var random = PickRandom()

    func endpointsChanged(_ endpoints: [Endpoint], weights: [Int]) {
        self.count = endpoints.count
        self.weights = Weights(weights)
        self.sums = []
        guard !self.weights.areUniform else { return }
        var total = 0
        self.sums = self.weights.values.map { weight in
            total += weight
            return total
        }
    }

    func pick(_ request: PickRequest) -> Int? {
        guard self.count > 0 else { return nil }
        if self.weights.areUniform {
            return randomIndex(count: self.count, excluding: request.excluding, using: &self.random)
        }
        var total = self.sums.last!
        var skipped: Int?
        if let excluding = request.excluding, self.count > 1 {
            // Draw over the others: the excluded endpoint's range is cut out.
            total -= self.weights[excluding]
            skipped = excluding
        }
        var point = Int.random(in: 0..<total, using: &self.random)
        if let skipped, point >= self.sums[skipped] - self.weights[skipped] {
            point += self.weights[skipped]
        }
        // The first endpoint whose running sum exceeds the point.
        var low = 0
        var high = self.count - 1
        while low < high {
            let middle = (low + high) / 2
            if self.sums[middle] > point { high = middle } else { low = middle + 1 }
        }
        return low
    }
}
