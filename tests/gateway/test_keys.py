"""`agency.gateway.keys`: virtual keys in SQLite, hashed, cached, shared between processes."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agency.gateway.keys import (
    SECRET_PREFIX,
    KeyStore,
    KeyStoreError,
    UnknownKeyError,
    VirtualKey,
    parse_expiry,
)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[KeyStore]:
    ks = KeyStore(tmp_path / "data" / "keys.sqlite")
    yield ks
    ks.close()


def _poll(predicate: object, seconds: float = 2.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.01)
    return False


def test_create_verify_round_trip(store: KeyStore) -> None:
    secret, key = store.create(
        " team-a ", budget_usd=5, rpm=60, models=[" role:code", "auto", "auto"], log_prompts=True
    )
    assert secret.startswith(SECRET_PREFIX + key.id.removeprefix("vk_") + "-")
    assert key.id.startswith("vk_") and len(key.id) == 15
    assert key.name == "team-a"
    assert key.models == ("role:code", "auto")
    assert (key.budget_usd, key.rpm, key.log_prompts, key.spent_usd) == (5.0, 60, True, 0.0)
    assert store.verify(secret) == key
    assert store.get(key.id) == key == store.get("team-a")
    assert store.list() == [key]
    assert key.status() == "active"
    assert key.allows("auto") and not key.allows("openai:gpt-4o")


def test_no_models_allows_any(store: KeyStore) -> None:
    _, key = store.create("free")
    assert key.models == () and key.allows("anything:at-all")


def test_verify_rejects_wrong_malformed_and_other_ids(store: KeyStore) -> None:
    secret_a, key_a = store.create("a")
    secret_b, key_b = store.create("b")
    prefix, token = secret_a.rsplit("-", 1)[0], secret_a.rsplit("-", 1)[1]
    flipped = secret_a[:-1] + ("A" if secret_a[-1] != "A" else "B")
    assert store.verify(flipped) is None
    # a's token under b's id, b's token under a's id
    assert store.verify(SECRET_PREFIX + key_b.id[3:] + "-" + token) is None
    assert store.verify(prefix + "-" + secret_b.rsplit("-", 1)[1]) is None
    for bad in ["", "sk-agency-", "Bearer " + secret_a, secret_a + " ", secret_a.upper(),
                "sk-agency-zzzzzzzzzzzz-" + token, "sk-agency-000000000000-" + token,
                secret_a + "x" * 300, None, 42]:
        assert store.verify(bad) is None  # type: ignore[arg-type]
    assert store.verify(secret_a) == key_a and store.verify(secret_b) == key_b


def test_secret_is_not_in_the_file_nor_the_repr(tmp_path: Path) -> None:
    path = tmp_path / "keys.sqlite"
    ks = KeyStore(path)
    secret, key = ks.create("team-a")
    token = secret.rsplit("-", 1)[1]
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("keys.sqlite"))
    assert key.id.encode() in raw  # the rows are really there
    assert secret.encode() not in raw and token.encode() not in raw
    ks.close()
    raw = path.read_bytes()
    assert key.id.encode() in raw and token.encode() not in raw
    assert token not in repr(key) and "hash" not in repr(key) and "salt" not in repr(key)


def test_revoke_and_expiry(store: KeyStore) -> None:
    secret, key = store.create("team-a", expires_in_s=3600)
    assert key.expires_at is not None and key.expires_at == pytest.approx(key.created_at + 3600)
    assert key.status(now=key.created_at + 3599) == "active"
    assert key.status(now=key.created_at + 3600) == "expired"
    revoked = store.revoke("team-a")
    assert revoked.status() == "revoked" and revoked.revoked_at is not None
    assert revoked.status(now=key.created_at + 7200) == "revoked"  # revoked wins
    seen = store.verify(secret)  # still known: the caller answers 403, not 401
    assert seen is not None and seen.status() == "revoked"
    assert store.revoke(key.id) == revoked  # idempotent, keeps the first time
    with pytest.raises(UnknownKeyError, match="no-such"):
        store.revoke("no-such")
    assert store.get("no-such") is None


def test_name_reuse_only_after_revoke(store: KeyStore) -> None:
    _, first = store.create("team-a")
    with pytest.raises(KeyStoreError, match=f"'team-a' exists \\({first.id}\\)"):
        store.create("team-a")
    store.revoke(first.id)
    _, second = store.create("team-a")
    assert store.get("team-a") == second  # the live one wins over the revoked one
    assert [k.id for k in store.list()] == [first.id, second.id]


def test_revoke_by_another_store_is_seen(tmp_path: Path) -> None:
    """A second `KeyStore` on the same file plays the shell running ``agency keys revoke``."""
    server = KeyStore(tmp_path / "keys.sqlite", check_interval_s=0.1)
    shell = KeyStore(tmp_path / "keys.sqlite")
    try:
        secret, key = shell.create("team-a")  # created elsewhere: verified at once (a miss)
        assert server.verify(secret) == key
        shell.revoke(key.id)
        assert _poll(lambda: server.verify(secret).status() == "revoked")  # type: ignore[union-attr]
        _, other = shell.create("team-b")
        assert server.get("team-b") == other  # management reads look at once
    finally:
        server.close()
        shell.close()


def test_spend_persists_and_adds_up_across_stores(tmp_path: Path) -> None:
    path = tmp_path / "keys.sqlite"
    ks = KeyStore(path)
    _, key = ks.create("team-a", budget_usd=1)
    ks.add_spend(key.id, 0.25)
    ks.add_spend(key.id, 0.5)
    assert ks.get(key.id).spent_usd == 0.75  # type: ignore[union-attr]
    other = KeyStore(path)
    other.add_spend(key.id, 0.125)
    other.close()  # writes its spend as an increment
    assert ks.get(key.id).spent_usd == 0.875  # type: ignore[union-attr]  # reloaded + pending
    ks.close()
    reopened = KeyStore(path)
    assert reopened.get("team-a").spent_usd == 0.875  # type: ignore[union-attr]
    reopened.close()


def test_writer_thread_persists_spend_without_flush(tmp_path: Path) -> None:
    ks = KeyStore(tmp_path / "keys.sqlite", flush_interval_s=0.05)
    reader = KeyStore(tmp_path / "keys.sqlite")
    try:
        _, key = ks.create("team-a")
        ks.add_spend(key.id, 0.5)
        assert _poll(lambda: reader.get(key.id).spent_usd == 0.5)  # type: ignore[union-attr]
    finally:
        ks.close()
        reader.close()


def test_concurrent_spend_sums_exactly(tmp_path: Path) -> None:
    ks = KeyStore(tmp_path / "keys.sqlite", flush_interval_s=0.01)
    _, key = ks.create("team-a")

    def spend() -> None:
        for _ in range(500):
            ks.add_spend(key.id, 0.25)

    threads = [threading.Thread(target=spend) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert ks.get(key.id).spent_usd == 8 * 500 * 0.25  # type: ignore[union-attr]
    ks.close()
    reopened = KeyStore(tmp_path / "keys.sqlite")
    assert reopened.get(key.id).spent_usd == 1000.0  # type: ignore[union-attr]
    reopened.close()


def test_add_spend_rejects_bad_input(store: KeyStore) -> None:
    _, key = store.create("team-a")
    with pytest.raises(UnknownKeyError):
        store.add_spend("vk_000000000000", 1.0)
    for bad in [-1.0, float("nan"), float("inf")]:
        with pytest.raises(KeyStoreError, match="finite amount"):
            store.add_spend(key.id, bad)
    assert store.get(key.id).spent_usd == 0.0  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": ""}, "needs a name"),
        ({"name": "   "}, "needs a name"),
        ({"name": "vk_0123456789ab"}, "looks like a key id"),
        ({"name": "x" * 101}, "too long"),
        ({"name": "a", "budget_usd": -1}, "budget_usd=-1"),
        ({"name": "a", "budget_usd": float("nan")}, "budget_usd=nan"),
        ({"name": "a", "rpm": 0}, "rpm=0"),
        ({"name": "a", "rpm": 1.5}, "rpm=1.5"),
        ({"name": "a", "models": ["role:code", " "]}, "empty model name"),
        ({"name": "a", "models": "role:code"}, "one string"),
        ({"name": "a", "expires_in_s": 0}, "expires_in_s=0"),
    ],
)
def test_create_rejects_bad_input(store: KeyStore, kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(KeyStoreError, match=match):
        store.create(**kwargs)  # type: ignore[arg-type]
    assert store.list() == []


def test_parse_expiry() -> None:
    assert parse_expiry("30d") == 30 * 86400
    assert parse_expiry("12h") == 12 * 3600
    assert parse_expiry("90m") == 5400
    assert parse_expiry("45s") == 45
    assert parse_expiry("2w") == 14 * 86400
    assert parse_expiry(" 1.5H ") == 5400
    for bad in ["", "30", "d", "30x", "-1d", "0d", "1d2h"]:
        with pytest.raises(KeyStoreError, match="45s, 90m, 12h, 30d, 2w"):
            parse_expiry(bad)


def test_closed_store_refuses_writes(tmp_path: Path) -> None:
    ks = KeyStore(tmp_path / "keys.sqlite")
    _, key = ks.create("a")
    ks.close()
    ks.close()  # idempotent
    with pytest.raises(KeyStoreError, match="closed"):
        ks.create("b")
    with pytest.raises(KeyStoreError, match="closed"):
        ks.add_spend(key.id, 1.0)


def test_virtual_key_is_frozen() -> None:
    key = VirtualKey("vk_0123456789ab", "a", 0.0, None, None, (), None, None, False, 0.0)
    with pytest.raises(AttributeError):
        key.name = "b"  # type: ignore[misc]
