import ArgumentParser
import Foundation
import SwiftGPT

extension KLEstimator: ExpressibleByArgument {}

struct PPOCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ppo",
        abstract: "Optimise a policy against a reward with PPO and a KL penalty toward the starting policy.",
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
        """
    )

    @Option(help: "Policy to start from (usually the output of gpt sft; or a Hub name, downloaded into Hugging Face's cache unless it is there; see gpt pull); also the frozen reference policy.") var policy: String?
    @Option(help: "Reward: a reward-model directory, or classifier:DIR:LABEL.") var reward: String?
    @Option(help: "Prompts (JSONL: {\"prompt\"} or {\"messages\"}).") var prompts: String?
    @Option(help: "Output directory.") var out: String
    @Flag(help: "Continue the run in --out from its last checkpoint.") var resume = false
    @Option(help: "A chat template for {\"messages\"} prompts (default: the policy's, else HH-RLHF's form).") var chatTemplate: String?
    @Option(help: "Rollouts (each followed by its updates).") var iterations = 20
    @Option(help: "Responses per rollout.") var rolloutSize = 64
    @Option(help: "Passes over each rollout.") var epochsPerRollout = 4
    @Option(help: "Responses per mini-batch.") var batchSize = 16
    @Option(help: "Mini-batches per optimizer step.") var gradientAccumulation = 1
    @Option(help: "Longest response, in tokens.") var maxNewTokens = 32
    @Option(help: "Sampling temperature of rollouts.") var temperature: Float = 1
    @Option(help: "Nucleus sampling of rollouts.") var topP: Float = 1
    @Flag(help: "Sample every response to --max-new-tokens (the end-of-text token is never sampled).") var fixedLength = false
    @Option(help: "Subtracted from the score of a response that does not end with the end-of-text token.") var unfinishedPenalty: Float = 0
    @Option(help: "β, the KL penalty's coefficient (its start when adaptive).") var klCoefficient: Float = 0.05
    @Option(help: "Adapt β toward this KL per response (default: β fixed).") var targetKl: Float?
    @Option(help: "The adaptive controller's horizon, in responses.") var klHorizon: Float = 10000
    @Option(help: "Per-token KL estimator: k1 (log π − log π_ref) or k3.") var klEstimator = KLEstimator.k1
    @Option(help: "GAE's discount γ.") var gamma: Float = 1
    @Option(help: "GAE's λ.") var lambda: Float = 0.95
    @Option(help: "ε of the clipped policy objective.") var clipRange: Float = 0.2
    @Option(help: "ε of the clipped value loss.") var valueClipRange: Float = 0.2
    @Option(help: "Weight of the value loss.") var valueCoefficient: Float = 0.1
    @Flag(help: "Whiten each rollout's scores before the KL penalty is added.") var whitenScores = false
    @Option(help: "PPO-ptx: a directory prepared by gpt prepare whose LM loss is mixed in.") var ptxData: String?
    @Option(help: "PPO-ptx's coefficient γ_ptx.") var ptxCoefficient: Float = 0
    @Option(help: "Rollouts between logged sample responses.") var sampleInterval = 5
    @Option(help: "Prompts held back from the rollouts (the file's last ones), whose mean score chooses best/ (0: the rollouts' own).") var heldOut = 32
    @Option(help: "Optimizer steps between step log lines (every rollout has its own line).") var logInterval = 10
    @Option(help: "Learning rate (constant).") var learningRate: Float = 1.41e-5
    @Option(help: "AdamW weight decay (matrices and embeddings only).") var weightDecay: Float = 0
    @Option(help: "Gradient-norm clip (0: off).") var gradientClip: Float = 1
    @Option(help: "Random seed (value head, prompt order, sampling).") var seed: UInt64 = 1337
    @Option(help: "Matrix-product inputs: bf16 (mixed precision) or fp32 (default: bf16 where the CPU multiplies bf16 natively).") var precision: ProductPrecision?
    @Flag(help: "Under mpirun: each rank keeps AdamW's moments for its share of the parameters only (ZeRO stage 1).") var shardOptimizer = false
    @Option(help: "Under mpirun: seconds to wait for the other ranks in a collective operation before stopping with an error.") var rankTimeout: Double = 300
    @Option(help: "Keep the checkpoints of the last K saves too, as step-NNNNNNNN/ folders beside last/ (their files hard links to last/'s; default 0: last/ and best/ only).") var keepCheckpoints = 0

    func run() throws {
        let trainer: Trainer
        if resume {
            trainer = try TrainingCommand.ppo.resume(out)
        } else {
            guard let policy, let reward, let prompts else { throw ValidationError("a new run needs --policy, --reward and --prompts") }
            let template = try chatTemplate.map { try ChatTemplate.load(file: URL(fileURLWithPath: $0)) }
                ?? ChatTemplate.load(model: policy)
            let rewardSpecification = reward.hasPrefix("classifier:") ? reward : try absoluteModelPath(reward)
            var settings = PolicyOptimizationSettings(prompts: absolutePath(prompts), reward: rewardSpecification,
                                                      chatTemplate: template)
            settings.iterations = iterations
            settings.rolloutSize = rolloutSize
            settings.epochsPerRollout = epochsPerRollout
            settings.maxNewTokens = maxNewTokens
            settings.temperature = temperature
            settings.topP = topP
            settings.fixedLength = fixedLength
            settings.unfinishedPenalty = unfinishedPenalty
            settings.klCoefficient = klCoefficient
            settings.targetKL = targetKl
            settings.klHorizon = klHorizon
            settings.klEstimator = klEstimator
            settings.gamma = gamma
            settings.lambda = lambda
            settings.clipRange = clipRange
            settings.valueClipRange = valueClipRange
            settings.valueCoefficient = valueCoefficient
            settings.whitenScores = whitenScores
            settings.pretrainingData = ptxData.map(absolutePath)
            settings.pretrainingCoefficient = ptxCoefficient
            settings.sampleInterval = sampleInterval
            settings.heldOutPrompts = heldOut
            var c = TrainingConfiguration()
            c.initFrom = try absoluteModelPath(policy)
            c.out = out
            c.batchSize = batchSize
            c.gradientAccumulation = gradientAccumulation
            c.learningRate = learningRate
            c.minLearningRate = learningRate
            c.beta1 = 0.9
            c.beta2 = 0.95
            c.weightDecay = weightDecay
            c.gradientClip = gradientClip
            c.logInterval = logInterval
            c.seed = seed
            c.shardOptimizer = shardOptimizer
            c.rankTimeout = rankTimeout
            c.keepCheckpoints = keepCheckpoints
            c.precision = precision
            c.objective = .policyOptimization(settings)
            trainer = try Trainer(configuration: c)
        }
        try TrainingRun.run(trainer)
    }
}
