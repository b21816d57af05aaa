#!/usr/bin/env bash
# Generates Covey's Swift, Kotlin and Python bindings from the release cdylib (uniffi library
# mode), with the workspace's own uniffi-bindgen (bindings/src/main.rs).
#
#   bindings/generate.sh          write the bindings (where each goes: below)
#   bindings/generate.sh --check  regenerate into a temp dir and fail if the checked-in
#                                 Swift or Kotlin output is stale (CI runs this)
#
# Where the output goes:
#   Swift   swift/Sources/Covey/Covey.swift: the Swift package's only source, compiled in
#           place (the one generated Swift file); the C header and module map it imports go
#           to bindings/generated/swift (swift/build-xcframework.sh packs them into the
#           XCFramework)
#   Kotlin  bindings/generated/kotlin (kotlin/pom.xml compiles it in place)
#   Python  bindings/generated/python, git-ignored (maturin generates it again when building
#           the wheel)
# Swift and Kotlin output is checked in (see bindings/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."

check=false
case "${1:-}" in
  --check) check=true ;;
  "") ;;
  *) echo "usage: bindings/generate.sh [--check]" >&2; exit 2 ;;
esac

target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
# Two invocations, not one: building both packages together would unify their dependency
# features (uniffi's bindgen side pulls extra serde/url features) and rebuild iroh and the
# core in a variant nothing else uses.
cargo build --release --locked -p covey-ffi
cargo build --release --locked -p covey-uniffi-bindgen
case "$(uname -s)" in
  Darwin) lib="$target_dir/release/libcovey_ffi.dylib" ;;
  *) lib="$target_dir/release/libcovey_ffi.so" ;;
esac
bindgen="$target_dir/release/uniffi-bindgen"

# --no-format: the output must not depend on whether ktlint or swift-format is installed.
generate() { # language out_dir
  rm -rf "$2"
  mkdir -p "$2"
  "$bindgen" generate --library "$lib" --language "$1" --no-format --out-dir "$2" >/dev/null
}

swift_source="swift/Sources/Covey/Covey.swift"
swift_c="bindings/generated/swift"

# Generates the Swift bindings into the repository layout under root $1: the Swift source at
# $1/$swift_source, the C header and module map in $1/$swift_c.
generate_swift() { # root
  local raw
  raw="$(mktemp -d)"
  generate swift "$raw"
  [ -f "$raw/Covey.swift" ] || {
    echo "bindings/generate.sh: uniffi-bindgen wrote no Covey.swift (check ffi/uniffi.toml's module_name)" >&2
    exit 1
  }
  mkdir -p "$1/$(dirname "$swift_source")"
  mv "$raw/Covey.swift" "$1/$swift_source"
  rm -rf "${1:?}/$swift_c"
  mkdir -p "$1/$swift_c"
  mv "$raw"/* "$1/$swift_c/"
  rm -rf "$raw"
}

if $check; then
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  stale=false
  generate_swift "$tmp"
  generate kotlin "$tmp/bindings/generated/kotlin"
  for out in "$swift_source" "$swift_c" bindings/generated/kotlin; do
    if ! diff -r "$out" "$tmp/$out" >"$tmp/diff" 2>&1; then
      echo "$out is stale:" >&2
      head -n 40 "$tmp/diff" >&2
      stale=true
    fi
  done
  # Python is not checked in; generating it still proves the bindgen accepts the interface.
  generate python "$tmp/python"
  if $stale; then
    echo "run bindings/generate.sh and commit the result" >&2
    exit 1
  fi
  echo "bindings: swift and kotlin are up to date"
else
  generate_swift .
  for lang in kotlin python; do
    generate "$lang" "bindings/generated/$lang"
  done
  echo "bindings: wrote $swift_source, $swift_c/, bindings/generated/{kotlin,python}"
fi
