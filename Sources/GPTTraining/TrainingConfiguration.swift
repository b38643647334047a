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
    /// Train low-rank adapters (LoRA) of this rank on the frozen model instead of all of its weights; nil trains
    /// every weight. Task heads, and token embeddings that gained rows, train whole beside the adapters.
    public var loraRank: Int?
    /// LoRA's α: the adapters' outputs are scaled by α / rank.
    public var loraAlpha: Float = 16
    /// Dropout on the adapted layers' inputs, before the adapters.
    public var loraDropout: Float = 0.05
    /// The layers of each block that get adapters: `attn` (the query/key/value projection), `proj` (the attention's
    /// output projection), `mlp` (both MLP layers).
    public var loraTargets = LowRankAdapter.Target.allCases.map(\.rawValue)
    /// How a LoRA run holds its frozen base: fp32, or packed in bf16, int8 or int4 as decoding packs weights (a half, a
    /// quarter or about a seventh of the memory; the products read the weights widened to fp32), QLoRA's idea.
    public var loraBasePrecision = WeightFormat.float32
    /// What the run optimises: pretraining on `data` (the default), or fine-tuning, reward modelling, supervised
    /// fine-tuning or PPO of the model in `initFrom`, each with its settings.
    public var objective = Objective.pretraining

    /// The defaults each setting states: pretraining the `baby` preset from scratch on `data`.
    public init() {}

    /// The precision this configuration trains in.
    package var resolvedPrecision: ProductPrecision { precision ?? .machineDefault }

    /// Every setting but the objective, in the order `gpt train --help` lists them.
    package static let settings: [Setting<TrainingConfiguration>] = [
        Setting("preset", \.preset, "Model preset: \(GPTConfig.presets.keys.sorted().joined(separator: ", ")); the settings below override its sizes."),
        Setting("layers", \.layers, "Number of layers (default: the preset's)."),
        Setting("heads", \.heads, "Attention heads (default: the preset's)."),
        Setting("width", \.width, "Embedding width (default: the preset's; the MLP is 4 times it)."),
        Setting("context", \.context, "Context length and training window (default: the preset's)."),
        Setting("dropout", \.dropout, "Dropout probability (default: the preset's, or a fine-tuned model's own)."),
        Setting("attention", \.attention, "Attention kind per layer, cycled: global, local, strided, local+strided, fixed (e.g. global,local alternates as GPT-3; default: the preset's)."),
        Setting("window", \.window, "Window of the local attention layers (default: the preset's, else 256)."),
        Setting("stride", \.stride, "Stride of the strided attention layers, block of the fixed ones (default: the window)."),
        Setting("summaries", \.summaries, "Summaries per block of the fixed attention layers (default 8, at most the block)."),
        Setting("data", \.data, "Prepared data directory (from gpt prepare)."),
        Setting("out", \.out, "Output directory."),
        Setting("initFrom", \.initFrom, "scratch, or a model to start from: a directory (SwiftGPT or Hugging Face GPT-2, OpenAI-GPT, GPT-Neo, GPT-NeoX, GPT-J or GPTBigCode) or a Hub name (ORG/NAME[@REVISION]), downloaded into Hugging Face's cache unless it is there (see gpt pull)."),
        Setting("batchSize", \.batchSize, "Sequences per micro-batch."),
        Setting("gradientAccumulation", \.gradientAccumulation, "Micro-batches per optimizer step."),
        Setting("maxIterations", \.maxIterations, "Optimizer steps in all."),
        Setting("learningRate", \.learningRate, "Peak learning rate."),
        Setting("minLearningRate", \.minLearningRate, "Learning rate at the end of the decay."),
        Setting("warmupIterations", \.warmupIterations, "Linear warmup steps."),
        Setting("decayIterations", \.decayIterations, "Steps of decay (default: max iterations)."),
        Setting("schedule", \.schedule, "Decay after warmup, to the minimum learning rate."),
        Setting("beta1", \.beta1, "AdamW beta1."),
        Setting("beta2", \.beta2, "AdamW beta2."),
        Setting("epsilon", \.epsilon, "AdamW epsilon."),
        Setting("weightDecay", \.weightDecay, "AdamW weight decay (matrices and embeddings only)."),
        Setting("gradientClip", \.gradientClip, "Gradient-norm clip (0: off)."),
        Setting("evalInterval", \.evalInterval, "Steps between evaluations and checkpoints."),
        Setting("evalIterations", \.evalIterations, "Batches per evaluation."),
        Setting("logInterval", \.logInterval, "Steps between metric log lines."),
        Setting("seed", \.seed, "Random seed (weights, batches, dropout)."),
        Setting("precision", \.precision, "Matrix-product inputs: bf16 (mixed precision) or fp32 (default: bf16 where the CPU multiplies bf16 natively)."),
        Setting("shardOptimizer", \.shardOptimizer, "Under mpirun: each rank keeps AdamW's moments for its share of the parameters only (ZeRO stage 1)."),
        Setting("rankTimeout", \.rankTimeout, "Under mpirun: seconds to wait for the other ranks in a collective operation before stopping with an error."),
        Setting("loraRank", \.loraRank, "Train low-rank adapters (LoRA) of this rank on the frozen model, not all its weights; checkpoints are then PEFT adapters (default: off)."),
        Setting("loraAlpha", \.loraAlpha, "LoRA alpha: the adapters' outputs are scaled by alpha / rank."),
        Setting("loraDropout", \.loraDropout, "Dropout on the adapted layers' inputs, before the adapters."),
        Setting("loraTargets", \.loraTargets, "Layers that get adapters: attn (query/key/value), proj (attention output), mlp (both MLP layers)."),
        Setting("loraBasePrecision", \.loraBasePrecision, "How the frozen model is held under LoRA: fp32, or packed in bf16, int8 or int4 as decoding packs weights (a half, a quarter or about a seventh of its memory; products in fp32 over the widened weights)."),
        Setting("keepCheckpoints", \.keepCheckpoints, "Keep the checkpoints of the last K saves too, as step-NNNNNNNN/ folders beside last/ (their files hard links to last/'s; 0: last/ and best/ only)."),
    ]

    /// Reads a configuration in which every setting is optional (a missing one keeps its default); an unknown key
    /// is an error, so a misspelt setting is not silently ignored. The objective may also be given as one of the
    /// keys `fineTuning`, `rewardModeling`, `supervisedFineTuning` or `policyOptimization` at the top level, as
    /// checkpoints written before `objective` existed hold it.
    public init(from decoder: Decoder) throws {
        let objectiveKeys = Objective.CodingKeys.allCases.filter { $0 != .pretraining }
        self = try Self.settings.decode(TrainingConfiguration(), from: decoder,
                                        alsoKnown: ["objective"] + objectiveKeys.map(\.rawValue))
        let c = try decoder.container(keyedBy: AnyCodingKey.self)
        let objectiveKey = AnyCodingKey(stringValue: "objective")
        if let objective = try c.decodeIfPresent(Objective.self, forKey: objectiveKey) { self.objective = objective }
        let legacy = try decoder.container(keyedBy: Objective.CodingKeys.self)
        let legacyKeys = objectiveKeys.filter { legacy.contains($0) }
        if !legacyKeys.isEmpty {
            guard legacyKeys.count == 1, !c.contains(objectiveKey) else {
                throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription:
                    "a run fine-tunes a task, trains a reward model, fine-tunes on demonstrations or runs PPO: one of them"))
            }
            objective = try Objective.decode(legacyKeys[0], from: legacy)
        }
    }

    /// Writes every setting and the objective.
    public func encode(to encoder: Encoder) throws {
        try Self.settings.encode(self, to: encoder)
        var c = encoder.container(keyedBy: AnyCodingKey.self)
        try c.encode(objective, forKey: AnyCodingKey(stringValue: "objective"))
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
        func check(_ condition: Bool, _ setting: String, _ message: String) throws {
            if !condition { throw ConfigurationError(.invalidSetting(setting), message) }
        }
        try check(batchSize > 0, "batchSize", "batch size must be positive")
        try check(gradientAccumulation > 0, "gradientAccumulation", "gradient accumulation must be positive")
        try check(maxIterations >= 0, "maxIterations", "max iterations must not be negative")
        try check(learningRate >= 0 && learningRate.isFinite, "learningRate", "the learning rate must be finite and not negative")
        try check(minLearningRate >= 0 && minLearningRate.isFinite, "minLearningRate", "the minimum learning rate must be finite and not negative")
        try check(warmupIterations >= 0, "warmupIterations", "warmup iterations must not be negative")
        try check((0..<1).contains(beta1), "beta1", "beta1 must be in [0, 1)")
        try check((0..<1).contains(beta2), "beta2", "beta2 must be in [0, 1)")
        try check(epsilon > 0, "epsilon", "epsilon must be positive")
        try check(weightDecay >= 0, "weightDecay", "weight decay must not be negative")
        try check(gradientClip >= 0, "gradientClip", "the gradient clip must not be negative")
        try check(evalInterval > 0, "evalInterval", "the eval interval must be positive")
        try check(evalIterations > 0, "evalIterations", "eval iterations must be positive")
        try check(logInterval > 0, "logInterval", "the log interval must be positive")
        try check((0..<1).contains(dropout ?? 0), "dropout", "dropout must be in [0, 1)")
        try check(rankTimeout > 0, "rankTimeout", "the rank timeout must be positive")
        try check(keepCheckpoints >= 0, "keepCheckpoints", "the number of checkpoints to keep must not be negative")
        if let loraRank {
            try check((1...65536).contains(loraRank), "loraRank", "the LoRA rank must be between 1 and 65536")
            try check(loraAlpha > 0 && loraAlpha.isFinite, "loraAlpha", "LoRA alpha must be finite and positive")
            try check((0..<1).contains(loraDropout), "loraDropout", "LoRA dropout must be in [0, 1)")
            let known = LowRankAdapter.Target.allCases.map(\.rawValue)
            try check(!loraTargets.isEmpty && loraTargets.allSatisfy(known.contains) && Set(loraTargets).count == loraTargets.count,
                      "loraTargets", "LoRA targets are some of \(known.joined(separator: ", ")), each once; got \(loraTargets.joined(separator: ","))")
            try check(initFrom != "scratch", "loraRank", "adapters train on a model: give the model to start from")
        } else {
            try check(loraBasePrecision == .float32, "loraBasePrecision", "a base precision applies to LoRA runs (set loraRank)")
        }
        try objective.validate()
    }
}

/// How the learning rate falls after warmup.
public enum LearningRateSchedule: String, Codable, CaseIterable, Sendable, SettingValue {
    case cosine, linear
}

/// The settings of a fine-tuning run that pretraining does not have.
public struct FineTuningSettings: Equatable, Sendable, ObjectiveSettings {
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

    /// The values a run's settings start from: the defaults, and blanks for the required settings that a file
    /// or command line gives.
    package static let blank = FineTuningSettings(task: .classification, train: "", dev: "")

    /// Every setting, in the order `gpt finetune --help` lists them.
    package static let settings: [Setting<FineTuningSettings>] = [
        Setting("task", \.task, isRequired: true, "The task, which sets how examples become token sequences and which head is trained."),
        Setting("train", \.train, isRequired: true, "Training examples (JSONL)."),
        Setting("dev", \.dev, isRequired: true, "Dev examples (JSONL), evaluated after every epoch."),
        Setting("lmWeight", \.lmWeight, "λ, the weight of the auxiliary language-model loss (0: off)."),
        Setting("headDropout", \.headDropout, "Dropout on the pooled state before the head."),
        Setting("epochs", \.epochs, "Passes over the training set."),
        Setting("warmupFraction", \.warmupFraction, "Warmup as a fraction of all steps."),
        Setting(file: "pretrained", \.pretrained, "Whether the body keeps the pretrained weights."),
        Setting("classCount", \.classCount, option: "classes", "Number of classes of a classification, entailment or integer similarity task (default: the largest training label + 1, every class below it present)."),
        Setting("labelNames", \.labelNames, option: "labels", "Names of the classes, comma-separated, label 0's first (default: LABEL_0, LABEL_1, …); the checkpoint's config.json and gpt predict use them."),
    ]

    func validate() throws {
        guard lmWeight >= 0, lmWeight.isFinite else { throw ConfigurationError(.invalidSetting("lmWeight"), "the LM-loss weight must be finite and not negative") }
        guard (0..<1).contains(headDropout) else { throw ConfigurationError(.invalidSetting("headDropout"), "head dropout must be in [0, 1)") }
        guard epochs > 0 else { throw ConfigurationError(.invalidSetting("epochs"), "epochs must be positive") }
        guard (0...1).contains(warmupFraction) else { throw ConfigurationError(.invalidSetting("warmupFraction"), "the warmup fraction must be in [0, 1]") }
        if let classCount, !(2...Self.maxClassCount).contains(classCount) {
            throw ConfigurationError(.invalidSetting("classCount"), "the number of classes must be between 2 and \(Self.maxClassCount), got \(classCount)")
        }
        if let labelNames {
            guard task != .multipleChoice else { throw ConfigurationError(.invalidSetting("labelNames"), "label names are for classes; a multiple-choice task has none") }
            guard (2...Self.maxClassCount).contains(labelNames.count) else {
                throw ConfigurationError(.invalidSetting("labelNames"), "give between 2 and \(Self.maxClassCount) label names, got \(labelNames.count)")
            }
            guard !labelNames.contains(where: \.isEmpty), Set(labelNames).count == labelNames.count else {
                throw ConfigurationError(.invalidSetting("labelNames"), "label names must be non-empty and distinct: \(labelNames)")
            }
            if let classCount, classCount != labelNames.count {
                throw ConfigurationError(.invalidSetting("labelNames"), "\(labelNames.count) label names for \(classCount) classes")
            }
        }
    }
}

/// The settings of a reward-modelling run that pretraining does not have.
public struct RewardModelingSettings: Equatable, Sendable, ObjectiveSettings {
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

    /// The values a run's settings start from: the defaults, and blanks for the required settings that a file
    /// or command line gives.
    package static let blank = RewardModelingSettings(train: "", dev: "")

    /// Every setting, in the order `gpt reward train --help` lists them.
    package static let settings: [Setting<RewardModelingSettings>] = [
        Setting("train", \.train, isRequired: true, "Training pairs (JSONL)."),
        Setting("dev", \.dev, isRequired: true, "Dev pairs (JSONL), evaluated after every epoch."),
        Setting("epochs", \.epochs, "Passes over the training set."),
        Setting("warmupFraction", \.warmupFraction, "Warmup as a fraction of all steps."),
    ]

    func validate() throws {
        guard epochs > 0 else { throw ConfigurationError(.invalidSetting("epochs"), "epochs must be positive") }
        guard (0...1).contains(warmupFraction) else { throw ConfigurationError(.invalidSetting("warmupFraction"), "the warmup fraction must be in [0, 1]") }
    }
}

/// The settings of a Direct Preference Optimization run (Rafailov et al. 2023) that pretraining does not have: the
/// policy learns from preference pairs directly, against itself as it started (the frozen reference), with no reward
/// model and no sampling.
public struct DirectPreferenceSettings: Equatable, Sendable, ObjectiveSettings {
    /// How the margin z = (log π(chosen) − log π(rejected)) − (log π_ref(chosen) − log π_ref(rejected)) becomes
    /// a pair's loss, as TRL's `DPOTrainer` names them.
    public enum Loss: String, Codable, Sendable, CaseIterable {
        /// DPO's −log σ(β·z); with label smoothing ε, −(1 − ε)·log σ(β·z) − ε·log σ(−β·z) (conservative DPO).
        case sigmoid
        /// IPO's (z − 1/(2β))² (Azar et al. 2023), over log-probabilities averaged over each reply's tokens.
        case ipo
        /// SLiC's hinge, max(0, 1 − β·z).
        case hinge
    }

    /// JSONL files of preference pairs (`{"prompt", "chosen", "rejected"}`).
    public var train: String
    /// The preference pairs that choose `best/` by accuracy (a JSONL file).
    public var dev: String
    /// Where a reply ends (its end-of-turn marker closes every reply scored); saved with every checkpoint.
    public var chatTemplate: ChatTemplate
    /// β: how far the policy may move from the reference (larger keeps it closer).
    public var beta: Float = 0.1
    /// The loss of each pair.
    public var loss = Loss.sigmoid
    /// ε of conservative DPO: the assumed share of pairs whose preference is flipped (sigmoid loss only).
    public var labelSmoothing: Float = 0
    /// Passes over the training pairs.
    public var epochs = 1
    /// Warmup as a fraction of all steps; sets `warmupIterations` when the run starts.
    public var warmupFraction: Float = 0.1

    /// DPO on the preference pairs in the JSONL files `train` and `dev`, each reply closed as `chatTemplate` closes
    /// an assistant's turn.
    public init(train: String, dev: String, chatTemplate: ChatTemplate) {
        self.train = train
        self.dev = dev
        self.chatTemplate = chatTemplate
    }

    /// The values a run's settings start from: the defaults, and blanks for the required settings that a file
    /// or command line gives.
    package static let blank = DirectPreferenceSettings(train: "", dev: "", chatTemplate: .default)

    /// Every setting, in the order `gpt dpo --help` lists them.
    package static let settings: [Setting<DirectPreferenceSettings>] = [
        Setting("train", \.train, isRequired: true, "Training pairs (JSONL)."),
        Setting("dev", \.dev, isRequired: true, "Dev pairs (JSONL), evaluated before training and after every epoch."),
        Setting(file: "chatTemplate", \.chatTemplate, isRequired: true, "Where a reply ends."),
        Setting("beta", \.beta, "β: larger keeps the policy closer to the reference."),
        Setting("loss", \.loss, "The loss of a pair: sigmoid (DPO), ipo or hinge."),
        Setting("labelSmoothing", \.labelSmoothing, "ε of conservative DPO, in [0, 0.5) (sigmoid loss only)."),
        Setting("epochs", \.epochs, "Passes over the training set."),
        Setting("warmupFraction", \.warmupFraction, "Warmup as a fraction of all steps."),
    ]

    func validate() throws {
        guard beta > 0, beta.isFinite else { throw ConfigurationError(.invalidSetting("beta"), "β must be a positive number") }
        guard (0..<0.5).contains(labelSmoothing) else {
            throw ConfigurationError(.invalidSetting("labelSmoothing"), "label smoothing must be in [0, 0.5)")
        }
        guard labelSmoothing == 0 || loss == .sigmoid else {
            throw ConfigurationError(.invalidSetting("labelSmoothing"), "label smoothing applies to the sigmoid loss only, not \(loss.rawValue)")
        }
        guard epochs > 0 else { throw ConfigurationError(.invalidSetting("epochs"), "epochs must be positive") }
        guard (0...1).contains(warmupFraction) else { throw ConfigurationError(.invalidSetting("warmupFraction"), "the warmup fraction must be in [0, 1]") }
    }
}

/// The settings of a supervised fine-tuning run that pretraining does not have.
public struct SupervisedFineTuningSettings: Equatable, Sendable, ObjectiveSettings {
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

    /// The values a run's settings start from: the defaults, and blanks for the required settings that a file
    /// or command line gives.
    package static let blank = SupervisedFineTuningSettings(train: "", dev: "", chatTemplate: .default)

    /// Every setting, in the order `gpt sft --help` lists them.
    package static let settings: [Setting<SupervisedFineTuningSettings>] = [
        Setting("train", \.train, isRequired: true, "Training demonstrations (JSONL)."),
        Setting("dev", \.dev, isRequired: true, "Dev demonstrations (JSONL), evaluated before training and after every epoch."),
        Setting(file: "chatTemplate", \.chatTemplate, isRequired: true, "How conversations become text."),
        Setting("epochs", \.epochs, "Passes over the training set."),
        Setting("warmupFraction", \.warmupFraction, "Warmup as a fraction of all steps."),
    ]

    func validate() throws {
        guard epochs > 0 else { throw ConfigurationError(.invalidSetting("epochs"), "epochs must be positive") }
        guard (0...1).contains(warmupFraction) else { throw ConfigurationError(.invalidSetting("warmupFraction"), "the warmup fraction must be in [0, 1]") }
        try chatTemplate.validate(source: "the chat template")
    }
}

/// The settings of a PPO run (InstructGPT's step 3) that pretraining does not have.
public struct PolicyOptimizationSettings: Equatable, Sendable, ObjectiveSettings {
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

    /// The values a run's settings start from: the defaults, and blanks for the required settings that a file
    /// or command line gives.
    package static let blank = PolicyOptimizationSettings(prompts: "", reward: "", chatTemplate: .default)

    /// Every setting, in the order `gpt ppo --help` lists them.
    package static let settings: [Setting<PolicyOptimizationSettings>] = [
        Setting("prompts", \.prompts, isRequired: true, "Prompts (JSONL: {\"prompt\"} or {\"messages\"})."),
        Setting("reward", \.reward, isRequired: true, "Reward: a reward-model directory, or classifier:DIR:LABEL."),
        Setting(file: "chatTemplate", \.chatTemplate, isRequired: true, "How prompts given as messages are rendered, and where a reply ends."),
        Setting("iterations", \.iterations, "Rollouts (each followed by its updates)."),
        Setting("rolloutSize", \.rolloutSize, "Responses per rollout."),
        Setting("epochsPerRollout", \.epochsPerRollout, "Passes over each rollout."),
        Setting("maxNewTokens", \.maxNewTokens, "Longest response, in tokens."),
        Setting("temperature", \.temperature, "Sampling temperature of rollouts."),
        Setting("topP", \.topP, "Nucleus sampling of rollouts."),
        Setting("fixedLength", \.fixedLength, "Sample every response to --max-new-tokens (the end-of-text token is never sampled)."),
        Setting("unfinishedPenalty", \.unfinishedPenalty, "Subtracted from the score of a response that does not end with the end-of-text token."),
        Setting("klCoefficient", \.klCoefficient, "β, the KL penalty's coefficient (its start when adaptive)."),
        Setting("targetKL", \.targetKL, "Adapt β toward this KL per response (default: β fixed)."),
        Setting("klHorizon", \.klHorizon, "The adaptive controller's horizon, in responses."),
        Setting("klEstimator", \.klEstimator, "Per-token KL estimator: k1 (log π − log π_ref) or k3."),
        Setting("gamma", \.gamma, "GAE's discount γ."),
        Setting("lambda", \.lambda, "GAE's λ."),
        Setting("clipRange", \.clipRange, "ε of the clipped policy objective."),
        Setting("valueClipRange", \.valueClipRange, "ε of the clipped value loss."),
        Setting("valueCoefficient", \.valueCoefficient, "Weight of the value loss."),
        Setting("whitenScores", \.whitenScores, "Whiten each rollout's scores before the KL penalty is added."),
        Setting("pretrainingData", \.pretrainingData, option: "ptx-data", "PPO-ptx: a directory prepared by gpt prepare whose LM loss is mixed in."),
        Setting("pretrainingCoefficient", \.pretrainingCoefficient, option: "ptx-coefficient", "PPO-ptx's coefficient γ_ptx."),
        Setting("sampleInterval", \.sampleInterval, "Rollouts between logged sample responses."),
        // A checkpoint written before held-out prompts existed held none back, and resumes so.
        Setting("heldOutPrompts", \.heldOutPrompts, option: "held-out", whenAbsent: 0, "Prompts held back from the rollouts (the file's last ones), whose mean score chooses best/ (0: the rollouts' own)."),
    ]

    func validate() throws {
        func check(_ condition: Bool, _ setting: String, _ message: String) throws {
            if !condition { throw ConfigurationError(.invalidSetting(setting), message) }
        }
        for (value, setting) in [(iterations, "iterations"), (rolloutSize, "rolloutSize"), (epochsPerRollout, "epochsPerRollout"),
                                 (maxNewTokens, "maxNewTokens"), (sampleInterval, "sampleInterval")] {
            try check(value > 0, setting, "\(setting) must be positive")
        }
        try check(heldOutPrompts >= 0, "heldOutPrompts", "the number of held-out prompts must not be negative")
        try check(temperature > 0 && temperature.isFinite, "temperature", "temperature must be a positive number")
        try check(topP > 0 && topP <= 1, "topP", "top-p must be in (0, 1]")
        try check(klCoefficient >= 0 && klCoefficient.isFinite, "klCoefficient", "β must be a number, not negative")
        try check(klHorizon > 0, "klHorizon", "the KL horizon must be positive")
        try check(targetKL.map { $0 > 0 } ?? true, "targetKL", "the target KL must be positive")
        try check((0...1).contains(gamma), "gamma", "γ must be in [0, 1]")
        try check((0...1).contains(lambda), "lambda", "λ must be in [0, 1]")
        try check(clipRange > 0, "clipRange", "the clip range must be positive")
        try check(valueClipRange > 0, "valueClipRange", "the value clip range must be positive")
        try check(valueCoefficient >= 0, "valueCoefficient", "the value coefficient must not be negative")
        try check(unfinishedPenalty >= 0, "unfinishedPenalty", "the unfinished penalty must not be negative")
        try check(pretrainingCoefficient >= 0, "pretrainingCoefficient", "the pretraining coefficient must not be negative")
        try check(pretrainingCoefficient == 0 || pretrainingData != nil, "pretrainingData", "a pretraining coefficient needs pretraining data")
        try chatTemplate.validate(source: "the chat template")
    }
}
