"""Grading a model's reply against a :class:`SuiteItem`: one rule per ``item.grader``.

- ``"number"``: the first number in the reply that is not one of the question's own numbers
  (so a restated question, "12 times 11 is 132", "2 meters is 200 centimeters", is skipped) must
  equal the answer. Thousands commas ("1,300") and number words up to ninety-nine ("seven",
  "twenty-one") are read as numbers. The suite never asks a question whose answer is one of its
  own numbers, so skipping them cannot hide a right answer.
- ``"text"`` / ``"any"``: the normalised answer (or, for ``"any"``, any of ``item.answers``) occurs as
  whole words in the normalised reply (:func:`normalize`: case, accents and punctuation ignored).
  ``"text"`` also honours ``item.accept`` (spelling variants); ``"any"`` says the answers are a
  set of equally good ones (every neighbouring country).
- ``"sequence"``: the normalised expected word sequence occurs contiguously as whole words; for a
  one-word answer (a word spelled backwards) its letters separated by spaces, hyphens or commas
  ("t-a-c", "t a c", "t, a, c") count too.
- ``"letter"``: the reply's letter is, in order of precedence: a quoted single letter ('a', "a");
  a single letter right after the word "letter" ("letter a"); else the first one-letter word,
  where "a" followed by another word is the article (lower case anywhere, or capital at the start
  of a sentence: "It is a fruit", "A fruit"), and "I" followed by another word is the pronoun
  ("I think", "I'm"); a capital "A" inside a sentence ("the answer is A because") and a lone
  "a"/"A"/"I" ("A", "is a.", "is a, as in apple") are letters. Contractions ("it's", "don't") are
  dropped first so their "s"/"t" are not letters. Case is ignored otherwise.
- ``"symbol"``: a chemical symbol, case-sensitive as a word of the reply ("Fe" in "The symbol is
  Fe." or "Fe2O3"; not "fe" or "FE"), or the whole reply in any case ("fe"). The suite leaves out
  symbols that are common capitalised English words (I, In, As, At, No), whose restated-sentence
  uses would be read as answers.
"""

from __future__ import annotations

import re
import unicodedata
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .item import SuiteItem


def strip_accents(text: str) -> str:
    """``text`` with accents removed (NFKD, combining marks dropped); case kept."""
    text = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in text if not unicodedata.combining(ch))


def normalize(text: str) -> str:
    """Lower case, accents stripped (NFKD), punctuation to spaces, whitespace collapsed."""
    text = strip_accents(text).lower()
    text = re.sub(r"[^\w\s]|_", " ", text)
    return " ".join(text.split())


def contains_words(haystack: str, needle: str) -> bool:
    """Whether normalised ``needle`` occurs as whole words in normalised ``haystack``."""
    gold, said = normalize(needle), normalize(haystack)
    return bool(gold) and f" {gold} " in f" {said} "


# ---------------------------------------------------------------- numbers

_ONES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
         "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen")
_TENS = ("twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
_NUMBER_WORD = re.compile(
    rf"\b(?:({'|'.join(_TENS)})(?:[\s-]+({'|'.join(_ONES[1:10])}))?|({'|'.join(_ONES)}))\b", re.IGNORECASE)
_NUMBER = re.compile(r"(?<![\w.])(?:\d{1,3}(?:,\d{3})+(?![\d,])|\d+)(?:\.\d+)?")


def _digits_for_words(text: str) -> str:
    def sub(m: re.Match[str]) -> str:
        if m.group(3):
            return str(_ONES.index(m.group(3).lower()))
        value = 20 + 10 * _TENS.index(m.group(1).lower())
        return str(value + (_ONES.index(m.group(2).lower()) if m.group(2) else 0))

    return _NUMBER_WORD.sub(sub, text)


def numbers_in(text: str) -> list[float]:
    """The numbers in ``text``, in order (digits with optional thousands commas, number words)."""
    return [float(m.group(0).replace(",", "")) for m in _NUMBER.finditer(_digits_for_words(text))]


def grade_number(answer: str, question: str, reply: str) -> bool:
    """The first number of ``reply`` that is not one of ``question``'s numbers equals ``answer``."""
    asked = set(numbers_in(question))
    for value in numbers_in(reply):
        if value not in asked:
            return value == float(answer)
    return False


# ---------------------------------------------------------------- words

def grade_words(answers: tuple[str, ...], reply: str) -> bool:
    """Any of ``answers`` occurs as whole words in ``reply`` (both normalised)."""
    return any(contains_words(reply, a) for a in answers)


def grade_sequence(answers: tuple[str, ...], reply: str) -> bool:
    """An expected word sequence occurs contiguously; a one-word answer also as spaced letters."""
    spelled = tuple(" ".join(normalize(a)) for a in answers if normalize(a) and " " not in normalize(a))
    return grade_words(answers + spelled, reply)


# ---------------------------------------------------------------- letters

_CONTRACTION = re.compile(r"(?<=[A-Za-z])['\u2019](?:s|t|m|d|ll|re|ve)\b", re.IGNORECASE)
_QUOTED_LETTER = re.compile(r"(?<!\w)['\"\u2018\u201c]([A-Za-z])['\"\u2019\u201d](?!\w)")
_AFTER_LETTER = re.compile(r"\bletter\s*$", re.IGNORECASE)
_SENTENCE_START = re.compile(r"(?:^|[.!?:;\n])[\s\"'(\u2018\u201c]*$")
_WORD = re.compile(r"[A-Za-z]+")


def reply_letter(reply: str) -> str | None:
    """The single letter a reply gives as its answer (lower case), or None (see the module doc)."""
    text = strip_accents(reply)
    quoted = _QUOTED_LETTER.search(text)
    if quoted:
        return quoted.group(1).lower()
    text = _CONTRACTION.sub("", text)
    for m in _WORD.finditer(text):
        w = m.group(0)
        if len(w) != 1:
            continue
        before, after = text[: m.start()], text[m.end():]
        if _AFTER_LETTER.search(before):
            return w.lower()
        continues = re.match(r"\s+[A-Za-z]", after) is not None  # another word follows in the clause
        if continues and (w in ("I", "i") or w == "a" or (w == "A" and _SENTENCE_START.search(before))):
            continue  # the pronoun, or the article
        return w.lower()
    return None


def grade_letter(answer: str, reply: str) -> bool:
    """The reply's letter (:func:`reply_letter`) is ``answer``."""
    return reply_letter(reply) == answer.lower()


# ---------------------------------------------------------------- chemical symbols

def grade_symbol(answer: str, reply: str) -> bool:
    """``answer`` is a word of the reply with its exact case, or the whole reply in any case."""
    words = _WORD.findall(strip_accents(reply))
    return answer in words or normalize(reply) == answer.lower()


# ---------------------------------------------------------------- dispatch

def grade(item: SuiteItem, response: str) -> bool:
    """Whether ``response`` answers ``item`` correctly, by ``item.grader`` (see the module doc)."""
    if not isinstance(response, str):
        raise TypeError(f"response must be a str, got {type(response).__name__}")
    g = item.grader
    if g == "number":
        return grade_number(item.answer, item.question, response)
    if g in ("text", "any"):
        return grade_words(item.answers, response)
    if g == "sequence":
        return grade_sequence(item.answers, response)
    if g == "letter":
        return grade_letter(item.answer, response)
    if g == "symbol":
        return grade_symbol(item.answer, response)
    raise ValueError(f"unknown grader {g!r}")  # pragma: no cover - SuiteItem checks the grader
