"""Leave-one-family-out validation of the risk score (analysis/transfer.py): the split never lets a
family into its own training fold; a feature that only encodes the question family looks good in
k-fold and is exposed held out; per-family figures equal independent computations; the features
table round-trips exactly; and the shipped SmolLM2 coefficients are refitted bit for bit from the
saved features table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corevital_widgets.analysis.risk import DEFAULT_MODEL_FILE, RiskModel, evaluate_risk, feature_auroc
from corevital_widgets.analysis.transfer import (
    choose_feature_set,
    family_splits,
    fit_shipped_risk,
    held_out_scores,
    kfold_scores,
    read_features,
    within_family_auroc,
)

ROOT = Path(__file__).resolve().parents[1]
FEATURES_CSV = ROOT / "benchmarks" / "data" / "suite_features_smollm2.csv.gz"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["capital", "units", "letters", "weekdays", "free_capital"]), min_size=6, max_size=60))
def test_a_family_never_enters_its_own_training_fold(fams):
    if len(set(fams)) < 3:
        with pytest.raises(ValueError, match="at least 3 families"):
            list(family_splits(fams))
        return
    g = np.array(fams)
    seen = []
    for name, train, test in family_splits(g):
        assert set(g[test]) == {name}
        assert name not in set(g[train])
        assert np.intersect1d(train, test).size == 0 and train.size + test.size == g.size
        seen.append(name)
    assert seen == sorted(set(fams))  # every family held out once


def _synthetic(n_fam: int = 8, per: int = 80, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Families with different wrong-answer rates; ``conf`` predicts a wrong answer the same way in
    every family; ``shape`` is constant within a family and equals the family's wrong rate (what
    prompt length does on the real suite: it names the question type)."""
    rng = np.random.default_rng(seed)
    rows, labels, fams = [], [], []
    for f in range(n_fam):
        rate = 0.15 + 0.7 * f / (n_fam - 1)
        y = (rng.random(per) < rate).astype(int)
        conf = rng.normal(0, 1, per) + 0.8 * y
        shape = np.full(per, rate) + rng.normal(0, 1e-3, per)
        rows.append(pd.DataFrame({"conf": conf, "shape": shape}))
        labels.append(y)
        fams += [f"family{f}"] * per
    return pd.concat(rows, ignore_index=True), np.concatenate(labels), np.array(fams)


def test_a_feature_that_names_the_family_wins_in_k_fold_and_is_exposed_held_out():
    df, y, g = _synthetic()
    kf = feature_auroc(kfold_scores(df, y, ["shape"], C=1.0), y)
    ho = held_out_scores(df, y, g, ["shape"], C=1.0)
    within = [feature_auroc(ho[g == f], y[g == f]) for f in sorted(set(g))]
    assert kf > 0.7  # pooled k-fold credits it with the base rates
    assert max(abs(a - 0.5) for a in within) < 0.2  # within a held-out family it ranks nothing
    conf_within = [feature_auroc(held_out_scores(df, y, g, ["conf"], C=1.0)[g == f], y[g == f]) for f in sorted(set(g))]
    assert min(conf_within) > 0.6  # the transferable signal does transfer
    # held out but pooled, the family feature still "predicts" each family's base rate (it is a
    # smooth function of it), so the choice ranks candidates within families, where it cannot
    assert feature_auroc(ho, y) > 0.65
    assert within_family_auroc(ho, y, g) == pytest.approx(np.mean(within))
    assert choose_feature_set(df, y, g, {"shape": ("shape",), "conf": ("conf",)}, C=1.0) == "conf"


def test_held_out_scores_come_from_models_that_never_saw_the_family():
    df, y, g = _synthetic(n_fam=4, per=60, seed=3)
    ho = held_out_scores(df, y, g, ["conf", "shape"], C=1.0)
    for name, train, test in family_splits(g):
        model = RiskModel(["conf", "shape"], C=1.0).fit(df.iloc[train], y[train])
        np.testing.assert_array_equal(ho[test], model.predict_proba(df.iloc[test]))


def test_per_family_report_equals_independent_computation():
    df, y, g = _synthetic(n_fam=4, per=60, seed=5)
    p = held_out_scores(df, y, g, ["conf"], C=1.0)
    base = {"neg conf": -df["conf"].to_numpy()}
    rep = evaluate_risk(p, y, baselines=base, groups=g, n_bootstrap=200)
    t = rep.per_group
    assert list(t.index) == sorted(set(g))
    for f in t.index:
        m = g == f
        assert t.loc[f, "n"] == m.sum() and t.loc[f, "n_positive"] == y[m].sum()
        assert t.loc[f, "auroc"] == pytest.approx(feature_auroc(p[m], y[m]), abs=1e-12)
        assert t.loc[f, "neg conf: auroc"] == pytest.approx(feature_auroc(-df["conf"].to_numpy()[m], y[m]), abs=1e-12)
        assert t.loc[f, "ci_lo"] <= t.loc[f, "auroc"] <= t.loc[f, "ci_hi"]
    json.dumps(rep.to_dict())  # plain JSON
    with pytest.raises(ValueError, match="one group per score"):
        evaluate_risk(p, y, groups=g[:-1], n_bootstrap=10)


def test_features_table_round_trips_exactly(tmp_path):
    from corevital_widgets.analysis.risk import DEFAULT_RISK_FEATURES

    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.normal(size=(20, len(DEFAULT_RISK_FEATURES))) * 10.0 ** rng.integers(-8, 8, size=(20, 1)),
                      columns=list(DEFAULT_RISK_FEATURES))
    df.insert(0, "family", ["a", "b", "c", "d"] * 5)
    df.insert(1, "correct", [True, False] * 10)
    df.insert(0, "question", ["What is 1, 2 and \"3\"?"] * 20)
    path = tmp_path / "t.csv.gz"
    df.to_csv(path, index=False, compression={"method": "gzip", "mtime": 0})
    back = read_features(path)
    for c in DEFAULT_RISK_FEATURES:
        np.testing.assert_array_equal(back[c].to_numpy(), df[c].to_numpy())
    assert back["correct"].tolist() == df["correct"].tolist() and back["question"].tolist() == df["question"].tolist()
    with pytest.raises(ValueError, match="not a suite features table"):
        pd.DataFrame({"x": [1]}).to_csv(tmp_path / "bad.csv", index=False)
        read_features(tmp_path / "bad.csv")


@pytest.mark.skipif(not FEATURES_CSV.exists(), reason="the suite features table is written by bench_signal.py --write-default")
def test_the_shipped_coefficients_refit_bit_for_bit_from_the_saved_features():
    shipped = RiskModel.load(DEFAULT_MODEL_FILE)
    df = read_features(FEATURES_CSV)
    wrong = (~df["correct"].to_numpy(bool)).astype(int)
    refit = RiskModel(shipped.feature_names, C=shipped.C).fit(df, wrong)
    np.testing.assert_array_equal(refit.coef_, shipped.coef_)
    assert refit.intercept_ == shipped.intercept_ and refit.C_ == shipped.C_
    np.testing.assert_array_equal(refit.mean_, shipped.mean_)
    np.testing.assert_array_equal(refit.scale_, shipped.scale_)
    assert shipped.meta["n_train"] == len(df) and shipped.meta["n_families"] == df["family"].nunique() >= 12
    held = shipped.meta["held_out"]
    assert 0.5 < held["auroc"] <= 1 and held["families_defined"] >= 12
    # the recipe's choice is reproduced too (feature set chosen by leave-one-family-out on all families)
    again = fit_shipped_risk(df, wrong, df["family"].to_numpy(str))
    assert again.meta["feature_set"] == shipped.meta["feature_set"]
    np.testing.assert_array_equal(again.coef_, shipped.coef_)


def test_compare_suite_tables_finds_what_differs(tmp_path, capsys):
    """benchmarks/compare_suite_tables.py (how a batched or GPU rerun of the suite is checked
    against the shipped table): a table equals itself; a feature moved by 1e-3 in one row is
    reported as that feature's largest difference; one flipped answer makes it 'DIFFERENT'."""
    import runpy

    tool = runpy.run_path(str(ROOT / "benchmarks" / "compare_suite_tables.py"))
    same = tool["compare"](FEATURES_CSV, FEATURES_CSV)
    assert same["correctness_differs"] == 0 and max(same["max_abs_diff"].values()) == 0
    assert same["auroc_new"] == same["auroc_reference"] and same["risk_max_abs_diff"] == 0

    df = read_features(FEATURES_CSV)
    moved = df.copy()
    moved.loc[7, "entropy_mean"] += 1e-3
    moved.to_csv(tmp_path / "moved.csv.gz", index=False)
    r = tool["compare"](tmp_path / "moved.csv.gz", FEATURES_CSV)
    assert r["worst_feature"] == "entropy_mean" and r["max_abs_diff"]["entropy_mean"] == pytest.approx(1e-3, rel=1e-9)
    assert r["correctness_differs"] == 0 and tool["main"]([str(tmp_path / "moved.csv.gz")]) == 0

    flipped = df.copy()
    flipped.loc[3, "correct"] = not bool(flipped.loc[3, "correct"])
    flipped.to_csv(tmp_path / "flipped.csv.gz", index=False)
    assert tool["main"]([str(tmp_path / "flipped.csv.gz")]) == 1
    assert "correctness differs on 1" in capsys.readouterr().out
