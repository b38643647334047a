import ArgumentParser
import Foundation
import SwiftGPT
import Tokenizers

/// The model a decoding command (`generate`, `chat`, `serve`) opens: its folder or Hub name, tokenizer and weight format.
struct DecodingModelOptions: ParsableArguments {
    @Option(help: "Model directory (a SwiftGPT checkpoint, a training output directory or a Hugging Face folder), a GGUF file of a GPT-2 (llama.cpp's format), or a Hub name (ORG/NAME[@REVISION]), downloaded into Hugging Face's cache unless it is there (see gpt pull).")
    var model: String
    @Option(help: "A low-rank adapter to apply to the model: a PEFT LoRA folder, such as a training run's with --lora-rank (merged into the weights as they load).") var adapter: String?
    @Option(help: "Tokenizer (default: the one in the model directory, or gpt2).") var tokenizer: String?
    @Option(help: "Weights to decode with: fp32, bf16, int8 (per output channel) or int4 (per 32 inputs); fewer bits read less memory a token.")
    var precision = WeightFormat.float32
    @Option(help: "Keys and values the cache keeps: fp32, or bf16 (half the memory, and half the bytes attention reads).")
    var cachePrecision = CachedAttention.Cache.Precision.float32

    /// The model with its tokenizer and the weights decoding streams, in `precision`.
    func load() throws -> (GPTModel, any Tokenizer, DecodeWeights) {
        try ModelLoading.loadForDecoding(model, tokenizer: tokenizer, adapter: adapter, format: precision)
    }

    /// The model's chat template (HH-RLHF's form when the folder has none).
    func chatTemplate() throws -> ChatTemplate { try ChatTemplate.load(model: model) }
}

/// A draft model for speculative decoding (`gpt generate` and `gpt serve`).
struct DraftModelOptions: ParsableArguments {
    @Option(help: "A smaller model with the same tokenizer that proposes tokens for --model to check (speculative decoding: the tokens are --model's; faster when the draft guesses well, and plain decoding when it does not). Loaded in --precision.")
    var draftModel: String?
    @Option(help: "Tokens the draft proposes a step (1-16).") var draftTokens = 4

    /// The --draft-model in `precision`, checked against the model and its tokenizer; nil without one.
    func load(for target: GPTModel, tokenizer: any Tokenizer, precision: WeightFormat) throws -> DraftModel? {
        guard let draftModel else { return nil }
        let (model, draftTokenizer, weights) = try ModelLoading.loadForDecoding(draftModel, tokenizer: nil, adapter: nil, format: precision)
        do {
            let draft = try DraftModel(model: model, weights: weights, tokens: draftTokens, for: target)
            if let difference = DraftModel.tokenizerDifference(draftTokenizer, tokenizer, vocabulary: target.config.vocabularySize) {
                throw ValidationError("--draft-model \(draftModel): its tokenizer is not the model's: \(difference)")
            }
            return draft
        } catch let error as GenerationError {
            throw ValidationError("--draft-model \(draftModel): \(error.message)")
        }
    }
}

/// The start values of the sampling options of one command: `gpt generate` starts from the OpenAI API's,
/// `gpt chat` from values suited to conversation.
protocol SamplingDefaults {
    static var maxTokens: Int { get }
    static var temperature: Float { get }
    static var topP: Float { get }
}

enum CompletionSamplingDefaults: SamplingDefaults {
    static let maxTokens = 128
    static let temperature: Float = 1
    static let topP: Float = 1
}

enum ChatSamplingDefaults: SamplingDefaults {
    static let maxTokens = 256
    static let temperature: Float = 0.7
    static let topP: Float = 0.9
}

/// How tokens are drawn, as `gpt generate` and `gpt chat` take it (the server reads the same from request fields).
struct SamplingArguments<Defaults: SamplingDefaults>: ParsableArguments {
    @Option(name: [.customLong("max-tokens")], help: "New tokens at most per completion (per reply in gpt chat).") var maxTokens = Defaults.maxTokens
    @Option(help: "Sampling temperature; 0 is greedy.") var temperature = Defaults.temperature
    @Option(help: "Sample among the k most likely tokens.") var topK: Int?
    @Option(help: "Nucleus sampling: the smallest set with this much probability, in (0, 1].") var topP = Defaults.topP
    @Option(help: "Drop tokens below this fraction of the top token's probability.") var minP: Float = 0
    @Option(help: "Penalty for tokens already present (1: off).") var repetitionPenalty: Float = 1
    @Option(help: "OpenAI presence penalty.") var presencePenalty: Float = 0
    @Option(help: "OpenAI frequency penalty.") var frequencyPenalty: Float = 0
    @Option(help: "Bias a token: ID:BIAS (repeatable).") var logitBias: [String] = []
    @Option(help: "A stop sequence (repeatable).") var stop: [String] = []
    @Flag(help: "Keep going after the end-of-text token.") var ignoreEndOfText = false
    @Option(help: "Random seed.") var seed: UInt64 = 0

    /// The options these arguments give, changed by `adjust` (a command's own options), then validated.
    func options(adjusting adjust: (inout SamplingOptions) throws -> Void = { _ in }) throws -> SamplingOptions {
        var options = SamplingOptions()
        options.maxNewTokens = maxTokens
        options.temperature = temperature
        options.topK = topK
        options.topP = topP
        options.minP = minP
        options.repetitionPenalty = repetitionPenalty
        options.presencePenalty = presencePenalty
        options.frequencyPenalty = frequencyPenalty
        for item in logitBias {
            let parts = item.split(separator: ":")
            guard parts.count == 2, let id = Int32(parts[0]), let bias = Float(parts[1]) else {
                throw ValidationError("--logit-bias takes ID:BIAS, e.g. 50256:-100")
            }
            options.logitBias[id] = bias
        }
        options.stop = stop
        options.stopAtEndOfText = !ignoreEndOfText
        options.seed = seed
        try adjust(&options)
        do { try options.validate() } catch let error as GenerationError { throw ValidationError(error.message) }
        return options
    }
}
