#!/usr/bin/env bash
# Generates Covey's Swift, Kotlin and Python bindings from the release cdylib (uniffi library
# mode), with the workspace's own uniffi-bindgen (bindings/src/main.rs).
#
#   bindings/generate.sh          write bindings/generated/{swift,kotlin,python}
#   bindings/generate.sh --check  regenerate into a temp dir and fail if the checked-in
#                                 swift/ or kotlin/ output is stale (CI runs this)
#
# Swift and Kotlin output is checked in (see bindings/README.md); Python output is not
# (maturin generates it when building the wheel) and goes to the ignored generated/python.
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

if $check; then
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  stale=false
  for lang in swift kotlin; do
    generate "$lang" "$tmp/$lang"
    if ! diff -r "bindings/generated/$lang" "$tmp/$lang" >"$tmp/$lang.diff" 2>&1; then
      echo "bindings/generated/$lang is stale:" >&2
      head -n 40 "$tmp/$lang.diff" >&2
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
  for lang in swift kotlin python; do
    generate "$lang" "bindings/generated/$lang"
  done
  echo "bindings: wrote bindings/generated/{swift,kotlin,python}"
fi
