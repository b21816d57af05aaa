"""Shared fixtures: nodes on temporary data dirs bound to 127.0.0.1, and polling helpers.

Run the suite inside a loopback-only network namespace (see python/README.md): every node here
binds 127.0.0.1 and dials only the other nodes of the test.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Awaitable, Callable, List, Optional, TypeVar

import pytest

import covey

T = TypeVar("T")

#: Generous: a cold CI machine, two cores, Argon2id at 64 MiB per join.
DEADLINE_S = 30.0


def config(data_dir: str, **kwargs) -> covey.NodeConfig:
    """A loopback-only config for `data_dir`."""
    return covey.NodeConfig(data_dir=data_dir, bind_addr="127.0.0.1:0", **kwargs)


async def eventually(
    probe: Callable[[], Awaitable[Optional[T]]],
    what: str,
    deadline_s: float = DEADLINE_S,
) -> T:
    """Polls `probe` until it returns something truthy, failing after `deadline_s`."""
    end = time.monotonic() + deadline_s
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {deadline_s}s waiting for {what}")
        await asyncio.sleep(0.05)


async def wait_until(cond: Callable[[], bool], what: str, deadline_s: float = DEADLINE_S) -> None:
    """Polls a plain condition until it holds."""

    async def probe() -> bool:
        return cond()

    await eventually(probe, what, deadline_s)


class Recorder(covey.EventListener):
    """An event listener that keeps every event it is given (called from a Rust thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: List[covey.Event] = []

    def on_event(self, event: covey.Event) -> None:
        with self._lock:
            self._events.append(event)

    @property
    def events(self) -> List[covey.Event]:
        with self._lock:
            return list(self._events)

    def of(self, kind: type) -> List[covey.Event]:
        return [e for e in self.events if isinstance(e, kind)]


class Nodes:
    """Opens nodes for one test and shuts every one down at its end."""

    def __init__(self, tmp_path) -> None:
        self.tmp_path = tmp_path
        self.opened: List[covey.Node] = []
        self.subscriptions: List[covey.Subscription] = []
        self._count = 0

    def dir(self, name: Optional[str] = None) -> str:
        if name is None:
            self._count += 1
            name = f"node{self._count}"
        return str(self.tmp_path / name)

    async def open(self, data_dir: Optional[str] = None, **kwargs) -> covey.Node:
        node = await covey.Node.open(config(data_dir or self.dir(), **kwargs))
        self.opened.append(node)
        return node

    def subscribe(self, node: covey.Node, listener: covey.EventListener) -> covey.Subscription:
        sub = node.subscribe(listener)
        self.subscriptions.append(sub)
        return sub

    async def close(self) -> None:
        for sub in self.subscriptions:
            sub.cancel()
        for node in self.opened:
            await node.shutdown()


@pytest.fixture
async def nodes(tmp_path):
    n = Nodes(tmp_path)
    try:
        yield n
    finally:
        await n.close()


async def link(a: covey.Node, b: covey.Node) -> None:
    """Makes `b` dial `a`."""
    await b.add_peer(await a.addr())


async def entries_of(node: covey.Node, group_id: str) -> List[covey.Entry]:
    return await node.entries(group_id, 0, 1000)
