"""evaluate_risk against scikit-learn and hand computation; RiskModel fit/predict/JSON round trip;
heuristic_risk recomputed from the trace arrays; bad input raises clear errors."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss, roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from corevital_widgets.analysis.risk import (
    DEFAULT_MODEL_FILE,
    DEFAULT_RISK_FEATURES,
    RiskModel,
    evaluate_risk,
    expected_calibration_error,
    feature_auroc,
    heuristic_risk,
    roc_points,
)


def _data(n=300, seed=1):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = np.clip(0.5 * y + rng.uniform(0, 0.5, n) + rng.normal(0, 0.15, n), 0, 1)
    return p, y


def _hand_ece(p, y, bins=15):
    total = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        members = [i for i in range(len(p)) if lo <= p[i] < hi or (b == bins - 1 and p[i] == 1.0)]
        if members:
            conf = sum(p[i] for i in members) / len(members)
            acc = sum(y[i] for i in members) / len(members)
            total += len(members) / len(p) * abs(acc - conf)
    return total


def test_metrics_match_sklearn_and_hand_computation():
    p, y = _data()
    p[:40] = np.round(p[:40], 1)  # ties, and exact bin edges
    p[0], p[1] = 1.0, 0.0
    r = evaluate_risk(p, y, n_bootstrap=400, seed=3)
    assert r.auroc == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert r.brier == pytest.approx(brier_score_loss(y, p), abs=1e-12)
    assert r.ece == pytest.approx(_hand_ece(p.tolist(), y.tolist()), abs=1e-12)
    assert r.ece == expected_calibration_error(p, y)
    assert r.auroc_ci[0] < r.auroc < r.auroc_ci[1]
    assert evaluate_risk(p, y, n_bootstrap=400, seed=3).auroc_ci == r.auroc_ci, "the bootstrap is seeded"
    assert r.reliability["count"].sum() == len(p) and len(r.reliability) == 15
    # Tiny hand case: bins of width 1/15; 0.05 and 0.06 share bin 0, 0.95 and 1.0 the last bin.
    ece = expected_calibration_error([0.05, 0.06, 0.95, 1.0], [0, 1, 1, 1])
    assert ece == pytest.approx(2 / 4 * abs(0.5 - 0.055) + 2 / 4 * abs(1 - 0.975))


def test_baselines_and_roc_and_charts():
    p, y = _data()
    ent = -p + np.random.default_rng(0).normal(0, 0.3, p.size)
    r = evaluate_risk(p, y, baselines={"entropy": ent}, n_bootstrap=200)
    assert r.baselines["entropy"]["auroc"] == pytest.approx(roc_auc_score(y, ent), abs=1e-12)
    t = r.table()
    assert list(t.index) == ["risk score", "entropy"] and t.loc["risk score", "auroc"] == r.auroc
    roc = roc_points(p, y)
    assert roc["fpr"].iloc[0] == 0 and roc["tpr"].iloc[-1] == 1 and roc["fpr"].iloc[-1] == 1
    assert np.trapezoid(roc["tpr"], roc["fpr"]) == pytest.approx(r.auroc, abs=1e-12)
    for chart in (r.reliability_chart(), r.roc_chart()):
        spec = chart.to_dict()
        assert "layer" in spec or "mark" in spec
    json.dumps(r.to_dict())


@pytest.mark.parametrize("scores, labels, match", [
    ([0.1, 0.2, 0.3], [0, 1], "labels has 2 entries but scores has 3"),
    ([0.1, 0.2, 0.3], [1, 1, 1], "single class"),
    ([0.1, float("nan"), 0.3], [0, 1, 0], "NaN"),
    ([0.1, 0.2, 1.3], [0, 1, 0], r"\[0, 1\]"),
    ([0.1, 0.2, 0.3], [0, 2, 1], "0/1"),
    ([[0.1, 0.2]], [0, 1], "1-D"),
])
def test_bad_input_is_a_clear_value_error(scores, labels, match):
    with pytest.raises(ValueError, match=match):
        evaluate_risk(scores, labels)


def _features(n=200, seed=2):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(rng.normal(size=(n, len(DEFAULT_RISK_FEATURES))) * rng.uniform(0.1, 10, len(DEFAULT_RISK_FEATURES)),
                      columns=list(DEFAULT_RISK_FEATURES))
    y = (df["entropy_mean"] / df["entropy_mean"].std() - df["max_prob_mean"] / df["max_prob_mean"].std() + rng.normal(0, 1, n) > 0).astype(int)
    return df, y.to_numpy()


def test_risk_model_matches_sklearn_pipeline_and_round_trips_exactly(tmp_path):
    df, y = _features()
    m = RiskModel(C=1.0).fit(df, y)
    ref = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)).fit(df.to_numpy(), y)
    p = m.predict_proba(df)
    np.testing.assert_allclose(p, ref.predict_proba(df.to_numpy())[:, 1], rtol=0, atol=1e-12)
    assert feature_auroc(p, y) > 0.75

    again = RiskModel.from_json(m.to_json())
    assert again == m and again.to_json() == m.to_json()
    assert np.array_equal(again.predict_proba(df), p), "bit-for-bit the same predictions"
    path = tmp_path / "risk.json"
    m.save(path)
    loaded = RiskModel.load(path)
    assert np.array_equal(loaded.predict_proba(df), p) and loaded.meta == {"n_train": 200, "n_positive": int(y.sum())}
    assert loaded.C == 1.0 and loaded.C_ == 1.0
    assert "pickle" not in path.read_text() and json.loads(path.read_text())["format"] == "corevital-risk-model"
    assert m.predict_proba(df.iloc[0].to_dict()) == pytest.approx(p[0], abs=0, rel=1e-15)


def test_auto_regularisation_is_the_inner_cv_log_loss_optimum():
    """C='auto' picks, from the training data alone, the C with the best 5-fold log-loss."""
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    from corevital_widgets.analysis.risk import AUTO_C_GRID

    df, y = _features(n=240, seed=5)
    m = RiskModel().fit(df, y)
    z = StandardScaler().fit_transform(df.to_numpy())
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    losses = [cross_val_score(LogisticRegression(C=c, max_iter=5000), z, y, cv=folds, scoring="neg_log_loss").mean()
              for c in AUTO_C_GRID]
    assert m.C == "auto" and m.C_ == AUTO_C_GRID[int(np.argmax(losses))]
    ref = make_pipeline(StandardScaler(), LogisticRegression(C=m.C_, max_iter=5000)).fit(df.to_numpy(), y)
    np.testing.assert_allclose(m.predict_proba(df), ref.predict_proba(df.to_numpy())[:, 1], rtol=0, atol=1e-12)
    again = RiskModel.from_json(m.to_json())
    assert again == m and again.C == "auto" and again.C_ == m.C_
    for bad in (0, -1.0, float("nan"), "big", True):
        with pytest.raises(ValueError, match="C must be a positive number or 'auto'"):
            RiskModel(C=bad)
    few = np.zeros(len(df), int)
    few[:3] = 1
    with pytest.raises(ValueError, match="at least 5 examples of each label"):
        RiskModel().fit(df, few)


def test_training_range_marks_extrapolated_risks(tmp_path):
    from corevital_widgets.analysis.risk import TraceRisk

    df, y = _features()
    m = RiskModel(C=1.0).fit(df, y)
    np.testing.assert_array_equal(m.train_min_, df.to_numpy().min(0))
    np.testing.assert_array_equal(m.train_max_, df.to_numpy().max(0))
    inside = df.iloc[3].to_dict()
    assert m.outside_range(inside) == []
    beyond = {**inside, "surprisal_max": float(df["surprisal_max"].max()) + 1.0, "n_steps": float(df["n_steps"].min()) - 1}
    assert m.outside_range(beyond) == [n for n in DEFAULT_RISK_FEATURES if n in ("surprisal_max", "n_steps")]
    again = RiskModel.from_json(m.to_json())
    assert np.array_equal(again.train_min_, m.train_min_) and again.outside_range(beyond) == m.outside_range(beyond)
    r = TraceRisk(0.2, "logistic", tuple(m.outside_range(beyond)))
    assert r.label == "extrapolated" and "n_steps" in r.description and "outside the range" in r.description
    assert TraceRisk(0.2, "logistic").label == "calibrated" and TraceRisk(0.2, "heuristic", ("x",)).label == "uncalibrated heuristic"
    assert RiskModel(kind="heuristic").outside_range(beyond) == []


def test_risk_model_bad_input():
    df, y = _features()
    bad = df.copy()
    bad.iloc[5, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        RiskModel().fit(bad, y)
    with pytest.raises(ValueError, match="labels has 199 entries"):
        RiskModel().fit(df, y[:-1])
    with pytest.raises(ValueError, match="single class"):
        RiskModel().fit(df, np.zeros(len(df), int))
    with pytest.raises(ValueError, match="lack columns"):
        RiskModel().fit(df.drop(columns=["entropy_mean"]), y)
    with pytest.raises(TypeError, match="DataFrame"):
        RiskModel().fit(df.to_numpy(), y)
    with pytest.raises(RuntimeError, match="not fitted"):
        RiskModel().predict_proba(df)
    with pytest.raises(ValueError, match="RiskModel JSON"):
        RiskModel.from_json('{"format": "something else"}')


def test_heuristic_risk_recomputed_from_arrays(smollm2_trace):
    t = smollm2_trace
    log2v = math.log2(t.meta["vocab_size"])
    ent = float(np.mean(t.timeline.entropy.astype(np.float64)))
    margin = float(np.mean(t.timeline.top_k_margin.astype(np.float64)))
    surprisal = float(np.mean(t.timeline.surprisal.astype(np.float64)))
    collapsed = bool((t.attention.collapsed_head_count > 0).any())
    lt = float(np.mean(t.prompt.layer_transformation.astype(np.float64)))
    nonfinite = bool(t.layers.has_nan.any() or t.layers.has_inf.any() or t.attention.has_nan.any()
                     or t.attention.has_inf.any() or t.timeline.logits_has_nan.any() or t.timeline.logits_has_inf.any())
    loop = bool((np.nan_to_num(t.timeline.repetition_similarity, nan=0) > 0.9995).any())
    want = (0.2 * min(1, ent / log2v) + 0.15 * (1 - margin) + 0.15 * min(1, surprisal / log2v) + 0.2 * collapsed
            + 0.15 * min(1, lt / 2) + 0.1 * nonfinite + 0.05 * loop)
    got = heuristic_risk(t)
    assert got == pytest.approx(want, rel=1e-6) and 0 <= got <= 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        h = RiskModel.load_default("some/other-model")
    assert h.kind == "heuristic" and any("uncalibrated" in str(w.message) for w in caught)
    assert h.predict_proba(t) == got
    with pytest.raises(TypeError, match="Trace"):
        heuristic_risk({"entropy_mean": 1.0})


def test_predict_on_trace_and_traceset(smollm2_trace):
    from corevital_widgets.batch import TraceSet, trace_summary_row
    from corevital_widgets.analysis.features import trace_features

    df, y = _features()
    m = RiskModel().fit(df, y)
    ts = TraceSet(prompts=["p"], keys=["k"], summaries=[trace_summary_row(smollm2_trace)], _traces=[smollm2_trace])
    one = m.predict_proba(smollm2_trace)
    assert isinstance(one, float) and 0 < one < 1
    assert np.array_equal(m.predict_proba(ts), [one])
    assert m.predict_proba(trace_features(smollm2_trace)) == one


def test_shipped_default_model_if_present(smollm2, smollm2_trace):
    if not DEFAULT_MODEL_FILE.is_file():
        pytest.skip("no shipped SmolLM2 coefficients in this build")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "uncalibrated" warning for SmolLM2
        m = RiskModel.load_default(smollm2[0])
    assert m.kind == "logistic" and m.coef_ is not None and len(m.coef_) == len(m.feature_names)
    assert m.meta["n_train"] >= 600 and RiskModel.from_json(m.to_json()) == m
    p = m.predict_proba(smollm2_trace)
    # Independent evaluation of the stored logistic formula on the trace's features.
    f = smollm2_trace.features() if hasattr(smollm2_trace, "features") else __import__(
        "corevital_widgets.analysis.features", fromlist=["trace_features"]).trace_features(smollm2_trace)
    z = m.intercept_ + sum(c * (f[n] - mu) / sd for n, c, mu, sd in zip(m.feature_names, m.coef_, m.mean_, m.scale_))
    assert p == pytest.approx(1 / (1 + math.exp(-z)), rel=1e-9) and 0 < p < 1
