import ArgumentParser
import Foundation
import SwiftGPT
import TensorCore

/// `gpt export`: a model as a Hugging Face folder, its weights in F32 or BF16.
struct ExportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Write a model as a Hugging Face folder (config.json, model.safetensors, tokenizer files), in F32 or BF16.",
        discussion: """
        BF16 weights (rounded to nearest even) take half the space; SwiftGPT and transformers load them as they load \
        F32 ones. The folder is written under a temporary name and renamed into place.
        """
    )

    @Option(help: "Model directory (a checkpoint, a training output directory, or a Hugging Face folder).") var model: String
    @Option(help: "Tokenizer (default: the one in the model directory, or gpt2).") var tokenizer: String?
    @Option(help: "Output directory (replaced if it exists).") var out: String
    @Option(help: "Weight type: fp32 or bf16.") var dtype = "fp32"

    func run() throws {
        let types: [String: SafeTensors.DType] = ["fp32": .float32, "bf16": .bfloat16]
        guard let type = types[dtype] else { throw ValidationError("--dtype is fp32 or bf16, not '\(dtype)'") }
        let (gpt, tok) = try ModelLoading.load(model, tokenizer: tokenizer)
        let target = URL(fileURLWithPath: out)
        try TrainingCheckpoint.save(model: gpt, tokenizer: tok, optimizer: nil, state: nil, to: target, weightsAs: type)
        let bytes = (try? FileManager.default.attributesOfItem(atPath: target.appendingPathComponent("model.safetensors").path)[.size] as? Int) ?? 0
        print(String(format: "wrote %@ (%d parameters, %@ weights, model.safetensors %.1f MB)", out, gpt.parameters.count,
                     type.rawValue, Double(bytes) / 1e6))
    }
}
