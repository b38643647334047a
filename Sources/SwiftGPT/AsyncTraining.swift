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
}
