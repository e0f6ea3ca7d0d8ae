"""Model specs (``"provider:model"``) and the provider registry.

`parse_spec` is the one place a spec string is read. The registry maps provider names to
`ProviderProfile` data; the adapter class behind a profile is imported only when a model of
that provider is built. Third-party packages add providers through the ``agency.providers``
entry-point group: each entry point loads to a `ProviderProfile`, an iterable of them, or a
callable returning either.
"""

from __future__ import annotations

import difflib
import importlib
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from agency.errors import ConfigError, ProviderNotFound
from agency.providers._profile import Connection, ProviderProfile

if TYPE_CHECKING:
    from agency.providers._base import Adapter

__all__ = [
    "ENTRY_POINT_GROUP",
    "ModelSpec",
    "build_adapter",
    "get_profile",
    "known_providers",
    "load_adapter_class",
    "parse_spec",
    "register_provider",
    "split_model_fields",
    "suggest_provider",
]

ENTRY_POINT_GROUP = "agency.providers"

_registry: dict[str, ProviderProfile] = {}
_lock = threading.RLock()
_loaded = False


@dataclass(frozen=True)
class ModelSpec:
    """A parsed ``"provider:model"``; ``model`` is ``None`` when only the provider was named."""

    provider: str
    model: str | None

    def __str__(self) -> str:
        return f"{self.provider}:{self.model}" if self.model else self.provider


def parse_spec(spec: str, *, default_provider: str | None = None) -> ModelSpec:
    """Split ``"provider:model"`` at the first colon and check the provider is known.

    Model names may contain colons and slashes (``"ollama:llama3.2:3b"``,
    ``"openrouter:anthropic/claude-3.5-sonnet"``, ``"local:/models/x.gguf"``). A bare name
    is a provider when it is registered, else a model of ``default_provider``.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(
            f"model spec must be a non-empty string, got {spec!r}",
            fix='write it as "provider:model", e.g. "openai:gpt-4o-mini" or "local:smollm2"',
        )
    spec = spec.strip()
    provider, sep, model = spec.partition(":")
    provider = provider.strip().lower()
    if not sep:
        if provider in _profiles():
            return ModelSpec(provider, None)
        if default_provider:
            return ModelSpec(default_provider, spec)
        raise ProviderNotFound(_unknown_message(provider, spec))
    if provider not in _profiles():
        raise ProviderNotFound(_unknown_message(provider, spec))
    return ModelSpec(provider, model.strip() or None)


def _unknown_message(provider: str, spec: str) -> str:
    hint = suggest_provider(provider)
    did_you_mean = f" Did you mean {hint!r}?" if hint else ""
    return (
        f"unknown provider {provider!r} in spec {spec!r}.{did_you_mean} "
        f"Known providers: {', '.join(known_providers())}. "
        'Write specs as "provider:model".'
    )


def suggest_provider(name: str) -> str | None:
    """The registered provider name closest to ``name``, if any is close."""
    aliases = {
        "google": "gemini",
        "claude": "anthropic",
        "azure": "azure-openai",
        "hf": "huggingface",
    }
    if name in aliases and aliases[name] in _profiles():
        return aliases[name]
    close = difflib.get_close_matches(name, list(_profiles()), n=1, cutoff=0.6)
    return close[0] if close else None


def register_provider(profile: ProviderProfile, *, replace: bool = False) -> None:
    """Add a provider to the registry. Raises `ConfigError` on a duplicate unless ``replace``."""
    with _lock:
        if profile.name in _registry and not replace and _registry[profile.name] != profile:
            raise ConfigError(
                f"provider {profile.name!r} is already registered",
                fix="pick another name or pass replace=True",
            )
        _registry[profile.name] = profile


def get_profile(name: str) -> ProviderProfile:
    """The profile registered as ``name``; `ProviderNotFound` with a suggestion otherwise."""
    profiles = _profiles()
    try:
        return profiles[name.lower()]
    except KeyError:
        raise ProviderNotFound(_unknown_message(name, name)) from None


def known_providers() -> list[str]:
    """Sorted names of every registered provider (built-in and entry points)."""
    return sorted(_profiles())


def load_adapter_class(profile: ProviderProfile) -> type[Any]:
    """Import the adapter class named by ``profile.adapter`` (``"module:Class"``)."""
    module_name, _, attr = profile.adapter.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attr)  # type: ignore[no-any-return]
    except ImportError as exc:
        raise ConfigError(
            f"provider {profile.name!r} needs a package that is not installed: {exc.name}",
            fix=f"pip install {exc.name}" if exc.name else "install the provider's extra",
        ) from exc
    except AttributeError as exc:
        raise ConfigError(f"provider {profile.name!r}: {profile.adapter} not found") from exc


def split_model_fields(values: dict[str, Any], *, embedding: bool) -> dict[str, Any]:
    """Model-class constructor fields with ``model`` split into ``provider`` and ``model``.

    ``model`` may be a whole ``"provider:model"`` spec when ``provider`` is not given; an
    absent model name becomes the profile's default chat (or ``embedding``) model.
    """
    values = dict(values)
    if "model_name" in values:  # the chat model's alias; one key from here on
        values["model"] = values.pop("model_name")
    model = values.get("model")
    if not values.get("provider"):
        if not model:
            example = "local:wordllama" if embedding else "local:smollm2"
            raise ConfigError(
                f"no {'embedding ' if embedding else ''}model given",
                fix=f'pass model="provider:model", e.g. "{example}"',
            )
        spec = parse_spec(str(model))
        values["provider"], model = spec.provider, spec.model
    if not model:
        profile = get_profile(values["provider"])
        model = profile.default_embedding_model if embedding else profile.default_model
    values["model"] = model or ""
    return values


def build_adapter(provider: str, **params: Any) -> Adapter:
    """The wire adapter of ``provider`` on a `Connection` resolved from ``params``
    (parameters, then environment variables, then the profile's defaults)."""
    profile = get_profile(provider)
    connection = Connection.resolve(profile, **params)
    return load_adapter_class(profile)(connection)  # type: ignore[no-any-return]


def _profiles() -> dict[str, ProviderProfile]:
    global _loaded
    if not _loaded:
        with _lock:
            if not _loaded:
                from agency.providers.presets import BUILTIN_PROFILES

                for profile in BUILTIN_PROFILES:
                    _registry.setdefault(profile.name, profile)
                _load_entry_points()
                _loaded = True
    return _registry


def _load_entry_points() -> None:
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
        except Exception as exc:  # a broken plugin must not break every other provider
            import warnings

            warnings.warn(f"agency: entry point {ep.name!r} failed to load: {exc}", stacklevel=3)
            continue
        for profile in _as_profiles(
            obj() if callable(obj) and not isinstance(obj, ProviderProfile) else obj
        ):
            register_provider(profile, replace=True)


def _as_profiles(obj: Any) -> Iterable[ProviderProfile]:
    if isinstance(obj, ProviderProfile):
        return [obj]
    return [p for p in obj if isinstance(p, ProviderProfile)]
