#!/usr/bin/env bash
# Runs Covey's Kotlin/JVM suite (kotlin/pom.xml) against the host cdylib:
#   1. builds libcovey_ffi (cargo build --release -p covey-ffi), with network;
#   2. resolves every Maven dependency and plugin (Maven Central), with network;
#   3. runs `mvn -o test` inside a loopback-only network namespace (scripts/netns), so nothing
#      the tests start can send a packet off this machine.
#
#   kotlin/run-tests.sh                      the whole suite
#   kotlin/run-tests.sh -Dtest=SyncTest      extra arguments go to the offline `mvn test`
#
# The cdylib is taken from $CARGO_TARGET_DIR/release when CARGO_TARGET_DIR is set, from
# ./target/release otherwise, and handed to Maven as -Dcovey.lib.dir.
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in cargo mvn java unshare ip; do
  command -v "$tool" >/dev/null || { echo "kotlin/run-tests.sh: $tool is required" >&2; exit 1; }
done

target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
case "$target_dir" in /*) ;; *) target_dir="$PWD/$target_dir" ;; esac # surefire runs in kotlin/
case "$(uname -s)" in
  Darwin) lib_name=libcovey_ffi.dylib ;;
  *) lib_name=libcovey_ffi.so ;;
esac
lib_dir="$target_dir/release"

cargo build --release --locked -p covey-ffi
[ -f "$lib_dir/$lib_name" ] || {
  echo "kotlin/run-tests.sh: cargo did not produce $lib_dir/$lib_name" >&2
  exit 1
}

mvn=(mvn -B -ntp -f kotlin/pom.xml "-Dcovey.lib.dir=$lib_dir")
# Everything the offline run needs: dependencies, plugins, the surefire provider (declared in
# the pom for this), and the compiled bindings and tests.
"${mvn[@]}" -q dependency:go-offline
"${mvn[@]}" -q test -DskipTests

# Offline (-o) and with only loopback up: the nodes bind 127.0.0.1 and dial each other only.
scripts/netns "${mvn[@]}" -o test "$@"
