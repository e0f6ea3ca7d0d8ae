"""The servers of `gateway_bench.py`, each a subprocess on 127.0.0.1 that this module starts
and stops: a fast upstream, our gateway and LiteLLM's proxy.

- `Upstream`: nginx (one worker) serving `_nginx`'s canned OpenAI answers, so the upstream
  is never the bottleneck: ``/v1/`` one chat completion; ``/stream/v1/`` the SSE stream at full
  speed; ``/slow/v1/`` the same stream paced (its first KiB at once, then `SLOW_RATE` bytes/s,
  so a stream stays open for minutes until its client closes it).
- `Server`: one process group we started; ready when its health path answers 200; RSS and CPU
  time of its whole process tree (a server's workers included); `Server.stop` ends the group
  (SIGTERM, then SIGKILL). A `with` block always stops it.
- `agency_server`, `failover_server`, `litellm_server`: the argv, config file and environment
  of ``agency serve`` and of ``litellm --config``; `litellm_problem` says why a Python cannot
  run LiteLLM's proxy (None: it can).

Model names every server answers to: `CHAT` (``/v1``), `SLOW` (``/slow/v1``); the failover
gateway's `PRIMARY` points at a closed port and `BACKUP` at ``/v1``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import TracebackType

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _nginx import SLOW_RATE, Nginx

__all__ = [
    "BACKUP",
    "CHAT",
    "PRIMARY",
    "SLOW",
    "SLOW_RATE",
    "Server",
    "Upstream",
    "agency_server",
    "failover_server",
    "free_port",
    "litellm_problem",
    "litellm_server",
]

CHAT = "bench"
"""The model name served from the upstream's ``/v1`` (JSON chat completions)."""
SLOW = "bench-slow"
"""The model name served from the upstream's ``/slow/v1`` (a paced SSE stream)."""
PRIMARY = "primary"
"""The failover gateway's first entry: a closed port."""
BACKUP = "backup"
"""The failover gateway's second entry: the upstream's ``/v1``."""


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"{what} exited with {proc.returncode}") from None
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {timeout:g} s")


Upstream = Nginx
"""The benchmark's upstream: `_nginx.Nginx` (``/v1``, ``/stream/v1`` and the paced
``/slow/v1``)."""


def _children() -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # it ended meanwhile
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        out.setdefault(ppid, []).append(int(entry.name))
    return out


class Server:
    """A server under test: one process group, its log in ``log``, its port on 127.0.0.1."""

    def __init__(
        self, name: str, argv: list[str], port: int, health: str, cwd: Path,
        env: dict[str, str] | None = None,
    ) -> None:  # fmt: skip
        self.name = name
        """Its name in the table and in errors."""
        self.argv = argv
        """The command that starts it."""
        self.port = port
        """Its port on 127.0.0.1."""
        self.base = f"http://127.0.0.1:{port}"
        """``http://127.0.0.1:PORT``."""
        self.health = health
        """A path answering 200 once it serves."""
        self.cwd = cwd
        """Its working directory (its config and log are there)."""
        self.env = {**os.environ, **(env or {})}
        """Its environment."""
        self.log = cwd / f"{name.replace(' ', '-')}.log"
        """Its stdout and stderr."""
        self.proc: subprocess.Popen[bytes] | None = None
        """The process we started (None: not started, or stopped)."""

    def start(self) -> Server:
        """Start it (no wait: see `wait_ready`); returns itself."""
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                self.argv, cwd=self.cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        return self

    def log_tail(self, lines: int = 6) -> str:
        """The last lines of its log, on one line."""
        try:
            text = self.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(line.strip() for line in text[-lines:] if line.strip())

    def wait_ready(self, timeout: float) -> None:
        """Return once ``GET health`` answers 200; `RuntimeError` (with its log's tail) if it
        exits or does not answer within ``timeout`` seconds."""
        assert self.proc is not None, "start() first"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode}: {self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(self.base + self.health, timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready within {timeout:g} s: {self.log_tail()}")

    def pids(self) -> list[int]:
        """Its process and all their descendants (workers)."""
        if self.proc is None:
            return []
        tree, out, todo = _children(), [], [self.proc.pid]
        while todo:
            pid = todo.pop()
            out.append(pid)
            todo += tree.get(pid, [])
        return out

    def rss_kib(self) -> int:
        """VmRSS summed over `pids` (/proc/PID/status), KiB."""
        total = 0
        for pid in self.pids():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            except OSError:
                continue
        return total

    def cpu_s(self) -> float:
        """User + system CPU seconds used so far by `pids`."""
        total = 0
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / os.sysconf("SC_CLK_TCK")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> None:
        """Send ``sig`` to its process group, wait, then SIGKILL what is left."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        pgid = proc.pid  # start_new_session: the group is ours and has its leader's id
        try:
            if sig == signal.SIGINT:
                proc.send_signal(sig)  # the leader only: it shuts its workers down itself
            else:
                os.killpg(pgid, sig)
            proc.wait(timeout)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        proc.wait()

    def __enter__(self) -> Server:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _entry(name: str, base_url: str, priority: int = 1) -> str:
    return (
        f'[[llm.providers]]\nname = "{name}"\nprovider = "openai"\nbase_url = "{base_url}"\n'
        f'api_key = "sk-bench"\ntext_model = "gpt-4o-mini"\npriority = {priority}\n\n'
    )


def _agency(name: str, toml: str, cwd: Path, profile: Path | None) -> Server:
    cwd.mkdir(parents=True, exist_ok=True)
    (cwd / "agency.toml").write_text(
        toml + f'[gateway]\nhealth_interval_s = 0\ndata_dir = "{cwd / "data"}"\n'
    )
    port = free_port()
    prof = ["-m", "cProfile", "-o", str(profile)] if profile else []
    argv = [sys.executable, *prof, "-m", "agency.cli", "serve", "--config", "agency.toml",
            "--no-auth", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]  # fmt: skip
    return Server(name, argv, port, "/health", cwd)


def agency_server(cwd: Path, upstream: Upstream, profile: Path | None = None) -> Server:
    """``agency serve --no-auth`` over `CHAT` and `SLOW` on ``upstream`` (config in ``cwd``);
    under cProfile writing ``profile`` when given (stop it with SIGINT so it is written)."""
    toml = _entry(CHAT, f"{upstream.base}/v1") + _entry(SLOW, f"{upstream.base}/slow/v1", 2)
    return _agency("agency serve", toml, cwd, profile)


def failover_server(cwd: Path, upstream: Upstream) -> Server:
    """``agency serve --no-auth`` with `PRIMARY` on a closed port, `BACKUP` on ``upstream``
    and ``[llm.fallback] enabled = true``."""
    dead = free_port()  # bound and released: nothing listens, so connects are refused
    toml = (
        _entry(PRIMARY, f"http://127.0.0.1:{dead}/v1", 1)
        + _entry(BACKUP, f"{upstream.base}/v1", 2)
        + "[llm.fallback]\nenabled = true\n\n"
    )
    return _agency("agency serve (failover)", toml, cwd, None)


def litellm_problem(python: str) -> str | None:
    """Why ``python`` cannot run LiteLLM's proxy (None: it seems it can; a failed start is
    reported by `Server.wait_ready`). Looks for its modules without importing them (seconds)."""
    if not Path(python).exists():
        return f"{python} does not exist"
    code = (
        "import importlib.util as u; "
        "print(' '.join(m for m in ('litellm', 'fastapi', 'uvicorn', 'backoff', 'apscheduler', "
        "'mcp', 'orjson') if u.find_spec(m) is None))"
    )
    done = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60,
                          check=False)  # fmt: skip
    missing = done.stdout.strip() if done.returncode == 0 else "python failed"
    if not missing:
        return None
    return (
        f"{python} lacks LiteLLM's proxy ({missing}); make one with "
        "bash benchmarks/litellm_proxy_venv.sh"
    )


def litellm_server(python: str, cwd: Path, upstream: Upstream) -> Server:
    """``litellm --config litellm.yaml`` (one uvicorn worker, its default) from ``python``'s
    environment, with `CHAT` and `SLOW` on ``upstream``: no database and no master key, as
    ``agency serve --no-auth`` (LiteLLM asks for an explicit opt-in to that); its upstream
    connection pool raised from 500 to 4,000 per host (else the memory row stalls at 500)."""
    cwd.mkdir(parents=True, exist_ok=True)
    models = [
        {"model_name": name, "litellm_params": {"model": "openai/gpt-4o-mini",
                                                "api_base": f"{upstream.base}{path}",
                                                "api_key": "sk-bench"}}
        for name, path in ((CHAT, "/v1"), (SLOW, "/slow/v1"))
    ]  # fmt: skip
    # JSON is YAML: no yaml writer needed here
    (cwd / "litellm.yaml").write_text(json.dumps({"model_list": models}, indent=2))
    port = free_port()
    cli = Path(python).with_name("litellm")
    argv = [str(cli)] if cli.exists() else [python, "-m", "litellm"]
    argv += ["--config", "litellm.yaml", "--host", "127.0.0.1", "--port", str(port)]
    env = {
        "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # else it fetches prices from the internet
        "LITELLM_LOG": "ERROR",
        # its upstream pool holds 500 connections per host by default, so stream 501 would
        # wait for a free one: raised, so 1,000 streams can be open at once
        "AIOHTTP_CONNECTOR_LIMIT": "4000",
        "AIOHTTP_CONNECTOR_LIMIT_PER_HOST": "4000",
    }
    return Server("LiteLLM proxy", argv, port, "/health/liveliness", cwd, env)
