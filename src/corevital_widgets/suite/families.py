"""The question families of the suite: for each, its facts (question fields, answer, difficulty,
grader) and its phrasings (templates, rotated over the sampled facts).

A family's facts come from :mod:`corevital_widgets.suite.sources` (GeoNames countries and US
cities, periodictable's elements, the ordinary-prompt words) or are generated from a seeded RNG
(arithmetic, unit conversions, dates, word lists). Facts are listed easiest difficulty first.
"""

from __future__ import annotations

import calendar
import collections
import datetime
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from . import sources
from .grading import normalize

Fields = tuple[tuple[str, str], ...]

#: (label, operator, first range, second range) of the arithmetic difficulty levels, easiest
#: first within each operator. "+" and "*": the two operands. "-": the two operands, larger one
#: first. "/": the quotient and the divisor (the dividend is their product: divisions are exact).
ARITHMETIC_LEVELS: tuple[tuple[str, str, tuple[int, int], tuple[int, int]], ...] = (
    ("1-digit addition", "+", (1, 9), (1, 9)),
    ("2-digit addition", "+", (10, 99), (10, 99)),
    ("3-digit addition", "+", (100, 999), (100, 999)),
    ("1-digit subtraction", "-", (1, 9), (1, 9)),
    ("2-digit subtraction", "-", (10, 99), (10, 99)),
    ("3-digit subtraction", "-", (100, 999), (100, 999)),
    ("1-digit multiplication", "*", (2, 9), (2, 9)),
    ("2-by-1-digit multiplication", "*", (11, 99), (2, 9)),
    ("2-digit multiplication", "*", (11, 99), (11, 99)),
    ("1-digit division", "/", (2, 9), (2, 9)),
    ("2-digit-quotient division", "/", (11, 99), (2, 9)),
    ("2-digit-divisor division", "/", (2, 9), (11, 99)),
)
#: How many questions each arithmetic level generates before sampling.
ARITHMETIC_PER_LEVEL = 40
#: Chemical symbols that are also capitalised English words ("In", "As", "At", "No") or the
#: pronoun "I": a reply's ordinary sentence would be read as the symbol, so the symbol
#: questions leave these out (the symbol -> name questions keep them).
WORDLIKE_SYMBOLS: tuple[str, ...] = ("I", "In", "As", "At", "No")
#: Atomic-number ranges used as the element families' difficulty, easiest first.
ELEMENT_RANGES: tuple[tuple[str, int, int], ...] = (("elements 1-20", 1, 20), ("elements 21-56", 21, 56),
                                                    ("elements 57-118", 57, 118))
WEEKDAYS: tuple[str, ...] = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTHS: tuple[str, ...] = ("January", "February", "March", "April", "May", "June", "July", "August",
                           "September", "October", "November", "December")
#: Month answers the "text" grader cannot tell from ordinary words ("it may be June").
AMBIGUOUS_MONTH_ANSWERS: tuple[str, ...] = ("May",)
#: (smaller unit, larger unit singular, larger unit plural, how many smaller in one larger).
UNIT_CONVERSIONS: tuple[tuple[str, str, str, int], ...] = (
    ("centimeters", "meter", "meters", 100),
    ("millimeters", "centimeter", "centimeters", 10),
    ("meters", "kilometer", "kilometers", 1000),
    ("grams", "kilogram", "kilograms", 1000),
    ("milliliters", "liter", "liters", 1000),
    ("seconds", "minute", "minutes", 60),
    ("minutes", "hour", "hours", 60),
    ("hours", "day", "days", 24),
    ("days", "week", "weeks", 7),
    ("months", "year", "years", 12),
    ("seconds", "hour", "hours", 3600),
)


@dataclass(frozen=True)
class Fact:
    """One question before phrasing: ``qtype`` picks the template set, ``fields`` fill it."""

    qtype: str
    fields: Fields
    answer: str
    difficulty: str
    accept: tuple[str, ...] = ()
    grader: str = "text"


@dataclass(frozen=True)
class Family:
    """A question family: name, phrasings per question type, fact builder, answer form."""

    name: str
    templates: Mapping[str, tuple[str, ...]]
    facts: Callable[[np.random.Generator], list[Fact]] = field(repr=False)
    form: str = "short"


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


#: Last words of place names that take "the" in a sentence ("the Cook Islands", "the Czech
#: Republic"), and whole names that do ("the Bahamas"). Only the question's wording uses them.
_THE_LAST_WORDS = ("Islands", "Territories", "Territory", "Republic", "States", "Kingdom", "Emirates", "Congo")
_THE_NAMES = ("Bahamas", "Comoros", "Gambia", "Maldives", "Philippines", "Seychelles", "Vatican")


def in_sentence(name: str) -> str:
    """A country or territory name as written inside a sentence: with "the" where English puts it."""
    if name.startswith("The "):
        return "the " + name[4:]
    if name in _THE_NAMES or name.split()[-1] in _THE_LAST_WORDS:
        return "the " + name
    return name


def _by_tier(facts: list[Fact], tiers: tuple[tuple[str, int], ...]) -> list[Fact]:
    order = [label for label, _ in tiers]
    return sorted(facts, key=lambda f: order.index(f.difficulty))  # stable: keeps the ISO order inside a tier


# ---------------------------------------------------------------- countries

def _overlaps(a: str, b: str) -> bool:
    na, nb = normalize(a), normalize(b)
    return not na or not nb or na in nb or nb in na


def _capital_facts(rng: np.random.Generator) -> list[Fact]:
    # Leave out pairs where repeating the question would count as right (Djibouti, Mexico City).
    facts = [Fact("ask", (("country", in_sentence(c.name)),), c.capital, c.tier)
             for c in sources.countries().values() if c.capital and not _overlaps(c.name, c.capital)]
    return _by_tier(facts, sources.COUNTRY_TIERS)


def _capital_country_facts(rng: np.random.Generator) -> list[Fact]:
    table = sources.countries().values()
    shared = collections.Counter(normalize(c.capital) for c in table if c.capital)
    facts = [Fact("ask", (("capital", c.capital),), c.name, c.tier, sources.name_variants(c.name))
             for c in table
             if c.capital and shared[normalize(c.capital)] == 1 and not _overlaps(c.name, c.capital)]
    return _by_tier(facts, sources.COUNTRY_TIERS)


def _continent_facts(rng: np.random.Generator) -> list[Fact]:
    facts = [Fact("ask", (("country", in_sentence(c.name)),), c.continent, c.tier)
             for c in sources.countries().values()
             if c.continent and normalize(c.continent) not in normalize(c.name)]
    return _by_tier(facts, sources.COUNTRY_TIERS)


def _currency_accept(currency: str, country: str) -> tuple[str, ...]:
    """The words of a several-word currency name that name it alone ("Yuan Renminbi" -> Yuan,
    Renminbi; "Bolivar Soberano" -> Bolivar, Soberano; never an adjective made from the country's
    name), and a plural name's singular ("Riels" -> Riel)."""
    words = currency.split()
    stems = {w[:4] for w in normalize(country).split()}
    out = [w for w in words if len(words) > 1 and len(w) > 2 and normalize(w)[:4] not in stems]
    if len(words) == 1 and currency.endswith("s") and not currency.endswith("ss"):
        out.append(currency[:-1])
    return tuple(out)


def _currency_facts(rng: np.random.Generator) -> list[Fact]:
    table = [c for c in sources.countries().values() if c.currency and c.population > 0]
    shared = collections.Counter(normalize(c.currency) for c in table)
    facts = [Fact("ask", (("country", in_sentence(c.name)),), c.currency,
                  "common currency name" if shared[normalize(c.currency)] >= 3 else "rare currency name",
                  _currency_accept(c.currency, c.name))
             # leave out names that spell out the country's: "Zimbabwe Gold", "Afghani" (Afghanistan)
             for c in table if not _overlaps(c.currency.split()[0], c.name)]
    return sorted(facts, key=lambda f: f.difficulty != "common currency name")


def _neighbour_facts(rng: np.random.Generator) -> list[Fact]:
    table = sources.countries()
    facts = []
    for c in table.values():
        if not c.neighbours or c.population == 0:
            continue
        near = sorted((table[n] for n in c.neighbours), key=lambda n: (-n.population, n.iso))
        names = [v for n in near for v in (n.name, *sources.name_variants(n.name))]
        facts.append(Fact("ask", (("country", in_sentence(c.name)),), names[0], c.tier, tuple(names[1:]), "any"))
    return _by_tier(facts, sources.COUNTRY_TIERS)


def _us_state_facts(rng: np.random.Generator) -> list[Fact]:
    facts = [Fact("ask", (("city", city.name),), city.state, city.tier) for city in sources.us_cities()]
    return _by_tier(facts, sources.CITY_TIERS)


# ---------------------------------------------------------------- elements

def _element_range(number: int) -> str:
    return next(label for label, lo, hi in ELEMENT_RANGES if lo <= number <= hi)


def _element_symbol_facts(rng: np.random.Generator) -> list[Fact]:
    return [Fact("ask", (("element", e.name),), e.symbol, _element_range(e.number), grader="symbol")
            for e in sources.elements() if e.symbol not in WORDLIKE_SYMBOLS]


def _element_name_facts(rng: np.random.Generator) -> list[Fact]:
    return [Fact("ask", (("symbol", e.symbol),), e.name, _element_range(e.number)) for e in sources.elements()]


def _atomic_number_facts(rng: np.random.Generator) -> list[Fact]:
    return [Fact("ask", (("element", e.name),), str(e.number), _element_range(e.number), grader="number")
            for e in sources.elements()]


# ---------------------------------------------------------------- calendar

def _weekday_facts(rng: np.random.Generator, n_dates: int = 40) -> list[Fact]:
    D = WEEKDAYS
    facts = [Fact("next", (("day", D[d]),), D[(d + 1) % 7], "next day") for d in range(7)]
    facts += [Fact("previous", (("day", D[d]),), D[(d - 1) % 7], "previous day") for d in range(7)]
    facts += [Fact("after", (("day", D[d]), ("k", str(k))), D[(d + k) % 7], "days later")
              for d in range(7) for k in range(2, 7)]
    facts += [Fact("before", (("day", D[d]), ("k", str(k))), D[(d - k) % 7], "days earlier")
              for d in range(7) for k in range(2, 7)]
    lo, hi = datetime.date(1950, 1, 1).toordinal(), datetime.date(2020, 12, 31).toordinal()
    days = sorted({int(x) for x in rng.integers(lo, hi + 1, size=3 * n_dates)})
    days = sorted(int(x) for x in rng.choice(days, size=n_dates, replace=False))
    for ordinal in days:
        d = datetime.date.fromordinal(ordinal)
        facts.append(Fact("date", (("date", f"{d.day} {MONTHS[d.month - 1]} {d.year}"),), D[d.weekday()], "date"))
    return facts


def _month_facts(rng: np.random.Generator, n_february: int = 3) -> list[Fact]:
    M = MONTHS
    facts = [Fact("next", (("month", M[m]),), M[(m + 1) % 12], "next month") for m in range(12)]
    facts += [Fact("previous", (("month", M[m]),), M[(m - 1) % 12], "previous month") for m in range(12)]
    facts += [Fact("ordinal", (("nth", _ordinal(m + 1)),), M[m], "ordinal") for m in range(12)]
    common = 2023  # a non-leap year: February has 28 days
    facts += [Fact("days", (("month", M[m]),), str(calendar.monthrange(common, m + 1)[1]), "days in month",
                   grader="number") for m in range(12) if m != 1]
    years = [y for y in range(1950, 2024) if not calendar.isleap(y)]
    for y in sorted(int(x) for x in rng.choice(years, size=n_february, replace=False)):
        facts.append(Fact("february", (("year", str(y)),), "28", "days in month", grader="number"))
    facts += [Fact("later", (("month", M[m]), ("k", str(k))), M[(m + k) % 12], "months later")
              for m in range(12) for k in range(2, 12)]
    return [f for f in facts if f.answer not in AMBIGUOUS_MONTH_ANSWERS]


# ---------------------------------------------------------------- numbers

def _unit_facts(rng: np.random.Generator, n_large: int = 40) -> list[Fact]:
    def fact(i: int, k: int, level: str) -> Fact:
        small, one, many, factor = UNIT_CONVERSIONS[i]
        return Fact("convert", (("k", str(k)), ("big", one if k == 1 else many), ("small", small)),
                    str(k * factor), level, grader="number")

    facts = [fact(i, 1, "1 unit") for i in range(len(UNIT_CONVERSIONS))]
    facts += [fact(i, k, "2-9 units") for i in range(len(UNIT_CONVERSIONS)) for k in range(2, 10)]
    pairs = sorted({(int(i), int(k)) for i, k in zip(rng.integers(0, len(UNIT_CONVERSIONS), size=3 * n_large),
                                                     rng.integers(10, 100, size=3 * n_large), strict=True)})
    pick = sorted(int(j) for j in rng.choice(len(pairs), size=min(n_large, len(pairs)), replace=False))
    facts += [fact(*pairs[j], "10-99 units") for j in pick]
    return facts


def _arithmetic_facts(rng: np.random.Generator, ops: str) -> list[Fact]:
    facts: list[Fact] = []
    for label, op, (alo, ahi), (blo, bhi) in ARITHMETIC_LEVELS:
        if op not in ops:
            continue
        seen: set[tuple[int, int]] = set()
        level: list[Fact] = []
        for _ in range(50 * ARITHMETIC_PER_LEVEL):
            if len(level) == ARITHMETIC_PER_LEVEL:
                break
            x, y = int(rng.integers(alo, ahi + 1)), int(rng.integers(blo, bhi + 1))
            if op == "+":
                a, b, r, qtype = x, y, x + y, "plus"
            elif op == "-":
                a, b = max(x, y), min(x, y)
                r, qtype = a - b, "minus"
            elif op == "*":
                a, b, r, qtype = x, y, x * y, "times"
            else:
                a, b, r, qtype = x * y, y, x, "divide"
            # the grader skips the question's own numbers, so the answer must not be one of them
            if r in (a, b) or r <= 0 or (a, b) in seen:
                continue
            seen.add((a, b))
            level.append(Fact(qtype, (("a", str(a)), ("b", str(b))), str(r), label, grader="number"))
        facts += level
    return facts


# ---------------------------------------------------------------- words

def _length_band(word: str) -> str:
    n = len(word)
    return "4-5 letters" if n <= 5 else "6-7 letters" if n <= 7 else "8-9 letters"


def _letter_facts(rng: np.random.Generator) -> list[Fact]:
    ws = sources.words()
    facts = [Fact("first", (("word", w),), w[0], "first letter", grader="letter") for w in ws]
    facts += [Fact("last", (("word", w),), w[-1], "last letter", grader="letter") for w in ws]
    bands = ("4-5 letters", "6-7 letters", "8-9 letters")
    for band in bands:
        facts += [Fact("count", (("word", w),), str(len(w)), f"count {band}", grader="number")
                  for w in ws if _length_band(w) == band]
    return facts


def _reversal_facts(rng: np.random.Generator, per_length: int = 40) -> list[Fact]:
    ws = sources.words()
    facts: list[Fact] = []
    for n in (2, 3, 4):
        seen: set[tuple[str, ...]] = set()
        for _ in range(20 * per_length):
            if len(seen) == per_length:
                break
            pick = tuple(ws[int(i)] for i in rng.choice(len(ws), size=n, replace=False))
            if pick in seen:
                continue
            seen.add(pick)
            facts.append(Fact("order", (("words", " ".join(pick)),), " ".join(reversed(pick)), f"{n} words",
                              grader="sequence"))
    for band in ("4-5 letters", "6-7 letters", "8-9 letters"):
        facts += [Fact("spell", (("word", w),), w[::-1], f"spell {band}", grader="sequence")
                  for w in ws if _length_band(w) == band and w != w[::-1]]
    return facts


# ---------------------------------------------------------------- the families

def _same(qtype: str, *templates: str) -> dict[str, tuple[str, ...]]:
    return {qtype: templates}


_COUNTRY_CAPITAL = _same("ask", "What is the capital of {country}?", "Which city is the capital of {country}?",
                         "Name the capital city of {country}.")
_COUNTRY_CONTINENT = _same("ask", "On which continent is {country}?", "Which continent is {country} in?",
                           "{country} is located on which continent?")

FAMILY_SPECS: tuple[Family, ...] = (
    Family("capital", _COUNTRY_CAPITAL, _capital_facts),
    Family("capital_country", _same("ask", "Which country or territory has {capital} as its capital?",
                                    "{capital} is the capital of which country or territory?",
                                    "Of which country or territory is {capital} the capital?"),
           _capital_country_facts),
    Family("continent", _COUNTRY_CONTINENT, _continent_facts),
    Family("currency", _same("ask", "What is the currency of {country}?", "Which currency is used in {country}?",
                             "What is the name of the money used in {country}?"), _currency_facts),
    Family("neighbour", _same("ask", "Name a country that borders {country}.",
                              "Which country shares a border with {country}?",
                              "Name one neighbouring country of {country}."), _neighbour_facts),
    Family("us_state", _same("ask", "In which US state is {city}?", "Which state of the United States is {city} in?",
                             "{city} is a city in which US state?"), _us_state_facts),
    Family("element_symbol", _same("ask", "What is the chemical symbol for {element}?",
                                   "Which symbol stands for the element {element}?",
                                   "Give the chemical symbol of {element}."), _element_symbol_facts),
    Family("element_name", _same("ask", "Which element has the chemical symbol {symbol}?",
                                 "What element does the chemical symbol {symbol} stand for?",
                                 "{symbol} is the symbol of which chemical element?"), _element_name_facts),
    Family("atomic_number", _same("ask", "What is the atomic number of {element}?",
                                  "How many protons are in an atom of {element}?",
                                  "Which atomic number does {element} have?"), _atomic_number_facts),
    Family("weekdays", {
        "next": ("What day comes after {day}?", "Which day of the week follows {day}?"),
        "previous": ("What day comes before {day}?", "Which day of the week comes just before {day}?"),
        "after": ("What day is {k} days after {day}?", "If today is {day}, what day will it be in {k} days?"),
        "before": ("What day is {k} days before {day}?", "If today is {day}, what day was it {k} days ago?"),
        "date": ("What day of the week was {date}?", "On which day of the week did {date} fall?"),
    }, _weekday_facts),
    Family("months", {
        "next": ("Which month comes after {month}?", "What month follows {month}?"),
        "previous": ("Which month comes before {month}?", "What month comes just before {month}?"),
        "ordinal": ("What is the {nth} month of the year?", "Which month is the {nth} month of the year?",
                    "Name the {nth} month of the year."),
        "days": ("How many days are in {month}?", "How many days does {month} have?"),
        "february": ("How many days are in February {year}?", "How many days did February {year} have?"),
        "later": ("Which month comes {k} months after {month}?", "What month is it {k} months after {month}?"),
    }, _month_facts),
    Family("units", _same("convert", "How many {small} are in {k} {big}?", "Convert {k} {big} to {small}.",
                          "{k} {big} is how many {small}?"), _unit_facts),
    Family("addition_subtraction", {
        "plus": ("What is {a} plus {b}?", "Compute {a} + {b}.", "What is the sum of {a} and {b}?"),
        "minus": ("What is {a} minus {b}?", "Compute {a} - {b}.", "What do you get if you subtract {b} from {a}?"),
    }, lambda rng: _arithmetic_facts(rng, "+-")),
    Family("multiplication_division", {
        "times": ("What is {a} times {b}?", "Multiply {a} by {b}.", "What is the product of {a} and {b}?"),
        "divide": ("What is {a} divided by {b}?", "Divide {a} by {b}.", "How many times does {b} go into {a}?"),
    }, lambda rng: _arithmetic_facts(rng, "*/")),
    Family("letters", {
        "count": ("How many letters are in the word '{word}'?", "How many letters does the word '{word}' have?",
                  "Count the letters in the word '{word}'."),
        "first": ("What is the first letter of the word '{word}'?", "Which letter does the word '{word}' start with?"),
        "last": ("What is the last letter of the word '{word}'?", "Which letter does the word '{word}' end with?"),
    }, _letter_facts),
    Family("reversal", {
        "order": ("Reverse the order of these words: {words}.", "Write these words in reverse order: {words}.",
                  "Put these words in the opposite order: {words}."),
        "spell": ("Spell the word '{word}' backwards.", "What is '{word}' spelled backwards?",
                  "Write the letters of '{word}' in reverse order."),
    }, _reversal_facts),
    Family("free_capital", _same("ask", "In two sentences, tell me about {country} and its capital.",
                                 "Write two sentences about {country}, naming its capital city.",
                                 "Describe {country} in two sentences, including its capital."),
           _capital_facts, form="free"),
    Family("free_continent", _same("ask", "Write two sentences about {country}, saying which continent it is on.",
                                   "In two sentences, tell me where {country} is and on which continent.",
                                   "Describe {country} in two sentences, mentioning its continent."),
           _continent_facts, form="free"),
)

#: The family names, in a fixed order.
FAMILIES: tuple[str, ...] = tuple(f.name for f in FAMILY_SPECS)
