"""chromadb plumbing for `memory.store`: shared clients per mode, namespace rules, metadata codec.

Private: `VectorMemory` is the API. Clients are shared per persistent directory (chromadb
dislikes several clients on one path) and closed with their last user; metadata values that
chromadb cannot store or would silently change are JSON-encoded (see `memory.store`).
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import threading
import uuid
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

# Metadata key listing (as a JSON array) the keys whose values are stored JSON-encoded.
JSON_KEYS_FIELD = "agency:json"

_MODES: frozenset[str] = frozenset({"persistent", "ephemeral", "server"})
_COLLECTION_CONFIGURATION: dict[str, Any] = {"hnsw": {"space": "cosine"}}
_RESERVED_KEY_PREFIX = "chroma:"
_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
# chromadb 1.x collection names: 3-512 chars of [a-zA-Z0-9._-], alphanumeric at both ends,
# no "..", not an IPv4 address.
_NAME_MIN = 3
_NAME_MAX = 512
_NAME_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?$")
_IPV4_RE = re.compile(r"^\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}$")
_NAME_RULE = (
    f"{_NAME_MIN}-{_NAME_MAX} characters from [a-zA-Z0-9._-], starting and ending with a letter "
    "or digit, with no '..' and not an IPv4 address"
)
_EPHEMERAL_DB_PREFIX = "agency-"
_INCLUDE_QUERY = ["documents", "metadatas", "distances"]
_INCLUDE_GET = ["documents", "metadatas"]


class _Backend:
    """A chromadb client and its collections, shared by a `VectorMemory` and its namespaces."""

    def __init__(self, client: Any, description: str) -> None:
        self.client = client
        self.description = description
        self._lock = threading.Lock()
        self._collections: dict[str, Any] = {}
        self._write_locks: dict[str, threading.Lock] = {}
        self._max_batch: int | None = None

    def collection(self, name: str) -> Any:
        with self._lock:
            found = self._collections.get(name)
        if found is not None:
            return found
        # Outside the lock: a server round trip. get_or_create is idempotent, so a race
        # between two threads only creates one collection; setdefault keeps the first handle.
        created = self.client.get_or_create_collection(
            name, embedding_function=None, configuration=_COLLECTION_CONFIGURATION
        )
        with self._lock:
            return self._collections.setdefault(name, created)

    def write_lock(self, name: str) -> threading.Lock:
        with self._lock:
            return self._write_locks.setdefault(name, threading.Lock())

    def max_batch(self) -> int:
        if self._max_batch is None:  # a request in server mode: ask once
            self._max_batch = int(self.client.get_max_batch_size())
        return self._max_batch


_backends_lock = threading.Lock()
# One backend per persistent directory; it lives while some VectorMemory uses it.
_persistent_backends: weakref.WeakValueDictionary[str, _Backend] = weakref.WeakValueDictionary()


def _settings() -> Any:
    from chromadb.config import Settings

    # Every client in this process uses equal settings: chromadb refuses a second client on
    # the same path (or a second in-memory one) whose settings differ.
    return Settings(anonymized_telemetry=False, allow_reset=False)


def _close_client(client: Any) -> None:
    # Best effort: this runs from a finalizer, where raising helps no one.
    with contextlib.suppress(Exception):
        client.close()


_ephemeral_admin_client: Any | None = None


def _ephemeral_admin() -> Any:
    # One admin client for the process's in-memory system, kept for good: chromadb counts
    # clients per system and AdminClient has no close(), so a fresh one per call would leak.
    global _ephemeral_admin_client
    with _backends_lock:
        if _ephemeral_admin_client is None:
            import chromadb

            _ephemeral_admin_client = chromadb.AdminClient(_settings())
        return _ephemeral_admin_client


def _drop_ephemeral(client: Any, database: str) -> None:
    with contextlib.suppress(Exception):  # best effort, see _close_client
        _ephemeral_admin().delete_database(database)
    _close_client(client)


def _own(backend: _Backend, release: Callable[..., None], *args: Any) -> _Backend:
    # Release the client when the last VectorMemory using this backend is collected; not at
    # interpreter exit, where chromadb may already be half torn down (writes are committed).
    finalizer = weakref.finalize(backend, release, *args)
    finalizer.atexit = False
    return backend


def _persistent_backend(path: Path) -> _Backend:
    key = str(path)
    with _backends_lock:
        backend = _persistent_backends.get(key)
        if backend is None:
            import chromadb

            # Under the lock on purpose: two clients on one directory must never be created.
            client = chromadb.PersistentClient(path=key, settings=_settings())
            backend = _own(_Backend(client, f"path={key!r}"), _close_client, client)
            _persistent_backends[key] = backend
        return backend


def _ephemeral_backend() -> _Backend:
    import chromadb

    database = f"{_EPHEMERAL_DB_PREFIX}{uuid.uuid4().hex}"
    _ephemeral_admin().create_database(database)
    client = chromadb.EphemeralClient(settings=_settings(), database=database)
    return _own(_Backend(client, "in memory"), _drop_ephemeral, client, database)


def _server_backend(host: str, port: int) -> _Backend:
    import chromadb

    try:
        client = chromadb.HttpClient(host=host, port=port, settings=_settings())
    except ValueError as exc:  # chromadb's way of saying "connection refused"
        from agency.errors import ConnectionFailed

        raise ConnectionFailed(
            f"no chromadb server answers at {host}:{port} ({exc}); start one with "
            f"`chroma run --path DIR --host {host} --port {port}`",
            provider="chromadb",
        ) from exc
    return _own(_Backend(client, f"server={host}:{port}"), _close_client, client)


# -- names, metadata, filters ----------------------------------------------------------------


def _suggest_name(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", name)
    cleaned = re.sub(r"\.{2,}", ".", cleaned).strip("._-")[:_NAME_MAX]
    if _IPV4_RE.match(cleaned):
        cleaned = f"ns-{cleaned}"
    return cleaned.ljust(_NAME_MIN, "0") if cleaned else "default"


def _check_namespace(name: str) -> None:
    valid = (
        isinstance(name, str)
        and _NAME_MIN <= len(name) <= _NAME_MAX
        and _NAME_RE.match(name) is not None
        and ".." not in name
        and _IPV4_RE.match(name) is None
    )
    if not valid:
        hint = f" such as {_suggest_name(name)!r}" if isinstance(name, str) else ""
        raise ValueError(
            f"invalid namespace {name!r}: a namespace is a chromadb collection, whose name "
            f"must be {_NAME_RULE}; use a name{hint}"
        )


def _is_native(value: Any) -> bool:
    if isinstance(value, bool | str):
        return True
    if isinstance(value, int):
        return _INT64_MIN <= value <= _INT64_MAX
    return isinstance(value, float) and math.isfinite(value)


def _encode_metadata(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    encoded: list[str] = []
    for key, value in (metadata or {}).items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"metadata keys must be non-empty strings, got {key!r}")
        if key == JSON_KEYS_FIELD or key.startswith(_RESERVED_KEY_PREFIX):
            raise ValueError(
                f"metadata key {key!r} is reserved ({JSON_KEYS_FIELD!r} and "
                f"{_RESERVED_KEY_PREFIX!r}*); rename it"
            )
        if _is_native(value):
            out[key] = value
            continue
        try:
            out[key] = json.dumps(value, ensure_ascii=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"metadata value under key {key!r} is a {type(value).__name__}: store "
                "str, int, float, bool or something JSON-serializable"
            ) from exc
        encoded.append(key)
    if encoded:
        out[JSON_KEYS_FIELD] = json.dumps(sorted(encoded))
    return out


def _decode_metadata(raw: Mapping[str, Any] | None) -> dict[str, Any]:
    data = dict(raw or {})
    marker = data.pop(JSON_KEYS_FIELD, None)
    if isinstance(marker, str):
        for key in json.loads(marker):
            if isinstance(data.get(key), str):
                data[key] = json.loads(data[key])
    return data


def _where(filter: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not filter:
        return None
    clause = dict(filter)
    # chromadb wants exactly one top-level key; a plain multi-key dict means "all of these".
    if len(clause) > 1 and not any(key.startswith("$") for key in clause):
        return {"$and": [{key: value} for key, value in clause.items()]}
    return clause


def _rows(result: Mapping[str, Any], *, nested: bool) -> list[tuple[str, str, Any, Any]]:
    """(id, text, raw metadata, distance or None) rows from a chromadb get/query result."""

    def column(name: str, size: int) -> list[Any]:
        values = result.get(name)
        if values is None:
            return [None] * size
        return list(values[0] if nested else values)

    ids = list(result["ids"][0] if nested else result["ids"])
    texts = column("documents", len(ids))
    metadatas = column("metadatas", len(ids))
    distances = column("distances", len(ids)) if nested else [None] * len(ids)
    return list(zip(ids, texts, metadatas, distances, strict=True))


def _vector(values: Sequence[float]) -> list[float]:
    return [float(v) for v in values]


def _clamped_cosine_relevance(distance: float) -> float:
    return min(1.0, max(0.0, 1.0 - distance))


# -- the store ------------------------------------------------------------------------------
