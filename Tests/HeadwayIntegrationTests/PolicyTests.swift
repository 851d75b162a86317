import Foundation
import Headway
import HeadwayTestSupport
import Testing

extension IntegrationTests {
    /// Every policy through real sockets to the three nginx pods.
    @Suite struct Policies {
        @Test(arguments: LoadBalancingPolicy.allCases.filter { $0 != .hash })
        func everyPolicyReachesEveryPod(policy: LoadBalancingPolicy) async throws {
            let pods = try await NginxPods.start()
            defer { pods.stop() }
            let headway = try await InProcessHeadway.start {
                $0[list: "--endpoints"] = pods.endpoints
                $0["--policy"] = policy.rawValue
            }
            // Sequential requests keep every pod idle between them, so the load-aware policies spread too.
            let answers = try await curl(
                ["--dump-header", "-", "--output", "/dev/null"] + Array(repeating: headway.listenURL + "/", count: 60)
            )
            try await headway.stop()
            let counts = podCounts(inHeaders: answers.stdout)
            #expect(counts.values.reduce(0, +) == 60, "\(counts)")
            // ewma favours the pod that has answered fastest so far; the others still get tried.
            let least = policy == .peakEWMA ? 1 : 5
            #expect(counts.count == 3 && counts.values.allSatisfy { $0 >= least }, "\(policy): \(counts)")
            if policy == .roundRobin {
                #expect(counts.values.allSatisfy { $0 == 20 }, "round-robin is exact: \(counts)")
            }
        }

        @Test func hashKeepsAUserOnOnePodAndSpreadsUsers() async throws {
            let pods = try await NginxPods.start()
            defer { pods.stop() }
            let headway = try await InProcessHeadway.start {
                $0[list: "--endpoints"] = pods.endpoints
                $0["--policy"] = "hash"
                $0["--hash-key"] = "header:X-User"
            }
            var podOfUser: [String: Set<String>] = [:]
            for user in 0..<30 {
                let answers = try await curl(
                    ["--dump-header", "-", "--output", "/dev/null", "--header", "X-User: user-\(user)"]
                        + Array(repeating: headway.listenURL + "/", count: 4)
                )
                podOfUser["user-\(user)"] = Set(podCounts(inHeaders: answers.stdout).keys)
            }
            try await headway.stop()
            #expect(
                podOfUser.values.allSatisfy { $0.count == 1 },
                "a user's requests went to several pods: \(podOfUser)"
            )
            #expect(Set(podOfUser.values.flatMap { $0 }).count == 3, "30 users all hashed to fewer than 3 pods")
        }

        @Test func aRecoveredPodRampsUpInSlowStart() async throws {
            let pods = try await NginxPods.start()
            defer { pods.stop() }
            let cold = pods.pods[2]
            try cold.setHealthCheckFailing(true)
            let headway = try await InProcessHeadway.start {
                $0[list: "--endpoints"] = pods.endpoints
                $0["--health-path"] = "/healthz"
                $0["--health-interval"] = "100ms"
                $0["--health-timeout"] = "50ms"
                $0["--healthy-threshold"] = "1"
                $0["--slow-start"] = "4s"
            }
            try cold.setHealthCheckFailing(false)
            let back = try await waitFor(timeout: .seconds(2)) {
                try await EndpointsDocument.endpoint(cold.address, of: headway)?.health == "healthy"
            }
            try #require(back != nil)
            let early = try await curl(
                ["--dump-header", "-", "--output", "/dev/null"] + Array(repeating: headway.listenURL + "/", count: 90)
            )
            try await Task.sleep(for: .seconds(4))
            let late = try await curl(
                ["--dump-header", "-", "--output", "/dev/null"] + Array(repeating: headway.listenURL + "/", count: 90)
            )
            try await headway.stop()
            let earlyShare = podCounts(inHeaders: early.stdout)[cold.name, default: 0]
            let lateShare = podCounts(inHeaders: late.stdout)[cold.name, default: 0]
            // Just back: about a tenth to a fifth of a full share (30 of 90); after the window, a full share.
            #expect(earlyShare < 15, "the recovered pod took \(earlyShare) of 90 at once")
            #expect(abs(lateShare - 30) <= 2, "after slow start it took \(lateShare) of 90")
        }
    }
}
