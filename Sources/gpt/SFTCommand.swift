import ArgumentParser
import Foundation
import SwiftGPT

struct SFTCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sft",
        abstract: "Supervised fine-tuning on demonstrations: learn to write the assistant's replies.",
        usage: commandLine.usage(options: "[--chat-template <chat-template>] [--samples <samples>] [--sample-tokens <sample-tokens>] [--resume]"),
        discussion: """
        Demonstrations are JSONL lines, Alpaca's {"instruction", "input", "response"} or {"messages": [{"role", \
        "content"}, …]} (roles system, user, assistant); each line is checked before training starts. Every \
        conversation is rendered by the chat template (--chat-template, else the model's chat_template.json, else \
        the HH-RLHF form "\\n\\nHuman: …\\n\\nAssistant: …" with the end-of-text token ending each reply) and the \
        loss is next-token prediction on the replies only: prompts are read, never trained on. Rows are padded, \
        never packed, so no demonstration sees another. A demonstration longer than the context keeps its \
        beginning. The dev replies' loss is evaluated before training and after every epoch; best/ keeps the \
        lowest. Checkpoints are Hugging Face GPT-2 folders with the chat template, which gpt generate --chat and \
        gpt serve then use. After training, replies to the first --samples dev prompts are printed and written \
        to OUT/samples.jsonl. --resume continues exactly.

        SETTINGS:
        \(commandLine.help)
        """
    )

    static let commandLine = TrainingCommandLine<SupervisedFineTuningSettings>.trainingOnExamples(
        .sft, batchItems: "Examples", learningRate: 5e-5, batchSize: 8)

    @Option(help: "A chat template (JSON: system, user, assistant, generation_prompt, end_of_turn; default: the model's, else HH-RLHF's form).") var chatTemplate: String?
    @Option(help: "Dev prompts to answer with the trained model at the end.") var samples = 3
    @Option(help: "Longest sampled reply, in tokens.") var sampleTokens = 128
    @OptionGroup var arguments: TrainingArguments

    func run() throws {
        guard samples >= 0, sampleTokens > 0 else { throw ValidationError("--samples must not be negative and --sample-tokens must be positive") }
        guard let (output, seed, settings) = try train() else { return }
        try sampleReplies(output: output, seed: seed, settings: settings)
    }

    /// Runs the training; when it finished in the main process and replies are to be sampled, what sampling needs.
    /// The trainer and its model are gone when this returns, so that sampling does not hold two models.
    private func train() throws -> (output: URL, seed: UInt64, settings: SupervisedFineTuningSettings)? {
        let trainer = try Self.commandLine.trainer(arguments: arguments) { configuration, settings in
            var settings = settings
            (settings.train, settings.dev) = (absolutePath(settings.train), absolutePath(settings.dev))
            settings.chatTemplate = try chatTemplate.map { try ChatTemplate.load(file: URL(fileURLWithPath: $0)) }
                ?? ChatTemplate.load(model: configuration.initFrom)
            configuration.objective = .supervisedFineTuning(settings)
        }
        guard try TrainingRun.run(trainer) == .finished, trainer.group.isMain, samples > 0,
              case .supervisedFineTuning(let settings) = trainer.configuration.objective else { return nil }
        return (URL(fileURLWithPath: trainer.configuration.out), trainer.configuration.seed, settings)
    }

    /// Replies of the best model to the first dev prompts (each demonstration up to its last reply), sampled at
    /// temperature 0.7 and top-p 0.9 with the run's seed.
    private func sampleReplies(output: URL, seed: UInt64, settings: SupervisedFineTuningSettings) throws {
        TensorMemory.releasePooledBuffers()  // the training's activations, kept for reuse
        let (gpt, tokenizer) = try ModelLoading.load(output.path)
        let template = settings.chatTemplate
        let url = URL(fileURLWithPath: settings.dev)
        let prompts = try DemonstrationDataset.load(url).prefix(samples).map { demonstration in
            Array(demonstration.messages[..<demonstration.messages.lastIndex { $0.role == .assistant }!])
        }
        var sampling = SamplingOptions()
        sampling.maxNewTokens = sampleTokens
        sampling.temperature = 0.7
        sampling.topP = 0.9
        sampling.seed = seed
        sampling.truncateLeft = true
        sampling.stop = try template.replyStops(tokenizer)
        let ids = try prompts.map { try template.tokens($0, addGenerationPrompt: true, tokenizer: tokenizer) }
        let completions = try Generator(model: gpt, tokenizer: tokenizer).generate(prompts: ids, options: sampling)
        var records: [[String: Any]] = []
        for (messages, completion) in zip(prompts, completions) {
            let reply = ReplyPrefixRemover.removing(template.replyPrefix, from: completion.text)
            print("\n### \(messages.last!.content)\n--> \(reply)")
            records.append(["prompt": messages.map { ["role": $0.role.rawValue, "content": $0.content] }, "reply": reply,
                            "finish_reason": completion.finishReason.rawValue])
        }
        let path = output.appendingPathComponent("samples.jsonl").path
        try JSONLinesOutput.write(records, to: path)
        print("\nsamples written to \(path)")
    }
}
