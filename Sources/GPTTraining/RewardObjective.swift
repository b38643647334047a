import Foundation
import GPTModels
import GPTUtilities
import TensorCore
import Tokenizers

/// A reward model from human comparisons (InstructGPT's step 2): a GPT body and a scalar head on each row's last
/// token, trained with the Bradley–Terry loss −log σ(r_chosen − r_rejected) (a softmax over each pair with the
/// chosen reply as the target), evaluated on the dev pairs by pairwise accuracy, mean margin and the rewards'
/// mean and spread.
package final class RewardObjective: TrainingObjective {
    package let model: GPTModel
    package let train: [EncodedExample]
    package let dev: [EncodedExample]
    package let batches: EpochBatches
    /// Epochs over the training set, evaluated after each.
    package let plan: RunPlan?
    /// Which training and dev pairs had a row cut to fit the context (their prompts lose their beginning), and how
    /// much of it.
    package let truncation: (train: TruncationSummary, dev: TruncationSummary)
    let pad: Int32

    /// This process's share of each batch.
    package let shard: Shard

    package init(_ settings: RewardModelingSettings, _ context: ObjectiveContext) throws {
        let (model, tokenizer, c, shard) = (context.model, context.tokenizer, context.configuration, context.shard)
        self.shard = shard
        guard case .sequenceClassification(let head)? = model.taskHead, head.labels.count == 1 else {
            throw ConfigurationError(.unsuitableModel, "reward modelling needs a model with a one-output sequence-classification head")
        }
        self.model = model
        pad = head.padTokenID
        let context = min(c.context ?? model.config.contextLength, model.config.contextLength)
        let trainURL = URL(fileURLWithPath: settings.train), devURL = URL(fileURLWithPath: settings.dev)
        train = try PreferenceDataset.encode(try PreferenceDataset.load(trainURL), from: trainURL, tokenizer: tokenizer, contextLength: context)
        dev = try PreferenceDataset.encode(try PreferenceDataset.load(devURL), from: devURL, tokenizer: tokenizer, contextLength: context)
        truncation = (TruncationSummary(lostFractions: train.map(\.lostFraction)), TruncationSummary(lostFractions: dev.map(\.lostFraction)))
        batches = EpochBatches(count: train.count, batchSize: c.batchSize * shard.count, accumulation: c.gradientAccumulation, seed: c.seed)
        plan = RunPlan(epochs: settings.epochs, stepsPerEpoch: batches.stepsPerEpoch, warmupFraction: settings.warmupFraction)
    }

    package func microBatchLoss(step: Int, microBatch: Int, of count: Int, tape: Tape, data: inout SeededRandom,
                               dropout: inout SeededRandom) throws -> (loss: Variable, tokens: Int)? {
        guard let (indices, share) = batches.microBatch(step: step, microBatch: microBatch, shard: shard) else { return nil }
        let batch = TaskBatch(indices.map { train[$0] }, pad: pad)
        var random: SeededRandom? = dropout
        let rewards = model.taskForward(batch, tape: tape, random: &random).outputs
        dropout = random!
        let loss = RewardObjective.pairwiseLoss(rewards, batch: batch, tape: tape)
        return (share == 1 ? loss : tape.scale(loss, by: share), batch.tokenCount)
    }

    /// The Bradley–Terry loss of rewards `[2·pairs, 1]` (chosen, rejected, chosen, …): mean −log σ(r_c − r_r).
    package static func pairwiseLoss(_ rewards: Variable, batch: TaskBatch, tape: Tape) -> Variable {
        tape.groupedCrossEntropy(rewards, groups: batch.exampleRows, targets: [Int](repeating: 0, count: batch.exampleRows.count))
    }

    /// The pairwise loss (−log σ(r_chosen − r_rejected)) and, on a panel of its own, the dev accuracy.
    package var dataSummary: String? {
        let t = truncation
        return "reward model: \(train.count) train and \(dev.count) dev pairs, \(batches.stepsPerEpoch) steps per epoch; pairs cut to fit the context (the prompt loses its beginning): train \(t.train), dev \(t.dev)"
    }

    package func lossPanels(_ records: [[String: Any]]) -> [LearningCurve.Panel] {
        [LearningCurve.Panel("pairwise loss −log σ(r_chosen − r_rejected)", [
            .init("training (logged steps)", LearningCurve.series(records, "train_loss")),
            .init("dev (evaluations)", LearningCurve.series(records, "val_loss"), dots: true)]),
         LearningCurve.Panel("dev accuracy (chosen scored above rejected)", [.init("dev", LearningCurve.series(records, "val_accuracy"), dots: true)])]
    }

    package func evaluate(step: Int, precision: ProductPrecision) throws -> Evaluation {
        var chosen: [Double] = [], rejected: [Double] = [], lossSum = 0.0
        for start in stride(from: 0, to: dev.count, by: batches.batchSize) {
            let slice = dev[start..<min(dev.count, start + batches.batchSize)]
            let batch = TaskBatch(slice, pad: pad), tape = Tape(recording: false, precision: precision)
            var none: SeededRandom?
            let rewards = model.taskForward(batch, tape: tape, random: &none).outputs
            lossSum += Double(RewardObjective.pairwiseLoss(rewards, batch: batch, tape: tape).value[flat: 0]) * Double(slice.count)
            let values = rewards.value.scalars.map(Double.init)
            for k in 0..<slice.count {
                chosen.append(values[2 * k])
                rejected.append(values[2 * k + 1])
            }
        }
        let metrics = RewardObjective.pairMetrics(chosen: chosen, rejected: rejected)
            .merging(["val_loss": lossSum / Double(dev.count), "epoch": batches.epoch(afterSteps: step)]) { a, _ in a }
        return Evaluation(metrics: metrics, score: metrics["val_accuracy"]!, summary: String(
            format: "epoch %.2f: dev loss %.4f, pairwise accuracy %.4f ± %.4f, margin %.3f, rewards %.3f ± %.3f",
            metrics["epoch"]!, metrics["val_loss"]!, metrics["val_accuracy"]!, metrics["val_accuracy_stderr"]!,
            metrics["val_margin"]!, metrics["val_reward_mean"]!, metrics["val_reward_std"]!))
    }

    /// Pairwise accuracy (ties count half) with its standard error, mean margin r_c − r_r, and the mean and
    /// standard deviation of all rewards.
    package static func pairMetrics(chosen: [Double], rejected: [Double]) -> [String: Double] {
        let n = Double(chosen.count)
        let wins = zip(chosen, rejected).map { $0 > $1 ? 1.0 : $0 == $1 ? 0.5 : 0 }
        let accuracy = wins.reduce(0, +) / n
        let all = chosen + rejected, mean = all.reduce(0, +) / Double(all.count)
        let variance = all.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(all.count)
        return ["val_accuracy": accuracy, "val_accuracy_stderr": (accuracy * (1 - accuracy) / n).squareRoot(),
                "val_margin": zip(chosen, rejected).map { $0 - $1 }.reduce(0, +) / n,
                "val_reward_mean": mean, "val_reward_std": variance.squareRoot()]
    }
}

extension RewardObjective {
    /// The model a new reward-modelling run starts from: the configuration's `initFrom` model with a one-output
    /// head (N(0, 0.02)). Rows are padded with the end-of-text token, or with a `<|pad|>` token added to the
    /// vocabulary when the tokenizer has none, so the head reads each row's last real token as transformers does.
    package static func startingModel(_ c: TrainingConfiguration) throws -> (GPTModel, any Tokenizer) {
        guard c.initFrom != "scratch" else { throw ConfigurationError(.invalidSetting("initFrom"), "a reward model starts from a model directory") }
        let (base, baseTokenizer) = try ModelLoading.load(c.initFrom)
        var tokenizer = baseTokenizer, vocabulary = base.config.vocabularySize
        let pad: Int32
        if let endOfText = baseTokenizer.endOfText {
            pad = endOfText
        } else {
            let fillers = (baseTokenizer.vocabularySize..<vocabulary).map { "<|unused_\($0)|>" }
            tokenizer = try baseTokenizer.addingSpecialTokens(fillers + ["<|pad|>"])
            pad = Int32(vocabulary)
            vocabulary += 1
        }
        let head = TaskHead.sequenceClassification(SequenceClassification(labels: ["reward"], problem: .regression, padTokenID: pad))
        let model = try base.adapted(vocabularySize: vocabulary, taskHead: head, seed: c.seed)
        model.inputFormat = nil
        if let dropout = c.dropout { model.setDropout(dropout) }
        return (model, tokenizer)
    }
}
