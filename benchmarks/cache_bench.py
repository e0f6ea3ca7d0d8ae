"""`SemanticCache` at scale: insert rate and lookup latency, embedded and server mode.

    python benchmarks/cache_bench.py [--sizes 1000,10000,100000] [--modes embedded,server]
                                     [--lookups 300] [--verifier default|rules|none]
                                     [--embedder wordllama|minilm]

For each mode, one cache grows through ``--sizes`` (entries are synthetic support questions
generated from templates, 70% under one system prompt and 10% under each of three others),
and at each size we measure:

* bulk insert rate: ``update_many`` in batches (one embedding call and one chromadb write
  per batch), for the entries added since the previous size;
* open: in embedded mode, a fresh `SemanticCache` on the same directory loads its index from
  chromadb (first lookup); the lookups below run on that reopened cache;
* lookup latency p50/p95, embedding included, of ``--lookups`` requests of each kind:
  ``exact`` (a stored question, same scope), ``semantic`` (a paraphrase of a stored one:
  embedding, nearest neighbours, verifier), ``miss`` (an unstored question from the same
  templates: near misses the verifier must turn down, the costliest path);
* single-update insert rate: ``update`` one at a time (each durable when it returns).

Server mode starts ``chroma run`` on 127.0.0.1 (a free port, a temporary directory) as a
subprocess. Target: embedded lookup p50 at most 2 ms at 100k entries (default embedder).
``--embedder minilm`` runs the same with ``local:minilm`` and its own verifier (token
alignment: one more MiniLM pass per text it judges, cached per text), the stronger and
slower choice; MiniLM embeds ~100 questions/s here, so keep its sizes small.
"""

from __future__ import annotations

import argparse
import logging
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `agency` from a checkout

DEFAULT_SIZES = "1000,10000,100000"
DEFAULT_LOOKUPS = 300
BATCH = 500
"""Entries per ``update_many`` call in the bulk phase."""
SINGLE_UPDATES = 100
"""``update`` calls timed one by one at each size."""
LLM_STRING = "agency-openai|model=gpt-4o-mini|temperature=0"
MAIN_SCOPE_SHARE = 0.7
SERVER_DEADLINE_S = 60.0
POLL_S = 0.05
SEED = 20250101
MS = 1000.0

SYSTEM_PROMPTS = (
    "You are the support assistant of a software company. Answer briefly.",
    "You are a billing specialist. Answer with the exact steps.",
    "You are a security expert. Warn about risks first.",
    "Answer as a pirate would.",
)
# (question, paraphrase) templates over verb, object, product and context slots.
TEMPLATES = (
    ("How do I {v} {o} in {p}{c}?", "how can I {v} {o} in {p}{c}"),
    (
        "What is the fastest way to {v} {o} in {p}{c}?",
        "what's the quickest way to {v} {o} in {p}{c}",
    ),
    ("Is it possible to {v} {o} in {p}{c}?", "can I {v} {o} in {p}{c}?"),
    ("Where do I go to {v} {o} in {p}{c}?", "where can I {v} {o} in {p}{c}?"),
    ("Why does {p} fail when I {v} {o}{c}?", "why does {p} give an error when I {v} {o}{c}?"),
)
VERBS = (
    "reset", "change", "export", "import", "delete", "back up", "restore", "share", "sync",
    "rename", "archive", "encrypt", "print", "merge", "move", "copy", "recover", "update",
    "configure", "schedule",
)  # fmt: skip
OBJECTS = (
    "my password", "the contact list", "a calendar event", "two-factor authentication",
    "the billing address", "a shared folder", "my profile picture", "the notification settings",
    "an invoice", "the API key", "a team workspace", "the color theme", "my email signature",
    "a recurring meeting", "the project board", "an old message thread", "my phone number",
    "the default language", "a saved search", "the payment card", "a guest account",
    "the backup codes", "a custom field", "the time zone", "a webhook", "the audit log",
    "an expense report", "a document template", "the storage quota", "a user group",
    "my recovery email", "the sidebar layout", "a pinned note", "the export format",
    "an automation rule", "a private channel", "the data retention policy", "my avatar",
    "the keyboard shortcuts", "a custom domain",
)  # fmt: skip
PRODUCTS = (
    "Gmail", "Slack", "Dropbox", "Notion", "Jira", "Zoom", "Trello", "Figma", "GitHub",
    "Outlook", "Asana", "Salesforce", "Zendesk", "Confluence", "Evernote", "Airtable",
    "HubSpot", "Shopify", "Stripe", "Teams", "Webex", "Box", "Miro", "Linear", "Intercom",
    "Mailchimp", "QuickBooks", "Xero", "Calendly", "Todoist",
)  # fmt: skip
CONTEXTS = (
    "", " on Android", " on my iPhone", " from the web app", " on Windows", " on a Mac",
    " for my whole team", " from the command line",
)  # fmt: skip
_RADIX = (len(TEMPLATES), len(VERBS), len(OBJECTS), len(PRODUCTS), len(CONTEXTS))


def _slots(number: int) -> tuple[int, ...]:
    out = []
    for size in _RADIX:
        number, digit = divmod(number, size)
        out.append(digit)
    return tuple(out)


def question(number: int, *, paraphrase: bool = False) -> str:
    """The ``number``-th synthetic question (or its paraphrase); numbers below the product of
    the slot sizes (960,000) give distinct questions."""
    t, v, o, p, c = _slots(number)
    template = TEMPLATES[t][1 if paraphrase else 0]
    return template.format(v=VERBS[v], o=OBJECTS[o], p=PRODUCTS[p], c=CONTEXTS[c])


def _capacity() -> int:
    total = 1
    for size in _RADIX:
        total *= size
    return total


@dataclass
class Row:
    """Measurements of one mode at one size."""

    size: int
    bulk_rate: float = 0.0
    open_s: float | None = None
    single_rate: float = 0.0
    latencies: dict[str, list[float]] = field(default_factory=dict)
    outcomes: dict[str, dict[str, int]] = field(default_factory=dict)


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


class Workload:
    """Which questions are stored, under which system prompt, and what to ask."""

    def __init__(self, max_size: int, seed: int = SEED) -> None:
        if max_size + 10 * DEFAULT_LOOKUPS > _capacity():
            raise SystemExit(f"at most {_capacity() - 10 * DEFAULT_LOOKUPS} entries")
        rng = random.Random(seed)
        numbers = rng.sample(range(_capacity()), max_size + 4 * DEFAULT_LOOKUPS)
        self.stored = numbers[:max_size]
        self.unstored = numbers[max_size:]
        self.scopes = [
            0 if rng.random() < MAIN_SCOPE_SHARE else rng.randrange(1, len(SYSTEM_PROMPTS))
            for _ in range(max_size)
        ]
        self.rng = rng

    def item(self, index: int) -> tuple[str, str, list[Any]]:
        return (
            prompt(self.scopes[index], question(self.stored[index])),
            LLM_STRING,
            answer(self.stored[index]),
        )

    def queries(self, size: int, count: int) -> dict[str, list[str]]:
        main = [i for i in range(size) if self.scopes[i] == 0]
        picks = [self.stored[i] for i in self.rng.sample(main, min(count, len(main)))]
        return {
            "exact": [prompt(0, question(n)) for n in picks],
            "semantic": [prompt(0, question(n, paraphrase=True)) for n in picks],
            "miss": [prompt(0, question(n)) for n in self.unstored[:count]],
        }


def prompt(scope: int, text: str) -> str:
    from langchain_core.load import dumps
    from langchain_core.messages import HumanMessage, SystemMessage

    return str(dumps([SystemMessage(SYSTEM_PROMPTS[scope]), HumanMessage(text)]))


def answer(number: int) -> list[Any]:
    from langchain_core.messages import AIMessage
    from langchain_core.outputs import ChatGeneration

    text = (
        f"Here is how to do it (answer {number}): open Settings, choose the section named in "
        "your question, follow the prompts, and confirm. If the option is missing, your "
        "administrator may have disabled it; ask them to enable it for your account."
    )
    meta = {"cost": 0.00042, "model_name": "gpt-4o-mini", "finish_reason": "stop"}
    usage = {"input_tokens": 40, "output_tokens": 60, "total_tokens": 100}
    return [ChatGeneration(message=AIMessage(text, response_metadata=meta, usage_metadata=usage))]


def _verifier(name: str) -> Any:
    if name == "none":
        return None
    from agency.memory.verify import RuleVerifier

    return "default" if name == "default" else RuleVerifier()


def _threshold(verifier: Any, embedder: str) -> float:
    if verifier == "default":
        from agency.memory.verify import default_threshold

        return default_threshold(embedder)
    return 0.8


# -- measurements -----------------------------------------------------------------------------


def _bulk(cache: Any, work: Workload, start: int, stop: int) -> float:
    began = time.perf_counter()
    for first in range(start, stop, BATCH):
        cache.update_many(work.item(i) for i in range(first, min(stop, first + BATCH)))
    return (stop - start) / (time.perf_counter() - began)


def _singles(cache: Any, size: int) -> float:
    from langchain_core.load import dumps  # noqa: F401  (imported before timing)

    extra = [
        (prompt(1, f"single update {size} number {n}: {question(n)}"), LLM_STRING, answer(n))
        for n in range(SINGLE_UPDATES)
    ]
    began = time.perf_counter()
    for item in extra:
        cache.update(*item)
    return SINGLE_UPDATES / (time.perf_counter() - began)


def _lookups(cache: Any, queries: dict[str, list[str]], row: Row) -> None:
    for kind, prompts in queries.items():
        cache.lookup(prompts[0], LLM_STRING)  # warm (parsers, caches of the verifier)
        samples: list[float] = []
        outcomes: dict[str, int] = {}
        for text in prompts:
            began = time.perf_counter()
            found = cache.lookup(text, LLM_STRING)
            samples.append((time.perf_counter() - began) * MS)
            got = "miss" if found is None else found[0].message.response_metadata["cache"]
            outcomes[got] = outcomes.get(got, 0) + 1
        row.latencies[kind] = samples
        row.outcomes[kind] = outcomes


def run_mode(
    mode: str, sizes: list[int], lookups: int, verifier: Any, make: Callable[[], Any]
) -> list[Row]:
    work = Workload(max(sizes))
    cache = make()
    rows: list[Row] = []
    done = 0
    for size in sizes:
        row = Row(size)
        print(f"[{mode}] inserting up to {size:,} entries...", flush=True)
        row.bulk_rate = _bulk(cache, work, done, size)
        done = size
        target = cache
        if mode == "embedded":
            began = time.perf_counter()
            target = make()
            target.count()  # loads the index
            row.open_s = time.perf_counter() - began
        _lookups(target, work.queries(size, lookups), row)
        row.single_rate = _singles(target, size)
        cache = target
        rows.append(row)
    return rows


@contextmanager
def chroma_server() -> Iterator[int]:
    chroma = shutil.which("chroma", path=str(Path(sys.executable).parent)) or shutil.which("chroma")
    if chroma is None:
        raise SystemExit("the `chroma` executable is not installed")
    import httpx

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    with tempfile.TemporaryDirectory(prefix="cache-bench-server-") as path:
        server = subprocess.Popen(
            [chroma, "run", "--path", path, "--host", "127.0.0.1", "--port", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + SERVER_DEADLINE_S
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/api/v2/heartbeat").is_success:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(POLL_S)
            else:
                raise SystemExit("chroma run did not start")
            yield port
        finally:
            server.terminate()
            server.wait(15)


def _table(mode: str, rows: list[Row], verifier: Any, embedder: str) -> Any:
    from rich.table import Table

    name = "default (learned)" if verifier == "default" else type(verifier).__name__
    table = Table(title=f"SemanticCache, {mode} mode, local:{embedder} (verifier: {name})")
    for header in ("entries", "bulk/s", "update/s", "open s"):
        table.add_column(header, justify="right")
    for kind in ("exact", "semantic", "miss"):
        table.add_column(f"{kind} p50 ms", justify="right")
        table.add_column(f"{kind} p95 ms", justify="right")
    table.add_column("paraphrase hits", justify="right")
    for row in rows:
        cells = [
            f"{row.size:,}",
            f"{row.bulk_rate:,.0f}",
            f"{row.single_rate:,.1f}",
            "-" if row.open_s is None else f"{row.open_s:.2f}",
        ]
        for kind in ("exact", "semantic", "miss"):
            samples = row.latencies[kind]
            cells += [f"{statistics.median(samples):.3f}", f"{_pct(samples, 95):.3f}"]
        paraphrase = row.outcomes["semantic"]
        served = sum(v for k, v in paraphrase.items() if k != "miss")
        cells.append(f"{served}/{sum(paraphrase.values())}")
        table.add_row(*cells)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help="comma-separated entry counts")
    parser.add_argument("--modes", default="embedded,server", help="embedded and/or server")
    parser.add_argument("--lookups", type=int, default=DEFAULT_LOOKUPS, help="per kind")
    parser.add_argument("--verifier", choices=("default", "rules", "none"), default="default")
    parser.add_argument("--embedder", choices=("wordllama", "minilm"), default="wordllama")
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    lookups = min(args.lookups, DEFAULT_LOOKUPS)

    from rich.console import Console

    import agency
    from agency.memory.cache import SemanticCache

    logging.getLogger("httpx").setLevel(logging.WARNING)  # chromadb's client logs each request
    console = Console(width=max(Console().width, 160))
    embeddings = agency.embeddings(f"local:{args.embedder}")
    verifier = _verifier(args.verifier)
    options: dict[str, Any] = {
        "embeddings": embeddings,
        "embedder": args.embedder,
        "verifier": verifier,
        "threshold": _threshold(verifier, args.embedder),
    }
    probe = [f"probe question {n} about {PRODUCTS[n % len(PRODUCTS)]}" for n in range(200)]
    embedding_ms = []
    for text in probe:
        began = time.perf_counter()
        embeddings.embed_documents([text])
        embedding_ms.append((time.perf_counter() - began) * MS)
    console.print(
        f"{args.embedder} embedding of one question: p50 {statistics.median(embedding_ms):.3f} ms "
        f"(included in the semantic and miss latencies)"
    )
    for mode in args.modes.split(","):
        if mode == "embedded":
            with tempfile.TemporaryDirectory(prefix="cache-bench-") as path:
                rows = run_mode(
                    mode, sizes, lookups, verifier, lambda: SemanticCache(path=path, **options)
                )
        elif mode == "server":
            with chroma_server() as port:
                rows = run_mode(
                    mode,
                    sizes,
                    lookups,
                    verifier,
                    lambda: SemanticCache(mode="server", port=port, **options),
                )
        else:
            raise SystemExit(f"unknown mode {mode!r}")
        console.print(_table(mode, rows, verifier, args.embedder))


if __name__ == "__main__":
    main()
