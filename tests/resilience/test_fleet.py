"""Four OS processes as one `Agency`: a real redis-server (started here on 127.0.0.1, a free
port) holds their breakers, limiters and budget; the fake OpenAI counts what reaches it.

Each fleet test runs the same fleet twice where it shows something: with ``[state] backend =
"redis"`` the limit holds for the fleet; with the in-process default each process keeps its
own and the fleet goes past it (the counterfactual, measured, not assumed).
"""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from fakes.openai_server import FakeOpenAI
from servers import RedisServer

from agency import Agency, AgencyConfig
from agency.errors import AgencyError
from agency.resilience.breaker import BreakerPolicy

WORKER = Path(__file__).with_name("_fleet_worker.py")
SECRET = "sk-fleet-secret-0123456789"
PROCESSES = 4


# These tests are about sharing, not about a slow store: on a loaded 2-core CI box a burst of
# async admissions can wait on the event loop past the default 0.25 s and make Redis look down.
ROOMY = {"timeout_s": 2.0}


def _config(fake: FakeOpenAI, state: dict[str, Any] | None, **llm: Any) -> dict[str, Any]:
    entry = {
        "name": "p0",
        "provider": "openai",
        "api_key": SECRET,
        "base_url": fake.base_url,
        "text_model": "gpt-4o-mini",
        **llm.pop("entry", {}),
    }
    fallback = {"max_attempts": 1, "max_wait_ms": 0, "retry_delay_ms": 0}
    return {"llm": {"providers": [entry], "fallback": fallback, **llm}, "state": state or {}}


def _fleet(tmp_path: Path, spec: dict[str, Any], seconds: float) -> list[dict[str, Any]]:
    """Run ``PROCESSES`` workers together; their JSON reports."""
    barrier = tmp_path / f"barrier-{time.monotonic_ns()}"
    barrier.mkdir()
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), json.dumps(spec), str(seconds), str(barrier)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(PROCESSES)
    ]
    deadline = time.monotonic() + 60
    while len(list(barrier.glob("ready-*"))) < PROCESSES:
        assert time.monotonic() < deadline, "the fleet did not start"
        assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        time.sleep(0.02)
    (barrier / "go").touch()
    reports = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        reports.append(json.loads(out.strip().splitlines()[-1]))
    return reports


def _sent(fake: FakeOpenAI) -> int:
    return len(fake.bodies("/chat/completions"))


def _ok(reports: list[dict[str, Any]]) -> int:
    return sum(r["outcomes"].get("ok", 0) for r in reports)


def test_one_budget_for_four_processes_is_never_overspent(
    openai_fake: FakeOpenAI, redis_server: RedisServer, tmp_path: Path
) -> None:
    limit = 0.0004  # about 12 worst-case holds of a 50-token gpt-4o-mini answer
    spec = {"max_calls": 40}
    shared = {
        "config": _config(
            openai_fake,
            {"backend": "redis", "url": redis_server.url, **ROOMY},
            budget={"max_cost_total": limit},
        ),
        **spec,
    }
    reports = _fleet(tmp_path, shared, seconds=20)
    spent = redis.Redis.from_url(redis_server.url).hget("agency:budget", "spent")
    assert spent is not None and int(spent) / 1e9 <= limit
    # One budget: each process read the fleet's spending as it ended, not its own share.
    final = int(spent) / 1e9
    assert (
        all(r["spent"] <= final + 1e-12 for r in reports)
        and min(r["spent"] for r in reports) > final / 2
    )
    refused = sum(r["outcomes"].get("BudgetExceeded", 0) for r in reports)
    assert _ok(reports) > 0 and refused > 0 and _ok(reports) + refused == 4 * 40
    assert _sent(openai_fake) == _ok(reports)  # every refusal came before a request

    openai_fake.reset()
    alone = {"config": _config(openai_fake, None, budget={"max_cost_total": limit}), **spec}
    reports = _fleet(tmp_path, alone, seconds=20)
    assert sum(r["spent"] for r in reports) > 2 * limit  # each process spends "its" budget


def test_four_processes_under_one_rpm(
    openai_fake: FakeOpenAI, redis_server: RedisServer, tmp_path: Path
) -> None:
    rpm, seconds = 20, 3.0
    most = rpm + rpm * seconds / 60 + 1  # the bucket's burst, its refill, the window edge
    state = {"backend": "redis", "url": redis_server.url, **ROOMY}
    shared = {"config": _config(openai_fake, state, entry={"rpm": rpm}), "pause_s": 0.01}
    reports = _fleet(tmp_path, shared, seconds)
    assert rpm <= _sent(openai_fake) <= most
    assert _sent(openai_fake) == _ok(reports)  # refused calls were never sent
    # Refused by the shared limiter (one entry: "all providers failed", a RateLimited inside).
    assert all(set(r["outcomes"]) == {"ok", "AllProvidersFailed"} for r in reports), reports

    openai_fake.reset()
    alone = {"config": _config(openai_fake, None, entry={"rpm": rpm}), "pause_s": 0.01}
    _fleet(tmp_path, alone, seconds)
    assert _sent(openai_fake) >= PROCESSES * rpm  # four buckets, four times the limit


def test_a_dead_provider_is_probed_once_per_cooldown_by_the_whole_fleet(
    openai_fake: FakeOpenAI, redis_server: RedisServer, tmp_path: Path
) -> None:
    seconds, breaker = 3.0, {"consecutive_failures": 3, "cooldown_s": 0.5, "max_cooldown_s": 4}
    # Probes after 0.5 s, then 1 s, then 2 s of cooldown: at most 3 within the run.
    probes = 3
    state = {"backend": "redis", "url": redis_server.url, **ROOMY}
    shared = {"config": _config(openai_fake, state), "breaker": breaker, "pause_s": 0.02}
    openai_fake.script(openai_fake.Fail(503, times=10_000))
    _fleet(tmp_path, shared, seconds)
    # Three failures open it; calls already on the wire when it opened may land too.
    assert 3 <= _sent(openai_fake) <= 3 + (PROCESSES - 1) + probes
    snapshot = redis.Redis.from_url(redis_server.url).hgetall("agency:breaker:p0")
    assert snapshot[b"st"] in (b"open", b"half_open") and int(snapshot[b"trips"]) >= 2

    openai_fake.reset()
    openai_fake.script(openai_fake.Fail(503, times=10_000))
    alone = {"config": _config(openai_fake, None), "breaker": breaker, "pause_s": 0.02}
    _fleet(tmp_path, alone, seconds)
    assert _sent(openai_fake) >= PROCESSES * 3  # each process found it dead on its own


def test_calls_go_on_while_redis_is_down_and_the_budget_refuses(
    openai_fake: FakeOpenAI, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    state = {"backend": "redis", "url": redis_server.url, "timeout_s": 0.2, "retry_s": 0.3}
    budgeted = Agency(
        AgencyConfig.from_dict(_config(openai_fake, state, budget={"max_cost_total": 1.0}))
    ).chat_model()
    free = Agency(AgencyConfig.from_dict(_config(openai_fake, state, entry={"rpm": 100})))
    assert budgeted.invoke("hi", max_tokens=20).text and free.chat_model().invoke("hi").text
    redis_server.stop()
    start = time.monotonic()
    assert free.chat_model().invoke("hi").text  # limiter and breaker fail open
    with pytest.raises(AgencyError, match="store is unreachable"):
        budgeted.invoke("hi", max_tokens=20)  # the budget fails closed
    assert time.monotonic() - start < 1.5  # nothing waits on the dead store for long
    assert any("unreachable" in r.getMessage() for r in caplog.records)
    redis_server.start()  # same port, empty: the fleet's state starts over
    time.sleep(0.35)  # retry_s: the store is tried again
    assert budgeted.invoke("hi", max_tokens=20).text
    assert free.health()["p0"]["limits"]["shared"] is True
    fleet = free.stats().snapshot()["fleet"]["p0"]
    assert fleet["calls"] >= 1  # counted in Redis again


def test_api_keys_never_reach_redis(
    openai_fake: FakeOpenAI, redis_server: RedisServer, tmp_path: Path
) -> None:
    seen: list[bytes] = []
    ready = threading.Event()

    def monitor() -> None:
        with socket.create_connection(("127.0.0.1", redis_server.port)) as conn:
            conn.sendall(b"MONITOR\r\n")
            conn.settimeout(0.5)
            ready.set()
            while True:
                try:
                    data = conn.recv(65536)
                except TimeoutError:
                    return
                if not data:
                    return
                seen.append(data)

    watcher = threading.Thread(target=monitor)
    watcher.start()
    ready.wait(5)
    state = {"backend": "redis", "url": redis_server.url, **ROOMY}
    config = _config(openai_fake, state, entry={"rpm": 100}, budget={"max_cost_total": 1.0})
    model = Agency(AgencyConfig.from_dict(config)).chat_model()
    for _ in range(3):
        model.invoke("Say hello", max_tokens=20)
    watcher.join(10)
    traffic = b"".join(seen)
    assert b"agency:limiter:p0" in traffic and b"agency:budget" in traffic  # it saw the calls
    assert SECRET.encode() not in traffic and b"Say hello" not in traffic
    client = redis.Redis.from_url(redis_server.url)
    dump = {
        b"hash": client.hgetall,
        b"list": lambda k: client.lrange(k, 0, -1),
        b"string": client.get,  # (the notes of the groups of writes Redis ran: bitmaps)
    }
    stored = b"".join(repr(dump[client.type(k)](k)).encode() for k in client.scan_iter())
    assert stored and SECRET.encode() not in stored


def test_breaker_policy_is_the_agencys(openai_fake: FakeOpenAI, redis_server: RedisServer) -> None:
    state = {"backend": "redis", "url": redis_server.url, **ROOMY}
    agency = Agency(
        AgencyConfig.from_dict(_config(openai_fake, state)),
        breaker_policy=BreakerPolicy(consecutive_failures=1, cooldown_s=30),
    )
    openai_fake.script(openai_fake.Fail(503))
    with pytest.raises(AgencyError):
        agency.chat_model().invoke("hi")
    other = Agency(AgencyConfig.from_dict(_config(openai_fake, state)))
    # The verdict is written after the call, off its path (within a few ms): seen by a
    # second Agency.
    deadline = time.monotonic() + 2
    while other.health()["p0"]["breaker"]["state"] != "open":
        assert time.monotonic() < deadline
        time.sleep(0.01)


async def test_async_calls_are_admitted_by_the_fleet_too(
    openai_fake: FakeOpenAI, redis_server: RedisServer
) -> None:
    """`ainvoke` awaits its admission (redis.asyncio): two Agencies, 40 concurrent calls,
    one budget and one rpm between them."""
    import asyncio

    state = {"backend": "redis", "url": redis_server.url, **ROOMY}
    config = _config(openai_fake, state, entry={"rpm": 15}, budget={"max_cost_total": 1.0})
    models = [Agency(AgencyConfig.from_dict(config)).chat_model() for _ in range(2)]
    outcomes = await asyncio.gather(
        *(models[i % 2].ainvoke("hi", max_tokens=20) for i in range(40)), return_exceptions=True
    )
    ok = [o for o in outcomes if not isinstance(o, BaseException)]
    assert len(ok) == 15 == _sent(openai_fake)  # the rpm bucket's burst, for both together
    assert all(isinstance(o, AgencyError) for o in outcomes if isinstance(o, BaseException))
    client = redis_server.client()
    deadline = time.monotonic() + 2
    while int(client.hget("agency:budget", "open") or 0) != 0:  # every hold settled
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    assert int(client.hget("agency:budget", "reserved") or 0) == 0
    assert 0 < int(client.hget("agency:budget", "spent") or 0) / 1e9 <= 1.0


@pytest.mark.parametrize("packer", ["hiredis", "redis-py"])
def test_the_stores_own_connections_answer_and_outlive_a_server_hangup(
    packer: str,
    redis_server: RedisServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Scripts go on the store's own connections (one for sync calls, a few per event loop),
    packed by hiredis or, without it, by redis-py: the same answers. A connection the server
    closed while it sat idle (a restart, an idle timeout) is replaced before it is used, so
    the next call is answered instead of finding the store "down"."""
    import asyncio

    from agency.resilience import _conns
    from agency.resilience._store import RedisState, StatePolicy

    if packer == "redis-py":
        monkeypatch.setattr(_conns, "_hiredis_pack", None)
    monkeypatch.setattr(_conns, "IDLE_CHECK_S", 0.05)
    store = RedisState(StatePolicy(backend="redis", url=redis_server.url))
    key = (store.key("budget"),)

    def reserve(nanos: int) -> list[bytes]:
        return store.run("BUDGET", key, ("reserve", nanos, "", -1, 10**9))

    async def areserve(nanos: int) -> list[bytes]:
        return await store.arun("BUDGET", key, ("reserve", nanos, "", -1, 10**9))

    def hang_up() -> None:
        time.sleep(0.1)  # idle past IDLE_CHECK_S
        killed = redis_server.client().client_kill_filter(_type="normal", skipme=True)
        assert killed >= 1
        time.sleep(0.05)

    async def run_async() -> list[list[bytes]]:
        first = await areserve(3 * 10**8)
        hang_up_task = asyncio.to_thread(hang_up)  # the loop runs meanwhile and sees the EOF
        await hang_up_task
        return [first, await areserve(3 * 10**8)]

    with caplog.at_level(logging.WARNING, logger="agency.state"):
        assert reserve(2 * 10**8) == []
        hang_up()
        assert reserve(1 * 10**8) == []  # answered on a new connection
        assert asyncio.run(run_async()) == [[], []]
        refused = reserve(2 * 10**8)  # 0.9 of 1.0 held: the fleet's one budget says no
    assert [_text(v) for v in refused] == ["total", "1000000000", "100000000"]
    ours = [r for r in caplog.records if str(redis_server.port) in r.getMessage()]
    assert store.up and not ours  # (other tests' stores may still be warning about theirs)
    assert int(redis_server.client().hget("agency:budget", "reserved")) == 9 * 10**8


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def test_an_async_admission_carries_the_queued_writes_once_even_when_cancelled(
    redis_server: RedisServer,
) -> None:
    """`aadmit` takes this process's queued writes along (one round trip, as sync calls do).
    A caller cancelled while the command is in flight does not make them count twice: the
    command goes on, and the writes are not queued again."""
    import asyncio

    from agency.resilience._store import RedisState, StatePolicy
    from agency.resilience.budget import BudgetPolicy
    from agency.resilience.limits import RateLimitPolicy
    from agency.resilience.shared import Fleet, SharedBreaker, SharedBudget, SharedLimiter

    store = RedisState(StatePolicy(backend="redis", url=redis_server.url, timeout_s=2.0))
    budget = SharedBudget(store, BudgetPolicy(max_cost_total=1.0))
    fleet = Fleet(
        SharedBreaker(store, BreakerPolicy(), name="p"),
        SharedLimiter(store, RateLimitPolicy(rpm=100), name="p"),
    )
    client = redis_server.client()

    def spent() -> float:
        return int(client.hget("agency:budget", "spent") or 0) / 1e9

    budget.reserve(0.3).settle(0.25)  # queued, not sent
    assert store.pending == 1 and spent() == 0
    verdict = await fleet.aadmit(10, 0.1, None, budget)
    assert verdict is not None and verdict.kind == "ok"
    assert store.pending == 0 and spent() == pytest.approx(0.25)  # it went with the admission
    verdict.reservation.release()  # (this call is not made)

    budget.reserve(0.2).settle(0.125)  # queued, with the release above
    client.execute_command("CLIENT", "PAUSE", 300, "ALL")  # the next command waits in Redis
    caller = asyncio.ensure_future(fleet.aadmit(10, 0.1, None, budget))
    await asyncio.sleep(0.1)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert store.pending == 0  # not queued again ...
    await asyncio.sleep(0.5)  # ... the command went on once Redis took it
    assert store.flush() and spent() == pytest.approx(0.375)  # counted once
    # ... and what it took for a call that never went out is given back: no hold is left
    assert int(client.hget("agency:budget", "reserved") or 0) == 0
    assert int(client.hget("agency:budget", "open") or 0) == 0
    assert budget.snapshot()["released"] >= 1


async def test_a_cancelled_async_admission_gives_back_its_half_open_probe(
    redis_server: RedisServer,
) -> None:
    """A half-open breaker lets one probe through for the fleet. A caller cancelled while
    its admission (which took that probe) waits in Redis never sends the probe: the slot is
    given back, so the next call probes instead of the provider staying unprobed."""
    import asyncio

    from agency.resilience._store import RedisState, StatePolicy
    from agency.resilience.limits import RateLimitPolicy
    from agency.resilience.shared import Fleet, SharedBreaker, SharedLimiter

    store = RedisState(StatePolicy(backend="redis", url=redis_server.url, timeout_s=2.0))
    breaker = SharedBreaker(store, BreakerPolicy(cooldown_s=0.2), name="p")
    fleet = Fleet(breaker, SharedLimiter(store, RateLimitPolicy(rpm=100), name="p"))
    assert (await fleet.aadmit(10, None, None, None)).kind == "ok"  # (connected now)
    breaker.force("open", 0.2)
    await asyncio.sleep(0.3)  # half-open now: one probe for the fleet
    client = redis_server.client()
    client.execute_command("CLIENT", "PAUSE", 300, "ALL")
    caller = asyncio.ensure_future(fleet.aadmit(10, None, None, None))
    await asyncio.sleep(0.1)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    await asyncio.sleep(0.5)  # the admission ran (it took the probe), its answer came back
    assert store.flush()
    verdict = await fleet.aadmit(10, None, None, None)
    assert verdict is not None and verdict.kind == "ok"  # the probe, given back, is this one
    again = await fleet.aadmit(10, None, None, None)
    assert again is not None and again.kind == "breaker"  # one probe at a time, as before


async def test_an_async_admission_gives_up_after_the_stores_timeout(
    redis_server: RedisServer,
) -> None:
    """A Redis that takes the command and does not answer (paused) costs an async caller at
    most ``timeout_s`` (the one deadline on send and answer), the store is marked down, and
    the writes that rode along are queued again; the next call after ``retry_s`` is answered
    on a fresh connection."""
    import asyncio

    store, budget, fleet = _late_fleet(redis_server)  # timeout_s 0.2, retry_s 0.2
    await fleet.aadmit(10, 0.1, None, budget)  # a connection of the loop's, idle now
    budget.reserve(0.2).settle(0.125)  # queued: rides with the next admission
    client = redis_server.client()
    client.execute_command("CLIENT", "PAUSE", 1500, "ALL")
    start = time.monotonic()
    assert await fleet.aadmit(10, 0.1, None, budget) is None  # None: the store is down
    waited = time.monotonic() - start
    assert 0.15 <= waited < 0.6  # the deadline, not the pause (1.5 s)
    assert not store.up and store.pending == 1  # the settlement is queued again
    client.execute_command("CLIENT", "UNPAUSE")
    await asyncio.sleep(0.25)  # retry_s
    verdict = await fleet.aadmit(10, 0.1, None, budget)
    assert verdict is not None and verdict.kind == "ok" and store.up


_BUSY = """
local t = redis.call('TIME')
local start = t[1] * 1000000 + t[2]
repeat t = redis.call('TIME') until t[1] * 1000000 + t[2] - start >= tonumber(ARGV[1])
return 1
"""


def _busy(redis_server: RedisServer, seconds: float) -> threading.Thread:
    """Redis busy for ``seconds`` (a script that runs that long, from another client): a
    command sent meanwhile waits in its socket, and runs once the script ends."""
    client = redis_server.client()
    busy = threading.Thread(target=client.eval, args=(_BUSY, 0, int(seconds * 1e6)))
    busy.start()
    time.sleep(0.05)  # (the script has started)
    return busy


def _books(redis_server: RedisServer) -> dict[str, float]:
    raw = redis_server.client().hgetall("agency:budget")
    return {k.decode(): int(v) / 1e9 for k, v in raw.items()}


def _late_fleet(redis_server: RedisServer) -> tuple[Any, Any, Any]:
    """A store that waits 0.2 s for Redis and rests 0.2 s, a shared budget of $1, and the
    fleet's admission for one entry."""
    from agency.resilience._store import RedisState, StatePolicy
    from agency.resilience.budget import BudgetPolicy
    from agency.resilience.limits import RateLimitPolicy
    from agency.resilience.shared import Fleet, SharedBreaker, SharedBudget, SharedLimiter

    store = RedisState(
        StatePolicy(backend="redis", url=redis_server.url, timeout_s=0.2, retry_s=0.2)
    )
    budget = SharedBudget(store, BudgetPolicy(max_cost_total=1.0))
    fleet = Fleet(
        SharedBreaker(store, BreakerPolicy(), name="p"),
        SharedLimiter(store, RateLimitPolicy(rpm=100), name="p"),
    )
    return store, budget, fleet


def test_an_admission_answered_too_late_counts_its_writes_once_and_gives_back_its_hold(
    redis_server: RedisServer,
) -> None:
    """A busy Redis answers an admission after ``timeout_s``: the caller goes on without it
    (the store is down for ``retry_s``) and its carried writes are queued again, yet Redis
    runs the command once it gets to it. Sent again, those writes are skipped (Redis noted
    their group), so the settlement counts once; and the late answer, read before the next
    command's, gives back the hold that admission took for a call that never went out."""
    store, budget, fleet = _late_fleet(redis_server)
    verdict = fleet.admit(10, 0.1, None, budget)  # connected, the scripts loaded
    assert verdict is not None and verdict.reservation is not None
    verdict.reservation.release()
    hold = budget.reserve(0.3)
    busy = _busy(redis_server, 0.8)
    hold.settle(0.25)  # queued: rides with the admission (the writer thread lingers first)
    start = time.monotonic()
    assert fleet.admit(10, 0.1, None, budget) is None  # the answer did not come in time
    assert time.monotonic() - start < 0.6 and not store.up
    assert store.pending == 1  # the settlement, queued again
    busy.join()  # ... and then Redis ran that admission: the settlement, and a hold taken
    time.sleep(0.25)  # retry_s
    # The writer thread or this call sends the settlement again, and reads the late answer.
    verdict = fleet.admit(10, 0.1, None, budget)
    assert verdict is not None and verdict.reservation is not None
    verdict.reservation.release()
    assert store.flush()
    books = _books(redis_server)
    assert books["spent"] == pytest.approx(0.25)  # once
    assert books["reserved"] == 0 and books["open"] == 0  # no hold left behind
    assert budget.remaining() == pytest.approx(0.75)


async def test_an_async_admission_answered_too_late_counts_once_and_gives_back(
    redis_server: RedisServer,
) -> None:
    """`test_an_admission_answered_too_late_counts_its_writes_once_and_gives_back_its_hold`
    for async callers: the late answer is read off the caller's path (within
    `LATE_ANSWER_S`) and gives back what the admission took."""
    import asyncio

    store, budget, fleet = _late_fleet(redis_server)
    verdict = await fleet.aadmit(10, 0.1, None, budget)  # a connection of the loop's
    assert verdict is not None and verdict.reservation is not None
    verdict.reservation.release()
    hold = budget.reserve(0.3)
    busy = _busy(redis_server, 0.8)
    hold.settle(0.25)
    assert await fleet.aadmit(10, 0.1, None, budget) is None
    assert not store.up and store.pending == 1
    await asyncio.to_thread(busy.join)
    await asyncio.sleep(0.25)  # the late answer is read meanwhile, and retry_s passes
    verdict = await fleet.aadmit(10, 0.1, None, budget)
    assert verdict is not None and verdict.reservation is not None
    verdict.reservation.release()
    assert store.flush()
    books = _books(redis_server)
    assert books["spent"] == pytest.approx(0.25)
    assert books["reserved"] == 0 and books["open"] == 0


async def test_a_half_open_probe_taken_by_an_admission_answered_too_late_is_given_back(
    redis_server: RedisServer,
) -> None:
    """The admission that took a half-open breaker's one probe is answered too late: the
    call is not made, so the probe goes back to the fleet when the late answer comes (in
    Redis, though the store rests then), and the next call probes instead of the provider
    staying unprobed."""
    import asyncio

    from agency.resilience._store import RedisState, StatePolicy
    from agency.resilience.limits import RateLimitPolicy
    from agency.resilience.shared import Fleet, SharedBreaker, SharedLimiter

    store = RedisState(
        StatePolicy(backend="redis", url=redis_server.url, timeout_s=0.2, retry_s=1.0)
    )
    breaker = SharedBreaker(store, BreakerPolicy(cooldown_s=0.2), name="p")
    fleet = Fleet(breaker, SharedLimiter(store, RateLimitPolicy(rpm=100), name="p"))
    assert (await fleet.aadmit(10, None, None, None) or pytest.fail()).kind == "ok"
    breaker.force("open", 0.2)
    await asyncio.sleep(0.3)  # half-open now: one probe for the fleet
    busy = _busy(redis_server, 0.6)
    assert await fleet.aadmit(10, None, None, None) is None  # took the probe; too late
    await asyncio.to_thread(busy.join)
    await asyncio.sleep(0.1)  # the late answer is read (the store rests until ~1.2 s)
    assert not store.up
    await asyncio.sleep(1.0)
    assert store.flush()  # the probe, given back
    verdict = await fleet.aadmit(10, None, None, None)
    assert verdict is not None and verdict.kind == "ok"  # this call probes
    again = await fleet.aadmit(10, None, None, None)
    assert again is not None and again.kind == "breaker"  # one probe at a time, as before


def test_a_forked_child_is_a_process_of_its_own_in_the_fleet(redis_server: RedisServer) -> None:
    """A store made before a fork (an `Agency` built at import time, then
    ``multiprocessing`` with fork): the child gets connections and group numbers of its own,
    so its writes and the parent's, both numbered from the same count, all count, and neither
    sends what the other queued."""
    import os

    store, budget, fleet = _late_fleet(redis_server)
    verdict = fleet.admit(10, 0.1, None, budget)  # the parent's connection, in use
    assert verdict is not None and verdict.reservation is not None
    verdict.reservation.settle(0.125)
    budget.reserve(0.1).release()  # queued when the fork comes: the parent's to send
    pid = os.fork()
    if pid == 0:  # the child: one call, settled, sent
        code = 1
        try:
            mine = fleet.admit(10, 0.1, None, budget)
            if mine is not None and mine.reservation is not None:
                mine.reservation.settle(0.5)
                code = 0 if store.flush() else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    ours = fleet.admit(10, 0.1, None, budget)  # after the child's: same group numbers
    assert ours is not None and ours.reservation is not None
    ours.reservation.settle(0.25)
    assert store.flush()
    books = _books(redis_server)
    assert books["spent"] == pytest.approx(0.125 + 0.5 + 0.25)
    assert books["reserved"] == 0 and books["open"] == 0
    client = redis_server.client()
    notes = list(client.scan_iter("agency:once:*"))
    assert len(notes) == 2 and all(client.ttl(key) > 0 for key in notes)  # each expires
