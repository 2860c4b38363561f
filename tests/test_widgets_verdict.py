"""The verdict (green / yellow / red against the model's own normal) reaches the widgets: the
payload meta carries ``assess(trace).to_dict()`` (JSON-safe), the heatmap payload the per-cell
z-scores against the baseline, and the exported page the verdict's sentence and narrative."""

from __future__ import annotations

import html
import json
import re

import numpy as np
import pytest

import corevital_widgets as corevital
from corevital_widgets.analysis import registry
from corevital_widgets.analysis.baseline import ALPHAS, SCALE_FLOORS, Baseline, trace_cells
from corevital_widgets.analysis.registry import find_baseline
from corevital_widgets.analysis.verdict import assess
from corevital_widgets.widgets.components import Dashboard, HeadHeatmap
from corevital_widgets.widgets.html_export import export_html
from corevital_widgets.widgets.payload import Z_ARRAYS, decode_arrays, trace_payload


@pytest.fixture(scope="module")
def hello_trace(smollm2):
    model, tok = smollm2
    return corevital.analyze(model, "Hello", tok, max_new_tokens=8)


def _check_verdict_meta(meta: dict, trace) -> dict:
    v = meta["verdict"]
    want = assess(trace).to_dict()
    assert v["color"] in ("green", "yellow", "red") and v["color"] == want["color"]
    assert isinstance(v["sentence"], str) and v["sentence"] and v["sentence"] == want["sentence"]
    assert v["narrative"] == want["narrative"]
    assert isinstance(v["blame"], list) and isinstance(v["reasons"], list)
    json.dumps(v, allow_nan=False)  # JSON-safe: non-finite floats became None
    # the old absolute-rules verdict stays as a health fact
    assert meta["health"]["verdict"] == trace.health.verdict
    return v


def _check_z_arrays(meta: dict, arrays: dict, trace, base: Baseline) -> None:
    L, H = trace.n_layers, trace.n_heads
    dev = base.deviation(trace)
    assert meta["z_threshold"] == pytest.approx(dev.threshold)
    for name, stat in Z_ARRAYS.items():
        assert arrays[name].dtype == np.float32 and arrays[name].shape == (L, H), name
        np.testing.assert_allclose(arrays[name], dev.z[stat].astype(np.float32), rtol=1e-6, equal_nan=True)


def test_dashboard_payload_carries_the_verdict_and_z_when_a_baseline_ships(hello_trace):
    """Both branches: with the shipped baseline (when the package has one for SmolLM2) the z arrays
    and the threshold travel; without one the verdict says there is no baseline and no z travels."""
    tr = hello_trace
    meta, arrays = decode_arrays(Dashboard(tr).data)
    v = _check_verdict_meta(meta, tr)
    base = find_baseline(tr)
    if base is None:
        assert v["baseline"] is None and v["alpha"] is None
        assert "No baseline for" in v["sentence"] or v["color"] == "red"
        assert not any(k.startswith("z_") for k in arrays) and "z_threshold" not in meta
    else:
        assert v["baseline"] and v["alpha"] == pytest.approx(0.05)
        _check_z_arrays(meta, arrays, tr, base)
    # the badge alone needs no arrays, but says the verdict
    bmeta, barrays = decode_arrays(trace_payload(tr, "badge"))
    assert barrays == {} and bmeta["verdict"] == v


def _shifted_baseline(trace, layer: int, head: int) -> Baseline:
    """A baseline whose normal is this very trace, except the attention entropy while generating
    of (layer, head), which it expects 9 scales higher: the trace is then unusual there, and only
    there. ("Hello" is one prompt token: the prompt statistics say little.)"""
    cells = trace_cells(trace)
    center = {k: np.array(v, dtype=np.float64) for k, v in cells.items()}
    scale = {k: np.full(np.shape(v), SCALE_FLOORS[k]) for k, v in cells.items()}
    assert np.isfinite(center["step_entropy"][layer, head])
    center["step_entropy"][layer, head] += 9 * scale["step_entropy"][layer, head]
    return Baseline(fingerprint=str(trace.meta["model_fingerprint"]), model_name=str(trace.meta["model_name"]),
                    n_traces=200, center=center, scale=scale, thresholds={float(a): 4.0 for a in ALPHAS},
                    shapes=(trace.n_layers, trace.n_heads), n_calibration=100)


def test_registered_baseline_gives_yellow_blame_and_z_arrays(hello_trace, monkeypatch):
    """Always checks the baseline branch: a registered baseline (a synthetic one, unusual at one cell)."""
    tr = hello_trace
    red = assess(tr, None).color == "red"  # the absolute rules win; blame and z travel all the same
    layer, head = min(5, tr.n_layers - 1), min(4, tr.n_heads - 1)
    base = _shifted_baseline(tr, layer, head)
    monkeypatch.setattr(registry, "_registered", {base.fingerprint: base})
    assert find_baseline(tr) is base

    meta, arrays = decode_arrays(HeadHeatmap(tr).data)
    v = _check_verdict_meta(meta, tr)
    assert v["color"] == ("red" if red else "yellow") and v["alpha"] == pytest.approx(0.05) and "200 runs" in v["baseline"]
    assert v["blame"][0]["layer"] == layer and v["blame"][0]["reasons"][0]["heads"] == [head]
    assert v["blame"][0]["reasons"][0]["statistic"] == "step_entropy"
    assert v["blame"][0]["reasons"][0]["z"] == pytest.approx(-9.0, abs=1e-3)
    if not red:
        assert f"layer {layer}" in v["sentence"]
    _check_z_arrays(meta, arrays, tr, base)
    z = arrays["z_step_entropy"]
    assert abs(z[layer, head]) > meta["z_threshold"]
    assert np.nanmax(np.abs(np.delete(z.ravel(), layer * tr.n_heads + head))) < 1e-3  # zero elsewhere

    # views without the heatmap carry no z arrays
    _, tl = decode_arrays(trace_payload(tr, "timeline"))
    assert not any(k.startswith("z_") for k in tl)


def test_exported_page_states_the_verdict(hello_trace, tmp_path):
    """The page text (before any script runs, and so in a browser without JavaScript) has the
    verdict's sentence and narrative; the badge shows the same once the views render."""
    tr = hello_trace
    v = assess(tr)
    page = export_html(tr, tmp_path / "verdict.html").read_text(encoding="utf-8")
    text = html.unescape(re.sub(r"<[^>]+>", "", page))
    assert v.sentence in text and v.narrative in text
    assert v.calibration in text  # what the colour is judged against, and the false-alarm rate
    if v.alpha is not None:
        assert f"probability {v.alpha * 100:g}%" in v.calibration
    assert 'data-verdict="' + v.color + '"' in page
