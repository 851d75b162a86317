/// Turns a stream of check results into health transitions, with the thresholds of `health_check`.
///
/// A value type with no clock and no I/O, so that every rule is unit-tested:
/// - an endpoint no check has judged yet (`unknown`) becomes healthy at its first pass, as in Envoy: a pod
///   that is ready at once must not wait `healthy_threshold` intervals for its first request;
/// - `unhealthy_threshold` failures in a row make it unhealthy (an unknown one too);
/// - once it has failed, `healthy_threshold` passes in a row bring it back.
struct HealthCheckCounter: Sendable, Equatable {
    private(set) var health: Endpoint.Health = .unknown
    private(set) var consecutivePasses = 0
    private(set) var consecutiveFailures = 0

    /// Records a check result; returns the new health when it changed.
    mutating func record(passed: Bool, healthyThreshold: Int, unhealthyThreshold: Int) -> Endpoint.Health? {
        if passed {
            self.consecutivePasses += 1
            self.consecutiveFailures = 0
            let needed = self.health == .unknown ? 1 : healthyThreshold
            guard self.health != .healthy, self.consecutivePasses >= needed else { return nil }
            self.health = .healthy
            return .healthy
        } else {
            self.consecutiveFailures += 1
            self.consecutivePasses = 0
            guard self.health != .unhealthy, self.consecutiveFailures >= unhealthyThreshold else { return nil }
            self.health = .unhealthy
            return .unhealthy
        }
    }
}
