import Foundation
import LocalHub

// `local-hub FOLDER...`: serves each model folder as the repository `local/NAME` (NAME: the folder's name) on
// 127.0.0.1, printing the endpoint, until killed. For scripts/bench_download.sh.
let hub = LocalHub()
for path in CommandLine.arguments.dropFirst() {
    let folder = URL(fileURLWithPath: path)
    var files: [String: Data] = [:]
    for name in try FileManager.default.contentsOfDirectory(atPath: folder.path) {
        let url = folder.appendingPathComponent(name)
        var isFolder: ObjCBool = false
        if FileManager.default.fileExists(atPath: url.path, isDirectory: &isFolder), !isFolder.boolValue {
            files[name] = try Data(contentsOf: url, options: .alwaysMapped)
        }
    }
    hub.add("local/\(folder.lastPathComponent)", LocalHub.Repository(files: files))
}
try hub.start()
print(hub.endpoint)
fflush(stdout)
while true { sleep(3600) }
