#!/usr/bin/env bash
# Builds swift/CoveyFFI.xcframework, the binary target of swift/Package.swift: covey-ffi's
# `mobile`-profile staticlib for
#   iOS devices        aarch64-apple-ios
#   the iOS simulator  aarch64-apple-ios-sim + x86_64-apple-ios     (one lipo'd library)
#   macOS              aarch64-apple-darwin + x86_64-apple-darwin   (one lipo'd library)
# each with the generated C header and module map (bindings/generated/swift). The package
# compiles the generated swift/Sources/Covey/Covey.swift in place (bindings/generate.sh writes
# it there); this script checks it is fresh and never copies it.
#
#   swift/build-xcframework.sh
#   cd swift && swift test          # XCTest suite, on the macOS slice
#
# Needs macOS with Xcode (xcodebuild, lipo) and the five Rust targets
# (rustup target add aarch64-apple-ios aarch64-apple-ios-sim x86_64-apple-ios
#  aarch64-apple-darwin x86_64-apple-darwin). Fails early, saying so, anywhere else.
set -euo pipefail
cd "$(dirname "$0")/.."

die() {
  echo "swift/build-xcframework.sh: $*" >&2
  exit 1
}

# The C module the generated Covey.swift imports; Package.swift's binary target has this name
# (swift/check.sh checks both against the generated module map).
ffi_module="CoveyFFI"
generated="bindings/generated/swift"

[ "$(uname -s)" = Darwin ] ||
  die "needs macOS with Xcode (xcodebuild, lipo); this is $(uname -s). Here, run swift/check.sh, which checks the package against freshly generated bindings without a Swift compiler."
command -v xcodebuild >/dev/null || die "xcodebuild not found: install Xcode and run xcode-select -s /Applications/Xcode.app"
command -v lipo >/dev/null || die "lipo not found: install the Xcode command line tools"
command -v cargo >/dev/null || die "cargo is required (rustup)"

targets=(aarch64-apple-ios aarch64-apple-ios-sim x86_64-apple-ios aarch64-apple-darwin x86_64-apple-darwin)
if command -v rustup >/dev/null; then
  installed="$(rustup target list --installed)"
  missing=()
  for t in "${targets[@]}"; do
    grep -qx "$t" <<<"$installed" || missing+=("$t")
  done
  [ "${#missing[@]}" -eq 0 ] || die "missing Rust targets: rustup target add ${missing[*]}"
fi
for f in swift/Sources/Covey/Covey.swift "$generated/$ffi_module.h" "$generated/$ffi_module.modulemap"; do
  [ -f "$f" ] || die "$f is missing: run bindings/generate.sh"
done

# The checked-in bindings must match the Rust code, or the app dies at launch on uniffi's
# checksum check.
bindings/generate.sh --check

# Match Package.swift's platforms.
export IPHONEOS_DEPLOYMENT_TARGET=15.0
export MACOSX_DEPLOYMENT_TARGET=12.0
target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
for t in "${targets[@]}"; do
  cargo build --locked --profile mobile --target "$t" -p covey-ffi
done
lib() { echo "$target_dir/$1/mobile/libcovey_ffi.a"; }

build="swift/build"
rm -rf "$build"
mkdir -p "$build/ios" "$build/ios-simulator" "$build/macos" "$build/headers"
cp "$(lib aarch64-apple-ios)" "$build/ios/libcovey_ffi.a"
lipo -create "$(lib aarch64-apple-ios-sim)" "$(lib x86_64-apple-ios)" \
  -output "$build/ios-simulator/libcovey_ffi.a"
lipo -create "$(lib aarch64-apple-darwin)" "$(lib x86_64-apple-darwin)" \
  -output "$build/macos/libcovey_ffi.a"

# Headers/: the header and the module map, which must be named module.modulemap for clang
# (and Xcode's explicit-module scanner) to find it at the root of the slice's HeadersPath.
cp "$generated/$ffi_module.h" "$build/headers/$ffi_module.h"
cp "$generated/$ffi_module.modulemap" "$build/headers/module.modulemap"

xcframework="swift/$ffi_module.xcframework"
rm -rf "$xcframework"
xcodebuild -create-xcframework \
  -library "$build/ios/libcovey_ffi.a" -headers "$build/headers" \
  -library "$build/ios-simulator/libcovey_ffi.a" -headers "$build/headers" \
  -library "$build/macos/libcovey_ffi.a" -headers "$build/headers" \
  -output "$xcframework"

echo "wrote $xcframework; next: cd swift && swift test"
