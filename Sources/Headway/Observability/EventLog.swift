import Synchronization

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The last things that happened to the pods, for the live page: joined, left, drained, ejected, back,
/// healthy, unhealthy, DNS failures. Bounded: the oldest go first.
package final class EventLog: Sendable {
    package struct Event: Sendable, Equatable, Codable {
        package var time: Date
        package var upstream: String
        /// The pod, when the event is about one.
        package var endpoint: String?
        package var message: String
    }

    static let capacity = 200
    private let events = Mutex<[Event]>([])

    package init() {}

    func record(upstream: String, endpoint: String? = nil, _ message: String) {
        let event = Event(time: Date(), upstream: upstream, endpoint: endpoint, message: message)
        self.events.withLock { events in
            if events.count == Self.capacity { events.removeFirst() }
            events.append(event)
        }
    }

    /// Oldest first.
    package var recent: [Event] { self.events.withLock { $0 } }
}
