"""Fault injection on the real SmolLM2 (30 layers; middle third = layers 10..19): the flags
fire where the fault was injected, a clean run fires none of the numeric flags, and a model
that produces NaN does not crash analyze."""

from __future__ import annotations

import numpy as np
import torch

import corevital_widgets as corevital
from corevital_widgets.engine.model_state import hook_counts

MID = 15
PROMPT = "List three facts about the moon:"


def layer_hook(module, fault, from_call=0):
    """A user's forward hook on ``module`` applying ``fault`` to its output from call ``from_call`` on
    (shared by the fault tests, the verdict tests and benchmarks/bench_verdict.py)."""
    calls = {"n": 0}

    def hook(mod, args, output):
        n = calls["n"]
        calls["n"] += 1
        if n < from_call:
            return None
        h = output[0] if isinstance(output, tuple) else output
        h = fault(h)
        return (h, *output[1:]) if isinstance(output, tuple) else h

    return module.register_forward_hook(hook)


def frozen_fault():
    """A fault for :func:`layer_hook`: from its first call on, the block returns that call's
    last-position vector at every position (a frozen layer; its own state per call of this)."""
    frozen: dict = {}

    def freeze(h):
        if "v" not in frozen:
            frozen["v"] = h[:, -1:].clone()
        return frozen["v"].expand_as(h).clone()

    return freeze


def bent_head_hook(attn, head, factor=30.0):
    """A forward hook on ``attn.q_proj`` scaling one head's queries by ``factor``: the head
    collapses onto one key while the rest of the model runs unchanged (the one-head fault of the
    verdict tests, the browser test and benchmarks/bench_verdict.py)."""
    d = attn.head_dim

    def sharpen(module, args, output):
        out = output.clone()
        out[..., head * d:(head + 1) * d] *= factor
        return out

    return attn.q_proj.register_forward_hook(sharpen)


def _layer_hook(model, layer, fault, from_step):
    return layer_hook(model.model.layers[layer], fault, from_step)


def _run(smollm2, **kw):
    model, tok = smollm2
    return corevital.analyze(model, PROMPT, tok, max_new_tokens=10, min_new_tokens=10, **kw)


def test_clean_run_fires_no_numeric_flag(smollm2):
    trace = _run(smollm2)
    h = trace.health
    assert not h.nan_detected and not h.inf_detected and not h.mid_layer_anomaly_detected
    assert not h.repetition_loop_detected
    assert set(h.first_fired) <= {"attention_collapse_detected", "high_entropy_steps"}
    assert h.verdict in ("green", "yellow")


def test_nan_in_a_middle_layer_fires_nan_and_mid_layer_at_the_right_place(smollm2):
    model, _ = smollm2
    handle = _layer_hook(model, MID, lambda h: torch.full_like(h, float("nan")), from_step=3)
    try:
        hooks_before = hook_counts(model)
        trace = _run(smollm2)
        assert hook_counts(model) == hooks_before, "the user's own hook must survive analyze"
    finally:
        handle.remove()
    h = trace.health
    assert h.nan_detected and h.mid_layer_anomaly_detected
    assert h.first_fired["nan_detected"] == corevital.FiredAt(3, MID)
    assert h.first_fired["mid_layer_anomaly_detected"] == corevital.FiredAt(3, MID)
    assert h.verdict == "red"
    assert not trace.layers.has_nan[:3].any() and trace.layers.has_nan[3, MID] and not trace.layers.has_nan[3, :MID].any()
    assert trace.attention.has_nan[4, MID + 1], "later steps attend to NaN keys/values"
    assert trace.timeline.logits_has_nan[3:].all() and np.isnan(trace.timeline.entropy[3:]).all()
    assert trace.n_steps == 10, "generation goes on; the trace records the NaNs"


def test_scaled_activations_fire_mid_layer_anomaly_only(smollm2):
    model, _ = smollm2
    handle = _layer_hook(model, MID, lambda h: h * 1000.0, from_step=2)
    try:
        trace = _run(smollm2)
    finally:
        handle.remove()
    h = trace.health
    assert h.mid_layer_anomaly_detected
    assert h.first_fired["mid_layer_anomaly_detected"] == corevital.FiredAt(2, MID)
    assert not h.nan_detected and not h.inf_detected
    early = trace.layers.l2_norm[2, :10].mean()
    assert trace.layers.l2_norm[2, MID] > 8 * early
    assert not (trace.layers.l2_norm[:2, 10:20] > 8 * trace.layers.l2_norm[:2, :10].mean(1, keepdims=True)).any()


def test_frozen_final_layer_fires_repetition_loop(smollm2):
    model, _ = smollm2
    frozen = torch.randn(model.config.hidden_size, generator=torch.Generator().manual_seed(0))
    last = model.config.num_hidden_layers - 1
    handle = _layer_hook(model, last, lambda h: frozen.expand_as(h).clone(), from_step=0)
    try:
        trace = _run(smollm2)
    finally:
        handle.remove()
    h = trace.health
    assert h.repetition_loop_detected
    assert h.first_fired["repetition_loop_detected"].step == 3, "needs the 3 previous steps"
    assert np.allclose(trace.timeline.repetition_similarity[3:], 1.0, atol=1e-5)
    assert not h.nan_detected and not h.mid_layer_anomaly_detected


def test_the_token_repetition_rule_finds_the_span_a_reader_sees():
    from corevital_widgets.trace.health import repeated_span

    clock = [5, 6, 7, 8, 9, 6, 7, 10, 11, 12]  # "He had a clock with a clock on it."
    assert repeated_span(np.array([1, 2] + clock * 3 + [3])) == (2, 10, 3)
    assert repeated_span(np.array([1, 2, 3] * 3)) is None, "9 tokens: under the 12-token minimum"
    assert repeated_span(np.array([7] * 12)) == (0, 1, 12) and repeated_span(np.array([7] * 11)) is None
    assert repeated_span(np.arange(64)) is None
    assert repeated_span(np.array(clock * 2 + [1, 2, 3])) is None, "two copies are not a loop"


def test_a_story_stuck_in_a_loop_is_red_and_names_the_token_rule_and_span(smollm2):
    model, tok = smollm2
    prompt = "Once upon a time there was a man. He had a clock with a clock on it. He had a clock with a clock on it."
    trace = corevital.analyze(model, prompt, tok, max_new_tokens=40)
    h = trace.health
    assert h.repetition_loop_detected and h.repetition_span is not None
    start, period, copies = h.repetition_span
    span = "".join(trace.generated_tokens[start:start + period])
    assert "clock" in span and copies >= 3
    assert h.first_fired["repetition_loop_detected"].step == start + 2 * period
    v = trace.verdict(baseline=None)
    assert v.color == "red" and "token rule" in v.sentence and span.strip() in v.sentence
