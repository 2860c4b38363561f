"""The labelled question suite: families, sizes, phrasings, determinism, answers consistent with the
packaged data, grading rules (every grader, the tricky cases), chat template applied."""

from __future__ import annotations

import calendar
import collections
import datetime
import re

import pytest

from corevital_widgets.suite import (
    ARITHMETIC_LEVELS,
    FAMILIES,
    FREE_INSTRUCTION,
    GRADERS,
    INSTRUCTION,
    PER_FAMILY,
    SuiteItem,
    build_suite,
    family_pool,
    grade,
    normalize,
    prompt_text,
    sources,
    suite_prompts,
)
from corevital_widgets.suite.families import (
    MONTHS,
    UNIT_CONVERSIONS,
    WEEKDAYS,
    WORDLIKE_SYMBOLS,
    in_sentence,
)
from corevital_widgets.suite.grading import contains_words, reply_letter

IDK = "I don't know."


@pytest.fixture(scope="module")
def suite() -> list[SuiteItem]:
    return build_suite()


def _by_family(items):
    out = collections.defaultdict(list)
    for it in items:
        out[it.kind].append(it)
    return out


# ---------------------------------------------------------------- shape and determinism

def test_families_sizes_and_phrasings(suite):
    assert len(FAMILIES) >= 16 and len(set(FAMILIES)) == len(FAMILIES)
    fams = _by_family(suite)
    assert list(fams) != list(FAMILIES), "shuffled, not grouped"
    assert set(fams) == set(FAMILIES)
    for name in FAMILIES:
        items = fams[name]
        assert 30 <= len(items) <= PER_FAMILY, name
        assert len({it.template for it in items}) >= 2, f"{name}: one phrasing only"
        assert len({it.question for it in items}) == len(items), f"{name}: repeated question"
        assert {it.form for it in items} == ({"free"} if name.startswith("free_") else {"short"})
        for it in items:
            assert it.grader in GRADERS and it.difficulty
            assert re.fullmatch(_template_regex(it.template), it.question), (it.template, it.question)
    assert {it.kind for it in suite if it.form == "free"} == {"free_capital", "free_continent"}


def test_difficulty_levels_are_mixed_inside_families(suite):
    fams = _by_family(suite)
    for name in FAMILIES:
        levels = collections.Counter(it.difficulty for it in fams[name])
        assert len(levels) >= 2, name
        assert max(levels.values()) <= 0.6 * len(fams[name]), f"{name}: one level dominates {levels}"
    arithmetic = {it.difficulty for it in suite if it.kind in ("addition_subtraction", "multiplication_division")}
    assert arithmetic == {lvl[0] for lvl in ARITHMETIC_LEVELS}
    assert {"1-digit addition", "2-digit multiplication"} <= arithmetic  # the old level labels


def test_deterministic_and_seeded(suite):
    assert build_suite() == suite, "same seed, same suite"
    assert build_suite(seed=0, per_family=PER_FAMILY, families=None) == suite
    other = build_suite(seed=1)
    assert other != suite and len(other) == len(suite)
    for name in ("capital", "addition_subtraction", "letters"):
        assert {i.question for i in other if i.kind == name} != {i.question for i in suite if i.kind == name}


def test_any_prefix_mixes_families(suite):
    for n, at_least in ((20, 8), (50, 12), (100, 16)):
        kinds = collections.Counter(i.kind for i in suite[:n])
        assert len(kinds) >= at_least, (n, kinds)
        assert max(kinds.values()) <= max(4, n // 5), (n, kinds)
    assert sum(i.difficulty == "1-digit addition" for i in suite) >= 4  # notebooks/risk.ipynb takes four


def test_per_family_and_family_selection():
    small = build_suite(per_family=5, families=["weekdays", "capital"])
    assert collections.Counter(i.kind for i in small) == {"capital": 5, "weekdays": 5}
    assert build_suite(per_family=5, families=("capital", "weekdays")) == small, "built in FAMILIES order"
    big = build_suite(per_family=10_000, families=["element_name"])
    assert len(big) == 118, "a family with fewer facts gives all of them"
    with pytest.raises(TypeError, match="seed"):
        build_suite(seed="0")
    with pytest.raises(TypeError, match="seed"):
        build_suite(seed=True)
    with pytest.raises(ValueError, match="seed"):
        build_suite(seed=-1)
    with pytest.raises(ValueError, match="per_family"):
        build_suite(per_family=0)
    with pytest.raises(TypeError, match="per_family"):
        build_suite(per_family=2.5)
    with pytest.raises(ValueError, match="unknown families"):
        build_suite(families=["capitals"])
    with pytest.raises(ValueError, match="unknown family"):
        family_pool("capitals")
    assert len(family_pool("element_name")) == 118
    with pytest.raises(TypeError, match="families"):
        build_suite(families="capital")


def test_suite_item_fields():
    item = SuiteItem("Q?", "A", "capital", "large country", accept=["B"], grader="any")
    assert item.accept == ("B",) and item.answers == ("A", "B") and item.form == "short"
    assert item.to_dict() == {"question": "Q?", "answer": "A", "kind": "capital", "difficulty": "large country",
                              "accept": ["B"], "grader": "any", "form": "short", "template": ""}
    with pytest.raises(ValueError, match="grader"):
        SuiteItem("Q?", "A", "capital", "x", grader="fuzzy")
    with pytest.raises(ValueError, match="form"):
        SuiteItem("Q?", "A", "capital", "x", form="essay")


# ---------------------------------------------------------------- every item against its own grader

@pytest.mark.parametrize("seed", [0, 1])
def test_every_item_grades_its_answer_right_and_the_rest_wrong(seed):
    for it in build_suite(seed=seed):
        assert grade(it, it.answer), it
        assert all(grade(it, a) for a in it.accept), it
        assert not grade(it, IDK), it
        assert not grade(it, it.question), f"restating the question counts as right: {it}"
        if it.grader in ("text", "any", "sequence"):
            for a in it.answers:
                assert not contains_words(it.question, a), f"the question gives the answer away: {it}"
                assert normalize(a) not in normalize(it.question) or it.kind == "neighbour", it


# ---------------------------------------------------------------- answers agree with the data

def _template_regex(template: str) -> str:
    parts = re.split(r"\{(\w+)\}", template)
    out = []
    for i, part in enumerate(parts):
        out.append(f"(?P<{part}>.+?)" if i % 2 else re.escape(part))
    return "".join(out)


def _fields(item: SuiteItem) -> dict[str, str]:
    m = re.fullmatch(_template_regex(item.template), item.question)
    assert m, (item.template, item.question)
    return m.groupdict()


def _place(name: str) -> str:
    return name[:1].lower() + name[1:]


def test_answers_agree_with_the_packaged_data(suite):
    import periodictable

    countries = {_place(in_sentence(c.name)): c for c in sources.countries().values()}
    by_capital = {c.capital: c for c in sources.countries().values()}
    cities = {c.name: c for c in sources.us_cities()}
    elements = {e.name: e for e in periodictable.elements if e.number >= 1}
    by_symbol = {e.symbol: e for e in elements.values()}
    for it in suite:
        f, a, t = _fields(it), it.answer, it.template
        if "country" in f:
            c = countries[_place(f["country"])]
            want = {"capital": c.capital, "free_capital": c.capital, "continent": c.continent,
                    "free_continent": c.continent, "currency": c.currency}.get(it.kind)
            if it.kind == "neighbour":
                names = {n.name for n in (sources.countries()[iso] for iso in c.neighbours)}
                assert set(it.answers) <= names | {n[4:] for n in names if n.startswith("The ")}
            else:
                assert a == want, it
        elif it.kind == "capital_country":
            assert by_capital[f["capital"]].name == a
        elif it.kind == "us_state":
            assert cities[f["city"]].state == a and cities[f["city"]].population > 100_000
        elif it.kind in ("element_symbol", "atomic_number"):
            e = elements[f["element"]]
            assert a == (e.symbol if it.kind == "element_symbol" else str(e.number))
            assert a not in WORDLIKE_SYMBOLS
        elif it.kind == "element_name":
            assert by_symbol[f["symbol"]].name == a
        elif it.kind == "weekdays":
            if "date" in f:
                assert datetime.datetime.strptime(f["date"], "%d %B %Y").date().weekday() == WEEKDAYS.index(a)
            else:
                step = {"after": 1, "follows": 1, "will": 1, "before": -1, "ago": -1}
                sign = next(v for k, v in step.items() if k in t)
                assert WEEKDAYS.index(a) == (WEEKDAYS.index(f["day"]) + sign * int(f.get("k", 1))) % 7, it
        elif it.kind == "months":
            if "nth" in f:
                assert MONTHS.index(a) + 1 == int(re.match(r"\d+", f["nth"]).group(0))
            elif "year" in f:
                assert int(a) == calendar.monthrange(int(f["year"]), 2)[1] == 28
            elif "days" in t:
                assert int(a) == calendar.monthrange(2023, MONTHS.index(f["month"]) + 1)[1]
            else:
                sign = -1 if "before" in t else 1
                assert MONTHS.index(a) == (MONTHS.index(f["month"]) + sign * int(f.get("k", 1))) % 12, it
            assert a != "May"
        elif it.kind == "units":
            factor = {(s, b): x for s, b1, b, x in UNIT_CONVERSIONS} | {(s, b1): x for s, b1, b, x in UNIT_CONVERSIONS}
            assert int(a) == int(f["k"]) * factor[(f["small"], f["big"])]
        elif it.kind in ("addition_subtraction", "multiplication_division"):
            x, y = int(f["a"]), int(f["b"])
            if any(w in t for w in ("divided", "Divide", "go into")):
                assert x % y == 0, "divisions are exact"
                want = x // y
            elif any(w in t for w in ("plus", "+", "sum")):
                want = x + y
            elif any(w in t for w in ("minus", "-", "subtract")):
                want = x - y
            else:
                assert any(w in t for w in ("times", "Multiply", "product"))
                want = x * y
            assert int(a) == want > 0 and int(a) not in (x, y), it
        elif it.kind == "letters":
            w = f["word"]
            assert w in sources.words()
            if "many" in t or "Count" in t:
                assert a == str(len(w))
            else:
                assert a == (w[0] if "first" in t or "start" in t else w[-1])
        elif it.kind == "reversal":
            if "words" in f:
                assert a.split() == f["words"].split()[::-1]
            else:
                assert a == f["word"][::-1] != f["word"]
        else:  # pragma: no cover
            raise AssertionError(f"unchecked family {it.kind}")


def test_sources_are_clean():
    table = sources.countries()
    assert list(table) == sorted(table) and not set(sources.DISSOLVED_COUNTRIES) & set(table)
    assert all(c.name == c.name.strip() and c.capital == c.capital.strip() for c in table.values())
    assert all(n in table for c in table.values() for n in c.neighbours)
    cities = sources.us_cities()
    names = [normalize(c.name) for c in cities]
    assert len(names) == len(set(names)) and len(cities) >= 100
    assert not {"brooklyn", "springfield", "kansas city", "new york city", "koreatown"} & set(names)
    assert {"houston", "seattle", "boise"} <= set(names)
    assert [e.number for e in sources.elements()] == list(range(1, 119))
    ws = sources.words()
    assert list(ws) == sorted(set(ws)) and all(w.isalpha() and w.islower() and 4 <= len(w) <= 9 for w in ws)


# ---------------------------------------------------------------- grading rules

def _item(question, answer, grader="text", accept=(), kind="test", form="short"):
    return SuiteItem(question, answer, kind, "x", accept=accept, grader=grader, form=form)


FRANCE = _item("What is the capital of France?", "Paris")
PERU = _item("On which continent is Peru?", "South America")
TIMES = _item("What is 12 times 11?", "132", "number")
PLUS = _item("What is 600 plus 700?", "1300", "number")
MINUS = _item("Compute 82 - 47.", "35", "number")
UNITS = _item("How many centimeters are in 3 meters?", "300", "number")
FEB = _item("How many days are in February 2023?", "28", "number")
COUNT = _item("How many letters are in the word 'apple'?", "5", "number")
NEIGHBOUR = _item("Name a country that borders France.", "Germany", "any", ("Spain", "Italy", "Belgium"))
FIRST_A = _item("What is the first letter of the word 'apple'?", "a", "letter")
FIRST_F = _item("What is the first letter of the word 'fruit'?", "f", "letter")
LAST_E = _item("What is the last letter of the word 'apple'?", "e", "letter")
FIRST_I = _item("What is the first letter of the word 'island'?", "i", "letter")
SPELL = _item("Spell the word 'cat' backwards.", "tac", "sequence")
ORDER = _item("Reverse the order of these words: apple river stone.", "stone river apple", "sequence")
IRON = _item("What is the chemical symbol for iron?", "Fe", "symbol")
CARBON = _item("What is the chemical symbol for carbon?", "C", "symbol")
FREE_CAP = _item("In two sentences, tell me about France and its capital.", "Paris", form="free")
FREE_CONT = _item("Write two sentences about Peru, saying which continent it is on.", "South America", form="free")


@pytest.mark.parametrize("item, response, correct", [
    # text: whole words, case, accents, punctuation
    (FRANCE, "The capital of France is Paris.", True),
    (FRANCE, "PARIS", True),
    (FRANCE, "Lyon", False),
    (FRANCE, "Parisian food", False),
    (_item("What is the capital of Colombia?", "Bogotá"), "Bogota", True),
    (_item("What is the capital of Sao Tome and Principe?", "Sao Tome"), "São Tomé", True),
    (_item("What is the capital of Sao Tome and Principe?", "São Tomé"), "It is Sao Tome.", True),
    (_item("What is the capital of Mexico?", "Mexico City"), "mexico-city!", True),
    (PERU, "Peru is in South America.", True),
    (PERU, "America", False),
    (_item("What is the currency of China?", "Yuan Renminbi", accept=("Yuan", "Renminbi")), "The yuan.", True),
    # number: the question's own numbers are skipped, commas and number words read
    (TIMES, "12 times 11 is 132", True),
    (TIMES, "11 times 12 is 132", True),
    (TIMES, "12 times 11", False),
    (TIMES, "12 x 11 = 131", False),
    (TIMES, "12", False),
    (TIMES, "132", True),
    (TIMES, " 132.", True),
    (TIMES, "12x11=132", True),
    (PLUS, "1,300", True),
    (PLUS, "600 + 700 = 1,300.", True),
    (PLUS, "13000", False),
    (PLUS, "1,3000", False),
    (PLUS, "I don't know", False),
    (MINUS, "82-47=35", True),
    (MINUS, "82 - 47 = 45", False),
    (UNITS, "3 meters is 300 centimeters.", True),
    (UNITS, "3 meters", False),
    (UNITS, "There are 30 centimeters.", False),
    (FEB, "February 2023 has 28 days.", True),
    (FEB, "2023", False),
    (FEB, "It had twenty-eight days.", True),
    (COUNT, "The word apple has five letters.", True),
    (COUNT, "six", False),
    (_item("How many days are in 3 weeks?", "21", "number"), "Twenty one days.", True),
    # any: every neighbour counts
    (NEIGHBOUR, "Germany", True),
    (NEIGHBOUR, "Spain borders France to the south.", True),
    (NEIGHBOUR, "belgium", True),
    (NEIGHBOUR, "France", False),
    (NEIGHBOUR, "Portugal", False),
    # letter: quoted letters, "letter x", the article "a" and the pronoun "I"
    (FIRST_A, "The first letter of apple is a.", True),
    (FIRST_A, "A", True),
    (FIRST_A, "a", True),
    (FIRST_A, "'a'", True),
    (FIRST_A, '"a"', True),
    (FIRST_A, "letter a", True),
    (FIRST_A, "It is the letter A.", True),
    (FIRST_A, "The first letter of the word 'apple' is 'a'.", True),
    (FIRST_A, "The answer is A because apple starts with it.", True),
    (FIRST_A, "It is a, as in apple.", True),
    (FIRST_A, "It is a fruit.", False),
    (FIRST_A, "A fruit.", False),
    (FIRST_A, "B", False),
    (FIRST_F, "It is a fruit.", False),
    (FIRST_F, "A fruit starts with f.", True),
    (FIRST_F, "F", True),
    (LAST_E, "'e'", True),
    (LAST_E, "E.", True),
    (LAST_E, "It's e.", True),
    (LAST_E, "The last letter is e, as in apple.", True),
    (LAST_E, "It's a fruit.", False),
    (LAST_E, "I think it is e.", True),
    (FIRST_I, "I", True),
    (FIRST_I, "I think it is i.", True),
    (FIRST_I, "I'm not sure.", False),
    (FIRST_I, "I don't know.", False),
    # sequence: contiguous words; a word backwards also as separated letters
    (SPELL, "tac", True),
    (SPELL, "t-a-c", True),
    (SPELL, "t a c", True),
    (SPELL, "T, A, C", True),
    (SPELL, "The word cat spelled backwards is tac.", True),
    (SPELL, "cat", False),
    (SPELL, "tack", False),
    (SPELL, "c-a-t", False),
    (ORDER, "stone river apple", True),
    (ORDER, "Stone, river, apple.", True),
    (ORDER, "apple river stone", False),
    (ORDER, "stone apple river", False),
    # symbol: case-sensitive word, or the whole reply in any case
    (IRON, "Fe", True),
    (IRON, "The chemical symbol for iron is Fe.", True),
    (IRON, "fe", True),
    (IRON, "Fe2O3", True),
    (IRON, "FE", True),
    (IRON, "The symbol is FE.", False),
    (IRON, "F", False),
    (IRON, "The symbol is fe in lower case.", False),
    (CARBON, "C", True),
    (CARBON, "The symbol for carbon is C.", True),
    (CARBON, "Ca", False),
    (CARBON, "Carbon", False),
    (CARBON, "c is the symbol", False),
    # free form: two sentences, graded by whether the fact appears
    (FREE_CAP, "France is a country in Western Europe. Its capital is Paris, known for the Eiffel Tower.", True),
    (FREE_CAP, "France is a country in Western Europe. It is famous for its wine and cheese.", False),
    (FREE_CONT, "Peru is a country on the west coast of South America. Its capital is Lima.", True),
    (FREE_CONT, "Peru is a country in the Americas. Its capital is Lima.", False),
])
def test_grading(item, response, correct):
    assert grade(item, response) is correct


def test_reply_letter_rules():
    assert reply_letter("It is a word") is None
    assert reply_letter("I think so") is None
    assert reply_letter("'b' or 'c'") == "b", "the first quoted letter"
    assert reply_letter("don't") is None, "contractions are not letters"


def test_grade_rejects_non_text(suite):
    with pytest.raises(TypeError, match="str"):
        grade(suite[0], None)


# ---------------------------------------------------------------- prompts

class _FakeTokenizer:
    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        assert tokenize is False and add_generation_prompt is True
        return f"<user>{messages[0]['content']}</user><assistant>"


def test_instruction_follows_the_form(suite):
    short = next(it for it in suite if it.form == "short")
    free = next(it for it in suite if it.form == "free")
    assert prompt_text(short) == f"{short.question} {INSTRUCTION}"
    assert prompt_text(free) == f"{free.question} {FREE_INSTRUCTION}"
    prompts = suite_prompts([short, free], _FakeTokenizer())
    assert prompts == [f"<user>{short.question} {INSTRUCTION}</user><assistant>",
                       f"<user>{free.question} {FREE_INSTRUCTION}</user><assistant>"]
    assert suite_prompts([short, free], _FakeTokenizer(), instruction="Be brief.") == [
        f"<user>{short.question} Be brief.</user><assistant>", f"<user>{free.question} Be brief.</user><assistant>"]
    with pytest.raises(TypeError, match="tokenizer"):
        suite_prompts([short], object())


def test_chat_template_applied(smollm2):
    _, tok = smollm2
    items = build_suite()[:3]
    prompts = suite_prompts(items, tok)
    assert len(prompts) == 3
    for item, p in zip(items, prompts, strict=True):
        assert prompt_text(item) in p and "<|im_start|>user" in p and p.rstrip().endswith("<|im_start|>assistant")
    with pytest.raises(TypeError, match="tokenizer"):
        suite_prompts(items, object())


def test_same_suite_under_any_hash_seed():
    """No set or dict iteration order leaks into the suite: two interpreters with different hash
    seeds build the same questions."""
    import os
    import subprocess
    import sys

    code = ("import json; from corevital_widgets.suite import build_suite; "
            "print(json.dumps([i.to_dict() for i in build_suite(seed=3, per_family=6)]))")
    outs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": h}).stdout for h in ("1", "2")]
    assert outs[0] == outs[1] and len(outs[0]) > 1000
