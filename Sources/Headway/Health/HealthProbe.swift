import Logging
import NIOCore
import NIOHPACK
import NIOPosix

/// Checks one endpoint every `interval`, on one event loop, over a connection of its own.
///
/// HTTP checks keep their connection alive between checks (one connect per endpoint, not one per check, so a
/// fleet of sidecars checking 150 pods leaves no TIME_WAIT trail) and never borrow a pooled connection, so a
/// check never waits behind a request or makes one wait. TCP checks open a connection and close it. gRPC
/// checks (`grpc.health.v1.Health/Check`), and HTTP checks of an h2c upstream, keep an h2c connection and send
/// each check on a stream of its own.
///
/// `@unchecked Sendable`: the checker keeps probes in a locked table and reaches them only through
/// `eventLoop.execute`; all state is touched on `eventLoop` only.
final class HealthProbe: @unchecked Sendable {
    let endpoint: Endpoint
    let eventLoop: any EventLoop
    private var machine: StateMachine
    private let report: @Sendable (_ endpoint: Endpoint, _ passed: Bool, _ detail: String) -> Void
    private let request: ByteBuffer
    private var connection: HealthCheckConnection?
    /// Set when checks go over h2c: `connection` is unused then, each check has a stream.
    private let speaksHTTP2: Bool
    private var http2Connection: HTTP2UpstreamConnection?
    private var nextCheck: Scheduled<Void>?
    private var timeout: Scheduled<Void>?

    private var settings: HealthCheckSettings { self.machine.settings }

    init(
        endpoint: Endpoint,
        eventLoop: any EventLoop,
        settings: HealthCheckSettings,
        upstreamProtocol: UpstreamProtocol,
        report: @escaping @Sendable (_ endpoint: Endpoint, _ passed: Bool, _ detail: String) -> Void
    ) {
        self.endpoint = endpoint
        self.eventLoop = eventLoop
        self.machine = StateMachine(settings: settings)
        self.report = report
        let host = settings.host ?? endpoint.label
        switch settings.kind {
        case .grpc:
            self.speaksHTTP2 = true
            self.request = GRPCHealthCheck.request(service: settings.service, host: host)
        case .http, .tcp:
            self.speaksHTTP2 = settings.kind == .http && upstreamProtocol == .h2c
            self.request = ByteBuffer(
                string: "GET \(settings.path) HTTP/1.1\r\nHost: \(host)\r\nUser-Agent: headway-health-check\r\n\r\n"
            )
        }
    }

    /// Starts checking now: a new endpoint waits for its first passing check, so it should come soon.
    func start() {
        self.eventLoop.execute { self.runCheck() }
    }

    func stop() {
        self.eventLoop.assertInEventLoop()
        self.machine.stopped()
        self.nextCheck?.cancel()
        self.timeout?.cancel()
        self.closeConnections()
    }

    private func closeConnections() {
        self.connection?.close()
        self.connection = nil
        self.http2Connection?.close()
        self.http2Connection = nil
    }

    private func runCheck() {
        guard let number = self.machine.checkDue() else { return }
        self.timeout = self.eventLoop.scheduleTask(in: self.settings.timeout) {
            self.finish(number, .timedOut)
        }
        if self.speaksHTTP2 {
            if let connection = self.http2Connection, connection.isOpen {
                self.check(number, on: connection)
            } else {
                self.connectHTTP2(for: number)
            }
            return
        }
        if self.settings.kind == .http, let connection = self.connection, connection.isOpen {
            connection.send(self.request) { result in self.httpCheckEnded(number, result) }
            return
        }
        self.connect(for: number)
    }

    private func connect(for number: Int) {
        let kind = self.settings.kind
        ClientBootstrap(group: self.eventLoop)
            .connectTimeout(self.settings.timeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if kind == .http {
                        try channel.pipeline.syncOperations.addHandler(HealthCheckConnection())
                    }
                }
            }
            .connect(to: self.endpoint.address)
            .assumeIsolated()
            .whenComplete { result in
                switch result {
                case .failure(let error):
                    self.finish(number, .failed("connect failed: \(ProxyError.describe(error))"))
                case .success(let channel):
                    guard self.machine.isCurrent(number) else {
                        channel.close(promise: nil)
                        return
                    }
                    switch kind {
                    case .tcp:
                        channel.close(promise: nil)
                        self.finish(number, .connected)
                    case .http, .grpc:
                        guard
                            let connection = try? channel.pipeline.syncOperations.handler(
                                type: HealthCheckConnection.self
                            )
                        else {
                            channel.close(promise: nil)
                            self.finish(number, .failed("connection closed at once"))
                            return
                        }
                        self.connection = connection
                        connection.send(self.request) { result in self.httpCheckEnded(number, result) }
                    }
                }
            }
    }

    private func connectHTTP2(for number: Int) {
        HTTP2UpstreamConnection.connect(
            to: self.endpoint,
            on: self.eventLoop,
            timeout: self.settings.timeout,
            logger: Logger(label: "headway.health")
        ) { result in
            switch result {
            case .failure(let error):
                self.finish(number, .failed("connect failed: \(ProxyError.describe(error))"))
            case .success(let connection):
                guard self.machine.isCurrent(number) else {
                    connection.close()
                    return
                }
                self.http2Connection = connection
                self.check(number, on: connection)
            }
        }
    }

    /// Sends check `number` on a new stream of the probe's h2c connection.
    private func check(_ number: Int, on connection: HTTP2UpstreamConnection) {
        guard let stream = connection.makeStream() else {
            self.finish(number, .failed("could not open an HTTP/2 stream"))
            return
        }
        let check = HealthCheckConnection(readsGRPC: self.settings.kind == .grpc, stream: stream)
        stream.user = check
        check.send(self.request) { result in self.httpCheckEnded(number, result) }
    }

    private func httpCheckEnded(
        _ number: Int,
        _ result: Result<HealthCheckConnection.Answer, HealthCheckConnection.Failure>
    ) {
        switch result {
        case .success(let answer):
            if let grpc = answer.grpc, answer.status == 200 {
                self.finish(number, .grpcAnswered(grpc))
            } else {
                self.finish(number, .answered(status: answer.status, keepAlive: answer.keepAlive))
            }
        case .failure(let failure):
            self.finish(number, .failed(failure.reason))
        }
    }

    private func finish(_ number: Int, _ outcome: StateMachine.Outcome) {
        guard let verdict = self.machine.checkEnded(number, outcome) else { return }
        self.timeout?.cancel()
        self.timeout = nil
        if verdict.closeConnection {
            self.closeConnections()
        }
        self.report(self.endpoint, verdict.passed, verdict.detail)
        let delay = self.machine.nextCheckDelay(factor: Double.random(in: -1...1))
        self.nextCheck = self.eventLoop.scheduleTask(in: delay) { self.runCheck() }
    }
}

/// The pipeline of a health-check connection (or the user of one h2c stream): sends a check request, reads
/// its answer's status, and for a gRPC check the answer's message and grpc-status too.
final class HealthCheckConnection: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    struct Answer {
        var status: UInt
        var keepAlive: Bool
        /// What a gRPC health call answered; `nil` for an HTTP check.
        var grpc: GRPCHealthCheck.Answer?
    }

    /// A health answer is a few bytes; a larger body is not one.
    private static let maximumGRPCBody = 64 * 1024

    struct Failure: Error {
        var reason: String
    }

    private var context: ChannelHandlerContext?
    private var parser = ResponseParser()
    private var pending: ((Result<Answer, Failure>) -> Void)?
    private var answer: Answer?
    private(set) var isOpen = true
    private let readsGRPC: Bool
    /// The h2c stream the check goes on; `nil` on a connection of its own.
    private let stream: HTTP2UpstreamStream?
    private var grpcBody = ByteBuffer()
    private var grpcStatus: String?
    private var grpcMessage: String?

    init(readsGRPC: Bool = false, stream: HTTP2UpstreamStream? = nil) {
        self.readsGRPC = readsGRPC
        self.stream = stream
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func send(_ request: ByteBuffer, completion: @escaping (Result<Answer, Failure>) -> Void) {
        self.pending = completion
        self.answer = nil
        self.grpcBody.clear()
        (self.grpcStatus, self.grpcMessage) = (nil, nil)
        self.parser.expectResponse()
        if let stream = self.stream {
            stream.write(request)
            stream.flush()
        } else {
            self.context?.writeAndFlush(self.wrapOutboundOut(request), promise: nil)
        }
    }

    func close() {
        guard self.isOpen else { return }
        self.isOpen = false
        self.pending = nil
        if let stream = self.stream {
            stream.close()
        } else {
            self.context?.close(promise: nil)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        self.received(self.unwrapInboundIn(data))
    }

    private func received(_ bytes: ByteBuffer) {
        var buffer = bytes
        guard self.pending != nil else {
            self.close()  // Bytes nobody asked for: this connection cannot be trusted for the next check.
            return
        }
        do {
            while let event = try self.parser.next(from: &buffer, isHeadRequest: false) {
                switch event {
                case .informational:
                    continue
                case .body(var body):
                    guard self.readsGRPC else { continue }
                    guard self.grpcBody.readableBytes + body.readableBytes <= Self.maximumGRPCBody else {
                        self.fail("gRPC health answer larger than \(Self.maximumGRPCBody) bytes")
                        return
                    }
                    self.grpcBody.writeBuffer(&body)
                case .trailers(let section):
                    let trailers = HTTP2Translation.trailerFields(section)
                    self.grpcStatus = trailers.first(name: "grpc-status") ?? self.grpcStatus
                    self.grpcMessage = trailers.first(name: "grpc-message") ?? self.grpcMessage
                case .head(let head):
                    self.answer = Answer(status: head.status, keepAlive: head.isKeepAlive)
                    if self.readsGRPC {
                        // A trailers-only answer carries its status in the head.
                        head.forEachField { name, value in
                            if HTTPSyntax.equalsIgnoringCase(name, "grpc-status") {
                                self.grpcStatus = String(decoding: value, as: UTF8.self)
                            } else if HTTPSyntax.equalsIgnoringCase(name, "grpc-message") {
                                self.grpcMessage = String(decoding: value, as: UTF8.self)
                            }
                        }
                    }
                case .end:
                    let completion = self.pending
                    self.pending = nil
                    if buffer.readableBytes > 0 { self.close() }
                    var answer = self.answer!
                    if self.readsGRPC {
                        answer.grpc = GRPCHealthCheck.answer(
                            grpcStatus: self.grpcStatus,
                            grpcMessage: self.grpcMessage,
                            body: self.grpcBody
                        )
                    }
                    completion?(.success(answer))
                    return
                }
            }
        } catch {
            self.fail("invalid response: \(error.reason)")
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        self.fail("connection error: \(error)")
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.closed()
    }

    private func closed() {
        self.isOpen = false
        if let end = try? self.parser.inputClosed(), case .end = end, let answer = self.answer,
            let completion = self.pending
        {
            self.pending = nil
            completion(.success(Answer(status: answer.status, keepAlive: false)))
        } else {
            self.fail("connection closed before the answer")
        }
    }

    private func fail(_ reason: String) {
        let completion = self.pending
        self.close()
        completion?(.failure(Failure(reason: reason)))
    }
}

extension HealthCheckConnection: HTTP2StreamUser {
    var takesStreamBytes: Bool { true }

    func streamReceived(_ bytes: ByteBuffer) {
        self.received(bytes)
    }

    func streamReadComplete() {}

    func streamBecameWritable() {}

    func streamClosed(error: (any Error)?) {
        self.closed()
    }
}

@available(*, unavailable)
extension HealthCheckConnection: Sendable {}
