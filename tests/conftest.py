"""Shared fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

# Real servers (redis-server, ...) started by the tests that ask for them: tests/servers.py.
pytest_plugins = ["servers"]

# tests/ has no __init__.py: pytest puts tests/ on sys.path and the fakes import as ``fakes``.
# (Should tests/ become a package, the relative form applies.) Import fakes the same way in
# test modules, e.g. ``from fakes.openai_server import Reply`` -- mixing ``fakes.`` and
# ``tests.fakes.`` would load two copies whose classes do not match.
try:
    from .fakes.openai_server import FakeOpenAI
except ImportError:
    from fakes.openai_server import FakeOpenAI


@pytest.fixture(scope="session")
def openai_fake_server() -> Iterator[FakeOpenAI]:
    """One fake OpenAI service (``tests/fakes/openai_server.py``) for the whole session."""
    with FakeOpenAI().running() as fake:
        yield fake


@pytest.fixture
def openai_fake(openai_fake_server: FakeOpenAI) -> Iterator[FakeOpenAI]:
    """The session's fake OpenAI, reset for this test.

    ``.base_url`` ends in ``/v1`` (for ``openai.OpenAI(base_url=...)``), ``.root_url`` has no
    path (Azure ``azure_endpoint``); ``.script(...)``, ``.requests``, ``.spec_violations``.
    """
    with openai_fake_server.checked(violations=False) as fake:
        yield fake


@pytest.fixture
def local_media(monkeypatch: pytest.MonkeyPatch) -> None:
    """The public media URLs LangChain's standard media tests download, served from bytes
    made here (``tests/fakes/media.py``): the tests stay offline."""
    try:
        from .fakes.media import serve_public_media
    except ImportError:
        from fakes.media import serve_public_media
    serve_public_media(monkeypatch)
