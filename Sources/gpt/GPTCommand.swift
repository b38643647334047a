import ArgumentParser
import Foundation
import GPTUtilities
import SwiftGPT

@main
struct GPTCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gpt",
        abstract: "SwiftGPT: train, evaluate and run GPT models.",
        version: swiftGPTVersion,
        subcommands: [PrepareCommand.self, TrainCommand.self, FinetuneCommand.self, PredictCommand.self, SFTCommand.self, RewardCommand.self, PPOCommand.self, DPOCommand.self, LossCommand.self, ExportCommand.self, EvalCommand.self, ICLDataCommand.self, GenerateCommand.self, ChatCommand.self, ServeCommand.self, PullCommand.self, ModelsCommand.self, EncodeCommand.self, DecodeCommand.self, TokenizerCommand.self, ParityCommand.self, BenchCommand.self]
    )

    /// Parses the command line and runs the command it names. A usage error found while the command runs (a
    /// `ValidationError` from `run()`) is reported with that command's usage, as one found while parsing is;
    /// ArgumentParser's own `main` would show the usage of `gpt` itself.
    static func main() {
        var command: ParsableCommand
        do { command = try parseAsRoot() } catch { exitReporting(error) }
        do {
            try command.run()
        } catch let error as ValidationError {
            let type = Swift.type(of: command)
            let name = (["gpt"] + commandPath(to: type, from: self)).joined(separator: " ")
            FileHandle.standardError.write(Data("""
                Error: \(error.message)
                Usage: \(usageString(for: type))
                  See '\(name) --help' for more information.

                """.utf8))
            Foundation.exit(ExitCode.validationFailure.rawValue)
        } catch {
            exitReporting(error)
        }
    }

    /// Ends the process for `error` as ArgumentParser's `exit(withError:)` does (help and version to standard
    /// output with status 0, anything else to standard error with its code), but writes an error's text with one
    /// `write`: ArgumentParser's own writes it a byte at a time, and the ranks of an MPI job that fail together (a
    /// settings check) would have their messages interleaved byte by byte in `mpirun`'s output.
    private static func exitReporting(_ error: Error) -> Never {
        let code = exitCode(for: error)
        guard code != .success else { exit(withError: error) }
        let text = fullMessage(for: error)
        if !text.isEmpty { FileHandle.standardError.write(Data((text + "\n").utf8)) }
        Foundation.exit(code.rawValue)
    }

    /// The subcommand names leading from `root` to `target` (empty when it is `root`).
    private static func commandPath(to target: ParsableCommand.Type, from root: ParsableCommand.Type) -> [String] {
        for sub in root.configuration.subcommands {
            let name = sub.configuration.commandName ?? String(describing: sub)
            if sub == target { return [name] }
            let below = commandPath(to: target, from: sub)
            if !below.isEmpty { return [name] + below }
        }
        return []
    }
}
