import NIOHTTP1
import Testing

@testable import Headway

struct ForwardedMessageTests {
    private func request(_ fields: [(String, String)], method: HTTPMethod = .GET, version: HTTPVersion = .http1_1) -> HTTPRequestHead {
        HTTPRequestHead(version: version, method: method, uri: "/x", headers: HTTPHeaders(fields))
    }

    @Test(arguments: ["chunked", "Chunked", "chunked ", "gzip, chunked"])
    func anyAcceptedTransferEncodingBecomesExactlyChunked(value: String) throws {
        let (head, framing) = try #require(
            ForwardedMessage.upstreamRequest(for: self.request([("Host", "a"), ("Transfer-Encoding", value)]), clientIP: nil)
        )
        #expect(framing == .chunked)
        #expect(head.headers["transfer-encoding"] == ["chunked"])
        #expect(head.headers["content-length"].isEmpty)
        #expect(head.version == .http1_1)
    }

    @Test func contentLengthIsReEmittedFromTheParsedValue() throws {
        let (head, framing) = try #require(
            ForwardedMessage.upstreamRequest(for: self.request([("Host", "a"), ("Content-Length", "0004 ")], method: .PUT), clientIP: nil)
        )
        #expect(framing == .contentLength(4))
        #expect(head.headers["content-length"] == ["4"])
    }

    @Test func postWithoutBodySaysContentLengthZero() throws {
        let (head, framing) = try #require(ForwardedMessage.upstreamRequest(for: self.request([("Host", "a")], method: .POST), clientIP: nil))
        #expect(framing == .none)
        #expect(head.headers["content-length"] == ["0"])
        let (get, _) = try #require(ForwardedMessage.upstreamRequest(for: self.request([("Host", "a")]), clientIP: nil))
        #expect(get.headers["content-length"].isEmpty)
    }

    @Test func hopByHopAndNominatedFieldsAreDropped() throws {
        let (head, _) = try #require(
            ForwardedMessage.upstreamRequest(
                for: self.request([
                    ("Host", "a"), ("Connection", "keep-alive, X-Secret, Host, Content-Length"), ("X-Secret", "1"),
                    ("Keep-Alive", "timeout=5"), ("Proxy-Connection", "x"), ("TE", "trailers"), ("Trailer", "X"),
                    ("Upgrade", "websocket"), ("HTTP2-Settings", "abc"), ("X-Kept", "yes"),
                ]),
                clientIP: "10.1.2.3"
            )
        )
        let names = Set(head.headers.map { $0.name.lowercased() })
        #expect(names == ["host", "x-kept", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "via"])
        #expect(head.headers["host"] == ["a"], "Connection must not be able to remove Host")
    }

    @Test func forwardingFieldsAreAppendedOrSet() throws {
        let (head, _) = try #require(
            ForwardedMessage.upstreamRequest(
                for: self.request(
                    [
                        ("Host", "shop"), ("X-Forwarded-For", "1.1.1.1"), ("X-Forwarded-For", "2.2.2.2"),
                        ("X-Forwarded-Proto", "https"), ("X-Forwarded-Host", "evil"), ("Via", "1.1 edge"),
                    ],
                    version: .http1_0
                ),
                clientIP: "127.0.0.9"
            )
        )
        #expect(head.headers["x-forwarded-for"] == ["1.1.1.1, 2.2.2.2, 127.0.0.9"])
        #expect(head.headers["x-forwarded-proto"] == ["http"])
        #expect(head.headers["x-forwarded-host"] == ["shop"])
        #expect(head.headers["via"] == ["1.1 edge, 1.0 headway"])
        #expect(head.version == .http1_1, "Headway speaks its own version upstream")
    }

    @Test func responseHeadsLoseHopByHopAndFraming() {
        let upstream = HTTPResponseHead(
            version: .http1_1,
            status: .ok,
            headers: HTTPHeaders([
                ("Content-Length", "12"), ("Connection", "keep-alive, X-Internal"), ("X-Internal", "1"),
                ("Transfer-Encoding", "chunked"), ("Keep-Alive", "timeout=5"), ("Server", "pod"),
            ])
        )
        let toClient = ForwardedMessage.clientResponse(for: upstream, clientVersion: .http1_1, isHeadRequest: false, closeConnection: true)
        #expect(Set(toClient.headers.map { $0.name.lowercased() }) == ["content-length", "server", "connection"])
        #expect(toClient.headers["connection"] == ["close"])
        let toOldClient = ForwardedMessage.clientResponse(for: upstream, clientVersion: .http1_0, isHeadRequest: false, closeConnection: false)
        #expect(toOldClient.version == .http1_0)
        #expect(toOldClient.headers["connection"] == ["keep-alive"])
    }

    @Test func bodylessResponsesKeepLengthOnlyForHead() {
        let upstream = HTTPResponseHead(version: .http1_1, status: .ok, headers: ["Content-Length": "1048576"])
        let head = ForwardedMessage.clientResponse(for: upstream, clientVersion: .http1_1, isHeadRequest: true, closeConnection: false)
        #expect(head.headers["content-length"] == ["1048576"])
        let notModified = HTTPResponseHead(version: .http1_1, status: .notModified, headers: ["Content-Length": "5"])
        let relayed = ForwardedMessage.clientResponse(for: notModified, clientVersion: .http1_1, isHeadRequest: false, closeConnection: false)
        #expect(relayed.headers["content-length"].isEmpty)
    }

    @Test func closeDelimitedResponsesAreRecognised() {
        let bare = HTTPResponseHead(version: .http1_1, status: .ok)
        #expect(ForwardedMessage.isCloseDelimited(bare, isHeadRequest: false))
        #expect(!ForwardedMessage.isCloseDelimited(bare, isHeadRequest: true))
        #expect(!ForwardedMessage.isCloseDelimited(HTTPResponseHead(version: .http1_1, status: .noContent), isHeadRequest: false))
        #expect(!ForwardedMessage.isCloseDelimited(HTTPResponseHead(version: .http1_1, status: .ok, headers: ["Content-Length": "0"]), isHeadRequest: false))
    }

    @Test func caseInsensitiveComparisonIsASCIIOnly() {
        #expect("Content-Length".isASCIICaseInsensitiveEqual(to: "content-length"))
        #expect(!"Content-Lengti".isASCIICaseInsensitiveEqual(to: "content-length"))
        #expect(!"a-".isASCIICaseInsensitiveEqual(to: "a\r"), "only letters may differ in case")
    }
}
