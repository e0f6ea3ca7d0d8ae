"""The gateway's one path for every chat request, whatever wire format it came in.

    authenticate -> admit (key active, model allowed, key's rpm, key's budget: reserve the
    worst case) -> experiment arm -> the model's FallbackChatModel (fallback, breakers, limits,
    [llm.budget], stats) -> answer or stream -> settle: key spend, audit row, metrics

`Gateway` holds the `agency.Agency` and what the gateway adds: the key store, the audit log,
the experiments and the metrics. Model names: an entry's name (that entry first, then the
rest of the chain when ``[llm.fallback]`` is on), a ``"provider:model"`` spec,
``role:<name>`` (the role's chain from ``[llm.routing]``) and ``auto`` (the `TaskRouter`
picks the role from the last user message).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage

from agency.chat_models import merge_chunks
from agency.errors import AgencyError
from agency.gateway._errors import GatewayError, from_exception

if TYPE_CHECKING:
    from agency.app import Agency
    from agency.gateway._openai import ChatCall
    from agency.gateway._tracing import Tracing
    from agency.gateway.audit import AuditLog
    from agency.gateway.config import ArmConfig, GatewayConfig
    from agency.gateway.keys import KeyStore, VirtualKey
    from agency.gateway.metrics import GatewayMetrics
    from agency.resilience.fallback import FallbackChatModel

__all__ = ["Answer", "Gateway", "Ticket", "new_request_id"]

_log = logging.getLogger("agency.gateway")


_ID_PREFIX = secrets.token_hex(6)
_ID_COUNTER = itertools.count(int.from_bytes(secrets.token_bytes(3)))


def new_request_id() -> str:
    """``req_`` and 24 hex digits: this process's random prefix and a counter (unique without
    a system call per request; request ids are names, not secrets)."""
    return f"req_{_ID_PREFIX}{next(_ID_COUNTER) & 0xFFFFFFFFFFFF:012x}"


@dataclass(slots=True)
class Ticket:
    """One admitted request on its way: who asked, what for, and what it has cost so far."""

    request_id: str
    endpoint: str
    model_asked: str
    started: float
    key: VirtualKey | None = None
    user: str | None = None
    stream: bool = False
    experiment: str | None = None
    arm: str | None = None
    role: str | None = None
    reservation: Any = None
    wall_start_ns: int = 0
    trace_parent: Any = None
    route: dict[str, Any] = field(default_factory=dict)
    """The provider and model being asked right now (a stream's headers name them)."""
    prompt: str | None = None

    def __post_init__(self) -> None:
        if not self.wall_start_ns:  # the wall clock when `started` (perf_counter) was read
            ago = time.perf_counter() - self.started
            self.wall_start_ns = time.time_ns() - int(ago * 1e9)


@dataclass(slots=True)
class Answer:
    """What a non-streamed chat call produced, and where it came from."""

    message: AIMessage
    provider: str | None
    model: str | None
    attempts: int
    cost: float | None
    cache: str

    def headers(self) -> dict[str, str]:
        """``x-agency-*`` headers: who answered, attempts, cost, cache."""
        out = {"x-agency-attempts": str(self.attempts), "x-agency-cache": self.cache}
        if self.provider:
            out["x-agency-provider"] = self.provider
        if self.model:
            out["x-agency-model"] = self.model
        if self.cost is not None:
            out["x-agency-cost-usd"] = f"{self.cost:.8f}"
        return out


def _route_of(message: Any) -> tuple[str | None, str | None, int, float | None]:
    meta = message.response_metadata
    route = meta.get("agency") or {}
    return (
        route.get("provider"),
        route.get("model"),
        int(route.get("attempts") or 0),
        meta.get("cost"),
    )


class Gateway:
    """The gateway's state: the agency, keys, audit, experiments, metrics (see module doc)."""

    def __init__(
        self,
        agency: Agency,
        config: GatewayConfig,
        *,
        auth: bool | None = None,
        keys: KeyStore | None = None,
        audit: AuditLog | None = None,
        master_key: str | None = None,
        config_path: str | None = None,
        clock: Callable[[], float] = time.time,
        tracing: Tracing | None = None,
    ) -> None:
        from agency.gateway.audit import AuditLog
        from agency.gateway.experiments import Experiments
        from agency.gateway.keys import KeyStore
        from agency.gateway.metrics import GatewayMetrics

        self.agency = agency
        self.config = config
        self.auth = config.auth if auth is None else auth
        self.keys: KeyStore = keys if keys is not None else KeyStore(config.path("keys.sqlite"))
        self.audit: AuditLog = audit if audit is not None else AuditLog(config.path("audit.sqlite"))
        self.experiments = Experiments(config.experiments)
        self.metrics: GatewayMetrics = GatewayMetrics(self)
        self.tracing: Tracing | None = None
        """Spans per request when ``[gateway] otel`` is on (or a `Tracing` is given)."""
        if tracing is not None:
            self.tracing = tracing
        elif config.otel:
            from agency.gateway._tracing import Tracing

            self.tracing = Tracing()
        master = master_key if master_key is not None else os.environ.get("AGENCY_MASTER_KEY")
        self.master_key: str | None = master or None
        self.config_path = config_path
        self.started_at = clock()
        self._clock = clock
        self._models: dict[Any, FallbackChatModel] = {}
        self._named: dict[str, tuple[FallbackChatModel, str | None]] = {}
        self._embedders: dict[str, Any] = {}
        self._budgets: dict[str, Any] = {}
        self._limiters: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.in_flight = 0

    # -- models ---------------------------------------------------------------------------
    def model_names(self) -> list[str]:
        """What ``GET /v1/models`` lists: entries, ``role:<name>`` chains and ``auto``."""
        names = self._entries()
        names += [f"role:{r}" for r in self.agency.config.llm.routing]
        return [*names, "auto"]

    def _cached(self, key: Any, make: Callable[[], FallbackChatModel]) -> FallbackChatModel:
        found = self._models.get(key)
        if found is None:
            try:
                found = make()
            except AgencyError as exc:
                raise GatewayError(
                    404,
                    f"model {key[1]!r} is not available here: {exc}; GET /v1/models lists what is",
                    "invalid_request_error",
                    param="model",
                    code="model_not_found",
                ) from exc
            self._models[key] = found
        return found

    def model_for(
        self, name: str, messages: list[BaseMessage], arm: ArmConfig | None = None
    ) -> tuple[FallbackChatModel, str | None]:
        """The chat model for the model name ``name`` (or the experiment arm's chain) and the
        role it counts under."""
        ag = self.agency
        if arm is None and (hit := self._named.get(name)) is not None:
            return hit
        if arm is not None:
            return self._cached(
                ("arm", name, tuple(arm.chain)), lambda: ag.chat_model(models=arm.chain)
            ), None
        if name == "auto":
            text = next((m.text for m in reversed(messages) if isinstance(m, HumanMessage)), "")
            role = ag.router().route(text).role
            chain_role = role if role in ag.config.llm.routing else None
            return self._cached(("role", role), lambda: ag.chat_model(role=chain_role)), role
        if name.startswith("role:"):
            role = name[5:]
            if role not in ag.config.llm.routing:
                known = ", ".join(f"role:{r}" for r in ag.config.llm.routing) or "none"
                raise GatewayError(
                    404,
                    f"no role {role!r} in [llm.routing] (known: {known})",
                    "invalid_request_error",
                    param="model",
                    code="model_not_found",
                )
            found: tuple[FallbackChatModel, str | None]
            found = self._cached(("role", role), lambda: ag.chat_model(role=role)), role
        elif name in self._entries():
            rest = [n for n in ag.chain() if n != name] if ag.config.llm.fallback.enabled else []
            found = self._cached(("entry", name), lambda: ag.chat_model(models=[name, *rest])), None
        elif ":" in name:
            found = self._cached(("spec", name), lambda: ag.chat_model(models=[name])), None
        else:
            raise self._unknown(name)
        self._named[name] = found  # a name means the same model until a reload
        return found

    def _entries(self) -> list[str]:
        ag = self.agency
        return [e.name for e in ag.config.llm.ordered() if e.name not in ag.unconfigured]

    def _unknown(self, name: str) -> GatewayError:
        return GatewayError(
            404,
            f'unknown model {name!r}: use one of {self.model_names()} or a "provider:model" spec',
            "invalid_request_error",
            param="model",
            code="model_not_found",
        )

    def clear_models(self) -> None:
        """Forget the built models (after a reload)."""
        self._models = {}
        self._named = {}
        self._embedders = {}

    def reload(self) -> None:
        """Re-read the configuration file (else the environment) into a new `Agency` and
        switch to it; requests in flight finish on the old one. Breakers and limiters start
        afresh; the key store, audit log and auth setting stay (a new ``data_dir`` needs a
        restart). A bad file raises and the running configuration stays."""
        from agency.app import Agency
        from agency.gateway.config import gateway_config
        from agency.gateway.experiments import Experiments

        new = Agency.from_config(self.config_path) if self.config_path else Agency.from_env()
        table = gateway_config(new.config).model_copy(update={"data_dir": self.config.data_dir})
        old = self.agency
        self.agency, self.config = new, table
        self.experiments = Experiments(table.experiments)
        self.clear_models()
        old.stop_health_checks()
        if table.health_interval_s > 0:
            new.start_health_checks(table.health_interval_s)

    # -- admission ------------------------------------------------------------------------
    def authenticate(self, secret: str | None) -> VirtualKey | None:
        """The caller's key, or None when auth is off; `GatewayError` 401/403 otherwise."""
        if not self.auth:
            return None
        if not secret:
            raise GatewayError(
                401,
                "no API key: send 'Authorization: Bearer <key>' or "
                "'x-api-key: <key>' with a key from `agency keys create`",
                "invalid_request_error",
                code="invalid_api_key",
                failure="auth",
            )
        key = self.keys.verify(secret)
        if key is None:
            raise GatewayError(
                401,
                "invalid API key",
                "invalid_request_error",
                code="invalid_api_key",
                failure="auth",
            )
        status = key.status(self._clock())
        if status != "active":
            raise GatewayError(
                403,
                f"key {key.id} is {status}",
                "permission_error",
                code=f"key_{status}",
                failure="auth",
            )
        return key

    def admit(self, ticket: Ticket) -> None:
        """Model allowed and the key's rate limit; raise `GatewayError` 403/429 otherwise."""
        key = ticket.key
        if key is None:
            return
        if not key.allows(ticket.model_asked):
            raise GatewayError(
                403,
                f"key {key.id} may not use model {ticket.model_asked!r} "
                f"(allowed: {', '.join(key.models)})",
                "permission_error",
                param="model",
                code="model_not_allowed",
                failure="auth",
            )
        if key.rpm is not None:
            limiter = self._limiter(key)
            if not limiter.try_acquire():
                raise GatewayError(
                    429,
                    f"key {key.id} is over its limit of {key.rpm} requests per minute",
                    "rate_limit_error",
                    code="rate_limit_exceeded",
                    retry_after=limiter.wait_time(),
                    failure="rate_limit",
                )

    def _limiter(self, key: VirtualKey) -> Any:
        found = self._limiters.get(key.id)
        if found is None:
            from agency.resilience.limits import RateLimiter, RateLimitPolicy

            with self._lock:
                found = self._limiters.setdefault(
                    key.id, RateLimiter(RateLimitPolicy(rpm=key.rpm), name=key.id)
                )
        return found

    def _budget(self, key: VirtualKey) -> Any:
        found = self._budgets.get(key.id)
        if found is None:
            assert key.budget_usd is not None
            # Shared by every worker when [state] is Redis (agency serve --workers N).
            made = self.agency.budget(f"key:{key.id}", key.budget_usd, spent_usd=key.spent_usd)
            with self._lock:
                found = self._budgets.setdefault(key.id, made)
        return found

    def reserve(self, ticket: Ticket, model: FallbackChatModel, call: ChatCall) -> None:
        """Hold the call's worst-case cost against the key's budget (429 when it does not fit)."""
        key = ticket.key
        if key is None or key.budget_usd is None:
            return
        worst = self.agency.worst_case(model, call.messages, call.params.get("max_tokens"))
        if worst is None:
            raise GatewayError(
                403,
                f"key {key.id} has a budget, and a model of this chain has "
                "no known price, so its cost cannot be bounded: pick a priced "
                "model or a key without a budget",
                "permission_error",
                code="unpriced_model",
                failure="budget",
            )
        try:
            ticket.reservation = self._budget(key).reserve(worst)
        except AgencyError as exc:
            raise from_exception(exc) from exc

    # -- calls ----------------------------------------------------------------------------
    def open(
        self,
        endpoint: str,
        call: ChatCall,
        key: VirtualKey | None,
        request_id: str,
        started: float,
    ) -> tuple[Ticket, FallbackChatModel]:
        """Admit ``call`` (arrived at ``started``, `time.perf_counter`) and pick its model
        (experiment arm included)."""
        ticket = Ticket(
            request_id,
            endpoint,
            call.model,
            started,
            key=key,
            user=call.user,
            stream=call.stream,
        )
        self.admit(ticket)
        arm = None
        exp = self.experiments.match(call.model)
        if exp is not None:
            arm = self.experiments.assign(
                exp, key_id=key.id if key else None, user=call.user, request_id=request_id
            )
            ticket.experiment, ticket.arm = exp.name, arm.name
        model, ticket.role = self.model_for(call.model, call.messages, arm)
        self.reserve(ticket, model, call)
        if self.config.log_prompts or (key is not None and key.log_prompts):
            ticket.prompt = "\n".join(f"{m.type}: {m.text}" for m in call.messages)
        return ticket, model

    async def answer(self, ticket: Ticket, model: FallbackChatModel, call: ChatCall) -> Answer:
        """The whole answer of a non-streamed call (settled and recorded)."""
        self.in_flight += 1
        self.metrics.in_flight.inc()
        try:
            cache_key = self._cache_key(model, call)
            cached = await self._cache_lookup(cache_key)
            if cached is not None:
                answer = Answer(cached, "cache", None, 0, 0.0, "hit")
            else:
                chunks = [
                    c async for c in model.achunks(call.messages, stream=False, **call.params)
                ]
                message = merge_chunks(chunks).generations[0].message
                assert isinstance(message, AIMessage)
                provider, spec, attempts, cost = _route_of(message)
                cache = "miss" if self._cache_on() else "off"
                answer = Answer(message, provider, spec, attempts, cost, cache)
                await self._cache_update(cache_key, message)
        except BaseException as exc:
            self.settle(ticket, None, error=exc)
            raise
        finally:
            self.in_flight -= 1
            self.metrics.in_flight.dec()
        self.settle(ticket, answer)
        return answer

    async def stream(
        self, ticket: Ticket, model: FallbackChatModel, call: ChatCall
    ) -> AsyncIterator[Any]:
        """The answer's `AIMessageChunk`\\ s; settled and recorded when the stream ends (or
        fails, or the client goes away)."""
        self.in_flight += 1
        self.metrics.in_flight.inc()
        answer: Answer | None = None
        error: BaseException | None = None
        last: Any = None
        try:
            cached = await self._cache_lookup(self._cache_key(model, call))
            if cached is not None:
                answer = Answer(cached, "cache", None, 0, 0.0, "hit")
                ticket.route.update(provider="cache", cache="hit")
                yield AIMessageChunk(
                    content=cached.content,
                    usage_metadata=cached.usage_metadata,
                    response_metadata=cached.response_metadata,
                )
                return
            cache = ticket.route["cache"] = "miss" if self._cache_on() else "off"
            text: list[str] = []
            usage: Any = None
            chunks = model.achunks(call.messages, stream=True, route=ticket.route, **call.params)
            async for chunk in chunks:
                message: Any = chunk.message
                if message.usage_metadata is not None:
                    usage = message.usage_metadata
                if isinstance(message.content, str) and message.content:
                    text.append(message.content)
                last = message
                yield message
            assert last is not None
            provider, spec, attempts, cost = _route_of(last)
            whole = AIMessage(content="".join(text), usage_metadata=usage)
            answer = Answer(whole, provider, spec, attempts, cost, cache)
        except BaseException as exc:
            error = exc
            raise
        finally:
            self.in_flight -= 1
            self.metrics.in_flight.dec()
            # A stream cut after the provider began answering may have cost something.
            self.settle(ticket, answer, error=error, partial=last is not None)

    # -- the semantic cache ([llm.cache]), with LangChain's keys so Python callers share it ---
    def _cache_on(self) -> bool:
        return bool(self.agency.config.section("llm.cache").enabled)

    def _cache_key(self, model: FallbackChatModel, call: ChatCall) -> tuple[str, str] | None:
        """``(prompt, llm_string)`` as LangChain keys its cache; None when the cache is off or
        the call has tools (their answers are actions, not text to reuse)."""
        if not self._cache_on() or call.params.get("tools"):
            return None
        from langchain_core.load import dumps

        llm_string = model._get_llm_string(stop=call.params.get("stop"), **call.params)
        return dumps(call.messages), llm_string

    async def _cache_lookup(self, key: tuple[str, str] | None) -> AIMessage | None:
        if key is None:
            return None
        found = await self.agency.cache().alookup(*key)
        if not found:
            return None
        message = found[0].message
        return AIMessage(
            content=message.content,
            usage_metadata=message.usage_metadata,
            response_metadata={"finish_reason": "stop"},
        )

    async def _cache_update(self, key: tuple[str, str] | None, message: AIMessage) -> None:
        if key is None:
            return
        from langchain_core.outputs import ChatGeneration

        await self.agency.cache().aupdate(*key, [ChatGeneration(message=message)])

    # -- settling -------------------------------------------------------------------------
    def settle(
        self,
        ticket: Ticket,
        answer: Answer | None,
        *,
        error: BaseException | None = None,
        partial: bool = False,
    ) -> None:
        """Close the request's books: the key's spend, the audit row, the metrics.

        A key's hold is settled at the answer's cost; a request that failed before any
        provider answered is released (nothing was billed); one cut after a provider began
        (``partial``) keeps its hold as spent, since its real cost is unknown."""
        from agency.gateway.audit import AuditRecord

        latency_ms = (time.perf_counter() - ticket.started) * 1000
        cost = answer.cost if answer is not None else None
        if ticket.reservation is not None:
            if answer is None and not partial:
                ticket.reservation.release()
            else:
                ticket.reservation.settle(cost)
            ticket.reservation = None
        if ticket.key is not None and cost:
            self.keys.add_spend(ticket.key.id, cost)
        status, failure = 200, None
        if isinstance(error, asyncio.CancelledError | GeneratorExit):
            status, failure = 499, "client_closed"
        elif error is not None:
            mapped = from_exception(error)
            status, failure = mapped.status, mapped.failure
        usage: Any = (answer.message.usage_metadata if answer is not None else None) or {}
        cached = (usage.get("input_token_details") or {}).get("cache_read")
        key = ticket.key
        self._record(
            AuditRecord(
                request_id=ticket.request_id,
                time=self._clock() - latency_ms / 1000,
                key_id=key.id if key else None,
                key_name=key.name if key else None,
                endpoint=ticket.endpoint,
                model_asked=ticket.model_asked,
                provider=answer.provider if answer else None,
                model=answer.model if answer else None,
                attempts=answer.attempts if answer else 0,
                input_tokens=usage.get("input_tokens"),
                output_tokens=usage.get("output_tokens"),
                cached_tokens=cached,
                cost_usd=cost,
                latency_ms=latency_ms,
                cache_hit=answer is not None and answer.cache == "hit",
                stream=ticket.stream,
                status=status,
                error_kind=failure,
                experiment=ticket.experiment,
                arm=ticket.arm,
                user=ticket.user,
                prompt=ticket.prompt,
                response=answer.message.text if answer is not None and ticket.prompt else None,
            )
        )
        self.metrics.observe(ticket, answer, status, failure, latency_ms / 1000)
        if self.tracing is not None:
            self.tracing.record(ticket, answer, status, failure)

    def _record(self, record: Any) -> None:
        from agency.gateway.audit import AuditLogError

        try:
            self.audit.record(record)
        except AuditLogError as exc:  # shutting down with a stream still open: say so, go on
            _log.warning("audit row of %s not written: %s", record.request_id, exc)

    def refused(
        self,
        endpoint: str,
        model: str,
        key: VirtualKey | None,
        request_id: str,
        err: GatewayError,
        started: float,
    ) -> None:
        """Record a request refused before any provider was called (auth, limits, budget)."""
        ticket = Ticket(request_id, endpoint, model, started, key=key)
        self.settle(ticket, None, error=err)

    def request_row(self, request_id: str) -> dict[str, Any] | None:
        """The audit row of ``request_id`` (flushed first), or None."""
        self.audit.flush()
        return self.audit.get(request_id)

    def close(self) -> None:
        """Flush and close the audit log and the key store."""
        self.audit.close()
        self.keys.close()
