import Foundation

/// Where the Hub is and how to reach it, read from the environment as `huggingface_hub` reads it: `HF_ENDPOINT`
/// (default `https://huggingface.co`), `HF_TOKEN` (else the token file: `HF_TOKEN_PATH`, else `$HF_HOME/token`, else
/// `~/.cache/huggingface/token`), `HF_HUB_OFFLINE` (1, ON, YES or TRUE: use the cache only), `HF_HUB_ETAG_TIMEOUT`
/// (seconds for each request about a model, default 10), and the cache folder.
package struct HubSettings: Sendable {
    /// The Hub's address, without a trailing slash.
    package var endpoint: URL
    /// The access token for private and gated repositories; sent only to `endpoint`'s host.
    package var token: String?
    /// Whether to use the cache only, never the network.
    package var isOffline: Bool
    /// The cache folder (see `HubCache.folder`).
    package var cacheFolder: URL
    /// Whether downloads draw a progress line on standard error.
    package var showsProgress: Bool
    /// The seconds a request about a model (its file list, a file's metadata) may take, connecting included.
    package var metadataTimeout: Double
    static let metadataTimeoutDefault = 10

    package init(environment: [String: String] = ProcessInfo.processInfo.environment, showsProgress: Bool = true) throws {
        var address = environment["HF_ENDPOINT"].flatMap { $0.isEmpty ? nil : $0 } ?? "https://huggingface.co"
        while address.hasSuffix("/") { address.removeLast() }
        guard let endpoint = URL(string: address), let scheme = endpoint.scheme?.lowercased(), scheme == "http" || scheme == "https",
              endpoint.host != nil, endpoint.query == nil
        else { throw HubError(.invalidSetting, "HF_ENDPOINT '\(address)' is not an http:// or https:// address") }
        self.endpoint = endpoint
        let truthy: Set<String> = ["1", "ON", "YES", "TRUE"]
        isOffline = truthy.contains((environment["HF_HUB_OFFLINE"] ?? environment["TRANSFORMERS_OFFLINE"] ?? "").uppercased())
        cacheFolder = HubCache.folder(environment: environment)
        metadataTimeout = Double(Self.metadataTimeoutDefault)
        if let text = environment["HF_HUB_ETAG_TIMEOUT"], !text.isEmpty {
            guard let seconds = Double(text), seconds > 0, seconds <= 3600 else {
                throw HubError(.invalidSetting, "HF_HUB_ETAG_TIMEOUT '\(text.prefix(40))' is not a number of seconds between 0 and 3600")
            }
            metadataTimeout = seconds
        }
        self.showsProgress = showsProgress
        if let token = environment["HF_TOKEN"], !token.isEmpty {
            self.token = try Self.checkedToken(token, source: "HF_TOKEN")
        } else {
            let file: URL
            if let path = environment["HF_TOKEN_PATH"], !path.isEmpty {
                file = URL(fileURLWithPath: path)
            } else if let home = environment["HF_HOME"], !home.isEmpty {
                file = URL(fileURLWithPath: home).appendingPathComponent("token")
            } else {
                file = FileManager.default.homeDirectoryForCurrentUser.appendingPathComponent(".cache/huggingface/token")
            }
            if let data = FileManager.default.contents(atPath: file.path) {
                let token = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
                self.token = token.isEmpty ? nil : try Self.checkedToken(token, source: file.path)
            }
        }
    }

    /// A token goes into a header: printable ASCII only, so that it cannot split the request.
    private static func checkedToken(_ token: String, source: String) throws -> String {
        guard token.utf8.count <= 4096, token.utf8.allSatisfy({ (0x21...0x7E).contains($0) }) else {
            throw HubError(.invalidSetting, "the access token in \(source) holds characters a token cannot have (spaces, control characters or non-ASCII)")
        }
        return token
    }
}
