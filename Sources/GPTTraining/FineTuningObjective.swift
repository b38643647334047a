import Foundation
import GPTModels
import GPTUtilities
import TensorCore
import Tokenizers

/// GPT-1's fine-tuning objective: L = L_task + λ·L_LM on batches of labelled examples, a new order of the training
/// set every epoch (fixed by the seed and the epoch, so a resumed run sees the same batches), evaluated on the
/// whole dev set after every epoch.
package final class FineTuningObjective: TrainingObjective {
    package let model: GPTModel
    package let format: InputFormat
    package let train: [EncodedExample]
    package let dev: [EncodedExample]
    package let settings: FineTuningSettings
    /// The training set's batches, epoch by epoch.
    package let batches: EpochBatches
    /// Epochs over the training set, evaluated after each.
    package let plan: RunPlan?
    /// Which training and dev examples had a text cut to fit the context, and how much of it.
    package let truncation: (train: TruncationSummary, dev: TruncationSummary)

    /// The pad id of the batches: the start token, which never ends a sequence (the head reads each row's last
    /// non-pad token, as transformers does).
    package var pad: Int32 { format.start }

    /// This process's share of each batch.
    package let shard: Shard

    /// An objective for `model` (which carries its task head and input format), reading and validating the
    /// settings' train and dev files.
    package init(_ settings: FineTuningSettings, _ context: ObjectiveContext) throws {
        let (model, tokenizer, c, shard) = (context.model, context.tokenizer, context.configuration, context.shard)
        self.shard = shard
        guard let format = model.inputFormat, model.taskHead != nil else {
            throw ConfigurationError(.unsuitableModel, "fine-tuning needs a model with a task head and an input format")
        }
        self.model = model
        self.format = format
        self.settings = settings
        let trainURL = URL(fileURLWithPath: settings.train), devURL = URL(fileURLWithPath: settings.dev)
        let trainExamples = try TaskDataset.load(trainURL, task: settings.task, labelsRequired: true)
        let devExamples = try TaskDataset.load(devURL, task: settings.task, labelsRequired: true)
        try FineTuningObjective.checkLabels(trainExamples, url: trainURL, head: model.taskHead!)
        try FineTuningObjective.checkLabels(devExamples, url: devURL, head: model.taskHead!)
        let context = min(c.context ?? model.config.contextLength, model.config.contextLength)
        guard context >= format.minimumContext else {
            throw ConfigurationError(.unsuitableModel, "a context of \(context) tokens cannot hold a \(format.task.rawValue) input's special tokens")
        }
        train = try format.encode(trainExamples, from: trainURL, tokenizer: tokenizer, contextLength: context)
        dev = try format.encode(devExamples, from: devURL, tokenizer: tokenizer, contextLength: context)
        truncation = (TruncationSummary(lostFractions: train.map(\.lostFraction)), TruncationSummary(lostFractions: dev.map(\.lostFraction)))
        batches = EpochBatches(count: train.count, batchSize: c.batchSize * shard.count, accumulation: c.gradientAccumulation, seed: c.seed)
        plan = RunPlan(epochs: settings.epochs, stepsPerEpoch: batches.stepsPerEpoch, warmupFraction: settings.warmupFraction)
    }

    /// Every label must fit the head: a class below the number of labels, a value only for regression.
    static func checkLabels(_ examples: [TaskExample], url: URL, head: TaskHead) throws {
        for example in examples {
            func fail(_ message: String) -> FileError { FileError(url: url, reason: .malformed(line: example.line), message: "line \(example.line): field 'label' \(message)") }
            switch (head, example.label) {
            case (.sequenceClassification(let h), .index(let i)?) where h.problem == .singleLabel && i >= h.labels.count:
                throw fail("is \(i), but the model has \(h.labels.count) labels")
            case (.sequenceClassification(let h), .value?) where h.problem == .singleLabel:
                throw fail("is a real value, but the model is a classifier")
            default: break
            }
        }
    }

    package func microBatchLoss(step: Int, microBatch: Int, of count: Int, tape: Tape, data: inout SeededRandom,
                               dropout: inout SeededRandom) throws -> (loss: Variable, tokens: Int)? {
        guard let (indices, share) = batches.microBatch(step: step, microBatch: microBatch, shard: shard) else { return nil }
        let examples = indices.map { train[$0] }
        let batch = TaskBatch(examples, pad: pad)
        var random: SeededRandom? = dropout
        let forward = model.taskForward(batch, tape: tape, headDropout: settings.headDropout, random: &random)
        dropout = random!
        var loss = model.taskLoss(forward.outputs, batch: batch, labels: examples.map { $0.label! }, tape: tape)
        if settings.lmWeight > 0 {
            loss = tape.add(loss, tape.scale(model.taskLanguageModelLoss(forward.final, batch: batch, tape: tape), by: settings.lmWeight))
        }
        // Each micro-batch counts by its share of the step's examples.
        return (share == 1 ? loss : tape.scale(loss, by: share), batch.tokenCount)
    }

    /// The training objective (task loss plus λ times the LM loss, when λ > 0) and the dev task loss measure
    /// different things: each has its panel, and the dev metrics a third.
    package var dataSummary: String? {
        let t = truncation
        return "task: \(format.task.rawValue), \(train.count) train and \(dev.count) dev examples, \(batches.stepsPerEpoch) steps per epoch, LM-loss weight \(settings.lmWeight), \(settings.pretrained ? "pretrained" : "random") body; cut to fit the context: train \(t.train), dev \(t.dev)"
    }

    package func lossPanels(_ records: [[String: Any]]) -> [LearningCurve.Panel] {
        let objective = settings.lmWeight > 0 ? "training objective: task loss + \(settings.lmWeight) × LM loss" : "training task loss"
        let metrics = records.last { $0["val_loss"] != nil }?.keys.filter { $0.hasPrefix("val_") && $0 != "val_loss" && !$0.hasSuffix("_stderr") }.sorted() ?? []
        return [LearningCurve.Panel(objective, [.init("logged steps", LearningCurve.series(records, "train_loss"))]),
                LearningCurve.Panel("dev task loss", [.init("evaluations", LearningCurve.series(records, "val_loss"), dots: true)]),
                LearningCurve.Panel("dev metrics", metrics.map { .init(String($0.dropFirst(4)), LearningCurve.series(records, $0), dots: true) })]
    }

    package func evaluate(step: Int, precision: ProductPrecision) throws -> Evaluation {
        let (predictions, loss) = model.predict(dev, batchSize: batches.batchSize, precision: precision, pad: pad)
        var metrics: [String: Double] = ["epoch": batches.epoch(afterSteps: step)]
        if let loss { metrics["val_loss"] = Double(loss) }
        let scores = TaskMetrics.compute(predictions, labels: dev.map(\.label), choices: format.task == .multipleChoice)
        for (name, value) in scores { metrics["val_" + name] = value }
        let primary = TaskMetrics.primary(scores)
        let figures = scores.keys.sorted().map { $0 + String(format: " %.4f", scores[$0]!) }.joined(separator: ", ")
        return Evaluation(metrics: metrics, score: primary?.value ?? -Double(loss ?? .infinity),
                          summary: String(format: "epoch %.2f: dev loss %.4f, ", batches.epoch(afterSteps: step), loss ?? .nan) + figures)
    }
}

extension FineTuningObjective {
    /// The number of classes: `given`, which every label must be below, or else the largest label + 1 (at least 2),
    /// provided every class below it has a training example (a label of 7 in a binary task is a mistake to report,
    /// not an 8-class head to train).
    static func classCount(_ examples: [TaskExample], given: Int?, file: URL) throws -> Int {
        let labelled = examples.compactMap { example in example.label?.classIndex.map { (line: example.line, label: $0) } }
        if let given {
            if let bad = labelled.first(where: { $0.label >= given }) {
                throw FileError(url: file, reason: .malformed(line: bad.line), message: "line \(bad.line): field 'label' is \(bad.label), but the task has \(given) classes (--classes, or the number of --labels)")
            }
            return given
        }
        let count = max(2, (labelled.map(\.label).max() ?? 0) + 1)
        let seen = Set(labelled.map(\.label))
        let missing = (0..<count).filter { !seen.contains($0) }
        if !missing.isEmpty, let largest = labelled.max(by: { $0.label < $1.label }), largest.label >= 2 {
            throw FileError(url: file, reason: .malformed(line: largest.line), message: "the labels go up to \(largest.label) (line \(largest.line)), but no example has class "
                            + "\(missing.prefix(5).map(String.init).joined(separator: ", "))\(missing.count > 5 ? ", …" : ""); "
                            + "fix the labels, or give the number of classes with --classes")
        }
        return count
    }

    /// The model a new fine-tuning run starts from: the configuration's `initFrom` model (pretrained weights, or
    /// the same architecture from random weights when `pretrained` is false) with the three special tokens
    /// appended to its vocabulary and its tokenizer, and a task head chosen by the task and the training labels
    /// (multiple choice; regression when similarity labels are real values; otherwise as many classes as the
    /// largest label + 1, at least 2).
    package static func startingModel(_ c: TrainingConfiguration, settings: FineTuningSettings) throws -> (GPTModel, any Tokenizer) {
        guard c.initFrom != "scratch" else {
            throw ConfigurationError(.invalidSetting("initFrom"), "fine-tuning needs a model directory to start from (its architecture and tokenizer)")
        }
        let (base, baseTokenizer) = try ModelLoading.load(c.initFrom)
        guard base.inputFormat == nil else {
            throw ConfigurationError(.unsuitableModel, "\(c.initFrom) is already fine-tuned (it has an input format); start from a pretrained model")
        }
        let examples = try TaskDataset.load(URL(fileURLWithPath: settings.train), task: settings.task, labelsRequired: true)
        // Ids up to the model's vocabulary that the tokenizer lacks become unused special tokens, so the new ones
        // get the same ids in both.
        let fillers = (baseTokenizer.vocabularySize..<base.config.vocabularySize).map { "<|unused_\($0)|>" }
        let tokenizer = try baseTokenizer.addingSpecialTokens(fillers + InputFormat.specialTokenNames)
        let first = Int32(base.config.vocabularySize)
        let format = InputFormat(task: settings.task, start: first, delimiter: first + 1, extract: first + 2)
        let head: TaskHead
        if settings.task == .multipleChoice {
            head = .multipleChoice
        } else if examples.contains(where: { $0.label?.classIndex == nil }) {
            guard settings.labelNames == nil else {
                throw ConfigurationError(.invalidSetting("labelNames"), "\(settings.train) has real-valued labels (a regression): it takes no label names")
            }
            head = .sequenceClassification(SequenceClassification(labels: ["score"], problem: .regression, padTokenID: format.start))
        } else {
            let count = try classCount(examples, given: settings.classCount ?? settings.labelNames?.count, file: URL(fileURLWithPath: settings.train))
            head = .sequenceClassification(SequenceClassification(labels: settings.labelNames ?? (0..<count).map { "LABEL_\($0)" },
                                                                  problem: .singleLabel, padTokenID: format.start))
        }
        var model = try base.adapted(vocabularySize: base.config.vocabularySize + InputFormat.specialTokenNames.count,
                                     taskHead: head, seed: c.seed)
        if !settings.pretrained { model = try GPTModel(config: model.config, seed: c.seed, taskHead: head) }
        model.inputFormat = format
        if let dropout = c.dropout { model.setDropout(dropout) }
        return (model, tokenizer)
    }
}
