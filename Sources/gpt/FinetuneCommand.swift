import ArgumentParser
import Foundation
import SwiftGPT
import TensorCore

struct FinetuneCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "finetune",
        abstract: "Fine-tune a pretrained GPT on a labelled task, as GPT-1 did (task head + λ·LM loss).",
        usage: commandLine.usage(options: "[--initialization <initialization>] [--resume]"),
        discussion: """
        Inputs become token sequences around three special tokens added to the tokenizer and the embedding: \
        classification [start] text [extract]; entailment [start] premise [delim] hypothesis [extract]; similarity \
        both orders of [start] a [delim] b [extract], the two extract states added; multiple choice one \
        [start] context [delim] choice [extract] per choice, softmax over the choices. A linear head reads the \
        final state of the extract token; the loss is L_task + λ·L_LM over the same inputs. Data: JSONL with \
        {text, label}, {premise, hypothesis, label}, {text_a, text_b, label} (an integer label is a class, a real \
        value makes it regression) or {context, choices, label}; every line is checked before training starts. \
        Defaults are GPT-1's recipe: lr 6.25e-5 with 0.2% warmup and linear decay, batch 32, 3 epochs, dropout 0.1 \
        on the head, weight decay 0.01. The output directory gets last/ and best/ (the best dev accuracy, or \
        Pearson correlation for regression) as Hugging Face folders (GPT2ForSequenceClassification or \
        GPT2DoubleHeadsModel), metrics.jsonl and loss.svg; --resume continues exactly.

        SETTINGS:
        \(commandLine.help)
        """
    )

    /// GPT-1's recipe: lr 6.25e-5, batch 32.
    static let commandLine = TrainingCommandLine<FineTuningSettings>.trainingOnExamples(
        .finetune, batchItems: "Examples", learningRate: 6.25e-5, batchSize: 32)

    @Option(help: "pretrained (the model's weights) or scratch (the same architecture from random weights).") var initialization = "pretrained"
    @OptionGroup var arguments: TrainingArguments

    func run() throws {
        let trainer = try Self.commandLine.trainer(arguments: arguments) { configuration, settings in
            guard initialization == "pretrained" || initialization == "scratch" else {
                throw ValidationError("--initialization is pretrained or scratch")
            }
            var settings = settings
            (settings.train, settings.dev) = (absolutePath(settings.train), absolutePath(settings.dev))
            settings.pretrained = initialization == "pretrained"
            configuration.objective = .fineTuning(settings)
        }
        try TrainingRun.run(trainer)
    }
}
