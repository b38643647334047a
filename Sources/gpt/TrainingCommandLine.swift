import ArgumentParser
import Foundation
import SwiftGPT

/// What a command that trains from a model (`gpt finetune`, `gpt reward train`, `gpt sft`, `gpt ppo`) takes on its
/// command line besides its own options: the loop's settings it takes, each with the value a new run starts from, and
/// all of its objective's (`Settings.settings`, starting from `Settings.blank`). Its usage line, its `--help` list and
/// its trainer all come from here.
struct TrainingCommandLine<Settings: ObjectiveSettings> {
    let command: TrainingCommand
    let loop: [Setting<TrainingConfiguration>]
    let start: TrainingConfiguration
    private var objective: [Setting<Settings>] { Settings.settings }

    /// The usage line: the settings a new run needs, the command's own `options`, then the other settings.
    func usage(options: String) -> String {
        command.usage(required: SettingOptions.required(objective) + SettingOptions.required(loop), options: options)
    }

    /// The settings as `--help` lists them: the objective's, then the loop's, with the values they start from.
    var help: String {
        SettingOptions.help(objective, startingFrom: .blank) + "\n" + SettingOptions.help(loop, startingFrom: start)
    }

    /// The trainer that `arguments` (the command line's setting options) ask for: with `resume`, the run in `--out`
    /// continued; otherwise a new run from the start values with the options applied, the model to start from made
    /// absolute, and `newRun` setting the objective from its settings.
    func trainer(arguments: TrainingArguments,
                 newRun: (inout TrainingConfiguration, Settings) throws -> Void) throws -> Trainer {
        var options = try SettingOptions(arguments.settings, flags: SettingOptions.flags(loop).union(SettingOptions.flags(objective)))
        if arguments.resume { return try command.resume(options) }
        let missing = options.missing(objective) + options.missing(loop)
        if !missing.isEmpty { throw ValidationError("a new run needs \(missing.map { "--\($0)" }.joined(separator: ", "))") }
        var c = start, settings = Settings.blank
        try options.apply(loop, to: &c)
        try options.apply(objective, to: &settings)
        try options.checkAllApplied()
        c.initFrom = try absoluteModelPath(c.initFrom)
        try newRun(&c, settings)
        return try Trainer(configuration: c)
    }
}

extension TrainingCommandLine {
    /// The command line of a command that trains on examples in epochs (`gpt finetune`, `gpt reward train`,
    /// `gpt sft`, `gpt dpo`): a micro-batch holds `batchItems` ("Examples", "Pairs"); a new run starts from AdamW (0.9,
    /// 0.999), weight decay 0.01, linear decay to 0 after warmup, and the command's learning rate and batch size; its
    /// help gives `dropout` as the body's dropout when none is set; the model it starts from is `--model` unless
    /// `startingModel` names it otherwise.
    static func trainingOnExamples(_ command: TrainingCommand, batchItems: String, learningRate: Float, batchSize: Int,
                                   dropout: String = "the model's own", startingModel: Setting<TrainingConfiguration>? = nil) -> Self {
        let table = TrainingConfiguration.settings
        let loop = [
            startingModel ?? table[key: "initFrom"].renamed("model", help: "Model to start from: a SwiftGPT checkpoint or training output, a Hugging Face folder of a GPT-2, OpenAI-GPT, GPT-Neo, GPT-NeoX, GPT-J or GPTBigCode model, or its Hub name (ORG/NAME[@REVISION]), downloaded into Hugging Face's cache unless it is there (see gpt pull).", isRequired: true),
            table[key: "out"].renamed("out", isRequired: true),
            table[key: "learningRate"],
            table[key: "batchSize"].renamed("batch-size", help: "\(batchItems) per micro-batch."),
            table[key: "gradientAccumulation"],
            table[key: "schedule"],
            table[key: "dropout"].renamed("dropout", help: "Dropout in the body (default: \(dropout))."),
            table[key: "context"].renamed("context", help: "Longest sequence in tokens (default: the model's context); longer inputs are cut."),
            table[key: "logInterval"],
            table[key: "seed"].renamed("seed", help: "Random seed (head, new embeddings, order, dropout)."),
        ] + commonLoopSettings
        var start = TrainingConfiguration()
        start.initFrom = ""
        start.learningRate = learningRate
        start.minLearningRate = 0
        start.schedule = .linear
        start.batchSize = batchSize
        start.beta1 = 0.9
        start.beta2 = 0.999
        start.weightDecay = 0.01
        return TrainingCommandLine(command: command, loop: loop, start: start)
    }

    /// The loop's settings that every command starting from a model (all but `gpt train`) takes as they are.
    static var commonLoopSettings: [Setting<TrainingConfiguration>] {
        ["weightDecay", "gradientClip", "precision", "loraRank", "loraAlpha", "loraDropout", "loraTargets", "loraBasePrecision", "shardOptimizer", "rankTimeout",
         "keepCheckpoints"].map { TrainingConfiguration.settings[key: $0] }
    }
}

/// What every training command takes besides its own options: `--resume`, and the setting options, which
/// ArgumentParser leaves unparsed for `SettingOptions` to read against the command's tables.
struct TrainingArguments: ParsableArguments {
    @Flag(help: "Continue the run in --out from its last checkpoint (its settings come from the checkpoint).") var resume = false
    @Argument(parsing: .allUnrecognized, help: .hidden) var settings: [String] = []
}
