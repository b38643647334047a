import ArgumentParser
import Foundation
import SwiftGPT

struct PPOCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ppo",
        abstract: "Optimise a policy against a reward with PPO and a KL penalty toward the starting policy.",
        usage: commandLine.usage(options: "[--chat-template <chat-template>] [--resume]"),
        discussion: """
        Each iteration samples one response per prompt (--rollout-size prompts; temperature, top-p, at most \
        --max-new-tokens, ending at the end-of-text token) with the KV-cache sampler, scores prompt + response \
        with --reward (a reward model from gpt reward train, or classifier:DIR:LABEL: the log-probability of LABEL \
        under a gpt finetune classifier), and subtracts β·KL per token toward the frozen starting policy (k1 or k3; \
        β fixed, or adapted toward --target-kl by InstructGPT's proportional controller). GAE(γ, λ) gives the \
        advantages (whitened) and returns; --epochs-per-rollout passes of mini-batches (--batch-size responses) \
        minimise the clipped policy loss plus --value-coefficient times the clipped value loss of a value head \
        sharing the policy's body, with gradient clipping; --ptx-data adds the LM loss on pretraining data \
        (PPO-ptx). Prompts are JSONL {"prompt": text} (used as is) or {"messages": [...]} (rendered by the chat \
        template with its generation prompt). metrics.jsonl gets one line per rollout (score, held-out score, KL, \
        β, entropy, response length, policy and value loss, clip fractions, approx KL); reward.svg plots the scores \
        and the KL on panels of their own; \
        samples.jsonl logs responses every --sample-interval rollouts. The last --held-out prompts of the file are \
        kept out of the rollouts: at every rollout the policy answers them (sampled as rollouts are, with the same \
        random streams each time) and best/ keeps the policy whose answers to them scored highest on average \
        (with --held-out 0, the highest rollout mean score); checkpoints load in transformers as GPT2LMHeadModel (the v_head tensors are TRL's value \
        head). --resume continues exactly. Under mpirun each rank samples and scores its share of every rollout \
        (with the random streams one process would use), the ranks exchange their shares, and each computes its \
        share of every mini-batch.

        SETTINGS:
        \(commandLine.help)
        """
    )

    /// TRL's recipe: AdamW (0.9, 0.95) at a constant learning rate of 1.41e-5, batches of 16 responses, no weight decay.
    static let commandLine: TrainingCommandLine<PolicyOptimizationSettings> = {
        let table = TrainingConfiguration.settings
        let loop = [
            table[key: "initFrom"].renamed("policy", help: "Policy to start from (usually the output of gpt sft; or a Hub name, downloaded into Hugging Face's cache unless it is there; see gpt pull); also the frozen reference policy.", isRequired: true),
            table[key: "out"].renamed("out", isRequired: true),
            table[key: "batchSize"].renamed("batch-size", help: "Responses per mini-batch."),
            table[key: "gradientAccumulation"].renamed("gradient-accumulation", help: "Mini-batches per optimizer step."),
            table[key: "logInterval"].renamed("log-interval", help: "Optimizer steps between step log lines (every rollout has its own line)."),
            table[key: "learningRate"].renamed("learning-rate", help: "Learning rate (constant)."),
            table[key: "seed"].renamed("seed", help: "Random seed (value head, prompt order, sampling)."),
        ] + TrainingCommandLine<PolicyOptimizationSettings>.commonLoopSettings
        var start = TrainingConfiguration()
        start.initFrom = ""
        start.batchSize = 16
        start.learningRate = 1.41e-5
        start.beta1 = 0.9
        start.beta2 = 0.95
        start.weightDecay = 0
        return TrainingCommandLine(command: .ppo, loop: loop, start: start)
    }()

    @Option(help: "A chat template for {\"messages\"} prompts (default: the policy's, else HH-RLHF's form).") var chatTemplate: String?
    @OptionGroup var arguments: TrainingArguments

    func run() throws {
        let trainer = try Self.commandLine.trainer(arguments: arguments) { configuration, settings in
            var settings = settings
            settings.chatTemplate = try chatTemplate.map { try ChatTemplate.load(file: URL(fileURLWithPath: $0)) }
                ?? ChatTemplate.load(model: configuration.initFrom)
            settings.prompts = absolutePath(settings.prompts)
            settings.reward = settings.reward.hasPrefix("classifier:") ? settings.reward : try absoluteModelPath(settings.reward)
            settings.pretrainingData = settings.pretrainingData.map(absolutePath)
            configuration.minLearningRate = configuration.learningRate
            configuration.objective = .policyOptimization(settings)
        }
        try TrainingRun.run(trainer)
    }
}
