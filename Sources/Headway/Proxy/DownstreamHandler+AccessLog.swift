import NIOCore
import NIOHTTP1

extension DownstreamHandler {
    /// Counts the status a request ended with and writes its access log line, when the log is on: every request
    /// ends here once. `head` stands in for an exchange that was never started (a refused method); with neither,
    /// the bytes never made a request and method and target are `-`.
    func logAccess(
        _ exchange: Exchange?,
        head: RequestHead? = nil,
        status: UInt,
        bytesOut: Int,
        endpoint: String?,
        localReason: String?,
        grpcStatus: Int? = nil
    ) {
        self.cluster.clientAnswered(status: status)
        guard let accessLog = self.accessLog else { return }
        let head = head ?? exchange?.requestHead
        let fields = head?.refererAndUserAgent
        accessLog.record(
            AccessLogEntry(
                clientHost: self.clientIP ?? "-",
                clientPort: self.clientPort,
                method: head?.methodName ?? "-",
                target: head?.target ?? "-",
                versionMinor: head?.versionMinor ?? 1,
                status: status,
                grpcStatus: grpcStatus ?? exchange?.grpcStatus,
                bytesIn: exchange?.requestBodyBytes ?? 0,
                bytesOut: bytesOut,
                duration: exchange.map { NIODeadline.now() - $0.start } ?? .zero,
                upstreamFirstByte: exchange?.upstreamFirstByte,
                endpoint: endpoint,
                firstEndpointTried: exchange?.firstEndpointTried,
                laterEndpointsTried: exchange?.laterEndpointsTried ?? [],
                localReason: localReason,
                referer: fields?.referer,
                userAgent: fields?.userAgent
            )
        )
    }

    /// The access log line of a request Headway answered itself with `error`.
    func logAccess(_ exchange: Exchange?, head: RequestHead? = nil, answeredWith error: ProxyError) {
        self.logAccess(
            exchange,
            head: head,
            status: error.status.code,
            bytesOut: error.bodyLength,
            endpoint: nil,
            localReason: error.detail,
            grpcStatus: self.stream?.answersInGRPC == true ? error.grpcStatus : nil
        )
    }
}
