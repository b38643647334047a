import ArgumentParser
import Foundation
import SwiftGPT

struct RewardCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reward",
        abstract: "Reward models from human preferences: train one, or score responses with one.",
        subcommands: [RewardTrainCommand.self, RewardScoreCommand.self]
    )
}

struct RewardTrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Train a reward model on preference pairs (Bradley–Terry loss).",
        usage: commandLine.usage(options: "[--resume]"),
        discussion: """
        Pairs are JSONL lines {"prompt", "chosen", "rejected"} (HH-RLHF's form: prompt + chosen is the preferred \
        dialogue); each line is checked before training starts. The model reads prompt + reply and a scalar head \
        on the last token gives the reward; the loss is −log σ(r_chosen − r_rejected). A row longer than the \
        context keeps its end. The dev pairs are evaluated after every epoch (pairwise accuracy with its standard \
        error, mean margin, rewards' mean and spread); best/ keeps the most accurate model. Checkpoints load in \
        transformers as GPT2ForSequenceClassification with num_labels 1. --resume continues exactly.

        SETTINGS:
        \(commandLine.help)
        """
    )

    static let commandLine = TrainingCommandLine<RewardModelingSettings>.trainingOnExamples(
        .reward, batchItems: "Pairs", learningRate: 1e-5, batchSize: 8)

    @OptionGroup var arguments: TrainingArguments

    func run() throws {
        let trainer = try Self.commandLine.trainer(arguments: arguments) { configuration, settings in
            var settings = settings
            (settings.train, settings.dev) = (absolutePath(settings.train), absolutePath(settings.dev))
            configuration.objective = .rewardModeling(settings)
        }
        try TrainingRun.run(trainer)
    }
}

struct RewardScoreCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "score",
        abstract: "Rate responses with a reward model: one JSON line {\"reward\": r} per input line {\"prompt\", \"response\"}.",
        discussion: "With --pairs, the input is preference pairs {\"prompt\", \"chosen\", \"rejected\"} and the pairwise accuracy is printed too."
    )

    @Option(help: "Reward model directory (from gpt reward train: the output directory, best/ or last/).") var model: String
    @Option(help: "JSONL input.") var data: String
    @Flag(help: "The input holds preference pairs; print the pairwise accuracy.") var pairs = false
    @Option(help: "Write the rewards here instead of standard output.") var output: String?
    @Option(help: "Rows per forward pass.") var batchSize = 16
    @Option(help: "Matrix-product inputs: bf16 or fp32.") var precision: ProductPrecision = .float32

    func run() throws {
        guard batchSize > 0 else { throw ValidationError("--batch-size must be positive") }
        let (gpt, tokenizer) = try ModelLoading.load(model)
        guard case .sequenceClassification(let head)? = gpt.taskHead, head.labels.count == 1 else {
            throw CommandError("\(model) is not a reward model (no one-output sequence-classification head)")
        }
        let url = URL(fileURLWithPath: data)
        let examples: [EncodedExample]
        if pairs {
            examples = try PreferenceDataset.encode(try PreferenceDataset.load(url), from: url, tokenizer: tokenizer,
                                                    contextLength: gpt.config.contextLength)
        } else {
            examples = try JSONLines.map(url) { line, object, fail in
                guard let prompt = object["prompt"] as? String else { throw fail("field 'prompt' is missing or not a string") }
                guard let response = object["response"] as? String else { throw fail("field 'response' is missing or not a string") }
                let ids: [Int32]
                do { ids = try tokenizer.encode(prompt + response) } catch { throw fail("\(error)") }
                let cut = max(0, ids.count - gpt.config.contextLength)
                return EncodedExample(rows: [Array(ids.suffix(gpt.config.contextLength))], label: nil,
                                      lostFraction: cut == 0 ? 0 : Double(cut) / Double(ids.count))
            }
        }
        // One row per prediction: pairs are scored as their two rows.
        let rows = examples.flatMap { $0.rows.map { EncodedExample(rows: [$0], label: nil) } }
        let rewards = gpt.predict(rows, batchSize: batchSize, precision: precision, pad: head.padTokenID).predictions.map { Double($0.value!) }
        let records: [[String: Any]] = pairs
            ? (0..<examples.count).map { k -> [String: Any] in ["chosen": rewards[2 * k], "rejected": rewards[2 * k + 1]] }
            : rewards.map { reward -> [String: Any] in ["reward": reward] }
        try JSONLinesOutput.write(records, to: output)
        var summary = "\(examples.count) \(pairs ? "pairs" : "responses") scored"
        let truncation = TruncationSummary(lostFractions: examples.map(\.lostFraction))
        if truncation.count > 0 { summary += "; cut to fit the context: \(truncation)" }
        if pairs {
            let m = RewardObjective.pairMetrics(chosen: stride(from: 0, to: rewards.count, by: 2).map { rewards[$0] },
                                                rejected: stride(from: 1, to: rewards.count, by: 2).map { rewards[$0] })
            summary += String(format: "; pairwise accuracy %.4f ± %.4f, margin %.3f", m["val_accuracy"]!, m["val_accuracy_stderr"]!, m["val_margin"]!)
        }
        FileHandle.standardError.write(Data((summary + "\n").utf8))
    }
}
