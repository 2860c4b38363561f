"""Widgets on the Python side: the binary payload, selection and sparse queries, show(), export, charts.

Runs on the real SmolLM2 trace (conftest's ``smollm2_trace``); the browser side is in
js/test (vitest) and tests/test_browser_widgets.py (headless Chromium + JupyterLab).
"""

from __future__ import annotations

import sys

import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest
import traitlets

import corevital_widgets as corevital
from corevital_widgets.widgets import (
    AttentionGraph, Dashboard, HeadHeatmap, HealthBadge, TokenTimeline, export_html, link_selection, show,
)
from corevital_widgets.widgets.payload import decode_arrays, edges_payload, encode_arrays, trace_payload

ROOT = Path(__file__).resolve().parents[1]


def _golden_module():
    spec = importlib.util.spec_from_file_location("make_payload_fixture", ROOT / "js/test/fixtures/make_payload_fixture.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_payload_matches_the_golden_file_the_browser_decoder_is_tested_on():
    mod = _golden_module()
    assert encode_arrays(mod.golden_arrays(), mod.GOLDEN_META) == (ROOT / "js/test/fixtures/golden.cvw").read_bytes()


def test_payload_round_trip_keeps_dtypes_shapes_and_strings():
    arrays = {
        "a": np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4),
        "h": np.array([[0.5, np.nan]], dtype=np.float16),
        "k": np.arange(5, dtype=np.int64),
        "s": ["x", "ß", "\n", "🙂"],
        "nested": [["a", "b"], ["c", ""]],
    }
    meta, out = decode_arrays(encode_arrays(arrays, {"n": 1}))
    assert meta == {"n": 1}
    np.testing.assert_array_equal(out["a"], arrays["a"])
    assert out["h"].dtype == np.float16 and np.isnan(out["h"][0, 1])
    assert out["k"].dtype == np.int32 and out["k"].tolist() == [0, 1, 2, 3, 4]
    assert out["s"] == arrays["s"] and out["nested"] == arrays["nested"]
    with pytest.raises(ValueError, match="magic"):
        decode_arrays(b"XXXX" + encode_arrays(arrays)[4:])
    with pytest.raises(TypeError, match="unsupported dtype"):
        encode_arrays({"c": np.zeros(2, dtype=np.complex64)})


def test_trace_payload_carries_each_view_only_what_it_needs(smollm2_trace):
    tr = smollm2_trace
    meta, full = decode_arrays(trace_payload(tr, "dashboard"))
    assert meta["n_prompt"] == tr.n_prompt and meta["n_steps"] == tr.n_steps
    assert (meta["n_layers"], meta["n_heads"]) == (tr.n_layers, tr.n_heads)
    assert meta["health"]["verdict"] == tr.health.verdict and meta["fired"] == tr.health.fired
    assert full["prompt_tokens"] == tr.prompt_tokens and full["generated_tokens"] == tr.generated_tokens
    np.testing.assert_array_equal(full["entropy"], tr.timeline.entropy)
    np.testing.assert_array_equal(full["head_entropy"], tr.heads.entropy)
    np.testing.assert_array_equal(full["prompt_sink"], tr.prompt.sink)
    assert full["top_k_probs"].dtype == np.float16
    assert not any("sparse" in k or k in ("keys", "row_counts", "weights") for k in full)
    _, graph = decode_arrays(trace_payload(tr, "graph"))
    assert set(graph) == {"prompt_tokens"}
    _, badge = decode_arrays(trace_payload(tr, "badge"))
    assert badge == {}
    with pytest.raises(ValueError, match="unknown view"):
        trace_payload(tr, "nope")


def test_top_k_alternatives_are_decoded_for_hover(smollm2, smollm2_trace):
    _, tok = smollm2
    _, arr = decode_arrays(trace_payload(smollm2_trace, "timeline", tokenizer=tok))
    ids = smollm2_trace.timeline.top_k_ids
    assert len(arr["top_k_tokens"]) == ids.shape[0] and len(arr["top_k_tokens"][0]) == ids.shape[1]
    assert arr["top_k_tokens"][0][0] == tok.decode([int(ids[0, 0])])


def test_edges_payload_is_the_sparse_query_result(smollm2_trace):
    tr = smollm2_trace
    for token, layer, head in [(5, 3, 2), (tr.n_prompt - 1, None, None), (7, 0, None), (9, None, 4)]:
        meta, e = decode_arrays(edges_payload(tr, token, layer, head))
        assert meta == {"token": token, "layer": layer, "head": head, "incoming": True}
        keys, w = tr.attends_to(token, layer, head)
        np.testing.assert_array_equal(e["out_keys"], keys)
        np.testing.assert_array_equal(e["out_weights"], w)
        q, wq = tr.attended_by(token, layer, head)
        np.testing.assert_array_equal(e["in_queries"], q)
        np.testing.assert_array_equal(e["in_weights"], wq)


def test_dashboard_selection_runs_the_query_and_calls_back(smollm2_trace):
    tr = smollm2_trace
    dash = Dashboard(tr)
    assert dash.selection == {"step": 0, "token": tr.n_prompt - 1, "layer": None, "head": None, "metric": "entropy"}
    seen: list[dict] = []
    dash.on_select(seen.append)
    dash.selection = {**dash.selection, "token": 4, "layer": 2, "head": 1}  # what a browser click does
    assert seen[-1]["token"] == 4 and seen[-1]["layer"] == 2
    meta, e = decode_arrays(dash.edges)
    assert meta == {"token": 4, "layer": 2, "head": 1, "incoming": False}
    np.testing.assert_array_equal(e["out_keys"], tr.attends_to(4, 2, 1)[0])
    assert e["in_queries"].size == 0  # attended_by only runs when the browser shows it
    dash.options = {**dash.options, "incoming": True}
    meta, e = decode_arrays(dash.edges)
    assert meta["incoming"] is True
    np.testing.assert_array_equal(e["in_queries"], tr.attended_by(4, 2, 1)[0])
    before = dash.edges
    dash.select(step=3, metric="surprisal")  # no token/layer/head change: no new query
    assert dash.edges is before and seen[-1]["metric"] == "surprisal"
    with pytest.raises(traitlets.TraitError, match="out of range"):
        dash.select(token=tr.n_prompt)
    with pytest.raises(traitlets.TraitError, match="metric"):
        dash.select(metric="vibes")
    with pytest.raises(ValueError, match="unknown selection keys"):
        dash.select(colour="red")


def test_each_component_stands_alone_and_can_share_a_selection(smollm2_trace):
    views = [HealthBadge(smollm2_trace), TokenTimeline(smollm2_trace), HeadHeatmap(smollm2_trace), AttentionGraph(smollm2_trace)]
    assert [v.view for v in views] == ["badge", "timeline", "heatmap", "graph"]
    assert all(v.data for v in views)
    assert views[0].edges == b"" and views[3].edges != b""  # only the graph needs the kernel's query
    sizes = [len(v.data) for v in views]
    assert sizes[0] < sizes[3] < sizes[1]
    links = link_selection(*views)
    assert len(links) == 3


def test_show_of_a_trace_and_live_generation(smollm2, smollm2_trace):
    dash = show(smollm2_trace)
    assert isinstance(dash, Dashboard) and dash.trace is smollm2_trace
    model, tok = smollm2
    steps: list[tuple[int, int]] = []
    dash = show(model, "The capital of France is", tok, max_new_tokens=3, on_step=lambda s, t: steps.append((s, t)))
    tr = dash.trace
    assert [s for s, _ in steps] == list(range(tr.n_steps))
    assert [t for _, t in steps] == tr.generated_ids.tolist()
    assert dash.live_tokens == [tok.decode([t]) for _, t in steps]
    assert dash.progress["done"] and dash.progress["step"] == tr.n_steps and dash.progress["total"] == 3
    with pytest.raises(TypeError, match="prompt"):
        show(model)


def test_the_prompt_pass_is_a_phase_with_blocks_done(smollm2, monkeypatch):
    """A long prompt's slow phase is the prompt pass: show() reports it block by block ("reading the
    prompt: layer k/L"), then switches to generating at the first token; analyze reports the same
    through on_prompt_layer."""
    model, tok = smollm2
    layers: list[tuple[int, int]] = []
    tr = corevital.analyze(model, "The capital of France is", tok, max_new_tokens=2,
                           on_prompt_layer=lambda done, total: layers.append((done, total)))
    assert layers == [(k, tr.n_layers) for k in range(1, tr.n_layers + 1)]
    seen: list[dict] = []
    dash = Dashboard()
    dash.observe(lambda ch: seen.append(dict(ch["new"])), names="progress")
    show_module = sys.modules["corevital_widgets.widgets.show"]
    monkeypatch.setattr(show_module, "Dashboard", lambda *a, **k: dash)  # watch the dashboard show() makes
    assert show(model, "The capital of France is", tok, max_new_tokens=2) is dash
    phases = [p.get("phase") for p in seen]
    assert phases[0] == "reading the prompt" and "generating" in phases
    prompt_updates = [p for p in seen if p.get("phase") == "reading the prompt" and "layers" in p]
    assert [p["layer"] for p in prompt_updates] == list(range(1, tr.n_layers + 1))
    assert phases.index("generating") > max(i for i, p in enumerate(seen) if p.get("phase") == "reading the prompt")
    # without prompt telemetry there is no prompt phase
    seen.clear()
    dash.start_live(2, phase="generating")
    assert all(p.get("phase") != "reading the prompt" for p in seen)


def test_trace_without_prompt_telemetry_and_show_input_errors(smollm2):
    model, tok = smollm2
    tr = corevital.analyze(model, "Hello", tok, max_new_tokens=2, prompt_telemetry=False)
    dash = Dashboard(tr)
    meta, _ = decode_arrays(dash.data)
    assert meta["has_prompt_attention"] is False and dash.edges == b""
    dash.select(token=0, layer=1)  # nothing to query, nothing breaks
    assert dash.selection["token"] == 0
    with pytest.raises(ValueError):
        show(model, "Hello", tok, max_new_tokens=0)


def test_export_html_is_standalone(tmp_path, smollm2_trace):
    path = export_html(smollm2_trace, tmp_path / "page.html", selection={"token": 3, "layer": 1, "head": 0})
    text = path.read_text()
    assert not re.search(r"""(src|href)=["']https?://""", text), "the page must not load anything from the network"
    state = json.loads(re.search(r'<script id="corevital-state" type="application/json">(.*?)</script>', text, re.S).group(1))
    assert state["selection"]["token"] == 3 and state["view"] == "dashboard"
    assert "</script" not in re.search(r'<script id="corevital-esm" type="text/plain">(.*)</script>\s*<script type="module">', text, re.S).group(1)


@pytest.mark.parametrize("metric", ["entropy", "perplexity", "l2_norm", "collapsed_head_count", "layer_transformation"])
def test_trace_chart(smollm2_trace, metric):
    import altair as alt

    from corevital_widgets.trace.charts import trace_chart

    chart = trace_chart(smollm2_trace, metric)
    assert isinstance(chart, alt.Chart)
    spec = chart.to_dict()
    rows = spec["datasets"][next(iter(spec["datasets"]))]
    expected = smollm2_trace.n_steps if metric in ("entropy", "perplexity") else 3 * smollm2_trace.n_layers
    assert len(rows) == expected


def test_trace_chart_rejects_unknown_metrics(smollm2_trace):
    from corevital_widgets.trace.charts import trace_chart

    with pytest.raises(ValueError, match="unknown metric"):
        trace_chart(smollm2_trace, "vibes")


def test_text_plain_is_a_readable_face_not_the_object_repr(smollm2_trace, smollm2_traceset):
    """Terminals and notebook previews without widgets show text/plain: it says the verdict, the
    sizes, the answer and the risk, not '<Dashboard object at 0x…>'; the widget view stays."""
    from corevital_widgets import DatasetView
    from corevital_widgets.analysis.verdict import assess

    tr = smollm2_trace
    for view in (Dashboard(tr), HealthBadge(tr), HeadHeatmap(tr)):
        b = view._repr_mimebundle_()
        b = b[0] if isinstance(b, tuple) else b
        assert "application/vnd.jupyter.widget-view+json" in b
        text = b["text/plain"]
        assert "object at 0x" not in text and assess(tr).sentence in text
        assert f"prompt {tr.n_prompt} tokens, generated {tr.n_steps}" in text and "risk of a wrong answer" in text
    assert "no trace yet" in Dashboard().text_face()
    ts, _, correct = smollm2_traceset
    face = DatasetView(ts, correct).text_face()
    assert face.startswith(f"corevital dataset view: {len(ts)} prompts; {sum(c is True for c in correct)} correct")
