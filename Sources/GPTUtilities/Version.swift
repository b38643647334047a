/// SwiftGPT's version (semantic versioning): what `gpt --version` prints, what the server reports at `/health` and
/// `/v1/models`, and what every checkpoint written records in its config.json (`swiftgpt_version`).
package let swiftGPTVersion = "0.1.0"
