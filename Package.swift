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
            dependencies: ["TensorCore", "Tokenizers"],
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
                "GPTUtilities", "TensorCore", "Tokenizers", "GPTModels", "GPTTraining", "GPTEvaluation", "GPTServer",
                .product(name: "Atomics", package: "swift-atomics"),
            ],
            swiftSettings: optimisation
        ),
        .executableTarget(
            name: "gpt",
            dependencies: [
                "SwiftGPT",
                "GPTBenchmarks",
                "Tokenizers",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: optimisation
        ),
        // The finite-difference gradient check that the kernel tests and the model and loss tests share.
        .target(name: "GradientChecking", dependencies: ["GPTUtilities", "TensorCore"], path: "Tests/GradientChecking",
                swiftSettings: optimisation),
        .testTarget(name: "TensorCoreTests", dependencies: ["GPTUtilities", "TensorCore", "GradientChecking"], swiftSettings: optimisation),
        .testTarget(name: "TokenizersTests", dependencies: ["GPTUtilities", "Tokenizers"], resources: [.copy("Resources")], swiftSettings: optimisation),
        .testTarget(
            name: "SwiftGPTTests",
            dependencies: ["SwiftGPT", "GPTBenchmarks", "GradientChecking", .product(name: "Atomics", package: "swift-atomics")],
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
        dependencies: ["GPTModels", "GPTTraining", "GPTServer", "GPTUtilities", "TensorCore", "Tokenizers"],
        path: "Fuzz/Sources",
        swiftSettings: optimisation + [.unsafeFlags(["-parse-as-library"])]
    ))
    package.products.append(.executable(name: "swiftgpt-fuzz", targets: ["swiftgpt-fuzz"]))
}
