import NIOCore

/// Where the client is: its own connection (HTTP/1, through `context`), or one stream of an HTTP/2
/// connection (through `stream`, with no channel of its own). Everything the handler does to its client goes
/// through here, except the response's parts, which a stream takes as they are (see
/// DownstreamHandler+Response).
extension DownstreamHandler {
    var hasClient: Bool { self.context != nil || self.stream != nil }

    var clientAllocator: ByteBufferAllocator {
        self.context?.channel.allocator ?? self.stream?.connection.allocator ?? ByteBufferAllocator()
    }

    var clientIsWritable: Bool {
        if let stream = self.stream { return stream.isWritable }
        return self.context?.channel.isWritable ?? false
    }

    /// Response bytes for an HTTP/1 client; a stream takes the response as its parts instead (its head as
    /// the pod's parser read it, body pieces, trailers), so that no head crosses HTTP/1.1 on its way to HPACK.
    func writeToClientNow(_ bytes: ByteBuffer) {
        assert(self.stream == nil, "an HTTP/2 stream was handed HTTP/1.1 bytes")
        self.context?.write(self.wrapOutboundOut(bytes), promise: nil)
    }

    func flushClientAtEndOfTick() {
        if let stream = self.stream {
            stream.flush()
        } else if let context = self.context {
            self.cluster.flusher.flushAtEndOfTick(context)
        }
    }

    /// Closes the connection, or is done with the stream (a reset unless the response ended it). What was
    /// written goes out first, flushes being deferred to the end of the tick: a client cut off mid-response
    /// must see the part it was sent, and then the truncation.
    func closeClient() {
        if let stream = self.stream {
            stream.finish()
        } else if let context = self.context {
            self.writeUnwrittenResponse()
            context.flush()
            context.close(promise: nil)
        }
    }

    func readFromClient() {
        if let stream = self.stream {
            stream.resumeDelivery()
        } else {
            self.context?.read()
        }
    }
}

/// A handler per HTTP/2 client stream: the stream's frames arrive as HTTP/1.1 bytes, as on a connection.
extension DownstreamHandler: HTTP2ClientStreamHandler {
    func takesRequestBytes() -> Bool {
        if self.shouldHoldRead {
            self.readHeld = true
            return false
        }
        return true
    }

    func streamOpened(_ stream: HTTP2ClientStream) {
        self.stream = stream
        self.clientStarted(remote: stream.connection.remoteAddress)
    }

    func streamRequestBytes(_ bytes: ByteBuffer) {
        self.clientBytesReceived(bytes)
    }

    func streamReadComplete() {
        self.clientReadComplete()
    }

    func streamClientDeadline(_ timeout: TimeAmount) {
        self.clientDeadline = timeout
    }

    func streamWritabilityChanged(isWritable: Bool) {
        self.clientWritabilityChanged(isWritable: isWritable)
    }

    func streamShouldQuiesce() {
        self.shouldQuiesce()
    }

    func streamClosed() {
        self.clientClosed()
        self.leaveClientList()
        self.stream = nil
    }
}
