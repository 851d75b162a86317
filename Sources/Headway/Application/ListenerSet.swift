import Logging
import ServiceLifecycle

/// The running listeners as one service, so that a reload can add some while it runs (and remove some with
/// ``ProxyServer/stopAccepting()``); on graceful shutdown every listener drains and the service returns once
/// all have.
final class ListenerSet: Service, Sendable {
    private let initial: [ProxyServer]
    private let added: AsyncStream<ProxyServer>
    private let addedContinuation: AsyncStream<ProxyServer>.Continuation
    private let onBound: @Sendable () -> Void
    private let logger: Logger

    init(initial: [ProxyServer], logger: Logger, onBound: @escaping @Sendable () -> Void) {
        self.initial = initial
        (self.added, self.addedContinuation) = AsyncStream.makeStream()
        self.logger = logger
        self.onBound = onBound
    }

    func run() async throws {
        // Every start-up listener takes its address first: one that cannot stops the process (BindError).
        for (index, server) in self.initial.enumerated() {
            do {
                try await server.bind()
            } catch {
                for bound in self.initial[..<index] { await bound.stopAccepting() }
                throw error
            }
        }
        self.onBound()
        let logger = self.logger
        await withTaskGroup(of: Void.self) { group in
            for server in self.initial {
                group.addTask { await Self.serve(server, logger: logger) }
            }
            for await server in self.added.cancelOnGracefulShutdown() {
                group.addTask { await Self.serve(server, logger: logger) }
            }
        }
    }

    /// Serves a listener that a reload has bound.
    func add(_ server: ProxyServer) {
        self.addedContinuation.yield(server)
    }

    private static func serve(_ server: ProxyServer, logger: Logger) async {
        do {
            try await server.serve()
        } catch {
            logger.error("listener failed", metadata: ["listen.address": "\(server.address)", "error": "\(error)"])
        }
    }
}
