"""Groups, publishing and replication between nodes in one process."""

from __future__ import annotations

import pytest

import covey
from conftest import Recorder, entries_of, eventually, link

PASS = "correct horse battery staple"


async def test_two_nodes_join_publish_and_replicate(nodes):
    a = await nodes.open()
    b = await nodes.open()
    assert a.node_id() != b.node_id()

    ga = await a.join_passphrase(PASS, "friends")
    gb = await b.join_passphrase(PASS, "friends")
    assert ga.group_id == gb.group_id
    assert len(ga.group_id) == 64
    assert ga.kind == covey.GroupKind.PASSPHRASE
    assert ga.name == "friends" and ga.epoch == 0

    seen = Recorder()
    nodes.subscribe(b, seen)

    meta = await a.publish(ga.group_id, b"hello from a")
    assert meta.author == a.node_id()
    assert meta.seq == 1 and meta.group_id == ga.group_id and len(meta.entry_id) == 64

    await link(a, b)

    async def b_has_it():
        return [e for e in await entries_of(b, gb.group_id) if e.entry_id == meta.entry_id]

    (got,) = await eventually(b_has_it, "b to receive a's entry")
    assert got.payload == b"hello from a"
    assert got.author == a.node_id() and got.seq == 1 and got.lamport == meta.lamport
    assert isinstance(got.payload, bytes)

    # Published after the link: pushed live.
    meta2 = await b.publish(gb.group_id, b"and back from b")

    async def a_has_it():
        return [e for e in await entries_of(a, ga.group_id) if e.entry_id == meta2.entry_id]

    await eventually(a_has_it, "a to receive b's entry")

    # The listener saw the entry arrive, and the peer connect.
    async def received():
        return [e for e in seen.of(covey.Event.ENTRY_RECEIVED) if e.entry_id == meta.entry_id]

    (ev,) = await eventually(received, "an EntryReceived event on b")
    assert ev.group_id == gb.group_id and ev.author == a.node_id() and ev.cursor == got.cursor
    assert any(e.peer == a.node_id() for e in seen.of(covey.Event.PEER_CONNECTED))

    # Lookup by id, members and status.
    one = await b.entry(gb.group_id, meta.entry_id)
    assert one is not None and one.payload == b"hello from a"
    assert await b.entry(gb.group_id, "00" * 32) is None
    members = {m.node_id: m for m in await b.members(gb.group_id)}
    assert members[b.node_id()].is_self and members[a.node_id()].last_seq == 1
    status = await b.status()
    assert status.node_id == b.node_id() and status.groups == 1 and status.entries == 2
    assert a.node_id() in status.connected_peers
    assert status.counters.received >= 1 and status.counters.published == 1
    assert [g.group_id for g in await b.groups()] == [gb.group_id]


async def test_three_nodes_converge(nodes):
    a, b, c = [await nodes.open() for _ in range(3)]
    groups = [await n.join_passphrase(PASS, "three") for n in (a, b, c)]
    gid = groups[0].group_id
    assert all(g.group_id == gid for g in groups)

    # A star around a: b and c learn each other's entries through a.
    await link(a, b)
    await link(a, c)
    published = set()
    for i, n in enumerate((a, b, c)):
        for j in range(3):
            meta = await n.publish(gid, f"node {i} entry {j}".encode())
            published.add(meta.entry_id)

    for n in (a, b, c):

        async def complete(n=n):
            ids = {e.entry_id for e in await entries_of(n, gid)}
            return ids == published

        await eventually(complete, "all nine entries on every node")

    # Paging by cursor is gapless and strictly increasing.
    page1 = await c.entries(gid, 0, 4)
    page2 = await c.entries(gid, page1[-1].cursor, 100)
    cursors = [e.cursor for e in page1 + page2]
    assert len(cursors) == 9 and cursors == sorted(set(cursors))


async def test_idempotent_publish_and_conflict(nodes):
    a = await nodes.open()
    g = await a.join_passphrase(PASS, "idem")
    first = await a.publish(g.group_id, b"payload", "client-1")
    again = await a.publish(g.group_id, b"payload", client_id="client-1")
    assert again == first
    with pytest.raises(covey.CoveyError.IdempotencyConflict) as err:
        await a.publish(g.group_id, b"other payload", "client-1")
    assert "client-1" in err.value.message
    other = await a.publish(g.group_id, b"payload", "client-2")
    assert other.entry_id != first.entry_id and other.seq == 2
    assert len(await entries_of(a, g.group_id)) == 2


async def test_pause_resume_and_network_changed(nodes):
    a = await nodes.open()
    await a.pause()
    assert (await a.status()).paused
    await a.resume()
    assert not (await a.status()).paused
    await a.network_changed()


async def test_concurrent_calls_from_one_event_loop(nodes):
    import asyncio

    a = await nodes.open()
    g = await a.join_passphrase(PASS, "concurrent")
    metas = await asyncio.gather(*(a.publish(g.group_id, f"{i}".encode()) for i in range(50)))
    assert sorted(m.seq for m in metas) == list(range(1, 51))
    statuses = await asyncio.gather(*(a.status() for _ in range(20)))
    assert all(s.entries == 50 for s in statuses)


async def test_a_cancelled_call_leaves_the_node_usable(nodes):
    import asyncio

    a = await nodes.open()
    # Argon2id takes far longer than 1 ms: the Python side gives up, the node does not care.
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(a.join_passphrase(PASS, "slow"), timeout=0.001)
    g = await a.join_passphrase(PASS, "slow")
    await a.publish(g.group_id, b"fine")
    assert (await a.status()).entries == 1
