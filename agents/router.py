"""`TaskRouter`: which role a task belongs to, offline in well under a millisecond.

``route(task) -> RouteDecision(role, confidence, scores, reason, path)``; `aroute` is its async
twin and `route_batch` / `aroute_batch` embed many tasks in a few calls (by length, in chunks
of `EMBED_BATCH`) and ask the LLM for the unsure ones in one batch. Tasks and examples are
embedded alike (as documents, first `agents._features.EMBED_CHARS` characters), so a batch
decides exactly as one call per task would. Contract:

- Offline by default. Two scores are combined:
    * similarity: each role's score is the mean cosine similarity of the task to its
      ``top_k`` (3) nearest example tasks (`Role.examples`), under the router's embeddings;
      ``softmax(scale * score)`` over all roles gives ``P_sim``. Every role takes part this
      way, including custom ones, with no code change.
    * learned: for the built-in roles, a multinomial logistic regression over the task's
      unit wordllama embedding and cheap signals (code fences, identifiers, code keywords,
      numbers and formulas, "write a story/poem", question words, length; see
      `agents._features`), fitted by ``benchmarks/fit_router.py`` and shipped in
      ``agents/data/router.json`` with a temperature that calibrates its probabilities.
      With other embeddings than ``local:wordllama`` the signals-only model is used. The
      weights belong to the role *names*: a built-in role whose fields are overridden (e.g.
      from TOML) keeps them, and its own examples feed the similarity score.
  A custom role gets ``P_sim(role)``; the built-in roles share the rest of the mass,
  ``P_sim(built-ins)``, in the learned proportions. With only built-in roles the decision is
  the learned model's. ``confidence`` is the probability of the chosen role; ``scores`` holds
  every role's.
- ``reason`` names the signals that pushed the choice most and the role of the nearest
  examples ("a code fence and code keywords; nearest examples: code").
- With ``llm`` set, a task whose offline confidence is below ``llm_threshold`` is classified
  by the model (structured output: one role name, chosen from the roles' descriptions), and
  the decision says ``path="llm"``. Any failure of the model keeps the offline decision
  (``path="offline"``, the failure in ``reason``, counted in `stats`). The LLM gives no
  calibrated probability: ``confidence`` is then the offline probability of its role.
- An empty task goes to the fallback role ``general`` (when present) without scoring.
- `stats` counts decisions per role and path, with mean confidence. Thread-safe.
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

from agency.agents import _features
from agency.agents.roles import BUILTIN_ROLES, FALLBACK_ROLE, Role

if TYPE_CHECKING:
    from langchain_core.embeddings import Embeddings
    from langchain_core.language_models import BaseChatModel
    from langchain_core.messages import BaseMessage

    from agency.config import AgencyConfig

__all__ = ["DEFAULT_EMBEDDINGS", "RouteDecision", "TaskRouter", "learned_parameters"]

DEFAULT_EMBEDDINGS = "local:wordllama"
"""The embeddings the learned parameters were fitted with."""
FULL_MODEL = "embedding+signals"
"""The learned model used with `DEFAULT_EMBEDDINGS`."""
SIGNALS_MODEL = "signals"
"""The learned model used with any other embeddings (their vectors mean nothing to it)."""
REASON_MIN_LOGIT = 0.5
"""A signal is named in ``reason`` when it moved the chosen role's logit by at least this."""
REASON_SIGNALS = 2
"""At most this many signals are named in ``reason``."""
EMBED_BATCH = 64
"""Texts per embedding call in a batch (sorted by length, see `_chunks`)."""
LLM_TASK_CHARS = 2000
"""Characters of a task shown to the LLM classifier: enough to tell what it asks."""
_PAD = -2.0
"""Similarity of the padding rows of the example matrix: below any cosine."""


@dataclass(frozen=True)
class RouteDecision:
    """Where a task goes, how sure the router is, and why."""

    role: str
    """The chosen role's name."""
    confidence: float
    """Calibrated probability (0-1) of ``role`` under the offline router."""
    scores: dict[str, float] = field(hash=False)
    """Every role's probability under the offline router; they sum to 1."""
    reason: str
    """A short sentence naming what decided."""
    path: Literal["offline", "llm"] = "offline"
    """``"llm"`` when the configured chat model chose the role."""


@functools.cache
def learned_parameters() -> dict[str, Any]:
    """The shipped ``agents/data/router.json`` (written by ``benchmarks/fit_router.py``)."""
    text = resources.files(__package__ or "agency.agents").joinpath("data", "router.json").read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


@dataclass(frozen=True)
class _Linear:
    """One learned model restricted to the built-in roles the router has."""

    weights: Any
    """(L, d) for the raw inputs of `agents._features.design`."""
    bias: Any
    """(L,)."""
    temperature: float
    """Logits are divided by this before the softmax (fitted on out-of-fold logits)."""
    means: Any
    """(d,) training means of the inputs, the baseline ``reason`` measures pushes from."""
    embedding: bool
    """Whether the inputs start with the embedding."""
    centred: Any
    """(L, d) weights minus their mean over the roles, over the temperature (for reasons)."""
    scaled_weights: Any
    """(d, L) weights over the temperature, transposed for ``x @``."""
    scaled_bias: Any
    """(L,) bias over the temperature."""


class TaskRouter:
    """Routes tasks to roles: offline by embeddings and signals, optionally asking an LLM.

    ``roles`` defaults to `BUILTIN_ROLES`; ``embeddings`` to ``agency.embeddings(
    "local:wordllama")``; ``llm`` (any LangChain chat model with structured output) is asked
    when the offline confidence is below ``llm_threshold`` (default: the calibrated value in
    ``router.json``). ``parameters`` replaces the shipped learned parameters (tests, refits).
    """

    def __init__(
        self,
        roles: Mapping[str, Role] | None = None,
        *,
        embeddings: Embeddings | None = None,
        llm: BaseChatModel | None = None,
        llm_threshold: float | None = None,
        parameters: Mapping[str, Any] | None = None,
    ) -> None:
        from agency._factory import embeddings as make_embeddings

        params = learned_parameters() if parameters is None else parameters
        self._roles: Mapping[str, Role] = MappingProxyType(_check_roles(roles))
        self._names = tuple(self._roles)
        default = embeddings is None or _is_embedder(embeddings, params["embeddings"])
        self._embeddings = (
            make_embeddings(DEFAULT_EMBEDDINGS) if embeddings is None else embeddings
        )
        self._inline = _is_local(self._embeddings)
        self._linear, learned = self._learned(
            params["models"][FULL_MODEL if default else SIGNALS_MODEL]
        )
        self._learned_roles = learned
        self._learned_index = [self._names.index(n) for n in learned]
        similarity = params["similarity"]
        self._scale = float(similarity["scale"])
        self._examples, self._padding, self._top_weights = self._example_matrix(
            int(similarity["top_k"])
        )
        self.llm_threshold = float(
            params["llm_threshold"] if llm_threshold is None else llm_threshold
        )
        """Offline confidence below which ``llm`` (when set) is asked."""
        self._llm = llm
        self._classifier = None if llm is None else llm.with_structured_output(self._schema())
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(self._names, 0)
        self._confidence = dict.fromkeys(self._names, 0.0)
        self._paths = {"offline": 0, "llm": 0}
        self._llm_errors = 0

    @classmethod
    def from_config(
        cls,
        config: AgencyConfig,
        *,
        embeddings: Embeddings | None = None,
        llm: BaseChatModel | None = None,
        llm_threshold: float | None = None,
    ) -> TaskRouter:
        """A router over the built-in roles merged with ``[agents.roles.*]`` of ``config``."""
        from agency.agents.roles import roles_from_config

        return cls(
            roles_from_config(config), embeddings=embeddings, llm=llm, llm_threshold=llm_threshold
        )

    # -- public -----------------------------------------------------------------------
    @property
    def roles(self) -> Mapping[str, Role]:
        """The roles, by name (read-only)."""
        return self._roles

    @property
    def llm(self) -> BaseChatModel | None:
        """The chat model asked when the offline router is unsure (``None``: offline only)."""
        return self._llm

    @property
    def learned_roles(self) -> tuple[str, ...]:
        """The roles the shipped learned model scores (the built-in names present)."""
        return self._learned_roles

    models: Callable[[str], BaseChatModel] | None = None
    """Role name -> its chat model, for `model_for`; `agency.Agency.router` sets it to the
    role's fallback chain from ``[llm.routing]``."""

    def model_for(self, task: str) -> BaseChatModel:
        """The chat model of the role ``task`` is routed to (needs `models`)."""
        if self.models is None:
            raise ValueError(
                "this router has no models: use Agency.router(), or set router.models to a "
                "function from role name to chat model"
            )
        return self.models(self.route(task).role)

    def route(self, task: str) -> RouteDecision:
        """The role of ``task``; asks ``llm`` when set and the offline confidence is low."""
        decision = self._offline([task], self._embed([task]))[0]
        if self._wants_llm(task, decision):
            decision = self._from_llm(decision, self._call_llm(task))
        return self._record(decision)

    async def aroute(self, task: str) -> RouteDecision:
        """Async twin of `route` (the local embedder runs inline: it takes microseconds)."""
        vectors = self._embed([task]) if self._inline else await self._aembed([task])
        decision = self._offline([task], vectors)[0]
        if self._wants_llm(task, decision):
            decision = self._from_llm(decision, await self._acall_llm(task))
        return self._record(decision)

    def route_batch(self, tasks: Sequence[str]) -> list[RouteDecision]:
        """`route` for many tasks: one embedding call, one batched LLM call for the unsure."""
        decisions = self._offline(tasks, self._embed(tasks))
        unsure = [i for i, d in enumerate(decisions) if self._wants_llm(tasks[i], d)]
        if unsure and self._classifier is not None:
            answers = self._classifier.batch(
                [self._messages(tasks[i]) for i in unsure], return_exceptions=True
            )
            for i, answer in zip(unsure, answers, strict=True):
                decisions[i] = self._from_llm(decisions[i], answer)
        return [self._record(d) for d in decisions]

    async def aroute_batch(self, tasks: Sequence[str]) -> list[RouteDecision]:
        """Async twin of `route_batch`."""
        vectors = self._embed(tasks) if self._inline else await self._aembed(tasks)
        decisions = self._offline(tasks, vectors)
        unsure = [i for i, d in enumerate(decisions) if self._wants_llm(tasks[i], d)]
        if unsure and self._classifier is not None:
            answers = await self._classifier.abatch(
                [self._messages(tasks[i]) for i in unsure], return_exceptions=True
            )
            for i, answer in zip(unsure, answers, strict=True):
                decisions[i] = self._from_llm(decisions[i], answer)
        return [self._record(d) for d in decisions]

    def similarities(self, tasks: Sequence[str]) -> list[dict[str, float]]:
        """Per task, each role's mean cosine similarity to its nearest example tasks."""
        texts = [t if t.strip() else "?" for t in tasks]  # an empty task still gets a row
        sims = self._similarities(_features.unit_rows(self._embed(texts)))
        return [{n: float(v) for n, v in zip(self._names, row, strict=True)} for row in sims]

    def stats(self) -> dict[str, Any]:
        """Decisions so far: total, per role (count, mean confidence), per path, LLM errors."""
        with self._lock:
            counts, confidence = dict(self._counts), dict(self._confidence)
            paths, errors = dict(self._paths), self._llm_errors
        total = sum(counts.values())
        return {
            "routed": total,
            "mean_confidence": sum(confidence.values()) / total if total else 0.0,
            "roles": {
                name: {
                    "count": counts[name],
                    "mean_confidence": confidence[name] / counts[name] if counts[name] else 0.0,
                }
                for name in self._names
            },
            "paths": paths,
            "llm_errors": errors,
        }

    def reset_stats(self) -> None:
        """Forget the decisions counted so far."""
        with self._lock:
            self._counts = dict.fromkeys(self._names, 0)
            self._confidence = dict.fromkeys(self._names, 0.0)
            self._paths = {"offline": 0, "llm": 0}
            self._llm_errors = 0

    # -- setup ------------------------------------------------------------------------
    def _learned(self, model: Mapping[str, Any]) -> tuple[_Linear | None, tuple[str, ...]]:
        import numpy as np

        classes = list(model["classes"])
        learned = tuple(n for n in self._names if n in classes)
        if not learned:
            return None, ()
        rows = [classes.index(n) for n in learned]
        weights = np.asarray(model["weights"], dtype=np.float64)[rows]
        temperature = float(model["temperature"])
        bias = np.asarray(model["bias"], dtype=np.float64)[rows]
        linear = _Linear(
            weights=weights,
            bias=bias,
            temperature=temperature,
            means=np.asarray(model["means"], dtype=np.float64),
            embedding=bool(model["embedding"]),
            centred=(weights - weights.mean(axis=0)) / temperature,
            scaled_weights=np.ascontiguousarray(weights.T / temperature),
            scaled_bias=bias / temperature,
        )
        return linear, learned

    def _example_matrix(self, top_k: int) -> tuple[Any, Any, Any]:
        """Unit example vectors (roles x most examples, dims), their padding, top-k weights."""
        import numpy as np

        vectors = _features.unit_rows(
            self._embed([e for r in self._roles.values() for e in r.examples])
        )
        widest = max(len(r.examples) for r in self._roles.values())
        matrix = np.zeros((len(self._names), widest, vectors.shape[1]))
        padding = np.full((len(self._names), widest), _PAD)
        k = min(top_k, widest)
        weights = np.zeros((len(self._names), k))
        start = 0
        for i, role in enumerate(self._roles.values()):
            n = len(role.examples)
            matrix[i, :n] = vectors[start : start + n]
            padding[i, :n] = 0.0
            weights[i, : min(k, n)] = 1.0 / min(k, n)
            start += n
        return matrix.reshape(-1, vectors.shape[1]), padding, weights

    def _schema(self) -> type:
        from pydantic import Field, create_model

        choice = Literal[self._names]  # type: ignore[valid-type, name-defined]
        return create_model(  # type: ignore[call-overload, no-any-return]
            "RoleChoice",
            __doc__="The one role whose description fits the task best.",
            role=(choice, Field(description="The chosen role's name.")),
        )

    # -- offline ----------------------------------------------------------------------
    def _embed(self, tasks: Sequence[str]) -> list[Any]:
        """Vectors of the non-empty tasks, as documents (examples are embedded the same way)."""
        texts = [t[: _features.EMBED_CHARS] for t in tasks if t.strip()]
        out: list[Any] = [None] * len(texts)
        for chunk in _chunks(texts):
            vectors = self._embeddings.embed_documents([texts[i] for i in chunk])
            for i, vector in zip(chunk, vectors, strict=True):
                out[i] = vector
        return out

    async def _aembed(self, tasks: Sequence[str]) -> list[Any]:
        texts = [t[: _features.EMBED_CHARS] for t in tasks if t.strip()]
        out: list[Any] = [None] * len(texts)
        for chunk in _chunks(texts):
            vectors = await self._embeddings.aembed_documents([texts[i] for i in chunk])
            for i, vector in zip(chunk, vectors, strict=True):
                out[i] = vector
        return out

    def _offline(self, tasks: Sequence[str], vectors: Any) -> list[RouteDecision]:
        """Offline decisions; ``vectors`` holds the embeddings of the non-empty tasks."""
        present = [i for i, t in enumerate(tasks) if t.strip()]
        decisions: list[RouteDecision | None] = [None] * len(tasks)
        if present:
            texts = [tasks[i] for i in present]
            units = _features.unit_rows(vectors)
            sims = self._similarities(units)
            probs = _features.softmax(self._scale * sims)
            x = None
            if self._linear is not None:
                x = _features.design(units if self._linear.embedding else None, texts)
                probs = self._blend(probs, x)
            for row, i in enumerate(present):
                decisions[i] = self._decision(probs[row], sims[row], None if x is None else x[row])
        empty = self._empty()
        return [empty if d is None else d for d in decisions]

    def _similarities(self, units: Any) -> Any:
        """(n, roles): mean cosine to each role's nearest ``top_k`` examples."""
        import numpy as np

        n_roles, widest = self._padding.shape
        sims = (units @ self._examples.T).reshape(len(units), n_roles, widest) + self._padding
        top = np.sort(sims, axis=2)[..., : -self._top_weights.shape[1] - 1 : -1]  # descending
        return (top * self._top_weights).sum(axis=2)

    def _blend(self, p_sim: Any, x: Any) -> Any:
        """Give the built-in roles' similarity mass out in the learned proportions."""
        linear = self._linear
        assert linear is not None
        p_learned = _features.softmax(x @ linear.scaled_weights + linear.scaled_bias)
        index = self._learned_index
        p_sim[:, index] = p_sim[:, index].sum(axis=1, keepdims=True) * p_learned
        return p_sim

    def _decision(self, probs: Any, sims: Any, x: Any) -> RouteDecision:
        best = int(probs.argmax())
        role = self._names[best]
        nearest = self._names[int(sims.argmax())]
        if role in self._learned_roles:
            named = "" if x is None else self._signals_named(role, x)
            reason = (
                f"{named}; nearest examples: {nearest}" if named else f"nearest examples: {nearest}"
            )
        elif role == nearest:
            reason = f"nearest examples: {role} (similarity {float(sims[best]):.2f})"
        else:
            reason = f"examples of {role} (similarity {float(sims[best]):.2f}); nearest: {nearest}"
        return RouteDecision(
            role=role,
            confidence=float(probs[best]),
            scores={n: float(p) for n, p in zip(self._names, probs, strict=True)},
            reason=reason,
        )

    def _signals_named(self, role: str, x: Any) -> str:
        """The signals that pushed most toward ``role``, else "its wording"."""
        linear = self._linear
        assert linear is not None
        # What each input added to the role's logit, against the learned roles' average.
        push = (x - linear.means) * linear.centred[self._learned_roles.index(role)]
        offset = len(push) - len(_features.SIGNALS)
        named = sorted(
            (
                (float(value), _features.SIGNAL_LABELS[name][int(above)])
                for name, value, above in zip(
                    _features.SIGNALS,
                    push[offset:],
                    x[offset:] > linear.means[offset:],
                    strict=True,
                )
                if value >= REASON_MIN_LOGIT
            ),
            reverse=True,
        )
        if named:
            return " and ".join(label for _, label in named[:REASON_SIGNALS])
        if linear.embedding and float(push[:offset].sum()) >= REASON_MIN_LOGIT:
            return "its wording"
        return ""

    def _empty(self) -> RouteDecision:
        role = FALLBACK_ROLE if FALLBACK_ROLE in self._roles else self._names[0]
        share = 1.0 / len(self._names)
        return RouteDecision(
            role=role,
            confidence=share,
            scores=dict.fromkeys(self._names, share),
            reason="empty task: the fallback role",
        )

    # -- LLM --------------------------------------------------------------------------
    def _wants_llm(self, task: str, decision: RouteDecision) -> bool:
        return (
            self._classifier is not None
            and bool(task.strip())
            and decision.confidence < self.llm_threshold
        )

    def _messages(self, task: str) -> list[BaseMessage]:
        from langchain_core.messages import HumanMessage, SystemMessage

        listing = "\n".join(f"- {r.name}: {r.description}" for r in self._roles.values())
        return [
            SystemMessage(
                "You route tasks to the assistant best suited to them. Choose exactly one "
                f"role for the user's task.\nRoles:\n{listing}\nAnswer with the role name only."
            ),
            HumanMessage(task[:LLM_TASK_CHARS]),
        ]

    def _call_llm(self, task: str) -> Any:
        assert self._classifier is not None
        try:
            return self._classifier.invoke(self._messages(task))
        except Exception as exc:  # any failure of the model keeps the offline decision
            return exc

    async def _acall_llm(self, task: str) -> Any:
        assert self._classifier is not None
        try:
            return await self._classifier.ainvoke(self._messages(task))
        except Exception as exc:  # any failure of the model keeps the offline decision
            return exc

    def _from_llm(self, offline: RouteDecision, answer: Any) -> RouteDecision:
        if isinstance(answer, BaseException):
            return self._llm_failed(offline, f"{type(answer).__name__}: {answer}"[:120])
        role = (
            answer.get("role") if isinstance(answer, Mapping) else getattr(answer, "role", answer)
        )
        if not isinstance(role, str) or role not in self._roles:
            return self._llm_failed(offline, f"answered {role!r}, not a role")
        return RouteDecision(
            role=role,
            confidence=offline.scores[role],
            scores=offline.scores,
            reason=f"LLM chose {role}; offline {offline.role} at {offline.confidence:.2f} "
            f"({offline.reason})",
            path="llm",
        )

    def _llm_failed(self, offline: RouteDecision, why: str) -> RouteDecision:
        with self._lock:
            self._llm_errors += 1
        return replace(offline, reason=f"{offline.reason}; LLM failed ({why}), kept offline choice")

    def _record(self, decision: RouteDecision) -> RouteDecision:
        with self._lock:
            self._counts[decision.role] += 1
            self._confidence[decision.role] += decision.confidence
            self._paths[decision.path] += 1
        return decision


def _chunks(texts: Sequence[str]) -> list[list[int]]:
    """Indices of ``texts`` by length, in chunks of `EMBED_BATCH`.

    Local embedders pad a batch to its longest text: a batch of similar lengths embeds up to
    four times faster than the texts in their own order.
    """
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    return [order[i : i + EMBED_BATCH] for i in range(0, len(order), EMBED_BATCH)]


def _check_roles(roles: Mapping[str, Role] | None) -> dict[str, Role]:
    out = dict(BUILTIN_ROLES if roles is None else roles)
    if not out:
        raise ValueError("a TaskRouter needs at least one role")
    for name, role in out.items():
        if not isinstance(role, Role):
            raise TypeError(f"roles[{name!r}] is a {type(role).__name__}, not an agents.Role")
        if role.name != name:
            raise ValueError(f"roles[{name!r}] holds the role named {role.name!r}")
        if not role.examples or not all(isinstance(e, str) and e.strip() for e in role.examples):
            raise ValueError(
                f"role {name!r} needs non-empty example tasks; the router compares tasks with them"
            )
    return out


def _is_embedder(embeddings: Any, spec: str) -> bool:
    """Whether ``embeddings`` is ``agency.embeddings(spec)`` at its native size."""
    from agency.embedding_models import AgencyEmbeddings

    provider, _, model = spec.partition(":")
    return (
        isinstance(embeddings, AgencyEmbeddings)
        and embeddings.provider == provider
        and embeddings.model == model
        and embeddings.dimensions is None
    )


def _is_local(embeddings: Any) -> bool:
    from agency.embedding_models import AgencyEmbeddings

    return isinstance(embeddings, AgencyEmbeddings) and embeddings.provider == "local"
