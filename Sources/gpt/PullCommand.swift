import ArgumentParser
import Foundation
import GPTHub
import SwiftGPT

/// `gpt pull`: downloads a model from the Hugging Face Hub into the local cache without running it.
struct PullCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pull",
        abstract: "Download a model from the Hugging Face Hub into the local cache (shared with huggingface_hub and transformers).",
        discussion: """
        Fetches config.json, generation_config.json, the tokenizer files and the weights (model.safetensors, or the \
        shards model.safetensors.index.json names) of the revision (default: main) into $HF_HUB_CACHE (else \
        $HF_HOME/hub, else ~/.cache/huggingface/hub), in Hugging Face's layout, and prints the snapshot's folder. \
        What is cached already is not fetched again; an interrupted download resumes where it stopped; every file is \
        checked against the SHA-256 (or git blob id) the Hub gives for it. Repositories with only pickled weights \
        (pytorch_model.bin) are refused. Environment: HF_ENDPOINT (default https://huggingface.co), HF_TOKEN (else the \
        token file of `huggingface-cli login`) for private and gated models, HF_HUB_OFFLINE=1 to use the cache only. \
        Every command that takes a model folder also takes a Hub name, and pulls it the same way.
        """
    )

    @Argument(help: "The model's Hub name: ORG/NAME, or ORG/NAME@REVISION for a branch, tag or commit.") var name: String

    func run() throws {
        guard HubCache.Reference(name) != nil else { throw ValidationError("'\(name)' is not a Hub name (ORG/NAME or ORG/NAME@REVISION)") }
        let snapshot = try ModelLoading.resolve(name)
        print(snapshot.path)
    }
}

/// `gpt models`: what the local Hugging Face cache holds, and removing an entry.
struct ModelsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "models",
        abstract: "List the models in the local Hugging Face cache (name, revisions, size, folder), or remove one.",
        discussion: """
        Lists every model repository in $HF_HUB_CACHE (else $HF_HOME/hub, else ~/.cache/huggingface/hub), whoever \
        downloaded it: its branches and tags with the commit each names, the commits it has files of, the bytes its \
        files take and its folder. --remove ORG/NAME deletes the repository's folder; --remove ORG/NAME@REVISION \
        deletes that revision's snapshot and the files no other snapshot uses.
        """
    )

    @Option(help: "Remove this model (ORG/NAME) or one revision of it (ORG/NAME@REVISION) from the cache.") var remove: String?

    func run() throws {
        let cache = HubCache.folder()
        if let remove {
            let parts = remove.split(separator: "@", maxSplits: 1).map(String.init)
            guard HubCache.Reference(remove) != nil else { throw ValidationError("'\(remove)' is not a Hub name (ORG/NAME or ORG/NAME@REVISION)") }
            let freed = try HubCache.remove(parts[0], revision: parts.count == 2 ? parts[1] : nil, in: cache)
            print("removed \(remove) (" + String(format: "%.1f", Double(freed) / 1e6) + " MB freed)")
            return
        }
        let entries = HubCache.entries(in: cache)
        guard !entries.isEmpty else {
            print("no models in \(cache.path)")
            return
        }
        var rows = [["NAME", "REVISIONS", "SNAPSHOTS", "SIZE", "FOLDER"]]
        for entry in entries {
            let refs = entry.refs.map { "\($0.name)=\($0.commit.prefix(8))" }.joined(separator: ",")
            rows.append([entry.repository, refs.isEmpty ? "-" : refs, entry.snapshots.map { String($0.prefix(8)) }.joined(separator: ","),
                         String(format: "%.1f MB", Double(entry.size) / 1e6), entry.folder.path])
        }
        let widths = (0..<rows[0].count).map { column in rows.map { $0[column].count }.max() ?? 0 }
        for row in rows {
            print(zip(row, widths).enumerated().map { index, cell in
                index == row.count - 1 ? cell.0 : cell.0.padding(toLength: cell.1, withPad: " ", startingAt: 0)
            }.joined(separator: "  "))
        }
    }
}
