import NIOCore
import NIOHTTP1
import Testing

@testable import Headway

struct ForwardedMessageTests {
    /// The upstream head Headway writes for a request with `fields`, and the framing it announced.
    private func forward(
        _ fields: [(String, String)],
        method: HTTPMethod = .GET,
        version: HTTPVersion = .http1_1,
        clientIP: String? = nil
    ) -> (text: String, framing: ForwardedMessage.RequestFraming?) {
        var buffer = ByteBuffer()
        let head = HTTPRequestHead(version: version, method: method, uri: "/x?y=1", headers: HTTPHeaders(fields))
        let framing = ForwardedMessage.writeUpstreamRequest(for: head, clientIP: clientIP, into: &buffer)
        return (String(buffer: buffer), framing)
    }

    @Test(arguments: ["chunked", "Chunked", "chunked ", "gzip, chunked"])
    func anyAcceptedTransferEncodingBecomesExactlyChunked(value: String) {
        let (text, framing) = self.forward([("Host", "a"), ("Transfer-Encoding", value)])
        #expect(framing == .chunked)
        #expect(text == "GET /x?y=1 HTTP/1.1\r\nHost: a\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: a\r\nVia: 1.1 headway\r\nTransfer-Encoding: chunked\r\n\r\n")
    }

    @Test func contentLengthIsReEmittedFromTheParsedValue() {
        let (text, framing) = self.forward([("Host", "a"), ("Content-Length", "0004 ")], method: .PUT)
        #expect(framing == .contentLength(4))
        #expect(text.hasPrefix("PUT /x?y=1 HTTP/1.1\r\n"))
        #expect(text.contains("\r\nContent-Length: 4\r\n"))
        #expect(!text.contains("0004"))
    }

    @Test func unparsableContentLengthIsRefused() {
        #expect(self.forward([("Host", "a"), ("Content-Length", "4, 4")]).framing == nil)
    }

    @Test func postWithoutBodySaysContentLengthZero() {
        let (post, framing) = self.forward([("Host", "a")], method: .POST)
        #expect(framing == ForwardedMessage.RequestFraming.none)
        #expect(post.contains("\r\nContent-Length: 0\r\n"))
        #expect(!self.forward([("Host", "a")]).text.contains("Content-Length"))
    }

    @Test func hopByHopAndNominatedFieldsAreDropped() {
        let (text, _) = self.forward(
            [
                ("Host", "a"), ("Connection", "keep-alive, X-Secret, Host, Content-Length"), ("X-Secret", "1"),
                ("Keep-Alive", "timeout=5"), ("Proxy-Connection", "x"), ("TE", "trailers"), ("Trailer", "X"),
                ("Upgrade", "websocket"), ("HTTP2-Settings", "abc"), ("X-Kept", "yes"),
            ],
            clientIP: "10.1.2.3"
        )
        #expect(
            text == "GET /x?y=1 HTTP/1.1\r\nHost: a\r\nX-Kept: yes\r\nX-Forwarded-For: 10.1.2.3\r\nX-Forwarded-Proto: http\r\n"
                + "X-Forwarded-Host: a\r\nVia: 1.1 headway\r\n\r\n",
            "Connection must not be able to remove Host"
        )
    }

    @Test func forwardingFieldsAreAppendedOrSet() {
        let (text, _) = self.forward(
            [
                ("Host", "shop"), ("X-Forwarded-For", "1.1.1.1"), ("X-Forwarded-For", "2.2.2.2"),
                ("X-Forwarded-Proto", "https"), ("X-Forwarded-Host", "evil"), ("Via", "1.1 edge"),
            ],
            version: .http1_0,
            clientIP: "127.0.0.9"
        )
        #expect(
            text == "GET /x?y=1 HTTP/1.1\r\nHost: shop\r\nX-Forwarded-For: 1.1.1.1, 2.2.2.2, 127.0.0.9\r\n"
                + "X-Forwarded-Proto: http\r\nX-Forwarded-Host: shop\r\nVia: 1.1 edge, 1.0 headway\r\n\r\n",
            "Headway speaks HTTP/1.1 upstream whatever the client spoke"
        )
    }

    @Test func chunkHeadersAreHex() {
        #expect(String(buffer: ForwardedMessage.chunkHeader(for: 255, allocator: .init())) == "ff\r\n")
    }

    @Test func caseInsensitiveComparisonIsASCIIOnly() {
        #expect("Content-Length".isASCIICaseInsensitiveEqual(to: "content-length"))
        #expect(!"Content-Lengti".isASCIICaseInsensitiveEqual(to: "content-length"))
        #expect(!"a-".isASCIICaseInsensitiveEqual(to: "a\r"), "only letters may differ in case")
    }
}
