import Foundation
import GPTModels
import TensorCore
import Tokenizers

extension TrainingConfiguration {
    /// What a run optimises, with the settings only that kind of run has. The trainer's loop is the same for all.
    public enum Objective: Codable, Equatable, Sendable {
        /// Next-token prediction on the prepared data in `TrainingConfiguration.data` (`gpt train`).
        case pretraining
        /// GPT-1 fine-tuning on a labelled task, with a task head (`gpt finetune`).
        case fineTuning(FineTuningSettings)
        /// A reward model trained on preference pairs (`gpt reward train`).
        case rewardModeling(RewardModelingSettings)
        /// Supervised fine-tuning on demonstrations (`gpt sft`).
        case supervisedFineTuning(SupervisedFineTuningSettings)
        /// PPO against a reward, with a KL penalty toward the starting policy (`gpt ppo`).
        case policyOptimization(PolicyOptimizationSettings)
        /// Direct Preference Optimization on preference pairs, against the starting policy (`gpt dpo`).
        case directPreference(DirectPreferenceSettings)

        enum CodingKeys: String, CodingKey, CaseIterable {
            case pretraining, fineTuning, rewardModeling, supervisedFineTuning, policyOptimization, directPreference
        }

        /// Reads `{"KIND": SETTINGS}` (pretraining: `{"pretraining": {}}`), one kind exactly.
        public init(from decoder: Decoder) throws {
            let names = try decoder.container(keyedBy: AnyCodingKey.self).allKeys
            let c = try decoder.container(keyedBy: CodingKeys.self)
            guard names.count == 1, let key = c.allKeys.first else {
                throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription:
                    "an objective is one of \(CodingKeys.allCases.map(\.rawValue).joined(separator: ", ")), with its settings; got \(names.map(\.stringValue))"))
            }
            self = try Self.decode(key, from: c)
        }

        /// The objective of kind `key` with the settings `c` holds under it.
        static func decode(_ key: CodingKeys, from c: KeyedDecodingContainer<CodingKeys>) throws -> Objective {
            switch key {
            case .pretraining: .pretraining
            case .fineTuning: .fineTuning(try FineTuningSettings(from: c.superDecoder(forKey: key)))
            case .rewardModeling: .rewardModeling(try RewardModelingSettings(from: c.superDecoder(forKey: key)))
            case .supervisedFineTuning: .supervisedFineTuning(try SupervisedFineTuningSettings(from: c.superDecoder(forKey: key)))
            case .policyOptimization: .policyOptimization(try PolicyOptimizationSettings(from: c.superDecoder(forKey: key)))
            case .directPreference: .directPreference(try DirectPreferenceSettings(from: c.superDecoder(forKey: key)))
            }
        }

        /// Writes `{"KIND": SETTINGS}`.
        public func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            switch self {
            case .pretraining: try c.encode([String: Int](), forKey: .pretraining)
            case .fineTuning(let settings): try settings.encode(to: c.superEncoder(forKey: .fineTuning))
            case .rewardModeling(let settings): try settings.encode(to: c.superEncoder(forKey: .rewardModeling))
            case .supervisedFineTuning(let settings): try settings.encode(to: c.superEncoder(forKey: .supervisedFineTuning))
            case .policyOptimization(let settings): try settings.encode(to: c.superEncoder(forKey: .policyOptimization))
            case .directPreference(let settings): try settings.encode(to: c.superEncoder(forKey: .directPreference))
            }
        }

        /// What the run trains, for titles: "pretraining on DATA", "classification fine-tuning", "reward model", ….
        package func title(data: String) -> String {
            switch self {
            case .pretraining: "pretraining on \(URL(fileURLWithPath: data).lastPathComponent)"
            case .fineTuning(let settings): "\(settings.task.rawValue) fine-tuning"
            case .rewardModeling: "reward model"
            case .supervisedFineTuning: "supervised fine-tuning"
            case .policyOptimization: "PPO"
            case .directPreference(let settings): settings.loss == .sigmoid ? "DPO" : "DPO (\(settings.loss.rawValue) loss)"
            }
        }

        /// Rejects settings that cannot run.
        func validate() throws {
            switch self {
            case .pretraining: break
            case .fineTuning(let settings): try settings.validate()
            case .rewardModeling(let settings): try settings.validate()
            case .supervisedFineTuning(let settings): try settings.validate()
            case .policyOptimization(let settings): try settings.validate()
            case .directPreference(let settings): try settings.validate()
            }
        }

        /// The model and tokenizer a new run of `configuration` starts from.
        func startingModel(_ configuration: TrainingConfiguration) throws -> (GPTModel, any Tokenizer) {
            switch self {
            case .pretraining: try LanguageModelObjective.startingModel(configuration)
            case .fineTuning(let settings): try FineTuningObjective.startingModel(configuration, settings: settings)
            case .rewardModeling: try RewardObjective.startingModel(configuration)
            case .supervisedFineTuning: try SupervisedFineTuningObjective.startingModel(configuration)
            case .policyOptimization: try PolicyOptimizationObjective.startingModel(configuration)
            case .directPreference: try DirectPreferenceObjective.startingModel(configuration)
            }
        }

        /// Where a resumed run finds its tokenizer: the prepared data for pretraining, else the checkpoint (which holds
        /// the special tokens the run added).
        func tokenizerDirectory(_ configuration: TrainingConfiguration, checkpoint: URL) -> URL {
            if case .pretraining = self { return URL(fileURLWithPath: configuration.data) }
            return checkpoint
        }

        /// The objective that trains `model` on this process's share of the data, reading and validating all of it.
        func makeObjective(_ context: ObjectiveContext) throws -> any TrainingObjective {
            switch self {
            case .pretraining: try LanguageModelObjective(context)
            case .fineTuning(let settings): try FineTuningObjective(settings, context)
            case .rewardModeling(let settings): try RewardObjective(settings, context)
            case .supervisedFineTuning(let settings): try SupervisedFineTuningObjective(settings, context)
            case .policyOptimization(let settings): try PolicyOptimizationObjective(settings, context)
            case .directPreference(let settings): try DirectPreferenceObjective(settings, context)
            }
        }
    }
}

/// Any key of a JSON object, to find those a type does not know.
struct AnyCodingKey: CodingKey {
    var stringValue: String
    var intValue: Int? { nil }
    init(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { nil }
}
