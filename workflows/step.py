"""`Step`: one unit of a workflow, what it runs and the rules it runs under.

A step runs exactly one of:

- ``prompt``: a template (``{name}`` placeholders read the run's state: inputs and earlier
  steps' outputs; ``{item}`` is a map branch's element) sent through a chat model: the step's
  own ``models`` chain (entry names of ``[[llm.providers]]`` or ``"provider:model"`` specs),
  else ``role``'s chain from ``[llm.routing]``; every model call falls back across the chain
  with the breakers, limiters, budget and stats of the workflow's one `agency.Agency`;
- ``run``: any LangChain ``Runnable`` (an `agency.agents.Agent` or ``Team``, a chain), given
  ``prompt`` rendered when there is one, else the state as a dict;
- ``fn``: a Python function (sync or async) of the state, returning the step's output;
- ``workflow``: a nested `Workflow`, given the state's values for its inputs;
- ``interrupt = True``: nothing; the run pauses (showing ``prompt`` as the question) and the
  answer given to ``resume`` is the output;
- ``route = True``: the `agency.agents.TaskRouter` reads ``prompt`` (default: the first input)
  and picks which of this step's dependents runs, by their ``role``; the others are skipped.

Rules (each optional): ``after`` (steps that must finish first), ``when`` (a condition on the
state: an expression such as ``"'urgent' in triage"`` or a callable; false means the step is
skipped), ``map`` (fan out over a list: a literal, or the name of a list in the state; one branch per
item, results gathered in order), ``repeat``/``until``/``max_iterations`` (go back to an earlier
step until a condition holds, at most so many times), ``timeout_s``, ``max_attempts``,
``budget_usd``, ``cache``, ``output`` (the state key; default the name), ``structured`` (a JSON
schema or pydantic model: the output is a dict), ``system`` (a system message).
"""

from __future__ import annotations

import ast
import operator
import re
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Step", "evaluate", "placeholders", "render"]

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")


@dataclass(frozen=True)
class Step:
    """One step of a `Workflow`. See the module docstring for what each field does."""

    name: str
    """Unique within the workflow; also the output's state key unless ``output`` is set."""
    prompt: str | None = None
    """Template sent to the model; ``{key}`` reads the state, ``{item}`` a map branch's item."""
    role: str | None = None
    """Role whose chain answers the prompt (``[llm.routing]``); default the facade's chain."""
    models: Sequence[str] | None = None
    """This step's own fallback chain: entry names or ``"provider:model"`` specs."""
    system: str | None = None
    """A system message for the prompt (a template too)."""
    run: Any = None
    """A LangChain ``Runnable`` (an agent, a team, a chain) given ``prompt`` rendered, or the
    state (a dict) when there is no prompt; its result (an agent's text) is the output."""
    fn: Callable[..., Any] | None = None
    """A function ``fn(state) -> output``, sync or async."""
    workflow: Any = None
    """A nested `Workflow`, run with the state's values for its inputs."""
    interrupt: bool = False
    """Pause the run here; the answer given to ``resume`` is the output."""
    after: Sequence[str] = ()
    """Steps that must finish (or be skipped) before this one starts."""
    when: str | Callable[[Mapping[str, Any]], Any] | None = None
    """Run only if this holds on the state (an expression or a callable); else skipped."""
    route: bool = False
    """Send the task to the dependent step whose ``role`` the `TaskRouter` picks."""
    map: str | Sequence[Any] | None = None
    """Fan out over a list (literal, or a state key holding one); ``{item}`` in the prompt."""
    repeat: str | None = None
    """After this step, go back to that (earlier) step while ``until`` is false."""
    until: str | Callable[[Mapping[str, Any]], Any] | None = None
    """The condition that ends a ``repeat`` loop (checked after this step)."""
    max_iterations: int = 3
    """Most times a ``repeat`` loop runs its steps."""
    timeout_s: float | None = None
    """Seconds the step may take (each attempt of its model calls included)."""
    max_attempts: int | None = None
    """Attempts of the step's model call, retries and fallbacks together."""
    budget_usd: float | None = None
    """Most this step may cost; a call whose worst case would exceed it is not sent."""
    cache: bool | None = None
    """Use the agency's semantic cache (default: as ``[llm.cache]`` says)."""
    output: str | None = None
    """State key of the output (default: the step's name)."""
    structured: Any = None
    """A JSON schema (dict) or pydantic model: the output is the parsed object, as a dict."""
    max_tokens: int | None = None
    """Cap on the answer's tokens (also bounds the budget's worst case)."""
    options: Mapping[str, Any] = field(default_factory=dict)
    """Extra keyword arguments for the model call (``temperature``, ...)."""

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(
                f"step name {self.name!r}: use a letter or '_' first, then letters, digits, "
                "'_' or '-' (at most 64)"
            )
        kinds = [k for k in ("run", "fn", "workflow") if getattr(self, k) is not None]
        kinds += [k for k in ("interrupt", "route") if getattr(self, k)]
        if not kinds and self.prompt is not None:
            kinds.append("prompt")
        if len(kinds) != 1:
            raise ValueError(
                f"step {self.name!r} must run exactly one of prompt, run, fn, workflow, "
                f"interrupt or route; it has {kinds or 'none'}"
            )
        if self.models is not None and not self.models:
            raise ValueError(f"step {self.name!r}: models is empty; name at least one model")
        if self.max_iterations < 1:
            raise ValueError(f"step {self.name!r}: max_iterations must be at least 1")
        if (self.until is None) != (self.repeat is None):
            raise ValueError(f"step {self.name!r}: repeat and until go together")

    @property
    def key(self) -> str:
        """The state key of this step's output."""
        return self.output or self.name

    @property
    def kind(self) -> str:
        """``prompt``, ``run``, ``fn``, ``workflow``, ``interrupt`` or ``route``."""
        for kind in ("run", "fn", "workflow"):
            if getattr(self, kind) is not None:
                return kind
        return "interrupt" if self.interrupt else "route" if self.route else "prompt"

    def templates(self) -> list[str]:
        """The templates this step renders (prompt and system)."""
        return [t for t in (self.prompt, self.system) if t]


def placeholders(template: str) -> list[str]:
    """The state keys ``template`` reads (``{topic}`` -> ``topic``), in order."""
    names = []
    for _, name, _, _ in string.Formatter().parse(template):
        if name:
            names.append(re.split(r"[.\[]", name, maxsplit=1)[0])
    return names


def render(template: str, state: Mapping[str, Any]) -> str:
    """``template`` with every ``{key}`` replaced by the state's value (lists joined by lines,
    missing or ``None`` values as an empty string)."""
    values = {name: _text(state.get(name)) for name in placeholders(template)}
    return template.format_map(values)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return "\n\n".join(f"{i + 1}. {_text(v)}" for i, v in enumerate(value))
    return str(value)


# -- conditions: a small, safe expression language over the state ---------------------------
_BINARY: dict[type[ast.AST], Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
    ast.Is: operator.is_,
    ast.IsNot: operator.is_not,
}
_ARITH: dict[type[ast.AST], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Mod: operator.mod,
}
_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "len": len,
    "lower": lambda s: str(s).lower(),
    "upper": lambda s: str(s).upper(),
    "str": str,
    "int": int,
    "float": float,
    "bool": bool,
}


def compile_condition(expression: str) -> ast.Expression:
    """Parse a condition; `ValueError` names what is not allowed.

    Allowed: state keys as names, literals, comparisons (``== != < <= > >= in not in is``),
    ``and``/``or``/``not``, ``+ - * / %``, subscripts, and ``len``, ``lower``, ``upper``,
    ``str``, ``int``, ``float``, ``bool``. Nothing else runs: no attributes, no imports.
    """
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"not a valid expression: {exc.msg}") from None
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCTIONS:
                raise ValueError(f"only {', '.join(_FUNCTIONS)} may be called")
        elif isinstance(node, ast.Attribute | ast.Lambda | ast.NamedExpr | ast.Starred):
            raise ValueError(f"{type(node).__name__.lower()} is not allowed in a condition")
    return tree


def condition_names(expression: str) -> list[str]:
    """The state keys a condition reads."""
    tree = compile_condition(expression)
    return [n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id not in _FUNCTIONS]


def evaluate(condition: str | Callable[[Mapping[str, Any]], Any], state: Mapping[str, Any]) -> bool:
    """Whether ``condition`` holds on ``state`` (a missing key reads as ``None``)."""
    if callable(condition):
        return bool(condition(state))
    return bool(_eval(compile_condition(condition).body, state))


def _eval(node: ast.AST, state: Mapping[str, Any]) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        if node.id in ("True", "False", "None"):
            return {"True": True, "False": False, "None": None}[node.id]
        return state.get(node.id)
    if isinstance(node, ast.BoolOp):
        values = (_eval(v, state) for v in node.values)
        return all(values) if isinstance(node.op, ast.And) else any(values)
    if isinstance(node, ast.UnaryOp):
        value = _eval(node.operand, state)
        if isinstance(node.op, ast.Not):
            return not value
        return -value if isinstance(node.op, ast.USub) else +value
    if isinstance(node, ast.Compare):
        left = _eval(node.left, state)
        for op, right_node in zip(node.ops, node.comparators, strict=True):
            right = _eval(right_node, state)
            if not _BINARY[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.BinOp) and type(node.op) in _ARITH:
        return _ARITH[type(node.op)](_eval(node.left, state), _eval(node.right, state))
    if isinstance(node, ast.Subscript):
        return _eval(node.value, state)[_eval(node.slice, state)]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        return _FUNCTIONS[node.func.id](*(_eval(a, state) for a in node.args))
    if isinstance(node, ast.List | ast.Tuple | ast.Set):
        return [_eval(e, state) for e in node.elts]
    raise ValueError(f"{type(node).__name__} is not allowed in a condition")
