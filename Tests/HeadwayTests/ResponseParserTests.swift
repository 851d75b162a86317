import NIOCore
import Testing

@testable import Headway

struct ResponseParserTests {
    /// Everything the parser reports for `wire`, fed in pieces of `step` bytes.
    private func parse(
        _ wire: String,
        step: Int = .max,
        isHeadRequest: Bool = false,
        closeAtEnd: Bool = false
    ) throws -> [String] {
        var parser = ResponseParser()
        var events: [String] = []
        var bytes = Array(wire.utf8)[...]
        func record(_ event: ResponseParser.Event) {
            switch event {
            case .informational(let head): events.append("info \(head.status)")
            case .head(let head): events.append("head \(head.status) \(head.framing) keepAlive=\(head.isKeepAlive)")
            case .body(let body):
                if case .some(let last) = events.last, last.hasPrefix("body ") {
                    events[events.count - 1] += String(buffer: body)
                } else {
                    events.append("body " + String(buffer: body))
                }
            case .trailers(let trailers): events.append("trailers " + String(buffer: trailers))
            case .end: events.append("end")
            }
        }
        while !bytes.isEmpty {
            var buffer = ByteBuffer(bytes: bytes.prefix(step))
            bytes = bytes.dropFirst(step)
            while let event = try parser.next(from: &buffer, isHeadRequest: isHeadRequest) {
                record(event)
            }
        }
        if closeAtEnd, let event = try parser.inputClosed() {
            record(event)
        }
        return events
    }

    @Test(arguments: [1, 3, 7, 1000])
    func contentLengthResponseInAnyPieces(step: Int) throws {
        let events = try self.parse("HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 5\r\n\r\nhello", step: step)
        #expect(events == ["head 200 contentLength(5) keepAlive=true", "body hello", "end"])
    }

    @Test(arguments: [1, 4, 1000])
    func chunkedBodyIsDecoded(step: Int) throws {
        let wire =
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
        #expect(
            try self.parse(wire, step: step) == [
                "head 200 chunked keepAlive=true", "body hello world", "trailers X-Trailer: t\r\n\r\n", "end",
            ]
        )
    }

    @Test(arguments: [1, 5, 1000])
    func trailerSectionsAreKeptWholeAndEmptyOnesCostNothing(step: Int) throws {
        let grpc =
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\ngrpc-status: 0\r\ngrpc-message: ok\r\n\r\n"
        #expect(
            try self.parse(grpc, step: step) == [
                "head 200 chunked keepAlive=true", "body x", "trailers grpc-status: 0\r\ngrpc-message: ok\r\n\r\n",
                "end",
            ]
        )
        let empty = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n"
        #expect(try self.parse(empty, step: step) == ["head 200 chunked keepAlive=true", "body x", "end"])
    }

    @Test func closeDelimitedBodyEndsAtClose() throws {
        let events = try self.parse("HTTP/1.1 200 OK\r\n\r\nuntil the end", closeAtEnd: true)
        #expect(events == ["head 200 untilClose keepAlive=false", "body until the end", "end"])
    }

    @Test func bodylessResponses() throws {
        #expect(try self.parse("HTTP/1.1 204 No Content\r\n\r\n") == ["head 204 none keepAlive=true", "end"])
        #expect(
            try self.parse("HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n") == [
                "head 304 none keepAlive=true", "end",
            ]
        )
        #expect(
            try self.parse("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", isHeadRequest: true) == [
                "head 200 none keepAlive=true", "end",
            ]
        )
        #expect(
            try self.parse("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n") == ["head 200 none keepAlive=true", "end"]
        )
    }

    @Test func informationalResponsesPrecedeTheFinalOne() throws {
        let events = try self.parse(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        )
        #expect(events == ["info 100", "info 103", "head 200 contentLength(2) keepAlive=true", "body ok", "end"])
    }

    @Test func keepAliveFollowsVersionAndConnection() throws {
        #expect(
            try self.parse("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n").first
                == "head 200 none keepAlive=false"
        )
        #expect(try self.parse("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").first == "head 200 none keepAlive=false")
        #expect(
            try self.parse("HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n").first
                == "head 200 none keepAlive=true"
        )
    }

    @Test(arguments: [
        "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
        "HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\nx",
        "HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\nx",
        "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        "HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n",
        "HTTP/1.1 200 OK\r\nX : a\r\n\r\n",
        "HTTP/1.1 200 OK\nX: a\r\n\r\n",
        "HTTP/1.1 200 OK\r\nX: a\nY: b\r\n\r\n",
        "HTTP/1.1 200 OK\r\nX: a\u{0}b\r\n\r\n",
        "HTTP/1.1 099 Low\r\n\r\n",
        "HTTP/1.1 600 High\r\n\r\n",
        "HTTP/1.1 2000 OK\r\n\r\n",
        "HTTP/2.0 200 OK\r\n\r\n",
        "ICY 200 OK\r\n\r\n",
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\nab\r\n0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nabEXTRA",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nno colon here\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nbad name: x\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n folded: x\r\n\r\n",
    ])
    func malformedResponsesAreRefused(wire: String) {
        #expect(throws: HTTP1ParseError.self) { try self.parse(wire) }
    }

    @Test func truncatedResponsesAreErrorsAtClose() {
        #expect(throws: HTTP1ParseError.self) {
            try self.parse("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", closeAtEnd: true)
        }
        #expect(throws: HTTP1ParseError.self) {
            try self.parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel", closeAtEnd: true)
        }
        #expect(throws: HTTP1ParseError.self) { try self.parse("HTTP/1.1 200 OK\r\nContent-", closeAtEnd: true) }
    }

    @Test func oversizedHeadIsRefused() {
        let wire =
            "HTTP/1.1 200 OK\r\n"
            + String(repeating: "X-Filler: 0123456789012345678901234567890123456789\r\n", count: 2000)
        #expect(throws: HTTP1ParseError.self) { try self.parse(wire, step: 4096) }
        #expect(throws: HTTP1ParseError.self, "a whole head in one read too") {
            try self.parse(wire + "Content-Length: 0\r\n\r\n")
        }
    }

    @Test func clientHeadKeepsEndToEndFieldsAndSetsFraming() throws {
        let wire =
            "HTTP/1.1 200 Fine\r\nServer: pod\r\nConnection: keep-alive, X-Internal\r\nX-Internal: 1\r\nKeep-Alive: timeout=5\r\n"
            + "Transfer-Encoding: chunked\r\nSet-Cookie: a=b\r\n\r\n"
        var buffer = ByteBuffer(string: wire)
        var parser = ResponseParser()
        guard case .head(let head) = try parser.next(from: &buffer, isHeadRequest: false) else {
            Issue.record("no head")
            return
        }
        var out = ByteBuffer()
        head.writeClientHead(into: &out, clientVersionMinor: 1, chunked: true, closeConnection: false)
        #expect(
            String(buffer: out)
                == "HTTP/1.1 200 Fine\r\nServer: pod\r\nSet-Cookie: a=b\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        out.clear()
        head.writeClientHead(into: &out, clientVersionMinor: 0, chunked: false, closeConnection: true)
        #expect(
            String(buffer: out) == "HTTP/1.1 200 Fine\r\nServer: pod\r\nSet-Cookie: a=b\r\nConnection: close\r\n\r\n"
        )
    }

    @Test func headResponsesKeepTheirLength() throws {
        var buffer = ByteBuffer(string: "HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n")
        var parser = ResponseParser()
        guard case .head(let head) = try parser.next(from: &buffer, isHeadRequest: true) else {
            Issue.record("no head")
            return
        }
        var out = ByteBuffer()
        head.writeClientHead(into: &out, clientVersionMinor: 1, chunked: false, closeConnection: false)
        #expect(String(buffer: out) == "HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n")
    }
}
