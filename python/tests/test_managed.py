"""Managed groups: create, invite by link and by short code, remove a member (a new epoch),
leave, and the bad input around them. Three nodes on loopback."""

from __future__ import annotations

import asyncio
from typing import Awaitable, List, Set, TypeVar

import pytest

import covey
from conftest import DEADLINE_S, Recorder, entries_of, eventually

T = TypeVar("T")

PASS = "quartz ember lattice vole"


async def bounded(call: Awaitable[T], what: str) -> T:
    """Awaits one call that talks to a peer, failing after the test deadline (core bounds its
    dials and exchanges too; this is the backstop)."""
    try:
        return await asyncio.wait_for(call, DEADLINE_S)
    except asyncio.TimeoutError:
        raise AssertionError(f"{what} did not finish within {DEADLINE_S}s") from None


async def payloads(node: covey.Node, group_id: str) -> Set[bytes]:
    return {e.payload for e in await entries_of(node, group_id)}


async def wait_payloads(node: covey.Node, group_id: str, want: Set[bytes], what: str) -> None:
    async def probe() -> bool:
        return await payloads(node, group_id) == want

    await eventually(probe, what)


async def epoch_of(node: covey.Node, group_id: str) -> int:
    (g,) = [g for g in await node.groups() if g.group_id == group_id]
    return g.epoch


async def test_three_nodes_create_invite_by_link_and_code_then_remove_one(nodes):
    a = await nodes.open()
    b = await nodes.open()
    # A short code is found through the DHT: C knows A as its bootstrap.
    c = await nodes.open(bootstrap=[await a.addr()])

    info = await a.create_group("family")
    assert isinstance(info, covey.GroupInfo)
    assert info.kind == covey.GroupKind.MANAGED
    assert (info.name, info.epoch, info.member_count) == ("family", 0, 1)
    g = info.group_id
    (me,) = await a.members(g)
    assert me.is_self and me.node_id == a.node_id() and me.role == covey.MemberRole.ADMIN

    # B joins by link, C by short code.
    for_b = await a.create_invite(g, 3600, True)
    assert isinstance(for_b, covey.Invite)
    assert for_b.link.startswith("covey:invite/")
    assert for_b.expires_at_ms > 0
    joined = await bounded(b.accept_invite(for_b.link), "b accepting the link")
    assert (joined.group_id, joined.kind, joined.name) == (g, covey.GroupKind.MANAGED, "family")
    for_c = await a.create_invite(g, 600, True)
    assert len(for_c.short_code) == 9 and for_c.short_code[4] == "-", "xxxx-xxxx"
    joined = await bounded(c.accept_invite(for_c.short_code), "c accepting the short code")
    assert joined.group_id == g

    # Everyone publishes; everyone converges.
    for node, text in ((a, b"from a"), (b, b"from b"), (c, b"from c")):
        await node.publish(g, text)
    everything = {b"from a", b"from b", b"from c"}
    for node, name in ((a, "a"), (b, "b"), (c, "c")):
        await wait_payloads(node, g, everything, f"{name} to hold all three entries")
    members = await a.members(g)
    assert {m.node_id for m in members} == {a.node_id(), b.node_id(), c.node_id()}
    roles = {m.node_id: m.role for m in members}
    assert roles[a.node_id()] == covey.MemberRole.ADMIN
    assert roles[b.node_id()] == roles[c.node_id()] == covey.MemberRole.MEMBER

    async def b_knows_three() -> bool:
        return len(await b.members(g)) == 3

    await eventually(b_knows_three, "b to know all three members")

    # A removes C: a new epoch, which B follows.
    seen, seen_by_c = Recorder(), Recorder()
    nodes.subscribe(b, seen)
    nodes.subscribe(c, seen_by_c)
    await bounded(a.remove_member(g, c.node_id()), "a removing c")
    assert await epoch_of(a, g) == 1
    assert {m.node_id for m in await a.members(g)} == {a.node_id(), b.node_id()}

    async def b_at_epoch_1() -> bool:
        return await epoch_of(b, g) == 1

    await eventually(b_at_epoch_1, "b to reach epoch 1")

    async def group_changed() -> List[covey.Event]:
        return [
            e for e in seen.of(covey.Event.GROUP_CHANGED) if e.group_id == g and e.epoch == 1
        ]

    await eventually(group_changed, "a GroupChanged event at epoch 1 on b")

    # What A publishes after the removal reaches B, never C. C is told (the removal reaches
    # it before its session ends) and can publish no more; nothing of it reaches anybody.
    await a.publish(g, b"after")

    async def told() -> List[covey.Event]:
        return [
            e for e in seen_by_c.of(covey.Event.WARNING) if e.kind == "removed-from-group"
        ]

    await eventually(told, "a removed-from-group warning on c")
    with pytest.raises(covey.CoveyError.PermissionDenied):
        await c.publish(g, b"c after removal")
    await wait_payloads(b, g, everything | {b"after"}, "b to get the post-removal entry")
    await asyncio.sleep(2)
    assert b"after" not in await payloads(c, g)
    assert b"c after removal" not in await payloads(a, g)
    assert b"c after removal" not in await payloads(b, g)
    assert b"c after removal" not in await payloads(c, g)
    # C keeps what it held, at the epoch it had.
    assert b"from a" in await payloads(c, g)
    assert await epoch_of(c, g) == 0
    # Entries from before the removal stay readable.
    assert b"from c" in await payloads(a, g)


async def test_managed_group_bad_input(nodes):
    a = await nodes.open()
    b = await nodes.open()
    c = await nodes.open()
    g = (await a.create_group("team")).group_id

    # A single-use link admits one joiner; the next one is refused.
    once = await a.create_invite(g, 60, True)
    await bounded(b.accept_invite(once.link), "b accepting the link")
    with pytest.raises(covey.CoveyError.PermissionDenied):
        await bounded(c.accept_invite(once.link), "c presenting a used link")
    assert await c.groups() == []

    # Admin calls by a member.
    with pytest.raises(covey.CoveyError.PermissionDenied):
        await b.remove_member(g, a.node_id())
    with pytest.raises(covey.CoveyError.PermissionDenied):
        await b.create_invite(g, 60, True)

    # Malformed input.
    with pytest.raises(covey.CoveyError.InvalidInput):
        await a.remove_member(g, "not a node id")
    with pytest.raises(covey.CoveyError.InvalidInput):
        await a.remove_member("not-hex", b.node_id())
    with pytest.raises(covey.CoveyError.InvalidInput):
        await a.remove_member(g, a.node_id())  # an admin leaves with leave_group
    with pytest.raises(covey.CoveyError.InvalidInput):
        await a.create_invite(g, 0, True)
    with pytest.raises(covey.CoveyError.InvalidInput):
        await c.accept_invite("covey:invite/x")
    with pytest.raises(covey.CoveyError.InvalidInput):
        await c.accept_invite("not a code!")
    with pytest.raises(covey.CoveyError.NotFound):
        await a.remove_member(g, c.node_id())  # not a member
    with pytest.raises(covey.CoveyError.NotFound):
        await a.create_invite("ab" * 32, 60, True)

    # A passphrase group has no admin, and its members no role.
    p = await a.join_passphrase(PASS, "old-style")
    with pytest.raises(covey.CoveyError.InvalidInput) as err:
        await a.remove_member(p.group_id, b.node_id())
    assert "passphrase groups have no admin" in err.value.message
    assert [m.role for m in await a.members(p.group_id)] == [None]

    # Leaving deletes the group here.
    await b.publish(g, b"hello")
    await bounded(b.leave_group(g), "b leaving")
    with pytest.raises(covey.CoveyError.NotFound):
        await b.entries(g, 0, 10)
    with pytest.raises(covey.CoveyError.NotFound):
        await b.leave_group(g)
    assert await b.groups() == []
    # A keeps the group.
    assert [x.group_id for x in await a.groups() if x.kind == covey.GroupKind.MANAGED] == [g]
