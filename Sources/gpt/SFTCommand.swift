import ArgumentParser
import Foundation
import SwiftGPT

struct SFTCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sft",
        abstract: "Supervised fine-tuning on demonstrations: learn to write the assistant's replies.",
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
        """
    )

    @Option(help: "Model to start from (a SwiftGPT checkpoint or training output, a Hugging Face folder of a GPT-2, OpenAI-GPT, GPT-Neo, GPT-NeoX, GPT-J or GPTBigCode model, or its Hub name (ORG/NAME[@REVISION]), downloaded into Hugging Face's cache unless it is there; see gpt pull).") var model: String?
    @Option(help: "Training demonstrations (JSONL).") var train: String?
    @Option(help: "Dev demonstrations (JSONL), evaluated before training and after every epoch.") var dev: String?
    @Option(help: "A chat template (JSON: system, user, assistant, generation_prompt, end_of_turn; default: the model's, else HH-RLHF's form).") var chatTemplate: String?
    @Option(help: "Dev prompts to answer with the trained model at the end.") var samples = 3
    @Option(help: "Longest sampled reply, in tokens.") var sampleTokens = 128
    @OptionGroup var options: ExampleTrainingOptions<SupervisedFineTuningDefaults>

    func run() throws {
        guard samples >= 0, sampleTokens > 0 else { throw ValidationError("--samples must not be negative and --sample-tokens must be positive") }
        let trainer = try options.trainer(.sft) {
            guard let model, let train, let dev else { throw ValidationError("a new run needs --model, --train and --dev") }
            let template = try chatTemplate.map { try ChatTemplate.load(file: URL(fileURLWithPath: $0)) }
                ?? ChatTemplate.load(model: model)
            var settings = SupervisedFineTuningSettings(train: absolutePath(train), dev: absolutePath(dev),
                                                        chatTemplate: template)
            (settings.epochs, settings.warmupFraction) = (options.epochs, options.warmupFraction)
            var c = try options.configuration(model: model)
            c.objective = .supervisedFineTuning(settings)
            return c
        }
        guard try TrainingRun.run(trainer) == .finished, trainer.group.isMain, samples > 0,
              case .supervisedFineTuning(let settings) = trainer.configuration.objective else { return }
        try sampleReplies(output: URL(fileURLWithPath: options.out), settings: settings)
    }

    /// Replies of the best model to the first dev prompts (each demonstration up to its last reply), sampled at
    /// temperature 0.7 and top-p 0.9 with the run's seed.
    private func sampleReplies(output: URL, settings: SupervisedFineTuningSettings) throws {
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
        sampling.seed = options.seed
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

/// The defaults of `gpt sft`.
enum SupervisedFineTuningDefaults: ExampleTrainingDefaults {
    static let epochs = 2
    static let learningRate: Float = 5e-5
    static let batchSize = 8
    static let examples = "Examples"
    static let warmupFraction: Float = 0.03
}
