import ArgumentParser
import Foundation
import GPTBenchmarks
import SwiftGPT

struct ParityCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "parity",
        abstract: "Compare SwiftGPT with reference outputs written by Hugging Face transformers.",
        discussion: """
        FOLDER holds config.json, model.safetensors and expected.safetensors (the layout of the golden folders).
        Prints one line per compared quantity with its max absolute and relative error, and exits non-zero when any \
        element is off by more than 1e-4 (or, for reference values above 0.1 in magnitude, by more than 1e-3 relative).
        """
    )

    @Argument(help: "Folder with config.json, model.safetensors and expected.safetensors.")
    var folder: String

    func run() throws {
        let items = try Parity.run(folder: URL(fileURLWithPath: folder))
        let width = items.map(\.name.count).max() ?? 0
        for item in items {
            let name = item.name.padding(toLength: width, withPad: " ", startingAt: 0)
            print("\(name)  max_abs \(String(format: "%.3e", item.maxAbsoluteError))  max_rel \(String(format: "%.3e", item.maxRelativeError))  \(item.passed ? "ok" : "FAIL")\(item.note.isEmpty ? "" : "  (" + item.note + ")")")
        }
        let failed = items.filter { !$0.passed }.count
        print("parity: \(items.count - failed) passed, \(failed) failed")
        if failed > 0 { throw ExitCode.failure }
    }
}
