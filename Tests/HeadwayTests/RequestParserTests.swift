import NIOCore
import NIOHTTP1
import Testing

@testable import Headway

struct RequestParserTests {
    /// Every event the parser reports for `wire`, fed in pieces of `step` bytes.
    private func parse(_ wire: String, step: Int = .max) throws(HTTP1ParseError) -> [String] {
        var parser = RequestParser()
        var events: [String] = []
        var bytes = Array(wire.utf8)[...]
        while !bytes.isEmpty {
            var buffer = ByteBuffer(bytes: bytes.prefix(step))
            bytes = bytes.dropFirst(step)
            while let event = try parser.next(from: &buffer) {
                switch event {
                case .head(let head): events.append("head \(head.methodName) \(head.target) \(head.framing)")
                case .body(let body):
                    if let last = events.last, last.hasPrefix("body ") {
                        events[events.count - 1] += String(buffer: body)
                    } else {
                        events.append("body " + String(buffer: body))
                    }
                case .end: events.append("end")
                }
            }
        }
        return events
    }

    /// The upstream head Headway writes for a request head.
    private func upstream(_ wire: String, clientIP: String? = nil) throws -> String {
        var buffer = ByteBuffer(string: wire)
        var parser = RequestParser()
        guard case .head(let head) = try parser.next(from: &buffer) else {
            throw HTTP1ParseError.badRequest("no head")
        }
        var out = ByteBuffer()
        head.writeUpstreamHead(into: &out, clientIP: clientIP)
        return String(buffer: out)
    }

    private func status(_ wire: String) -> UInt? {
        do {
            _ = try self.parse(wire)
            return nil
        } catch {
            return error.status.code
        }
    }

    @Test func limitsAreConfigurable() throws {
        var limits = RequestLimits()
        limits.requestLineBytes = 100
        limits.headBytes = 200
        limits.fieldCount = 2
        func status(_ wire: String) -> UInt? {
            var parser = RequestParser(limits: limits)
            var buffer = ByteBuffer(string: wire)
            do {
                _ = try parser.next(from: &buffer)
                return nil
            } catch {
                return error.status.code
            }
        }
        #expect(status("GET /" + String(repeating: "a", count: 120) + " HTTP/1.1\r\nHost: a\r\n\r\n") == 414)
        #expect(status("GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\nY: 2\r\n\r\n") == 431)
        #expect(status("GET / HTTP/1.1\r\nHost: a\r\nX: " + String(repeating: "v", count: 200) + "\r\n\r\n") == 431)
        #expect(status("GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n\r\n") == nil)
    }

    @Test func aBareLineFeedIsRefusedBeforeTheHeadEnds() {
        // With bare LFs the CRLF CRLF end never comes: the request must not wait for it.
        #expect(self.status("GET / HTTP/1.1\nHost: web\n\n") == 400)
        #expect(self.status("GET / HTTP/1.1\r\nHost: web\nX: 1\r\n") == 400)
    }

    @Test func absoluteFormMustMatchHostAndReachesThePodInOriginForm() throws {
        #expect(
            try self.upstream("GET http://web.test/a?b=1 HTTP/1.1\r\nHost: web.test\r\n\r\n").hasPrefix(
                "GET /a?b=1 HTTP/1.1\r\n"
            )
        )
        #expect(
            try self.upstream("GET http://WEB.test:8080 HTTP/1.1\r\nHost: web.test:8080\r\n\r\n").hasPrefix(
                "GET / HTTP/1.1\r\n"
            )
        )
        #expect(
            try self.upstream("GET http://web.test?q HTTP/1.1\r\nHost: web.test\r\n\r\n").hasPrefix(
                "GET /?q HTTP/1.1\r\n"
            )
        )
        #expect(self.status("GET http://evil.test/a HTTP/1.1\r\nHost: web.test\r\n\r\n") == 400)
        #expect(self.status("GET http:///a HTTP/1.1\r\nHost: web.test\r\n\r\n") == 400)
        #expect(self.status("GET https://web.test/a HTTP/1.1\r\nHost: web.test\r\n\r\n") == 400)
    }

    @Test(arguments: [1, 5, 1000])
    func pipelinedRequestsInAnyPieces(step: Int) throws {
        let wire =
            "GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
            + "\r\nPUT /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nT: 1\r\n\r\n"
        #expect(
            try self.parse(wire, step: step) == [
                "head GET /a none", "end", "head POST /b contentLength(5)", "body hello", "end", "head PUT /c chunked",
                "body abc", "end",
            ]
        )
    }

    @Test(arguments: ["chunked", "Chunked", "CHUNKED", "chunked "])
    func plainChunkedInAnySpellingBecomesExactlyChunked(value: String) throws {
        let text = try self.upstream("GET /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \(value)\r\n\r\n")
        #expect(
            text
                == "GET /x HTTP/1.1\r\nHost: a\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: a\r\nVia: 1.1 headway\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
    }

    @Test func contentLengthIsReEmittedFromTheParsedValue() throws {
        let text = try self.upstream("PUT /x HTTP/1.1\r\nHost: a\r\nContent-Length: 0004 \r\n\r\n")
        #expect(text.hasSuffix("\r\nContent-Length: 4\r\n\r\n"))
        #expect(!text.contains("0004"))
    }

    @Test func postWithoutBodySaysContentLengthZero() throws {
        #expect(try self.upstream("POST /x HTTP/1.1\r\nHost: a\r\n\r\n").hasSuffix("Content-Length: 0\r\n\r\n"))
        #expect(try !self.upstream("GET /x HTTP/1.1\r\nHost: a\r\n\r\n").contains("Content-Length"))
    }

    @Test func hopByHopAndNominatedFieldsAreDropped() throws {
        let text = try self.upstream(
            "GET /x HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Secret, Host, Content-Length\r\nX-Secret: 1\r\n"
                + "Keep-Alive: timeout=5\r\nProxy-Connection: x\r\nTE: trailers\r\nTrailer: X\r\nUpgrade: websocket\r\n"
                + "HTTP2-Settings: abc\r\nX-Kept: yes\r\n\r\n",
            clientIP: "10.1.2.3"
        )
        #expect(
            text
                == "GET /x HTTP/1.1\r\nHost: a\r\nX-Kept: yes\r\nX-Forwarded-For: 10.1.2.3\r\nX-Forwarded-Proto: http\r\n"
                + "X-Forwarded-Host: a\r\nVia: 1.1 headway\r\n\r\n",
            "Connection must not be able to remove Host"
        )
    }

    @Test func connectionTokensAreReadWithEmptyListElementsAndSpaces() throws {
        // RFC 9110 §5.6.1: empty list elements are allowed and ignored; a token may be the first or the last.
        let text = try self.upstream(
            "GET /x HTTP/1.1\r\nHost: a\r\nConnection: ,, X-One ,\tX-Two,,\r\nX-One: 1\r\nX-Two: 2\r\nX-Three: 3\r\n\r\n"
        )
        #expect(!text.contains("X-One") && !text.contains("X-Two"), "\(text)")
        #expect(text.contains("X-Three: 3\r\n"))
    }

    @Test func forwardingFieldsAreAppendedOrSet() throws {
        let text = try self.upstream(
            "GET /x HTTP/1.0\r\nHost: shop\r\nX-Forwarded-For: 1.1.1.1\r\nx-forwarded-for: 2.2.2.2\r\n"
                + "X-Forwarded-Proto: https\r\nX-Forwarded-Host: evil\r\nVia: 1.1 edge\r\nX-Raw: caf\u{e9}\r\n\r\n",
            clientIP: "127.0.0.9"
        )
        #expect(
            text
                == "GET /x HTTP/1.1\r\nHost: shop\r\nX-Raw: caf\u{e9}\r\nX-Forwarded-For: 1.1.1.1, 2.2.2.2, 127.0.0.9\r\n"
                + "X-Forwarded-Proto: http\r\nX-Forwarded-Host: shop\r\nVia: 1.1 edge, 1.0 headway\r\n\r\n",
            "HTTP/1.1 upstream whatever the client spoke; obs-text bytes pass unchanged"
        )
    }

    @Test func extensionMethodsAreRelayed() throws {
        #expect(try self.upstream("PURGE /cache HTTP/1.1\r\nHost: a\r\n\r\n").hasPrefix("PURGE /cache HTTP/1.1\r\n"))
    }

    @Test func leadingEmptyLinesAreIgnored() throws {
        #expect(try self.parse("\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n") == ["head GET / none", "end"])
    }

    @Test func keepAliveFollowsVersionAndConnection() throws {
        func keepAlive(_ wire: String) throws -> Bool {
            var buffer = ByteBuffer(string: wire)
            var parser = RequestParser()
            guard case .head(let head) = try parser.next(from: &buffer) else { return false }
            return head.isKeepAlive
        }
        #expect(try keepAlive("GET / HTTP/1.1\r\nHost: a\r\n\r\n"))
        #expect(try !keepAlive("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"))
        #expect(try !keepAlive("GET / HTTP/1.0\r\n\r\n"))
        #expect(try keepAlive("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"))
        #expect(
            try !keepAlive("POST / HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n"),
            "RFC 9112 §6.1"
        )
    }

    @Test(arguments: [
        ("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400),  // R1
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", 400),  // R2
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4, 4\r\n\r\n", 400),  // R3
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +4\r\n\r\n", 400),  // R4
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x4\r\n\r\n", 400),  // R4
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 400),  // R5: chunked is not last
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400),  // R5
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n", 400),  // R5
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\n\r\n", 400),  // R5, obs-folded
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", 400),  // R5: at most once
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),  // R6
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400),  // R5
        ("GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", 400),  // R8
        ("GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400),  // R9
        ("GET / HTTP/1.1\nHost: a\r\n\r\n", 400),  // R10
        ("GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n", 400),  // R10
        ("GET / HTTP/1.1\r\nHost: a\r\nX: a\u{0}b\r\n\r\n", 400),  // R11
        ("GET / HTTP/1.1\r\nHost: a\r\nBad[Name: b\r\n\r\n", 400),  // R12
        ("GET / HTTP/1.1\r\nHost: a\r\n: b\r\n\r\n", 400),  // R12
        ("GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n", 400),  // R12
        ("GET / HTTP/1.1\r\n\r\n", 400),  // R19
        ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),  // R19
        ("GET / HTTP/1.1\r\nHost: a b@c\r\n\r\n", 400),  // R19
        ("GET /a#frag HTTP/1.1\r\nHost: a\r\n\r\n", 400),  // R20
        ("GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400),  // R20
        ("GET abc HTTP/1.1\r\nHost: a\r\n\r\n", 400),  // R20
        ("GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
        ("GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505),
        ("GET / HTTP/1.1 \r\nHost: a\r\n\r\n", 400),
        ("GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ("GET / FTP/1.1\r\nHost: a\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),  // R15
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n", 400),  // R16
    ])
    func malformedRequestsGetTheRightStatus(wire: String, status: UInt) {
        #expect(self.status(wire) == status, "\(wire.debugDescription)")
    }

    @Test func oversizedRequestLineGets414AndOversizedFields431() {
        #expect(self.status("GET /" + String(repeating: "a", count: 9000) + " HTTP/1.1\r\nHost: a\r\n\r\n") == 414)
        #expect(self.status("GET /" + String(repeating: "a", count: 9000)) == 414, "known before the line ends")
        let manyFields = (0..<101).map { "X-\($0): v\r\n" }.joined()
        #expect(self.status("GET / HTTP/1.1\r\nHost: a\r\n" + manyFields + "\r\n") == 431)
        let hugeField = "X-Big: " + String(repeating: "v", count: 70_000) + "\r\n"
        #expect(self.status("GET / HTTP/1.1\r\nHost: a\r\n" + hugeField) == 431)
        #expect(
            self.status("GET / HTTP/1.1\r\nHost: a\r\n" + hugeField + "\r\n") == 431,
            "a whole head in one read too"
        )
    }

    @Test func asteriskIsForOptions() throws {
        #expect(try self.parse("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n") == ["head OPTIONS * none", "end"])
    }
}
