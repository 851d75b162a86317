import NIOCore
import Testing

@testable import Headway

/// Endpoints for balancer tests; their in-flight counts and latency are set by hand (no clock, no sockets).
private func makeEndpoints(_ count: Int) throws -> [Endpoint] {
    try (0..<count).map { index in
        Endpoint(
            address: try SocketAddress(ipAddress: "127.0.0.\(index + 2)", port: 8080),
            label: "127.0.0.\(index + 2):8080",
            health: .healthy,
            metrics: ProxyMetrics().endpointMetrics(upstream: "test", endpoint: "127.0.0.\(index + 2):8080")
        )
    }
}

private func setInFlight(_ endpoint: Endpoint, _ count: Int) {
    while endpoint.inFlightRequests < count { endpoint.requestStarted() }
    while endpoint.inFlightRequests > count { endpoint.requestEnded() }
}

private func histogram(_ balancer: any LoadBalancer, count: Int, picks: Int, excluding: Int? = nil) -> [Int] {
    var hits = Array(repeating: 0, count: count)
    for _ in 0..<picks {
        hits[balancer.pick(excluding: excluding)!] += 1
    }
    return hits
}

/// Pearson's chi-square statistic of `observed` against `expected` shares.
private func chiSquare(_ observed: [Int], expected shares: [Double]) -> Double {
    let total = Double(observed.reduce(0, +))
    return zip(observed, shares).map { observed, share in
        let expected = total * share
        return (Double(observed) - expected) * (Double(observed) - expected) / expected
    }.reduce(0, +)
}

struct RoundRobinBalancerTests {
    @Test(arguments: [1, 2, 3, 7])
    func spreadsExactly(count: Int) throws {
        let balancer = RoundRobinBalancer()
        balancer.endpointsChanged(try makeEndpoints(count), weights: Array(repeating: 1, count: count))
        #expect(histogram(balancer, count: count, picks: count * 100) == Array(repeating: 100, count: count))
    }

    @Test func weightedSpreadIsExactOverACycleAndInterleaved() throws {
        let balancer = RoundRobinBalancer()
        balancer.endpointsChanged(try makeEndpoints(3), weights: [1, 2, 5])
        // Every cycle of 8 picks holds each endpoint its weight's worth of times, give or take the phase.
        var picks: [Int] = []
        for _ in 0..<800 { picks.append(balancer.pick()!) }
        let hits = (0..<3).map { index in picks.filter { $0 == index }.count }
        #expect(abs(hits[0] - 100) <= 1 && abs(hits[1] - 200) <= 1 && abs(hits[2] - 500) <= 1, "\(hits)")
        // Smooth: the heaviest endpoint never takes more than its share of any 8 picks in a row, plus one.
        for start in stride(from: 0, to: 792, by: 1) {
            #expect(picks[start..<(start + 8)].filter { $0 == 2 }.count <= 6)
        }
    }

    @Test func noBurstAfterASetChange() throws {
        let balancer = RoundRobinBalancer()
        let endpoints = try makeEndpoints(4)
        for round in 0..<20 {
            // The light endpoint leaves and comes back: its return must not take a run of turns.
            let present = round.isMultiple(of: 2) ? endpoints : Array(endpoints.prefix(3))
            balancer.endpointsChanged(present, weights: [3, 3, 3, 1].prefix(present.count).map { $0 })
            let first = histogram(balancer, count: present.count, picks: 10)
            #expect(first.max()! <= 4, "a burst to one endpoint after a set change: \(first)")
        }
    }

    @Test func aRepeatedSetKeepsTheRotation() throws {
        // Discovery and health checks hand the balancer the same set again and again; the shares stay exact.
        let balancer = RoundRobinBalancer()
        let endpoints = try makeEndpoints(3)
        var hits = [0, 0, 0]
        for pick in 0..<300 {
            if pick.isMultiple(of: 7) { balancer.endpointsChanged(endpoints, weights: [1, 1, 1]) }
            hits[balancer.pick()!] += 1
        }
        #expect(hits == [100, 100, 100])
    }

    @Test func theEndpointsThatStayKeepTheirTurnsWhenOneLeaves() throws {
        let balancer = RoundRobinBalancer()
        let endpoints = try makeEndpoints(4)
        balancer.endpointsChanged(endpoints, weights: [1, 1, 1, 1])
        let before = (0..<3).map { _ in endpoints[balancer.pick()!] }
        let leaving = before.last!
        let staying = endpoints.filter { $0 !== leaving }
        balancer.endpointsChanged(staying, weights: [1, 1, 1])
        let after = (0..<3).map { _ in staying[balancer.pick()!] }
        // The rotation goes on where it was, without the one that left: the pod that had not had its turn yet
        // comes first, then the two that had.
        let expected = endpoints.filter { candidate in !before.contains { $0 === candidate } } + before.dropLast()
        #expect(after.map(\.label) == expected.map(\.label))
    }

    @Test func weightedTurnsFollowTheEndpointsThroughAReorderedSet() throws {
        let balancer = RoundRobinBalancer()
        let endpoints = try makeEndpoints(3)
        let weights = [1, 2, 5]
        var hits: [String: Int] = [:]
        for cycle in 0..<100 {
            // The same set and weights in another order each cycle: turns belong to endpoints, not positions.
            let order = cycle.isMultiple(of: 2) ? [0, 1, 2] : [2, 0, 1]
            balancer.endpointsChanged(order.map { endpoints[$0] }, weights: order.map { weights[$0] })
            for _ in 0..<8 { hits[endpoints[order[balancer.pick()!]].label, default: 0] += 1 }
        }
        let shares = endpoints.map { hits[$0.label] ?? 0 }
        #expect(abs(shares[0] - 100) <= 1 && abs(shares[1] - 200) <= 1 && abs(shares[2] - 500) <= 1, "\(shares)")
    }

    @Test func aWeightThatGrowsTakesItsNewShareAtOnce() throws {
        // Slow start: the recovered pod was picked at a tenth of its weight, so its next turn lay a long period
        // ahead. At full weight it must take its full share from the next picks on, not after that period.
        let balancer = RoundRobinBalancer()
        let endpoints = try makeEndpoints(3)
        balancer.endpointsChanged(endpoints, weights: [100, 100, 10])
        while balancer.pick() != 2 {}
        balancer.endpointsChanged(endpoints, weights: [100, 100, 99])
        let hits = histogram(balancer, count: 3, picks: 90)
        #expect(hits.allSatisfy { abs($0 - 30) <= 1 }, "\(hits)")
    }

    @Test func aRetryDoesNotShiftTheRotation() throws {
        let balancer = RoundRobinBalancer()
        balancer.endpointsChanged(try makeEndpoints(2), weights: [1, 1])
        // Endpoint 0 fails every first attempt; the retries must not make it the first choice every time.
        var firstAttempts = [0, 0]
        for _ in 0..<10 {
            let first = balancer.pick()!
            firstAttempts[first] += 1
            if first == 0 { #expect(balancer.pick(excluding: 0) == 1) }
        }
        #expect(firstAttempts == [5, 5])
    }

    @Test func exclusionIsHonouredWhenAnotherEndpointExists() throws {
        for weights in [[1, 1, 1], [1, 2, 3]] {
            let balancer = RoundRobinBalancer()
            balancer.endpointsChanged(try makeEndpoints(3), weights: weights)
            for _ in 0..<30 { #expect(balancer.pick(excluding: 1) != 1) }
        }
        let single = RoundRobinBalancer()
        single.endpointsChanged(try makeEndpoints(1), weights: [1])
        #expect(single.pick(excluding: 0) == 0, "the only endpoint is still chosen")
    }

    @Test func emptySetPicksNothing() {
        for policy in LoadBalancingPolicy.allCases {
            let balancer = policy.makeBalancer()
            balancer.endpointsChanged([], weights: [])
            #expect(balancer.pick() == nil, "\(policy)")
        }
    }

    @Test func startingPointsDifferAcrossLoops() throws {
        // A fleet restarted together must not all start on the same pod.
        let endpoints = try makeEndpoints(10)
        let starts = Set(
            (0..<50).map { _ -> Int in
                let balancer = RoundRobinBalancer()
                balancer.endpointsChanged(endpoints, weights: Array(repeating: 1, count: 10))
                return balancer.pick()!
            }
        )
        #expect(starts.count > 3)
    }
}

struct RandomBalancerTests {
    // Critical values of chi-square at p = 0.001, so that an honest generator fails once in a thousand runs.
    @Test func uniformPassesChiSquare() throws {
        let balancer = RandomBalancer()
        balancer.endpointsChanged(try makeEndpoints(5), weights: Array(repeating: 1, count: 5))
        let hits = histogram(balancer, count: 5, picks: 50_000)
        #expect(chiSquare(hits, expected: Array(repeating: 0.2, count: 5)) < 18.47, "\(hits)")
    }

    @Test func weightedPassesChiSquare() throws {
        let balancer = RandomBalancer()
        balancer.endpointsChanged(try makeEndpoints(4), weights: [1, 2, 3, 4])
        let hits = histogram(balancer, count: 4, picks: 50_000)
        #expect(chiSquare(hits, expected: [0.1, 0.2, 0.3, 0.4]) < 16.27, "\(hits)")
    }

    @Test func weightedExclusionDrawsOverTheOthers() throws {
        let balancer = RandomBalancer()
        balancer.endpointsChanged(try makeEndpoints(4), weights: [1, 2, 3, 4])
        let hits = histogram(balancer, count: 4, picks: 40_000, excluding: 1)
        #expect(hits[1] == 0)
        #expect(chiSquare([hits[0], hits[2], hits[3]], expected: [1.0 / 8, 3.0 / 8, 4.0 / 8]) < 13.82, "\(hits)")
    }
}

struct LeastConnectionsBalancerTests {
    @Test func neverPicksABusierEndpointWhenALessBusyOneExists() throws {
        let endpoints = try makeEndpoints(6)
        let balancer = LeastConnectionsBalancer()
        balancer.endpointsChanged(endpoints, weights: Array(repeating: 1, count: 6))
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<500 {
            let loads = (0..<6).map { _ in Int.random(in: 0..<5, using: &generator) }
            for (endpoint, load) in zip(endpoints, loads) { setInFlight(endpoint, load) }
            let chosen = try #require(balancer.pick())
            #expect(loads[chosen] == loads.min(), "picked load \(loads[chosen]) of \(loads)")
        }
    }

    @Test func tiesAreBrokenAtRandomNotByPosition() throws {
        let endpoints = try makeEndpoints(3)
        let balancer = LeastConnectionsBalancer()
        balancer.endpointsChanged(endpoints, weights: [1, 1, 1])
        setInFlight(endpoints[1], 2)
        let hits = histogram(balancer, count: 3, picks: 2000)
        #expect(hits[1] == 0)
        #expect(hits[0] > 850 && hits[2] > 850, "\(hits)")
    }

    @Test func countsAreSharedAcrossLoops() throws {
        // Two loops, two balancers, one set of endpoints: load started through one is seen by the other.
        let endpoints = try makeEndpoints(2)
        let loopA = LeastConnectionsBalancer()
        let loopB = LeastConnectionsBalancer()
        loopA.endpointsChanged(endpoints, weights: [1, 1])
        loopB.endpointsChanged(endpoints, weights: [1, 1])
        setInFlight(endpoints[0], 3)
        #expect(loopB.pick() == 1)
        #expect(loopA.pick() == 1)
    }

    @Test func weightsScaleTheLoad() throws {
        let endpoints = try makeEndpoints(2)
        let balancer = LeastConnectionsBalancer()
        balancer.endpointsChanged(endpoints, weights: [1, 4])
        setInFlight(endpoints[0], 1)
        setInFlight(endpoints[1], 3)
        // (1+1)/1 = 2 against (3+1)/4 = 1: the heavier endpoint takes more.
        #expect(balancer.pick() == 1)
    }
}

struct PowerOfTwoChoicesBalancerTests {
    @Test func theBusiestEndpointIsNeverChosen() throws {
        let endpoints = try makeEndpoints(4)
        let balancer = PowerOfTwoChoicesBalancer()
        balancer.endpointsChanged(endpoints, weights: [1, 1, 1, 1])
        for (endpoint, load) in zip(endpoints, [1, 2, 1, 9]) { setInFlight(endpoint, load) }
        let hits = histogram(balancer, count: 4, picks: 3000)
        #expect(hits[3] == 0, "\(hits)")
        #expect(hits[0] > 0 && hits[1] > 0 && hits[2] > 0)
    }

    @Test func exclusionIsHonoured() throws {
        let balancer = PowerOfTwoChoicesBalancer()
        balancer.endpointsChanged(try makeEndpoints(3), weights: [1, 1, 1])
        #expect(histogram(balancer, count: 3, picks: 300, excluding: 0)[0] == 0)
    }
}

struct PeakEWMABalancerTests {
    private let now = NIODeadline.uptimeNanoseconds(1_000_000_000_000)

    /// A balancer over `endpoints` that has seen one response of each latency given (nil: none).
    private func balancer(_ endpoints: [Endpoint], latencies: [TimeAmount?]) -> PeakEWMABalancer {
        let balancer = PeakEWMABalancer(decay: .seconds(10))
        balancer.endpointsChanged(endpoints, weights: endpoints.map { _ in 1 })
        for (endpoint, latency) in zip(endpoints, latencies) {
            if let latency { balancer.responseHeadArrived(from: endpoint, latency: latency, now: self.now) }
        }
        return balancer
    }

    @Test func aSlowEndpointIsAvoided() throws {
        let endpoints = try makeEndpoints(3)
        let balancer = self.balancer(endpoints, latencies: [.milliseconds(5), .milliseconds(5), .milliseconds(50)])
        let hits = (0..<1000).map { _ in balancer.pick(PickRequest(excluding: nil, hashKey: nil, now: self.now))! }
        #expect(!hits.contains(2))
        // Load moves the choice: the fast ones at 10 in flight cost 5 ms x 11 > 50 ms x 1.
        setInFlight(endpoints[0], 10)
        setInFlight(endpoints[1], 10)
        let loaded = (0..<1000).map { _ in balancer.pick(PickRequest(excluding: nil, hashKey: nil, now: self.now))! }
        #expect(loaded.filter { $0 == 2 }.count > 600)
    }

    @Test func anUnmeasuredEndpointIsComparedByLoadAlone() throws {
        let endpoints = try makeEndpoints(2)
        let balancer = self.balancer(endpoints, latencies: [.milliseconds(1), nil])
        setInFlight(endpoints[1], 2)
        #expect(balancer.pick(PickRequest(excluding: nil, hashKey: nil, now: self.now)) == 0)
        setInFlight(endpoints[1], 0)
        setInFlight(endpoints[0], 2)
        #expect(balancer.pick(PickRequest(excluding: nil, hashKey: nil, now: self.now)) == 1)
    }

    @Test func estimatesSurviveASetChangeByEndpointAndNewcomersStartUnmeasured() throws {
        let endpoints = try makeEndpoints(3)
        let balancer = self.balancer(Array(endpoints.prefix(2)), latencies: [.milliseconds(5), .milliseconds(50)])
        balancer.endpointsChanged([endpoints[2], endpoints[1]], weights: [1, 1])
        #expect(balancer.latencyEstimate(ofEndpointAt: 0, at: self.now) == 0, "the newcomer is unmeasured")
        #expect(
            balancer.latencyEstimate(ofEndpointAt: 1, at: self.now) == 50_000_000,
            "the kept one keeps its estimate"
        )
        balancer.responseHeadArrived(from: endpoints[0], latency: .seconds(1), now: self.now)
        #expect(
            balancer.latencyEstimate(ofEndpointAt: 0, at: self.now) == 0,
            "a response from a removed endpoint is dropped"
        )
    }

    @Test func thePeakIsTakenAtOnceAndDecaysOverTime() {
        var estimate = PeakEWMA()
        let decay = TimeAmount.seconds(10)
        estimate.record(.milliseconds(5), now: self.now, decay: decay)
        estimate.record(.milliseconds(80), now: self.now + .milliseconds(1), decay: decay)
        #expect(
            estimate.estimate(at: self.now + .milliseconds(1), decay: decay) == 80_000_000,
            "a slow response raises the estimate at once"
        )
        estimate.record(.milliseconds(5), now: self.now + .milliseconds(101), decay: decay)
        #expect(
            estimate.estimate(at: self.now + .milliseconds(101), decay: decay) > 79_000_000,
            "one fast response shortly after barely moves it"
        )
        estimate.record(.milliseconds(5), now: self.now + .seconds(60), decay: decay)
        #expect(
            estimate.estimate(at: self.now + .seconds(60), decay: decay) < 6_000_000,
            "after many decay periods it is back near 5 ms"
        )
        #expect(
            estimate.estimate(at: self.now + .seconds(120), decay: decay) < 100_000,
            "with no response it decays towards zero"
        )
    }
}

struct HashBalancerTests {
    private func owners(_ balancer: HashBalancer, endpoints: [Endpoint], keys: Range<Int>) -> [String] {
        keys.map { key in
            endpoints[
                balancer.pick(PickRequest(excluding: nil, hashKey: StableHash.fnv1a("user-\(key)"), now: .now()))!
            ].label
        }
    }

    @Test func theSameKeyReachesTheSameEndpointInEverySidecar() throws {
        let endpoints = try makeEndpoints(5)
        let sidecarA = HashBalancer()
        let sidecarB = HashBalancer()
        sidecarA.endpointsChanged(endpoints, weights: [])
        // Another sidecar may list the same pods in another order.
        sidecarB.endpointsChanged(endpoints.reversed(), weights: [])
        #expect(
            self.owners(sidecarA, endpoints: endpoints, keys: 0..<1000)
                == self.owners(sidecarB, endpoints: endpoints.reversed(), keys: 0..<1000)
        )
    }

    @Test func keysSpreadEvenly() throws {
        let endpoints = try makeEndpoints(5)
        let balancer = HashBalancer()
        balancer.endpointsChanged(endpoints, weights: [])
        let owners = self.owners(balancer, endpoints: endpoints, keys: 0..<20_000)
        let counts = endpoints.map { endpoint in owners.filter { $0 == endpoint.label }.count }
        #expect(chiSquare(counts, expected: Array(repeating: 0.2, count: 5)) < 18.47, "\(counts)")
    }

    @Test func removingOneOfNMovesAboutOneNthOfTheKeys() throws {
        let endpoints = try makeEndpoints(5)
        let balancer = HashBalancer()
        balancer.endpointsChanged(endpoints, weights: [])
        let before = self.owners(balancer, endpoints: endpoints, keys: 0..<20_000)
        let survivors = endpoints.filter { $0 !== endpoints[2] }
        balancer.endpointsChanged(survivors, weights: [])
        let after = self.owners(balancer, endpoints: survivors, keys: 0..<20_000)
        let moved = zip(before, after).filter { $0 != $1 }.count
        let movedFromSurvivors = zip(before, after).filter { $0 != endpoints[2].label && $0 != $1 }.count
        #expect(Double(moved) / 20_000 < 0.25, "\(moved) of 20000 keys moved")
        #expect(Double(movedFromSurvivors) / 20_000 < 0.03, "\(movedFromSurvivors) keys of surviving pods moved")
    }

    @Test func aRetryGoesElsewhereAndAKeylessRequestAnywhere() throws {
        let endpoints = try makeEndpoints(3)
        let balancer = HashBalancer()
        balancer.endpointsChanged(endpoints, weights: [])
        let key = StableHash.fnv1a("user-7")
        let owner = balancer.pick(PickRequest(excluding: nil, hashKey: key, now: .now()))!
        let fallback = balancer.pick(PickRequest(excluding: owner, hashKey: key, now: .now()))!
        #expect(fallback != owner)
        #expect(
            balancer.pick(PickRequest(excluding: owner, hashKey: key, now: .now())) == fallback,
            "the fallback is stable too"
        )
        #expect(histogram(balancer, count: 3, picks: 300).allSatisfy { $0 > 50 }, "keyless requests spread at random")
    }
}

struct SlowStartTests {
    @Test func theShareRampsLinearlyFromATenth() {
        #expect(LoopCluster.slowStartWeight(100, elapsed: .zero, window: .seconds(30)) == 10)
        #expect(LoopCluster.slowStartWeight(100, elapsed: .seconds(15), window: .seconds(30)) == 50)
        #expect(LoopCluster.slowStartWeight(100, elapsed: .seconds(27), window: .seconds(30)) == 90)
        #expect(LoopCluster.slowStartWeight(100, elapsed: .seconds(30), window: .seconds(30)) == 100)
    }
}
