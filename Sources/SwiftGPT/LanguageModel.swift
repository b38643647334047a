import Foundation
import GPTHub
import GPTEvaluation
import GPTModels
import GPTUtilities
import TensorCore
import Tokenizers

/// A GPT model loaded for inference, with its tokenizer and chat template: generate text, hold a chat, score
/// continuations, embed text. One value can be shared by many tasks at once: their generations are decoded together
/// in one batch (continuous batching, as `gpt serve` does), while scoring and embedding take turns.
///
/// ```swift
/// let model = try LanguageModel(directory: URL(fileURLWithPath: "runs/small"))
/// var options = SamplingOptions()
/// options.maxNewTokens = 40
/// for try await event in model.generate("To be or not to be", options: options) {
///     if case .text(_, _, let piece) = event { print(piece, terminator: "") }
/// }
/// ```
public final class LanguageModel: @unchecked Sendable {
    /// The model's architecture and sizes.
    public let configuration: GPTConfig
    /// The tokenizer the model was trained with.
    public let tokenizer: any Tokenizer
    /// How conversations are rendered for the model (its `chat_template.json`, else HH-RLHF's form).
    public let chatTemplate: ChatTemplate
    private let model: GPTModel
    /// The model's matrices in the decoding precision: its only copy of them, shared by generation, scoring and embedding.
    private let weights: DecodeWeights
    private let engine: GenerationEngine
    /// Scoring and embedding run one at a time, on the caller's thread.
    private let lock = NSLock()
    private var scorer: LoglikelihoodScorer?
    private var embeddingSession: InferenceSession?

    /// Loads a model folder: a SwiftGPT checkpoint, a training output folder (its `best/` or `last/`), or a Hugging
    /// Face GPT-2, OpenAI-GPT, GPT-Neo, GPT-NeoX, GPT-J or GPTBigCode folder, with the tokenizer it carries (GPT-2's
    /// when it has none and its vocabulary is GPT-2's).
    /// - Parameters:
    ///   - directory: the model folder.
    ///   - precision: the weights generation, scoring and embedding compute with: `.float32`, `.bfloat16`, `.int8`
    ///     (per output channel) or `.int4` (per 32 inputs of an output channel). The model holds its matrices once, in this precision.
    ///   - concurrentSequences: completions decoded together at most; more wait their turn.
    ///   - maxWaiting: generations waiting for a slot at most; one more fails with a `GenerationError` of reason `.queueFull`.
    public init(directory: URL, precision: WeightFormat = .float32, concurrentSequences: Int = 8, maxWaiting: Int = 256) throws {
        guard concurrentSequences > 0, maxWaiting > 0 else {
            throw GenerationError(.invalidArgument, "concurrentSequences and maxWaiting must be positive, got \(concurrentSequences) and \(maxWaiting)")
        }
        let (model, tokenizer, weights) = try ModelLoading.loadForDecoding(directory.path, format: precision)
        self.model = model
        self.tokenizer = tokenizer
        self.weights = weights
        configuration = model.config
        chatTemplate = try ChatTemplate.load(model: directory.path)
        let decoder = BatchDecoder(model: model, tokenizer: tokenizer, slots: concurrentSequences, weights: weights)
        engine = GenerationEngine(decoder: decoder, maxQueue: maxWaiting, timeout: nil)
        engine.start()
    }

    /// Loads a model by its Hugging Face Hub name (`EleutherAI/pythia-160m`, or `ORG/NAME@REVISION` for a branch, tag
    /// or commit) from Hugging Face's local cache (`$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
    /// `~/.cache/huggingface/hub`, shared with `huggingface_hub` and transformers), downloading it there first when
    /// the cache lacks it: from `$HF_ENDPOINT` (default `https://huggingface.co`), with the token in `$HF_TOKEN` or
    /// Hugging Face's token file, never when `HF_HUB_OFFLINE` is set. Downloads are resumed after an interruption and
    /// each file is checked against the hash the Hub gives for it. The other parameters are those of
    /// ``init(directory:precision:concurrentSequences:maxWaiting:)``.
    public convenience init(hubName name: String, precision: WeightFormat = .float32, concurrentSequences: Int = 8,
                            maxWaiting: Int = 256) throws {
        guard HubCache.Reference(name) != nil else {
            throw GenerationError(.invalidArgument, "'\(name)' is not a Hub name (ORG/NAME or ORG/NAME@REVISION)")
        }
        let snapshot = try ModelLoading.resolve(name, showsProgress: false)
        try self.init(directory: snapshot, precision: precision, concurrentSequences: concurrentSequences, maxWaiting: maxWaiting)
    }

    /// Generations still being read go on to their end; then the engine's thread ends.
    deinit { engine.stop(waiting: false) }

    /// Generates `options.count` continuations of `prompt`, reporting text as it becomes final, each token's
    /// log-probability when `options.logprobs` asks for them, and each completion (its tokens and why it ended) when
    /// it ends. Cancelling the task that reads the stream stops the generation.
    public func generate(_ prompt: String, options: SamplingOptions = SamplingOptions()) -> AsyncThrowingStream<GenerationEvent, any Error> {
        do {
            return try generate(tokens: tokenizer.encode(prompt), options: options)
        } catch {
            return AsyncThrowingStream { $0.finish(throwing: error) }
        }
    }

    /// Generates continuations of a prompt given as token ids (see `generate(_:options:)`).
    public func generate(tokens prompt: [Int32], options: SamplingOptions = SamplingOptions()) -> AsyncThrowingStream<GenerationEvent, any Error> {
        do {
            return try submit(prompt, options: options)
        } catch {
            return AsyncThrowingStream { $0.finish(throwing: error) }
        }
    }

    /// The completions of `prompt`, once all have ended (`options.count` of them, in order).
    public func complete(_ prompt: String, options: SamplingOptions = SamplingOptions()) async throws -> [Completion] {
        var completions: [Completion] = []
        for try await event in generate(prompt, options: options) {
            if case .finished(let completion) = event { completions.append(completion) }
        }
        try Task.checkCancellation()
        return completions.sorted { $0.choice < $1.choice }
    }

    /// A new conversation with this model, opened by `system` when given.
    public func chat(system: String? = nil, options: SamplingOptions = ChatSession.defaultOptions) -> ChatSession {
        ChatSession(model: self, system: system, options: options)
    }

    /// The log-likelihood of `continuation` after `context` (the sum of its tokens' log-probabilities, natural log),
    /// and whether greedy decoding would have produced it: what few-shot evaluation compares between choices.
    public func logLikelihood(of continuation: String, after context: String) throws -> ContinuationScore {
        let request = ScoringRequest(context: try tokenizer.encode(context), continuations: [try tokenizer.encode(continuation)])
        return try lock.withLock {
            let scorer = self.scorer ?? LoglikelihoodScorer(model: model, slots: 1, weights: weights)
            self.scorer = scorer
            return try scorer.score([request])[0][0]
        }
    }

    /// How the final hidden states of a text's tokens become one vector.
    public enum Pooling: Sendable {
        /// The mean over the text's tokens.
        case mean
        /// The last token's state (the one that has seen the whole text).
        case lastToken
    }

    /// An embedding of `text`: the model's final hidden states (after its last layer normalisation), pooled over the
    /// text's tokens; `configuration.embeddingWidth` numbers. The text must fit the model's context.
    public func embedding(of text: String, pooling: Pooling = .mean) throws -> [Float] {
        let ids = try tokenizer.encode(text)
        guard !ids.isEmpty else { throw GenerationError(.emptyInput, "the text to embed is empty") }
        guard ids.count <= configuration.contextLength else {
            throw GenerationError(.exceedsContext, "the text has \(ids.count) tokens, more than the model's context of \(configuration.contextLength)")
        }
        let width = configuration.embeddingWidth
        return try lock.withLock {
            let session = embeddingSession ?? InferenceSession(model: model, sequences: 1, weights: weights)
            embeddingSession = session
            let states = try session.finalHiddenStates(of: ids, sequence: 0).scalars
            switch pooling {
            case .lastToken:
                return Array(states[((ids.count - 1) * width)...])
            case .mean:
                var sums = [Float](repeating: 0, count: width)
                for t in 0..<ids.count { for i in 0..<width { sums[i] += states[t * width + i] } }
                return sums.map { $0 / Float(ids.count) }
            }
        }
    }

    /// Submits a token-id prompt to the shared engine; throws what its options or the engine refuse.
    func submit(_ prompt: [Int32], options: SamplingOptions) throws -> AsyncThrowingStream<GenerationEvent, any Error> {
        try options.validate()
        return try engine.submit([GenerationRequest(prompt: prompt, options: options)]).1
    }
}
