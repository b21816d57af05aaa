"""Reopening, logging and the shape of the Python package."""

from __future__ import annotations

import threading
from typing import List

import covey
from conftest import config

PASS = "correct horse battery staple"


async def test_shutdown_then_reopen_keeps_history(tmp_path):
    d = str(tmp_path / "n")
    a = await covey.Node.open(config(d, durability=covey.Durability.FULL))
    node_id = a.node_id()
    g = await a.join_passphrase(PASS, "history")
    metas = [await a.publish(g.group_id, f"entry {i}".encode(), f"c{i}") for i in range(10)]
    await a.shutdown()

    b = await covey.Node.open(config(d))
    try:
        assert b.node_id() == node_id
        assert [x.group_id for x in await b.groups()] == [g.group_id]
        entries = await b.entries(g.group_id, 0, 100)
        assert [e.entry_id for e in entries] == [m.entry_id for m in metas]
        assert entries[3].payload == b"entry 3"
        # Idempotency survives the restart too.
        assert await b.publish(g.group_id, b"entry 0", "c0") == metas[0]
        nxt = await b.publish(g.group_id, b"entry 10")
        assert nxt.seq == 11
    finally:
        await b.shutdown()


class Collect(covey.Logger):
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.records: List[covey.LogRecord] = []

    def log(self, record: covey.LogRecord) -> None:
        with self.lock:
            self.records.append(record)


class RaisingLogger(covey.Logger):
    def log(self, record: covey.LogRecord) -> None:
        raise RuntimeError("logger bug")


async def test_logs_reach_a_python_logger(tmp_path):
    # A raising logger is harmless.
    covey.set_logger(RaisingLogger(), covey.LogLevel.INFO)
    a = await covey.Node.open(config(str(tmp_path / "a")))
    await a.shutdown()

    logs = Collect()
    covey.set_logger(logs, covey.LogLevel.INFO)
    b = await covey.Node.open(config(str(tmp_path / "b")))
    await b.shutdown()
    covey.set_logger(Collect(), covey.LogLevel.ERROR)  # quiet for the other tests
    with logs.lock:
        records = list(logs.records)
    opened = [r for r in records if "open" in r.message and r.target.startswith("covey_core")]
    assert opened, [r.message for r in records]
    assert all(r.level in (covey.LogLevel.ERROR, covey.LogLevel.WARN, covey.LogLevel.INFO) for r in records)


def test_package_exports_and_typing_marker():
    import importlib.resources

    assert (importlib.resources.files("covey") / "py.typed").is_file()
    for name in covey.__all__:
        assert hasattr(covey, name), name
    err = covey.CoveyError.NotFound("gone")
    assert isinstance(err, covey.CoveyError) and err.message == "gone"
    cfg = covey.NodeConfig(data_dir="/tmp/x")
    assert cfg.bind_addr is None and cfg.bootstrap == [] and cfg.key_store is None
    assert cfg.nat_traversal is False and cfg.durability is None
    assert cfg.max_payload_bytes is None
    assert cfg.dht_rendezvous is None and cfg.dht_max_value_bytes is None


async def test_a_dropped_node_is_shut_down_in_the_background(tmp_path):
    import gc

    d = str(tmp_path / "n")
    node = await covey.Node.open(config(d))
    node_id = node.node_id()
    del node
    gc.collect()

    # The data dir lock is released once the background shutdown finishes.
    async def reopen():
        try:
            return await covey.Node.open(config(d))
        except covey.CoveyError.Conflict:
            return None

    from conftest import eventually

    again = await eventually(reopen, "the dropped node to release its data dir")
    assert again.node_id() == node_id
    await again.shutdown()
