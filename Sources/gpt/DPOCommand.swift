import ArgumentParser
import Foundation
import SwiftGPT

struct DPOCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dpo",
        abstract: "Direct Preference Optimization: learn from preference pairs with no reward model and no sampling.",
        usage: commandLine.usage(options: "[--resume]"),
        discussion: """
        Starts from a language model (--policy, usually one from gpt sft), which is also the frozen reference. Pairs \
        are JSONL lines {"prompt", "chosen", "rejected"} (HH-RLHF's form); each line is checked before training \
        starts (an empty prompt, or a chosen reply equal to the rejected one, is an error). Each reply is read \
        after its prompt and closed by the model's end-of-turn marker (its chat_template.json; else the \
        end-of-text token); a sequence longer than the context keeps its end. The reference's log-probability \
        of every reply is computed once, before the first step, and kept with the checkpoints. The loss of a pair \
        is a function of z = (log π(chosen) − log π(rejected)) − (log π_ref(chosen) − log π_ref(rejected)): \
        sigmoid −log σ(βz) (DPO; with --label-smoothing ε, conservative DPO), ipo (z − 1/(2β))² over \
        log-probabilities averaged per token, or hinge max(0, 1 − βz), as TRL's DPOTrainer names them. Dropout \
        is off unless --dropout is given. The dev pairs are evaluated before training and after every epoch: loss, \
        implicit rewards β·(log π − log π_ref) of the chosen and rejected replies, their margin, and the accuracy \
        (the share of pairs whose chosen reply gets the higher reward, a tie counting half: 0.5 before training); \
        best/ keeps the most accurate model. \
        Checkpoints are Hugging Face folders with the chat template. --resume continues exactly.

        SETTINGS:
        \(commandLine.help)
        """
    )

    static let commandLine = TrainingCommandLine<DirectPreferenceSettings>.trainingOnExamples(
        .dpo, batchItems: "Pairs", learningRate: 5e-6, batchSize: 8, dropout: "0, as in TRL",
        startingModel: TrainingConfiguration.settings[key: "initFrom"].renamed("policy", help: "Policy to start from (usually the output of gpt sft; or a Hub name, downloaded into Hugging Face's cache unless it is there; see gpt pull); also the frozen reference.", isRequired: true))

    @OptionGroup var arguments: TrainingArguments

    func run() throws {
        let trainer = try Self.commandLine.trainer(arguments: arguments) { configuration, settings in
            var settings = settings
            (settings.train, settings.dev) = (absolutePath(settings.train), absolutePath(settings.dev))
            settings.chatTemplate = try ChatTemplate.load(model: configuration.initFrom)
            configuration.objective = .directPreference(settings)
        }
        try TrainingRun.run(trainer)
    }
}
