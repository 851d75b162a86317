import Logging
import NIOCore

/// The client timeouts, run by the loop's sweep (no timer per connection); ``ClientTimeouts`` decides.
extension DownstreamHandler: ClientTimeoutWaiter {
    func checkClientTimeouts(now: NIODeadline) {
        guard self.isActive, self.lingerTimer == nil, self.hasClient else { return }
        let observation = ClientTimeouts.Observation(
            notWritableSince: self.notWritableSince,
            isReadHeld: self.readHeld,
            isReadingHead: self.parser.isReadingHead,
            headStartedAt: self.headStartedAt,
            isInsideRequest: self.parser.isInsideRequest,
            lastActivity: self.lastClientActivity,
            isIdle: self.exchange == nil && self.pending.isEmpty
        )
        switch ClientTimeouts(settings: self.client).check(observation, now: now) {
        case .none:
            break
        case .activityContinues:
            self.lastClientActivity = now
        case .disconnect(let reason):
            self.logger.info("\(reason); closing")
            self.abortExchange()
            self.closeClient()
        case .refuse(let error):
            self.refuseRequest(error)
        case .closeIdle:
            self.closeClient()
        }
    }

    func clientSlotMoved(to slot: Int) {
        self.clientSlot = slot
    }

    func leaveClientList() {
        if let slot = self.clientSlot {
            self.clientSlot = nil
            self.cluster.clientDisconnected(slot: slot)
        }
    }
}
