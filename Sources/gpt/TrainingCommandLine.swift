import ArgumentParser
import Foundation
import SwiftGPT

/// What a command that trains from a model (`gpt finetune`, `gpt reward train`, `gpt sft`, `gpt ppo`) takes on its
/// command line besides its own options: the loop's settings it takes and its objective's, each with the value a new
/// run starts from. Its usage line, its `--help` list and its trainer all come from here.
struct TrainingCommandLine<Settings> {
    let command: TrainingCommand
    let loop: [Setting<TrainingConfiguration>]
    let start: TrainingConfiguration
    let objective: [Setting<Settings>]
    let objectiveStart: Settings

    /// The usage line: the settings a new run needs, the command's own `options`, then the other settings.
    func usage(options: String) -> String {
        command.usage(required: (objective.filter(\.isRequired).compactMap(\.option) + loop.filter(\.isRequired).compactMap(\.option)),
                      options: options)
    }

    /// The settings as `--help` lists them: the objective's, then the loop's, with the values they start from.
    var help: String {
        SettingOptions.help(objective, startingFrom: objectiveStart) + "\n" + SettingOptions.help(loop, startingFrom: start)
    }

    /// The trainer that `arguments` (the command line's setting options) ask for: with `resume`, the run in `--out`
    /// continued; otherwise a new run from the start values with the options applied, the model to start from made
    /// absolute, and `newRun` setting the objective from its settings.
    func trainer(arguments: [String], resume: Bool,
                 newRun: (inout TrainingConfiguration, Settings) throws -> Void) throws -> Trainer {
        var options = try SettingOptions(arguments, flags: SettingOptions.flags(loop).union(SettingOptions.flags(objective)))
        if resume { return try command.resume(options) }
        let missing = options.missing(objective) + options.missing(loop)
        if !missing.isEmpty { throw ValidationError("a new run needs \(missing.map { "--\($0)" }.joined(separator: ", "))") }
        var c = start, settings = objectiveStart
        try options.apply(loop, to: &c)
        try options.apply(objective, to: &settings)
        try options.checkAllApplied()
        c.initFrom = try absoluteModelPath(c.initFrom)
        try newRun(&c, settings)
        return try Trainer(configuration: c)
    }
}
