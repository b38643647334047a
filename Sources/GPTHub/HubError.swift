import GPTUtilities

/// Why a model could not be fetched from the Hub or found in the cache, in words a user can act on (each message
/// names the repository and, where one is concerned, the file).
package typealias HubError = DomainError<HubProblem>

/// The kinds of problem fetching a model meets (`HubError`'s reasons).
package enum HubProblem: Equatable, Sendable {
    /// The repository does not exist, or is private and no valid token was given (the Hub answers both alike).
    case repositoryNotFound
    /// The repository is gated: its conditions must be accepted on its page, and a token given.
    case gated
    /// The branch, tag or commit does not exist in the repository.
    case revisionNotFound
    /// The file does not exist at that revision.
    case fileNotFound
    /// The token was refused, or the repository needs one.
    case unauthorized
    /// The Hub could not be reached (connection, timeout) or answered with a server error.
    case network
    /// Offline (`HF_HUB_OFFLINE`) and the model is not in the cache.
    case notCached
    /// What arrived is not what the Hub announced (size or hash); the file was deleted.
    case integrity
    /// The answer does not follow the Hub's protocol (missing or malformed headers, bad JSON).
    case invalidResponse
    /// The repository holds nothing SwiftGPT can load (pickled weights only, an unsupported model type).
    case unsupported
    /// There is not enough free disk space for the download.
    case diskFull
    /// A setting from the environment is malformed.
    case invalidSetting
}
