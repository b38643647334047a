import Foundation
import GPTModels
import GPTUtilities
import TensorCore
import Tokenizers

/// Supervised fine-tuning on demonstrations (InstructGPT's step 1): next-token prediction on the assistant's
/// replies only, the prompts read but not trained on. Demonstrations are right-padded rows of a batch (each row
/// attends to its own tokens only); the loss of a micro-batch is the mean over its trained tokens. Evaluated by the
/// dev loss over every reply token (token-weighted) and its perplexity.
package final class SupervisedFineTuningObjective: TrainingObjective {
    package let model: GPTModel
    package let template: ChatTemplate
    package let train: [EncodedDemonstration]
    package let dev: [EncodedDemonstration]
    package let batches: EpochBatches
    /// Epochs over the training set, evaluated after each.
    package let plan: RunPlan?
    /// The number of trained (reply) tokens of each training demonstration.
    let replyTokenCounts: [Int]
    /// The trained (reply) tokens of the whole training set.
    package var replyTokenCount: Int { replyTokenCounts.reduce(0, +) }
    /// Which demonstrations were cut to fit the context, and how much of them.
    package let truncation: (train: TruncationSummary, dev: TruncationSummary)
    package let droppedCount: (train: Int, dev: Int)

    /// This process's share of each batch.
    package let shard: Shard

    package init(_ settings: SupervisedFineTuningSettings, _ context: ObjectiveContext) throws {
        let (model, tokenizer, c, shard) = (context.model, context.tokenizer, context.configuration, context.shard)
        self.shard = shard
        self.model = model
        template = settings.chatTemplate
        let context = min(c.context ?? model.config.contextLength, model.config.contextLength)
        func read(_ path: String) throws -> (examples: [EncodedDemonstration], dropped: Int) {
            let url = URL(fileURLWithPath: path)
            let encoded = try DemonstrationDataset.encode(try DemonstrationDataset.load(url), from: url, template: settings.chatTemplate,
                                                          tokenizer: tokenizer, contextLength: context)
            guard !encoded.examples.isEmpty else { throw FileError(url: url, reason: .mismatched, message: "no demonstration keeps a reply token within the context of \(context)") }
            return encoded
        }
        let trainSet = try read(settings.train), devSet = try read(settings.dev)
        train = trainSet.examples
        dev = devSet.examples
        droppedCount = (trainSet.dropped, devSet.dropped)
        truncation = (TruncationSummary(lostFractions: train.map(\.lostFraction)), TruncationSummary(lostFractions: dev.map(\.lostFraction)))
        replyTokenCounts = train.map { $0.targets.filter { $0 >= 0 }.count }
        batches = EpochBatches(count: train.count, batchSize: c.batchSize * shard.count, accumulation: c.gradientAccumulation, seed: c.seed)
        plan = RunPlan(epochs: settings.epochs, stepsPerEpoch: batches.stepsPerEpoch, warmupFraction: settings.warmupFraction)
    }

    package func microBatchLoss(step: Int, microBatch: Int, of count: Int, tape: Tape, data: inout SeededRandom,
                               dropout: inout SeededRandom) throws -> (loss: Variable, tokens: Int)? {
        guard let (whole, share) = batches.microBatch(step: step, microBatch: microBatch),
              let (indices, _) = batches.microBatch(step: step, microBatch: microBatch, shard: shard) else { return nil }
        var random: SeededRandom? = dropout
        let (loss, tokens, positions) = replyLoss(indices.map { train[$0] }, tape: tape, random: &random)
        dropout = random!
        // The micro-batch's loss is the mean over all its reply tokens: a rank's mean counts by its share of them
        // (every rank knows the whole micro-batch, so no communication is needed).
        let wholeTokens = whole.reduce(0) { $0 + replyTokenCounts[$1] }
        let weight = share * Float(shard.count) * Float(tokens) / Float(wholeTokens)
        return (weight == 1 ? loss : tape.scale(loss, by: weight), positions)
    }

    /// The mean cross-entropy over the trained tokens of `examples` run as one padded batch (padding not computed),
    /// the number of those tokens, and the number of tokens run. With `random`, dropout is on.
    func replyLoss(_ examples: [EncodedDemonstration], tape: Tape, random: inout SeededRandom?) -> (Variable, Int, Int) {
        let rows = PackedSequences(examples.map(\.ids)) { r, t in examples[r].trained[t + 1] }
        let hidden = random != nil
            ? model.hidden(ids: rows.ids, batch: examples.count, tape: tape, random: &random!, lengths: rows.lengths, withoutPadding: true)
            : model.hidden(ids: rows.ids, batch: examples.count, tape: tape, lengths: rows.lengths, withoutPadding: true)
        let loss = tape.crossEntropy(model.logits(tape.gatherRows(hidden.final, rows.positions), tape: tape), targets: rows.targets)
        return (loss, rows.targets.count, rows.tokenCount)
    }

    package var dataSummary: String? {
        let t = truncation, d = droppedCount
        return "demonstrations: \(train.count) train and \(dev.count) dev, \(batches.stepsPerEpoch) steps per epoch, \(replyTokenCount) trained reply tokens; cut to fit the context: train \(t.train), dev \(t.dev); dropped (no reply left): \(d.train) train, \(d.dev) dev"
    }

    package func lossPanels(_ records: [[String: Any]]) -> [LearningCurve.Panel] {
        [LearningCurve.Panel("cross-entropy on the replies' tokens (nats per token)", [
            .init("training (logged steps)", LearningCurve.series(records, "train_loss")),
            .init("dev (evaluations)", LearningCurve.series(records, "val_loss"), dots: true)])]
    }

    package func evaluate(step: Int, precision: ProductPrecision) throws -> Evaluation {
        var total = 0.0, tokens = 0
        for start in stride(from: 0, to: dev.count, by: batches.batchSize) {
            let tape = Tape(recording: false, precision: precision)
            var none: SeededRandom?
            let (loss, count, _) = replyLoss(Array(dev[start..<min(dev.count, start + batches.batchSize)]), tape: tape, random: &none)
            total += Double(loss.value[flat: 0]) * Double(count)
            tokens += count
        }
        let loss = total / Double(tokens)
        return Evaluation(metrics: ["val_loss": loss, "val_perplexity": exp(loss), "epoch": batches.epoch(afterSteps: step)],
                          score: loss.isFinite ? -loss : -.infinity,
                          summary: String(format: "epoch %.2f: dev reply loss %.4f (perplexity %.2f) over %d tokens",
                                          batches.epoch(afterSteps: step), loss, exp(loss), tokens))
    }

    package func writeModelFiles(to directory: URL) throws { try template.save(to: directory) }
}

extension SupervisedFineTuningObjective {
    /// The model a new run starts from: the configuration's `initFrom` model and tokenizer, as they are (dropout as
    /// configured).
    package static func startingModel(_ c: TrainingConfiguration) throws -> (GPTModel, any Tokenizer) {
        let (model, tokenizer) = try c.startingLanguageModel(for: "supervised fine-tuning")
        if let dropout = c.dropout { model.setDropout(dropout) }
        return (model, tokenizer)
    }
}
