import Foundation
import GPTModels
import TensorCore

/// Everything that defines a training run; stored with each checkpoint so that a run can be resumed exactly.
public struct TrainingConfiguration: Codable, Equatable, Sendable {
    /// Model preset (see `GPTConfig.presets`); the fields below override its sizes.
    public var preset = "baby"
    /// Number of blocks; nil keeps the preset's.
    public var layers: Int?
    /// Attention heads per block; nil keeps the preset's.
    public var heads: Int?
    /// Width of the residual stream (the MLP gets 4 × it); nil keeps the preset's.
    public var width: Int?
    /// Context length of the model; also the length of training windows.
    public var context: Int?
    /// Dropout probability during training; nil keeps the preset's (a fine-tuned model's own when starting from one).
    public var dropout: Float?
    /// Attention kind of each layer, cycled over the layers: `global` (dense), `local`, `strided`, `local+strided`
    /// or `fixed` (e.g. ["global", "local"]: GPT-3's alternation); nil keeps the preset's.
    public var attention: [String]?
    /// Window of the local layers (overrides the preset's; 256 when the preset has none).
    public var window: Int?
    /// Stride of the strided layers, block of the fixed ones (default: the window).
    public var stride: Int?
    /// Summaries per block of the fixed layers (default 8, at most the block).
    public var summaries: Int?

    /// Directory prepared by `gpt prepare` (train.bin, val.bin, meta.json, tokenizer files).
    public var data = "data"
    /// Output directory for checkpoints, metrics and the loss curve.
    public var out = "out"
    /// `scratch`, or a model directory (a SwiftGPT checkpoint or a Hugging Face GPT-2 / OpenAI-GPT / GPT-Neo folder).
    public var initFrom = "scratch"

    /// Sequences (or examples, pairs, responses) in each micro-batch.
    public var batchSize = 12
    /// Micro-batches whose gradients are summed into one optimizer step.
    public var gradientAccumulation = 1
    /// Optimizer steps the run ends after (a fine-tuning run derives it from its epochs).
    public var maxIterations = 2000
    /// Peak learning rate, reached at the end of warmup.
    public var learningRate: Float = 1e-3
    /// Learning rate at the end of the decay, and after it.
    public var minLearningRate: Float = 1e-4
    /// Steps of linear warmup from 0 to `learningRate`.
    public var warmupIterations = 100
    /// Iterations of decay (default: `maxIterations`).
    public var decayIterations: Int?
    /// The shape of the decay after warmup.
    public var schedule = LearningRateSchedule.cosine
    /// AdamW's β₁ (the first moment's decay).
    public var beta1: Float = 0.9
    /// AdamW's β₂ (the second moment's decay).
    public var beta2: Float = 0.99
    /// AdamW's ε.
    public var epsilon: Float = 1e-8
    /// AdamW's decoupled weight decay, applied to parameters of rank ≥ 2 (matrices and embeddings), not to biases or
    /// LayerNorm gains.
    public var weightDecay: Float = 0.1
    /// Global gradient-norm clip; 0 turns clipping off.
    public var gradientClip: Float = 1.0
    /// Steps between evaluations (each followed by a checkpoint).
    public var evalInterval = 250
    /// Batches each pretraining evaluation averages over.
    public var evalIterations = 20
    /// Steps between progress lines and metrics records.
    public var logInterval = 10
    /// Seeds the initial weights, the batches' order and dropout: the same seed gives the same run.
    public var seed: UInt64 = 1337
    /// Matrix-product inputs: bf16 (mixed precision) or fp32; nil chooses bf16 where the CPU multiplies bf16
    /// natively. A run keeps the precision it started with when resumed.
    public var precision: ProductPrecision?
    /// Under `mpirun`: each rank keeps AdamW's moments for its share of the parameters only (ZeRO stage 1), which
    /// divides the optimizer's memory by the number of ranks; the steps are those of the unsharded run.
    public var shardOptimizer = false
    /// Under `mpirun`: seconds a rank waits for the others in a collective operation before it stops the run with
    /// an error (a rank died or hangs).
    public var rankTimeout: Double = 300
    /// How many checkpoints stay besides `last/`: each save also leaves `step-NNNNNNNN/` (its files hard links to
    /// those of `last/` where the file system allows), and the oldest beyond this count are removed; 0 keeps
    /// `last/` (and `best/`) only.
    public var keepCheckpoints = 0
    /// What the run optimises: pretraining on `data` (the default), or fine-tuning, reward modelling, supervised
    /// fine-tuning or PPO of the model in `initFrom`, each with its settings.
    public var objective = Objective.pretraining

    /// The defaults each setting states: pretraining the `baby` preset from scratch on `data`.
    public init() {}

    /// The precision this configuration trains in.
    package var resolvedPrecision: ProductPrecision { precision ?? .machineDefault }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case preset, layers, heads, width, context, dropout, attention, window, stride, summaries, data, out, initFrom, batchSize, gradientAccumulation
        case maxIterations, learningRate, minLearningRate, warmupIterations, decayIterations, beta1, beta2, epsilon
        case weightDecay, gradientClip, evalInterval, evalIterations, logInterval, seed, precision, schedule, objective
        case shardOptimizer, rankTimeout, keepCheckpoints
    }

    /// Reads a configuration in which every field is optional (missing fields keep their defaults); an unknown
    /// field is an error, so a misspelt setting is not silently ignored. The objective may also be given as one of
    /// the keys `fineTuning`, `rewardModeling`, `supervisedFineTuning` or `policyOptimization` at the top level, as
    /// checkpoints written before `objective` existed hold it.
    public init(from decoder: Decoder) throws {
        let legacyObjectiveKeys = Objective.CodingKeys.allCases.filter { $0 != .pretraining }
        let known = Set(CodingKeys.allCases.map(\.rawValue) + legacyObjectiveKeys.map(\.rawValue))
        if let unknown = try decoder.container(keyedBy: AnyCodingKey.self).allKeys.first(where: { !known.contains($0.stringValue) }) {
            throw DecodingError.dataCorrupted(.init(codingPath: [unknown], debugDescription: "unknown setting '\(unknown.stringValue)'; known: \(known.sorted().joined(separator: ", "))"))
        }
        let c = try decoder.container(keyedBy: CodingKeys.self)
        var d = TrainingConfiguration()
        func read<T: Decodable>(_ key: CodingKeys, _ target: inout T) throws {
            if let value = try c.decodeIfPresent(T.self, forKey: key) { target = value }
        }
        func read<T: Decodable>(_ key: CodingKeys, _ target: inout T?) throws {
            if let value = try c.decodeIfPresent(T.self, forKey: key) { target = value }
        }
        try read(.preset, &d.preset); try read(.layers, &d.layers); try read(.heads, &d.heads)
        try read(.width, &d.width); try read(.context, &d.context); try read(.dropout, &d.dropout)
        try read(.attention, &d.attention); try read(.window, &d.window); try read(.stride, &d.stride)
        try read(.summaries, &d.summaries)
        try read(.data, &d.data); try read(.out, &d.out); try read(.initFrom, &d.initFrom)
        try read(.batchSize, &d.batchSize); try read(.gradientAccumulation, &d.gradientAccumulation)
        try read(.maxIterations, &d.maxIterations); try read(.learningRate, &d.learningRate)
        try read(.minLearningRate, &d.minLearningRate); try read(.warmupIterations, &d.warmupIterations)
        try read(.decayIterations, &d.decayIterations); try read(.beta1, &d.beta1); try read(.beta2, &d.beta2)
        try read(.epsilon, &d.epsilon); try read(.weightDecay, &d.weightDecay); try read(.gradientClip, &d.gradientClip)
        try read(.evalInterval, &d.evalInterval); try read(.evalIterations, &d.evalIterations)
        try read(.logInterval, &d.logInterval); try read(.seed, &d.seed); try read(.precision, &d.precision)
        try read(.schedule, &d.schedule); try read(.objective, &d.objective)
        try read(.shardOptimizer, &d.shardOptimizer); try read(.rankTimeout, &d.rankTimeout)
        try read(.keepCheckpoints, &d.keepCheckpoints)
        let legacy = try decoder.container(keyedBy: Objective.CodingKeys.self)
        let legacyKeys = legacyObjectiveKeys.filter { legacy.contains($0) }
        if !legacyKeys.isEmpty {
            guard legacyKeys.count == 1, !c.contains(.objective) else {
                throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription:
                    "a run fine-tunes a task, trains a reward model, fine-tunes on demonstrations or runs PPO: one of them"))
            }
            d.objective = try Objective.decode(legacyKeys[0], from: legacy)
        }
        self = d
    }

    /// Learning rate at `step`: linear warmup, then cosine (nanoGPT's schedule) or linear (GPT-1's fine-tuning)
    /// decay to the minimum.
    package func learningRate(at step: Int) -> Float {
        if step < warmupIterations { return learningRate * Float(step + 1) / Float(warmupIterations + 1) }
        let decay = decayIterations ?? maxIterations
        if step > decay { return minLearningRate }
        let ratio = Double(step - warmupIterations) / Double(max(decay - warmupIterations, 1))
        let coefficient: Float
        switch schedule {
        case .cosine: coefficient = Float(0.5 * (1 + cos(Double.pi * ratio)))
        case .linear: coefficient = Float(1 - ratio)
        }
        return minLearningRate + coefficient * (learningRate - minLearningRate)
    }

    /// The model configuration for a vocabulary of `vocabularySize` tokens.
    package func modelConfig(vocabularySize: Int) throws -> GPTConfig {
        var c = try GPTConfig.preset(preset)
        c.vocabularySize = vocabularySize
        if let layers { c.layerCount = layers }
        if let heads { c.headCount = heads }
        if let width {
            c.embeddingWidth = width
            c.mlpWidth = 4 * width
        }
        if let context { c.contextLength = context }
        if let dropout { c.dropout = dropout }
        let presetWindow = (0..<(c.attentionPatterns?.count ?? 0)).compactMap { c.attentionWindow(layer: $0) }.first
        if let attention {
            c.attentionPatterns = try GPTConfig.patterns(cycling: attention, window: window ?? presetWindow ?? 256, stride: stride,
                                                         summaries: summaries,
                                                         layers: c.layerCount)
        } else if let patterns = c.attentionPatterns {
            // The preset's alternation, over the layer count and with the window asked for.
            c.attentionPatterns = (0..<c.layerCount).map { layer in
                if case .local = patterns[layer % patterns.count], let window { return .local(window: window) }
                return patterns[layer % patterns.count]
            }
        }
        try c.validate()
        return c
    }

    /// Rejects settings that cannot run.
    package func validate() throws {
        func check(_ condition: Bool, _ message: String) throws {
            if !condition { throw ConfigurationError(message: message) }
        }
        try check(batchSize > 0, "batch size must be positive")
        try check(gradientAccumulation > 0, "gradient accumulation must be positive")
        try check(maxIterations >= 0, "max iterations must not be negative")
        try check(learningRate >= 0 && minLearningRate >= 0 && learningRate.isFinite && minLearningRate.isFinite,
                  "learning rates must be finite and not negative")
        try check(warmupIterations >= 0, "warmup iterations must not be negative")
        try check((0..<1).contains(beta1) && (0..<1).contains(beta2), "betas must be in [0, 1)")
        try check(epsilon > 0, "epsilon must be positive")
        try check(weightDecay >= 0 && gradientClip >= 0, "weight decay and gradient clip must not be negative")
        try check(evalInterval > 0 && evalIterations > 0 && logInterval > 0, "eval interval, eval iterations and log interval must be positive")
        try check((0..<1).contains(dropout ?? 0), "dropout must be in [0, 1)")
        try check(rankTimeout > 0, "the rank timeout must be positive")
        try check(keepCheckpoints >= 0, "the number of checkpoints to keep must not be negative")
        try objective.validate()
    }
}

/// How the learning rate falls after warmup.
public enum LearningRateSchedule: String, Codable, Sendable {
    case cosine, linear
}

/// The settings of a fine-tuning run that pretraining does not have.
public struct FineTuningSettings: Codable, Equatable, Sendable {
    /// The kind of task, which sets how examples become token sequences and which head is trained.
    public var task: InputFormat.Task
    /// JSONL files of labelled examples.
    public var train: String
    /// The labelled examples that choose `best/` and are reported at each evaluation (a JSONL file).
    public var dev: String
    /// λ in L = L_task + λ·L_LM (GPT-1: 0.5); 0 turns the auxiliary language-model loss off.
    public var lmWeight: Float = 0.5
    /// Dropout on the pooled state before the head.
    public var headDropout: Float = 0.1
    /// Passes over the training examples.
    public var epochs = 3
    /// Warmup as a fraction of all steps (GPT-1: 0.2%); sets `warmupIterations` when the run starts.
    public var warmupFraction: Float = 0.002
    /// Whether the body keeps the pretrained weights (false: the same architecture from random weights).
    public var pretrained = true
    /// The number of classes of a classification, entailment or integer similarity task; nil: the largest training
    /// label + 1, every class below it present in the training data.
    public var classCount: Int?
    /// The classes' names, label 0's first, as the checkpoint's config.json (`id2label`) and `gpt predict` give them;
    /// nil names them LABEL_0, LABEL_1, …. Their number is the number of classes.
    public var labelNames: [String]?
    /// The most classes a task may have.
    package static let maxClassCount = 1 << 16

    /// Fine-tuning on `task` with the labelled examples in the JSONL files `train` and `dev`.
    public init(task: InputFormat.Task, train: String, dev: String) {
        self.task = task
        self.train = train
        self.dev = dev
    }

    func validate() throws {
        guard lmWeight >= 0, lmWeight.isFinite else { throw ConfigurationError(message: "the LM-loss weight must be finite and not negative") }
        guard (0..<1).contains(headDropout) else { throw ConfigurationError(message: "head dropout must be in [0, 1)") }
        guard epochs > 0 else { throw ConfigurationError(message: "epochs must be positive") }
        guard (0...1).contains(warmupFraction) else { throw ConfigurationError(message: "the warmup fraction must be in [0, 1]") }
        if let classCount, !(2...Self.maxClassCount).contains(classCount) {
            throw ConfigurationError(message: "the number of classes must be between 2 and \(Self.maxClassCount), got \(classCount)")
        }
        if let labelNames {
            guard task != .multipleChoice else { throw ConfigurationError(message: "label names are for classes; a multiple-choice task has none") }
            guard (2...Self.maxClassCount).contains(labelNames.count) else {
                throw ConfigurationError(message: "give between 2 and \(Self.maxClassCount) label names, got \(labelNames.count)")
            }
            guard !labelNames.contains(where: \.isEmpty), Set(labelNames).count == labelNames.count else {
                throw ConfigurationError(message: "label names must be non-empty and distinct: \(labelNames)")
            }
            if let classCount, classCount != labelNames.count {
                throw ConfigurationError(message: "\(labelNames.count) label names for \(classCount) classes")
            }
        }
    }
}

/// The settings of a reward-modelling run that pretraining does not have.
public struct RewardModelingSettings: Codable, Equatable, Sendable {
    /// JSONL files of preference pairs (`{"prompt", "chosen", "rejected"}`).
    public var train: String
    /// The preference pairs that choose `best/` by accuracy (a JSONL file).
    public var dev: String
    /// Passes over the training pairs.
    public var epochs = 1
    /// Warmup as a fraction of all steps; sets `warmupIterations` when the run starts.
    public var warmupFraction: Float = 0.03

    /// Reward modelling on the preference pairs in the JSONL files `train` and `dev`.
    public init(train: String, dev: String) {
        self.train = train
        self.dev = dev
    }

    func validate() throws {
        guard epochs > 0 else { throw ConfigurationError(message: "epochs must be positive") }
        guard (0...1).contains(warmupFraction) else { throw ConfigurationError(message: "the warmup fraction must be in [0, 1]") }
    }
}

/// The settings of a supervised fine-tuning run that pretraining does not have.
public struct SupervisedFineTuningSettings: Codable, Equatable, Sendable {
    /// JSONL files of demonstrations (`{"instruction", "input", "response"}` or `{"messages": […]}`).
    public var train: String
    /// The demonstrations whose loss chooses `best/` (a JSONL file).
    public var dev: String
    /// How conversations become text; saved with every checkpoint.
    public var chatTemplate: ChatTemplate
    /// Passes over the training demonstrations.
    public var epochs = 2
    /// Warmup as a fraction of all steps; sets `warmupIterations` when the run starts.
    public var warmupFraction: Float = 0.03

    /// Supervised fine-tuning on the demonstrations in the JSONL files `train` and `dev`, rendered by `chatTemplate`.
    public init(train: String, dev: String, chatTemplate: ChatTemplate) {
        self.train = train
        self.dev = dev
        self.chatTemplate = chatTemplate
    }

    func validate() throws {
        guard epochs > 0 else { throw ConfigurationError(message: "epochs must be positive") }
        guard (0...1).contains(warmupFraction) else { throw ConfigurationError(message: "the warmup fraction must be in [0, 1]") }
        try chatTemplate.validate(source: "the chat template")
    }
}

/// The settings of a PPO run (InstructGPT's step 3) that pretraining does not have.
public struct PolicyOptimizationSettings: Codable, Equatable, Sendable {
    /// JSONL prompts: `{"prompt": text}` read as it is, or `{"messages": […]}` rendered by the chat template.
    public var prompts: String
    /// A reward model directory, or `classifier:DIR:LABEL`.
    public var reward: String
    /// How prompts given as messages are rendered, and where a reply ends.
    public var chatTemplate: ChatTemplate
    /// Rollouts, each followed by `epochsPerRollout` passes of mini-batch updates.
    public var iterations = 20
    /// Responses sampled per rollout (one per prompt).
    public var rolloutSize = 64
    /// Passes over each rollout's responses.
    public var epochsPerRollout = 4
    /// The most tokens a response may have.
    public var maxNewTokens = 32
    /// Sampling temperature of the rollouts.
    public var temperature: Float = 1
    /// Nucleus-sampling mass of the rollouts (1: the whole distribution).
    public var topP: Float = 1
    /// Sample every response to `maxNewTokens`: the end-of-text token is never sampled (TRL's sentiment recipe).
    public var fixedLength = false
    /// Subtracted from the score of a response that does not end with the end-of-text token (0: none).
    public var unfinishedPenalty: Float = 0
    /// β, the KL penalty's coefficient (its starting value when adaptive).
    public var klCoefficient: Float = 0.05
    /// The KL per response that the adaptive controller steers toward; nil keeps β fixed.
    public var targetKL: Float?
    /// Responses over which the adaptive controller moves β toward the target (Ziegler et al.'s horizon).
    public var klHorizon: Float = 10000
    /// How the per-token KL penalty is estimated from the two log-probabilities.
    public var klEstimator = KLEstimator.k1
    /// GAE's discount γ.
    public var gamma: Float = 1
    /// GAE's λ.
    public var lambda: Float = 0.95
    /// ε of the clipped policy objective.
    public var clipRange: Float = 0.2
    /// ε of the clipped value loss.
    public var valueClipRange: Float = 0.2
    /// The value loss's weight in the loss.
    public var valueCoefficient: Float = 0.1
    /// Whiten the scores of each rollout (mean 0, standard deviation 1) before the KL penalty is added.
    public var whitenScores = false
    /// PPO-ptx: a prepared data directory whose next-token loss is mixed in with weight `pretrainingCoefficient`.
    public var pretrainingData: String?
    /// Weight of the pretraining next-token loss (PPO-ptx's γ); 0 turns it off.
    public var pretrainingCoefficient: Float = 0
    /// Rollouts between logged sample responses.
    public var sampleInterval = 5
    /// Prompts held back from the rollouts (the last ones of the file): at every rollout the policy answers them,
    /// sampled as rollouts are and with the same random streams each time, and their mean score chooses `best/`.
    /// With 0, `best/` follows the rollouts' own mean score.
    public var heldOutPrompts = 32

    /// PPO on the prompts in the JSONL file `prompts`, scored by `reward`, rendered by `chatTemplate`.
    public init(prompts: String, reward: String, chatTemplate: ChatTemplate) {
        self.prompts = prompts
        self.reward = reward
        self.chatTemplate = chatTemplate
    }

    enum CodingKeys: String, CodingKey {
        case prompts, reward, chatTemplate, iterations, rolloutSize, epochsPerRollout, maxNewTokens, temperature, topP
        case fixedLength, unfinishedPenalty, klCoefficient, targetKL, klHorizon, klEstimator, gamma, lambda, clipRange
        case valueClipRange, valueCoefficient, whitenScores, pretrainingData, pretrainingCoefficient, sampleInterval
        case heldOutPrompts
    }

    /// Reads the settings a checkpoint stored; one written before `heldOutPrompts` existed held none back, and
    /// resumes so.
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(prompts: try c.decode(String.self, forKey: .prompts), reward: try c.decode(String.self, forKey: .reward),
                  chatTemplate: try c.decode(ChatTemplate.self, forKey: .chatTemplate))
        iterations = try c.decode(Int.self, forKey: .iterations)
        rolloutSize = try c.decode(Int.self, forKey: .rolloutSize)
        epochsPerRollout = try c.decode(Int.self, forKey: .epochsPerRollout)
        maxNewTokens = try c.decode(Int.self, forKey: .maxNewTokens)
        temperature = try c.decode(Float.self, forKey: .temperature)
        topP = try c.decode(Float.self, forKey: .topP)
        fixedLength = try c.decode(Bool.self, forKey: .fixedLength)
        unfinishedPenalty = try c.decode(Float.self, forKey: .unfinishedPenalty)
        klCoefficient = try c.decode(Float.self, forKey: .klCoefficient)
        targetKL = try c.decodeIfPresent(Float.self, forKey: .targetKL)
        klHorizon = try c.decode(Float.self, forKey: .klHorizon)
        klEstimator = try c.decode(KLEstimator.self, forKey: .klEstimator)
        gamma = try c.decode(Float.self, forKey: .gamma)
        lambda = try c.decode(Float.self, forKey: .lambda)
        clipRange = try c.decode(Float.self, forKey: .clipRange)
        valueClipRange = try c.decode(Float.self, forKey: .valueClipRange)
        valueCoefficient = try c.decode(Float.self, forKey: .valueCoefficient)
        whitenScores = try c.decode(Bool.self, forKey: .whitenScores)
        pretrainingData = try c.decodeIfPresent(String.self, forKey: .pretrainingData)
        pretrainingCoefficient = try c.decode(Float.self, forKey: .pretrainingCoefficient)
        sampleInterval = try c.decode(Int.self, forKey: .sampleInterval)
        heldOutPrompts = try c.decodeIfPresent(Int.self, forKey: .heldOutPrompts) ?? 0
    }

    func validate() throws {
        func check(_ condition: Bool, _ message: String) throws {
            if !condition { throw ConfigurationError(message: message) }
        }
        try check(iterations > 0 && rolloutSize > 0 && epochsPerRollout > 0 && maxNewTokens > 0 && sampleInterval > 0,
                  "iterations, rollout size, epochs per rollout, max new tokens and sample interval must be positive")
        try check(heldOutPrompts >= 0, "the number of held-out prompts must not be negative")
        try check(temperature > 0 && temperature.isFinite && topP > 0 && topP <= 1, "temperature must be positive and top-p in (0, 1]")
        try check(klCoefficient >= 0 && klHorizon > 0 && (targetKL.map { $0 > 0 } ?? true), "β must not be negative, the horizon and target KL must be positive")
        try check((0...1).contains(gamma) && (0...1).contains(lambda), "γ and λ must be in [0, 1]")
        try check(clipRange > 0 && valueClipRange > 0 && valueCoefficient >= 0 && unfinishedPenalty >= 0,
                  "clip ranges must be positive; the value coefficient and unfinished penalty not negative")
        try check(pretrainingCoefficient >= 0 && (pretrainingCoefficient == 0 || pretrainingData != nil),
                  "the pretraining coefficient must not be negative, and needs pretraining data")
        try chatTemplate.validate(source: "the chat template")
    }
}
