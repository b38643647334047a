import ArgumentParser
import Foundation
import SwiftGPT

/// The commands that train, one for each objective: what continues a run, and what their messages call its kind.
enum TrainingCommand: String {
    case train = "gpt train"
    case finetune = "gpt finetune"
    case reward = "gpt reward train"
    case sft = "gpt sft"
    case ppo = "gpt ppo"
    case dpo = "gpt dpo"

    /// The command that starts and continues runs of `objective`.
    init(_ objective: TrainingConfiguration.Objective) {
        switch objective {
        case .pretraining: self = .train
        case .fineTuning: self = .finetune
        case .rewardModeling: self = .reward
        case .supervisedFineTuning: self = .sft
        case .policyOptimization: self = .ppo
        case .directPreference: self = .dpo
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
        case .dpo: "DPO"
        }
    }

    /// The run in the command line's `--out` resumed, which must be one this command trains. The run keeps the
    /// settings it started with: only `--out`, and for `gpt train` `--max-iterations` (which moves its end), may be
    /// given.
    func resume(_ options: SettingOptions) throws -> Trainer {
        let resumable = TrainingConfiguration.settings.filter { $0.key == "out" || (self == .train && $0.key == "maxIterations") }
        let allowed = Set(resumable.compactMap(\.option))
        if let other = options.options.first(where: { !allowed.contains($0) }) {
            throw ValidationError("--resume continues the run in --out with the settings it started with; --\(other) cannot be given with it")
        }
        guard options.contains("out") else { throw ValidationError("--resume needs --out, the directory of the run to continue") }
        var c = TrainingConfiguration(), options = options
        try options.apply(resumable, to: &c)
        return try resume(c.out, maxIterations: options.contains("max-iterations") ? c.maxIterations : nil)
    }

    /// The run in `out` resumed, which must be one this command trains; otherwise an error naming the command that
    /// continues it. `maxIterations` moves its end.
    private func resume(_ out: String, maxIterations: Int?) throws -> Trainer {
        let trainer = try Trainer.resume(output: URL(fileURLWithPath: out), maxIterations: maxIterations)
        let c = trainer.configuration, owner = TrainingCommand(c.objective)
        guard owner == self else {
            throw CommandError("\(out) is not a \(kind) run (it is \(c.objective.title(data: c.data))); continue it with \(owner.rawValue) --resume --out \(out)")
        }
        print("resuming \(out) at step \(trainer.step)")
        return trainer
    }
}

extension TrainingCommand {
    /// The usage line of this command: the settings a new run needs (`required`), the command's own `options`, then
    /// the other settings.
    func usage(required: [String], options: String) -> String {
        ([rawValue] + required.map { "--\($0) <\($0)>" } + [options, "[<setting> ...]"]).joined(separator: " ")
    }
}
