import ArgumentParser
import Foundation
import SwiftGPT
import TensorCore

extension InputFormat.Task: ExpressibleByArgument {}
extension LearningRateSchedule: ExpressibleByArgument {}

struct FinetuneCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "finetune",
        abstract: "Fine-tune a pretrained GPT on a labelled task, as GPT-1 did (task head + λ·LM loss).",
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
        """
    )

    @Option(help: "Task: \(InputFormat.Task.allCases.map(\.rawValue).joined(separator: ", ")).") var task: InputFormat.Task?
    @Option(help: "Pretrained model directory (a SwiftGPT checkpoint or training output, a Hugging Face folder of a GPT-2, OpenAI-GPT, GPT-Neo, GPT-NeoX, GPT-J or GPTBigCode model, or its Hub name (ORG/NAME[@REVISION]), downloaded into Hugging Face's cache unless it is there; see gpt pull).") var model: String?
    @Option(help: "Training examples (JSONL).") var train: String?
    @Option(help: "Dev examples (JSONL), evaluated after every epoch.") var dev: String?
    @Option(help: "pretrained (the model's weights) or scratch (the same architecture from random weights).") var initialization = "pretrained"
    @Option(help: "λ, the weight of the auxiliary language-model loss (0: off).") var lmWeight: Float = 0.5
    @Option(help: "Dropout on the pooled state before the head.") var headDropout: Float = 0.1
    @Option(help: "Number of classes of a classification, entailment or integer similarity task (default: the largest training label + 1, every class below it present).")
    var classes: Int?
    @Option(help: "Names of the classes, comma-separated, label 0's first (default: LABEL_0, LABEL_1, …); the checkpoint's config.json and gpt predict use them.")
    var labels: String?
    @OptionGroup var options: ExampleTrainingOptions<FineTuningDefaults>

    func run() throws {
        let trainer = try options.trainer(.finetune) {
            guard let task, let model, let train, let dev else { throw ValidationError("a new run needs --task, --model, --train and --dev") }
            guard initialization == "pretrained" || initialization == "scratch" else {
                throw ValidationError("--initialization is pretrained or scratch")
            }
            var settings = FineTuningSettings(task: task, train: absolutePath(train), dev: absolutePath(dev))
            (settings.epochs, settings.warmupFraction) = (options.epochs, options.warmupFraction)
            settings.lmWeight = lmWeight
            settings.headDropout = headDropout
            settings.pretrained = initialization == "pretrained"
            settings.classCount = classes
            settings.labelNames = labels.map { $0.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) } }
            var c = try options.configuration(model: model)
            c.objective = .fineTuning(settings)
            return c
        }
        try TrainingRun.run(trainer)
    }
}

/// The defaults of `gpt finetune`.
enum FineTuningDefaults: ExampleTrainingDefaults {
    static let epochs = 3
    static let learningRate: Float = 6.25e-5
    static let batchSize = 32
    static let examples = "Examples"
    static let warmupFraction: Float = 0.002
}
