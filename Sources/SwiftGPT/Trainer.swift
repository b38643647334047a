import Foundation
import TensorCore
import Tokenizers

/// The pretraining loop: next-token prediction on random windows of a prepared data directory, AdamW with warmup
/// and cosine decay, gradient accumulation and clipping, periodic evaluation, checkpoints and exact resume.
public final class Trainer {
    /// What the loop reports as it goes.
    public enum Event {
        case step(StepReport)
        case evaluation(step: Int, trainLoss: Float, valLoss: Float)
        case checkpoint(step: Int, directory: URL)
    }

    public struct StepReport {
        public let step: Int
        public let loss: Float
        public let learningRate: Float
        public let gradientNorm: Float
        public let milliseconds: Double
        public let tokensPerSecond: Double
    }

    /// How a call to `run` ended.
    public enum Outcome { case finished, interrupted }

    public let configuration: TrainingConfiguration
    public let model: GPTModel
    public let tokenizer: any Tokenizer
    public let optimizer: AdamW
    public private(set) var step = 0
    private var dataRandom: SeededRandom
    private var dropoutRandom: SeededRandom
    private var bestValLoss: Float?
    private let train: TokenDataset
    private let val: TokenDataset
    private let output: URL
    private let length: Int

    /// A new run (from scratch or from the model in `configuration.initFrom`).
    public convenience init(configuration: TrainingConfiguration) throws {
        try configuration.validate()
        let data = URL(fileURLWithPath: configuration.data)
        let meta = try DataPreparation.meta(in: data)
        let model: GPTModel
        if configuration.initFrom == "scratch" {
            model = try GPTModel(config: configuration.modelConfig(vocabularySize: meta.vocabularySize), seed: configuration.seed)
        } else {
            model = try HuggingFaceCheckpoint.load(from: TrainingCheckpoint.modelDirectory(URL(fileURLWithPath: configuration.initFrom)))
            if let dropout = configuration.dropout { model.setDropout(dropout) }
            guard model.config.vocabularySize >= meta.vocabularySize else {
                throw ConfigurationError(message: "the model's vocabulary (\(model.config.vocabularySize)) is smaller than the data's (\(meta.vocabularySize))")
            }
        }
        try self.init(configuration: configuration, model: model, state: nil)
    }

    /// Continues the run whose checkpoint is `output/last`, exactly where it stopped; `maxIterations` moves its end
    /// (the learning-rate schedule stays the original one).
    public static func resume(output: URL, maxIterations: Int? = nil) throws -> Trainer {
        let last = output.appendingPathComponent("last")
        var state = try TrainingCheckpoint.loadState(from: last)
        if let maxIterations {
            // A new end point keeps the learning-rate schedule the run started with.
            if state.configuration.decayIterations == nil { state.configuration.decayIterations = state.configuration.maxIterations }
            state.configuration.maxIterations = maxIterations
        }
        state.configuration.out = output.path
        let model = try HuggingFaceCheckpoint.load(from: last)
        if let dropout = state.configuration.dropout { model.setDropout(dropout) }
        let trainer = try Trainer(configuration: state.configuration, model: model, state: state)
        try TrainingCheckpoint.loadOptimizer(trainer.optimizer, steps: state.optimizerSteps, from: last)
        return trainer
    }

    private init(configuration: TrainingConfiguration, model: GPTModel, state: TrainingCheckpoint.State?) throws {
        var configuration = configuration
        configuration.precision = configuration.resolvedPrecision
        self.configuration = configuration
        self.model = model
        let data = URL(fileURLWithPath: configuration.data)
        tokenizer = try TokenizerLoading.load(directory: data)
        train = TokenDataset(file: try TokenFile(contentsOf: data.appendingPathComponent("train.bin")))
        val = TokenDataset(file: try TokenFile(contentsOf: data.appendingPathComponent("val.bin")))
        length = min(configuration.context ?? model.config.contextLength, model.config.contextLength)
        guard train.file.count > length, val.file.count > length else {
            throw ConfigurationError(message: "train.bin (\(train.file.count) tokens) and val.bin (\(val.file.count) tokens) must each hold more than one window of \(length) tokens")
        }
        optimizer = AdamW(parameters: model.parameters, settings: .init(
            beta1: configuration.beta1, beta2: configuration.beta2, epsilon: configuration.epsilon,
            weightDecay: configuration.weightDecay))
        output = URL(fileURLWithPath: configuration.out)
        step = state?.step ?? 0
        dataRandom = state?.dataRandom ?? SeededRandom(seed: configuration.seed)
        dropoutRandom = state?.dropoutRandom ?? SeededRandom(seed: configuration.seed &+ 1)
        bestValLoss = state?.bestValLoss
        try FileManager.default.createDirectory(at: output, withIntermediateDirectories: true)
        if state == nil {
            try? FileManager.default.removeItem(at: Metrics.url(output))
        } else {
            try Metrics.keep(upTo: step, in: output)
        }
    }

    /// Runs until `maxIterations` steps are done, or `shouldStop` says so after a step (then a checkpoint is
    /// written first). A loss or gradient that is not finite stops the run with an error; the last checkpoint stays.
    public func run(shouldStop: () -> Bool = { false }, events: (Event) -> Void = { _ in }) throws -> Outcome {
        let c = configuration
        var window: [(Double, Double)] = []
        while step < c.maxIterations {
            if step % c.evalInterval == 0 { try evaluateAndCheckpoint(events) }
            let start = DispatchTime.now().uptimeNanoseconds
            let (loss, norm) = try trainingStep()
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            window.append((seconds, Double(c.batchSize * c.gradientAccumulation * length)))
            if window.count > 20 { window.removeFirst() }
            let tokensPerSecond = window.reduce(0) { $0 + $1.1 } / window.reduce(0) { $0 + $1.0 }
            let report = StepReport(step: step, loss: loss, learningRate: c.learningRate(at: step - 1), gradientNorm: norm,
                                    milliseconds: seconds * 1000, tokensPerSecond: tokensPerSecond)
            if step % c.logInterval == 0 || step == c.maxIterations {
                try Metrics.append(["step": step, "train_loss": Double(loss), "lr": Double(report.learningRate),
                                    "grad_norm": Double(norm), "tokens_per_s": tokensPerSecond, "ms_per_step": seconds * 1000], in: output)
            }
            events(.step(report))
            if shouldStop() && step < c.maxIterations {
                try saveCheckpoint(events)
                return .interrupted
            }
        }
        try evaluateAndCheckpoint(events)
        try Metrics.drawCurve(in: output, title: "SwiftGPT \(c.preset): loss")
        return .finished
    }

    /// One optimizer step over `gradientAccumulation` micro-batches; returns the mean loss and the gradient norm.
    private func trainingStep() throws -> (Float, Float) {
        let c = configuration
        model.parameters.zeroGradients()
        var lossSum: Float = 0
        for _ in 0..<c.gradientAccumulation {
            let (inputs, targets) = try train.batch(c.batchSize, length: length, random: &dataRandom)
            let tape = Tape(precision: c.resolvedPrecision)
            let hidden = model.hidden(ids: inputs, batch: c.batchSize, tape: tape, random: &dropoutRandom)
            let loss = tape.crossEntropy(model.logits(hidden.final, tape: tape), targets: targets)
            lossSum += loss.value[flat: 0]
            tape.backward(from: c.gradientAccumulation > 1 ? tape.scale(loss, by: 1 / Float(c.gradientAccumulation)) : loss)
        }
        let loss = lossSum / Float(c.gradientAccumulation)
        let (norm, scale) = c.gradientClip > 0
            ? model.parameters.gradientClipping(maximum: c.gradientClip) : (model.parameters.gradientNorm(), 1)
        guard loss.isFinite, norm.isFinite else {
            throw TrainingError(message: "step \(step + 1): the \(loss.isFinite ? "gradient norm" : "loss") is \(loss.isFinite ? norm : loss); stopping. \(keptCheckpointNote)")
        }
        optimizer.step(learningRate: c.learningRate(at: step), gradientScale: scale)
        step += 1
        return (loss, norm)
    }

    /// Mean loss over `evalIterations` batches of `dataset`, without dropout, from a generator fixed by the step
    /// (so evaluation never changes the training stream).
    public func estimateLoss(_ dataset: TokenDataset, salt: UInt64) throws -> Float {
        let c = configuration
        var random = SeededRandom(seed: c.seed &+ salt &+ UInt64(step) &* 0x9E37_79B9)
        var total: Float = 0
        for _ in 0..<c.evalIterations {
            let (inputs, targets) = try dataset.batch(c.batchSize, length: length, random: &random)
            total += model.evaluationLoss(inputs: inputs, targets: targets, batch: c.batchSize, precision: c.resolvedPrecision)
        }
        return total / Float(c.evalIterations)
    }

    private func evaluateAndCheckpoint(_ events: (Event) -> Void) throws {
        let trainLoss = try estimateLoss(train, salt: 1), valLoss = try estimateLoss(val, salt: 2)
        guard trainLoss.isFinite, valLoss.isFinite else {
            throw TrainingError(message: "step \(step): the evaluation loss is \(trainLoss.isFinite ? valLoss : trainLoss); stopping. \(keptCheckpointNote)")
        }
        events(.evaluation(step: step, trainLoss: trainLoss, valLoss: valLoss))
        try Metrics.append(["step": step, "eval_train_loss": Double(trainLoss), "val_loss": Double(valLoss)], in: output)
        if bestValLoss.map({ valLoss < $0 }) ?? true {
            bestValLoss = valLoss
            if step > 0 {
                try TrainingCheckpoint.save(model: model, tokenizer: tokenizer, optimizer: nil, state: nil,
                                            to: output.appendingPathComponent("best"))
            }
        }
        if step > 0 { try saveCheckpoint(events) }
    }

    private var keptCheckpointNote: String {
        let last = output.appendingPathComponent("last")
        return FileManager.default.fileExists(atPath: last.path)
            ? "The last checkpoint, \(last.path), is kept." : "No checkpoint was written before this step."
    }

    private func saveCheckpoint(_ events: (Event) -> Void) throws {
        let state = TrainingCheckpoint.State(step: step, optimizerSteps: optimizer.stepCount, dataRandom: dataRandom,
                                             dropoutRandom: dropoutRandom, bestValLoss: bestValLoss, configuration: configuration)
        let directory = output.appendingPathComponent("last")
        try TrainingCheckpoint.save(model: model, tokenizer: tokenizer, optimizer: optimizer, state: state, to: directory)
        events(.checkpoint(step: step, directory: directory))
    }
}

/// A training run that cannot go on.
public struct TrainingError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public var description: String { message }
}
