import ArgumentParser
import Foundation
import SwiftGPT

struct LossCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "loss",
        abstract: "Language-model loss and perplexity of a model over a whole prepared split.",
        discussion: """
        Every token of DATA/SPLIT.bin after the first is predicted once, in consecutive windows of --context tokens, \
        so the figure has none of the sampling noise of a training run's evaluation on random batches. \
        --precision bf16, int8 or int4 reads every window through the decoding kernels over weights packed in that format \
        (as `gpt generate --precision` decodes), so the loss shows what 16-, 8- or 4-bit decoding costs: the weights' \
        rounding and, for int4, each product's input rounded to 8 bits. --cache-precision bf16 does the same with the \
        keys and values kept in 16 bits, as `gpt generate --cache-precision bf16` keeps them.
        """
    )

    @Option(help: "Model directory (a checkpoint, a training output directory, or a Hugging Face folder), a GGUF file of a GPT-2, or a Hub name (ORG/NAME[@REVISION]), downloaded into Hugging Face's cache unless it is there (see gpt pull).") var model: String
    @Option(help: "A low-rank adapter to apply to the model: a PEFT LoRA folder, such as a training run's with --lora-rank (merged into the weights as they load).") var adapter: String?
    @Option(help: "Prepared data directory (from `gpt prepare`).") var data: String
    @Option(help: "Which split: train or val.") var split = "val"
    @Option(help: "Window length in tokens (default: the model's context).") var context: Int?
    @Option(help: "Windows per forward pass (fp32; the other precisions read one window at a time).") var batchSize = 16
    @Option(help: "Weights as decoding holds them: fp32, bf16, int8 (per output channel) or int4 (per 32 inputs).") var precision = WeightFormat.float32
    @Option(help: "Keys and values as decoding's cache keeps them: fp32 or bf16.") var cachePrecision = CachedAttention.Cache.Precision.float32

    func run() throws {
        guard split == "train" || split == "val" else { throw ValidationError("--split is train or val") }
        guard batchSize > 0 else { throw ValidationError("--batch-size must be positive") }
        let (gpt, _) = try ModelLoading.load(model, adapter: adapter)
        let throughDecoding = precision != .float32 || cachePrecision != .float32
        let weights = throughDecoding ? DecodeWeights(model: gpt, format: precision) : nil
        let file = try TokenFile(contentsOf: URL(fileURLWithPath: data).appendingPathComponent("\(split).bin"))
        let length = context ?? gpt.config.contextLength
        let bar = ProgressBar(total: max(file.count - 1, 1), label: "evaluating")
        let result = try DatasetLoss.evaluate(gpt, weights: weights, cachePrecision: cachePrecision, on: file, length: length, batch: batchSize) { done, _ in bar.update(done) }
        bar.finish()
        print(split + String(format: " loss %.4f, perplexity %.3f, over %d tokens in windows of %d, ", result.loss, result.perplexity,
                             result.tokens, length) + "\(precision.rawValue) weights, \(cachePrecision.rawValue) cache" + (throughDecoding ? " (decoding kernels)" : ""))
    }
}
