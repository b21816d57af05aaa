"""An app-supplied KeyStore, implemented in Python."""

from __future__ import annotations

import os
import threading
from typing import Dict, List, Optional

import pytest

import covey
from conftest import config


class DictKeyStore(covey.KeyStore):
    """Keeps secrets in a dict and records every call (names only, never values)."""

    def __init__(self) -> None:
        self.secrets: Dict[str, bytes] = {}
        self.stored: List[str] = []
        self.loaded: List[str] = []
        self._lock = threading.Lock()

    def load(self, name: str) -> Optional[bytes]:
        with self._lock:
            self.loaded.append(name)
            return self.secrets.get(name)

    def store(self, name: str, secret: bytes) -> None:
        with self._lock:
            self.stored.append(name)
            self.secrets[name] = bytes(secret)


class BrokenKeyStore(covey.KeyStore):
    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def load(self, name: str) -> Optional[bytes]:
        raise self.exc

    def store(self, name: str, secret: bytes) -> None:
        raise self.exc


async def test_custom_key_store_holds_the_device_and_group_keys(tmp_path):
    ks = DictKeyStore()
    d = str(tmp_path / "n")
    node = await covey.Node.open(config(d, key_store=ks))
    first_id = node.node_id()
    assert "device" in ks.stored
    assert len(ks.secrets["device"]) == 32
    g = await node.join_passphrase("marble kelp oboe thicket", "keystore-group")
    assert f"group-{g.group_id}" in ks.stored
    await node.publish(g.group_id, b"kept")
    await node.shutdown()
    # Nothing secret went to the data dir.
    assert not os.path.exists(os.path.join(d, "keys"))

    stored_before = list(ks.stored)
    again = await covey.Node.open(config(d, key_store=ks))
    try:
        assert again.node_id() == first_id
        assert ks.stored == stored_before  # loaded, not re-created
        assert "device" in ks.loaded
        (entry,) = await again.entries(g.group_id, 0, 10)
        assert entry.payload == b"kept"
    finally:
        await again.shutdown()


@pytest.mark.parametrize(
    "exc",
    [covey.KeyStoreError.Failed("keychain locked"), RuntimeError("keychain locked")],
    ids=["KeyStoreError", "RuntimeError"],
)
async def test_a_raising_key_store_is_a_storage_error(tmp_path, exc):
    with pytest.raises(covey.CoveyError.Storage) as err:
        await covey.Node.open(config(str(tmp_path / "n"), key_store=BrokenKeyStore(exc)))
    assert "key store" in err.value.message
    assert "keychain locked" in err.value.message
    # The failed open released the data dir: a node with a working store opens it.
    node = await covey.Node.open(config(str(tmp_path / "n"), key_store=DictKeyStore()))
    await node.shutdown()


async def test_a_key_store_returning_a_bad_device_key_is_refused(tmp_path):
    ks = DictKeyStore()
    ks.secrets["device"] = b"too short"
    with pytest.raises(covey.CoveyError.Crypto):
        await covey.Node.open(config(str(tmp_path / "n"), key_store=ks))
