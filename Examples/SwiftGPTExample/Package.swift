// swift-tools-version:6.0
// An example of SwiftGPT used from another package, through its public API only (CI builds and runs it).
import PackageDescription

let package = Package(
    name: "SwiftGPTExample",
    platforms: [.macOS(.v14)],
    dependencies: [
        .package(name: "SwiftGPT", path: "../.."),
    ],
    targets: [
        .executableTarget(
            name: "SwiftGPTExample",
            dependencies: [.product(name: "SwiftGPT", package: "SwiftGPT")],
            resources: [.copy("Resources")]
        ),
    ]
)
