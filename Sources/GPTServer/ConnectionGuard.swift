import Atomics
import HTTPTypes
import NIOCore
import NIOHTTPTypes

/// Bounds what a client can hold of the server through its connections: each connection must deliver a whole
/// request (headers and body) within `receiveTimeout` of opening or of the end of its previous response, or it is
/// closed (a stalled, trickling or truncated request, an idle keep-alive socket); and beyond `maxConnections` open at
/// once, a new connection's request is answered 503 and the connection closed. Requests being answered (a long
/// completion, a stream) are not timed here: `ServerConfiguration.requestTimeout` bounds them.
final class ConnectionGuard: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    /// The connections open now, shared by every connection's guard.
    final class Count: Sendable {
        let open = ManagedAtomic(0)
    }

    private let receiveTimeout: TimeAmount
    private let maxConnections: Int
    private let count: Count
    private var counted = false
    private var refusing = false
    private var refused = false
    private var deadline: Scheduled<Void>?

    init(receiveTimeout: TimeAmount, maxConnections: Int, count: Count) {
        self.receiveTimeout = receiveTimeout
        self.maxConnections = maxConnections
        self.count = count
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { opened(context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        opened(context)
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        closed()
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) { closed() }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        if refusing {
            if case .head = part, !refused { refuse(context) }
            return
        }
        if case .end = part { disarm() }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        // A response written in full: the connection now waits for its next request.
        if case .end = unwrapOutboundIn(data) { arm(context) }
        context.write(data, promise: promise)
    }

    private func opened(_ context: ChannelHandlerContext) {
        guard !counted else { return }
        counted = true
        refusing = count.open.wrappingIncrementThenLoad(ordering: .relaxed) > maxConnections
        arm(context)
    }

    private func closed() {
        disarm()
        if counted {
            counted = false
            count.open.wrappingDecrement(ordering: .relaxed)
        }
    }

    private func arm(_ context: ChannelHandlerContext) {
        disarm()
        let channel = context.channel
        deadline = context.eventLoop.scheduleTask(in: receiveTimeout) { channel.close(promise: nil) }
    }

    private func disarm() {
        deadline?.cancel()
        deadline = nil
    }

    /// 503 with OpenAI's error body, then close.
    private func refuse(_ context: ChannelHandlerContext) {
        let error = APIError(status: .serviceUnavailable,
                             message: "the server has \(maxConnections) connections open, its limit; retry later",
                             type: "server_error", code: "too_many_connections")
        let body = ByteBuffer(bytes: error.body.serialized)
        var fields: HTTPFields = [.contentType: "application/json", .connection: "close", .retryAfter: "1"]
        fields[.contentLength] = String(body.readableBytes)
        context.write(wrapOutboundOut(.head(HTTPResponse(status: .serviceUnavailable, headerFields: fields))), promise: nil)
        context.write(wrapOutboundOut(.body(body)), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in context.close(promise: nil) }
        refused = true
        disarm()
    }
}
