import Foundation
import GPTHub
import GPTModels
import GPTServer
import GPTTraining
import TensorCore
import Tokenizers

// libFuzzer targets for every parser of untrusted bytes (built by `make fuzz`, which compiles the package with
// -sanitize=fuzzer,address): FUZZ_TARGET names the parser the inputs go to. An input may be refused with an error;
// it must never crash, trap, leak, hang or allocate without bound.

/// The parsers, by the name FUZZ_TARGET gives.
let targets: [String: (Data) throws -> Void] = [
    "safetensors": fuzzSafeTensors, "config": fuzzConfig, "tokenizer": fuzzTokenizerFiles, "tokenizer-json": fuzzTokenizerJSON,
    "chat-template": fuzzChatTemplate, "task-data": fuzzTaskData, "request": fuzzRequest, "hub-answer": fuzzHubAnswer,
    "adapter": fuzzAdapter, "gguf": fuzzGGUF,
]

nonisolated(unsafe) var chosen: ((Data) throws -> Void)?
/// A folder of this process for the files the parsers read.
let scratch: URL = {
    let url = URL(fileURLWithPath: "/dev/shm").appendingPathComponent("swiftgpt-fuzz-\(getpid())")
    try? FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    atexit { try? FileManager.default.removeItem(atPath: "/dev/shm/swiftgpt-fuzz-\(getpid())") }
    return url
}()

/// libFuzzer's driver (SwiftPM names an executable's entry point after its module, so libFuzzer's own `main` is not
/// the one linked: this entry point hands the arguments to the driver).
@_silgen_name("LLVMFuzzerRunDriver")
func runFuzzerDriver(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
                     _ test: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt) -> CInt

@_cdecl("swiftgpt_fuzz_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var count = argc, arguments = argv
    return runFuzzerDriver(&count, &arguments) { bytes, size in fuzzOneInput(bytes, size) }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ bytes: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    guard let bytes else { return 0 }
    if chosen == nil {
        let name = ProcessInfo.processInfo.environment["FUZZ_TARGET"] ?? ""
        guard let target = targets[name] else {
            FileHandle.standardError.write(Data("set FUZZ_TARGET to one of: \(targets.keys.sorted().joined(separator: ", "))\n".utf8))
            exit(2)
        }
        chosen = target
    }
    try? chosen!(Data(bytes: bytes, count: count))
    return 0
}

private func file(_ name: String, _ data: Data) throws -> URL {
    let url = scratch.appendingPathComponent(name)
    try data.write(to: url)
    return url
}

/// The bytes before and after the first zero byte (two files in one input).
private func split(_ data: Data) -> (Data, Data?) {
    guard let zero = data.firstIndex(of: 0) else { return (data, nil) }
    return (data[..<zero], data[(zero + 1)...])
}

func fuzzSafeTensors(_ data: Data) throws {
    let tensors = try SafeTensors(contentsOf: try file("model.safetensors", data))
    for name in tensors.names {
        _ = try? tensors.tensor(name)
        _ = try? tensors.integers(name)
    }
}

/// A GGUF file: parsed, every tensor SwiftGPT reads decoded, then opened as a GPT-2 with its tokenizer.
func fuzzGGUF(_ data: Data) throws {
    let url = try file("model.gguf", data)
    if let parsed = try? GGUFFile(contentsOf: url) {
        for tensor in parsed.tensors where tensor.type != nil {
            let values = Tensor(uninitializedShape: [tensor.rowLength * tensor.rowCount])
            try? parsed.read(tensor.name, into: values.pointer)
        }
    }
    _ = try GGUFImport.load(from: url)
}

/// A config.json beside the weights of a tiny GPT-2 (the seeds' configuration), loaded as a model folder.
func fuzzConfig(_ data: Data) throws {
    let folder = scratch.appendingPathComponent("model")
    if !FileManager.default.fileExists(atPath: folder.appendingPathComponent("model.safetensors").path) {
        let config = GPTConfig(vocabularySize: 23, contextLength: 16, layerCount: 2, headCount: 2, embeddingWidth: 12)
        try HuggingFaceCheckpoint.save(try GPTModel(config: config, seed: 1), to: folder)
    }
    try data.write(to: folder.appendingPathComponent("config.json"))
    _ = try? HuggingFaceCheckpoint.readConfig(folder.appendingPathComponent("config.json"))
    _ = try HuggingFaceCheckpoint.load(from: folder)
}

/// A tiny GPT-2 (the seeds' configuration: 2 blocks, width 12, 23 tokens).
let tinyBase = try! GPTModel(config: GPTConfig(vocabularySize: 23, contextLength: 16, layerCount: 2, headCount: 2, embeddingWidth: 12), seed: 1)

/// A tiny GPT-J of the same size: rotary positions, and separate q/k/v projections in its checkpoints (and adapters).
let tinyGPTJ: GPTModel = {
    var config = GPTConfig(vocabularySize: 23, contextLength: 16, layerCount: 2, headCount: 2, embeddingWidth: 12,
                           positions: .rotary, layout: .parallelSharedNorm, tiedOutputEmbedding: false)
    (config.rotaryDimensions, config.attentionBias, config.attentionOutputBias, config.outputBias) = (4, false, false, true)
    return try! GPTModel(config: config, seed: 1)
}()

/// adapter_config.json, a zero byte, then adapter_model.safetensors: a LoRA adapter applied to the tiny GPT-2 and to
/// the tiny GPT-J.
func fuzzAdapter(_ data: Data) throws {
    let folder = scratch.appendingPathComponent("adapter")
    try? FileManager.default.removeItem(at: folder)
    try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    let (first, second) = split(data)
    try first.write(to: folder.appendingPathComponent("adapter_config.json"))
    try (second ?? Data()).write(to: folder.appendingPathComponent("adapter_model.safetensors"))
    for base in [tinyBase, tinyGPTJ] {
        let config = base.config
        if let model = try? LowRankAdapterFiles.load(from: folder, base: try base.adapted(vocabularySize: config.vocabularySize, taskHead: nil, seed: 0)) {
            model.mergeAdapter()
        }
    }
}

/// vocab.json, a zero byte, then merges.txt; or, without a zero byte, char_tokenizer.json. The tokenizer read is
/// then used to encode and decode.
func fuzzTokenizerFiles(_ data: Data) throws {
    let folder = scratch.appendingPathComponent("tokenizer")
    try? FileManager.default.removeItem(at: folder)
    try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    let (first, second) = split(data)
    if let second {
        try first.write(to: folder.appendingPathComponent("vocab.json"))
        try second.write(to: folder.appendingPathComponent("merges.txt"))
    } else {
        try first.write(to: folder.appendingPathComponent("char_tokenizer.json"))
    }
    let tokenizer = try TokenizerLoading.load(directory: folder)
    let ids = try tokenizer.encode("Hello world, hello!\n")
    _ = try tokenizer.decode(ids)
}

/// A Hugging Face `tokenizer.json`.
func fuzzTokenizerJSON(_ data: Data) throws {
    let folder = scratch.appendingPathComponent("tokenizer-json")
    try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    try data.write(to: folder.appendingPathComponent("tokenizer.json"))
    let tokenizer = try TokenizerLoading.load(directory: folder)
    let ids = try tokenizer.encode("Hello  world,   hello!\n <|endoftext|>")
    _ = try tokenizer.decode(ids)
}

let gpt2 = try! TokenizerLoading.gpt2()

func fuzzChatTemplate(_ data: Data) throws {
    let template = try ChatTemplate.load(file: try file("chat_template.json", data))
    let messages = [ChatMessage(role: .system, content: "Be brief."), ChatMessage(role: .user, content: "Hi"),
                    ChatMessage(role: .assistant, content: "Hello"), ChatMessage(role: .user, content: "Bye")]
    _ = template.render(messages, addGenerationPrompt: true)
    _ = try? template.tokens(messages, addGenerationPrompt: true, tokenizer: gpt2)
    _ = try? template.trainingTokens(messages, tokenizer: gpt2)
    _ = try? template.replyStops(gpt2)
}

/// One JSONL file read as every kind of task data: fine-tuning tasks, preference pairs and demonstrations.
func fuzzTaskData(_ data: Data) throws {
    let url = try file("data.jsonl", data)
    for task in InputFormat.Task.allCases {
        if let examples = try? TaskDataset.load(url, task: task, labelsRequired: false) {
            let format = InputFormat(task: task, start: 50257, delimiter: 50258, extract: 50259)
            _ = try? format.encode(examples, from: url, tokenizer: gpt2, contextLength: 32)
        }
    }
    if let pairs = try? PreferenceDataset.load(url) {
        _ = try? PreferenceDataset.encode(pairs, from: url, tokenizer: gpt2, contextLength: 32)
    }
    _ = try? DemonstrationDataset.load(url)
}

let served = ServedModel(name: "gpt", tokenizer: gpt2, contextLength: 64, vocabularySize: 50257,
                         chatTemplate: .default, maxChoices: 4)

/// A request body as each endpoint reads it.
func fuzzRequest(_ data: Data) throws {
    let body = try JSONValue.parse(Array(data))
    _ = try? CompletionRequests.completion(body, model: served)
    _ = try? CompletionRequests.chat(body, model: served)
    _ = try? CompletionRequests.tokenize(body, model: served)
    _ = try? CompletionRequests.detokenize(body, model: served)
}

/// What a Hub server answers (untrusted: the endpoint is whatever HF_ENDPOINT names): a model-info JSON, then,
/// after a zero byte, a safetensors index checked against its file list; the first line also as an ETag and a size.
func fuzzHubAnswer(_ data: Data) throws {
    let (first, second) = split(data)
    let line = String(decoding: first.prefix { $0 != 0x0A }, as: UTF8.self)
    _ = try? HubDownload.blobName(etag: line, what: "fuzz")
    _ = try? HubDownload.byteCount(line, what: "fuzz")
    let files = (try? HubDownload.parseModelInfo(first, what: "fuzz").files) ?? ["model-00001-of-00002.safetensors"]
    _ = try HubDownload.shardNames(index: second ?? Data(), repository: "fuzz/model", available: files)
}
