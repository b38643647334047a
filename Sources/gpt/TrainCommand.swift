import ArgumentParser
import Foundation
import SwiftGPT

struct TrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Pretrain a GPT on a prepared data directory (next-token prediction).",
        usage: TrainingCommand.train.usage(required: [], options: "[--config <config>] [--resume]"),
        discussion: """
        Settings come from --config (a JSON file whose keys are the settings' names in camel case, e.g. \
        {"preset": "baby", "maxIterations": 2000}) and then from the options below, which win. The output \
        directory gets last/ (the latest checkpoint: Hugging Face model files, tokenizer, optimizer and loop state), \
        best/ (the model with the lowest validation loss), metrics.jsonl and loss.svg. --resume continues the run \
        in --out exactly where it stopped, with the settings it started with (--max-iterations may move its end). \
        SIGINT (Ctrl-C), SIGTERM and SIGHUP write a checkpoint and exit 0.

        SETTINGS:
        \(SettingOptions.help(TrainingConfiguration.settings, startingFrom: TrainingConfiguration()))
        """
    )

    @Option(help: "JSON file with settings (the options override it).") var config: String?
    @OptionGroup var arguments: TrainingArguments

    /// The configuration of a new run: the defaults, then --config's file, then the options.
    func settings(_ options: SettingOptions) throws -> TrainingConfiguration {
        var c = TrainingConfiguration()
        if let config {
            guard let data = FileManager.default.contents(atPath: config) else { throw CommandError("cannot read \(config)") }
            do { c = try JSONDecoder().decode(TrainingConfiguration.self, from: data) } catch {
                throw CommandError("\(config): not a valid training configuration (\(error))")
            }
        }
        var options = options
        try options.apply(TrainingConfiguration.settings, to: &c)
        try options.checkAllApplied()
        return c
    }

    func run() throws {
        let options = try SettingOptions(arguments.settings, flags: SettingOptions.flags(TrainingConfiguration.settings))
        let trainer = arguments.resume ? try TrainingCommand.train.resume(options) : try Trainer(configuration: settings(options))
        try TrainingRun.run(trainer)
    }
}
