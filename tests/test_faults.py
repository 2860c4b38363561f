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


def _layer_hook(model, layer, fault, from_step):
    """A user's forward hook on one decoder layer applying ``fault`` from forward ``from_step`` on."""
    calls = {"n": 0}

    def hook(module, args, output):
        step = calls["n"]
        calls["n"] += 1
        if step < from_step:
            return None
        h = output[0] if isinstance(output, tuple) else output
        h = fault(h)
        return (h, *output[1:]) if isinstance(output, tuple) else h

    return model.model.layers[layer].register_forward_hook(hook)


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
