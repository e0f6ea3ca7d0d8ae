"""`Agency`: the configured providers as one, with fallback, breakers, limits and budgets.

    >>> ag = Agency.from_config("agency.toml")      # or Agency.from_env(), or Agency()
    >>> llm = ag.chat_model(role="code")            # one BaseChatModel over the role's chain
    >>> llm.invoke("...").response_metadata["cost"]
    >>> ag.stats()                                  # per provider and role; a table in notebooks
    >>> ag.memory("notes").remember("...")          # a vector memory namespace of ``[memory]``

An `Agency` owns one `ProviderState` per configured entry (its chat model with the adapter's
retries off, a circuit breaker, a rate limiter fed by the provider's rate-limit headers, its
price), one `Budget`, one `Stats`; every model it hands out shares them. Chains come from
``[llm.routing]`` for a role; otherwise all entries by priority when ``[llm.fallback]`` is
enabled, else the default entry alone. A chain may name entries or ``"provider:model"`` specs.
"""

from __future__ import annotations

import asyncio
import threading
import time
import warnings
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

from langchain_core.caches import BaseCache

from agency.config import AgencyConfig, ProviderEntry, config_from_env, load_config
from agency.errors import ConfigError, ProviderError

if TYPE_CHECKING:
    from langchain_core.messages import BaseMessage

    from agency.embedding_models import AgencyEmbeddings
    from agency.pricing import CostEstimate
    from agency.resilience.balancing import ProviderState
    from agency.resilience.breaker import BreakerPolicy
    from agency.resilience.budget import Budget
    from agency.resilience.fallback import FallbackChatModel
    from agency.resilience.pool import ProviderPool
    from agency.stats import Stats

__all__ = ["Agency"]


class Agency:
    """The configured providers, used as one. See the module docstring."""

    def __init__(
        self,
        config: AgencyConfig | None = None,
        *,
        breaker_policy: BreakerPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        asleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        from agency.resilience.breaker import BreakerPolicy
        from agency.resilience.budget import Budget, BudgetPolicy
        from agency.resilience.policy import FallbackPolicy, FallbackRule
        from agency.resilience.pool import ProviderPool
        from agency.stats import Stats

        self.config = config if config is not None else AgencyConfig()
        llm = self.config.llm
        self._breaker_policy = breaker_policy or BreakerPolicy()
        self._clock, self._sleep = clock, sleep
        fb = llm.fallback
        policy = FallbackPolicy(
            strategy=fb.strategy,
            max_attempts=fb.max_attempts,
            retry_delay_s=fb.retry_delay_ms / 1000,
            max_wait_s=fb.max_wait_ms / 1000,
            fallback=fb.enabled,
            rules=tuple(
                FallbackRule(
                    condition=r.condition,
                    fallback_providers=tuple(r.fallback_providers),
                    retry_original=r.retry_original,
                    retry_delay_s=r.retry_delay_ms / 1000,
                )
                for r in fb.rules
            ),
        )
        self._store = self._state_store()
        b = llm.budget
        budget = None
        if b.max_cost_per_request is not None or b.max_cost_total is not None or b.roles:
            limits = BudgetPolicy(
                max_cost_per_request=b.max_cost_per_request,
                max_cost_total=b.max_cost_total,
                roles=dict(b.roles),
            )
            budget = Budget(limits) if self._store is None else self._shared.SharedBudget(
                self._store, limits
            )  # fmt: skip
        fleet = None if self._store is None else self._shared.SharedStats(self._store)
        self._stats = Stats(clock=clock, sink=None if fleet is None else fleet.record)
        if fleet is not None:
            self._stats.set_fleet(fleet.snapshot)
        self.unconfigured: dict[str, str] = {}
        """Entries left out (e.g. no API key), name -> reason."""
        states: dict[str, ProviderState] = {}
        for entry in llm.ordered():
            try:
                states[entry.name] = self._state_for_entry(entry)
            except ConfigError as exc:
                self.unconfigured[entry.name] = str(exc)
                warnings.warn(
                    f"provider entry {entry.name!r} left out: {exc}", RuntimeWarning, stacklevel=2
                )
        self._pool: ProviderPool = ProviderPool(
            states,
            policy=policy,
            stats=self._stats,
            budget=budget,
            make_state=self._state_for_spec,
            clock=clock,
            sleep=sleep,
            asleep=asleep,
        )
        self._stats.set_state_provider(self._provider_state)
        self._cache: Any = None
        self._memories: dict[str, Any] = {}
        self._memory_lock = threading.Lock()
        self._router: Any = None
        self._health_thread: threading.Thread | None = None
        self._health_stop = threading.Event()

    # -- construction -------------------------------------------------------------------
    def _state_store(self) -> Any:
        """The fleet's Redis (``[state] backend = "redis"``), else None: nothing imported."""
        st = self.config.state
        if st.backend == "memory":
            return None
        from agency.resilience import shared

        self._shared = shared
        # The same fields: [state] as read, with its URL (a secret in the config) in hand.
        policy = shared.StatePolicy(**{**dict(st), "url": st.url.get_secret_value()})
        return shared.RedisState(policy)

    @classmethod
    def from_config(cls, source: str | Path | AgencyConfig, **kwargs: Any) -> Agency:
        """From a TOML file path or an `AgencyConfig`."""
        config = source if isinstance(source, AgencyConfig) else load_config(source)
        return cls(config, **kwargs)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **kwargs: Any) -> Agency:
        """From environment variables (``DEFAULT_LLM_PROVIDER``, ``<PROVIDER>_API_KEY``, ...)."""
        return cls(config_from_env(env), **kwargs)

    def _make_state(
        self,
        name: str,
        spec: str,
        params: dict[str, Any],
        *,
        rpm: int | None = None,
        tpm: int | None = None,
        priority: int = 100,
        weight: int = 1,
    ) -> ProviderState:
        from agency._factory import chat_model
        from agency.pricing import price_for
        from agency.resilience.balancing import ProviderState
        from agency.resilience.breaker import CircuitBreaker
        from agency.resilience.limits import RateLimiter, RateLimitPolicy

        model = chat_model(spec, **{**params, "max_retries": 0})
        limits = RateLimitPolicy(rpm=rpm, tpm=tpm)
        breaker: CircuitBreaker
        limiter: RateLimiter
        fleet = None
        if self._store is None:
            limiter = RateLimiter(limits, clock=self._clock, sleep=self._sleep, name=name)
            breaker = CircuitBreaker(self._breaker_policy, clock=self._clock, name=name)
        else:
            shared = self._shared
            limiter = shared.SharedLimiter(
                self._store, limits, name=name, clock=self._clock, sleep=self._sleep
            )
            breaker = shared.SharedBreaker(self._store, self._breaker_policy, name=name)
            fleet = shared.Fleet(breaker, limiter)
        adapter = model._adapter
        if hasattr(adapter, "on_response_headers"):
            adapter.on_response_headers = limiter.observe_headers
        return ProviderState(
            name=name,
            model=model,
            breaker=breaker,
            limiter=limiter,
            fleet=fleet,
            price=price_for(model.provider, model.model),
            priority=priority,
            weight=weight,
        )

    def _state_for_entry(self, entry: ProviderEntry) -> ProviderState:
        return self._make_state(
            entry.name,
            entry.spec,
            entry.model_params(),
            rpm=entry.rpm,
            tpm=entry.tpm,
            priority=entry.priority,
            weight=entry.weight,
        )

    def _state_for_spec(self, spec: str) -> ProviderState:
        # A chain member that is not an entry: a spec, with the key from its env variable and
        # the settings of the first entry of the same provider (its key, base_url, ...).
        provider = spec.partition(":")[0].lower()
        entry = next((e for e in self.config.llm.ordered() if e.provider == provider), None)
        params = entry.model_params() if entry is not None else {}
        return self._make_state(spec, spec, params)

    def _provider_state(self, name: str) -> Mapping[str, Any]:
        state = self._pool.states.get(name)
        if state is None:
            return {}
        return {"breaker": state.breaker.state, "in_flight": state.in_flight}

    # -- models -------------------------------------------------------------------------
    def chain(self, role: str | None = None) -> list[str]:
        """The providers a call for ``role`` may use, in configured order."""
        llm = self.config.llm
        if role is not None and role in llm.routing:
            return [r for r in llm.routing[role] if r not in self.unconfigured]
        names = list(self._pool.states) if not llm.default_provider else []
        if llm.default_provider:
            default = llm.find(llm.default_provider)
            first = default.name if default is not None else llm.default_provider
            names = [first, *[n for n in self._pool.states if n != first]]
        names = [n for n in names if n in self._pool.states]
        if not names:
            raise ConfigError(
                "no usable provider entry",
                key="llm.providers",
                fix="configure a provider with its key, or use the embedded default: Agency()",
            )
        return names if llm.fallback.enabled else names[:1]

    def chat_model(
        self, role: str | None = None, *, models: Sequence[str] | None = None, **params: Any
    ) -> FallbackChatModel:
        """One LangChain chat model over ``role``'s chain (see `chain`), or over ``models``
        (entry names or ``"provider:model"`` specs), which always falls back along its order.

        ``params``: ``max_tokens``, ``max_cost`` (worst case per call, for the ``cost``
        strategy), ``preferred_models``, ``streaming``, ``max_attempts``, ``cache``.
        """
        from agency.resilience.fallback import FallbackChatModel

        if "cache" not in params and self.config.section("llm.cache").enabled:
            params["cache"] = self.cache()
        if models is not None:
            chain = [self._entry_name(ref) for ref in models]
            params.setdefault("fallback", True)
        else:
            chain = self.chain(role)
        return FallbackChatModel.over(self._pool, chain, role=role, **params)

    def _entry_name(self, ref: str) -> str:
        # An entry's name or its provider's name resolves to the entry; specs stay specs.
        entry = self.config.llm.find(ref)
        return entry.name if entry is not None and entry.name in self._pool.states else ref

    def worst_case(
        self, model: FallbackChatModel, messages: Sequence[BaseMessage], max_tokens: int | None
    ) -> float | None:
        """The most one call of ``model`` with ``messages`` can cost, whichever provider of its
        chain answers (USD; ``None`` when a candidate's price is unknown)."""
        from agency.pricing import estimate_cost

        worst = 0.0
        for ref in model.chain:
            state = self._pool.get(ref)
            bound = max_tokens or model.max_tokens or state.model.max_tokens
            estimate = estimate_cost(
                state.model.provider, state.model.model, list(messages), max_tokens=bound
            )
            if estimate.worst_case is None:
                return None
            worst = max(worst, estimate.worst_case)
        return worst

    def router(self, **params: Any) -> Any:
        """The `agents.TaskRouter` over the built-in roles and ``[agents.roles]``, with the
        chains of ``[llm.routing]``; created on first use."""
        if self._router is None:
            from agency.agents.roles import roles_from_config  # the top layer may compose agents/
            from agency.agents.router import TaskRouter

            router = TaskRouter(roles_from_config(self.config), **params)
            router.models = lambda role: self.chat_model(role=self._routable(role))
            self._router = router
        return self._router

    def model_for(self, task: str, **params: Any) -> FallbackChatModel:
        """The chat model of the role ``task`` is routed to (its chain from ``[llm.routing]``)."""
        return self.chat_model(role=self._routable(self.router().route(task).role), **params)

    def agents(self) -> dict[str, Any]:
        """The `agency.agents.Agent` of each ``[[agent]]`` table of the configuration, by name,
        on this agency (its providers, breakers, budget and memory namespaces)."""
        from agency.agents.agent_file import build_agents  # the top layer may compose agents/

        return build_agents(self.config.section("agent"), self)

    def workflow(self, name: str, **options: Any) -> Any:
        """A new `agency.workflows.Workflow` whose steps use this agency's providers, breakers,
        limits, budget and stats (``options``: ``inputs``, ``budget_usd``, ``max_concurrency``)."""
        from agency.workflows.graph import Workflow  # the top layer may compose workflows/

        return Workflow(name, agency=self, **options)

    def routed_model(self, **params: Any) -> Any:
        """An `agents.RoutedChatModel`: every call goes to the model of its role."""
        from agency.agents.routed import RoutedChatModel

        return RoutedChatModel(
            router=self.router(),
            models=lambda role: self.chat_model(role=self._routable(role), **params),
        )

    def _routable(self, role: str) -> str | None:
        # A role without a chain of its own uses the default chain, counted under its name.
        return role if role in self.config.llm.routing else None

    def cache(self) -> Any:
        """The semantic cache of ``[llm.cache]`` (`memory.SemanticCache`, a LangChain
        `BaseCache`), created on first use; its hits are counted under provider ``"cache"``."""
        if self._cache is None:
            from agency.memory.cache import SemanticCache  # the top layer may compose memory/

            self._cache = _CountingCache(
                SemanticCache.from_config(self.config.section("llm.cache")), self._stats
            )
        return self._cache

    def memory(self, namespace: str = "default") -> Any:
        """The `memory.VectorMemory` namespace ``namespace`` as ``[memory]`` places it
        (persistent under ``.agency/memory`` by default), embedding with ``[memory]
        embeddings`` or else this agency's `embeddings`; one object per namespace."""
        with self._memory_lock:
            found = self._memories.get(namespace)
            if found is None:
                from agency.memory.store import VectorMemory  # the top layer may compose memory/

                cfg = self.config.section("memory")
                if cfg.embeddings:
                    from agency._factory import embeddings

                    emb: Any = embeddings(cfg.embeddings)
                else:
                    emb = self.embeddings()
                # `MemoryConfig` allows a path in persistent mode only; host and port are
                # read in server mode only.
                found = VectorMemory(
                    namespace,
                    embeddings=emb,
                    mode=cfg.mode,
                    path=cfg.path,
                    host=cfg.host,
                    port=cfg.port,
                )
                self._memories[namespace] = found
            return found

    def embeddings(self, **params: Any) -> AgencyEmbeddings:
        """Embeddings of the default entry's embedding model (``local:wordllama`` by default)."""
        from agency._factory import embeddings

        llm = self.config.llm
        entry = llm.find(llm.default_provider) if llm.default_provider else None
        entry = entry or next(iter(llm.ordered()), None)
        if entry is None or entry.name in self.unconfigured:
            return embeddings("local:wordllama", **params)
        return embeddings(entry.embedding_spec, **{**entry.embedding_params(), **params})

    # -- numbers ------------------------------------------------------------------------
    def stats(self) -> Stats:
        """Live statistics: ``.snapshot()`` (dict), ``.to_pandas()``, a table in notebooks."""
        return self._stats

    def health(self, *, check: bool = False) -> dict[str, dict[str, Any]]:
        """Per provider: breaker, limiter and load; ``check=True`` also lists its models
        (a cheap call) and feeds the result to the breaker."""
        report: dict[str, dict[str, Any]] = {}
        for name, state in self._pool.states.items():
            row: dict[str, Any] = {
                "spec": state.spec,
                "breaker": state.breaker.snapshot(),
                "limits": state.limiter.snapshot(),
                "in_flight": state.in_flight,
                "latency_ewma_ms": None
                if state.latency_ewma_s is None
                else state.latency_ewma_s * 1000,
            }
            if check:
                row["reachable"] = self._probe(state)
            report[name] = row
        for name, reason in self.unconfigured.items():
            report[name] = {"unconfigured": reason}
        return report

    def _probe(self, state: ProviderState) -> bool:
        try:
            state.model._adapter.list_models()
        except ProviderError:
            state.breaker.record_failure()
            return False
        except Exception:
            return False
        if state.breaker.state == "open":
            return True  # reachable; the half-open probe call decides
        state.breaker.record_success()
        return True

    def start_health_checks(self, interval_s: float = 30.0) -> None:
        """Probe every provider (`health(check=True)`) every ``interval_s`` in a daemon thread."""
        if self._health_thread is not None:
            return
        self._health_stop.clear()

        def loop() -> None:
            while not self._health_stop.wait(interval_s):
                self.health(check=True)

        self._health_thread = threading.Thread(target=loop, name="agency-health", daemon=True)
        self._health_thread.start()

    def stop_health_checks(self) -> None:
        """Stop the thread started by `start_health_checks`."""
        self._health_stop.set()
        if self._health_thread is not None:
            self._health_thread.join(timeout=5)
            self._health_thread = None

    def estimate_cost(
        self,
        messages: Sequence[BaseMessage] | str,
        *,
        max_tokens: int | None = None,
        role: str | None = None,
    ) -> CostEstimate:
        """Tokens, cost and a confidence for sending ``messages`` to the first provider of
        ``role``'s chain, before the call."""
        from agency.pricing import estimate_cost

        state = self._pool.get(self.chain(role)[0])
        return estimate_cost(
            state.model.provider,
            state.model.model,
            messages,
            max_tokens=max_tokens or state.model.max_tokens,
        )

    def budget(self, name: str, limit_usd: float, *, spent_usd: float = 0.0) -> Budget:
        """A budget of its own (a virtual key's, a tenant's) of ``limit_usd`` in all, of which
        ``spent_usd`` is gone; with ``[state] backend = "redis"`` the fleet shares it under
        ``name`` (its spending kept in Redis, seeded with ``spent_usd`` by the first process)."""
        from agency.resilience.budget import Budget, BudgetPolicy

        if self._store is None:
            return Budget(BudgetPolicy(max_cost_total=max(0.0, limit_usd - spent_usd)))
        shared = self._shared.SharedBudget(
            self._store, BudgetPolicy(max_cost_total=limit_usd), name=f"budget:{name}"
        )
        shared.seed(spent_usd)
        return shared

    def force_breaker(
        self, name: str, state: Literal["open", "closed"], seconds: float | None = None
    ) -> dict[str, Any]:
        """An operator's override of provider ``name``'s breaker: open for ``seconds``, or
        closed now (``seconds`` default: `breaker.FORCED_OPEN_S`); its snapshot after.
        `KeyError` for an unknown provider."""
        from agency.resilience.breaker import FORCED_OPEN_S

        found = self._pool.states.get(name)
        if found is None:
            raise KeyError(f"no provider {name!r} (known: {sorted(self._pool.states)})")
        found.breaker.force(state, FORCED_OPEN_S if seconds is None else seconds)
        snapshot: dict[str, Any] = found.breaker.snapshot()
        return snapshot

    def available_providers(self) -> list[str]:
        """Entries that a call may use now (configured, breaker not open)."""
        return [n for n, s in self._pool.states.items() if s.breaker.state != "open"]

    # -- lifetime -----------------------------------------------------------------------
    def close(self) -> None:
        """Stop health checks and close the pooled HTTP clients."""
        from agency._http import close_clients

        self.stop_health_checks()
        close_clients()

    async def aclose(self) -> None:
        """Async twin of `close`."""
        from agency._http import aclose_clients

        self.stop_health_checks()
        await aclose_clients()

    def __enter__(self) -> Agency:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    async def __aenter__(self) -> Agency:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"Agency(providers={list(self._pool.states)}, source={self.config.source!r})"


class _CountingCache(BaseCache):
    """A `BaseCache` that forwards to the semantic cache and counts its hits in `Stats`."""

    def __init__(self, inner: BaseCache, stats: Stats) -> None:
        # Not `self.stats`: the inner cache's own `stats()` is reached through __getattr__.
        self.inner, self._agency_stats = inner, stats

    def _count(self, found: Any) -> Any:
        if found:
            self._agency_stats.record(provider="cache", ok=True, latency_s=0.0, cost=0.0)
        return found

    def lookup(self, prompt: str, llm_string: str) -> Any:
        return self._count(self.inner.lookup(prompt, llm_string))

    async def alookup(self, prompt: str, llm_string: str) -> Any:
        return self._count(await self.inner.alookup(prompt, llm_string))

    def update(self, prompt: str, llm_string: str, return_val: Any) -> None:
        self.inner.update(prompt, llm_string, return_val)

    async def aupdate(self, prompt: str, llm_string: str, return_val: Any) -> None:
        await self.inner.aupdate(prompt, llm_string, return_val)

    def clear(self, **kwargs: Any) -> None:
        self.inner.clear(**kwargs)

    async def aclear(self, **kwargs: Any) -> None:
        await self.inner.aclear(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
