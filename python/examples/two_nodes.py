"""Two Covey nodes in one process: join a passphrase group, link, publish, and watch an entry
arrive through an event listener.

    pip install ./python
    unshare -n sh -c 'ip link set lo up && python python/examples/two_nodes.py'   # loopback only

Both nodes bind 127.0.0.1 and talk only to each other.
"""

from __future__ import annotations

import asyncio
import tempfile
import time

import covey


class PrintEvents(covey.EventListener):
    """Prints every event; runs on a Covey background thread."""

    def __init__(self, name: str) -> None:
        self.name = name

    def on_event(self, event: covey.Event) -> None:
        print(f"[{self.name}] event: {event}")


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        alice = await covey.Node.open(
            covey.NodeConfig(data_dir=f"{tmp}/alice", bind_addr="127.0.0.1:0")
        )
        bob = await covey.Node.open(covey.NodeConfig(data_dir=f"{tmp}/bob", bind_addr="127.0.0.1:0"))
        print("alice is", alice.node_id())
        print("bob   is", bob.node_id())
        subscription = bob.subscribe(PrintEvents("bob"))
        try:
            # Same passphrase and name: same group on both (Argon2id makes this take a moment).
            group = await alice.join_passphrase("correct horse battery staple", "example")
            await bob.join_passphrase("correct horse battery staple", "example")

            await bob.add_peer(await alice.addr())
            meta = await alice.publish(group.group_id, b"hello, bob", client_id="greeting-1")
            print("alice published", meta.entry_id[:16], "seq", meta.seq)

            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                entries = await bob.entries(group.group_id, 0, 100)
                if entries:
                    print("bob read:", entries[0].payload.decode(), "from", entries[0].author[:16])
                    break
                await asyncio.sleep(0.1)
            else:
                raise SystemExit("bob did not receive the entry in time")
            print("bob status:", await bob.status())
        finally:
            subscription.cancel()
            await bob.shutdown()
            await alice.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
