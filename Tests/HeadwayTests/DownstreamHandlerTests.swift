import Logging
import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing

@testable import Headway

/// The client side of the proxy on an `EmbeddedChannel`: exact bytes for the answers Headway gives itself.
struct DownstreamHandlerTests {
    private func makeChannel() throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        try ProxyServer.configureClientPipeline(
            channel.pipeline.syncOperations,
            cluster: .withoutEndpoints(on: channel.embeddedEventLoop),
            client: .init(),
            accessLog: nil,
            logger: Logger(label: "test")
        )
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        return channel
    }

    private func readAll(_ channel: EmbeddedChannel) throws -> String {
        // Responses are flushed at the end of the loop's tick (TickFlusher): let the tick end.
        channel.embeddedEventLoop.run()
        var text = ""
        while let buffer = try channel.readOutbound(as: ByteBuffer.self) {
            text += String(buffer: buffer)
        }
        return text
    }

    @Test func noEndpointAnswers503WithRetryAfterAndKeepsTheConnection() throws {
        let channel = try self.makeChannel()
        try channel.writeInbound(ByteBuffer(string: "GET / HTTP/1.1\r\nHost: a\r\n\r\n"))
        let response = try self.readAll(channel)
        #expect(
            response == "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
                + "Content-Length: 43\r\nRetry-After: 1\r\n\r\nno endpoint of upstream 'web' is available\n"
        )
        #expect(channel.isActive)
        try channel.writeInbound(ByteBuffer(string: "GET /again HTTP/1.1\r\nHost: a\r\n\r\n"))
        #expect(try self.readAll(channel).hasPrefix("HTTP/1.1 503"))
    }

    @Test func malformedRequestGets400AndTheConnectionCloses() throws {
        let channel = try self.makeChannel()
        try channel.writeInbound(ByteBuffer(string: "GET / HTTP/1.1\r\nHost : a\r\n\r\n"))
        let response = try self.readAll(channel)
        #expect(response.hasPrefix("HTTP/1.1 400 Bad Request\r\n"), "\(response)")
        #expect(response.contains("Connection: close\r\n"))
        #expect(response.ranges(of: "HTTP/1.1").count == 1, "exactly one response")
        #expect(!channel.isActive)
    }

    @Test func connectIsRefusedWith405() throws {
        let channel = try self.makeChannel()
        try channel.writeInbound(ByteBuffer(string: "CONNECT pod:443 HTTP/1.1\r\nHost: pod:443\r\n\r\n"))
        let response = try self.readAll(channel)
        #expect(response.hasPrefix("HTTP/1.1 405 Method Not Allowed\r\n"), "\(response)")
        #expect(!channel.isActive)
    }

    @Test func http10ClientWithoutKeepAliveIsClosedAfterTheAnswer() throws {
        let channel = try self.makeChannel()
        try channel.writeInbound(ByteBuffer(string: "GET / HTTP/1.0\r\n\r\n"))
        let response = try self.readAll(channel)
        // Headway answers in its own version, HTTP/1.1 (RFC 9110 §6.2), and closes as 1.0 framing asks.
        #expect(response.hasPrefix("HTTP/1.1 503"), "\(response)")
        #expect(response.contains("Connection: close\r\n"))
        #expect(!channel.isActive)
    }
}

extension LoopCluster {
    /// A loop's cluster of upstream `web` with no endpoint, for a handler on an `EmbeddedChannel`.
    static func withoutEndpoints(on eventLoop: EmbeddedEventLoop) -> LoopCluster {
        LoopCluster(
            eventLoop: eventLoop,
            configuration: .init(name: "web"),
            loopCount: 1,
            metrics: ProxyMetrics().upstreamMetrics(upstream: "web"),
            logger: Logger(label: "test")
        )
    }
}
