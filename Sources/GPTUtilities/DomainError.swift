/// An error of one of SwiftGPT's domains (configuration, tokenizing, generation, training): what kind of problem it
/// is (`reason`, one case of the domain's enum, for code to act on) and exactly what is wrong (`description`, naming
/// the setting, token, prompt or step, in words a user can act on). Each domain names it: `ConfigurationError`,
/// `TokenizerError`, `GenerationError`, `TrainingError`.
public struct DomainError<Reason: Equatable & Sendable>: Error, CustomStringConvertible, Sendable {
    /// The kind of problem.
    public let reason: Reason
    package let message: String

    package init(_ reason: Reason, _ message: String) {
        self.reason = reason
        self.message = message
    }

    /// What is wrong.
    public var description: String { message }
}
