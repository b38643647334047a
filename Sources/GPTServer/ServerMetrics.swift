import Foundation
import Prometheus

/// What the server counts, exported at `GET /metrics` in Prometheus' text format.
final class ServerMetrics: Sendable {
    let registry = PrometheusCollectorRegistry()
    let promptTokens: Counter
    let generatedTokens: Counter
    let queueDepth: Gauge
    let batchSize: Gauge
    let timeToFirstToken: DurationHistogram
    let timePerOutputToken: DurationHistogram
    let requestDuration: DurationHistogram

    init() {
        promptTokens = registry.makeCounter(name: "gpt_prompt_tokens_total", help: "Prompt tokens read.")
        generatedTokens = registry.makeCounter(name: "gpt_generated_tokens_total", help: "Tokens generated.")
        queueDepth = registry.makeGauge(name: "gpt_queue_depth", help: "Requests waiting for a slot in the batch.")
        batchSize = registry.makeGauge(name: "gpt_batch_size", help: "Completions decoding together in the last step.")
        let latency: [Duration] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10].map { .milliseconds(Int64($0 * 1000)) }
        timeToFirstToken = registry.makeDurationHistogram(name: "gpt_time_to_first_token_seconds", buckets: latency,
                                                          help: "From a request's arrival to its first generated token.")
        timePerOutputToken = registry.makeDurationHistogram(name: "gpt_time_per_output_token_seconds", buckets: latency,
                                                            help: "Duration of a decoding step: the time between two tokens of every running completion.")
        requestDuration = registry.makeDurationHistogram(name: "gpt_request_duration_seconds",
                                                         buckets: latency + [.seconds(30), .seconds(60), .seconds(120)],
                                                         help: "From a request's arrival to its response's end.")
    }

    /// Counts a finished HTTP request by endpoint and status code.
    func countRequest(endpoint: String, status: Int) {
        registry.makeCounter(name: "gpt_requests_total", labels: [("endpoint", endpoint), ("status", String(status))],
                             help: "HTTP requests answered.").increment()
    }

    /// The metrics in Prometheus' text exposition format.
    func exposition() -> [UInt8] { registry.emitToBuffer() }
}
