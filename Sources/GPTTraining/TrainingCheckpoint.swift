import Foundation
import GPTModels
import GPTUtilities
import TensorCore
import Tokenizers

/// A checkpoint directory: the model as a Hugging Face folder (config.json + model.safetensors), or a run's low-rank
/// adapter as a PEFT folder (`LowRankAdapterFiles`), the tokenizer's files, and, for resuming, the optimizer moments (optimizer.safetensors) and the loop state (training_state.json).
/// A checkpoint is written into a temporary directory, flushed to the disk, then exchanged with the old one in one
/// step, so that `last/` and `best/` always hold a complete checkpoint, whenever the process is killed.
package enum TrainingCheckpoint {
    /// AdamW's moments over the whole parameter arena, as a checkpoint stores them, handed over in pieces: a run
    /// whose processes share out the optimizer collects each piece from its owners as the file is written, so that
    /// no process holds all the moments, and any run can resume any checkpoint.
    package struct OptimizerMoments {
        /// Elements in each moment (the parameter arena's length).
        package let count: Int
        /// Hands moment `index` (0: first, 1: second) to `write` in order, in one or more pieces.
        package let pieces: (_ index: Int, _ write: (UnsafeBufferPointer<Float>) throws -> Void) throws -> Void

        package init(count: Int, pieces: @escaping (Int, (UnsafeBufferPointer<Float>) throws -> Void) throws -> Void) {
            self.count = count
            self.pieces = pieces
        }

        /// The moments of an optimizer that updates the whole arena.
        package init(_ optimizer: AdamW) {
            precondition(optimizer.range.lowerBound == 0, "an optimizer of a share holds part of the moments")
            count = optimizer.range.count
            pieces = { index, write in
                let moment = index == 0 ? optimizer.firstMoment : optimizer.secondMoment
                try write(UnsafeBufferPointer(start: moment.pointer, count: moment.count))
            }
        }
    }

    /// The loop state needed to continue exactly where a run stopped.
    package struct State: Codable, Equatable {
        package var step: Int
        package var optimizerSteps: Int
        package var dataRandom: SeededRandom
        package var dropoutRandom: SeededRandom
        /// The highest evaluation score so far (the model in `best/`).
        package var bestScore: Double?
        package var configuration: TrainingConfiguration
    }

    static let stateFile = "training_state.json"
    static let optimizerFile = "optimizer.safetensors"

    /// Writes a model checkpoint (and the training state when given) to `directory`, replacing it atomically, the
    /// model's weights stored as `dtype` (F32, or BF16); `extraFiles` adds files to the directory being written.
    package static func save(model: GPTModel, tokenizer: any Tokenizer, optimizer: OptimizerMoments?, state: State?, to directory: URL,
                            weightsAs dtype: SafeTensors.DType = .float32, extraFiles: (URL) throws -> Void = { _ in }) throws {
        let fm = FileManager.default
        let (partial, old) = (stagedFolder(directory), displacedFolder(directory))
        try? fm.removeItem(at: partial)
        do {
            try fm.createDirectory(at: partial, withIntermediateDirectories: true)
            if model.adapter != nil {
                try LowRankAdapterFiles.save(model, to: partial)
            } else {
                try HuggingFaceCheckpoint.save(model, to: partial, as: dtype)
            }
            try tokenizer.save(to: partial)
            try extraFiles(partial)
            if let optimizer, let state {
                try SafeTensors.write(shapes: [("exp_avg", [optimizer.count]), ("exp_avg_sq", [optimizer.count])],
                                      to: partial.appendingPathComponent(optimizerFile), contents: optimizer.pieces)
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
                try AtomicFile.write(try encoder.encode(state), to: partial.appendingPathComponent(stateFile))
            }
            try AtomicFile.replaceFolder(directory, with: partial, displaced: old)
        } catch {
            try? fm.removeItem(at: partial)
            throw error
        }
    }

    /// Where `save` writes a checkpoint before it replaces `directory`.
    static func stagedFolder(_ directory: URL) -> URL {
        directory.deletingLastPathComponent().appendingPathComponent(".\(directory.lastPathComponent).partial-\(getpid())")
    }

    /// Where `save` moves the previous checkpoint aside on a file system that cannot exchange folders.
    static func displacedFolder(_ directory: URL) -> URL {
        directory.deletingLastPathComponent().appendingPathComponent(".\(directory.lastPathComponent).old-\(getpid())")
    }

    /// Keeps the checkpoint just written to `last` as `step-NNNNNNNN/` beside it, then removes the oldest such
    /// folders beyond `count`. The copy's files are hard links to those of `last` (a save never changes a file in
    /// place, so they stay as they are) or copies where the file system cannot link; the folder appears complete or
    /// not at all. A folder for the same step, from an earlier save of that step, is kept as it is.
    static func keepStepCheckpoint(of last: URL, step: Int, keeping count: Int) throws {
        let fm = FileManager.default
        let output = last.deletingLastPathComponent()
        let target = output.appendingPathComponent(stepFolderName(step))
        if !fm.fileExists(atPath: target.path) {
            let partial = stagedFolder(target)
            try? fm.removeItem(at: partial)
            do {
                try fm.createDirectory(at: partial, withIntermediateDirectories: false)
                for name in try fm.contentsOfDirectory(atPath: last.path) {
                    let (source, copy) = (last.appendingPathComponent(name), partial.appendingPathComponent(name))
                    if link(source.path, copy.path) != 0 { try fm.copyItem(at: source, to: copy) }
                }
                try AtomicFile.replaceFolder(target, with: partial, displaced: displacedFolder(target))
            } catch {
                try? fm.removeItem(at: partial)
                throw error
            }
        }
        let kept = stepCheckpoints(in: output)
        for (_, folder) in kept.dropLast(count) {
            // Renamed out of the step names first, so that a kill during the removal leaves no partial step folder.
            let removed = output.appendingPathComponent(".\(folder.lastPathComponent).removed-\(getpid())")
            guard rename(folder.path, removed.path) == 0 else {
                throw FileError(url: folder, reason: .writeFailed, message: "cannot remove this old checkpoint (\(String(cString: strerror(errno))))")
            }
            try fm.removeItem(at: removed)
        }
        try AtomicFile.synchronizeFolder(output)
    }

    /// The folder name of the checkpoint kept for `step`.
    static func stepFolderName(_ step: Int) -> String {
        let digits = String(step)
        return "step-" + String(repeating: "0", count: max(0, 8 - digits.count)) + digits
    }

    /// The kept step checkpoints in `output`, oldest first.
    static func stepCheckpoints(in output: URL) -> [(step: Int, folder: URL)] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: output.path)) ?? []
        return names.compactMap { name -> (Int, URL)? in
            guard name.hasPrefix("step-"), let step = Int(name.dropFirst(5)), step >= 0 else { return nil }
            return (step, output.appendingPathComponent(name))
        }.sorted { $0.0 < $1.0 }
    }

    /// The checkpoint to resume the run in `output` from: `last/`, or, when it is missing or cannot be resumed
    /// (no training state), the newest kept step checkpoint that can, with a sentence saying so.
    static func resumable(in output: URL) throws -> (folder: URL, note: String?) {
        let last = output.appendingPathComponent("last")
        func canResume(_ folder: URL) -> Bool {
            FileManager.default.fileExists(atPath: folder.appendingPathComponent(stateFile).path)
        }
        if canResume(last) { return (last, nil) }
        guard let (step, folder) = stepCheckpoints(in: output).last(where: { canResume($0.folder) }) else {
            _ = try loadState(from: last)  // the error that names what is missing
            return (last, nil)
        }
        let why = FileManager.default.fileExists(atPath: last.path) ? "has no training state" : "is missing"
        return (folder, "\(last.path) \(why): resuming from \(folder.lastPathComponent), the newest kept checkpoint (step \(step))")
    }

    /// Repairs the checkpoints of the run in `output` after a save was killed: a `last/` or `best/` moved aside and
    /// not replaced is put back, and unfinished, displaced or half-removed copies are removed. Returns what was
    /// done, in words.
    package static func recover(in output: URL) throws -> [String] {
        var done = try ["last", "best"].flatMap { name in
            try AtomicFile.recoverFolder(output.appendingPathComponent(name),
                                         isStaged: { $0.hasPrefix(".\(name).partial-") },
                                         isDisplaced: { $0.hasPrefix(".\(name).old-") })
        }
        // Step checkpoints being written or removed, and files of the run (metrics.jsonl, loss.svg, …) whose atomic
        // write was interrupted.
        let names = (try? FileManager.default.contentsOfDirectory(atPath: output.path)) ?? []
        for name in names where name.hasPrefix(".") && !name.hasPrefix(".last.") && !name.hasPrefix(".best.")
            && (name.contains(".partial-") || name.contains(".removed-") || (name.hasPrefix(".step-") && name.contains(".old-"))) {
            try FileManager.default.removeItem(at: output.appendingPathComponent(name))
            done.append("removed \(name), left by an interrupted write")
        }
        return done
    }

    /// Reads the loop state of a checkpoint written with one.
    package static func loadState(from directory: URL) throws -> State {
        let url = directory.appendingPathComponent(stateFile)
        guard let data = FileManager.default.contents(atPath: url.path) else {
            throw FileError(url: url, reason: .missing, message: "missing: this checkpoint cannot be resumed")
        }
        do { return try JSONDecoder().decode(State.self, from: data) } catch {
            throw FileError(url: url, reason: .malformed(line: nil), message: "corrupt training state (\(error))")
        }
    }

    /// Restores the optimizer moments saved with a checkpoint into `optimizer` (its share of them when it updates a
    /// share of the parameters).
    package static func loadOptimizer(_ optimizer: AdamW, parameterCount: Int, steps: Int, from directory: URL) throws {
        let url = directory.appendingPathComponent(optimizerFile)
        let file = try SafeTensors(contentsOf: url)
        for (name, target) in [("exp_avg", optimizer.firstMoment), ("exp_avg_sq", optimizer.secondMoment)] {
            guard let entry = file.entries[name], entry.shape == [parameterCount] else {
                throw FileError(url: url, reason: .mismatched, message: "tensor '\(name)' is missing or does not fit the model ([\(parameterCount)])")
            }
            let whole = try file.tensor(name)
            target.pointer.update(from: whole.pointer + optimizer.range.lowerBound, count: optimizer.range.count)
        }
        optimizer.stepCount = steps
    }
}

/// The state's JSON (`training_state.json`): a checkpoint of a pretraining run from before scores holds its best
/// validation loss instead of its best score.
extension TrainingCheckpoint.State {
    enum CodingKeys: String, CodingKey {
        case step, optimizerSteps, dataRandom, dropoutRandom, bestScore, configuration
        /// Written by pretraining checkpoints before scores: the lowest validation loss (score = −loss).
        case bestValLoss
    }

    package init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        step = try c.decode(Int.self, forKey: .step)
        optimizerSteps = try c.decode(Int.self, forKey: .optimizerSteps)
        dataRandom = try c.decode(SeededRandom.self, forKey: .dataRandom)
        dropoutRandom = try c.decode(SeededRandom.self, forKey: .dropoutRandom)
        bestScore = try c.decodeIfPresent(Double.self, forKey: .bestScore)
            ?? c.decodeIfPresent(Float.self, forKey: .bestValLoss).map { -Double($0) }
        configuration = try c.decode(TrainingConfiguration.self, forKey: .configuration)
    }

    package func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(step, forKey: .step)
        try c.encode(optimizerSteps, forKey: .optimizerSteps)
        try c.encode(dataRandom, forKey: .dataRandom)
        try c.encode(dropoutRandom, forKey: .dropoutRandom)
        try c.encodeIfPresent(bestScore, forKey: .bestScore)
        try c.encode(configuration, forKey: .configuration)
    }
}
