import Foundation
import GPTModels
import GPTUtilities
import TensorCore
import Tokenizers

/// Pretraining: next-token prediction on random windows of a prepared data directory's train.bin, evaluated by
/// the mean loss over random windows of train.bin and val.bin. In a data-parallel run every rank draws the global
/// batch's windows and reads its own consecutive rows of them.
package final class LanguageModelObjective: TrainingObjective {
    package let model: GPTModel
    package let train: TokenDataset
    package let val: TokenDataset
    /// Tokens per window.
    package let length: Int
    let batchSize: Int
    let evalIterations: Int
    let seed: UInt64
    /// This process's share of each batch.
    package let shard: Shard

    /// Pretraining on the prepared data folder `configuration.data`.
    package init(_ context: ObjectiveContext) throws {
        let (model, c, data) = (context.model, context.configuration, URL(fileURLWithPath: context.configuration.data))
        self.model = model
        shard = context.shard
        train = TokenDataset(file: try TokenFile(contentsOf: data.appendingPathComponent("train.bin")))
        val = TokenDataset(file: try TokenFile(contentsOf: data.appendingPathComponent("val.bin")))
        length = min(c.context ?? model.config.contextLength, model.config.contextLength)
        guard train.file.count > length, val.file.count > length else {
            throw ConfigurationError(.insufficientData, "train.bin (\(train.file.count) tokens) and val.bin (\(val.file.count) tokens) must each hold more than one window of \(length) tokens")
        }
        batchSize = c.batchSize
        evalIterations = c.evalIterations
        seed = c.seed
    }

    /// The model a new pretraining run starts from: random weights of the configuration's sizes for the data's
    /// vocabulary (`initFrom` is `scratch`), or the model in `initFrom`; and the data's tokenizer.
    static func startingModel(_ c: TrainingConfiguration) throws -> (GPTModel, any Tokenizer) {
        let data = URL(fileURLWithPath: c.data)
        let meta = try DataPreparation.meta(in: data)
        let model: GPTModel
        if c.initFrom == "scratch" {
            model = try GPTModel(config: c.modelConfig(vocabularySize: meta.vocabularySize), seed: c.seed)
        } else {
            model = try HuggingFaceCheckpoint.load(from: ModelLoading.resolve(c.initFrom))
            if let dropout = c.dropout { model.setDropout(dropout) }
            guard model.config.vocabularySize >= meta.vocabularySize else {
                throw ConfigurationError(.unsuitableModel, "the model's vocabulary (\(model.config.vocabularySize)) is smaller than the data's (\(meta.vocabularySize))")
            }
        }
        return (model, try TokenizerLoading.load(directory: data))
    }

    package func microBatchLoss(step: Int, microBatch: Int, of count: Int, tape: Tape, data: inout SeededRandom,
                               dropout: inout SeededRandom) throws -> (loss: Variable, tokens: Int)? {
        let (allInputs, allTargets) = try train.batch(batchSize * shard.count, length: length, random: &data)
        let rows = (shard.index * batchSize * length)..<((shard.index + 1) * batchSize * length)
        let inputs = Array(allInputs[rows]), targets = Array(allTargets[rows])
        let hidden = model.hidden(ids: inputs, batch: batchSize, tape: tape, random: &dropout)
        let loss = tape.crossEntropy(model.logits(hidden.final, tape: tape), targets: targets)
        return (count > 1 ? tape.scale(loss, by: 1 / Float(count)) : loss, batchSize * length)
    }

    package func lossPanels(_ records: [[String: Any]]) -> [LearningCurve.Panel] {
        [LearningCurve.Panel("cross-entropy loss (nats per token); dots: evaluations", [
            .init("training batches", LearningCurve.series(records, "train_loss")),
            .init("training split", LearningCurve.series(records, "eval_train_loss"), dots: true),
            .init("validation split", LearningCurve.series(records, "val_loss"), dots: true)])]
    }

    package func evaluate(step: Int, precision: ProductPrecision) throws -> Evaluation {
        let trainLoss = try estimateLoss(train, salt: 1, step: step, precision: precision)
        let valLoss = try estimateLoss(val, salt: 2, step: step, precision: precision)
        return Evaluation(metrics: ["eval_train_loss": Double(trainLoss), "val_loss": Double(valLoss)],
                          score: valLoss.isFinite ? -Double(valLoss) : -.infinity,
                          summary: String(format: "train loss %.4f, val loss %.4f", trainLoss, valLoss))
    }

    /// Mean loss over `evalIterations` batches of `dataset`, without dropout, from a generator fixed by the step
    /// (so evaluation never changes the training stream).
    package func estimateLoss(_ dataset: TokenDataset, salt: UInt64, step: Int, precision: ProductPrecision) throws -> Float {
        var random = SeededRandom(seed: seed &+ salt &+ UInt64(step) &* 0x9E37_79B9)
        var total: Float = 0
        for _ in 0..<evalIterations {
            let (inputs, targets) = try dataset.batch(batchSize, length: length, random: &random)
            total += model.evaluationLoss(inputs: inputs, targets: targets, batch: batchSize, precision: precision)
        }
        return total / Float(evalIterations)
    }
}
