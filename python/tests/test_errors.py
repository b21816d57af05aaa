"""Every failure reaches Python as the right CoveyError kind, or as TypeError for values the
bindings cannot carry; nothing crashes the process."""

from __future__ import annotations

import pytest

import covey
from conftest import config

PASS = "correct horse battery staple"


async def test_error_kinds_for_bad_input(nodes):
    a = await nodes.open()
    g = await a.join_passphrase(PASS, "errors")

    with pytest.raises(covey.CoveyError.InvalidInput):
        await a.add_peer("not a ticket")
    with pytest.raises(covey.CoveyError.InvalidInput):
        await a.add_peer(await a.addr())  # its own address
    with pytest.raises(covey.CoveyError.NotFound):
        await a.publish("ab" * 32, b"x")
    with pytest.raises(covey.CoveyError.NotFound):
        await a.members("cd" * 32)
    with pytest.raises(covey.CoveyError.InvalidInput):
        await a.publish("not-hex", b"x")
    with pytest.raises(covey.CoveyError.InvalidInput):
        await a.entry(g.group_id, "xyz")
    with pytest.raises(covey.CoveyError.InvalidInput):
        await a.join_passphrase("", "name")
    with pytest.raises(covey.CoveyError.InvalidInput):
        await a.join_passphrase(PASS, "")
    with pytest.raises(covey.CoveyError.InvalidInput):
        await a.entries(g.group_id, 0, 0)
    with pytest.raises(covey.CoveyError.InvalidInput):
        await a.publish(g.group_id, b"x", "")

    # Every kind is a CoveyError and carries its message.
    try:
        await a.add_peer("not a ticket")
    except covey.CoveyError as e:
        assert isinstance(e, covey.CoveyError.InvalidInput)
        assert "ticket" in e.message


async def test_weak_passphrase_is_invalid_input(nodes):
    a = await nodes.open()
    # zxcvbn score 2 of 4, under the floor of 3: refused before any key derivation.
    with pytest.raises(covey.CoveyError.InvalidInput) as raised:
        await a.join_passphrase("tiger7window", "weak")
    assert "too weak" in raised.value.message
    assert "tiger7window" not in raised.value.message
    # Strong alone, but it is the group's name.
    with pytest.raises(covey.CoveyError.InvalidInput):
        await a.join_passphrase("kestrel hollow lantern society", "Kestrel Hollow Lantern Society")
    assert await a.groups() == []


async def test_delivery_of_a_fresh_local_entry_and_its_errors(nodes):
    a = await nodes.open()
    g = await a.join_passphrase(PASS, "receipts")
    meta = await a.publish(g.group_id, b"mine")
    # Nobody else has it yet, and nobody else is known.
    d = await a.delivery(g.group_id, meta.entry_id)
    assert isinstance(d, covey.Delivery)
    assert d.acked_by == []
    assert d.all_members is False
    with pytest.raises(covey.CoveyError.NotFound):
        await a.delivery(g.group_id, "00" * 32)
    with pytest.raises(covey.CoveyError.NotFound):
        await a.delivery("cd" * 32, meta.entry_id)
    with pytest.raises(covey.CoveyError.InvalidInput):
        await a.delivery(g.group_id, "xyz")
    with pytest.raises(covey.CoveyError.InvalidInput):
        await a.delivery("not-hex", meta.entry_id)


async def test_dht_on_a_lone_node(nodes):
    a = await nodes.open()
    # With no DHT peers the record is kept locally.
    assert await a.dht_put("n", b"v1", 60, None) == 1
    r = await a.dht_get(a.node_id(), "n")
    assert isinstance(r, covey.DhtRecord)
    assert (r.publisher, r.name, r.value, r.seq) == (a.node_id(), "n", b"v1", 1)
    assert r.expires_at_ms > 0
    with pytest.raises(covey.CoveyError.Conflict):
        await a.dht_put("n", b"v2", 60, 0)
    with pytest.raises(covey.CoveyError.InvalidInput):
        await a.dht_put("", b"v", 60, None)
    with pytest.raises(covey.CoveyError.InvalidInput):
        await a.dht_get("not-hex", "n")
    assert await a.dht_providers(b"unknown") == []


async def test_dht_status_and_value_limit_on_a_lone_node(nodes):
    # The default limit is 1 KiB: 1024 bytes go in, 1025 do not.
    a = await nodes.open()
    status = await a.status()
    assert isinstance(status.dht, covey.DhtStatus)
    assert status.dht.contacts == 0 and status.dht.rendezvous_found == 0, status.dht
    assert await a.dht_put("d", b"x" * 1024, 60, None) == 1
    with pytest.raises(covey.CoveyError.InvalidInput) as err:
        await a.dht_put("d", b"x" * 1025, 60, None)
    assert "1024" in err.value.message

    # A configured 2 KiB limit, with rendezvous off.
    b = await nodes.open(dht_max_value_bytes=2048, dht_rendezvous=False)
    assert await b.dht_put("v", b"y" * 2048, 60, None) == 1
    with pytest.raises(covey.CoveyError.InvalidInput) as err:
        await b.dht_put("v", b"y" * 2049, 60, None)
    assert "2048" in err.value.message
    r = await b.dht_get(b.node_id(), "v")
    assert (r.seq, r.value) == (1, b"y" * 2048)  # the refused put changed nothing
    status = await b.status()
    assert status.dht.contacts == 0 and status.dht.rendezvous_found == 0, status.dht


async def test_dht_value_limit_out_of_range_is_refused_at_open(tmp_path):
    for i, bytes_ in enumerate([0, 32 * 1024 + 1, 40000, 2**64 - 1]):
        with pytest.raises(covey.CoveyError.InvalidInput):
            await covey.Node.open(config(str(tmp_path / f"n{i}"), dht_max_value_bytes=bytes_))
    # The 32 KiB ceiling itself is allowed.
    n = await covey.Node.open(config(str(tmp_path / "ceiling"), dht_max_value_bytes=32 * 1024))
    try:
        assert await n.dht_put("big", bytes(32 * 1024), 60, None) == 1
    finally:
        await n.shutdown()


async def test_oversized_payload_is_invalid_input(nodes):
    small = await nodes.open(max_payload_bytes=1024)
    g = await small.join_passphrase(PASS, "small")
    await small.publish(g.group_id, b"x" * 1024)
    with pytest.raises(covey.CoveyError.InvalidInput) as err:
        await small.publish(g.group_id, b"x" * 1025)
    assert "1024" in err.value.message

    # A huge payload against the default 1 MiB limit.
    default = await nodes.open()
    g = await default.join_passphrase(PASS, "big")
    with pytest.raises(covey.CoveyError.InvalidInput):
        await default.publish(g.group_id, bytes(16 * 1024 * 1024))


async def test_data_dir_in_use_is_conflict(nodes):
    d = nodes.dir("shared")
    await nodes.open(d)
    with pytest.raises(covey.CoveyError.Conflict):
        await covey.Node.open(config(d))


async def test_bad_config_is_invalid_input(tmp_path):
    with pytest.raises(covey.CoveyError.InvalidInput):
        await covey.Node.open(covey.NodeConfig(data_dir=str(tmp_path / "a"), bind_addr="nowhere"))
    with pytest.raises(covey.CoveyError.InvalidInput):
        await covey.Node.open(covey.NodeConfig(data_dir=""))
    with pytest.raises(covey.CoveyError.InvalidInput):
        await covey.Node.open(config(str(tmp_path / "b"), max_payload_bytes=0))
    with pytest.raises(covey.CoveyError.InvalidInput):
        await covey.Node.open(config(str(tmp_path / "c"), max_payload_bytes=2**64 - 1))
    with pytest.raises(covey.CoveyError.InvalidInput):
        await covey.Node.open(config(str(tmp_path / "d"), bootstrap=["garbage"]))
    with pytest.raises(covey.CoveyError.InvalidInput):
        await covey.Node.open(config(str(tmp_path / "e"), relay_urls=["not a url"]))


async def test_values_the_bindings_cannot_carry_are_type_errors(nodes):
    a = await nodes.open()
    g = await a.join_passphrase(PASS, "types")
    with pytest.raises(TypeError):
        await covey.Node.open(covey.NodeConfig(data_dir=None))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        await a.publish(g.group_id, None)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        await a.publish(None, b"x")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        await a.publish(g.group_id, "text, not bytes")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        await a.add_peer(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        a.subscribe(None)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        await a.entries(g.group_id, -1, 10)
    with pytest.raises(ValueError):
        await a.entries(g.group_id, 0, 2**32)
    # The node is still fine.
    assert (await a.status()).groups == 1


async def test_calls_after_shutdown_are_closed(nodes):
    a = await nodes.open()
    g = await a.join_passphrase(PASS, "closing")
    node_id = a.node_id()
    await a.shutdown()
    await a.shutdown()  # twice is fine
    assert a.node_id() == node_id
    for call in (
        lambda: a.status(),
        lambda: a.addr(),
        lambda: a.groups(),
        lambda: a.publish(g.group_id, b"x"),
        lambda: a.entries(g.group_id, 0, 10),
        lambda: a.join_passphrase(PASS, "other"),
        lambda: a.add_peer("whatever"),
        lambda: a.pause(),
        lambda: a.resume(),
        lambda: a.network_changed(),
    ):
        with pytest.raises(covey.CoveyError.Closed):
            await call()
    with pytest.raises(covey.CoveyError.Closed):
        a.subscribe(covey.EventListener())


async def test_strings_that_are_not_utf8_are_refused_before_reaching_rust(nodes):
    a = await nodes.open()
    g = await a.join_passphrase(PASS, "utf8")
    # A lone surrogate is a Python str that has no UTF-8 encoding: the bindings refuse it with
    # a Python error, and the node is unaffected.
    with pytest.raises(UnicodeEncodeError):
        await a.join_passphrase(PASS, "bad\udcffname")
    with pytest.raises(UnicodeEncodeError):
        await a.publish(g.group_id, b"x", "client\ud800id")
    with pytest.raises(UnicodeEncodeError):
        await a.add_peer("\udcff")
    meta = await a.publish(g.group_id, b"still fine")
    assert meta.seq == 1
    assert [x.name for x in await a.groups()] == ["utf8"]
