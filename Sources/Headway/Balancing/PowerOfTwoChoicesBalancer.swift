/// Power of two random choices: two distinct endpoints at random, the one with fewer requests in flight
/// (per unit of weight) wins; O(1). Envoy's `LEAST_REQUEST` default.
final class PowerOfTwoChoicesBalancer: LoadAwareBalancer, LoadBalancer {

    func pick(_ request: PickRequest) -> Int? {
        twoChoices(count: self.endpoints.count, excluding: request.excluding, using: &self.random) { first, second in
            (
                Double(self.endpoints[first].inFlightRequests + 1) / Double(self.weights[first]),
                Double(self.endpoints[second].inFlightRequests + 1) / Double(self.weights[second])
            )
        }
    }
}

/// Two distinct random candidates (neither `excluding` when possible); the lower cost wins, a tie at random.
func twoChoices(
    count: Int,
    excluding: Int?,
    using random: inout PickRandom,
    costs: (Int, Int) -> (Double, Double)
) -> Int? {
    guard count > 0 else { return nil }
    let candidates = excluding != nil && count > 1 ? count - 1 : count
    guard candidates > 1 else { return randomIndex(count: count, excluding: excluding, using: &random) }
    var first = Int.random(in: 0..<candidates, using: &random)
    var second = Int.random(in: 0..<(candidates - 1), using: &random)
    if second >= first { second += 1 }
    if let excluding, count > 1 {
        if first >= excluding { first += 1 }
        if second >= excluding { second += 1 }
    }
    let (firstCost, secondCost) = costs(first, second)
    if firstCost == secondCost { return Bool.random(using: &random) ? first : second }
    return firstCost < secondCost ? first : second
}
