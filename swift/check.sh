#!/usr/bin/env bash
# Checks the Swift package against freshly generated bindings, without a Swift compiler (CI
# runs this on Linux; compiling and running XCTest need macOS, see swift/README.md):
#   1. regenerates the Swift bindings from the release cdylib into a temp dir (the commands of
#      bindings/generate.sh) and diffs the C header and module map with bindings/generated/swift;
#   2. the package's only source is swift/Sources/Covey/Covey.swift, where bindings/generate.sh
#      writes the one generated Swift file, and it equals the fresh output;
#   3. module names agree: the generated module map, header and `import`, ffi/uniffi.toml,
#      Package.swift (product, targets, paths), build-xcframework.sh and the test's `import`;
#   4. every Covey name the XCTest suite uses (types, methods and their argument labels,
#      properties, enum cases, free functions) exists in the generated Covey.swift.
# Exits non-zero, saying what differs, on any mismatch.
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in cargo python3 diff cmp; do
  command -v "$tool" >/dev/null || { echo "swift/check.sh: $tool is required" >&2; exit 1; }
done

target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
case "$(uname -s)" in
  Darwin) lib="$target_dir/release/libcovey_ffi.dylib" ;;
  *) lib="$target_dir/release/libcovey_ffi.so" ;;
esac
bindgen="$target_dir/release/uniffi-bindgen"

# 1. Regenerate, exactly as bindings/generate.sh does (two builds, library mode, --no-format).
cargo build --release --locked -p covey-ffi
cargo build --release --locked -p covey-uniffi-bindgen
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$bindgen" generate --library "$lib" --language swift --no-format --out-dir "$tmp/swift" >/dev/null

bash -n swift/build-xcframework.sh || { echo "swift/check.sh: swift/build-xcframework.sh has a syntax error" >&2; exit 1; }

python3 - "$tmp/swift" <<'PY'
import os
import re
import subprocess
import sys

fresh = sys.argv[1]
errors = []
oks = []


def err(msg):
    errors.append(msg)


def ok(msg):
    oks.append(msg)


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


# --- 1. the checked-in C header and module map vs fresh -----------------------------------
# bindings/generate.sh puts every generated file but Covey.swift (the header and the module
# map) in bindings/generated/swift, and Covey.swift in the package (step 2).
c_dir = "bindings/generated/swift"
fresh_c = sorted(f for f in os.listdir(fresh) if f != "Covey.swift")
have_c = sorted(os.listdir(c_dir)) if os.path.isdir(c_dir) else []
if have_c != fresh_c:
    err(f"{c_dir} holds {have_c}, the generator writes {fresh_c} besides Covey.swift; "
        "run bindings/generate.sh")
else:
    stale_c = [f for f in fresh_c
               if open(os.path.join(c_dir, f), "rb").read() != open(os.path.join(fresh, f), "rb").read()]
    if stale_c:
        err(f"{c_dir}: {stale_c} stale against the Rust code; run bindings/generate.sh")
    else:
        ok(f"{c_dir} matches freshly generated bindings ({', '.join(fresh_c)})")

# --- 2. the package compiles exactly the generated Swift, its one copy --------------------
sources = []
for root, dirs, files in os.walk("swift/Sources", followlinks=True):
    for f in files:
        sources.append(os.path.join(root, f))
sources.sort()
want_sources = ["swift/Sources/Covey/Covey.swift"]
if sources != want_sources:
    err(f"swift/Sources must hold exactly {want_sources}, found {sources}")
elif os.path.islink(want_sources[0]):
    err(f"{want_sources[0]} must be a file, not a symlink (see swift/README.md)")
else:
    if read(want_sources[0]) != read(os.path.join(fresh, "Covey.swift")):
        err(
            "swift/Sources/Covey/Covey.swift is stale against the Rust code (or was edited); run\n"
            "  bindings/generate.sh"
        )
    else:
        ok("swift/Sources/Covey/Covey.swift is byte-identical to the freshly generated "
           "Covey.swift, and is the package's only source")
stray = []
for root, dirs, files in os.walk(".", followlinks=False):
    dirs[:] = [d for d in dirs if d not in (".git", "target", ".build", "build")]
    stray += [os.path.join(root, f)[2:] for f in files
              if f == "Covey.swift" and os.path.join(root, f)[2:] != want_sources[0]]
if stray:
    err(f"a second copy of the generated Swift exists: {sorted(stray)}; "
        f"{want_sources[0]} is the only one (bindings/generate.sh writes it)")

# --- 3. module names -----------------------------------------------------------------------
modulemaps = [f for f in os.listdir(fresh) if f.endswith(".modulemap")]
headers = [f for f in os.listdir(fresh) if f.endswith(".h")]
swift_files = [f for f in os.listdir(fresh) if f.endswith(".swift")]
if len(modulemaps) != 1 or len(headers) != 1 or swift_files != ["Covey.swift"]:
    err(f"expected one .modulemap, one .h and Covey.swift from the generator, got {sorted(os.listdir(fresh))}")
    ffi_module = None
else:
    mm = read(os.path.join(fresh, modulemaps[0]))
    m = re.search(r"^\s*(?:framework\s+)?module\s+(\w+)\s*\{", mm, re.M)
    h = re.search(r'header\s+"([^"]+)"', mm)
    ffi_module = m.group(1) if m else None
    if not ffi_module or not h:
        err(f"cannot read the module name and header from {modulemaps[0]}:\n{mm}")
    else:
        if modulemaps[0] != f"{ffi_module}.modulemap":
            err(f"module map {modulemaps[0]} declares module {ffi_module}")
        if h.group(1) != headers[0] or headers[0] != f"{ffi_module}.h":
            err(f"module map's header {h.group(1)!r}, generated header {headers[0]!r}, module {ffi_module}")
        if f"import {ffi_module}" not in read(os.path.join(fresh, "Covey.swift")):
            err(f"the generated Covey.swift does not import {ffi_module}")

toml = read("ffi/uniffi.toml")
swift_section = toml.split("[bindings.swift]", 1)[1] if "[bindings.swift]" in toml else ""
toml_module = re.search(r'^module_name\s*=\s*"(\w+)"', swift_section, re.M)
toml_ffi = re.search(r'^ffi_module_name\s*=\s*"(\w+)"', swift_section, re.M)
swift_module = toml_module.group(1) if toml_module else None
if not swift_module or swift_module != "Covey":
    err(f'ffi/uniffi.toml [bindings.swift] module_name is {swift_module!r}; the package expects "Covey"')
if ffi_module and (not toml_ffi or toml_ffi.group(1) != ffi_module):
    err(f"ffi/uniffi.toml ffi_module_name {toml_ffi and toml_ffi.group(1)!r} != generated module {ffi_module}")

pkg = read("swift/Package.swift")
pkg_nc = re.sub(r"//[^\n]*", "", pkg)


def pkg_has(pattern, what):
    if re.search(pattern, pkg_nc, re.S):
        return True
    err(f"swift/Package.swift: {what}")
    return False


if ffi_module:
    e = re.escape(ffi_module)
    good = all([
        pkg_has(r'\.library\(\s*name:\s*"Covey"\s*,\s*targets:\s*\[\s*"Covey"\s*\]\s*\)',
                'needs .library(name: "Covey", targets: ["Covey"])'),
        pkg_has(rf'\.binaryTarget\(\s*name:\s*"{e}"\s*,\s*path:\s*"{e}\.xcframework"\s*\)',
                f'needs .binaryTarget(name: "{ffi_module}", path: "{ffi_module}.xcframework")'),
        pkg_has(rf'\.target\(\s*name:\s*"Covey"\s*,\s*dependencies:\s*\[\s*"{e}"\s*\]\s*,\s*path:\s*"Sources/Covey"',
                f'needs .target(name: "Covey", dependencies: ["{ffi_module}"], path: "Sources/Covey", ...)'),
        pkg_has(r'\.testTarget\(\s*name:\s*"CoveyTests"\s*,\s*dependencies:\s*\[\s*"Covey"\s*\]\s*,\s*path:\s*"Tests/CoveyTests"\s*\)',
                'needs .testTarget(name: "CoveyTests", dependencies: ["Covey"], path: "Tests/CoveyTests")'),
    ])
    script = read("swift/build-xcframework.sh")
    sm = re.search(r'^ffi_module="(\w+)"', script, re.M)
    if not sm or sm.group(1) != ffi_module:
        err(f'swift/build-xcframework.sh: ffi_module="{sm and sm.group(1)}", generated module is {ffi_module}')
        good = False
    for needle in ('"$generated/$ffi_module.h"', '"$generated/$ffi_module.modulemap" "$build/headers/module.modulemap"',
                   'xcframework="swift/$ffi_module.xcframework"'):
        if needle not in script:
            err(f"swift/build-xcframework.sh no longer contains {needle}")
            good = False
    if good:
        ok(f"module names agree: C module {ffi_module} ({ffi_module}.h, {ffi_module}.modulemap -> "
           f"module.modulemap in {ffi_module}.xcframework), Swift module Covey; Package.swift, "
           "ffi/uniffi.toml and build-xcframework.sh match")

# --- 4. every Covey name the XCTest suite uses exists ----------------------------------------
test_path = "swift/Tests/CoveyTests/CoveyTests.swift"
gen = read(os.path.join(fresh, "Covey.swift"))
test = read(test_path)


def strip_comments(src):
    src = re.sub(r"/\*.*?\*/", " ", src, flags=re.S)
    return re.sub(r"//[^\n]*", "", src)


def strip_strings(src):
    # String literals (interpolations included) become "": names inside them are not API uses.
    out, i, n = [], 0, len(src)
    while i < n:
        if src[i] == '"':
            j = i + 1
            depth = 0
            while j < n:
                c = src[j]
                if c == "\\" and j + 1 < n and src[j + 1] == "(":
                    depth += 1
                    j += 2
                    continue
                if depth and c == "(":
                    depth += 1
                elif depth and c == ")":
                    depth -= 1
                elif c == "\\":
                    j += 2
                    continue
                elif c == '"' and not depth:
                    break
                j += 1
            out.append('""')
            i = j + 1
        else:
            out.append(src[i])
            i += 1
    return "".join(out)


def balanced(src, open_at):
    """The text inside the bracket opening at src[open_at], and the index after its close."""
    pairs = {"(": ")", "[": "]", "{": "}"}
    stack = [pairs[src[open_at]]]
    i = open_at + 1
    while i < len(src) and stack:
        c = src[i]
        if c in pairs:
            stack.append(pairs[c])
        elif stack and c == stack[-1]:
            stack.pop()
        i += 1
    return src[open_at + 1:i - 1], i


def split_top(args):
    parts, depth, cur = [], 0, []
    for c in args:
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        if c == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
    if "".join(cur).strip():
        parts.append("".join(cur))
    return parts


def param_labels(params):
    labels = []
    for p in split_top(params):
        if ":" not in p:
            continue  # the tail of a generic type split at its comma, such as `Error>`
        head = p.split(":", 1)[0].split()
        head = [w for w in head if not w.startswith("@") and w not in ("inout",)]
        if head:
            labels.append(head[0].strip("`"))
    return labels


def call_labels(args):
    labels = []
    for p in split_top(args):
        m = re.match(r"\s*(\w+)\s*:(?!:)", p)
        if m:
            labels.append(m.group(1))
    return labels


g = strip_comments(gen)
MODS = r"(?:(?:public|open|fileprivate|private|internal|final|indirect|static|class|override|required|convenience|nonisolated|@\w+(?:\([^)]*\))?)\s+)*"
gen_types, gen_members, gen_funcs, gen_init_labels, gen_case_labels = set(), set(), {}, {}, {}
for m in re.finditer(r"(" + MODS + r")\b(class|struct|enum|protocol)\s+(\w+)", g):
    if re.search(r"\b(public|open)\b", m.group(1)):
        gen_types.add(m.group(3))
        if m.group(2) == "protocol":
            body, _ = balanced(g, g.index("{", m.end()))
            for fm in re.finditer(r"\bfunc\s+`?(\w+)`?\s*\(", body):
                inner, _ = balanced(body, fm.end() - 1)
                gen_funcs.setdefault(fm.group(1), set()).update(param_labels(inner))
            for vm in re.finditer(r"\bvar\s+(\w+)", body):
                gen_members.add(vm.group(1))
        elif m.group(2) in ("struct", "class"):
            rest = g[m.end():]
            im = re.search(r"\bpublic\s+(?:convenience\s+)?init\s*\(", rest)
            nxt = re.search(r"\b(?:public|open)\s+(?:final\s+)?(?:class|struct|enum|protocol)\s", rest)
            if im and (not nxt or im.start() < nxt.start()):
                inner, _ = balanced(rest, im.end() - 1)
                gen_init_labels.setdefault(m.group(3), set()).update(param_labels(inner))
for m in re.finditer(r"(" + MODS + r")\bfunc\s+`?(\w+)`?\s*(?:<[^>(]*>)?\s*\(", g):
    if re.search(r"\b(public|open)\b", m.group(1)):
        inner, _ = balanced(g, m.end() - 1)
        gen_funcs.setdefault(m.group(2), set()).update(param_labels(inner))
for m in re.finditer(r"\b(?:public|open)\s+(?:private\(set\)\s+)?(?:var|let)\s+(\w+)", g):
    gen_members.add(m.group(1))
for m in re.finditer(r"\bcase\s+`?(\w+)`?\s*(\()?", g):
    gen_members.add(m.group(1))
    if m.group(2):
        inner, _ = balanced(g, m.end() - 1)
        gen_case_labels.setdefault(m.group(1), set()).update(param_labels(inner))
covey_names = gen_types | gen_members | set(gen_funcs)

t = strip_strings(strip_comments(test))
if not re.search(r"^import\s+Covey\s*$", t, re.M):
    err(f"{test_path} must `import Covey` (the library product and Swift module name)")

# Names the test file declares itself, with their parameter labels.
test_types = {m.group(1) for m in re.finditer(r"\b(?:class|struct|enum|protocol)\s+(\w+)", t)}
test_types |= {x.strip() for m in re.finditer(r"\b(?:func|class|struct)\s+\w+\s*<([^>]+)>", t)
               for x in m.group(1).split(",")}
test_funcs = {}
for m in re.finditer(r"\bfunc\s+(\w+)\s*(?:<[^>]*>)?\s*\(", t):
    inner, _ = balanced(t, m.end() - 1)
    test_funcs.setdefault(m.group(1), set()).update(param_labels(inner))
test_init_labels = {}
for m in re.finditer(r"\binit\s*\(", t):
    inner, _ = balanced(t, m.end() - 1)
    test_init_labels.setdefault("*", set()).update(param_labels(inner))
test_members = {m.group(1) for m in re.finditer(r"\b(?:var|let)\s+(\w+)", t)}
# Parameter names of the test's own functions (closures such as `body`, `probe` are called).
test_params = set()
for m in re.finditer(r"\bfunc\s+\w+\s*(?:<[^>]*>)?\s*\(", t):
    inner, _ = balanced(t, m.end() - 1)
    for p in split_top(inner):
        if ":" in p:
            test_params.update(w.strip("`") for w in p.split(":", 1)[0].split() if w != "_")
test_members |= {m.group(1) for m in re.finditer(r"\bcase\s+let\s+\.\w+\(([^)]*)\)", t)}
test_members |= set(test_funcs)

# What Swift, Foundation and XCTest provide to the test file. A name used by the test that is
# neither here, nor declared by the test, nor in the generated Covey.swift fails the check:
# add it here only if it really is a Swift/Foundation/XCTest name.
SWIFT_TYPES = set("""
Any AnyObject Array Bool CheckedContinuation CustomStringConvertible Data Date Dictionary
Double Error FileManager Int Int32 NSLock NSString Never Optional Result Self Sendable Set
StaticString String Task UInt UInt32 UInt64 URL UUID Void XCTestCase
""".split())
SWIFT_FUNCS = set("""
XCTAssertEqual XCTAssertFalse XCTAssertGreaterThanOrEqual XCTAssertNil XCTAssertNotEqual
XCTAssertNotNil XCTAssertTrue XCTFail print type withCheckedThrowingContinuation
withThrowingTaskGroup if guard while switch return catch for in
""".split())
# Labels of Swift API whose method name is also a Covey name (CheckedContinuation.resume).
SWIFT_MEMBER_LABELS = {"resume": {"with", "returning", "throwing"}}
SWIFT_MEMBERS = set("""
addTask allSatisfy append appendingPathComponent cancel compactMap contains count
createDirectory default enumerated failure fileExists filter first hasPrefix insert isEmpty
isSubset lock map max path removeItem resume self setUp sleep sorted success
temporaryDirectory timeIntervalSince unlock utf8 uuidString executionTimeAllowance
appendingPathComponent
""".split())

used_covey = set()
unknown = []
bad_labels = []
labelled_calls = 0

# Covey.X qualified names are types of the Covey module.
for m in re.finditer(r"\bCovey\.(\w+)", t):
    if m.group(1) in gen_types:
        used_covey.add(m.group(1))
    else:
        unknown.append(f"type Covey.{m.group(1)}")
t2 = re.sub(r"\bCovey\.(\w+)", r"\1", t)
t2 = re.sub(r"^import\s+\w+\s*$", "", t2, flags=re.M)

# Capitalised identifiers not after a dot: types (or a type's initialiser).
for m in re.finditer(r"(?<![.\w$])([A-Z]\w*)", t2):
    name = m.group(1)
    if name in gen_types:
        used_covey.add(name)
    elif name not in test_types and name not in SWIFT_TYPES and not name.startswith("XCT"):
        unknown.append(f"type {name}")

# Member accesses and method calls: .name and .name(args), each link of a chain such as
# `status.dht.contacts` or `r?.value.count` (not the `.`s of `...` and `..<`).
for m in re.finditer(r"(?<!\.)\.([A-Za-z_]\w*)\s*(\()?", t2):
    name = m.group(1)
    if m.group(2):
        args, _ = balanced(t2, m.end() - 1)
        labels = call_labels(args)
    else:
        labels = []
    if name in covey_names:
        used_covey.add(name)
        allowed = (gen_funcs.get(name, set()) | gen_case_labels.get(name, set())
                   | test_funcs.get(name, set()) | SWIFT_MEMBER_LABELS.get(name, set()))
        if labels:
            labelled_calls += 1
        for lab in labels:
            if lab not in allowed:
                bad_labels.append(f".{name}({lab}:) — {name} takes {sorted(allowed) or 'no labels'}")
    elif name in test_members or name in SWIFT_MEMBERS:
        continue
    else:
        unknown.append(f"member .{name}")

# Free function calls and initialisers: name(args) not after a dot.
for m in re.finditer(r"(?<![.\w$])([A-Za-z_]\w*)\s*\(", t2):
    name = m.group(1)
    args, _ = balanced(t2, m.end() - 1)
    labels = call_labels(args)
    if name in gen_types:
        allowed = gen_init_labels.get(name, set())
        if labels:
            labelled_calls += 1
        for lab in labels:
            if lab not in allowed:
                bad_labels.append(f"{name}({lab}:) — {name}'s init takes {sorted(allowed)}")
    elif name in gen_funcs and name not in test_funcs:
        used_covey.add(name)
        if labels:
            labelled_calls += 1
        for lab in labels:
            if lab not in gen_funcs[name]:
                bad_labels.append(f"{name}({lab}:) — {name} takes {sorted(gen_funcs[name])}")
    elif (name in test_funcs or name in test_params or name in test_types or name in SWIFT_FUNCS
          or name in SWIFT_TYPES
          or name in ("func", "init", "super") or name.startswith("XCT")):
        continue
    elif name[0].isupper():
        continue  # reported above as an unknown type
    else:
        unknown.append(f"function {name}(")

# Guard against an extraction that silently checks nothing.
core = {"Node", "NodeConfig", "open", "joinPassphrase", "publish", "entries", "entry",
        "subscribe", "shutdown", "addPeer", "addr", "status", "members", "groups", "pause",
        "resume", "networkChanged", "nodeId", "cancel", "isCancelled", "EventListener",
        "KeyStore", "CoveyError", "setLogger", "entryReceived", "groupChanged", "delivery",
        "ackedBy", "allMembers", "createGroup", "createInvite", "acceptInvite", "removeMember",
        "leaveGroup", "link", "shortCode", "role", "admin"}
missing_core = sorted(core - used_covey)
if missing_core:
    err(f"{test_path}: the API check found no use of {missing_core} (the suite should exercise "
        "them, or the extraction in swift/check.sh is broken)")

if unknown:
    err(f"{test_path} uses names that the generated Covey.swift does not declare "
        "(and that are not Swift/Foundation/XCTest names listed in swift/check.sh):\n  "
        + "\n  ".join(sorted(set(unknown))))
if bad_labels:
    err(f"{test_path} passes argument labels the generated Covey.swift does not declare:\n  "
        + "\n  ".join(sorted(set(bad_labels))))
if not unknown and not bad_labels and not missing_core:
    ok(f"{test_path}: all {len(used_covey)} Covey names it uses exist in the generated "
       f"Covey.swift, and the labels of its {labelled_calls} labelled calls match")

for line in oks:
    print(f"ok: {line}")
if errors:
    for e in errors:
        print(f"swift/check.sh: MISMATCH: {e}", file=sys.stderr)
    print(f"swift/check.sh: {len(errors)} mismatch(es); the Swift package is not consistent "
          "with the generated bindings", file=sys.stderr)
    sys.exit(1)
print("swift/check.sh: the Swift package is consistent with freshly generated bindings "
      "(not compiled: that needs macOS/Xcode)")
PY
