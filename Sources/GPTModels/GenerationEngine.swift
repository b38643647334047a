import Atomics
import Foundation
import TensorCore

/// What a generation engine reports as it works, for a server's metrics (every method is called on the engine's
/// thread, and must return quickly).
package protocol GenerationMonitor: Sendable {
    func queueDepthChanged(to depth: Int)
    func batchSizeChanged(to size: Int)
    /// A prompt of `tokens` tokens joined the batch, `cached` of them from the prompt cache.
    func promptAdmitted(tokens: Int, cached: Int)
    /// The prompt cache now holds `bytes` bytes of keys and values in `entries` sequences.
    func promptCacheChanged(bytes: Int, entries: Int)
    func firstToken(after wait: Duration)
    func stepFinished(after duration: Duration)
    func completionFinished(tokens: Int)
    func submissionFinished(after duration: Duration)
}

/// A monitor that records nothing.
package struct NoGenerationMonitor: GenerationMonitor {
    package init() {}
    package func queueDepthChanged(to depth: Int) {}
    package func batchSizeChanged(to size: Int) {}
    package func promptAdmitted(tokens: Int, cached: Int) {}
    package func promptCacheChanged(bytes: Int, entries: Int) {}
    package func firstToken(after wait: Duration) {}
    package func stepFinished(after duration: Duration) {}
    package func completionFinished(tokens: Int) {}
    package func submissionFinished(after duration: Duration) {}
}

/// Generation for many callers at once over one model: one thread owns a `BatchDecoder`; callers submit requests
/// to a bounded queue and read their events from an asynchronous stream. Between decoding steps the loop admits
/// waiting requests while slots are free (continuous batching) and drops the ones whose caller went away or whose
/// time ran out. The server's requests and the library's `LanguageModel` go through it.
package final class GenerationEngine: @unchecked Sendable {
    /// One submission: its prompts' requests, and the stream their events go to.
    package final class Ticket: @unchecked Sendable {
        fileprivate let requests: [GenerationRequest]
        fileprivate let continuation: AsyncThrowingStream<GenerationEvent, any Error>.Continuation
        fileprivate let arrival = ContinuousClock.now
        fileprivate let deadline: ContinuousClock.Instant?
        fileprivate let cancelled = ManagedAtomic(false)
        // Engine thread only:
        fileprivate var decoderIDs: [Int] = []
        fileprivate var completionsLeft: Int
        fileprivate var sawFirstToken = false

        fileprivate init(requests: [GenerationRequest], deadline: ContinuousClock.Instant?,
                         continuation: AsyncThrowingStream<GenerationEvent, any Error>.Continuation) {
            self.requests = requests
            self.deadline = deadline
            self.continuation = continuation
            completionsLeft = requests.reduce(0) { $0 + $1.options.count }
        }

        /// Stops the generation (the caller went away); its slots are freed before the next step.
        package func cancel() { cancelled.store(true, ordering: .relaxed) }

        fileprivate var slotsNeeded: Int { requests.map(\.options.count).max() ?? 0 }
    }

    private let decoder: BatchDecoder
    private let monitor: any GenerationMonitor
    private let maxQueue: Int
    private let timeout: Duration?
    private let condition = NSCondition()
    /// Seconds idle before the pooled buffers go back to the system.
    private let idleRelease: TimeInterval = 1
    // Guarded by `condition`:
    private var waiting: [Ticket] = []
    private var stopping = false
    // Engine thread only:
    private var running: [Ticket] = []
    /// Requests of admitted tickets not yet in the decoder (a ticket's prompts join as slots free up).
    private var pending: [(ticket: Ticket, request: GenerationRequest)] = []
    /// When the allocator's free memory last went back to the system.
    private var lastTrim = ContinuousClock.now
    private var thread: Thread?
    private let stopped = DispatchSemaphore(value: 0)

    /// An engine over `decoder` (which it owns from now on) that keeps at most `maxQueue` submissions waiting and
    /// ends each after `timeout` when one is given.
    package init(decoder: BatchDecoder, monitor: any GenerationMonitor = NoGenerationMonitor(), maxQueue: Int, timeout: Duration?) {
        self.decoder = decoder
        self.monitor = monitor
        self.maxQueue = maxQueue
        self.timeout = timeout
    }

    /// Starts the loop's thread.
    package func start() {
        let thread = Thread { [self] in run() }
        thread.stackSize = 8 << 20
        thread.name = "generation"
        self.thread = thread
        thread.start()
    }

    /// Lets the running and waiting requests finish, then ends the loop; with `waiting`, returns once it has ended.
    package func stop(waiting: Bool = true) {
        condition.lock()
        stopping = true
        condition.signal()
        condition.unlock()
        if waiting, thread != nil { stopped.wait() }
    }

    /// Queues the requests of one submission (one HTTP request of the server's); throws `queueFull` when the queue is
    /// full and `stopping` once `stop()` was called.
    package func submit(_ requests: [GenerationRequest]) throws -> (Ticket, AsyncThrowingStream<GenerationEvent, any Error>) {
        let (stream, continuation) = AsyncThrowingStream<GenerationEvent, any Error>.makeStream()
        let ticket = Ticket(requests: requests, deadline: timeout.map { ContinuousClock.now + $0 }, continuation: continuation)
        // A reader that stops reading (its task cancelled, the stream dropped) frees the ticket's slots.
        continuation.onTermination = { [weak ticket] _ in ticket?.cancel() }
        condition.lock()
        defer { condition.unlock() }
        guard !stopping else { throw GenerationError(.stopping, "the generation engine is stopping") }
        guard waiting.count < maxQueue else { throw GenerationError(.queueFull, "\(waiting.count) requests are already waiting; retry later") }
        waiting.append(ticket)
        monitor.queueDepthChanged(to: waiting.count)
        condition.signal()
        return (ticket, stream)
    }

    private func run() {
        while true {
            monitor.batchSizeChanged(to: decoder.runningSequences)
            condition.lock()
            if !stopping && waiting.isEmpty && pending.isEmpty && decoder.isIdle {
                // Idle for a second: the buffers pooled while serving go back to the system. Not at once: requests
                // that arrive one after another would each fault in every buffer of a pass again.
                _ = condition.wait(until: Date(timeIntervalSinceNow: idleRelease))
                if !stopping && waiting.isEmpty && pending.isEmpty && decoder.isIdle {
                    condition.unlock()
                    TensorMemory.releasePooledBuffers()
                    condition.lock()
                }
            }
            while !stopping && waiting.isEmpty && pending.isEmpty && decoder.isIdle { condition.wait() }
            if stopping && waiting.isEmpty && pending.isEmpty && decoder.isIdle {
                condition.unlock()
                break
            }
            // Admit waiting tickets first come, first served, as far as the free slots reach.
            var free = decoder.availableSlots - pending.reduce(0) { $0 + $1.request.options.count }
            while let ticket = waiting.first, ticket.slotsNeeded <= max(free, 0) || (decoder.isIdle && pending.isEmpty) {
                waiting.removeFirst()
                running.append(ticket)
                pending += ticket.requests.map { (ticket, $0) }
                free -= ticket.requests.reduce(0) { $0 + $1.options.count }
            }
            monitor.queueDepthChanged(to: waiting.count)
            condition.unlock()
            dropAbandoned()
            admitPending()
            monitor.batchSizeChanged(to: decoder.runningSequences)
            guard !decoder.isIdle else { continue }
            let start = ContinuousClock.now
            do {
                try decoder.step()
            } catch {
                // A step fails only on a bug: every running request gets the error, the loop goes on.
                for ticket in running { fail(ticket, GenerationError(.failed, "generation failed: \(error)")) }
            }
            monitor.stepFinished(after: ContinuousClock.now - start)
            if let cache = decoder.promptCache { monitor.promptCacheChanged(bytes: cache.bytes, entries: cache.count) }
            if ContinuousClock.now - lastTrim > .seconds(1) {
                // Under steady load too, memory freed after a large batch goes back to the system.
                TensorMemory.returnFreedMemory()
                lastTrim = ContinuousClock.now
            }
        }
        stopped.signal()
    }

    /// Puts admitted prompts into the decoder while it has slots for them.
    private func admitPending() {
        while let (ticket, request) = pending.first, request.options.count <= decoder.availableSlots {
            pending.removeFirst()
            guard running.contains(where: { $0 === ticket }) else { continue }
            do {
                let id = try decoder.add(request) { [unowned self] event in handle(event, of: ticket) }
                monitor.promptAdmitted(tokens: request.prompt.count, cached: decoder.cachedPromptTokens(of: id))
                ticket.decoderIDs.append(id)
            } catch {
                fail(ticket, error as? GenerationError ?? GenerationError(.invalidArgument, "\(error)"))
            }
        }
    }

    /// Cancels the tickets whose client went away or whose time is up.
    private func dropAbandoned() {
        let now = ContinuousClock.now
        for ticket in running {
            if ticket.cancelled.load(ordering: .relaxed) {
                remove(ticket)
                ticket.continuation.finish()
            } else if let deadline = ticket.deadline, now >= deadline, let timeout {
                fail(ticket, Self.timedOut(timeout))
            }
        }
        condition.lock()
        let abandoned = waiting.filter { $0.cancelled.load(ordering: .relaxed) || ($0.deadline.map { now >= $0 } ?? false) }
        waiting.removeAll { ticket in abandoned.contains { $0 === ticket } }
        condition.unlock()
        for ticket in abandoned {
            if ticket.cancelled.load(ordering: .relaxed) { ticket.continuation.finish() } else if let timeout {
                ticket.continuation.finish(throwing: Self.timedOut(timeout))
            }
        }
    }

    private func handle(_ event: GenerationEvent, of ticket: Ticket) {
        switch event {
        case .text, .token:
            if !ticket.sawFirstToken, ticket.decoderIDs.count == ticket.requests.count {
                ticket.sawFirstToken = true
                monitor.firstToken(after: ContinuousClock.now - ticket.arrival)
            }
        case .finished(let completion):
            monitor.completionFinished(tokens: completion.tokens.count)
            ticket.completionsLeft -= 1
        }
        ticket.continuation.yield(event)
        if ticket.completionsLeft == 0 {
            monitor.submissionFinished(after: ContinuousClock.now - ticket.arrival)
            running.removeAll { $0 === ticket }
            ticket.continuation.finish()
        }
    }

    private static func timedOut(_ timeout: Duration) -> GenerationError {
        GenerationError(.timedOut, "the request did not finish within \(Double(timeout.components.seconds)) s")
    }

    private func fail(_ ticket: Ticket, _ error: GenerationError) {
        remove(ticket)
        ticket.continuation.finish(throwing: error)
    }

    /// Takes a ticket out of the batch and the pending list.
    private func remove(_ ticket: Ticket) {
        for id in ticket.decoderIDs { decoder.cancel(id) }
        ticket.decoderIDs = []
        pending.removeAll { $0.ticket === ticket }
        running.removeAll { $0 === ticket }
    }
}
