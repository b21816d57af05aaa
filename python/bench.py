"""Python-side cost of the FFI: one `await node.status()` and sequential 256-byte publishes,
printed next to the same measurements from Rust (ffi/examples/ffi_bench.rs) when that binary
is built.

    pip install ./python
    cargo build --release -p covey-ffi --example ffi_bench      # optional, for the Rust column
    unshare -n sh -c 'ip link set lo up && python python/bench.py [--calls 2000] [--publishes 2000]'

The node binds 127.0.0.1 and dials nobody.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time

# This file sits next to the source package `covey/`, which lacks the generated `_ffi` module:
# import the installed package instead.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import covey  # noqa: E402


def line(what: str, n: int, secs: float) -> None:
    print(f"{what:<44} {n:>6} calls  {secs * 1e6 / n:>9.1f} µs/call  {n / secs:>9.0f} calls/s")


async def bench(calls: int, publishes: int) -> None:
    payload = bytes([0x5A]) * 256
    with tempfile.TemporaryDirectory() as tmp:
        node = await covey.Node.open(covey.NodeConfig(data_dir=tmp, bind_addr="127.0.0.1:0"))
        try:
            group = await node.join_passphrase("bench passphrase", "bench")
            for _ in range(100):
                await node.status()
            start = time.perf_counter()
            for _ in range(calls):
                await node.status()
            line("python status() (asyncio)", calls, time.perf_counter() - start)

            start = time.perf_counter()
            for _ in range(publishes):
                await node.publish(group.group_id, payload)
            line("python publish(256 B) sequential (asyncio)", publishes, time.perf_counter() - start)

            batch = 50
            start = time.perf_counter()
            for _ in range(publishes // batch):
                await asyncio.gather(*(node.publish(group.group_id, payload) for _ in range(batch)))
            done = (publishes // batch) * batch
            line(f"python publish(256 B) {batch} in flight (asyncio)", done, time.perf_counter() - start)
        finally:
            await node.shutdown()


def rust_bench(calls: int, publishes: int) -> None:
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "target"
    )
    exe = os.path.join(target, "release", "examples", "ffi_bench")
    if not os.path.exists(exe):
        print(f"(no Rust column: build it with `cargo build --release -p covey-ffi --example ffi_bench`)")
        return
    subprocess.run([exe, str(calls), str(publishes)], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--publishes", type=int, default=2000)
    parser.add_argument("--no-rust", action="store_true", help="skip the Rust reference run")
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, covey from {os.path.dirname(covey.__file__)}")
    asyncio.run(bench(args.calls, args.publishes))
    if not args.no_rust:
        rust_bench(args.calls, args.publishes)


if __name__ == "__main__":
    main()
