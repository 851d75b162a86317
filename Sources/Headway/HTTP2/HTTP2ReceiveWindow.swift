import NIOCore
import NIOHTTP2

/// One HTTP/2 receive window, as a value: the bytes the peer sent that Headway has consumed are handed back
/// in one WINDOW_UPDATE once they reach half the window (RFC 9113 §6.9), so the peer never waits on a window
/// that is merely not yet updated, and a reader that stops consuming stops the peer within one window.
struct HTTP2ReceiveWindow {
    /// The initial window of every stream and of the connection (RFC 9113 §6.9.2); Headway announces no other.
    static let initialSize = 65_535

    /// The window the peer starts with (`SETTINGS_INITIAL_WINDOW_SIZE`, or 65,535 for the connection).
    let size: Int
    private var consumedSinceUpdate = 0

    init(size: Int) {
        self.size = size
    }

    /// What a DATA frame takes of the windows: its data and its padding.
    static func flowControlledLength(of data: HTTP2Frame.FramePayload.Data) -> Int {
        data.data.readableBytes + (data.paddingBytes ?? 0)
    }

    /// `bytes` more of the window were consumed; the increment to send now, or `nil` while below half.
    mutating func consumed(_ bytes: Int) -> Int? {
        self.consumedSinceUpdate += bytes
        guard self.consumedSinceUpdate >= self.size / 2 else { return nil }
        defer { self.consumedSinceUpdate = 0 }
        return self.consumedSinceUpdate
    }
}
