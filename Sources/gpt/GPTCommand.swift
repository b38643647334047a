import ArgumentParser

@main
struct GPTCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gpt",
        abstract: "SwiftGPT: train, evaluate and run GPT models.",
        subcommands: [PrepareCommand.self, TrainCommand.self, FinetuneCommand.self, PredictCommand.self, SFTCommand.self, RewardCommand.self, PPOCommand.self, LossCommand.self, ExportCommand.self, EvalCommand.self, ICLDataCommand.self, GenerateCommand.self, ServeCommand.self, EncodeCommand.self, DecodeCommand.self, TokenizerCommand.self, ParityCommand.self, BenchCommand.self]
    )
}
