import Foundation
import GPTModels
import GPTUtilities
import Hummingbird
import NIOCore
import TensorCore
import Tokenizers

/// How `gpt serve` runs.
public struct ServerConfiguration: Sendable {
    /// Address to bind (loopback by default: nothing outside the machine reaches it unless asked).
    public var host = "127.0.0.1"
    /// Port; 0 takes a free one (the `onListening` callback tells which).
    public var port = 8080
    /// Completions decoding together at most (each holds a key/value cache slot).
    public var maxBatch = 16
    /// Requests waiting for a slot at most; more are refused with 429.
    public var maxQueue = 64
    /// Bearer key the API endpoints require, if any.
    public var apiKey: String?
    /// The model name clients use (`model` in requests).
    public var servedModelName = "gpt"
    /// Largest request body accepted, in bytes (413 beyond).
    public var maxBodyBytes = 8 << 20
    /// Longest a request may take, in seconds, waiting included (408 beyond; a stream ends with an error event).
    public var requestTimeout: Double = 600
    /// Prompt tokens read per decoding step at most (chunked prefill).
    public var prefillBudget = 256
    /// Bytes of keys and values the prompt cache keeps at most (0: no prompt cache). A prompt that begins with a
    /// sequence decoded before — a chat's earlier turns, a shared system prompt — computes only its other tokens.
    public var promptCacheBytes = 512 << 20
    /// Longest a connection may take to deliver a whole request (headers and body), counted from its opening or
    /// from the end of its previous response, in seconds; a slower or idle connection is closed.
    public var receiveTimeout: Double = 30
    /// Connections open at once at most; a request on a connection beyond them is answered 503.
    public var maxConnections = 2048
    /// Bytes of released tensor buffers kept for reuse while serving (more are returned to the system; all of them
    /// when the server is idle). The limit is the process's (`TensorMemory.poolLimitBytes`), set when `run` starts.
    public var poolBytes = 32 << 20
    /// Format of the weights decoding streams: fp32, bf16, int8 with one scale per output channel, or int4 with one
    /// per 32 inputs of an output channel (a 16-, 8- or 4-bit one rounds the model's own matrices to the values it holds).
    public var precision = WeightFormat.float32
    /// How the key/value cache keeps keys and values: fp32, or bf16 (half the memory).
    package var cachePrecision = CachedAttention.Cache.Precision.float32

    /// The defaults each field states.
    public init() {}
}

/// An OpenAI-compatible HTTP server for one model: `/v1/completions`, `/v1/chat/completions` (streaming as
/// server-sent events), `/v1/models`, `/tokenize`, `/detokenize`, `/health`, `/metrics` and a chat page at `/`.
/// Requests are decoded together by continuous batching (`GenerationEngine`).
public final class OpenAIServer: Sendable {
    let served: ServedModel
    let configuration: ServerConfiguration
    let engine: GenerationEngine
    let metrics = ServerMetrics()
    let started = Int(Date().timeIntervalSince1970)

    /// A server of `model` with `tokenizer` and `chatTemplate` (for chat completions), set up as `configuration`
    /// says; nothing listens until ``run(onListening:)``.
    public convenience init(model: GPTModel, tokenizer: any Tokenizer, chatTemplate: ChatTemplate, configuration: ServerConfiguration) throws {
        try self.init(model: model, tokenizer: tokenizer, chatTemplate: chatTemplate, configuration: configuration,
                      weights: DecodeWeights(model: model, format: configuration.precision))
    }

    /// A server of `model` with its decoding weights, whose format must be `configuration.precision` (see
    /// `ModelLoading.loadForDecoding`), and of the low-rank `adapters` over it, each under its name (a request's
    /// `model` picks one; see `LowRankAdapterFiles.loadForServing`), speculating with `draft` when one is given.
    package init(model: GPTModel, tokenizer: any Tokenizer, chatTemplate: ChatTemplate, configuration: ServerConfiguration,
                 weights: DecodeWeights, adapters: [(name: String, adapter: LowRankAdapter)] = [], draft: DraftModel? = nil) throws {
        precondition(weights.format == configuration.precision, "decoding weights in \(weights.format), configured \(configuration.precision)")
        guard configuration.maxBatch >= 1, configuration.maxQueue >= 1, configuration.prefillBudget >= 1, configuration.maxConnections >= 1,
              configuration.maxBodyBytes >= 1, configuration.poolBytes >= 0, configuration.promptCacheBytes >= 0 else {
            throw GenerationError(.invalidArgument, "max batch, max queue, prefill budget, max connections and max body bytes must be positive, pool bytes and cache bytes not negative")
        }
        for (name, seconds) in [("request timeout", configuration.requestTimeout), ("receive timeout", configuration.receiveTimeout)] {
            guard seconds.isFinite, seconds > 0, seconds <= 1e6 else { throw GenerationError(.invalidArgument, "the \(name) must be between 0 and 10⁶ seconds, got \(seconds)") }
        }
        let names = [configuration.servedModelName] + adapters.map(\.name)
        guard Set(names).count == names.count, !names.contains(where: \.isEmpty) else {
            throw GenerationError(.invalidArgument, "the model and its adapters need names of their own, not empty: \(names)")
        }
        self.configuration = configuration
        served = ServedModel(name: configuration.servedModelName, tokenizer: tokenizer, contextLength: model.config.contextLength,
                             vocabularySize: model.config.vocabularySize, chatTemplate: chatTemplate, maxChoices: configuration.maxBatch,
                             adapters: adapters.map(\.name))
        let decoder = BatchDecoder(model: model, tokenizer: tokenizer, slots: configuration.maxBatch,
                                   weights: adapters.isEmpty ? weights : weights.serving(adapters.map(\.adapter)),
                                   prefillBudget: configuration.prefillBudget,
                                   promptCache: configuration.promptCacheBytes > 0 ? PromptCache(byteLimit: configuration.promptCacheBytes) : nil,
                                   draft: draft, cachePrecision: configuration.cachePrecision)
        engine = GenerationEngine(decoder: decoder, monitor: metrics, maxQueue: configuration.maxQueue,
                                  timeout: .milliseconds(Int64(configuration.requestTimeout * 1000)))
    }

    /// The router with every endpoint.
    func router() -> Router<BasicRequestContext> {
        let router = Router()
        router.middlewares.add(APIMiddleware(server: self))
        router.get("/") { _, _ in try Self.chatPage() }
        router.get("/health") { _, _ in Self.json(["status": "ok", "version": .string(swiftGPTVersion)]) }
        router.get("/metrics") { [metrics] _, _ in
            Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4"], body: .init(byteBuffer: ByteBuffer(bytes: metrics.exposition())))
        }
        router.get("/v1/models") { [self] _, _ in
            Self.json(["object": "list", "data": .array(([nil] + served.adapters.indices.map { $0 }).map(modelObject))])
        }
        router.get("/v1/models/{id}") { [self] _, context in
            Self.json(modelObject(try served.adapter(named: context.parameters.get("id") ?? "")))
        }
        router.post("/v1/completions") { [self] request, _ in try await complete(request, chat: false) }
        router.post("/v1/chat/completions") { [self] request, _ in try await complete(request, chat: true) }
        router.post("/tokenize") { [self] request, _ in try await tokenize(request) }
        router.post("/detokenize") { [self] request, _ in try await detokenize(request) }
        return router
    }

    /// Serves until SIGINT or SIGTERM, then stops accepting connections, lets the requests in flight finish and
    /// returns. `onListening` gets the bound port.
    public func run(onListening: @escaping @Sendable (Int) -> Void = { _ in }) async throws {
        TensorMemory.poolLimitBytes = configuration.poolBytes
        engine.start()
        defer { engine.stop() }
        let receiveTimeout = TimeAmount.nanoseconds(Int64(configuration.receiveTimeout * 1e9))
        let maxConnections = configuration.maxConnections, connections = ConnectionGuard.Count()
        let app = Application(
            router: router(),
            server: .http1(configuration: .init(additionalChannelHandlers: [
                ConnectionGuard(receiveTimeout: receiveTimeout, maxConnections: maxConnections, count: connections),
            ])),
            configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "SwiftGPT"),
            onServerRunning: { channel in onListening(channel.localAddress?.port ?? 0) })
        try await app.runService()
    }

    /// `/v1/models`' entry for the model (nil) or one of its adapters, which names the model as its parent.
    private func modelObject(_ adapter: Int?) -> JSONValue {
        var object: [String: JSONValue] = ["id": .string(adapter.map { served.adapters[$0] } ?? served.name), "object": "model",
                                           "created": JSONValue(started), "owned_by": "swiftgpt",
                                           "context_length": JSONValue(served.contextLength), "swiftgpt_version": .string(swiftGPTVersion)]
        if adapter != nil { object["parent"] = .string(served.name) }
        return .object(object)
    }

    static func json(_ value: JSONValue, status: HTTPResponse.Status = .ok) -> Response {
        Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: value.serialized)))
    }

    /// The request body as JSON, within the size limit.
    private func body(_ request: Request) async throws -> JSONValue {
        if let type = request.headers[.contentType],
           type.split(separator: ";").first?.trimmingCharacters(in: .whitespaces).lowercased() != "application/json" {
            throw APIError.unsupportedMediaType(type)
        }
        if let length = request.headers[.contentLength].flatMap({ Int($0) }), length > configuration.maxBodyBytes {
            throw APIError.bodyTooLarge(limit: configuration.maxBodyBytes)
        }
        let buffer: ByteBuffer
        do {
            buffer = try await request.body.collect(upTo: configuration.maxBodyBytes)
        } catch is NIOTooManyBytesError {
            throw APIError.bodyTooLarge(limit: configuration.maxBodyBytes)
        }
        return try JSONValue.parse(Array(buffer.readableBytesView))
    }

    // MARK: Completions

    private func complete(_ request: Request, chat: Bool) async throws -> Response {
        let body = try await body(request)
        let parsed = chat ? try CompletionRequests.chat(body, model: served) : try CompletionRequests.completion(body, model: served)
        let n = parsed.options.count
        let requests = parsed.prompts.enumerated().map { index, prompt in
            GenerationRequest(prompt: prompt, options: parsed.options, index: index, stream: 0, adapter: parsed.adapter)
        }
        let (ticket, events) = try engine.submit(requests)
        let responses = CompletionResponses(id: (chat ? "chatcmpl-" : "cmpl-") + UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: ""),
                                            created: Int(Date().timeIntervalSince1970),
                                            model: parsed.adapter.map { served.adapters[$0] } ?? served.name, choicesPerPrompt: n)
        let promptTokens = parsed.prompts.reduce(0) { $0 + $1.count }
        if parsed.stream {
            let stream = StreamWriter(responses: responses, chat: chat, parsed: parsed, promptTokens: promptTokens)
            return Response(status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-cache"],
                            body: ResponseBody { writer in
                                defer { ticket.cancel() }
                                try await stream.write(events, to: &writer)
                            })
        }
        var completions: [Completion] = []
        try await withTaskCancellationHandler {
            for try await event in events {
                if case .finished(let completion) = event { completions.append(completion) }
            }
        } onCancel: {
            ticket.cancel()
        }
        guard completions.count == requests.count * n else { throw APIError.internalError("the generation was cancelled") }
        let usage = CompletionResponses.usage(prompt: promptTokens, completion: completions.reduce(0) { $0 + $1.tokens.count })
        if chat {
            var replies: [Int: String] = [:]
            for c in completions { replies[c.choice] = ReplyPrefixRemover.removing(parsed.replyPrefix, from: c.text) }
            return Self.json(responses.chat(completions, replies: replies, usage: usage))
        }
        let firstTokens = try parsed.prompts.map { try served.tokenizer.decode([$0[0]]) }
        return Self.json(responses.completion(completions, firstTokens: firstTokens, usage: usage))
    }

    // MARK: Tokens

    private func tokenize(_ request: Request) async throws -> Response {
        let tokens = try CompletionRequests.tokenize(try await body(request), model: served)
        return Self.json(["tokens": .array(tokens.map { JSONValue(Int($0)) }), "count": JSONValue(tokens.count)])
    }

    private func detokenize(_ request: Request) async throws -> Response {
        Self.json(["content": .string(try CompletionRequests.detokenize(try await body(request), model: served))])
    }

    // MARK: Chat page

    private static func chatPage() throws -> Response {
        guard let url = Bundle.module.url(forResource: "index", withExtension: "html", subdirectory: "chat"),
              let page = try? Data(contentsOf: url) else {
            throw APIError.internalError("the chat page is missing from the installation")
        }
        return Response(status: .ok, headers: [.contentType: "text/html; charset=utf-8"], body: .init(byteBuffer: ByteBuffer(bytes: page)))
    }
}

/// Turns a generation's events into server-sent events: one chunk per piece of text, a final chunk per choice with
/// its finish reason, the usage on request, then `data: [DONE]`. An error after the stream began is sent as an
/// `error` event.
struct StreamWriter: Sendable {
    let responses: CompletionResponses
    let chat: Bool
    let parsed: ParsedRequest
    let promptTokens: Int

    func write(_ events: AsyncThrowingStream<GenerationEvent, any Error>, to writer: inout any ResponseBodyWriter) async throws {
        var pendingLogprobs: [Int: [TokenLogprob]] = [:]
        var started: Set<Int> = []
        /// Chat replies: each one's opening held back until it is known whether it is the template's reply prefix.
        var prefixRemovers: [Int: ReplyPrefixRemover] = [:]
        var generated = 0
        let wantLogprobs = parsed.options.logprobs != nil
        func send(_ value: JSONValue, to writer: inout any ResponseBodyWriter) async throws {
            try await writer.write(ByteBuffer(bytes: Array("data: ".utf8) + value.serialized + Array("\n\n".utf8)))
        }
        /// Ends the stream with an error event.
        func fail(_ error: APIError, _ writer: inout any ResponseBodyWriter) async throws {
            try await send(error.body, to: &writer)
            try await writer.finish(nil)
        }
        do {
            for try await event in events {
                switch event {
                case .token(let prompt, let choice, let logprob):
                    pendingLogprobs[responses.index(prompt: prompt, choice: choice), default: []].append(logprob)
                case .text(let prompt, let choice, let delta):
                    let index = responses.index(prompt: prompt, choice: choice)
                    let logprobs = wantLogprobs ? pendingLogprobs.removeValue(forKey: index) ?? [] : nil
                    if chat {
                        if !started.contains(index) {
                            started.insert(index)
                            try await send(responses.chatChunk(choice: choice, delta: ["role": "assistant", "content": ""], logprobs: nil, finish: nil), to: &writer)
                            prefixRemovers[index] = ReplyPrefixRemover(prefix: parsed.replyPrefix)
                        }
                        guard let shown = prefixRemovers[index]?.next(delta) else { continue }
                        try await send(responses.chatChunk(choice: choice, delta: ["content": .string(shown)], logprobs: logprobs, finish: nil), to: &writer)
                    } else {
                        try await send(responses.completionChunk(prompt: prompt, choice: choice, text: delta, logprobs: logprobs, finish: nil), to: &writer)
                    }
                case .finished(let completion):
                    generated += completion.tokens.count
                    let index = responses.index(prompt: completion.prompt, choice: completion.choice)
                    let logprobs = wantLogprobs ? pendingLogprobs.removeValue(forKey: index) ?? [] : nil
                    if chat {
                        if !started.contains(index) {
                            try await send(responses.chatChunk(choice: completion.choice, delta: ["role": "assistant", "content": ""], logprobs: nil, finish: nil), to: &writer)
                        }
                        try await send(responses.chatChunk(choice: completion.choice, delta: [:], logprobs: logprobs, finish: completion.finishReason), to: &writer)
                    } else {
                        try await send(responses.completionChunk(prompt: completion.prompt, choice: completion.choice, text: "",
                                                                 logprobs: logprobs, finish: completion.finishReason), to: &writer)
                    }
                }
            }
        } catch let error as GenerationError {
            return try await fail(APIError(error), &writer)
        } catch let error as APIError {
            return try await fail(error, &writer)
        }
        if parsed.includeUsage {
            try await send(responses.usageChunk(object: chat ? "chat.completion.chunk" : "text_completion",
                                                usage: CompletionResponses.usage(prompt: promptTokens, completion: generated)), to: &writer)
        }
        try await writer.write(ByteBuffer(string: "data: [DONE]\n\n"))
        try await writer.finish(nil)
    }
}

/// Every request passes through here: the API key check, OpenAI-style error bodies for every failure (a 404 for
/// an unknown path, 4xx for bad input, 500 for the unexpected) and the request counters.
struct APIMiddleware: RouterMiddleware {
    typealias Context = BasicRequestContext
    let server: OpenAIServer

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let path = request.uri.path
        let endpoint = ["/v1/completions", "/v1/chat/completions", "/v1/models", "/tokenize", "/detokenize", "/health", "/metrics", "/"]
            .first { $0 == path } ?? (path.hasPrefix("/v1/models/") ? "/v1/models" : "other")
        do {
            if let key = server.configuration.apiKey, path != "/", path != "/health" {
                guard request.headers[.authorization] == "Bearer \(key)" else { throw APIError.unauthorized }
            }
            let response = try await next(request, context)
            server.metrics.countRequest(endpoint: endpoint, status: Int(response.status.code))
            return response
        } catch {
            let apiError: APIError
            switch error {
            case let e as APIError: apiError = e
            case let e as GenerationError: apiError = APIError(e)
            case let e as HTTPError where e.status == .notFound: apiError = .notFound(path)
            case let e as HTTPError:
                apiError = APIError(status: e.status, message: e.body ?? e.status.reasonPhrase, type: "invalid_request_error")
            case is NIOTooManyBytesError: apiError = .bodyTooLarge(limit: server.configuration.maxBodyBytes)
            case let e as TokenizerError: apiError = .invalidRequest(e.message)
            default: apiError = .internalError("\(error)")
            }
            server.metrics.countRequest(endpoint: endpoint, status: Int(apiError.status.code))
            return try apiError.response(from: request, context: context)
        }
    }
}
