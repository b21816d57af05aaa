#!/usr/bin/env bash
# Builds an Android AAR of Covey: the `mobile`-profile covey-ffi cdylib for arm64-v8a,
# armeabi-v7a, x86_64 and x86 (cargo-ndk), plus classes.jar compiled from the generated Kotlin
# bindings (bindings/generated/kotlin) by kotlin/pom.xml.
#
#   kotlin/android/build-aar.sh          writes kotlin/android/build/covey-<version>.aar (+ .pom)
#
# Needs: the Android NDK (ANDROID_NDK_HOME), cargo-ndk (cargo install cargo-ndk), the four
# Rust targets (rustup target add aarch64-linux-android armv7-linux-androideabi
# x86_64-linux-android i686-linux-android), a JDK 17 and Maven. ANDROID_API (default 24) is
# the minimum API level the libraries are linked for.
#
# The AAR does not embed its dependencies; an app adds them (also listed in the .pom written
# beside it): net.java.dev.jna:jna:<version>@aar (JNA's Android build, with its own
# libjnidispatch.so per ABI), org.jetbrains.kotlinx:kotlinx-coroutines-android and
# kotlin-stdlib. See kotlin/README.md.
set -euo pipefail
cd "$(dirname "$0")/../.."

die() {
  echo "kotlin/android/build-aar.sh: $*" >&2
  exit 1
}

# Fail early, before building anything, with what is missing.
[ -n "${ANDROID_NDK_HOME:-}" ] ||
  die "ANDROID_NDK_HOME is not set: install the Android NDK (r26 or later) and export ANDROID_NDK_HOME=/path/to/ndk"
[ -d "$ANDROID_NDK_HOME" ] || die "ANDROID_NDK_HOME=$ANDROID_NDK_HOME is not a directory"
command -v cargo >/dev/null || die "cargo is required (rustup)"
cargo ndk --version >/dev/null 2>&1 || die "cargo-ndk is missing: cargo install cargo-ndk"
command -v mvn >/dev/null || die "mvn (Maven) is required to compile classes.jar"
command -v jar >/dev/null || die "jar (a JDK 17) is required"

abis=(arm64-v8a armeabi-v7a x86_64 x86)
triples=(aarch64-linux-android armv7-linux-androideabi x86_64-linux-android i686-linux-android)
if command -v rustup >/dev/null; then
  installed="$(rustup target list --installed)"
  missing=()
  for t in "${triples[@]}"; do
    grep -qx "$t" <<<"$installed" || missing+=("$t")
  done
  [ "${#missing[@]}" -eq 0 ] || die "missing Rust targets: rustup target add ${missing[*]}"
fi

api="${ANDROID_API:-24}"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)"
out="kotlin/android/build"
stage="$out/aar"
rm -rf "$out"
mkdir -p "$stage/jni"

# 1. Native libraries: jniLibs/<abi>/libcovey_ffi.so (stripped: the `mobile` profile).
ndk_args=()
for abi in "${abis[@]}"; do ndk_args+=(-t "$abi"); done
cargo ndk "${ndk_args[@]}" -P "$api" -o "$out/jniLibs" build --profile mobile --locked -p covey-ffi
for abi in "${abis[@]}"; do
  so="$out/jniLibs/$abi/libcovey_ffi.so"
  [ -f "$so" ] || die "cargo-ndk did not produce $so"
  mkdir -p "$stage/jni/$abi"
  cp "$so" "$stage/jni/$abi/"
done

# 2. classes.jar: the generated Kotlin compiled by kotlin/pom.xml (JVM 17 bytecode, which D8
#    in Android Gradle Plugin 8+ accepts). JNA and coroutines stay out of it: dependencies.
mvn -B -ntp -q -f kotlin/pom.xml compile
jar --create --file "$stage/classes.jar" -C kotlin/target/classes .

# 3. Manifest, consumer R8/ProGuard rules (JNA reaches the generated structures and callbacks
#    by reflection), an empty R.txt (no resources).
cat >"$stage/AndroidManifest.xml" <<EOF
<?xml version="1.0" encoding="utf-8"?>
<manifest xmlns:android="http://schemas.android.com/apk/res/android" package="dev.covey">
    <uses-sdk android:minSdkVersion="$api" />
    <uses-permission android:name="android.permission.INTERNET" />
</manifest>
EOF
cat >"$stage/proguard.txt" <<'EOF'
-dontwarn java.awt.**
-keep class com.sun.jna.** { *; }
-keepclassmembers class * extends com.sun.jna.** { public *; }
-keep class covey.** { *; }
EOF
: >"$stage/R.txt"

jna_version="$(sed -n 's:.*<jna.version>\(.*\)</jna.version>.*:\1:p' kotlin/pom.xml)"
coroutines_version="$(sed -n 's:.*<coroutines.version>\(.*\)</coroutines.version>.*:\1:p' kotlin/pom.xml)"
kotlin_version="$(sed -n 's:.*<kotlin.version>\(.*\)</kotlin.version>.*:\1:p' kotlin/pom.xml)"

aar="$out/covey-$version.aar"
(cd "$stage" && jar --create --no-manifest --file "../covey-$version.aar" .)

# 4. The dependency note: a POM to publish beside the AAR (or to copy into build.gradle).
cat >"$out/covey-$version.pom" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.covey</groupId>
  <artifactId>covey</artifactId>
  <version>$version</version>
  <packaging>aar</packaging>
  <dependencies>
    <dependency>
      <groupId>net.java.dev.jna</groupId>
      <artifactId>jna</artifactId>
      <version>$jna_version</version>
      <type>aar</type>
    </dependency>
    <dependency>
      <groupId>org.jetbrains.kotlinx</groupId>
      <artifactId>kotlinx-coroutines-android</artifactId>
      <version>$coroutines_version</version>
    </dependency>
    <dependency>
      <groupId>org.jetbrains.kotlin</groupId>
      <artifactId>kotlin-stdlib</artifactId>
      <version>$kotlin_version</version>
    </dependency>
  </dependencies>
</project>
EOF

echo "wrote $aar and $out/covey-$version.pom:"
jar --list --file "$aar" | grep -v '/$'
