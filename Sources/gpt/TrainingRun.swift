import Foundation
import SwiftGPT

/// Set by SIGINT, SIGTERM, SIGHUP or SIGUSR1; the training loop checks it after each step.
nonisolated(unsafe) private var interruptRequested = false

/// Runs a trainer in the terminal, for every command that trains: the settings, a progress bar (or periodic lines
/// when not a terminal), evaluations, and where the results went. SIGINT (Ctrl-C), SIGTERM (kill, systemd, Docker,
/// Kubernetes, Slurm), SIGHUP (a closed terminal) and SIGUSR1 (what mpirun forwards to every rank without ending the
/// job; Slurm's `--signal`) finish the step, write a checkpoint and stop with status 0.
enum TrainingRun {
    @discardableResult
    static func run(_ trainer: Trainer) throws -> Trainer.Outcome {
        for stopSignal in [SIGINT, SIGTERM, SIGHUP, SIGUSR1] { signal(stopSignal) { _ in interruptRequested = true } }
        // Under mpirun the other ranks train silently: rank 0 reports for all.
        guard trainer.group.isMain else { return try trainer.run(shouldStop: { interruptRequested }) }
        let c = trainer.configuration, m = trainer.model.config
        print("model: \(m.layerCount) layers, \(m.headCount) heads, width \(m.embeddingWidth), context \(m.contextLength), vocabulary \(m.vocabularySize), \(trainer.model.parameters.count) parameters")
        if let adapter = trainer.model.adapter {
            let whole = adapter.savedParameters.isEmpty ? "" : " and \(adapter.savedParameters.joined(separator: ", ")) whole"
            print("LoRA: rank \(adapter.rank), alpha \(adapter.alpha), dropout \(adapter.dropout) on \(adapter.layers.count) layers\(whole): \(adapter.parameters.count) parameters train, the rest are frozen")
        }
        let ranks = trainer.group.size > 1 ? " × \(trainer.group.size) ranks" : ""
        print("training: batch \(c.batchSize) × \(c.gradientAccumulation)\(ranks), \(c.maxIterations) steps, lr \(c.learningRate) → \(c.minLearningRate), warmup \(c.warmupIterations), seed \(c.seed), precision \(c.resolvedPrecision.rawValue)")
        if let summary = trainer.objective.dataSummary { print(summary) }
        let bar = isatty(STDOUT_FILENO) != 0 ? ProgressBar(total: c.maxIterations, label: "train") : nil
        let start = Date(), firstStep = trainer.step
        let outcome = try trainer.run(shouldStop: { interruptRequested }) { event in
            switch event {
            case .step(let r):
                let detail = String(format: "loss %.4f, %.0f tokens/s, %.1f ms/step (last %d steps)", r.loss, r.tokensPerSecond, r.milliseconds,
                                    min(r.step - firstStep, Trainer.speedWindow))
                if let bar { bar.update(r.step, detail: detail) } else if r.step % c.logInterval == 0 {
                    print("step \(r.step)/\(c.maxIterations): \(detail), " + String(format: "lr %.2e", r.learningRate))
                }
            case .evaluation(let step, let evaluation):
                if bar != nil { print("") }
                print("step \(step): \(evaluation.summary) " + String(format: "(%.1f s)", Date().timeIntervalSince(start)))
            case .checkpoint:
                break
            }
            fflush(stdout)
        }
        bar?.finish()
        let outDir = c.out
        switch outcome {
        case .finished:
            print(String(format: "done in %.1f s; ", Date().timeIntervalSince(start))
                  + "checkpoints in \(outDir)/last and \(outDir)/best, metrics in \(outDir)/metrics.jsonl, curve in \(outDir)/loss.svg")
        case .interrupted:
            print("interrupted at step \(trainer.step); checkpoint written to \(outDir)/last (continue with --resume --out \(outDir))")
        }
        return outcome
    }
}
