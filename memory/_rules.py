"""The hard vetoes and the lexical features of `memory.verify` (see its docstring for the rules).

Pure Python: texts are parsed once (cached per process) into words, numbers, names, negation
and question kind; `veto` compares two parsed texts and `features` measures their overlap.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["FEATURES", "features", "veto"]

# fmt: off
_STOPWORDS = frozenset("""
a an the is are was were be been being am do does did doing done have has had having i me my
mine we us our you your yours he him his she her it its they them their this that these those
there here of in on at for with by about as into onto from to up down out off over under again
further then once and or but if so than too very can could will would shall should may might
must just also only own same such both each few more most other some any all how why what when
where who whom whose which does get got gets getting go goes going make makes
one ones someone something anyone anything way ways best good better really much many lot lots
thing things like know use using used want need possible people person
""".split())  # noqa: SIM905 (a word list reads better as text)
_NEGATIONS = frozenset({
    "not", "no", "never", "without", "nobody", "nothing", "none", "neither", "nor", "nowhere",
    "cannot", "cant", "dont", "doesnt", "didnt", "isnt", "arent", "wasnt", "werent", "wont",
    "wouldnt", "shouldnt", "couldnt", "havent", "hasnt", "hadnt", "aint",
})
_ANTONYMS = (
    ("enable", "disable"), ("enabled", "disabled"), ("increase", "decrease"),
    ("increasing", "decreasing"), ("buy", "sell"), ("buying", "selling"), ("before", "after"),
    ("gain", "lose"), ("win", "lose"), ("add", "remove"), ("start", "stop"),
    ("install", "uninstall"), ("encrypt", "decrypt"), ("import", "export"),
    ("upload", "download"), ("maximum", "minimum"), ("max", "min"), ("best", "worst"),
    ("advantages", "disadvantages"), ("pros", "cons"), ("cheapest", "expensive"),
    ("highest", "lowest"), ("largest", "smallest"), ("biggest", "smallest"),
    ("male", "female"), ("men", "women"), ("boy", "girl"), ("boyfriend", "girlfriend"),
    ("husband", "wife"), ("positive", "negative"), ("legal", "illegal"), ("true", "false"),
    ("open", "close"), ("lock", "unlock"),
    ("connect", "disconnect"), ("subscribe", "unsubscribe"), ("follow", "unfollow"),
    ("first", "last"), ("rich", "poor"), ("hot", "cold"), ("love", "hate"),
)
_NUMBER_WORDS = {
    "zero": "0", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6", "seven": "7",
    "eight": "8", "nine": "9", "ten": "10", "eleven": "11", "twelve": "12", "twenty": "20",
    "hundred": "100", "thousand": "1000", "million": "1000000", "billion": "1000000000",
}
# "one" is left out: far more often a pronoun ("which one") than a count.
_QUESTION_CLASS = {
    "how": "how", "why": "why", "what": "what", "which": "what", "when": "when",
    "where": "where", "who": "who", "whom": "who", "whose": "who",
}
# Openings whose question word misstates the kind of question asked.
_REPHRASED = (
    (re.compile(r"^(what|which)( is| are| was| were)? (the )?(best |easiest |fastest |"
                r"quickest |simplest |right |proper |good |only )?(ways?|steps|methods?|"
                r"process|procedure)\b"), "how"),
    (re.compile(r"^(what|which)( is| are| was| were)? (the |some )?(main |real |possible |"
                r"actual )?(reasons?|causes?|purpose|motive)\b"), "why"),
    (re.compile(r"^(what|which)( is| are| was| were)? (the )?(best |right |good )?"
                r"(places?|locations?|cities|city|countries|country)\b"), "where"),
    (re.compile(r"^(what|which)( is| are| was| were)? (the )?(best |right |good )?"
                r"(time|year|date|age|day|month)\b"), "when"),
    (re.compile(r"^(in )?what (way|manner)\b"), "how"),
    (re.compile(r"^how come\b"), "why"),
    (re.compile(r"^for what (reason|purpose)\b"), "why"),
)
# Question kinds that cannot be the same question. "what" is left out: "what is X" asks
# for many kinds of answer, and it pairs with every other word in true paraphrases.
_CLASHING = frozenset({"how", "why", "when", "where", "who"})
# Connectives whose two sides cannot swap without changing the meaning.
_ASYMMETRIC = frozenset({"to", "into", "from", "than", "by", "over", "under", "before", "after"})
# fmt: on
_OPPOSITES: dict[str, frozenset[str]] = {
    word: frozenset(b if a == word else a for a, b in _ANTONYMS if word in (a, b))
    for pair in _ANTONYMS
    for word in pair
}
"""Each word of `_ANTONYMS` to its opposites ("lose" has two: "gain" and "win"). Prepositions
(on/off, in/out, up/down) are left out: they flip meaning far less often than they occur."""

_TOKEN = re.compile(r"(?:[A-Za-z]\.){2,}|\d+(?:[.,]\d+)*|[A-Za-z]+(?:['\u2019][A-Za-z]+)?|[&,]")
"""Acronyms with dots ("U.S."), numbers ("1,000.5"), words with an apostrophe, "&" and ","."""
_ABBREVIATIONS = frozenset({"mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "vs", "etc"})
"""Words a "." follows without ending the sentence; titles are not names themselves."""
_TITLE_CASE_MIN_WORDS = 4
_TITLE_CASE_SHARE = 0.6
_DIGITS = re.compile(r"\d")
_SENTENCE_END = re.compile(r"[.?!:;]")
_BOUNDARY = "."
"""Marker put in `_Parsed.words` where a sentence ends, so rules stay within a sentence."""
_PUNCTUATION = frozenset({_BOUNDARY, ",", "&"})
_THOUSANDS = re.compile(r"^\d{1,3}(,\d{3})+$")
_OPENING_WORDS = 12
"""Words of a question's opening matched against `_REPHRASED`."""
_OPENING_FILLER = frozenset({"so", "and", "but", "then", "now", "ok", "okay", "well", "hi", "hey"})
_ENTITY_PREFIX = 4
"""Two name words match when the shorter, at least this long, starts the longer ..."""
_ENTITY_SUFFIX = 2
"""... and the longer adds at most this many letters ("India" / "Indian"; not "Canada" /
"Canadian", a limit of prefix matching)."""
_TYPO_MIN_LENGTH = 5
"""Name words this long match with one typo ("Hilary" / "Hillary")."""
_PARSE_CACHE = 4096
"""Parsed texts kept: a cache answers repeated queries, and each hit re-parses two texts."""

FEATURES = (
    "cosine",
    "cosine_squared",
    "word_jaccard",
    "content_jaccard",
    "log_unmatched_content",
    "length_ratio",
    "same_question_kind",
    "one_sided_entity",
    "same_first_word",
)
"""Names of the learned verifier's features, in the order of its weights (see `features`)."""


# --------------------------------------------------------------------------- parsing
@dataclass(frozen=True)
class _Parsed:
    """What the vetoes and features need to know about one text."""

    words: tuple[str, ...]
    """Lower-cased word and number tokens, in order (apostrophes removed: "don't" -> "dont")."""
    numbers: frozenset[str]
    """Canonical numbers: "10.0" and "10" are both "10"; "1,000" is "1000"; "ten" is "10"."""
    entities: frozenset[str]
    """Lower-cased capitalized words that do not open a sentence (plus all-caps acronyms)."""
    names: tuple[tuple[str, ...], ...]
    """The entities grouped into names: runs of capitalized words ("lake", "tahoe")."""
    negated: bool
    """Whether any negation word occurs."""
    question: str | None
    """The kind of question asked (how/why/what/when/where/who), from the opening words."""
    content: frozenset[str]
    """Words that carry the topic: not stopwords, not numbers."""


def _canonical_number(token: str) -> str:
    if _THOUSANDS.match(token):
        token = token.replace(",", "")
    token = token.replace(",", ".")
    try:
        value = float(token)
    except ValueError:
        return token
    return str(int(value)) if value.is_integer() else repr(value)


def _question_kind(words: Sequence[str]) -> str | None:
    """The question's kind from its opening (after fillers such as "so,"), else None."""
    start = 0
    while start < len(words) and words[start] in _OPENING_FILLER:
        start += 1
    if start >= len(words):
        return None
    opening = " ".join(words[start : start + _OPENING_WORDS])
    for pattern, rephrased in _REPHRASED:
        if pattern.match(opening):
            return rephrased
    kind = _QUESTION_CLASS.get(words[start])
    if kind is None and start + 1 < len(words) and words[start] in {"in", "on", "at", "for"}:
        kind = _QUESTION_CLASS.get(words[start + 1])  # "in which country", "for what"
    return kind


def _negates(words: Sequence[str]) -> bool:
    """Whether the last word negates: "or not" / "or why not" / "whether not" do not."""
    word = words[-1]
    if word != "not":
        return word in _NEGATIONS
    before = words[-3:-1]
    return not (before[-1:] in (["or"], ["whether"]) or before == ["or", "why"])


def _title_case(text: str) -> bool:
    """Whether most words are capitalized ("How To Win Friends"): then capitals mark no names."""
    alphabetic = [w for w in _TOKEN.findall(text)[1:] if w[:1].isalpha()]
    capitalized = sum(1 for w in alphabetic if w[0].isupper())
    return len(alphabetic) >= _TITLE_CASE_MIN_WORDS and capitalized > _TITLE_CASE_SHARE * len(
        alphabetic
    )


@functools.lru_cache(maxsize=_PARSE_CACHE)
def _parse(text: str) -> _Parsed:
    words: list[str] = []
    numbers: set[str] = set()
    names: list[tuple[str, ...]] = []
    phrase: list[str] = []
    negated = False
    previous_end = 0
    previous = ""
    title_case = _title_case(text)
    for match in _TOKEN.finditer(text):
        token = match.group()
        gap = text[previous_end : match.start()]
        # A sentence starts at the text's start and after . ? ! : ; (its first word is
        # capitalized whatever it is, so it says nothing about names), but not after "Mr.".
        sentence_start = not words or (
            bool(_SENTENCE_END.search(gap)) and previous not in _ABBREVIATIONS
        )
        previous_end = match.end()
        if sentence_start and words:
            words.append(_BOUNDARY)
        if phrase and (token in {"&", ","} or gap.strip(" -'\"\u2019")):
            names.append(tuple(phrase))  # punctuation ends a multi-word name
            phrase = []
        if token in {"&", ","}:
            words.append(token)
            previous = token
            continue
        lower = token.lower().replace("\u2019", "'").replace(".", "")
        contracted = lower.endswith("n't")  # any "n't": can't, mustn't, needn't, ...
        lower = lower.replace("'", "") if contracted else lower.split("'")[0]
        previous = lower
        words.append(lower)
        negated = negated or contracted or _negates(words)
        capitalized = token[0].isupper() and lower not in _STOPWORDS and not title_case
        if _DIGITS.search(token):
            numbers.add(_canonical_number(token))
        elif lower in _NUMBER_WORDS:
            numbers.add(_NUMBER_WORDS[lower])
        elif (
            capitalized
            and lower not in _ABBREVIATIONS
            and (not sentence_start or (token.isupper() and len(token) > 1))
        ):
            phrase.append(lower)
            continue
        if phrase:
            names.append(tuple(phrase))
            phrase = []
    if phrase:
        names.append(tuple(phrase))
    content = frozenset(
        w for w in words if w not in _STOPWORDS and not _DIGITS.search(w) and len(w) > 1
    )
    return _Parsed(
        words=tuple(words),
        numbers=frozenset(numbers),
        entities=frozenset(w for name in names for w in name),
        names=tuple(names),
        negated=negated,
        question=_question_kind(words),
        content=content,
    )


# --------------------------------------------------------------------------- vetoes
def _same_entity(a: str, b: str) -> bool:
    """Equal up to a plural or a short suffix ("indian"/"india"), or one typo ("hilary")."""
    if a == b:
        return True
    short, long_ = (a, b) if len(a) <= len(b) else (b, a)
    if long_ in (short + "s", short + "es"):
        return True
    suffix = len(long_) - len(short)
    if len(short) >= _ENTITY_PREFIX and suffix <= _ENTITY_SUFFIX and long_.startswith(short):
        return True
    if len(short) >= _TYPO_MIN_LENGTH and len(long_) - len(short) <= 1:
        return _one_edit(short, long_)
    return False


def _one_edit(short: str, long_: str) -> bool:
    """Whether one substitution (same lengths) or one insertion turns ``short`` into ``long_``."""
    if len(short) == len(long_):
        return sum(x != y for x, y in zip(short, long_, strict=True)) == 1
    i = next((i for i, (x, y) in enumerate(zip(short, long_, strict=False)) if x != y), len(short))
    return short[i:] == long_[i + 1 :]


def _unmatched_entities(mine: _Parsed, theirs: _Parsed) -> list[str]:
    """My names the other text does not mention.

    A name is mentioned when its last word (the head: "Tahoe" of "Lake Tahoe", "Modi" of
    "Narendra Modi") occurs there, as a name or a plain word, or when the head of one of its
    names occurs in mine ("Modi" for "Modi Government").
    """
    heads = {name[-1] for name in theirs.names}
    unmatched = []
    for name in mine.names:
        head = name[-1]
        if head in theirs.words or any(_same_entity(head, e) for e in theirs.entities):
            continue
        if any(_same_entity(word, h) for word in name for h in heads):
            continue
        unmatched.append(" ".join(name))
    return sorted(unmatched)


def _directed(
    words: Sequence[str], keys: frozenset[str], names: frozenset[str]
) -> set[tuple[str, str, str]]:
    """(left, connective, right) triples across each asymmetric connective of a sentence.

    The nearest key word on each side ("10 miles to km": miles, to, km) and every pair of
    names (entities, numbers) on opposite sides ("Pakistan give Kashmir to India": pakistan,
    to, india). Only the nearest plain words count, so "an email to remind" does not pair
    "email" with every later word.
    """
    triples: set[tuple[str, str, str]] = set()
    start = 0
    while start < len(words):
        end = next((j for j in range(start, len(words)) if words[j] == _BOUNDARY), len(words))
        sentence = words[start:end]
        start = end + 1
        for i, word in enumerate(sentence):
            if word not in _ASYMMETRIC:
                continue
            lefts = [w for w in sentence[:i] if w in keys]
            rights = [w for w in sentence[i + 1 :] if w in keys]
            if not lefts or not rights:
                continue
            pairs = {(lefts[-1], rights[0])}
            pairs |= {(lt, rt) for lt in lefts if lt in names for rt in rights if rt in names}
            triples |= {(lt, word, rt) for lt, rt in pairs if lt != rt}
    return triples


def veto(query: str, candidate: str) -> str | None:
    """Why ``candidate`` cannot answer ``query`` by the hard rules, or None if none applies."""
    a, b = _parse(query), _parse(candidate)
    if a.numbers != b.numbers:
        only_a, only_b = sorted(a.numbers - b.numbers), sorted(b.numbers - a.numbers)
        return f"different numbers: {' '.join(only_a) or '-'} vs {' '.join(only_b) or '-'}"
    if a.negated != b.negated:
        return "one negates and the other does not"
    words_a, words_b = set(a.words), set(b.words)
    for word in sorted(words_a - words_b):
        # Opposites only one side uses: "pros and cons" vs "pros" is no contrast.
        opposites = sorted(_OPPOSITES.get(word, frozenset()) & (words_b - words_a))
        if opposites:
            return f"opposite words: {word} vs {opposites[0]}"
    if a.question != b.question and a.question in _CLASHING and b.question in _CLASHING:
        return f"different questions: {a.question} vs {b.question}"
    only_a = _unmatched_entities(a, b)
    only_b = _unmatched_entities(b, a)
    if only_a and only_b:
        return f"different entities: {' '.join(only_a)} vs {' '.join(only_b)}"
    shared = frozenset(words_a & words_b) - _STOPWORDS - _PUNCTUATION - _ASYMMETRIC
    names = (a.entities & b.entities) | (a.numbers & b.numbers)
    forward, backward = _directed(a.words, shared, names), _directed(b.words, shared, names)
    # A flip is a direction only one text states ("from Oslo to Rome and back" has both).
    flipped = {(rt, c, lt) for lt, c, rt in forward - backward} & (backward - forward)
    if flipped:
        second, connective, first = sorted(flipped)[0]  # the query says "first ... second"
        return f"different order: {first} {connective} {second} vs {second} {connective} {first}"
    return None


# --------------------------------------------------------------------------- features
def features(query: str, candidate: str, similarity: float) -> list[float]:
    """The learned verifier's pair-level inputs, in the order of `FEATURES`."""
    a, b = _parse(query), _parse(candidate)
    words_a, words_b = set(a.words) - _PUNCTUATION, set(b.words) - _PUNCTUATION
    union = words_a | words_b
    jaccard = len(words_a & words_b) / len(union) if union else 1.0
    content_union = a.content | b.content
    content_jaccard = len(a.content & b.content) / len(content_union) if content_union else 1.0
    unmatched = content_union - (a.content & b.content)
    longer, shorter = max(len(a.words), len(b.words)), min(len(a.words), len(b.words))
    return [
        similarity,
        similarity * similarity,
        jaccard,
        content_jaccard,
        math.log1p(len(unmatched)),
        shorter / longer if longer else 1.0,
        float(a.question == b.question),
        float(bool(_unmatched_entities(a, b)) or bool(_unmatched_entities(b, a))),
        float(bool(a.words) and bool(b.words) and a.words[0] == b.words[0]),
    ]
