"""A fast upstream for client benchmarks: nginx on 127.0.0.1 serving canned OpenAI answers.

A Python fake server saturates near 300 calls/s, so a benchmark against it measures the server.
nginx (one worker) serves the same canned bodies from files at tens of thousands of calls/s:
a POST to a static file is a 405, which ``error_page 405 =200 $uri`` turns into the file.
`ceiling` measures the upstream itself with ``wrk``, so each client row is read against it.

Paths (``base`` is ``http://127.0.0.1:PORT``):

- ``/v1/chat/completions``: one chat completion (`ANSWER`);
- ``/stream/v1/chat/completions``: an SSE stream of `STREAM_CHUNKS` content chunks, the usage
  chunk and ``[DONE]``, as OpenAI frames it;
- ``/slow/v1/chat/completions``: the same stream paced: its first KiB at once, then
  `SLOW_RATE` bytes/s (streams held open, for a server's memory per stream);
- ``/v1/embeddings`` and ``/e100/v1/embeddings``: 1 and 100 vectors of `EMBEDDING_DIM`.

nginx is the Debian package (``scripts/setup.sh --bench`` installs it and wrk).
"""

from __future__ import annotations

import json
import random
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

STREAM_CHUNKS = 300
"""Content chunks per streamed answer ("a few hundred")."""
EMBEDDING_DIM = 1536
"""text-embedding-3-small's size."""
MODEL = "gpt-4o-mini"

ANSWER = {
    "id": "chatcmpl-bench",
    "object": "chat.completion",
    "created": 1700000000,
    "model": MODEL,
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello there!", "refusal": None,
                        "annotations": []},
            "finish_reason": "stop",
            "logprobs": None,
        }
    ],
    "usage": {
        "prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                      "accepted_prediction_tokens": 0,
                                      "rejected_prediction_tokens": 0},
    },
    "system_fingerprint": "fp_bench",
}  # fmt: skip


def _chunk(delta: dict[str, object], finish: str | None = None, usage: object = None) -> str:
    choices = [] if usage else [{"index": 0, "delta": delta, "logprobs": None,
                                 "finish_reason": finish}]  # fmt: skip
    body = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1700000000,
            "model": MODEL, "system_fingerprint": "fp_bench", "choices": choices,
            "usage": usage}  # fmt: skip
    return f"data: {json.dumps(body, separators=(',', ':'))}\n\n"


def stream_body() -> str:
    """The SSE body: role, `STREAM_CHUNKS` one-word chunks, finish, usage, ``[DONE]``."""
    parts = [_chunk({"role": "assistant", "content": "", "refusal": None})]
    parts += [_chunk({"content": f" w{i}"}) for i in range(STREAM_CHUNKS)]
    parts.append(_chunk({}, finish="stop"))
    usage = {"prompt_tokens": 9, "completion_tokens": STREAM_CHUNKS,
             "total_tokens": 9 + STREAM_CHUNKS}  # fmt: skip
    parts.append(_chunk({}, usage=usage))
    parts.append("data: [DONE]\n\n")
    return "".join(parts)


def embeddings_body(n: int) -> str:
    rng = random.Random(n)
    data = [
        {"object": "embedding", "index": i,
         "embedding": [round(rng.uniform(-0.1, 0.1), 8) for _ in range(EMBEDDING_DIM)]}
        for i in range(n)
    ]  # fmt: skip
    usage = {"prompt_tokens": 2 * n, "total_tokens": 2 * n}
    return json.dumps({"object": "list", "data": data, "model": "text-embedding-3-small",
                       "usage": usage})  # fmt: skip


SLOW_RATE = 256
"""Bytes/s of a paced stream after its first KiB: about one chunk a second, so 1,000 held
streams cost a server ~1,000 chunks/s, not its whole CPU."""

_CONF = """
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log crit;
events {{ worker_connections 16384; }}
http {{
    access_log off;
    client_body_temp_path {root}/tmp;
    proxy_temp_path {root}/tmp;
    fastcgi_temp_path {root}/tmp;
    uwsgi_temp_path {root}/tmp;
    scgi_temp_path {root}/tmp;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    client_body_buffer_size 64k;
    sendfile on;
    tcp_nodelay on;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {root}/www;
        add_header x-request-id req_bench;
        location /v1/ {{ default_type application/json; error_page 405 =200 $uri; }}
        location /e100/ {{ default_type application/json; error_page 405 =200 $uri; }}
        location /stream/ {{ default_type text/event-stream; error_page 405 =200 $uri; }}
        location /slow/ {{
            default_type text/event-stream;
            limit_rate_after 1k;
            limit_rate {rate};
            error_page 405 =200 $uri;
        }}
    }}
}}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Nginx:
    """``with Nginx() as up:`` nginx serving the canned answers at ``up.base``."""

    def __init__(self) -> None:
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        if not Path(binary).exists():
            raise SystemExit("nginx is not installed: bash scripts/setup.sh --bench")
        self.binary = binary
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self._dir = tempfile.TemporaryDirectory(prefix="agency-nginx-")
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Nginx:
        root = Path(self._dir.name)
        root.chmod(0o755)  # nginx's workers drop root and must read the files
        (root / "tmp").mkdir()
        files = {
            "www/v1/chat/completions": json.dumps(ANSWER),
            "www/stream/v1/chat/completions": stream_body(),
            "www/slow/v1/chat/completions": stream_body(),
            "www/v1/embeddings": embeddings_body(1),
            "www/e100/v1/embeddings": embeddings_body(100),
        }
        for rel, text in files.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        conf = root / "nginx.conf"
        conf.write_text(_CONF.format(root=root, port=self.port, rate=SLOW_RATE))
        self._proc = subprocess.Popen(
            [self.binary, "-p", str(root), "-c", str(conf), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                if self._proc.poll() is not None:
                    err = self._proc.stderr.read().decode() if self._proc.stderr else ""
                    raise RuntimeError(f"nginx did not start: {err}") from None
                time.sleep(0.05)
        raise RuntimeError("nginx did not start listening")

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
            self._proc = None
        self._dir.cleanup()

    def version(self) -> str:
        """``nginx/1.22.1``."""
        out = subprocess.run([self.binary, "-v"], capture_output=True, text=True, check=False)
        return (out.stderr or out.stdout).strip().split(": ")[-1]

    def ceiling(self, path: str, connections: int, seconds: float = 3.0) -> float | None:
        """The upstream's own calls/s for POSTs to ``path`` (wrk, one thread), or None
        without wrk."""
        wrk = shutil.which("wrk")
        if wrk is None:
            return None
        script = Path(self._dir.name) / "post.lua"
        body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "Say hello"}]})
        script.write_text(
            'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
            f"wrk.body = {json.dumps(body)}\n"
        )
        out = subprocess.run(
            [wrk, "-t1", f"-c{connections}", f"-d{seconds:g}s", "-s", str(script),
             f"{self.base}{path}"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        match = re.search(r"Requests/sec:\s+([\d.]+)", out)
        return float(match.group(1)) if match else None
