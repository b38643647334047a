// swift-tools-version:6.0
import Foundation
import PackageDescription

/// Kernels are SIMD code: build them for the CPU they run on (AVX-512 here), not baseline x86-64.
let optimisation: [SwiftSetting] = [
    .unsafeFlags(["-target-cpu", "native", "-enforce-exclusivity=unchecked"]),
]

let package = Package(
    name: "SwiftGPT",
    platforms: [.macOS(.v14)],
    products: [
        .library(name: "GPTUtilities", targets: ["GPTUtilities"]),
        .library(name: "GPTHub", targets: ["GPTHub"]),
        .library(name: "TensorCore", targets: ["TensorCore"]),
        .library(name: "Tokenizers", targets: ["Tokenizers"]),
        .library(name: "GPTModels", targets: ["GPTModels"]),
        .library(name: "GPTTraining", targets: ["GPTTraining"]),
        .library(name: "GPTEvaluation", targets: ["GPTEvaluation"]),
        .library(name: "GPTServer", targets: ["GPTServer"]),
        .library(name: "SwiftGPT", targets: ["SwiftGPT"]),
        .executable(name: "gpt", targets: ["gpt"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-atomics", from: "1.2.0"),
        // Downloads from the Hugging Face Hub (GPTHub).
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.81.0"),
        // SHA-256 and SHA-1 of downloaded files (async-http-client builds it anyway, for TLS certificates).
        .package(url: "https://github.com/apple/swift-http-types", from: "1.0.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-crypto", "3.12.3"..<"5.0.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.0"),
        // `swift package generate-documentation --target SwiftGPT` (`make docs`): the DocC catalog in Sources/SwiftGPT.
        .package(url: "https://github.com/swiftlang/swift-docc-plugin", from: "1.5.0"),
    ],
    targets: [
        .systemLibrary(
            name: "CBLAS",
            pkgConfig: "openblas",
            providers: [.apt(["libopenblas-dev"])]
        ),
        .systemLibrary(name: "CDNNL", providers: [.apt(["libdnnl-dev"])]),
        .systemLibrary(name: "CMemoryHints"),
        .systemLibrary(name: "CFileSystem"),
        .systemLibrary(
            name: "CMPI",
            pkgConfig: "ompi-c",
            providers: [.apt(["libopenmpi-dev"]), .brew(["open-mpi"])]
        ),
        .target(
            name: "GPTUtilities",
            dependencies: ["CFileSystem", .product(name: "Atomics", package: "swift-atomics")],
            swiftSettings: optimisation
        ),
        // Models by name: Hugging Face's cache layout, and downloads from the Hub into it.
        .target(
            name: "GPTHub",
            dependencies: [
                "GPTUtilities", "CFileSystem",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: optimisation
        ),
        .target(
            name: "TensorCore",
            dependencies: [
                "GPTUtilities",
                .target(name: "CBLAS", condition: .when(platforms: [.linux])),
                .target(name: "CDNNL", condition: .when(platforms: [.linux])),
                "CMemoryHints",
            ],
            swiftSettings: optimisation,
            linkerSettings: [.linkedFramework("Accelerate", .when(platforms: [.macOS]))]
        ),
        .target(
            name: "Tokenizers",
            dependencies: ["GPTUtilities"],
            resources: [.copy("Resources/gpt2")],
            swiftSettings: optimisation
        ),
        .target(
            name: "GPTModels",
            dependencies: ["TensorCore", "Tokenizers", "GPTHub"],
            swiftSettings: optimisation
        ),
        .target(
            name: "GPTTraining",
            dependencies: ["TensorCore", "Tokenizers", "GPTModels", "CMPI"],
            swiftSettings: optimisation
        ),
        .target(
            name: "GPTEvaluation",
            dependencies: ["TensorCore", "Tokenizers", "GPTModels"],
            resources: [.copy("Resources/tasks")],
            swiftSettings: optimisation
        ),
        .target(
            name: "GPTServer",
            dependencies: [
                "TensorCore", "Tokenizers", "GPTModels",
                .product(name: "Atomics", package: "swift-atomics"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            resources: [.copy("Resources/chat")],
            swiftSettings: optimisation
        ),
        // Measurement for the command line and the tests, not part of the library's products: timing helpers for
        // `gpt bench`, and the comparison with transformers' golden outputs for `gpt parity`.
        .target(
            name: "GPTBenchmarks",
            dependencies: ["GPTUtilities", "TensorCore", "GPTModels"],
            swiftSettings: optimisation
        ),
        .target(
            name: "SwiftGPT",
            dependencies: [
                "GPTUtilities", "GPTHub", "TensorCore", "Tokenizers", "GPTModels", "GPTTraining", "GPTEvaluation", "GPTServer",
                .product(name: "Atomics", package: "swift-atomics"),
            ],
            swiftSettings: optimisation
        ),
        .executableTarget(
            name: "gpt",
            dependencies: [
                "SwiftGPT", "GPTHub", "GPTUtilities",
                "GPTBenchmarks",
                "Tokenizers",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: optimisation
        ),
        // The finite-difference gradient check that the kernel tests and the model and loss tests share.
        .target(name: "GradientChecking", dependencies: ["GPTUtilities", "TensorCore"], path: "Tests/GradientChecking",
                swiftSettings: optimisation),
        // A server on 127.0.0.1 that answers as the Hugging Face Hub does, serving model folders: the download tests'
        // counterpart, and `local-hub` for scripts/bench_download.sh.
        .target(name: "LocalHub", dependencies: ["GPTHub", .product(name: "Hummingbird", package: "hummingbird"),
                                                 .product(name: "HTTPTypes", package: "swift-http-types"),
                                                 .product(name: "Logging", package: "swift-log")],
                path: "Tests/LocalHub", swiftSettings: optimisation),
        .executableTarget(name: "local-hub", dependencies: ["LocalHub"], path: "Tests/LocalHubServer", swiftSettings: optimisation),
        .testTarget(name: "TensorCoreTests", dependencies: ["GPTUtilities", "TensorCore", "GradientChecking"], swiftSettings: optimisation),
        .testTarget(name: "TokenizersTests", dependencies: ["GPTUtilities", "Tokenizers"], resources: [.copy("Resources")], swiftSettings: optimisation),
        .testTarget(
            name: "SwiftGPTTests",
            dependencies: ["SwiftGPT", "GPTHub", "GPTBenchmarks", "GradientChecking", "LocalHub",
                           .product(name: "Atomics", package: "swift-atomics")],
            resources: [.copy("Resources")],
            swiftSettings: optimisation
        ),
    ],
    swiftLanguageModes: [.v5]
)

// `make fuzz` builds the libFuzzer targets of the parsers (Fuzz/Sources) into their own build folder, with the
// whole package compiled for fuzzing (-sanitize=fuzzer,address); the ordinary build does not include them.
if ProcessInfo.processInfo.environment["SWIFTGPT_FUZZ"] != nil {
    package.targets.append(.executableTarget(
        name: "swiftgpt-fuzz",
        dependencies: ["GPTHub", "GPTModels", "GPTTraining", "GPTServer", "GPTUtilities", "TensorCore", "Tokenizers"],
        path: "Fuzz/Sources",
        swiftSettings: optimisation + [.unsafeFlags(["-parse-as-library"])]
    ))
    package.products.append(.executable(name: "swiftgpt-fuzz", targets: ["swiftgpt-fuzz"]))
}
