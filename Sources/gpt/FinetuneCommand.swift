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
    @Option(help: "Pretrained model directory (a SwiftGPT checkpoint or training output, or a Hugging Face GPT-2 / OpenAI-GPT folder).") var model: String?
    @Option(help: "Training examples (JSONL).") var train: String?
    @Option(help: "Dev examples (JSONL), evaluated after every epoch.") var dev: String?
    @Option(help: "Output directory.") var out: String
    @Flag(help: "Continue the run in --out from its last checkpoint.") var resume = false
    @Option(help: "pretrained (the model's weights) or scratch (the same architecture from random weights).") var initialization = "pretrained"
    @Option(help: "λ, the weight of the auxiliary language-model loss (0: off).") var lmWeight: Float = 0.5
    @Option(help: "Passes over the training set.") var epochs = 3
    @Option(help: "Peak learning rate.") var learningRate: Float = 6.25e-5
    @Option(help: "Examples per micro-batch.") var batchSize = 32
    @Option(help: "Micro-batches per optimizer step.") var gradientAccumulation = 1
    @Option(help: "Warmup as a fraction of all steps.") var warmupFraction: Float = 0.002
    @Option(help: "Decay after warmup: linear or cosine.") var schedule = LearningRateSchedule.linear
    @Option(help: "Dropout on the pooled state before the head.") var headDropout: Float = 0.1
    @Option(help: "Dropout in the body (default: the model's own).") var dropout: Float?
    @Option(help: "AdamW weight decay (matrices and embeddings only).") var weightDecay: Float = 0.01
    @Option(help: "Gradient-norm clip (0: off).") var gradientClip: Float = 1
    @Option(help: "Longest sequence in tokens (default: the model's context); longer inputs lose tokens from their longest text.") var context: Int?
    @Option(help: "Steps between metric log lines.") var logInterval = 10
    @Option(help: "Random seed (head, new embeddings, order, dropout).") var seed: UInt64 = 1337
    @Option(help: "Matrix-product inputs: bf16 (mixed precision) or fp32 (default: bf16 where the CPU multiplies bf16 natively).") var precision: ProductPrecision?

    func run() throws {
        let trainer: Trainer
        if resume {
            trainer = try Trainer.resume(output: URL(fileURLWithPath: out))
            guard trainer.configuration.fineTuning != nil else { throw CommandError("\(out) is a pretraining run; resume it with gpt train --resume") }
            print("resuming \(out) at step \(trainer.step)")
        } else {
            guard let task, let model, let train, let dev else {
                throw ValidationError("a new run needs --task, --model, --train and --dev")
            }
            guard initialization == "pretrained" || initialization == "scratch" else {
                throw ValidationError("--initialization is pretrained or scratch")
            }
            var c = TrainingConfiguration()
            // Absolute paths, so that --resume works from any directory.
            func absolute(_ path: String) -> String { URL(fileURLWithPath: path).standardizedFileURL.path }
            var settings = FineTuningSettings(task: task, train: absolute(train), dev: absolute(dev))
            settings.lmWeight = lmWeight
            settings.headDropout = headDropout
            settings.epochs = epochs
            settings.warmupFraction = warmupFraction
            settings.pretrained = initialization == "pretrained"
            c.fineTuning = settings
            c.initFrom = absolute(model)
            c.out = out
            c.context = context
            c.dropout = dropout
            c.batchSize = batchSize
            c.gradientAccumulation = gradientAccumulation
            c.learningRate = learningRate
            c.minLearningRate = 0
            c.schedule = schedule
            c.beta1 = 0.9
            c.beta2 = 0.999
            c.weightDecay = weightDecay
            c.gradientClip = gradientClip
            c.logInterval = logInterval
            c.seed = seed
            c.precision = precision
            trainer = try Trainer(configuration: c)
        }
        try TrainingRun.run(trainer)
    }
}
