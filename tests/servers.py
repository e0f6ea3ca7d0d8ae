"""Real servers the tests start on 127.0.0.1 and stop (Debian packages that
``scripts/setup.sh --dev`` installs): a test that needs one fails, rather than skips, when it
is missing."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

__all__ = ["ChromaServer", "RedisServer", "free_port", "redis_server"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A redis-server in a temp dir on 127.0.0.1; `stop` and `start` keep its port."""

    def __init__(self, directory: Path) -> None:
        if shutil.which("redis-server") is None:
            pytest.fail("redis-server is not installed: bash scripts/setup.sh --dev installs it")
        self.port = free_port()
        self.dir = directory
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url)
        for _ in range(200):
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def client(self) -> redis.Redis:
        """A client of this server."""
        return redis.Redis.from_url(self.url)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own (its URL: ``.url``)."""
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


class ChromaServer:
    """chromadb's own ``chroma run`` over a directory, on a free port of 127.0.0.1."""

    def __init__(self, directory: Path) -> None:
        import sys

        chroma = shutil.which("chroma", path=str(Path(sys.executable).parent))
        if chroma is None:
            pytest.fail("the chroma CLI is not installed: bash scripts/setup.sh --dev")
        self.port = free_port()
        self.proc = subprocess.Popen(
            [
                chroma,
                "run",
                "--path",
                str(directory),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while True:  # waiting for readiness: poll the heartbeat until it answers
            assert self.proc.poll() is None, "chroma run exited"
            try:
                url = f"http://127.0.0.1:{self.port}/api/v2/heartbeat"
                if httpx.get(url, timeout=1).is_success:
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "chroma run did not answer"
            time.sleep(0.05)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
