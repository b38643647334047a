import Atomics
import Foundation
import GPTTraining

extension Trainer {
    /// Trains on a thread of its own until `configuration.maxIterations` steps are done, passing each event of the
    /// loop (each step, evaluation and checkpoint) to `onEvent` as it happens, on that thread. Cancelling the calling
    /// task stops the run after the current step with a checkpoint, as SIGINT does to `gpt train`, and the call then
    /// returns `.interrupted`: `Trainer.resume(output:)` continues from there exactly. A failed run throws its error.
    ///
    /// ```swift
    /// let trainer = try Trainer(configuration: configuration)
    /// try await trainer.train { event in
    ///     if case .evaluation(let step, let evaluation) = event { print(step, evaluation.summary) }
    /// }
    /// ```
    @discardableResult
    public func train(onEvent: @escaping @Sendable (Event) -> Void = { _ in }) async throws -> Outcome {
        let stop = ManagedAtomic(false)
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Outcome, any Error>) in
                let thread = Thread { [self] in
                    continuation.resume(with: Result { try run(shouldStop: { stop.load(ordering: .relaxed) }, events: onEvent) })
                }
                thread.stackSize = 8 << 20
                thread.name = "training"
                thread.start()
            }
        } onCancel: {
            stop.store(true, ordering: .relaxed)
        }
    }

    /// Trains as `train(onEvent:)` does, delivering the loop's events (each step's report, each evaluation and
    /// checkpoint) as an asynchronous sequence, which ends when the run ends and throws the run's error if it fails.
    /// Cancelling the task that iterates it, or leaving the loop early, stops the run after its current step with a
    /// checkpoint, from which `Trainer.resume(output:)` continues exactly.
    ///
    /// ```swift
    /// for try await event in trainer.events() {
    ///     if case .step(let report) = event, report.step % 100 == 0 { print(report.step, report.loss) }
    /// }
    /// ```
    public func events() -> AsyncThrowingStream<Event, any Error> {
        AsyncThrowingStream { continuation in
            let run = Task {
                do {
                    try await train { continuation.yield($0) }
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            continuation.onTermination = { _ in run.cancel() }
        }
    }
}
