import NIOCore
import Testing

@testable import Headway

/// The ejection rules, driven with explicit times: no clock, no channel, no sleep.
struct OutlierDetectorTests {
    private let start = NIODeadline.uptimeNanoseconds(1_000_000_000_000)
    private let pods = (2...5).map { try! SocketAddress(ipAddress: "127.0.0.\($0)", port: 8080) }

    private func detector(maxEjectionPercent: Int = 50) -> OutlierDetector {
        var settings = OutlierDetectionSettings()
        settings.baseEjectionTime = .seconds(30)
        settings.maxEjectionTime = .seconds(300)
        settings.maxEjectionPercent = maxEjectionPercent
        return OutlierDetector(settings: settings)
    }

    @Test func aReportEjectsForTheBaseTimeAndTheTimerEndsIt() {
        var detector = self.detector()
        let decision = detector.outlierReported(
            self.pods[0],
            .init(run: .consecutiveGatewayFailures, reason: "5 resets"),
            endpointCount: 4,
            now: self.start
        )
        #expect(decision == .eject(duration: .seconds(30), ejection: 1))
        #expect(detector.record(for: self.pods[0])?.ejectedUntil == self.start + .seconds(30))
        #expect(detector.record(for: self.pods[0])?.lastEjectionReason == "5 resets")
        #expect(
            detector.outlierReported(
                self.pods[0],
                .init(run: .consecutiveGatewayFailures, reason: "again"),
                endpointCount: 4,
                now: self.start
            ) == .none
        )
        #expect(detector.ejectionTimeEnded(self.pods[0], ejection: 1, now: self.start + .seconds(30)) == .uneject)
        #expect(detector.ejectedCount() == 0)
    }

    @Test func aRepeatOffenderStaysOutLongerUpToTheMaximum() {
        var detector = self.detector()
        var now = self.start
        var durations: [TimeAmount] = []
        for ejection in 1...12 {
            guard
                case .eject(let duration, _) = detector.outlierReported(
                    self.pods[0],
                    .init(run: .consecutiveGatewayFailures, reason: "5xx"),
                    endpointCount: 4,
                    now: now
                )
            else {
                Issue.record("ejection \(ejection) refused")
                return
            }
            durations.append(duration)
            now = now + duration
            _ = detector.ejectionTimeEnded(self.pods[0], ejection: ejection, now: now)
            now = now + .seconds(1)
        }
        #expect(durations.prefix(3) == [.seconds(30), .seconds(60), .seconds(90)])
        #expect(durations.last == .seconds(300), "capped at max_ejection_time")
    }

    @Test func aOneOffLongAfterTheLastEjectionStartsAgainAtTheBase() {
        var detector = self.detector()
        _ = detector.outlierReported(
            self.pods[0],
            .init(run: .consecutiveGatewayFailures, reason: "5xx"),
            endpointCount: 4,
            now: self.start
        )
        _ = detector.ejectionTimeEnded(self.pods[0], ejection: 1, now: self.start + .seconds(30))
        let later = self.start + .seconds(30 + 31)
        let decision = detector.outlierReported(
            self.pods[0],
            .init(run: .consecutiveGatewayFailures, reason: "5xx"),
            endpointCount: 4,
            now: later
        )
        #expect(decision == .eject(duration: .seconds(30), ejection: 2))
        #expect(detector.record(for: self.pods[0])?.ejectedUntil == later + .seconds(30))
    }

    @Test func maxEjectionPercentBoundsTheEjectedButOneAlwaysMay() {
        var detector = self.detector(maxEjectionPercent: 50)
        #expect(
            detector.outlierReported(
                self.pods[0],
                .init(run: .consecutiveGatewayFailures, reason: "x"),
                endpointCount: 4,
                now: self.start
            ) != .none
        )
        #expect(
            detector.outlierReported(
                self.pods[1],
                .init(run: .consecutiveGatewayFailures, reason: "x"),
                endpointCount: 4,
                now: self.start
            ) != .none
        )
        #expect(
            detector.outlierReported(
                self.pods[2],
                .init(run: .consecutiveGatewayFailures, reason: "x"),
                endpointCount: 4,
                now: self.start
            )
                == .refuseAtLimit(ejected: 2)
        )

        var strict = self.detector(maxEjectionPercent: 10)
        #expect(
            strict.outlierReported(
                self.pods[0],
                .init(run: .consecutiveGatewayFailures, reason: "x"),
                endpointCount: 2,
                now: self.start
            )
                != .refuseAtLimit(ejected: 0)
        )
        #expect(
            strict.outlierReported(
                self.pods[1],
                .init(run: .consecutiveGatewayFailures, reason: "x"),
                endpointCount: 2,
                now: self.start
            )
                == .refuseAtLimit(ejected: 1)
        )
    }

    @Test func passingActiveChecksEndTheEjectionAtTheHealthyThreshold() {
        var detector = self.detector()
        _ = detector.outlierReported(
            self.pods[0],
            .init(run: .consecutiveGatewayFailures, reason: "connect refused"),
            endpointCount: 4,
            now: self.start
        )
        // The pod is down: its checks fail. Then it restarts and they pass.
        #expect(
            detector.activeCheckFinished(
                self.pods[0],
                passed: false,
                healthyThreshold: 2,
                now: self.start + .seconds(1)
            ) == .none
        )
        #expect(
            detector.activeCheckFinished(self.pods[0], passed: true, healthyThreshold: 2, now: self.start + .seconds(2))
                == .none
        )
        #expect(
            detector.activeCheckFinished(
                self.pods[0],
                passed: false,
                healthyThreshold: 2,
                now: self.start + .seconds(3)
            ) == .none
        )
        #expect(
            detector.activeCheckFinished(self.pods[0], passed: true, healthyThreshold: 2, now: self.start + .seconds(4))
                == .none
        )
        #expect(
            detector.activeCheckFinished(self.pods[0], passed: true, healthyThreshold: 2, now: self.start + .seconds(5))
                == .uneject
        )
        #expect(detector.record(for: self.pods[0])?.isEjected == false)
        // The ejection's own timer, firing later, changes nothing.
        #expect(detector.ejectionTimeEnded(self.pods[0], ejection: 1, now: self.start + .seconds(30)) == .none)
    }

    @Test func checksBeforeTheEjectionDoNotCountTowardsItsEnd() {
        var detector = self.detector()
        #expect(detector.activeCheckFinished(self.pods[0], passed: true, healthyThreshold: 2, now: self.start) == .none)
        _ = detector.outlierReported(
            self.pods[0],
            .init(run: .consecutiveGatewayFailures, reason: "5xx"),
            endpointCount: 4,
            now: self.start + .seconds(1)
        )
        #expect(
            detector.activeCheckFinished(self.pods[0], passed: true, healthyThreshold: 2, now: self.start + .seconds(2))
                == .none
        )
        #expect(
            detector.activeCheckFinished(self.pods[0], passed: true, healthyThreshold: 2, now: self.start + .seconds(3))
                == .uneject
        )
    }

    /// The limit bounds the share already ejected, as Envoy's and gRPC's does: of three pods at 50%, one ejected
    /// (33%) leaves room for a second. Found by scripts/chaos (seed 33): a pod still serving a 5xx ejection
    /// after it recovered kept a pod answering 503 in rotation, and the retry budget ran out.
    @Test func threePodsAtHalfAllowTwoEjections() {
        var detector = self.detector(maxEjectionPercent: 50)
        let report = OutlierDetector.Report(run: .consecutive5xx, reason: "3 consecutive 5xx responses")
        #expect(
            detector.outlierReported(self.pods[0], report, endpointCount: 3, now: self.start)
                == .eject(duration: .seconds(30), ejection: 1)
        )
        #expect(
            detector.outlierReported(self.pods[1], report, endpointCount: 3, now: self.start)
                == .eject(duration: .seconds(30), ejection: 1)
        )
        #expect(
            detector.outlierReported(self.pods[2], report, endpointCount: 3, now: self.start)
                == .refuseAtLimit(ejected: 2)
        )
    }

    /// An ejected pod that its checks hold out anyway takes no capacity away: it does not count towards
    /// `max_ejection_percent`.
    @Test func anEjectedPodOutByItsChecksDoesNotCountTowardsTheLimit() {
        var detector = self.detector()
        let report = OutlierDetector.Report(run: .consecutive5xx, reason: "3 consecutive 5xx responses")
        _ = detector.outlierReported(self.pods[0], report, endpointCount: 4, now: self.start)
        _ = detector.outlierReported(self.pods[1], report, endpointCount: 4, now: self.start)
        #expect(
            detector.outlierReported(self.pods[2], report, endpointCount: 4, now: self.start)
                == .refuseAtLimit(ejected: 2)
        )
        #expect(
            detector.outlierReported(
                self.pods[2],
                report,
                endpointCount: 4,
                outOfRotationAnyway: [self.pods[0]],
                now: self.start
            ) == .eject(duration: .seconds(30), ejection: 1)
        )
    }

    /// A pod answering 503 to real requests while its `/healthz` passes stays out for its ejection time.
    @Test func passingActiveChecksDoNotEndAnEjectionFor5xx() {
        var detector = self.detector()
        let report = OutlierDetector.Report(run: .consecutive5xx, reason: "5 consecutive 5xx responses")
        #expect(
            detector.outlierReported(self.pods[0], report, endpointCount: 4, now: self.start)
                == .eject(duration: .seconds(30), ejection: 1)
        )
        for second in 1...5 {
            #expect(
                detector.activeCheckFinished(
                    self.pods[0],
                    passed: true,
                    healthyThreshold: 2,
                    now: self.start + .seconds(Int64(second))
                ) == .none
            )
        }
        #expect(detector.record(for: self.pods[0])?.isEjected == true)
        #expect(detector.ejectionTimeEnded(self.pods[0], ejection: 1, now: self.start + .seconds(30)) == .uneject)
    }

    @Test func aLateTimerOfAnEarlierEjectionDoesNotEndTheNextOne() {
        var detector = self.detector()
        _ = detector.outlierReported(
            self.pods[0],
            .init(run: .consecutiveGatewayFailures, reason: "5xx"),
            endpointCount: 4,
            now: self.start
        )
        _ = detector.activeCheckFinished(self.pods[0], passed: true, healthyThreshold: 1, now: self.start + .seconds(1))
        _ = detector.outlierReported(
            self.pods[0],
            .init(run: .consecutiveGatewayFailures, reason: "5xx"),
            endpointCount: 4,
            now: self.start + .seconds(2)
        )
        #expect(detector.ejectionTimeEnded(self.pods[0], ejection: 1, now: self.start + .seconds(30)) == .none)
        #expect(detector.record(for: self.pods[0])?.isEjected == true)
    }

    @Test func aForgottenEndpointStartsAfresh() {
        var detector = self.detector()
        _ = detector.outlierReported(
            self.pods[0],
            .init(run: .consecutiveGatewayFailures, reason: "5xx"),
            endpointCount: 4,
            now: self.start
        )
        detector.endpointRemoved(self.pods[0])
        #expect(detector.record(for: self.pods[0]) == nil)
        #expect(detector.ejectedCount() == 0)
    }
}
