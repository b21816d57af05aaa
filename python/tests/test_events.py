"""Event delivery through Python listeners."""

from __future__ import annotations

import asyncio

import covey
from conftest import Recorder, eventually, link, wait_until

PASS = "correct horse battery staple"


class Raiser(covey.EventListener):
    def __init__(self) -> None:
        self.calls = 0

    def on_event(self, event: covey.Event) -> None:
        self.calls += 1
        raise RuntimeError("listener bug")


class RaisesListenerError(covey.EventListener):
    def __init__(self) -> None:
        self.calls = 0

    def on_event(self, event: covey.Event) -> None:
        self.calls += 1
        raise covey.ListenerError.Failed("declared failure")


async def test_local_events_reach_the_listener(nodes):
    a = await nodes.open()
    rec = Recorder()
    nodes.subscribe(a, rec)
    g = await a.join_passphrase(PASS, "events")
    await wait_until(lambda: rec.of(covey.Event.GROUP_CHANGED), "GroupChanged")
    (ev,) = rec.of(covey.Event.GROUP_CHANGED)
    assert ev.group_id == g.group_id and ev.epoch == 0


async def test_a_raising_listener_does_not_stop_the_node_or_other_listeners(nodes):
    a = await nodes.open()
    b = await nodes.open()
    raiser, declared, rec = Raiser(), RaisesListenerError(), Recorder()
    nodes.subscribe(b, raiser)
    nodes.subscribe(b, declared)
    nodes.subscribe(b, rec)
    ga = await a.join_passphrase(PASS, "raise")
    gb = await b.join_passphrase(PASS, "raise")
    await link(a, b)
    metas = [await a.publish(ga.group_id, f"{i}".encode()) for i in range(5)]
    want = {m.entry_id for m in metas}

    async def all_received():
        got = {e.entry_id for e in rec.of(covey.Event.ENTRY_RECEIVED)}
        return want <= got

    await eventually(all_received, "every EntryReceived on the healthy listener")
    await wait_until(lambda: raiser.calls >= 6 and declared.calls >= 6, "raisers called on")
    # Still alive and serving.
    assert (await b.status()).entries == 5
    await b.publish(gb.group_id, b"still here")


async def test_cancel_stops_delivery(nodes):
    a = await nodes.open()
    rec, keep = Recorder(), Recorder()
    sub = nodes.subscribe(a, rec)
    nodes.subscribe(a, keep)
    await a.join_passphrase(PASS, "first")
    await wait_until(lambda: len(rec.of(covey.Event.GROUP_CHANGED)) == 1, "the first event")
    assert not sub.is_cancelled()
    sub.cancel()
    sub.cancel()  # twice is fine
    assert sub.is_cancelled()
    await a.join_passphrase(PASS, "second")
    await a.join_passphrase(PASS, "third")
    await wait_until(lambda: len(keep.of(covey.Event.GROUP_CHANGED)) == 3, "the other listener")
    await asyncio.sleep(0.2)
    assert len(rec.of(covey.Event.GROUP_CHANGED)) == 1


async def test_dropping_the_subscription_stops_delivery(nodes):
    a = await nodes.open()
    rec, keep = Recorder(), Recorder()
    sub = a.subscribe(rec)
    nodes.subscribe(a, keep)
    await a.join_passphrase(PASS, "one")
    await wait_until(lambda: len(rec.events) == 1, "the first event")
    del sub  # CPython frees it at once; Rust's Drop cancels delivery
    await a.join_passphrase(PASS, "two")
    await wait_until(lambda: len(keep.events) == 2, "the other listener")
    await asyncio.sleep(0.2)
    assert len(rec.events) == 1


async def test_shutdown_ends_subscriptions(nodes):
    a = await nodes.open()
    rec = Recorder()
    sub = a.subscribe(rec)
    await a.shutdown()
    # Delivery ended with the node; cancelling afterwards is harmless.
    sub.cancel()
