import NIOCore

/// A listener or the admin endpoint could not take its address: which one, the address, and why, so that
/// the one line an operator sees says what to change.
package struct BindError: Error, CustomStringConvertible {
    /// What wanted the address: `the admin endpoint`, or `the listener for upstream 'web'`.
    package let owner: String
    package let address: String
    package let reason: String

    package var description: String { "cannot listen on \(self.address) for \(self.owner): \(self.reason)" }

    /// Wraps the error of a failed bind.
    static func binding(_ address: SocketAddress, for owner: String, failedWith error: any Error) -> Self {
        Self(owner: owner, address: UpstreamCluster.label(for: address), reason: ProxyError.describe(error))
    }
}
