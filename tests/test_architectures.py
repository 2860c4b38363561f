"""The architecture matrix (:mod:`tests.zoo_matrix`): every causal-LM and encoder-decoder
architecture of the installed transformers, as a tiny random-weight model, is traced exactly
(against an independent eager recomputation), traced exactly through the documented fallback,
or refused with a clear error before anything is returned — never silently wrong — and
docs/architectures.md is this run's table."""

from __future__ import annotations

import os
import re
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # about 2.5 minutes on two cores

DOC = Path(__file__).resolve().parents[1] / "docs" / "architectures.md"


def _run_part(part: tuple[int, int]) -> list:
    from .zoo_matrix import run_matrix
    from .zoo_models import zoo_entries

    index, parts = part
    return run_matrix(zoo_entries()[index::parts])


@pytest.fixture(scope="module")
def outcomes():
    """The matrix, split over the machine's cores (each worker builds and traces its share)."""
    from .zoo_models import zoo_entries

    workers = max(1, min(4, os.cpu_count() or 1))
    order = {(e.model_type, e.kind): i for i, e in enumerate(zoo_entries())}
    with ProcessPoolExecutor(workers) as pool:
        results = [o for part in pool.map(_run_part, [(i, workers) for i in range(workers)]) for o in part]
    return sorted(results, key=lambda o: order[(o.model_type, o.kind)])


def test_no_architecture_is_traced_wrongly_or_crashes(outcomes):
    wrong = [f"{o.model_type} ({o.kind}): {o.detail[:300]}" for o in outcomes if o.status == "WRONG"]
    assert not wrong, "silently wrong traces or crashes instead of a clear refusal:\n" + "\n".join(wrong)


def test_most_text_architectures_are_traced_exactly(outcomes):
    counts = {s: sum(o.status == s for o in outcomes) for s in ("exact", "exact via fallback", "refused")}
    assert counts["exact"] + counts["exact via fallback"] >= 0.75 * sum(counts.values()), counts
    fallback = {o.model_type for o in outcomes if o.status == "exact via fallback"}
    assert {"falcon", "bloom", "mpt", "gpt_neo"} <= fallback, "the legacy families are traced through the fallback"
    exact = {o.model_type for o in outcomes if o.status == "exact"}
    # sinks, indexer sparse attention, hybrid stacks, encoder-decoders
    assert {"gpt_oss", "deepseek_v32", "glm_moe_dsa", "qwen3_next", "lfm2", "jamba", "t5", "bart"} <= exact


def test_refusals_name_the_model_and_the_reason(outcomes):
    for o in outcomes:
        if o.status == "refused":
            assert o.model_type in o.detail or o.class_name in o.detail, o.detail
            assert len(o.detail) > 60, o.detail


def test_the_documented_table_is_this_run(outcomes):
    import transformers

    from .zoo_matrix import markdown

    text = DOC.read_text()
    documented = re.search(r"transformers (\S+) ", text)
    if documented is None or documented.group(1) != transformers.__version__:
        pytest.skip(f"docs/architectures.md was made with transformers {documented and documented.group(1)}, "
                    f"this is {transformers.__version__}")
    assert markdown(outcomes) == text, "regenerate: python -m tests.zoo_matrix --write docs/architectures.md"
