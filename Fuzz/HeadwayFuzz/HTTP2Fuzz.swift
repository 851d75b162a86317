// The HTTP/2 client path under libFuzzer: arbitrary bytes after the connection preface, in two pieces, into
// a client connection's real pipeline (the protocol detector, swift-nio-http2's framing, and the
// HTTP2ClientConnection that runs every stream through an HTTP2StreamBridge to its DownstreamHandler), on an
// EmbeddedChannel. The upstream has no endpoint, so
// every request the bytes manage to make is answered by Headway itself, through the bridge's response path.
//
// A crash, a trap or a broken invariant is a finding; libFuzzer saves the input (keep it as a regression
// test in Tests/HeadwayTests/HTTP2TranslationTests.swift).

import Logging
import NIOCore
import NIOEmbedded

@testable import Headway

func http2Fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = UnsafeBufferPointer(start: data, count: size)
    let split = size > 0 ? min(Int(bytes[0]), size) : 0
    let channel = EmbeddedChannel()
    let cluster = LoopCluster(
        eventLoop: channel.embeddedEventLoop,
        configuration: .init(name: "fuzz"),
        loopCount: 1,
        metrics: fuzzMetrics.upstreamMetrics(upstream: "fuzz"),
        logger: fuzzLogger
    )
    do {
        try ProxyServer.configureClientPipeline(
            channel.pipeline.syncOperations,
            cluster: cluster,
            client: .init(),
            accessLog: nil,
            logger: fuzzLogger
        )
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        let pieces = [ClientProtocol.http2Preface, Array(bytes[..<split]), Array(bytes[split...])]
        for piece in pieces {
            try channel.writeInbound(ByteBuffer(bytes: piece))
            channel.embeddedEventLoop.run()
            while try channel.readOutbound(as: ByteBuffer.self) != nil {}
        }
    } catch {
        // A connection error: swift-nio-http2 or Headway refused the bytes; nothing more to check.
    }
    channel.embeddedEventLoop.advanceTime(by: .seconds(120))
    _ = try? channel.finish(acceptAlreadyClosed: true)
    return 0
}

private let fuzzLogger: Logger = {
    var logger = Logger(label: "fuzz")
    logger.logLevel = .critical
    return logger
}()

private let fuzzMetrics = ProxyMetrics()
