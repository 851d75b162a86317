import NIOCore

/// Active health checking of every endpoint of an upstream (`health_check:`).
package struct HealthCheckSettings: Sendable, Equatable {
    package enum Kind: String, Sendable, CaseIterable {
        /// `GET path`; the check passes when the status is in `expectedStatuses`.
        case http
        /// A completed TCP connect is the check.
        case tcp
        /// `grpc.health.v1.Health/Check` for `service` over h2c; the check passes when the pod answers SERVING.
        case grpc
    }

    package var kind: Kind = .http
    package var path: String = "/healthz"
    /// The service a gRPC check asks about; "" asks about the server as a whole.
    package var service: String = ""
    /// `Host` of the check request; the endpoint's `IP:PORT` when `nil`.
    package var host: String?
    package var interval: TimeAmount = .seconds(2)
    package var timeout: TimeAmount = .seconds(1)
    /// Passing checks in a row that bring an unhealthy (or new) endpoint into rotation.
    package var healthyThreshold = 2
    /// Failing checks in a row that take a healthy endpoint out of rotation.
    package var unhealthyThreshold = 3
    package var expectedStatuses: [ClosedRange<Int>] = [200...399]
    /// Each interval is stretched or shrunk by up to this share, so checks of many sidecars spread out.
    package var jitterPercent = 10

    package init() {}

    func isExpected(status: Int) -> Bool {
        self.expectedStatuses.contains { $0.contains(status) }
    }

    var summary: String {
        switch self.kind {
        case .tcp:
            "tcp interval=\(DurationText.format(self.interval)) timeout=\(DurationText.format(self.timeout))"
                + " healthy_threshold=\(self.healthyThreshold) unhealthy_threshold=\(self.unhealthyThreshold)"
        case .grpc:
            "grpc service=\(self.service.isEmpty ? "\"\"" : self.service) interval=\(DurationText.format(self.interval))"
                + " timeout=\(DurationText.format(self.timeout))"
                + " healthy_threshold=\(self.healthyThreshold) unhealthy_threshold=\(self.unhealthyThreshold)"
        case .http:
            "http path=\(self.path) interval=\(DurationText.format(self.interval)) timeout=\(DurationText.format(self.timeout))"
                + " healthy_threshold=\(self.healthyThreshold) unhealthy_threshold=\(self.unhealthyThreshold)"
                + " expected_statuses=\(self.expectedStatuses.map { "\($0.lowerBound)-\($0.upperBound)" })"
        }
    }
}

/// Passive health checking (`outlier_detection:`): endpoints that fail real requests in a row are ejected
/// from rotation for a while. A threshold of 0 turns that detector off.
package struct OutlierDetectionSettings: Sendable, Equatable {
    /// Responses with a 5xx status in a row (Headway's own 502/504 for the endpoint count too).
    package var consecutive5xx = 5
    /// Connect failures, resets, early closes, timeouts and malformed responses in a row.
    package var consecutiveGatewayFailures = 5
    /// The first ejection lasts this long; each ejection that follows soon after lasts one more multiple.
    package var baseEjectionTime: TimeAmount = .seconds(30)
    package var maxEjectionTime: TimeAmount = .seconds(300)
    /// Never more than this share of the endpoints is ejected at once (but one endpoint always may be).
    package var maxEjectionPercent = 50

    package init() {}
}

/// When and how often a failed request is tried again on another endpoint.
package struct RetrySettings: Sendable, Equatable {
    /// Response statuses that are retried (`retry_on: [503, gateway-error]`); connect failures and
    /// connections closed before any response byte are always retried when that is safe.
    package var statuses: Set<Int> = []
    package var maxRetries = 2
    /// An idempotent request whose attempt has no response head this long is sent to another endpoint, while
    /// a retry is left (`per_try_timeout`); `nil`: each attempt waits `request_timeout`.
    package var perTryTimeout: TimeAmount?
    /// Retries may be at most this share of the requests of the last ten seconds (``RetryBudget``'s window)...
    package var budgetPercent = 20
    /// ...plus this many per second, so that a quiet upstream can still retry.
    package var budgetMinPerSecond = 10
    /// A request body up to this size is kept so that the request can be replayed; a larger one is not.
    package var bufferLimit = 64 * 1024

    package init() {}
}

/// What Headway tolerates from its clients (`client:`), against slow or hoarding clients (HTTP-EDGE-CASES C1–C7).
package struct ClientSettings: Sendable, Equatable {
    /// The whole request head must arrive within this (slowloris); then 408 and close.
    package var headerTimeout: TimeAmount = .seconds(10)
    /// Longest silence within a request body (slow POST); then 408 (or an abort once the answer started).
    package var bodyTimeout: TimeAmount = .seconds(30)
    /// A keep-alive connection with no request for this long is closed.
    package var idleTimeout: TimeAmount = .seconds(60)
    /// A client that takes no response byte for this long is disconnected (slow read).
    package var writeTimeout: TimeAmount = .seconds(30)
    /// Client connections per listener; past it a new connection gets 503 and is closed.
    package var maxConnections = 16_384
    /// HTTP/2 streams one client connection may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS).
    package var maxConcurrentStreams = 100
    /// Largest request body accepted; `nil`: unlimited. Past it: 413.
    package var maxRequestBody: Int?
    /// Request head limits: past them 414 (request line) or 431 (the head, or its field count).
    package var requestLimits = RequestLimits()

    package init() {}

    var summary: String {
        "header_timeout=\(DurationText.format(self.headerTimeout)) body_timeout=\(DurationText.format(self.bodyTimeout))"
            + " idle_timeout=\(DurationText.format(self.idleTimeout)) write_timeout=\(DurationText.format(self.writeTimeout))"
            + " max_connections=\(self.maxConnections) max_concurrent_streams=\(self.maxConcurrentStreams)"
            + " max_request_body=\(self.maxRequestBody.map { "\($0)" } ?? "unlimited")"
            + " max_request_line=\(self.requestLimits.requestLineBytes) max_request_head=\(self.requestLimits.headBytes)"
            + " max_header_fields=\(self.requestLimits.fieldCount)"
    }
}

/// How large a request head may be.
package struct RequestLimits: Sendable, Equatable {
    /// The request line; RFC 9112 §3 recommends supporting at least 8000 octets.
    package var requestLineBytes = 8 * 1024
    /// The whole head, request line included.
    package var headBytes = 64 * 1024
    package var fieldCount = 100

    package init() {}
}
