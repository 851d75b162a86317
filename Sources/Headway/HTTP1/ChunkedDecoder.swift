import NIOCore

/// Decodes a chunked body (RFC 9112 §7.1) into its data, strictly; extensions are checked and dropped, the
/// trailer section is checked and kept (gRPC's status travels in it). Shared by the request and the response
/// parser.
struct ChunkedDecoder {
    /// Longest accepted chunk-size line (size and extensions) and trailer section.
    static let maximumLineLength = 4 * 1024

    private enum State {
        case size(value: UInt64, digits: Int, lineLength: Int, inExtension: Bool, sawCR: Bool)
        case data(remaining: UInt64)
        case dataEnd(sawCR: Bool)
        case trailers(lineLength: Int, sectionLength: Int, sawCR: Bool)
        case complete
    }

    private var state = State.size(value: 0, digits: 0, lineLength: 0, inExtension: false, sawCR: false)
    /// The trailer section's field lines and its closing empty line, once a field arrived; `nil` for the
    /// usual empty section, which costs no allocation.
    private(set) var trailers: ByteBuffer?

    /// The last chunk and the trailer section have been read.
    var isComplete: Bool {
        if case .complete = self.state { return true }
        return false
    }

    /// Returns the next piece of data, or `nil` when `buffer` is used up or the body is complete.
    /// - Throws: the reason the framing is invalid.
    mutating func next(from buffer: inout ByteBuffer) throws(HTTP1ParseError) -> ByteBuffer? {
        while buffer.readableBytes > 0 {
            switch self.state {
            case .data(let remaining):
                let count = Int(min(remaining, UInt64(buffer.readableBytes)))
                let slice = buffer.readSlice(length: count)!
                self.state =
                    remaining == UInt64(count) ? .dataEnd(sawCR: false) : .data(remaining: remaining - UInt64(count))
                return slice

            case .dataEnd(let sawCR):
                let byte = buffer.readInteger(as: UInt8.self)!
                if !sawCR {
                    guard byte == UInt8(ascii: "\r") else { throw .init("chunk data longer than its size") }
                    self.state = .dataEnd(sawCR: true)
                } else {
                    guard byte == UInt8(ascii: "\n") else { throw .init("chunk data not followed by CRLF") }
                    self.state = .size(value: 0, digits: 0, lineLength: 0, inExtension: false, sawCR: false)
                }

            case .size(var value, var digits, var lineLength, var inExtension, let sawCR):
                let byte = buffer.readInteger(as: UInt8.self)!
                lineLength += 1
                guard lineLength <= Self.maximumLineLength else { throw .init("chunk-size line too long") }
                if sawCR {
                    guard byte == UInt8(ascii: "\n"), digits > 0 else { throw .init("malformed chunk-size line") }
                    self.state =
                        value == 0 ? .trailers(lineLength: 0, sectionLength: 0, sawCR: false) : .data(remaining: value)
                    continue
                }
                if byte == UInt8(ascii: "\r") {
                    self.state = .size(
                        value: value,
                        digits: digits,
                        lineLength: lineLength,
                        inExtension: inExtension,
                        sawCR: true
                    )
                    continue
                }
                if inExtension {
                    guard HTTPSyntax.isFieldValueByte(byte) else {
                        throw .init("control character in a chunk extension")
                    }
                } else if let digit = Self.hexValue(byte) {
                    guard digits < 15 else { throw .init("chunk size too large") }
                    value = value << 4 | UInt64(digit)
                    digits += 1
                } else if byte == UInt8(ascii: ";") && digits > 0 {
                    inExtension = true
                } else {
                    throw .init("invalid chunk size")
                }
                self.state = .size(
                    value: value,
                    digits: digits,
                    lineLength: lineLength,
                    inExtension: inExtension,
                    sawCR: false
                )

            case .trailers(var lineLength, var sectionLength, let sawCR):
                let byte = buffer.readInteger(as: UInt8.self)!
                sectionLength += 1
                guard sectionLength <= Self.maximumLineLength else { throw .init("trailer section too long") }
                if self.trailers != nil {
                    self.trailers!.writeInteger(byte)
                } else if byte != UInt8(ascii: "\r") && byte != UInt8(ascii: "\n") {
                    // The section has a field: keep it whole (an empty one is only its CRLF).
                    self.trailers = ByteBuffer(integer: byte)
                }
                if sawCR {
                    guard byte == UInt8(ascii: "\n") else { throw .init("bare CR in the trailer section") }
                    if lineLength == 0 {
                        try self.checkTrailerFields()
                        self.state = .complete
                        return nil
                    }
                    self.state = .trailers(lineLength: 0, sectionLength: sectionLength, sawCR: false)
                } else if byte == UInt8(ascii: "\r") {
                    self.state = .trailers(lineLength: lineLength, sectionLength: sectionLength, sawCR: true)
                } else {
                    guard HTTPSyntax.isFieldValueByte(byte) else { throw .init("control character in a trailer field") }
                    lineLength += 1
                    self.state = .trailers(lineLength: lineLength, sectionLength: sectionLength, sawCR: false)
                }

            case .complete:
                return nil
            }
        }
        return nil
    }

    /// Each kept trailer line is a field (`name: value`), as a head's are: they may be relayed.
    private func checkTrailerFields() throws(HTTP1ParseError) {
        guard let trailers = self.trailers else { return }
        let problem = trailers.withUnsafeReadableBytes { raw in HTTPSyntax.scanFields(raw, from: 0) { _ in nil } }
        if let problem { throw .init("invalid trailer section: \(problem)") }
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}
