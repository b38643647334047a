import ArgumentParser
import Foundation
import SwiftGPT
import TensorCore

/// `gpt export`: a model as a Hugging Face folder, its weights in F32 or BF16, or as a GGUF file for llama.cpp.
struct ExportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Write a model as a Hugging Face folder (config.json, model.safetensors, tokenizer files, chat template), or as a GGUF file for llama.cpp.",
        discussion: """
        BF16 weights (rounded to nearest even) take half the space; SwiftGPT and transformers load them as they load \
        F32 ones. A BPE tokenizer is written as vocab.json + merges.txt and as tokenizer.json + tokenizer_config.json \
        (what transformers' AutoTokenizer reads); a chat model's template goes along, as chat_template.json and as \
        the Jinja chat_template of tokenizer_config.json. A low-rank adapter (an adapter folder as --model, or \
        --adapter) is merged into the weights: the folder is the adapted model, for tools that read no adapters. \
        The folder is written under a temporary name and renamed into place.

        --format gguf writes one file that llama.cpp (llama-cli, llama-server) and ollama load: a GPT-2 model with \
        GPT-2's byte-level BPE, its matrices in --dtype f32, f16, bf16, q8_0 or q4_0 (llama.cpp's block formats), \
        LayerNorms, biases and the position embedding in F32, and the chat template when the model has one. Other \
        architectures and tokenizers are refused with the reason.
        """
    )

    @Option(help: "Model directory (a checkpoint, a training output directory, or a Hugging Face folder), a GGUF file of a GPT-2, or a Hub name (ORG/NAME[@REVISION]), downloaded into Hugging Face's cache unless it is there (see gpt pull).") var model: String
    @Option(help: "A low-rank adapter to apply to the model: a PEFT LoRA folder, such as a training run's with --lora-rank (merged into the weights as they load).") var adapter: String?
    @Option(help: "Tokenizer (default: the one in the model directory, or gpt2).") var tokenizer: String?
    @Option(help: "Output directory (replaced if it exists), or the GGUF file.") var out: String
    @Option(help: "hf (a Hugging Face folder) or gguf (one file for llama.cpp).") var format = "hf"
    @Option(help: "Weight type: fp32 or bf16 (hf); f32, f16, bf16, q8_0 or q4_0 (gguf; default f32).") var dtype: String?

    func run() throws {
        guard format == "hf" || format == "gguf" else { throw ValidationError("--format is hf or gguf, not '\(format)'") }
        let ggufType = format == "gguf" ? GGUFExport.types.first { $0.rawValue == dtype ?? "f32" } : nil
        if format == "gguf", ggufType == nil {
            throw ValidationError("--dtype of a GGUF file is \(GGUFExport.types.map(\.rawValue).joined(separator: ", ")), not '\(dtype!)'")
        }
        let types: [String: SafeTensors.DType] = ["fp32": .float32, "bf16": .bfloat16]
        if format == "hf", types[dtype ?? "fp32"] == nil { throw ValidationError("--dtype is fp32 or bf16, not '\(dtype!)'") }
        let (gpt, tok) = try ModelLoading.load(model, tokenizer: tokenizer, adapter: adapter)
        let target = URL(fileURLWithPath: out)
        // A chat model keeps its template (chat_template.json, and as Jinja in tokenizer_config.json).
        let source = try ModelLoading.resolve(model)
        let template = FileManager.default.fileExists(atPath: source.appendingPathComponent(ChatTemplate.fileName).path)
            ? try ChatTemplate.load(modelDirectory: source) : nil
        if let ggufType {
            // A run's checkpoint (runs/NAME/last) is named after its run.
            let name = ["last", "best"].contains(source.lastPathComponent) ? source.deletingLastPathComponent().lastPathComponent : source.lastPathComponent
            try GGUFExport.write(gpt, tokenizer: tok, chatTemplate: template?.jinja, name: name, type: ggufType, to: target)
            let bytes = (try? FileManager.default.attributesOfItem(atPath: target.path)[.size] as? Int) ?? 0
            print("wrote \(out) (\(gpt.parameters.count) parameters, \(ggufType.rawValue) matrices, " + String(format: "%.1f MB)", Double(bytes) / 1e6))
            return
        }
        let type = types[dtype ?? "fp32"]!
        try TrainingCheckpoint.save(model: gpt, tokenizer: tok, optimizer: nil, state: nil, to: target, weightsAs: type) {
            try template?.save(to: $0)
        }
        let bytes = (try? FileManager.default.attributesOfItem(atPath: target.appendingPathComponent("model.safetensors").path)[.size] as? Int) ?? 0
        print("wrote \(out) (\(gpt.parameters.count) parameters, \(type.rawValue) weights, model.safetensors "
              + String(format: "%.1f MB)", Double(bytes) / 1e6))
    }
}
