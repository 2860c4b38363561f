"""trace_features: every feature equals an independent recomputation from the trace arrays
(plain Python over lists, not the module's numpy code)."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest

from corevital_widgets.analysis.features import (
    FEATURE_NAMES,
    LENS_FEATURE_NAMES,
    trace_features,
)


def _flat(a):
    return [float(x) for x in np.asarray(a, dtype=np.float64).ravel().tolist()]


def _mean(xs):
    xs = [x for x in xs if not math.isnan(x)]
    return sum(xs) / len(xs) if xs else math.nan


def _expected(trace) -> dict[str, float]:
    tl, lay, att, pr = trace.timeline, trace.layers, trace.attention, trace.prompt
    ent = _flat(tl.entropy)
    margin = _flat(tl.top_k_margin)
    mp = _flat(tl.max_prob)
    s = _flat(tl.surprisal)
    T, L, H = len(ent), trace.n_layers, trace.n_heads
    norms = np.asarray(lay.l2_norm, dtype=np.float64).tolist()
    rep = [x for x in _flat(tl.repetition_similarity) if not math.isnan(x)]
    lt = np.asarray(pr.layer_transformation, dtype=np.float64).tolist()
    basin = _flat(pr.basin)
    emax, emin = np.asarray(att.entropy_max, np.float64).tolist(), np.asarray(att.entropy_min, np.float64).tolist()
    spread = [emax[t][l] - emin[t][l] for t in range(T) for l in range(L)]
    collapsed = sum(int(c) for c in np.asarray(att.collapsed_head_count).ravel().tolist())
    e3 = L // 3
    mid = range(L // 3, 2 * L // 3)
    return {
        "n_steps": T, "n_prompt": len(trace.prompt_tokens),
        "entropy_mean": sum(ent) / T, "entropy_max": max(ent),
        "high_entropy_fraction": sum(1 for e in ent if e > 4.0) / T,
        "margin_mean": sum(margin) / T, "margin_min": min(margin),
        "max_prob_mean": sum(mp) / T, "max_prob_min": min(mp),
        "surprisal_mean": sum(s) / T, "surprisal_max": max(s), "sequence_log2_likelihood": -sum(s),
        "collapsed_head_rate": collapsed / (T * L * H),
        "attention_entropy_spread": sum(spread) / len(spread),
        "attention_entropy_mean": _mean(_flat(att.entropy_mean)),
        "hidden_norm_growth": sum(norms[t][L - 2] / norms[t][0] for t in range(T)) / T,
        "mid_norm_ratio_max": max(max(norms[t][l] for l in mid) / (sum(norms[t][:e3]) / e3) for t in range(T)),
        "repetition_similarity_max": max(rep) if rep else math.nan,
        "prompt_surprisal_mean": _mean(_flat(pr.surprisal)),
        "layer_transformation_mean": _mean([x for row in lt for x in row]),
        "layer_transformation_max": max(sum(row) / len(row) for row in lt),
        "basin_mean": sum(basin) / len(basin), "basin_min": min(basin),
        "basin_low_fraction": sum(1 for b in basin if b < 0.3) / len(basin),
        "sink_mean": _mean(_flat(pr.sink)),
    }


def test_every_feature_matches_an_independent_recomputation(smollm2_trace):
    got = trace_features(smollm2_trace)
    want = _expected(smollm2_trace)
    assert tuple(got) == FEATURE_NAMES == tuple(want), "no lens features without lens_entropy"
    for name in FEATURE_NAMES:
        assert math.isfinite(got[name]), f"{name} is finite on a real 24-step trace with prompt telemetry"
        assert got[name] == pytest.approx(want[name], rel=1e-6, abs=1e-9), name
    assert got["n_steps"] == 24 and 0 <= got["collapsed_head_rate"] <= 1
    assert got["sequence_log2_likelihood"] <= 0 and 0 < got["max_prob_min"] <= got["max_prob_mean"] <= 1


def test_lens_features_when_recorded(smollm2_trace):
    trace = copy.copy(smollm2_trace)
    trace.layers = copy.copy(smollm2_trace.layers)
    T, L = smollm2_trace.n_steps, smollm2_trace.n_layers
    lens = np.random.default_rng(0).uniform(0, 15, size=(T, L)).astype(np.float32)
    trace.layers.lens_entropy = lens
    got = trace_features(trace)
    assert tuple(got) == FEATURE_NAMES + LENS_FEATURE_NAMES
    rows = np.asarray(lens, np.float64).tolist()
    all_vals = [x for r in rows for x in r]
    mid = range(L // 3, 2 * L // 3)
    assert got["lens_entropy_mean"] == pytest.approx(sum(all_vals) / len(all_vals), rel=1e-9)
    assert got["lens_entropy_mid_mean"] == pytest.approx(sum(r[l] for r in rows for l in mid) / (T * len(mid)), rel=1e-9)
    assert got["lens_entropy_drop"] == pytest.approx(sum(r[L // 2] - r[L - 1] for r in rows) / T, rel=1e-9)
    trace.layers.lens_entropy = np.zeros((0, 0), np.float32)  # requested-but-empty counts as absent
    assert tuple(trace_features(trace)) == FEATURE_NAMES


def test_absent_inputs_give_nan_not_zero(smollm2, chat_prompt):
    import corevital_widgets as corevital

    model, tok = smollm2
    trace = corevital.analyze(model, chat_prompt, tok, max_new_tokens=3, min_new_tokens=3, prompt_telemetry=False)
    f = trace_features(trace)
    for name in ("prompt_surprisal_mean", "layer_transformation_mean", "layer_transformation_max", "basin_mean",
                 "basin_min", "basin_low_fraction", "sink_mean", "repetition_similarity_max"):
        assert math.isnan(f[name]), name
    assert f["n_steps"] == 3 and math.isfinite(f["entropy_mean"])
