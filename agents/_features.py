"""What the offline router looks at, and the small numpy fitting code behind its parameters.

Contract:

- `signals(text)` returns the cheap signals, in the order of `SIGNALS`: counts (``log1p``) and
  flags of code fences, backticks, snake_case and camelCase identifiers, code keywords and
  punctuation, language and tool names, numbers, formulas, LaTeX and math words, "write a
  story/poem/song/screenplay" requests and creative vocabulary, role-play openings, question
  words, lower-case search queries, and length. `SIGNAL_LABELS` names each in words for the
  router's ``reason``. Word lists are looked up per token (one dict lookup each) and the few
  regexes are compiled once; a task is read up to `MAX_CHARS` (patterns: `HEAD_CHARS`, word
  lists: `MAX_TOKENS` tokens), which keeps a call at tens of microseconds.
- `design(vectors, texts)` is the learned model's input matrix: unit embeddings (of the
  first `EMBED_CHARS` characters, embedded by the caller), then the signals.
- `fit_softmax` fits an L2-regularized multinomial logistic regression by Nesterov-accelerated
  gradient descent on standardized inputs and returns weights for the raw inputs;
  `cross_validated_logits`, `stratified_folds`, `fit_temperature`, `macro_f1` and `confusion`
  are shared by ``benchmarks/fit_router.py``, ``benchmarks/router_eval.py`` and the tests, so
  all of them measure the same thing.

numpy is imported inside the functions that need it, so importing this module stays light.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

__all__ = [
    "EMBED_CHARS",
    "HEAD_CHARS",
    "MAX_CHARS",
    "MAX_TOKENS",
    "SIGNALS",
    "SIGNAL_LABELS",
    "confusion",
    "cross_validated_logits",
    "design",
    "fit_softmax",
    "fit_temperature",
    "macro_f1",
    "signals",
    "softmax",
    "stratified_folds",
    "unit_rows",
]

EMBED_CHARS = 1000
"""Characters of a task that are embedded: long tasks embed slowly and their opening says
what they are (cross-validated macro-F1 moved by < 0.005 between 500 chars and all of it)."""
MAX_CHARS = 4000
"""Characters of a task the counting signals read; this bounds latency on long tasks."""
HEAD_CHARS = 1500
"""Characters the costlier pattern signals read: a task's opening says what it is."""
MAX_TOKENS = 400
"""Word tokens looked up in the word lists, for the same reason."""


def _words(text: str) -> tuple[str, ...]:
    """A word list written as text (reads better than a list of quoted words)."""
    return tuple(text.split())


# Word lists, looked up per token (one dict lookup each): far faster than regex alternations.
_CODE_KEYWORDS = frozenset(
    _words("""
    def class import return function const let var void public private static elif lambda
    async await struct enum fn impl println printf self this null None True False int str bool
    float char std print for while if else try except catch include console nullptr typedef
    namespace
    """)
)
_SQL = frozenset(_words("SELECT FROM WHERE JOIN INSERT UPDATE GROUP ORDER TABLE"))
_LOWER_GROUPS: dict[str, tuple[str, ...]] = {
    "languages": _words("""
    python javascript typescript java c++ c# rust golang ruby php kotlin swift scala haskell
    perl sql mysql postgres postgresql sqlite html css bash shell powershell regex json yaml xml
    api docker kubernetes linux ubuntu windows git github react vue angular django flask fastapi
    pandas numpy node nodejs npm pip vba matlab unity godot arduino excel aws nginx gpu cuda
    pytorch tensorflow compiler terminal cli http url csv lua dart jupyter
    """),
    "programming_words": _words("""
    function functions code coding program programs programming script scripts algorithm array
    arrays list lists string strings integer integers implement implementation debug compile
    bug bugs error errors exception method methods variable variables database query server
    install installation library framework loop recursion recursive binary tuple tuples
    dictionary dict parameter parameters argument arguments return returns input output element
    elements index substring characters boolean nested sorted sort refactor deploy config
    configure app software
    """),
    "math_words": _words("""
    solve compute calculate calculation probability equation equations integral derivative
    prove proof theorem sum total average mean median percent percentage ratio minimum maximum
    smallest largest triangle circle area perimeter volume digit digits prime primes divisible
    remainder polynomial matrix sequence modulo square cube root fraction decimal radius angle
    simplify factor logarithm geometric arithmetic velocity speed distance rate interest real
    value
    """),
    "how_many_words": _words("twice half times each per fewer more less left remaining"),
    "creative_words": _words("""
    story stories poem poetry lyrics song rap screenplay script scene character characters plot
    protagonist villain hero heroine fantasy fiction fictional narrative narrator chapter novel
    verse rhyme rhymes stanza haiku sonnet limerick dialogue episode tale dragon magic kingdom
    wizard fairy roleplay imagine pretend vivid descriptive creative humorous comedy funny twist
    tone voice atmosphere emotional suspense setting worldbuilding horror romance
    """),
    "question_words": _words("what who when where why how which"),
    "first_person": _words("i my me i'm i've we our"),
    "advice": _words(
        "tips advice recommend explain history opinion think difference meaning true benefits"
    ),
}
_LOWER_WORDS: dict[str, tuple[str, ...]] = {}
for _group, _members in _LOWER_GROUPS.items():
    for _word in _members:
        _LOWER_WORDS[_word] = (*_LOWER_WORDS.get(_word, ()), _group)

# Words that open a request ("write a short story", "implement a function"), and what is asked.
_REQUEST_VERBS = frozenset(
    _words(
        "write compose create craft draft tell generate make continue implement build develop "
        "fix debug refactor code"
    )
)
_CREATIVE_NOUNS = frozenset(
    _words("""
    story stories poem poems poetry song songs lyrics rap screenplay script scene haiku limerick
    sonnet verse novel chapter tale fable dialogue monologue episode narrative fiction fanfic
    letter speech toast ballad riddle joke twister paragraph description essay blog
    advertisement slogan email
    """)
)
_CODE_NOUNS = frozenset(
    _words("function program script class method query regex code app api algorithm")
)
_REQUEST_SPAN = 8
"""Tokens after a request verb in which its object ("a short sad story") is looked for."""
_HEAD_TOKENS = 120
"""Tokens in which requests are looked for: a task says what it wants early."""
_HOW = frozenset(_words("many much long far old"))
_COMPARATIVES = frozenset(_words("more less fewer"))
_FIND = frozenset(_words("the all a an"))
_QUESTION_OPENERS = frozenset(
    _words(
        "what who whom whose when where why how which is are was were do does did can could "
        "should would will has have"
    )
)
_ROLEPLAY_OPENERS = frozenset(
    {("as", "a"), ("as", "an"), ("you", "are"), ("you're", "a"), ("act", "as")}
)
_UNIT_WORDS = frozenset(
    _words("""
    km kg cm mm m g mph mile miles hour hours minute minutes second seconds day days week weeks
    year years dollar dollars cent cents pound pounds feet foot inch inches liter liters litre
    litres gallon gallons ounce ounces percent
    """)
)

_TOKEN = re.compile(r"[A-Za-z0-9_'+#]+")
_CALL = re.compile(r"\w\(")
_BRACES = re.compile(r"[{}\[\]]")
_SEMICOLON_EOL = re.compile(r";[ \t]*$", re.MULTILINE)
_CODE_OPERATORS = re.compile(r"==|!=|->|=>|::|\+=|-=|&&|\|\||\+\+|</?\w+>")
_INDENTED = re.compile(r"^(    |\t)\S", re.MULTILINE)
_DOCTEST = re.compile(r'>>>|"""|\'\'\'')
_DIGIT = re.compile(r"\d")
_DECIMAL = re.compile(r"\d[./]\d")
_FORMULA = re.compile(r"[\w)] ?[-+*/^×÷=<>] ?[\w(]")  # noqa: RUF001 (math signs on purpose)
_LATEX = re.compile(r"\\[a-z]{2,8}\b|\$[^$\n]{1,80}\$")
_MATH_SYMBOLS = re.compile(r"[≤≥−×÷√π∑∫∞≠≈°²³∈∀∃⊂∪∩]")  # noqa: RUF001 (on purpose)
_PUNCTUATION = re.compile(r"[^\w\s]")
_PROMPT_LABEL = re.compile(r"\[[A-Z][\w ]{2,30}\]")

SIGNALS: tuple[str, ...] = (
    "code_fence",
    "backticks",
    "snake_case",
    "camel_case",
    "code_keywords",
    "sql",
    "calls",
    "brackets",
    "semicolons",
    "code_operators",
    "indented_lines",
    "docstring",
    "languages",
    "programming_words",
    "write_code",
    "digit_ratio",
    "numbers",
    "quantities",
    "formulas",
    "latex",
    "math_symbols",
    "math_words",
    "how_many",
    "units",
    "write_creative",
    "creative_words",
    "roleplay",
    "word_count",
    "quotes",
    "question_start",
    "question_mark",
    "lowercase_query",
    "question_words",
    "first_person",
    "advice",
    "chars",
    "words",
    "lines",
    "mean_word_length",
    "punctuation_ratio",
)
"""The cheap signals, in the order `signals` returns them."""

_QUANTITATIVE = {
    "digit_ratio": ("few digits", "many digits"),
    "chars": ("a short text", "a long text"),
    "words": ("few words", "many words"),
    "lines": ("a single line", "many lines"),
    "mean_word_length": ("short words", "long words"),
    "punctuation_ratio": ("little punctuation", "much punctuation"),
}
_PRESENT = {
    "code_fence": "a code fence",
    "backticks": "backticks",
    "snake_case": "snake_case identifiers",
    "camel_case": "camelCase identifiers",
    "code_keywords": "code keywords",
    "sql": "SQL keywords",
    "calls": "function calls",
    "brackets": "brackets",
    "semicolons": "semicolons",
    "code_operators": "code operators",
    "indented_lines": "indented code",
    "docstring": "a docstring or doctest",
    "languages": "language or tool names",
    "programming_words": "programming words",
    "write_code": "a request for code",
    "numbers": "numbers",
    "quantities": "prices, decimals or fractions",
    "formulas": "formulas",
    "latex": "LaTeX",
    "math_symbols": "math symbols",
    "math_words": "math words",
    "how_many": "a how-many question",
    "units": "quantities with units",
    "write_creative": "a request for a story, poem or script",
    "creative_words": "creative-writing words",
    "roleplay": "a role-play opening",
    "word_count": "a word count or writing prompt",
    "quotes": "quotation marks",
    "question_start": "a question word first",
    "question_mark": "a question mark",
    "lowercase_query": "a lower-case search query",
    "question_words": "question words",
    "first_person": "first-person words",
    "advice": "a request for advice or explanation",
}
SIGNAL_LABELS: dict[str, tuple[str, str]] = {
    name: _QUANTITATIVE.get(name)
    or (f"no {_PRESENT[name]}".replace("no a ", "no "), _PRESENT[name])
    for name in SIGNALS
}
"""Each signal in words, (when below its usual value, when above), for ``reason``."""

_TINY = 1e-12
"""Norms below this count as zero: a zero vector stays zero instead of dividing by zero."""
_LOG1P = tuple(math.log1p(n) for n in range(4 * MAX_CHARS + 1))
"""log1p of small counts, looked up rather than computed."""


def _count(pattern: re.Pattern[str], text: str) -> float:
    return _LOG1P[len(pattern.findall(text))]


def _near(verbs: list[int], objects: list[int]) -> bool:
    return any(0 < o - v <= _REQUEST_SPAN for v in verbs for o in objects)


def _token_counts(words: list[str]) -> dict[str, int]:
    """One pass over the tokens: word-list groups, identifiers, numbers and requests."""
    counts = dict.fromkeys(
        (
            "snake_case",
            "camel_case",
            "code_keywords",
            "sql",
            "numbers",
            "units",
            "how_many",
            "word_count",
            *_LOWER_GROUPS,
        ),
        0,
    )
    lower_words = _LOWER_WORDS
    verbs: list[int] = []
    creative: list[int] = []
    code: list[int] = []
    previous = ""
    for i, word in enumerate(words):
        lower = word.lower()
        first = word[0]
        if first.isdigit():
            counts["numbers"] += 1
        elif word in _CODE_KEYWORDS:
            counts["code_keywords"] += 1
        elif word in _SQL:
            counts["sql"] += 1
        if "_" in word[1:-1] and (first.islower() or first == "_"):
            counts["snake_case"] += 1
        elif first.islower() and not word.islower():
            counts["camel_case"] += 1
        for group in lower_words.get(lower, ()):
            counts[group] += 1
        if previous and previous[0].isdigit():
            counts["units"] += lower in _UNIT_WORDS
            counts["word_count"] += lower in ("word", "words")
        if (
            (previous == "how" and lower in _HOW)
            or (lower == "than" and previous in _COMPARATIVES)
            or (previous == "find" and lower in _FIND)
        ):
            counts["how_many"] += 1
        if i < _HEAD_TOKENS:
            if lower in _REQUEST_VERBS:
                verbs.append(i)
            if lower in _CREATIVE_NOUNS:
                creative.append(i)
            if lower in _CODE_NOUNS:
                code.append(i)
        previous = lower
    counts["write_creative"] = _near(verbs, creative)
    counts["write_code"] = _near(verbs, code)
    return counts


def signals(text: str) -> list[float]:
    """The cheap signals of ``text`` in the order of `SIGNALS` (counts as ``log1p``)."""
    text = text[:MAX_CHARS]
    head = text[:HEAD_CHARS]
    lower_head = head.lower()
    stripped = text.strip()
    chars = len(text)
    spaces = text.count(" ")
    words = _TOKEN.findall(text)[:MAX_TOKENS]
    n_words = len(text.split())
    counts = _token_counts(words)
    opening = (words[0].lower(), words[1].lower()) if len(words) > 1 else ("", "")
    roleplay = (
        opening in _ROLEPLAY_OPENERS
        or opening[0] in ("imagine", "pretend", "roleplay")
        or "in the style of" in lower_head
        or "stay in character" in lower_head
    )
    log = _LOG1P
    return [
        float("```" in text),
        log[text.count("`")],
        log[counts["snake_case"]],
        log[counts["camel_case"]],
        log[counts["code_keywords"]],
        log[counts["sql"]],
        _count(_CALL, head),
        _count(_BRACES, text),
        _count(_SEMICOLON_EOL, text),
        _count(_CODE_OPERATORS, text),
        _count(_INDENTED, text),
        float(bool(_DOCTEST.search(text))),
        log[counts["languages"]],
        log[counts["programming_words"]],
        float(counts["write_code"]),
        len(_DIGIT.findall(text)) / chars if chars else 0.0,
        log[counts["numbers"]],
        log[sum(map(head.count, "$%€£")) + len(_DECIMAL.findall(head))],
        _count(_FORMULA, head),
        _count(_LATEX, head),
        _count(_MATH_SYMBOLS, head),
        log[counts["math_words"]],
        log[counts["how_many"] + counts["how_many_words"]],
        log[counts["units"]],
        float(counts["write_creative"]),
        log[counts["creative_words"]],
        float(roleplay),
        float(counts["word_count"] > 0 or bool(_PROMPT_LABEL.search(head))),
        log[text.count('"')],
        float(bool(words) and words[0].lower() in _QUESTION_OPENERS),
        float(stripped.endswith("?")),
        float(bool(stripped) and stripped.islower() and "\n" not in stripped and n_words < 20),
        log[counts["question_words"]],
        log[counts["first_person"]],
        log[counts["advice"]],
        math.log1p(chars),
        math.log1p(n_words),
        log[text.count("\n")],
        (chars - spaces) / n_words if n_words else 0.0,
        len(_PUNCTUATION.findall(text)) / chars if chars else 0.0,
    ]


def unit_rows(vectors: Any) -> Any:
    """``vectors`` as a float64 array scaled to unit length per row (zero rows stay zero)."""
    import numpy as np

    array = np.asarray(vectors, dtype=np.float64)
    norms = np.sqrt((array * array).sum(axis=-1, keepdims=True))
    return array / np.maximum(norms, _TINY)


def design(units: Any | None, texts: Sequence[str]) -> Any:
    """The learned model's inputs per text: the unit embeddings (when given), then `signals`."""
    import numpy as np

    rows = np.array([signals(t) for t in texts], dtype=np.float64).reshape(len(texts), -1)
    return rows if units is None else np.concatenate((units, rows), axis=1)


# --------------------------------------------------------------------------- fitting
def fit_softmax(x: Any, y: Any, n_classes: int, l2: float, steps: int = 400) -> tuple[Any, Any]:
    """Multinomial logistic regression: ``(weights (d, C), bias (C,))`` for raw ``x``.

    Minimizes the summed cross-entropy plus ``l2 / 2 * ||W||^2`` on standardized inputs
    (the bias is not shrunk) by Nesterov-accelerated gradient descent with step ``1 / L``;
    the problem is convex, so this converges to the one optimum. The standardization is
    folded back into the returned weights.
    """
    import numpy as np

    x = np.asarray(x, dtype=np.float64)
    mean, std = x.mean(axis=0), x.std(axis=0)
    std = np.where(std > 1e-12, std, 1.0)
    z = np.hstack([(x - mean) / std, np.ones((len(x), 1))])
    onehot = np.eye(n_classes)[np.asarray(y)]
    # The softmax loss's Hessian is at most 1/2 * Z'Z (per class block); plus the ridge.
    lipschitz = 0.5 * float(np.linalg.norm(z, ord=2)) ** 2 + l2
    penalty = np.full((z.shape[1], 1), l2)
    penalty[-1] = 0.0
    w = np.zeros((z.shape[1], n_classes))
    previous = w
    for step in range(1, steps + 1):
        look = w + (step - 2) / (step + 1) * (w - previous) if step > 1 else w
        logits = z @ look
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        gradient = z.T @ (p - onehot) + penalty * look
        previous, w = w, look - gradient / lipschitz
    weights = w[:-1] / std[:, None]
    return weights, w[-1] - mean @ weights


def cross_validated_logits(
    x: Any,
    y: Any,
    n_classes: int,
    l2: float,
    folds: Sequence[Any],
    steps: int = 400,
    extra: tuple[Any, Any] | None = None,
) -> Any:
    """Out-of-fold logits: each fold scored by a model fitted on the other folds.

    ``extra`` (inputs, labels) are rows added to every fold's training set and never scored
    (the built-in roles' example tasks).
    """
    import numpy as np

    x, y = np.asarray(x), np.asarray(y)
    out = np.zeros((len(y), n_classes))
    for fold in folds:
        train = np.setdiff1d(np.arange(len(y)), fold)
        train_x, train_y = x[train], y[train]
        if extra is not None:
            train_x = np.concatenate((train_x, extra[0]))
            train_y = np.concatenate((train_y, extra[1]))
        weights, bias = fit_softmax(train_x, train_y, n_classes, l2, steps)
        out[fold] = x[fold] @ weights + bias
    return out


def softmax(logits: Any) -> Any:
    """Row-wise softmax of a (n, C) array."""
    import numpy as np

    shifted = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)


def fit_temperature(logits: Any, y: Any) -> float:
    """The temperature T minimizing the cross-entropy of ``softmax(logits / T)`` (grid search)."""
    import numpy as np

    y = np.asarray(y)
    best, best_loss = 1.0, math.inf
    for t in np.exp(np.linspace(math.log(0.1), math.log(10.0), 201)):
        p = softmax(logits / t)
        loss = -float(np.log(np.maximum(p[np.arange(len(y)), y], 1e-12)).mean())
        if loss < best_loss:
            best, best_loss = float(t), loss
    return best


def stratified_folds(y: Sequence[int], k: int, seed: int = 0) -> list[Any]:
    """``k`` disjoint index arrays, each holding about 1/k of every class (shuffled by seed)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    labels = np.asarray(y)
    folds: list[list[int]] = [[] for _ in range(k)]
    offset = 0
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        for i, index in enumerate(members):
            folds[(i + offset) % k].append(int(index))
        offset += len(members)  # spread the remainders of each class over different folds
    return [np.array(sorted(f)) for f in folds]


def confusion(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int) -> Any:
    """Counts: rows are true classes, columns predicted ones."""
    import numpy as np

    out = np.zeros((n_classes, n_classes), dtype=int)
    np.add.at(out, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return out


def macro_f1(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int) -> float:
    """The unweighted mean of the per-class F1 scores."""
    matrix = confusion(y_true, y_pred, n_classes)
    scores = []
    for c in range(n_classes):
        tp = matrix[c, c]
        precision = tp / matrix[:, c].sum() if matrix[:, c].sum() else 0.0
        recall = tp / matrix[c].sum() if matrix[c].sum() else 0.0
        scores.append(2 * precision * recall / (precision + recall) if tp else 0.0)
    return float(sum(scores) / n_classes)
