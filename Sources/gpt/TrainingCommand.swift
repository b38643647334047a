import Foundation
import SwiftGPT

/// The commands that train, one for each objective: what continues a run, and what their messages call its kind.
enum TrainingCommand: String {
    case train = "gpt train"
    case finetune = "gpt finetune"
    case reward = "gpt reward train"
    case sft = "gpt sft"
    case ppo = "gpt ppo"

    /// The command that starts and continues runs of `objective`.
    init(_ objective: TrainingConfiguration.Objective) {
        switch objective {
        case .pretraining: self = .train
        case .fineTuning: self = .finetune
        case .rewardModeling: self = .reward
        case .supervisedFineTuning: self = .sft
        case .policyOptimization: self = .ppo
        }
    }

    /// What this command trains, as its messages name it.
    var kind: String {
        switch self {
        case .train: "pretraining"
        case .finetune: "fine-tuning"
        case .reward: "reward-model"
        case .sft: "supervised fine-tuning"
        case .ppo: "PPO"
        }
    }

    /// The run in `out` resumed, which must be one this command trains; otherwise an error naming the command that
    /// continues it. `maxIterations` moves its end.
    func resume(_ out: String, maxIterations: Int? = nil) throws -> Trainer {
        let trainer = try Trainer.resume(output: URL(fileURLWithPath: out), maxIterations: maxIterations)
        let c = trainer.configuration, owner = TrainingCommand(c.objective)
        guard owner == self else {
            throw CommandError("\(out) is not a \(kind) run (it is \(c.objective.title(data: c.data))); continue it with \(owner.rawValue) --resume --out \(out)")
        }
        print("resuming \(out) at step \(trainer.step)")
        return trainer
    }
}
