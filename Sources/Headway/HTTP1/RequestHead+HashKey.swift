import NIOCore

extension RequestHead {
    /// The `hash` policy's key for this request: a stable hash of the header's first value, of the cookie's
    /// value, or of the client's address; `nil` when the request has none of them.
    func hashKey(_ key: HashKey, clientIP: String?) -> UInt64? {
        let wanted: [UInt8]
        switch key {
        case .clientIP:
            return clientIP.map { StableHash.fnv1a($0) }
        case .header(let name):
            wanted = Array(name.utf8)
        case .cookie:
            wanted = Array("cookie".utf8)
        }
        return self.bytes.withUnsafeReadableBytes { raw -> UInt64? in
            var found: UInt64?
            _ = HTTPSyntax.scanFields(raw, from: self.fieldsStart) { field in
                guard found == nil,
                    HTTPSyntax.equalsIgnoringCase(UnsafeRawBufferPointer(rebasing: raw[field.name]), wanted)
                else {
                    return nil
                }
                let value = UnsafeRawBufferPointer(rebasing: raw[field.value])
                if case .cookie(let cookieName) = key {
                    found = Self.cookieValue(named: cookieName, in: value).map { StableHash.fnv1a($0) }
                } else {
                    found = StableHash.fnv1a(value)
                }
                return nil
            }
            return found
        }
    }

    /// The value of cookie `name` in a `Cookie` field value (`a=1; b=2`), if it is there.
    private static func cookieValue(named name: String, in value: UnsafeRawBufferPointer) -> [UInt8]? {
        let name = Array(name.utf8)
        for pair in value.split(separator: UInt8(ascii: ";")) {
            let trimmed = pair.drop { $0 == UInt8(ascii: " ") }
            guard trimmed.count > name.count, trimmed.starts(with: name),
                trimmed[trimmed.startIndex + name.count] == UInt8(ascii: "=")
            else { continue }
            return Array(trimmed.dropFirst(name.count + 1))
        }
        return nil
    }
}
