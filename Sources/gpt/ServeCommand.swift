import ArgumentParser
import Foundation
import SwiftGPT

struct ServeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve a model over an OpenAI-compatible HTTP API, with a chat page.",
        discussion: """
        Endpoints: POST /v1/completions and /v1/chat/completions (streaming with "stream": true), GET /v1/models, \
        POST /tokenize and /detokenize, GET /health, GET /metrics (Prometheus) and a chat page at /. Requests decode \
        together (continuous batching, at most --max-batch completions); more wait in a queue of --max-queue, beyond \
        which the server answers 429. Chat messages are rendered with the model's chat_template.json (default: the \
        HH-RLHF form "\\n\\nHuman: …\\n\\nAssistant: …"). Request bodies must be JSON (Content-Type: \
        application/json or none; 415 otherwise). SIGINT or SIGTERM stops accepting connections, lets the \
        requests in flight finish and exits 0. Low-rank adapters given with --lora-module NAME=DIR are served over the \
        one copy of the model: a request whose "model" is NAME decodes with that adapter (applied beside the \
        model's weights, in fp32, sequences of different adapters in one batch), and GET /v1/models lists them with \
        the model as their parent. --adapter, by contrast, merges one adapter into the weights as they load.
        """
    )

    @OptionGroup var source: DecodingModelOptions
    @OptionGroup var draft: DraftModelOptions
    @Option(help: "Address to bind.") var host = "127.0.0.1"
    @Option(help: "Port (0: any free one; the address is printed).") var port = 8080
    @Option(help: "Completions decoding together at most.") var maxBatch = 16
    @Option(help: "Requests waiting at most before the server answers 429.") var maxQueue = 64
    @Option(help: "Require this key as 'Authorization: Bearer KEY' (also read from the GPT_API_KEY environment variable).") var apiKey: String?
    @Option(help: "The model name clients send (default: the model directory's name).") var servedModelName: String?
    @Option(name: .customLong("lora-module"), help: "A low-rank adapter served beside the model, as NAME=DIR (a PEFT LoRA folder, such as a training run's with --lora-rank): requests whose 'model' is NAME decode with it (repeatable).")
    var loraModules: [String] = []
    @Option(help: "Longest a request may take, in seconds.") var timeout: Double = 600
    @Option(help: "Largest request body, in bytes (413 beyond).") var maxBodyBytes = 8 << 20
    @Option(help: "Seconds a connection has to deliver a whole request, from its opening or the end of its previous response; slower or idle connections are closed.")
    var receiveTimeout: Double = 30
    @Option(help: "Connections open at once at most; a request on one beyond them is answered 503.") var maxConnections = 2048
    @Option(help: "Bytes of released tensor buffers kept for reuse while serving (all are returned to the system when idle).")
    var poolBytes = 32 << 20
    @Option(help: "Prompt tokens read per decoding step at most, so that long prompts do not stall running streams.") var prefillBudget = 256
    @Option(help: "Bytes of keys and values kept for prompts that begin with a sequence decoded before (a chat's earlier turns, a shared system prompt), which then compute only their other tokens; 0 turns the prompt cache off.")
    var cacheBytes = 512 << 20

    func run() throws {
        // A server runs for weeks: two malloc arenas fragment less than glibc's default of eight per core, and
        // blocks of 256 KiB and more (logits, prompt activations) are mapped and unmapped whole rather than left in
        // the heap's holes.
        TensorMemory.limitAllocatorArenas(2)
        TensorMemory.fixMappingThreshold(256 << 10)
        let (gpt, tok, weights) = try source.load()
        let template = try source.chatTemplate()
        let adapters = try loraModules.map { module -> (name: String, adapter: LowRankAdapter) in
            guard let equals = module.firstIndex(of: "="), equals != module.startIndex, module.index(after: equals) != module.endIndex else {
                throw ValidationError("--lora-module takes NAME=DIR, got '\(module)'")
            }
            let folder = try ModelLoading.resolve(String(module[module.index(after: equals)...]))
            return (String(module[..<equals]), try LowRankAdapterFiles.loadForServing(from: folder, base: gpt))
        }
        var configuration = ServerConfiguration()
        configuration.host = host
        configuration.port = port
        configuration.maxBatch = maxBatch
        configuration.maxQueue = maxQueue
        configuration.apiKey = apiKey ?? ProcessInfo.processInfo.environment["GPT_API_KEY"]
        configuration.servedModelName = servedModelName ?? URL(fileURLWithPath: source.model).standardizedFileURL.lastPathComponent
        configuration.requestTimeout = timeout
        configuration.maxBodyBytes = maxBodyBytes
        configuration.receiveTimeout = receiveTimeout
        configuration.maxConnections = maxConnections
        configuration.poolBytes = poolBytes
        raiseOpenFileLimit(toServe: maxConnections)
        configuration.prefillBudget = prefillBudget
        configuration.promptCacheBytes = cacheBytes
        configuration.precision = source.precision
        configuration.cachePrecision = source.cachePrecision
        let server: OpenAIServer
        do {
            server = try OpenAIServer(model: gpt, tokenizer: tok, chatTemplate: template, configuration: configuration, weights: weights,
                                      adapters: adapters, draft: try draft.load(for: gpt, tokenizer: tok, precision: source.precision))
        } catch let error as GenerationError {
            throw ValidationError(error.message)
        }
        let host = self.host, name = configuration.servedModelName
        let finished = DispatchSemaphore(value: 0)
        nonisolated(unsafe) var failure: (any Error)?
        Task.detached {
            do {
                try await server.run { port in
                    print("Serving \(name) on http://\(host):\(port) (OpenAI API under /v1, chat page at /)")
                    fflush(stdout)
                }
            } catch {
                failure = error
            }
            finished.signal()
        }
        finished.wait()
        if let failure { throw CommandError("the server stopped: \(failure)") }
    }
}

/// Raises the soft limit on open files toward the hard one, so that `--max-connections` sockets can be open
/// (each is a file descriptor); says so when the hard limit is lower.
private func raiseOpenFileLimit(toServe connections: Int) {
    var limit = rlimit()
    guard getrlimit(resourceLimitOpenFiles, &limit) == 0 else { return }
    let wanted = rlim_t(connections + 64)
    if limit.rlim_cur < wanted {
        limit.rlim_cur = min(wanted, limit.rlim_max)
        _ = setrlimit(resourceLimitOpenFiles, &limit)
    }
    if limit.rlim_cur < wanted {
        FileHandle.standardError.write(Data("warning: at most \(limit.rlim_cur) files may be open (ulimit -n); fewer than --max-connections \(connections) connections will be accepted\n".utf8))
    }
}

#if os(Linux)
private let resourceLimitOpenFiles = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
#else
private let resourceLimitOpenFiles = RLIMIT_NOFILE
#endif
