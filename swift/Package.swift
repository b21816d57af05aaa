// swift-tools-version:5.9
// Covey for Swift (iOS, macOS). Build the binary target first: swift/build-xcframework.sh
// (macOS + Xcode). See swift/README.md.
import PackageDescription

let package = Package(
    name: "Covey",
    platforms: [
        .iOS(.v15),
        .macOS(.v12),
    ],
    products: [
        .library(name: "Covey", targets: ["Covey"]),
    ],
    targets: [
        // The Rust core: covey-ffi's `mobile`-profile staticlib for iOS, the iOS simulator and
        // macOS, with the generated C header and module map (module `CoveyFFI`).
        .binaryTarget(
            name: "CoveyFFI",
            path: "CoveyFFI.xcframework"
        ),
        // The uniffi-generated Swift: bindings/generate.sh writes Sources/Covey/Covey.swift,
        // the one generated Swift file, compiled in place (never edit it; swift/check.sh fails
        // unless it equals freshly generated output).
        .target(
            name: "Covey",
            dependencies: ["CoveyFFI"],
            path: "Sources/Covey",
            linkerSettings: [
                // iroh's network-interface watching and the system RNG on Apple platforms.
                .linkedFramework("SystemConfiguration"),
                .linkedFramework("Security"),
            ]
        ),
        .testTarget(
            name: "CoveyTests",
            dependencies: ["Covey"],
            path: "Tests/CoveyTests"
        ),
    ]
)
