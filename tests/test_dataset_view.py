"""The dataset view (rows, risk, row selection -> dashboard), the risk in the health badge and the
logit-lens payload, on real SmolLM2 traces (conftest's ``smollm2_traceset`` and ``smollm2_trace``)."""

from __future__ import annotations

import json
import re
import shutil
import warnings

import numpy as np
import pytest
import traitlets

import corevital_widgets as corevital
from corevital_widgets import TraceSet
from corevital_widgets.analysis.risk import RiskModel, heuristic_risk
from corevital_widgets.suite import INSTRUCTION
from corevital_widgets.widgets import DatasetView, HeadHeatmap, HealthBadge
from corevital_widgets.widgets.dataset_view import answer_display_text, prompt_display_text
from corevital_widgets.widgets.payload import decode_arrays, trace_payload


def _view(smollm2_traceset, **kwargs) -> DatasetView:
    ts, _, correct = smollm2_traceset
    return DatasetView(ts, correct, **kwargs)


def test_rows_are_the_traceset_summaries(smollm2_traceset):
    ts, items, correct = smollm2_traceset
    view = _view(smollm2_traceset)
    summ = ts.to_pandas()
    frame = view.to_pandas()
    assert len(frame) == len(ts) == len(view.rows["prompt"])
    assert frame["answer"].tolist() == summ["text"].tolist()
    assert frame["verdict"].tolist() == summ["verdict"].tolist() == view.rows["verdict"]
    assert frame["tokens"].tolist() == summ["n_steps"].astype(int).tolist() == view.rows["tokens"]
    np.testing.assert_array_equal(frame["entropy"].to_numpy(), summ["entropy_mean"].to_numpy())
    assert view.rows["entropy"] == summ["entropy_mean"].tolist()
    assert frame["prompt"].tolist() == ts.prompts
    assert frame["correct"].tolist() == correct == view.rows["correct"]
    # the table shows the question of the chat template, and the answer without <|im_end|>
    assert view.rows["prompt"] == [f"{it.question} {INSTRUCTION}" for it in items]
    assert view.rows["answer"] == [answer_display_text(t) for t in summ["text"]]
    assert not any("<|im_end|>" in a for a in view.rows["answer"])
    assert view.columns["risk_kind"] == "logistic" and view.columns["risk_label"] == "calibrated"
    assert view.columns["graded"] is True and view.columns["n"] == len(ts)
    json.dumps(view.rows)  # plain JSON for the browser


def test_risk_is_the_risk_models_prediction(smollm2_traceset):
    ts, _, _ = smollm2_traceset
    shipped = RiskModel.load_default(ts[0])
    np.testing.assert_array_equal(_view(smollm2_traceset).risks, shipped.predict_proba(ts))  # all inside its range
    # a model whose training range ends at the median of these runs: the runs above get no number
    model = RiskModel.from_json(shipped.to_json())
    feats = ts.to_pandas()[model.feature_names].to_numpy()
    model.train_max_ = np.minimum(model.train_max_, np.median(feats, axis=0))
    view = _view(smollm2_traceset, risk_model=model)
    expected = model.predict_proba(ts)
    outside = np.array([bool(model.outside_range(t)) for t in ts])
    assert outside.any() and not outside.all()
    np.testing.assert_array_equal(view.risks[~outside], expected[~outside])
    assert np.isnan(view.risks[outside]).all()
    assert view.rows["risk"] == [None if o else float(e) for o, e in zip(outside, expected)]
    assert view.rows["risk_withheld"] == outside.tolist()
    assert view.to_pandas()["risk_withheld"].tolist() == outside.tolist()
    assert view.risk_model.kind == "logistic"

    heur = RiskModel(kind="heuristic")
    hview = _view(smollm2_traceset, risk_model=heur)
    np.testing.assert_array_equal(hview.risks, [heuristic_risk(t) for t in ts])
    assert hview.columns["risk_label"] == "uncalibrated heuristic"


def test_clicking_a_row_loads_that_trace_into_the_dashboard(smollm2_traceset):
    ts, _, _ = smollm2_traceset
    view = _view(smollm2_traceset)
    assert view.trace is None and view.data == b"" and view.row is None
    seen: list[int] = []
    view.observe(lambda ch: seen.append(ch["new"]), names="loaded_row")
    for i in (2, 0, len(ts) - 1):
        view.row = i  # what a click in the browser does
        want = ts[i]
        assert view.loaded_row == i and view.trace == want
        meta, arrays = decode_arrays(view.data)
        assert (meta["n_prompt"], meta["n_steps"]) == (want.n_prompt, want.n_steps)
        assert arrays["generated_tokens"] == want.generated_tokens
        # the badge below the table shows the row's risk, the same number as the table; neither
        # prints one outside the range the risk model was calibrated on
        value = view.risk_model.predict_proba(want)
        shown = None if meta["risk"]["outside"] else value
        assert view.rows["risk"][i] == meta["risk"]["value"] == shown
        assert view.rows["risk_withheld"][i] == bool(meta["risk"]["outside"])
        assert view.selection["step"] == 0 and view.selection["token"] == want.n_prompt - 1
        assert view.edges  # the attention graph below has its edges
    assert seen == [2, 0, len(ts) - 1]
    assert view.select_row(1) == ts[1]
    with pytest.raises(traitlets.TraitError, match="row must be an int"):
        view.row = len(ts)


def test_a_dataframe_of_rows_with_the_traceset(smollm2_traceset):
    ts, items, correct = smollm2_traceset
    df = ts.to_pandas().assign(question=[it.question for it in items], expected=[it.answer for it in items],
                               correct=[None, *correct[1:]])
    view = DatasetView(df, traceset=ts)
    assert view.rows["prompt"] == [it.question for it in items]
    assert view.rows["expected"] == [it.answer for it in items]
    assert view.rows["correct"] == [None, *correct[1:]]
    assert view.columns["has_expected"] is True
    flipped = [not c for c in correct]
    assert DatasetView(df, flipped, traceset=ts).rows["correct"] == flipped  # labels override the column
    assert DatasetView(ts, np.array(correct, dtype=float)).rows["correct"] == correct
    assert DatasetView(ts, [None] * len(ts)).columns["graded"] is False


def test_bad_input_is_refused_with_a_clear_error(smollm2_traceset):
    ts, _, correct = smollm2_traceset
    with pytest.raises(TypeError, match="TraceSet"):
        DatasetView([1, 2, 3])
    with pytest.raises(TypeError, match="TraceSet"):
        DatasetView(ts[0])
    with pytest.raises(ValueError, match=f"labels has 2 entries but the TraceSet has {len(ts)}"):
        DatasetView(ts, [True, False])
    with pytest.raises(ValueError, match="True/False or 1/0"):
        DatasetView(ts, [2] * len(ts))
    with pytest.raises(TypeError, match="labels must be booleans"):
        DatasetView(ts, ["yes"] * len(ts))
    with pytest.raises(TypeError, match="sequence of booleans"):
        DatasetView(ts, "TTFF")
    with pytest.raises(TypeError, match="traceset="):
        DatasetView(ts.to_pandas())
    with pytest.raises(ValueError, match="rows but the TraceSet has"):
        DatasetView(ts.to_pandas().iloc[:2], traceset=ts)
    with pytest.raises(TypeError, match="risk_model"):
        DatasetView(ts, risk_model="smollm2")
    view = DatasetView(ts, correct)
    with pytest.raises(ValueError, match="unknown column"):
        view.sort_by("colour")
    with pytest.raises(ValueError, match="min_risk"):
        view.filter(min_risk=2)
    with pytest.raises(ValueError, match="correct must be one of"):
        view.filter(correct="maybe")
    view.sort_by("risk", descending=True)
    view.filter("capital", correct="incorrect", min_risk=0.5)
    assert view.table == {"sort": "risk", "desc": True, "query": "capital", "correct": "incorrect", "verdict": "all", "min_risk": 0.5}


def test_a_damaged_trace_file_is_reported_in_the_view(smollm2_traceset, tmp_path):
    ts, _, correct = smollm2_traceset
    shutil.copytree(ts.out_dir, tmp_path / "copy")
    copy = TraceSet.load(tmp_path / "copy")
    view = DatasetView(copy, correct)
    view.row = 0
    copy.paths[1].write_bytes(copy.paths[1].read_bytes()[:100])
    view.row = 1
    assert "could not load the trace of row 1" in view.status
    assert view.loaded_row == 0 and view.trace == ts[0]  # the last good trace stays
    view.row = 2
    assert view.status == "" and view.loaded_row == 2


def test_prompt_display_text_finds_the_user_turn():
    assert prompt_display_text("<|im_start|>system\nBe nice<|im_end|>\n<|im_start|>user\nWhy  is\nthe sky blue?<|im_end|>\n"
                               "<|im_start|>assistant\n") == "Why is the sky blue?"
    llama3 = ("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>"
              "<|start_header_id|>assistant<|end_header_id|>\n\n")
    assert prompt_display_text(llama3) == "Hi there"
    assert prompt_display_text("<bos><start_of_turn>user\nFirst<end_of_turn>\n<start_of_turn>model\nok<end_of_turn>\n"
                               "<start_of_turn>user\nSecond<end_of_turn>\n") == "Second"
    assert prompt_display_text("<s>[INST] What is 2+2? [/INST]") == "What is 2+2?"
    assert prompt_display_text("The capital of France is") == "The capital of France is"
    assert answer_display_text("Paris.<|im_end|>") == "Paris."


def test_the_badge_shows_the_same_risk_as_the_summary(smollm2_trace):
    tr = smollm2_trace
    meta, _ = decode_arrays(HealthBadge(tr).data)
    model = RiskModel.load_default(tr.meta["model_name"])
    value = model.predict_proba(tr)
    # features outside the shipped model's training range, recomputed here: the value is then "extrapolated"
    f = tr.features()
    outside = [n for i, n in enumerate(model.feature_names) if not model.train_min_[i] <= f[n] <= model.train_max_[i]]
    assert meta["risk"]["kind"] == "logistic" and meta["risk"]["outside"] == outside
    if outside:  # never a probability outside the calibrated range: the badge says why instead
        assert meta["risk"]["value"] is None and meta["risk"]["label"] == "extrapolated"
        assert outside[0] in meta["risk"]["description"] and "fit corevital.RiskModel" in meta["risk"]["description"]
        assert f"risk: {meta['risk']['description']}" in tr.summary()
    else:
        assert meta["risk"]["value"] == value and meta["risk"]["label"] == "calibrated"
        # ... with what the model earned on question families it was not fitted on (not the in-family figure)
        held = model.meta["held_out"]
        assert meta["risk"]["description"].startswith("calibrated probability of a wrong answer (")
        assert f"on question families it was not fitted on: AUROC {held['auroc']:.2f}" in meta["risk"]["description"]
        assert meta["risk"]["description"] in tr.summary()
        assert f"risk: {value:.2f} ({meta['risk']['description']})" in tr.summary()
    # the dashboard carries it too; views that do not show it do not compute it
    assert decode_arrays(trace_payload(tr, "dashboard"))[0]["risk"] == meta["risk"]
    assert decode_arrays(trace_payload(tr, "timeline"))[0]["risk"] is None
    # another model: the heuristic, said so, in the badge and in the summary
    # another model is another fingerprint (the name does not matter any more)
    other = corevital.Trace(**{**tr.__dict__, "meta": {**tr.meta, "model_name": "some/other-model",
                                                       "model_fingerprint": "0123456789abcdef"}})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the badge and summary do not warn; they say "uncalibrated"
        meta2, _ = decode_arrays(HealthBadge(other).data)
        text = other.summary()
    assert meta2["risk"]["kind"] == "heuristic" and meta2["risk"]["label"] == "uncalibrated heuristic"
    assert meta2["risk"]["value"] == heuristic_risk(other)
    assert f"risk: {heuristic_risk(other):.2f} (uncalibrated heuristic score)" in text


def test_lens_payload_is_the_traces_lens(smollm2, smollm2_traceset, smollm2_trace):
    _, tok = smollm2
    ts, _, _ = smollm2_traceset
    tr = ts[1]
    T, L = tr.n_steps, tr.n_layers
    assert tr.layers.lens_entropy.shape == (T, L)
    meta, arrays = decode_arrays(HeadHeatmap(tr, tokenizer=tok).data)
    assert meta["has_lens"] is True
    np.testing.assert_array_equal(arrays["lens_entropy"], tr.layers.lens_entropy)
    np.testing.assert_array_equal(arrays["lens_top1"], tr.layers.lens_top1)
    ids = arrays["lens_top1_ids"]
    assert ids.tolist() == np.unique(tr.layers.lens_top1).tolist()
    assert arrays["lens_top1_text"] == [tok.decode([int(i)]) for i in ids]
    # without a tokenizer: the pieces the trace already decoded (its own tokens and top-k alternatives)
    _, plain = decode_arrays(HeadHeatmap(tr).data)
    known = dict(zip(tr.generated_ids.tolist(), tr.generated_tokens)) | dict(zip(tr.prompt_ids.tolist(), tr.prompt_tokens))
    for i, text in zip(plain["lens_top1_ids"].tolist(), plain["lens_top1_text"]):
        if i in known:
            assert text == known[i]
    last = tr.layers.lens_top1[:, -1]  # the last layer's lens is the model's own top-1: always decoded
    assert all(plain["lens_top1_text"][int(np.searchsorted(plain["lens_top1_ids"], i))] for i in last)
    # a trace made without the lens: no lens arrays, the view hides the option
    meta0, arrays0 = decode_arrays(HeadHeatmap(smollm2_trace).data)
    assert meta0["has_lens"] is False and not any(k.startswith("lens") for k in arrays0)


def test_dataset_view_exports_as_a_standalone_page(smollm2_traceset, tmp_path):
    view = _view(smollm2_traceset, row=1)
    page = view.save_html(tmp_path / "dataset.html")
    state = json.loads(re.search(r'<script id="corevital-state" type="application/json">(.*?)</script>', page.read_text(), re.S).group(1))
    assert state["view"] == "dataset" and state["row"] == 1 and state["loaded_row"] == 1
    assert state["rows"]["risk"] == view.rows["risk"] and state["data"]["__b64__"]


def test_unscorable_rows_get_no_risk_and_an_empty_set_shows_no_rows(smollm2_traceset):
    ts, _, correct = smollm2_traceset
    traces = list(ts)
    summaries = [dict(s) for s in ts.summaries]
    used = RiskModel.load_default(ts[0]).feature_names[0]
    summaries[1][used] = float("nan")  # a feature the model needs is undefined (e.g. prompt_telemetry=False)
    partial = TraceSet(prompts=list(ts.prompts), keys=list(ts.keys), summaries=summaries, _traces=traces)
    view = DatasetView(partial, correct)
    model = view.risk_model
    full = model.predict_proba(ts)
    assert np.isnan(view.risks[1]) and view.rows["risk"][1] is None
    full[[bool(model.outside_range(t)) for t in ts]] = np.nan  # withheld: outside the training range
    keep = np.arange(len(ts)) != 1
    np.testing.assert_allclose(view.risks[keep], full[keep], rtol=1e-12, atol=0)
    json.dumps(view.rows, allow_nan=False)  # no NaN reaches the browser

    empty = DatasetView(TraceSet(prompts=[], keys=[], summaries=[], _traces=[]))
    assert empty.rows["prompt"] == [] and empty.columns["n"] == 0 and empty.risk_model is None
    with pytest.raises(traitlets.TraitError):
        empty.row = 0
