import Foundation
import GPTModels
import GPTUtilities
import TensorCore
import Tokenizers

/// The training loop every trainer shares: AdamW with warmup and cosine or linear decay, gradient accumulation
/// and clipping, periodic evaluation, checkpoints (`last/`, and `best/` by the evaluation's score), metrics and
/// exact resume. What is optimised comes from the configuration's `objective`: pretraining, GPT-1 fine-tuning,
/// reward modelling, supervised fine-tuning or PPO.
public final class Trainer {
    /// What the loop reports as it goes.
    public enum Event: Sendable {
        case step(StepReport)
        case evaluation(step: Int, Evaluation)
        case checkpoint(step: Int, directory: URL)
    }

    /// One optimizer step. The speed figures are over the same steps — the last `speedWindow` (fewer at the start) —
    /// so that tokens/s × ms/step ÷ 1000 is the mean tokens a step.
    public struct StepReport: Sendable {
        /// The step's index, from 0.
        public let step: Int
        /// The objective's training loss on this process's share of the step's batch.
        public let loss: Float
        /// The learning rate the step used.
        public let learningRate: Float
        /// The global gradient norm before clipping.
        public let gradientNorm: Float
        /// Mean milliseconds a step over the window (the step's forward, backward, communication and update).
        public let milliseconds: Double
        /// Token positions trained (all ranks together) per second over the window.
        public let tokensPerSecond: Double
        /// Token positions this step trained (all ranks together).
        public let tokens: Int
    }

    /// Steps the reported speed is averaged over.
    package static let speedWindow = 20

    /// How a call to `run` ended.
    public enum Outcome { case finished, interrupted }

    /// The run's settings (as stored with each checkpoint).
    public let configuration: TrainingConfiguration
    package let model: GPTModel
    package let tokenizer: any Tokenizer
    package let optimizer: AdamW
    package let objective: any TrainingObjective
    /// The processes training together (this one alone unless started by `mpirun`); rank 0 writes the files.
    package let group = ProcessGroup.world
    package private(set) var step = 0
    private var dataRandom: SeededRandom
    private var dropoutRandom: SeededRandom
    private var bestScore: Double?
    private let output: URL
    /// Whether this run created its output folder (removed again if the run fails before its first checkpoint).
    private var createdOutput = false
    /// Whether each rank keeps the optimizer's moments for its share of the parameters only (its share may be all
    /// or none of them when they are few).
    private let sharded: Bool
    /// Seconds spent in training steps (evaluations and checkpoints excluded) by this process.
    package private(set) var trainingSeconds: Double = 0

    /// A new run of `configuration.objective`: pretraining from scratch or from the model in
    /// `configuration.initFrom`, or fine-tuning, reward modelling, supervised fine-tuning or PPO of that model.
    public convenience init(configuration: TrainingConfiguration) throws {
        try configuration.validate()
        let (model, tokenizer) = try configuration.objective.startingModel(configuration)
        if let rank = configuration.loraRank {
            try LowRankAdapterFiles.checkAdaptable(model.config)
            let targets = configuration.loraTargets.compactMap(LowRankAdapter.Target.init(rawValue:))
            model.attach(LowRankAdapter(model: model, baseModel: configuration.initFrom, rank: rank, alpha: configuration.loraAlpha,
                                        dropout: configuration.loraDropout,
                                        layers: LowRankAdapter.layers(targets, layerCount: model.config.layerCount),
                                        savedParameters: model.parametersTrainedWhole, seed: configuration.seed &+ 2))
        }
        try self.init(configuration: configuration, model: model, tokenizer: tokenizer, state: nil)
    }

    /// Continues the run in `output` exactly where its checkpoint `last/` stopped (or, when `last/` cannot be
    /// resumed, the newest kept `step-NNNNNNNN/`, saying so); `maxIterations` moves its end (the learning-rate
    /// schedule stays the original one).
    public static func resume(output: URL, maxIterations: Int? = nil) throws -> Trainer {
        let group = ProcessGroup.world
        if group.isMain { for line in try TrainingCheckpoint.recover(in: output) { print(line) } }
        _ = group.maximum([0])  // every rank reads last/ once rank 0 has repaired it
        let (last, note) = try TrainingCheckpoint.resumable(in: output)
        if let note, group.isMain { print(note) }
        var state = try TrainingCheckpoint.loadState(from: last)
        if group.isMain, note == nil, state.configuration.keepCheckpoints > 0 {
            // A save killed after last/ was complete but before its step folder was.
            try TrainingCheckpoint.keepStepCheckpoint(of: last, step: state.step, keeping: state.configuration.keepCheckpoints)
        }
        if let maxIterations {
            // A new end point keeps the learning-rate schedule the run started with.
            if state.configuration.decayIterations == nil { state.configuration.decayIterations = state.configuration.maxIterations }
            state.configuration.maxIterations = maxIterations
        }
        state.configuration.out = output.path
        let (model, _) = try ModelLoading.load(last.path, keepingAdapter: true)
        if let dropout = state.configuration.dropout { model.setDropout(dropout) }
        let tokenizer = try TokenizerLoading.load(directory: state.configuration.objective.tokenizerDirectory(state.configuration, checkpoint: last))
        let trainer = try Trainer(configuration: state.configuration, model: model, tokenizer: tokenizer, state: state)
        try TrainingCheckpoint.loadOptimizer(trainer.optimizer, parameterCount: model.trainableParameters.count, steps: state.optimizerSteps,
                                             from: last)
        try trainer.objective.restoreState(from: last)
        return trainer
    }

    private init(configuration: TrainingConfiguration, model: GPTModel, tokenizer: any Tokenizer, state: TrainingCheckpoint.State?) throws {
        var configuration = configuration
        configuration.precision = configuration.resolvedPrecision
        try model.holdFrozenBase(in: configuration.loraBasePrecision)
        self.model = model
        self.tokenizer = tokenizer
        objective = try configuration.objective.makeObjective(
            ObjectiveContext(model: model, tokenizer: tokenizer, configuration: configuration, group: group))
        // A new run over a set of examples or rollouts: its length, warmup and evaluations follow from them.
        if state == nil, let plan = objective.plan {
            configuration.maxIterations = plan.maxIterations
            configuration.warmupIterations = plan.warmupIterations
            configuration.evalInterval = plan.evalInterval
        }
        self.configuration = configuration
        group.timeout = configuration.rankTimeout
        sharded = configuration.shardOptimizer && group.size > 1
        let trainable = model.trainableParameters
        if sharded && trainable.count > Int(Int32.max) {
            throw ConfigurationError(.invalidSetting("shardOptimizer"), "--shard-optimizer handles models of fewer than 2³¹ parameters")
        }
        optimizer = AdamW(parameters: trainable, settings: .init(
            beta1: configuration.beta1, beta2: configuration.beta2, epsilon: configuration.epsilon,
            weightDecay: configuration.weightDecay), range: sharded ? group.shares(of: trainable.count)[group.rank] : nil)
        output = URL(fileURLWithPath: configuration.out)
        step = state?.step ?? 0
        dataRandom = state?.dataRandom ?? SeededRandom(seed: configuration.seed)
        dropoutRandom = state?.dropoutRandom ?? SeededRandom(seed: configuration.seed &+ 1)
        bestScore = state?.bestScore
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        try group.checkSame(try encoder.encode(configuration), what: "settings")
        guard group.isMain else { return }
        createdOutput = !FileManager.default.fileExists(atPath: output.path)
        try FileManager.default.createDirectory(at: output, withIntermediateDirectories: true)
        if state == nil { for line in try TrainingCheckpoint.recover(in: output) { print(line) } }
        if state == nil {
            try? FileManager.default.removeItem(at: Metrics.url(output))
        } else {
            try Metrics.keep(upTo: step, in: output)
        }
    }

    /// Runs until `maxIterations` steps are done, or `shouldStop` says so after a step (then a checkpoint is
    /// written first). A loss or gradient that is not finite stops the run with an error; the last checkpoint stays.
    package func run(shouldStop: () -> Bool = { false }, events: (Event) -> Void = { _ in }) throws -> Outcome {
        do {
            return try loop(shouldStop: shouldStop, events: events)
        } catch {
            // A run that fails before its first checkpoint leaves nothing behind in the folder it created.
            let fm = FileManager.default
            if createdOutput && !fm.fileExists(atPath: output.appendingPathComponent("last").path) { try? fm.removeItem(at: output) }
            throw error
        }
    }

    private func loop(shouldStop: () -> Bool, events: (Event) -> Void) throws -> Outcome {
        let c = configuration
        var window: [(Double, Double)] = []
        while step < c.maxIterations {
            try objective.prepare(step: step)
            if step % c.evalInterval == 0 { try evaluateAndCheckpoint(events) }
            let start = DispatchTime.now().uptimeNanoseconds
            let (loss, norm, tokens, communication) = try trainingStep()
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            trainingSeconds += seconds
            window.append((seconds, Double(tokens)))
            if window.count > Self.speedWindow { window.removeFirst() }
            let windowSeconds = window.reduce(0) { $0 + $1.0 }
            let report = StepReport(step: step, loss: loss, learningRate: c.learningRate(at: step - 1), gradientNorm: norm,
                                    milliseconds: windowSeconds / Double(window.count) * 1000,
                                    tokensPerSecond: window.reduce(0) { $0 + $1.1 } / windowSeconds, tokens: tokens)
            if group.isMain && (step % c.logInterval == 0 || step == c.maxIterations) {
                // This step's own figures: its tokens, its time, and their ratio.
                var record: [String: Any] = ["step": step, "train_loss": Double(loss), "lr": Double(report.learningRate),
                                             "grad_norm": Double(norm), "tokens": tokens, "tokens_per_s": Double(tokens) / seconds,
                                             "ms_per_step": seconds * 1000]
                if group.size > 1 { record["allreduce_ms"] = communication * 1000 }
                try Metrics.append(record, in: output)
            }
            events(.step(report))
            // Every rank stops at the same step, when any is asked to.
            if group.maximum([shouldStop() ? 1 : 0])[0] > 0 && step < c.maxIterations {
                try saveCheckpoint(events)
                return .interrupted
            }
        }
        try objective.prepare(step: step)
        try evaluateAndCheckpoint(events)
        guard group.isMain else { return .finished }
        let kind = c.objective.title(data: c.data)
        let records = Metrics.records(in: output)
        try AtomicFile.write(Data(LearningCurve.svg(title: "\(output.lastPathComponent): \(kind)", panels: objective.lossPanels(records)).utf8),
                             to: output.appendingPathComponent("loss.svg"))
        try objective.writeCharts(to: output, records: records)
        return .finished
    }

    /// One optimizer step over `gradientAccumulation` micro-batches; returns the step's loss, the gradient norm,
    /// the token positions processed (by all ranks) and the seconds spent in collective operations with the other
    /// ranks (averaging gradients, and with a sharded optimizer gathering parameters; waiting for the slowest
    /// included).
    private func trainingStep() throws -> (Float, Float, Int, Double) {
        let c = configuration, parameters = model.trainableParameters
        parameters.zeroGradients()
        // Ranks draw dropout masks from streams of their own, derived from the run's stream (which every rank
        // advances alike, so a resumed run continues them exactly); one process uses the run's stream itself.
        var rankDropout = group.size > 1
            ? SeededRandom(seed: dropoutRandom.next() ^ (UInt64(group.rank) &* 0x9E37_79B9_7F4A_7C15)) : dropoutRandom
        var loss: Float = 0, tokens = 0
        for microBatch in 0..<c.gradientAccumulation {
            let tape = Tape(precision: c.resolvedPrecision)
            guard let (microLoss, count) = try objective.microBatchLoss(
                step: step, microBatch: microBatch, of: c.gradientAccumulation, tape: tape,
                data: &dataRandom, dropout: &rankDropout) else { continue }
            loss += microLoss.value[flat: 0]
            tokens += count
            tape.backward(from: microLoss)
        }
        if group.size == 1 { dropoutRandom = rankDropout }
        var communication = 0.0
        func communicating<T>(_ body: () -> T) -> T {
            let start = DispatchTime.now().uptimeNanoseconds
            defer { communication += Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9 }
            return body()
        }
        let norm: Float
        if group.size > 1 {
            // The mean of the ranks' gradients is the gradient of the global batch: all of it on every rank, or
            // with a sharded optimizer each rank's share only, and the norm from the shares' sums of squares.
            let shares = group.shares(of: parameters.count)
            norm = communicating {
                if sharded {
                    group.averageIntoShare(parameters.gradients.pointer, count: parameters.count, shares: shares)
                } else {
                    group.averageInPlace(parameters.gradients.pointer, count: parameters.count)
                }
                // Each piece's sum of squares comes from its owner (zeros elsewhere add exactly), and every rank adds
                // them in order, as one process does.
                var squares: [Double] = []
                if sharded {
                    let piece = ParameterSet.normPiece, share = optimizer.range
                    let owned = share.lowerBound / piece..<(share.upperBound + piece - 1) / piece
                    squares = [Double](repeating: 0, count: parameters.normPieceCount)
                    squares.replaceSubrange(owned, with: parameters.gradientSquareSums(pieces: owned))
                }
                let totals = group.sum([Double(loss), Double(tokens)] + squares)
                loss = Float(totals[0] / Double(group.size))
                tokens = Int(totals[1])
                return sharded ? Float(totals[2...].reduce(0, +).squareRoot()) : parameters.gradientNorm()
            }
        } else {
            norm = parameters.gradientNorm()
        }
        guard loss.isFinite, norm.isFinite else {
            throw TrainingError(.diverged, "step \(step + 1): the \(loss.isFinite ? "gradient norm" : "loss") is \(loss.isFinite ? norm : loss); stopping. \(keptCheckpointNote)")
        }
        optimizer.step(learningRate: c.learningRate(at: step),
                       gradientScale: c.gradientClip > 0 ? ParameterSet.clippingScale(norm: norm, maximum: c.gradientClip) : 1)
        if sharded {
            communicating {
                group.gatherShares(parameters.values.pointer, count: parameters.count, shares: group.shares(of: parameters.count))
            }
            parameters.valuesDidChange()
        }
        step += 1
        return (loss, norm, tokens, communication)
    }

    private func evaluateAndCheckpoint(_ events: (Event) -> Void) throws {
        let evaluation = try objective.evaluate(step: step, precision: configuration.resolvedPrecision)
        if let (name, value) = evaluation.metrics.first(where: { !$0.value.isFinite }) {
            throw TrainingError(.diverged, "step \(step): the evaluation's \(name) is \(value); stopping. \(keptCheckpointNote)")
        }
        events(.evaluation(step: step, evaluation))
        if group.isMain {
            var record: [String: Any] = evaluation.metrics
            record["step"] = step
            // The figure best/ is chosen by, unless the objective reports a "score" of its own (PPO's mean score,
            // beside its objective).
            if record["score"] == nil { record["score"] = evaluation.score }
            record["train_seconds"] = trainingSeconds
            try Metrics.append(record, in: output)
            // The starting model is not a candidate: best/ holds the best model the run trained.
            if step > 0, bestScore.map({ evaluation.score > $0 }) ?? true {
                bestScore = evaluation.score
                try TrainingCheckpoint.save(model: model, tokenizer: tokenizer, optimizer: nil, state: nil,
                                            to: output.appendingPathComponent("best"), extraFiles: objective.writeModelFiles)
            }
        }
        if step > 0 { try saveCheckpoint(events) }
    }

    private var keptCheckpointNote: String {
        let last = output.appendingPathComponent("last")
        return FileManager.default.fileExists(atPath: last.path)
            ? "The last checkpoint, \(last.path), is kept." : "No checkpoint was written before this step."
    }

    /// Writes `last/`: on rank 0, after every rank has given it its share of the optimizer's moments when the
    /// optimizer is sharded (so every rank calls this).
    private func saveCheckpoint(_ events: (Event) -> Void) throws {
        guard let moments = try optimizerMoments(), group.isMain else { return }
        let state = TrainingCheckpoint.State(step: step, optimizerSteps: optimizer.stepCount, dataRandom: dataRandom,
                                             dropoutRandom: dropoutRandom, bestScore: bestScore, configuration: configuration)
        let directory = output.appendingPathComponent("last")
        try TrainingCheckpoint.save(model: model, tokenizer: tokenizer, optimizer: moments, state: state, to: directory) {
            try self.objective.writeModelFiles(to: $0)
            try self.objective.saveState(to: $0)
        }
        if configuration.keepCheckpoints > 0 {
            try TrainingCheckpoint.keepStepCheckpoint(of: directory, step: step, keeping: configuration.keepCheckpoints)
        }
        events(.checkpoint(step: step, directory: directory))
    }
}

extension Trainer {
    /// AdamW's moments for a checkpoint. With a sharded optimizer rank 0 collects every rank's share as it writes
    /// the file, while the other ranks hand theirs over here (they get nil); every rank must call this.
    private func optimizerMoments() throws -> TrainingCheckpoint.OptimizerMoments? {
        let count = model.trainableParameters.count
        guard sharded else { return .init(optimizer) }
        let shares = group.shares(of: count), group = group
        let moments = [optimizer.firstMoment, optimizer.secondMoment]
        guard group.isMain else {
            for moment in moments { try group.collectShares(moment.pointer, count: count, shares: shares) { _ in } }
            return nil
        }
        return .init(count: count) { index, write in
            try group.collectShares(moments[index].pointer, count: count, shares: shares, consume: write)
        }
    }
}

/// A training run that cannot go on.
public typealias TrainingError = DomainError<TrainingProblem>

/// Why a training run stops (`TrainingError`'s reasons).
public enum TrainingProblem: Equatable, Sendable {
    /// The loss, the gradient norm or an evaluation figure is not a finite number.
    case diverged
    /// The run's state contradicts itself (a PPO step without its rollout).
    case inconsistentState
}
