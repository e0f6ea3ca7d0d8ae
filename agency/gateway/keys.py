"""Virtual keys of `agency serve`: `KeyStore`, one SQLite file (``.agency/keys.sqlite``).

A virtual key is what a client sends instead of a provider key. Its secret,
``sk-agency-<12 hex>-<43 url-safe chars>``, is returned once by `KeyStore.create` and never
stored: the file keeps a random per-key salt and ``sha256(salt || secret)``. The 12 hex
characters are the key's public id (``vk_<12 hex>``), so `KeyStore.verify` finds the row by id
and compares one hash (`hmac.compare_digest`), with no scan.

The contract:

- `KeyStore.verify` and `KeyStore.add_spend` run on every request and never touch the disk in
  the common case: every row is cached in memory. Writes by other processes (``agency keys
  revoke`` in a shell, another gateway worker's spend) are noticed through ``PRAGMA
  data_version`` at most every ``check_interval_s`` (0.5 s by default; a verify of an id not
  in the cache checks at once, so a key created a moment ago works). Writes through the same
  store object take effect at once.
- `KeyStore.verify` returns the key whatever its status: the caller decides between 401
  (``None``), 403 (revoked, expired, model not allowed) and 429 (over budget or rate).
- Spend is added in memory at once and written in batches (a writer thread every
  ``flush_interval_s``, `KeyStore.flush`, `KeyStore.close`, and at interpreter exit) as
  increments, so several processes sharing the file add up. ``spent_usd`` survives restarts.
- Names are unique among keys that are not revoked (a partial unique index, so two processes
  cannot both win); a revoked key's name may be reused.
- Thread-safe: one lock around the cache, one around the SQLite connection.
"""

from __future__ import annotations

import atexit
import hashlib
import hmac
import json
import logging
import math
import re
import secrets
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

__all__ = [
    "SECRET_PREFIX",
    "KeyStore",
    "KeyStoreError",
    "UnknownKeyError",
    "VirtualKey",
    "parse_expiry",
]

_log = logging.getLogger(__name__)

SECRET_PREFIX = "sk-agency-"
"""How every virtual key's secret starts."""
_ID_PREFIX = "vk_"
_ID_HEX = 12
_SECRET_RE = re.compile(r"sk-agency-([0-9a-f]{12})-([A-Za-z0-9_-]{16,128})")
_ID_RE = re.compile(r"vk_[0-9a-f]{12}")
_MAX_NAME = 100
# A miss (unknown id) checks for other processes' writes at once, but not more often than
# this: random ids sent by a stranger must not turn every request into a SQLite call.
_MISS_CHECK_S = 0.05

_SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (
  id TEXT PRIMARY KEY, name TEXT NOT NULL, salt BLOB NOT NULL, hash BLOB NOT NULL,
  created_at REAL NOT NULL, budget_usd REAL, rpm INTEGER, models TEXT NOT NULL DEFAULT '[]',
  expires_at REAL, revoked_at REAL, log_prompts INTEGER NOT NULL DEFAULT 0,
  spent_usd REAL NOT NULL DEFAULT 0);
CREATE UNIQUE INDEX IF NOT EXISTS keys_active_name ON keys(name) WHERE revoked_at IS NULL;
"""
_COLUMNS = (
    "id, name, salt, hash, created_at, budget_usd, rpm, models, expires_at, revoked_at, "
    "log_prompts, spent_usd"
)


class KeyStoreError(ValueError):
    """Bad input to the key store (a name taken, a negative budget, an unreadable expiry)."""


class UnknownKeyError(KeyStoreError):
    """No key has this id or name."""


@dataclass(frozen=True, slots=True)
class VirtualKey:
    """One virtual key as the gateway sees it (never its secret nor its hash)."""

    id: str
    """Public id, ``"vk_"`` + 12 hex characters (safe to log and show)."""
    name: str
    """Unique among keys that are not revoked (``team-a``)."""
    created_at: float
    """Unix seconds."""
    budget_usd: float | None
    """USD this key may spend in all; ``None``: no limit."""
    rpm: int | None
    """Requests per minute allowed; ``None``: no limit."""
    models: tuple[str, ...]
    """Model names this key may ask for (``role:code``, ``auto``, a spec); empty: any."""
    expires_at: float | None
    """Unix seconds after which the key no longer works; ``None``: never."""
    revoked_at: float | None
    """Unix seconds of the revocation; ``None``: not revoked."""
    log_prompts: bool
    """Whether the audit log keeps prompt and answer text for this key."""
    spent_usd: float
    """USD spent so far (this process's unflushed spend included)."""

    def allows(self, model: str) -> bool:
        """Whether this key may ask for ``model`` (always, when ``models`` is empty)."""
        return not self.models or model in self.models

    def status(self, now: float | None = None) -> Literal["active", "revoked", "expired"]:
        """``revoked`` (wins), ``expired`` (at or after ``expires_at``) or ``active``."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and (time.time() if now is None else now) >= self.expires_at:
            return "expired"
        return "active"


@dataclass(slots=True)
class _Entry:
    """A cached row: the key as handed out, and what its secret is checked against."""

    key: VirtualKey
    """The current value (spend included)."""
    salt: bytes
    """Random per-key salt."""
    digest: bytes
    """``sha256(salt || secret)``."""


_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_EXPIRY_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", re.IGNORECASE)


def parse_expiry(text: str) -> float:
    """``"30d"``, ``"12h"``, ``"90m"``, ``"45s"``, ``"2w"`` as seconds (> 0).

    Raises `KeyStoreError` naming the text and the accepted forms otherwise.
    """
    match = _EXPIRY_RE.fullmatch(text) if isinstance(text, str) else None
    seconds = float(match.group(1)) * _UNITS[match.group(2).lower()] if match else 0.0
    if not match or seconds <= 0:
        raise KeyStoreError(
            f"cannot read the duration {text!r}: write a positive number and a unit, "
            "s, m, h, d or w (45s, 90m, 12h, 30d, 2w)"
        )
    return seconds


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise KeyStoreError("a key needs a name: pass a non-empty name such as 'team-a'")
    name = name.strip()
    if len(name) > _MAX_NAME:
        raise KeyStoreError(f"key name too long ({len(name)} characters): keep it to {_MAX_NAME}")
    if _ID_RE.fullmatch(name):
        raise KeyStoreError(
            f"key name {name!r} looks like a key id: choose a name that does not start with vk_"
        )
    return name


def _check_models(models: Iterable[str]) -> tuple[str, ...]:
    if isinstance(models, str):
        raise KeyStoreError(
            f"models={models!r} is one string: pass a list of model names, e.g. ['role:code']"
        )
    out: list[str] = []
    for model in models:
        if not isinstance(model, str) or not model.strip():
            raise KeyStoreError(
                f"empty model name in models={list(models)!r}: remove it, or name a model "
                "('role:code', 'auto', 'openai:gpt-4o-mini')"
            )
        if model.strip() not in out:
            out.append(model.strip())
    return tuple(out)


def _check_limits(
    budget_usd: float | None, rpm: int | None, expires_in_s: float | None
) -> tuple[float | None, int | None, float | None]:
    if budget_usd is not None:
        if isinstance(budget_usd, bool) or not isinstance(budget_usd, int | float):
            raise KeyStoreError(f"budget_usd={budget_usd!r}: pass a number of USD, e.g. 5")
        if not math.isfinite(budget_usd) or budget_usd < 0:
            raise KeyStoreError(f"budget_usd={budget_usd!r}: pass 0 or more USD (None: no limit)")
        budget_usd = float(budget_usd)
    if rpm is not None and (isinstance(rpm, bool) or not isinstance(rpm, int) or rpm <= 0):
        raise KeyStoreError(f"rpm={rpm!r}: pass a whole number of requests per minute above 0")
    if expires_in_s is not None:
        if isinstance(expires_in_s, bool) or not isinstance(expires_in_s, int | float):
            raise KeyStoreError(f"expires_in_s={expires_in_s!r}: pass seconds, e.g. 86400")
        if not math.isfinite(expires_in_s) or expires_in_s <= 0:
            raise KeyStoreError(f"expires_in_s={expires_in_s!r}: pass more than 0 seconds")
        expires_in_s = float(expires_in_s)
    return budget_usd, rpm, expires_in_s


def _digest(salt: bytes, secret: str) -> bytes:
    return hashlib.sha256(salt + secret.encode()).digest()


class KeyStore:
    """The virtual keys in one SQLite file, cached in memory (see the module docstring)."""

    def __init__(
        self,
        path: str | Path,
        *,
        check_interval_s: float = 0.5,
        flush_interval_s: float = 1.0,
    ) -> None:
        """Open (creating its folder and tables) the store at ``path``.

        ``check_interval_s``: how often at most `verify` asks SQLite whether another process
        wrote. ``PRAGMA data_version`` costs ~1.6 µs, but it releases the GIL, which on a busy
        server can hand the interpreter to another thread for up to the switch interval (5 ms),
        so it is not run per call. ``flush_interval_s``: how often spend is written.
        """
        self.path = Path(path)
        """The SQLite file."""
        self.check_interval_s = float(check_interval_s)
        self.flush_interval_s = float(flush_interval_s)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=10.0
        )
        self._db_lock = threading.Lock()  # the connection: writes, reloads, data_version
        self._lock = threading.Lock()  # the cache and the pending spend
        self._entries: dict[str, _Entry] = {}
        self._pending: dict[str, float] = {}
        self._closed = False
        self._db_closed = False
        self._stop = threading.Event()
        self._writer: threading.Thread | None = None
        with self._db_lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            self._version = self._data_version()
            self._reload()
        self._checked = time.monotonic()
        self._miss_checked = -math.inf
        _LIVE.add(self)

    # -- reading --------------------------------------------------------------------------
    def verify(self, secret: str) -> VirtualKey | None:
        """The key ``secret`` belongs to, whatever its status; ``None`` when the secret is
        malformed, its id unknown, or it does not match."""
        if not isinstance(secret, str) or len(secret) > 200:
            return None
        match = _SECRET_RE.fullmatch(secret)
        if match is None:
            return None
        key_id = _ID_PREFIX + match.group(1)
        now = time.monotonic()
        if now - self._checked >= self.check_interval_s:
            self._refresh(blocking=False)
        entry = self._entries.get(key_id)
        if entry is None and now - self._miss_checked >= _MISS_CHECK_S:
            self._miss_checked = now
            self._refresh(blocking=False)
            entry = self._entries.get(key_id)
        if entry is None or not hmac.compare_digest(_digest(entry.salt, secret), entry.digest):
            return None
        return entry.key

    def get(self, id_or_name: str) -> VirtualKey | None:
        """The key with this id, else the unrevoked key with this name, else the latest revoked
        key with this name; ``None`` when there is none (other processes' writes included)."""
        self._refresh(blocking=True)
        entry = self._find(id_or_name)
        return None if entry is None else entry.key

    def list(self) -> list[VirtualKey]:
        """Every key, revoked and expired ones included, oldest first."""
        self._refresh(blocking=True)
        with self._lock:
            keys = [e.key for e in self._entries.values()]
        return sorted(keys, key=lambda k: (k.created_at, k.id))

    # -- writing --------------------------------------------------------------------------
    def create(
        self,
        name: str,
        *,
        budget_usd: float | None = None,
        rpm: int | None = None,
        models: Iterable[str] = (),
        expires_in_s: float | None = None,
        log_prompts: bool = False,
    ) -> tuple[str, VirtualKey]:
        """A new key: ``(secret, key)``. The secret is not kept anywhere: show it once.

        Raises `KeyStoreError` for a name already used by an unrevoked key, an empty model
        name, a negative budget, ``rpm <= 0`` or ``expires_in_s <= 0``.
        """
        name = _check_name(name)
        model_names = _check_models(models)
        budget_usd, rpm, expires_in_s = _check_limits(budget_usd, rpm, expires_in_s)
        self._check_open()
        created = time.time()
        expires_at = None if expires_in_s is None else created + expires_in_s
        salt = secrets.token_bytes(16)
        for _ in range(5):  # ids are 48 random bits: a clash is rare, never fatal
            hex_id = secrets.token_hex(_ID_HEX // 2)
            secret = f"{SECRET_PREFIX}{hex_id}-{secrets.token_urlsafe(32)}"
            key = VirtualKey(
                id=_ID_PREFIX + hex_id,
                name=name,
                created_at=created,
                budget_usd=budget_usd,
                rpm=rpm,
                models=model_names,
                expires_at=expires_at,
                revoked_at=None,
                log_prompts=bool(log_prompts),
                spent_usd=0.0,
            )
            digest = _digest(salt, secret)
            try:
                with self._db_lock:
                    self._db.execute(
                        f"INSERT INTO keys ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                        (key.id, name, salt, digest, created, budget_usd, rpm,
                         json.dumps(list(model_names)), expires_at, None, int(key.log_prompts),
                         0.0),
                    )  # fmt: skip
            except sqlite3.IntegrityError:
                taken = self.get(name)
                if taken is not None and taken.revoked_at is None:
                    raise KeyStoreError(
                        f"a key named {name!r} exists ({taken.id}): choose another name, or "
                        f"revoke it first (agency keys revoke {taken.id})"
                    ) from None
                continue  # the id clashed: draw another
            with self._lock:
                self._entries[key.id] = _Entry(key, salt, digest)
            return secret, key
        raise KeyStoreError(f"could not draw an unused key id in {self.path}")  # pragma: no cover

    def revoke(self, id_or_name: str) -> VirtualKey:
        """Revoke the key with this id or (unrevoked) name, at once for this object and within
        ``check_interval_s`` for other processes; revoking a revoked key changes nothing.

        Raises `UnknownKeyError` when no key matches.
        """
        self._check_open()
        self._refresh(blocking=True)
        entry = self._find(id_or_name)
        if entry is None:
            raise UnknownKeyError(
                f"no key {id_or_name!r}: see `agency keys list` for ids and names"
            )
        if entry.key.revoked_at is not None:
            return entry.key
        when = time.time()
        with self._db_lock:
            cur = self._db.execute(
                "UPDATE keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (when, entry.key.id),
            )
            if cur.rowcount == 0:  # another process revoked it first: keep its time
                row = self._db.execute(
                    "SELECT revoked_at FROM keys WHERE id = ?", (entry.key.id,)
                ).fetchone()
                when = row[0] if row and row[0] is not None else when
        with self._lock:
            entry.key = replace(entry.key, revoked_at=when)
            return entry.key

    def add_spend(self, key_id: str, usd: float) -> None:
        """Add ``usd`` to the key's spend: in memory now, on disk within ``flush_interval_s``.

        Raises `UnknownKeyError` for an unknown id, `KeyStoreError` for a negative or
        non-finite amount.
        """
        if not (isinstance(usd, int | float) and math.isfinite(usd) and usd >= 0):
            raise KeyStoreError(f"spend of {usd!r} USD for {key_id}: pass a finite amount >= 0")
        self._check_open()
        with self._lock:
            entry = self._entries.get(key_id)
            if entry is None:
                raise UnknownKeyError(f"no key {key_id!r} to add spend to")
            if usd == 0:
                return
            entry.key = replace(entry.key, spent_usd=entry.key.spent_usd + usd)
            self._pending[key_id] = self._pending.get(key_id, 0.0) + usd
            if self._writer is None and not self._closed:
                self._writer = threading.Thread(
                    target=self._write_loop, name="agency-keys-spend", daemon=True
                )
                self._writer.start()

    def flush(self) -> None:
        """Write the spend added so far; on a SQLite error it is kept for the next flush and
        the error raised."""
        with self._db_lock:
            if self._db_closed:
                return
            with self._lock:
                batch, self._pending = self._pending, {}
            if not batch:
                return
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany(
                    "UPDATE keys SET spent_usd = spent_usd + ? WHERE id = ?",
                    [(usd, key_id) for key_id, usd in batch.items()],
                )
                self._db.execute("COMMIT")
            except sqlite3.Error:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                with self._lock:  # keep it: added to whatever came in meanwhile
                    for key_id, usd in batch.items():
                        self._pending[key_id] = self._pending.get(key_id, 0.0) + usd
                raise

    def close(self) -> None:
        """Write pending spend and close the file (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._writer is not None:
            self._writer.join()
        try:
            self.flush()
        finally:
            with self._db_lock:
                self._db_closed = True
                self._db.close()
            _LIVE.discard(self)

    def __repr__(self) -> str:
        return f"KeyStore({str(self.path)!r}, keys={len(self._entries)})"

    # -- internals ------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise KeyStoreError(f"the key store {self.path} is closed: open a new KeyStore")

    def _find(self, id_or_name: str) -> _Entry | None:
        with self._lock:
            entry = self._entries.get(id_or_name.strip())
            if entry is not None:
                return entry
            named = [e for e in self._entries.values() if e.key.name == id_or_name.strip()]
        if not named:
            return None
        # The unrevoked one if any, else the latest revoked one.
        return max(named, key=lambda e: (e.key.revoked_at is None, e.key.revoked_at or 0.0))

    def _data_version(self) -> int:
        value: int = self._db.execute("PRAGMA data_version").fetchone()[0]
        return value

    def _refresh(self, *, blocking: bool) -> None:
        """Reload the cache if another connection committed since the last look.

        Non-blocking on the hot path: while a flush holds the connection, look next time.
        """
        if self._closed or not self._db_lock.acquire(blocking=blocking):
            return
        try:
            self._checked = time.monotonic()
            version = self._data_version()
            if version != self._version:
                self._version = version
                self._reload()
        finally:
            self._db_lock.release()

    def _reload(self) -> None:
        """Rebuild the cache from the file (caller holds ``_db_lock``, so no flush is midway:
        the file's spend plus the pending spend is the whole spend)."""
        rows = self._db.execute(f"SELECT {_COLUMNS} FROM keys").fetchall()
        with self._lock:
            entries: dict[str, _Entry] = {}
            for (key_id, name, salt, digest, created, budget, rpm, models, expires, revoked,
                 log_prompts, spent) in rows:  # fmt: skip
                key = VirtualKey(
                    id=key_id,
                    name=name,
                    created_at=created,
                    budget_usd=budget,
                    rpm=rpm,
                    models=tuple(json.loads(models)),
                    expires_at=expires,
                    revoked_at=revoked,
                    log_prompts=bool(log_prompts),
                    spent_usd=spent + self._pending.get(key_id, 0.0),
                )
                entries[key_id] = _Entry(key, bytes(salt), bytes(digest))
            self._entries = entries

    def _write_loop(self) -> None:
        while not self._stop.wait(self.flush_interval_s):
            try:
                self.flush()
            except sqlite3.Error as exc:  # kept pending; tried again next time
                _log.warning("could not write key spend to %s: %s", self.path, exc)


_LIVE: weakref.WeakSet[KeyStore] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    """Write every open store's pending spend at interpreter exit."""
    for store in list(_LIVE):
        try:
            store.close()
        except sqlite3.Error as exc:
            _log.warning("could not write key spend to %s: %s", store.path, exc)
