"""Roles: what kind of work a task is, and which model chain does that work.

A `Role` has a name, a description (what the LLM-assisted router reads), a system prompt (what
a routed model is told), example tasks (what the offline router compares a task with) and the
model chain it uses. Contract:

- `BUILTIN_ROLES`: ``code``, ``math``, ``creative`` and ``general`` (the fallback role for open
  questions and chat). Their example tasks were written for this project; the router's fitted
  parameters (``agents/data/router.json``) belong to these four names.
- `roles_from_config` reads ``[agents.roles.NAME]`` tables (``description``, ``system_prompt``,
  ``examples = [...]``, ``chain = [...]``) and merges them over the built-ins: a table named
  like a built-in role overrides the fields it sets, any other name adds a role, which then
  takes part in routing with no code change. Given an `agency.config.AgencyConfig`, each
  role's chain is filled from ``[llm.routing]`` by role name (an explicit ``chain`` wins) and
  every chain entry is checked to be a provider entry name or a ``"provider:model"`` spec.
- Every problem raises one `agency.errors.ConfigError` naming the key path
  (``agents.roles.legal.examples``) and the fix.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from agency.config import AgencyConfig, Section
from agency.errors import ConfigError, ProviderNotFound

__all__ = [
    "BUILTIN_ROLES",
    "FALLBACK_ROLE",
    "MIN_EXAMPLES",
    "SECTIONS",
    "Role",
    "roles_from_config",
]

FALLBACK_ROLE = "general"
"""The role of open questions and chat; also what a router answers for an empty task."""
MIN_EXAMPLES = 3
"""Example tasks a new role needs: fewer give the offline router too little to compare with."""
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
_KEYS = ("description", "system_prompt", "examples", "chain")
_TABLES = ("roles",)


@dataclass(frozen=True)
class Role:
    """A kind of task, how a model should approach it, and which models do it."""

    name: str
    """Unique name, e.g. ``"code"``; also the key of ``[llm.routing]`` that gives its chain."""
    description: str
    """One line on which tasks belong here; the LLM-assisted router reads it."""
    system_prompt: str
    """The system message a routed model gets for this role."""
    examples: tuple[str, ...] = ()
    """Typical tasks of this role; the offline router compares tasks with them."""
    chain: tuple[str, ...] = field(default=())
    """Provider entry names or ``"provider:model"`` specs to try in order; empty: the default."""

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(
                f"role name {self.name!r} must start with a letter and hold only letters, "
                "digits, '_' or '-' (at most 64 characters)"
            )
        # Lists are accepted for convenience and frozen, so a Role stays hashable.
        object.__setattr__(self, "examples", tuple(self.examples))
        object.__setattr__(self, "chain", tuple(self.chain))


# The example tasks below were written for this project; none comes from an evaluation set.
BUILTIN_ROLES: dict[str, Role] = {
    "code": Role(
        name="code",
        description="Programming: write, fix, explain, review or test code, scripts, SQL, "
        "shell commands and software configuration.",
        system_prompt="You are an expert software engineer. Write correct, idiomatic, "
        "well-tested code, explain it briefly, and point out edge cases and pitfalls.",
        examples=(
            "Write a Python function that returns the n-th Fibonacci number iteratively.",
            "Why does this JavaScript print undefined?\n```js\nconst x = [1, 2].map(n => { n * 2 });"
            "\nconsole.log(x[0]);\n```",
            "def merge_intervals(intervals: list[tuple[int, int]]) -> list[tuple[int, int]]:\n"
            '    """Merge overlapping intervals and return them sorted by start.\n'
            "    >>> merge_intervals([(1, 3), (2, 6), (8, 10)])\n"
            '    [(1, 6), (8, 10)]\n    """',
            "Write a SQL query that lists the five customers with the highest total order value "
            "in 2023.",
            "How do I fix 'ModuleNotFoundError: No module named requests' inside a virtualenv?",
            "Write a bash script that deletes log files older than seven days in /var/log/app.",
            "Implement a thread-safe LRU cache in Java with get and put in O(1).",
            "Explain the difference between a process and a thread, with a Go example using "
            "goroutines and channels.",
            "My React component re-renders on every keystroke; how do I memoize the expensive "
            "child list?",
            "Write a function to check whether a string is a valid IPv4 address.",
            "Write unit tests with pytest for a function parse_date(s) that returns a datetime.",
            "How do I configure nginx as a reverse proxy for a Flask app running on port 5000?",
            "Implement binary search on a sorted array and return -1 when the target is absent.",
            "What does `chmod +x deploy.sh` do?",
            "What is the difference between `==` and `is` in Python?",
        ),
    ),
    "math": Role(
        name="math",
        description="Mathematics: arithmetic and word problems, algebra, geometry, "
        "probability, statistics, calculus and proofs, solved step by step.",
        system_prompt="You are a careful mathematician. Reason step by step, show the key "
        "calculations, check the result, and state the final answer clearly.",
        examples=(
            "A shop sells pencils at 3 for $1.20. How much do 15 pencils cost?",
            "Solve for x: 3x^2 - 12x + 9 = 0.",
            "Tom has 24 marbles. He gives a third of them to his sister and loses 5 more. "
            "How many marbles does he have left?",
            "What is the probability of rolling two dice and getting a sum of 8?",
            "Prove that the square root of 2 is irrational.",
            "Compute the integral of x * e^(2x) dx.",
            "A train leaves at 9:40 and travels 210 km at 84 km/h. When does it arrive?",
            "Find all integers n such that n^2 + 5n + 6 is divisible by 7.",
            "The sides of a triangle are 7, 24 and 25. What is its area?",
            "If f(x) = ln(x^2 + 1), what is f'(x) and where is f increasing?",
            "How many ways can 8 people sit around a round table if two of them refuse to sit "
            "next to each other?",
            "Find the eigenvalues of the matrix [[2, 1], [1, 2]].",
            "The mean of five numbers is 12; four of them are 8, 10, 15 and 9. Find the fifth.",
            "What is 12% of 850?",
            "What is the limit of (1 + 1/n)^n as n goes to infinity?",
        ),
    ),
    "creative": Role(
        name="creative",
        description="Creative writing: stories, poems, song lyrics, scripts and scenes, "
        "dialogue, role-play, characters and other imaginative or persuasive prose.",
        system_prompt="You are a gifted creative writer. Write vivid, original prose or verse "
        "in the requested form, voice and length, and stay in character when asked to.",
        examples=(
            "Write a short story about a lighthouse keeper who finds a message in a bottle.",
            "Write a haiku sequence about the first snow in a city.",
            "Compose song lyrics about leaving your hometown, with a chorus that repeats.",
            "Write a screenplay scene where two rival chefs are locked in a kitchen overnight.",
            "You are a grumpy medieval innkeeper. Stay in character and greet a tired traveller.",
            "Write a limerick about a cat who learns to code.",
            "Create a villain for a fantasy novel: backstory, motives and a signature line.",
            "Continue this story: The last train out of the city had no driver.",
            "Write a heartfelt wedding toast for my best friend, funny but not embarrassing.",
            "Write a sonnet in the style of Shakespeare about a smartphone.",
            "Imagine you are a pirate captain rallying your crew before a storm. What do you say?",
            "Write a dialogue between the Moon and the Sun arguing about who is more important.",
            "Write a 1000-word science fiction story told in the first person by a robot.",
        ),
    ),
    "general": Role(
        name="general",
        description="General knowledge and conversation: factual questions, explanations, "
        "advice, opinions, history, science, health, culture and everyday chat.",
        system_prompt="You are a knowledgeable, friendly assistant. Answer accurately and "
        "concisely, say when something is uncertain or a myth, and ask when the question "
        "is unclear.",
        examples=(
            "What causes the seasons on Earth?",
            "who wrote the novel one hundred years of solitude",
            "Is it true that we only use 10 percent of our brains?",
            "How can I improve my sleep when I work night shifts?",
            "What were the main causes of the First World War?",
            "when did the berlin wall fall",
            "What is the difference between a virus and a bacterium?",
            "Can you recommend a few books for learning about economics?",
            "Why do cats purr?",
            "What happens if you swallow chewing gum?",
            "How does the electoral college work in the United States?",
            "What are some tips for a job interview?",
            "Hi! How are you today?",
            "What is the capital of Australia, and why isn't it Sydney?",
        ),
    ),
}


def roles_from_config(
    config: AgencyConfig | Mapping[str, Any] | None = None,
    *,
    base: Mapping[str, Role] | None = None,
    source: str | None = None,
) -> dict[str, Role]:
    """The roles configured in ``[agents.roles.NAME]``, merged over ``base`` (the built-ins).

    ``config`` is an `AgencyConfig` (its ``agents`` table is read, chains are filled from
    ``[llm.routing]`` by role name and chain entries are checked against its providers) or the
    raw ``[agents]`` table as a mapping. Raises `ConfigError` naming the key path and the fix.
    """
    base_roles = dict(BUILTIN_ROLES if base is None else base)
    if config is None:
        return base_roles
    agents: Any
    routing: Mapping[str, list[str]] | None
    where: str | None
    if isinstance(config, AgencyConfig):
        agents = config.section("agents")  # checked when the configuration loaded
        routing, where = config.llm.routing, source or config.source
    else:
        agents, routing, where = config, None, source
    if not isinstance(agents, Mapping):
        raise ConfigError(
            f"expected a table, got {type(agents).__name__}",
            source=where,
            key="agents",
            fix="write the roles as [agents.roles.NAME] tables",
        )
    for key in agents:
        if key not in _TABLES:
            close = difflib.get_close_matches(str(key), _TABLES, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"unknown key {key!r}{hint}",
                source=where,
                key=f"agents.{key}",
                fix=f"use only {', '.join(_TABLES)} (roles: [agents.roles.NAME] tables)",
            )
    table = agents.get("roles", {})
    if not isinstance(table, Mapping):
        raise ConfigError(
            f"expected a table of roles, got {type(table).__name__}",
            source=where,
            key="agents.roles",
            fix="write one [agents.roles.NAME] table per role, e.g. [agents.roles.legal] with "
            'description = "..." and examples = ["...", "...", "..."]',
        )
    roles = dict(base_roles)
    for name, spec in table.items():
        roles[name] = _role(str(name), spec, roles.get(name), where)
        if isinstance(config, AgencyConfig):
            _check_chain(config, roles[name], where)  # [llm.routing] is checked by the config
    if routing is not None:
        for name, role in roles.items():
            if not role.chain and routing.get(name):
                roles[name] = replace(role, chain=tuple(routing[name]))
    return roles


def _role(name: str, spec: Any, current: Role | None, source: str | None) -> Role:
    """One ``[agents.roles.NAME]`` table as a `Role`, over ``current`` when it exists."""
    path = f"agents.roles.{name}"
    if not _NAME.match(name):
        raise ConfigError(
            f"role name {name!r} is not valid",
            source=source,
            key=path,
            fix="name roles with a letter first and only letters, digits, '_' or '-'",
        )
    if not isinstance(spec, Mapping):
        raise ConfigError(
            f"expected a table, got {spec!r}",
            source=source,
            key=path,
            fix=f'write [agents.roles.{name}] with description = "..." and examples = [...]',
        )
    for key in spec:
        if key not in _KEYS:
            close = difflib.get_close_matches(str(key), _KEYS, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"unknown key {key!r}{hint}",
                source=source,
                key=f"{path}.{key}",
                fix=f"use only {', '.join(_KEYS)}",
            )
    description = _text(spec, "description", path, source, required=current is None)
    system_prompt = _text(spec, "system_prompt", path, source, required=False)
    examples = _strings(spec, "examples", path, source)
    chain = _strings(spec, "chain", path, source)
    if current is None:
        if examples is None or len(examples) < MIN_EXAMPLES:
            got = 0 if examples is None else len(examples)
            raise ConfigError(
                f"a new role needs at least {MIN_EXAMPLES} example tasks, got {got}",
                source=source,
                key=f"{path}.examples",
                fix=f'add examples = ["...", "...", "..."]: {MIN_EXAMPLES} or more typical '
                f"tasks of the {name!r} role, so the router can recognize them",
            )
        assert description is not None  # required above
        return Role(
            name=name,
            description=description,
            system_prompt=system_prompt
            or f"You are an expert assistant for this kind of task: {description}",
            examples=examples,
            chain=chain or (),
        )
    return replace(
        current,
        description=description or current.description,
        system_prompt=system_prompt or current.system_prompt,
        examples=current.examples if examples is None else examples,
        chain=current.chain if chain is None else chain,
    )


def _text(
    spec: Mapping[str, Any], key: str, path: str, source: str | None, *, required: bool
) -> str | None:
    value = spec.get(key)
    if value is None:
        if required:
            raise ConfigError(
                f"missing {key!r}",
                source=source,
                key=f"{path}.{key}",
                fix=f'add {key} = "..." (one line on which tasks belong to this role)',
            )
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(
            f"expected a non-empty string, got {value!r}",
            source=source,
            key=f"{path}.{key}",
            fix=f'write {key} = "..."',
        )
    return value.strip()


def _strings(
    spec: Mapping[str, Any], key: str, path: str, source: str | None
) -> tuple[str, ...] | None:
    value = spec.get(key)
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise ConfigError(
            f"expected a list of strings, got {value!r}",
            source=source,
            key=f"{path}.{key}",
            fix=f'write {key} = ["...", "..."]',
        )
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            raise ConfigError(
                f"expected a non-empty string, got {item!r}",
                source=source,
                key=f"{path}.{key}[{i}]",
                fix=f"make every item of {key} a non-empty string",
            )
    return tuple(item.strip() for item in value)


def _check_chain(config: AgencyConfig, role: Role, source: str | None) -> None:
    """Every chain entry is a provider entry name or a parseable ``"provider:model"`` spec."""
    from agency._specs import parse_spec

    for i, ref in enumerate(role.chain):
        if config.llm.find(ref) is not None:
            continue
        try:
            parse_spec(ref)
        except (ConfigError, ProviderNotFound):
            names = sorted({e.name for e in config.llm.providers})
            raise ConfigError(
                f"{ref!r} is not a provider entry or a 'provider:model' spec",
                source=source,
                key=f"agents.roles.{role.name}.chain[{i}]",
                fix=f"use one of the entry names {names} or a spec like 'openai:gpt-4o-mini'",
            ) from None


def _check_section(table: Any, config: AgencyConfig) -> Mapping[str, Any]:
    """The ``[agents]`` table, checked whole while the configuration loads."""
    for role in roles_from_config(table, source=config.source).values():
        _check_chain(config, role, config.source)
    return MappingProxyType(dict(table))


SECTIONS = [Section(("agents",), check=_check_section)]
"""What `agency.config` hands this layer (the ``agency.config`` entry point ``agents``)."""
