import Foundation
import GPTModels
import GPTUtilities
import TensorCore
import Tokenizers

/// Direct Preference Optimization (Rafailov et al. 2023): the policy learns from preference pairs directly. The
/// reference is the policy as the run starts; its log-probability of every reply is computed once, before the first
/// step, and kept with the run's checkpoints. A pair's loss depends on the margin z = (log π(chosen) −
/// log π(rejected)) − (the same under the reference) as `DirectPreferenceSettings.Loss` says; the implicit reward of
/// a reply is β·(log π − log π_ref). Evaluated on the dev pairs by the share whose chosen reply gets the higher
/// implicit reward (`best/` keeps the highest), the mean margin of the rewards, and the loss.
package final class DirectPreferenceObjective: TrainingObjective {
    package let model: GPTModel
    package let settings: DirectPreferenceSettings
    package let train: [EncodedPreferencePair]
    package let dev: [EncodedPreferencePair]
    package let batches: EpochBatches
    /// Epochs over the training set, evaluated after each.
    package let plan: RunPlan?
    /// Which training and dev pairs had a sequence cut to fit the context, and how much of it.
    package let truncation: (train: TruncationSummary, dev: TruncationSummary)
    private let precision: ProductPrecision
    /// The reference's log-probability of each pair's chosen and rejected reply (two per pair), of the training and
    /// the dev pairs; computed by the first `prepare`, or restored with a resumed run.
    package private(set) var reference: (train: [Float], dev: [Float])?

    /// This process's share of each batch.
    package let shard: Shard

    /// The file of a `last/` checkpoint that keeps the reference's log-probabilities.
    static let referenceFile = "dpo_reference.json"

    package init(_ settings: DirectPreferenceSettings, _ context: ObjectiveContext) throws {
        let (model, tokenizer, c, shard) = (context.model, context.tokenizer, context.configuration, context.shard)
        self.model = model
        self.settings = settings
        self.shard = shard
        precision = c.resolvedPrecision
        let context = min(c.context ?? model.config.contextLength, model.config.contextLength)
        func read(_ path: String) throws -> [EncodedPreferencePair] {
            let url = URL(fileURLWithPath: path)
            let pairs = try PreferenceDataset.encodeReplies(try PreferenceDataset.load(url), from: url, template: settings.chatTemplate,
                                                            tokenizer: tokenizer, contextLength: context)
            guard !pairs.isEmpty else { throw FileError(url: url, reason: .malformed(line: nil), message: "the file holds no preference pairs") }
            return pairs
        }
        train = try read(settings.train)
        dev = try read(settings.dev)
        truncation = (TruncationSummary(lostFractions: train.map(\.lostFraction)), TruncationSummary(lostFractions: dev.map(\.lostFraction)))
        batches = EpochBatches(count: train.count, batchSize: c.batchSize * shard.count, accumulation: c.gradientAccumulation, seed: c.seed)
        plan = RunPlan(epochs: settings.epochs, stepsPerEpoch: batches.stepsPerEpoch, warmupFraction: settings.warmupFraction)
    }

    /// The reference's log-probabilities, from the model as it is before the first step.
    package func prepare(step: Int) throws {
        guard reference == nil else { return }
        reference = (logProbabilities(of: train), logProbabilities(of: dev))
    }

    package func microBatchLoss(step: Int, microBatch: Int, of count: Int, tape: Tape, data: inout SeededRandom,
                               dropout: inout SeededRandom) throws -> (loss: Variable, tokens: Int)? {
        guard let (indices, share) = batches.microBatch(step: step, microBatch: microBatch, shard: shard) else { return nil }
        guard let reference else { throw TrainingError(.inconsistentState, "DPO's reference log-probabilities were not computed") }
        var random: SeededRandom? = dropout
        let (logits, rows) = replyLogits(indices.map { train[$0] }, tape: tape, random: &random)
        dropout = random!
        let loss = tape.preferenceLoss(logits, targets: rows.targets, spans: rows.spans,
                                       reference: indices.flatMap { [reference.train[2 * $0], reference.train[2 * $0 + 1]] },
                                       normalizers: normalizers(rows.spans), loss: settings.loss, beta: settings.beta,
                                       labelSmoothing: settings.labelSmoothing).loss
        return (share == 1 ? loss : tape.scale(loss, by: share), rows.tokenCount)
    }

    /// The policy's logits at the scored tokens of `pairs` (chosen, rejected, chosen, … as rows of one padded
    /// batch, padding not computed), with the rows' layout. With `random`, dropout is on.
    private func replyLogits(_ pairs: [EncodedPreferencePair], tape: Tape, random: inout SeededRandom?) -> (Variable, PackedSequences) {
        let starts = pairs.flatMap(\.replyStarts)
        let rows = PackedSequences(pairs.flatMap(\.sequences)) { r, t in t + 1 >= starts[r] }
        let hidden = random != nil
            ? model.hidden(ids: rows.ids, batch: starts.count, tape: tape, random: &random!, lengths: rows.lengths, withoutPadding: true)
            : model.hidden(ids: rows.ids, batch: starts.count, tape: tape, lengths: rows.lengths, withoutPadding: true)
        return (model.logits(tape.gatherRows(hidden.final, rows.positions), tape: tape), rows)
    }

    /// What multiplies the sum of a reply's token log-probabilities: 1, or for IPO 1/its length (a mean).
    private func normalizers(_ spans: [Range<Int>]) -> [Float] {
        spans.map { settings.loss == .ipo ? 1 / Float($0.count) : 1 }
    }

    /// The model's log-probability of each pair's chosen and rejected reply (normalised as the loss takes them),
    /// without dropout.
    package func logProbabilities(of pairs: [EncodedPreferencePair]) -> [Float] {
        var result: [Float] = []
        result.reserveCapacity(2 * pairs.count)
        for start in stride(from: 0, to: pairs.count, by: batches.batchSize) {
            let tape = Tape(recording: false, precision: precision)
            var none: SeededRandom?
            let (logits, rows) = replyLogits(Array(pairs[start..<min(pairs.count, start + batches.batchSize)]), tape: tape, random: &none)
            let tokens = actionLogProbabilities(logits.value, actions: rows.targets).logProbabilities
            result += replyLogProbabilities(tokens, spans: rows.spans, normalizers: normalizers(rows.spans))
        }
        return result
    }

    package func evaluate(step: Int, precision: ProductPrecision) throws -> Evaluation {
        guard let reference else { throw TrainingError(.inconsistentState, "DPO's reference log-probabilities were not computed") }
        let policy = logProbabilities(of: dev)
        let metrics = Self.pairMetrics(policy: policy, reference: reference.dev, settings: settings)
            .merging(["epoch": batches.epoch(afterSteps: step)]) { a, _ in a }
        return Evaluation(metrics: metrics, score: metrics["val_accuracy"]!, summary: String(
            format: "epoch %.2f: dev loss %.4f, accuracy %.4f, reward margin %.4f (chosen %.4f, rejected %.4f)",
            metrics["epoch"]!, metrics["val_loss"]!, metrics["val_accuracy"]!, metrics["val_margin"]!,
            metrics["val_reward_chosen"]!, metrics["val_reward_rejected"]!))
    }

    /// The figures of pairs whose replies have log-probabilities `policy` and `reference` (chosen, rejected, …):
    /// the mean loss; the implicit rewards β·(log π − log π_ref) of the chosen and the rejected replies (means), their
    /// mean margin and the share of pairs where the chosen reply's is the higher (accuracy; a tie counts half, as
    /// the reward model's accuracy counts it, so that the policy before training, whose rewards are all 0, is at
    /// chance: TRL counts a tie as a loss); the policy's mean log-probabilities of both.
    package static func pairMetrics(policy: [Float], reference: [Float], settings: DirectPreferenceSettings) -> [String: Double] {
        let n = policy.count / 2, beta = Double(settings.beta)
        var loss = 0.0, chosen = 0.0, rejected = 0.0, wins = 0.0, logChosen = 0.0, logRejected = 0.0
        for k in 0..<n {
            let c = beta * (Double(policy[2 * k]) - Double(reference[2 * k]))
            let r = beta * (Double(policy[2 * k + 1]) - Double(reference[2 * k + 1]))
            loss += settings.loss.value(margin: (c - r) / beta, beta: beta, labelSmoothing: Double(settings.labelSmoothing)).loss
            chosen += c
            rejected += r
            wins += c > r ? 1 : c == r ? 0.5 : 0
            logChosen += Double(policy[2 * k])
            logRejected += Double(policy[2 * k + 1])
        }
        let count = Double(n)
        return ["val_loss": loss / count, "val_reward_chosen": chosen / count, "val_reward_rejected": rejected / count,
                "val_margin": (chosen - rejected) / count, "val_accuracy": wins / count,
                "val_logp_chosen": logChosen / count, "val_logp_rejected": logRejected / count]
    }

    package var dataSummary: String? {
        let t = truncation, s = settings
        return "DPO: \(train.count) train and \(dev.count) dev pairs, \(batches.stepsPerEpoch) steps per epoch; \(s.loss.rawValue) loss, β \(s.beta)\(s.labelSmoothing > 0 ? ", label smoothing \(s.labelSmoothing)" : ""); pairs cut to fit the context (the prompt loses its beginning): train \(t.train), dev \(t.dev)"
    }

    package func lossPanels(_ records: [[String: Any]]) -> [LearningCurve.Panel] {
        [LearningCurve.Panel("\(settings.loss.rawValue) loss of the pairs", [
            .init("training (logged steps)", LearningCurve.series(records, "train_loss")),
            .init("dev (evaluations)", LearningCurve.series(records, "val_loss"), dots: true)]),
         LearningCurve.Panel("dev accuracy (chosen reply's implicit reward the higher)", [
            .init("dev", LearningCurve.series(records, "val_accuracy"), dots: true)]),
         LearningCurve.Panel("dev implicit rewards β·(log π − log π_ref), means", [
            .init("chosen", LearningCurve.series(records, "val_reward_chosen"), dots: true),
            .init("rejected", LearningCurve.series(records, "val_reward_rejected"), dots: true),
            .init("margin", LearningCurve.series(records, "val_margin"), dots: true)])]
    }

    package func writeModelFiles(to directory: URL) throws { try settings.chatTemplate.save(to: directory) }

    private struct ReferenceState: Codable {
        var train: [Float]
        var dev: [Float]
    }

    package func saveState(to directory: URL) throws {
        guard let reference else { return }
        try AtomicFile.write(try JSONEncoder().encode(ReferenceState(train: reference.train, dev: reference.dev)),
                             to: directory.appendingPathComponent(Self.referenceFile))
    }

    package func restoreState(from directory: URL) throws {
        let url = directory.appendingPathComponent(Self.referenceFile)
        let state: ReferenceState
        do { state = try JSONDecoder().decode(ReferenceState.self, from: try Data(contentsOf: url)) } catch {
            throw FileError(url: url, reason: .malformed(line: nil), message: "missing or corrupt DPO reference log-probabilities (\(error))")
        }
        guard state.train.count == 2 * train.count, state.dev.count == 2 * dev.count else {
            throw FileError(url: url, reason: .mismatched, message: "holds the reference log-probabilities of \(state.train.count / 2) train and \(state.dev.count / 2) dev pairs; the run has \(train.count) and \(dev.count)")
        }
        reference = (state.train, state.dev)
    }
}

extension DirectPreferenceObjective {
    /// The model a new run starts from, which is also its reference: the configuration's `initFrom` language model
    /// and tokenizer, with dropout off unless the configuration sets it (as TRL's `DPOTrainer` disables it).
    package static func startingModel(_ c: TrainingConfiguration) throws -> (GPTModel, any Tokenizer) {
        let (model, tokenizer) = try c.startingLanguageModel(for: "DPO")
        model.setDropout(c.dropout ?? 0)
        return (model, tokenizer)
    }
}
