"""Does a risk score transfer to questions it was not fitted on? Leave-one-family-out validation.

A risk model fitted and tested on the same kinds of question (k-fold over one pool) learns the
kind as much as the answer: prompt length alone ranks "2-digit multiplication" above "capital
of France". What a user needs is the score on *their* questions, which are of kinds the model
never saw. So every question carries a family (capitals, units, letter counting, ...) and:

* :func:`family_splits` — for each family, train = all other families, test = that family
  (a family never enters its own training fold);
* :func:`held_out_scores` — every row scored by a :class:`~.risk.RiskModel` fitted without its
  family;
* :func:`nested_held_out_scores` — the same, with the feature set also chosen without the held-out
  family (an inner leave-one-family-out over the remaining families picks among
  :data:`CANDIDATE_FEATURE_SETS`), so that the selection itself is validated out of family;
* :func:`evaluate_transfer` — the headline: pooled and per-family AUROC (bootstrap 95%
  intervals) and ECE of the nested held-out scores beside the confidence baselines
  (:data:`BASELINE_SCORES`, which need no fitting), each candidate's own held-out figures, and
  the ordinary stratified k-fold figure as the secondary, in-family number.

Convention as in :mod:`.risk`: label 1 = wrong answer; scores are higher = riskier.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from .risk import (
    DEFAULT_RISK_FEATURES,
    RiskModel,
    RiskReport,
    _as_labels,
    evaluate_risk,
    expected_calibration_error,
    feature_auroc,
)

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

#: The confidence scores every risk model is compared with (higher = riskier): no fitting, so
#: their AUROC on a family is already "held out".
BASELINE_SCORES: dict[str, Callable[["pd.DataFrame"], np.ndarray]] = {
    "1 - mean max-prob": lambda df: 1.0 - df["max_prob_mean"].to_numpy(np.float64),
    "mean entropy": lambda df: df["entropy_mean"].to_numpy(np.float64),
    "- sequence log-likelihood": lambda df: -df["sequence_log2_likelihood"].to_numpy(np.float64),
    "- min margin": lambda df: -df["margin_min"].to_numpy(np.float64),
    # per-token negative log-likelihood; under greedy decoding the mean of -log2 max-prob
    "mean surprisal": lambda df: df["surprisal_mean"].to_numpy(np.float64),
}

_CONFIDENCE = ("max_prob_mean", "max_prob_min", "entropy_mean", "entropy_max", "margin_mean", "margin_min",
               "surprisal_mean", "surprisal_max")
_INTERNALS = ("collapsed_head_rate", "attention_entropy_spread", "attention_entropy_mean", "hidden_norm_growth",
              "mid_norm_ratio_max", "prompt_surprisal_mean", "layer_transformation_mean", "layer_transformation_max",
              "basin_mean", "basin_min", "basin_low_fraction", "sink_mean")
#: The regularisation the feature sets are compared at (standardised features, hundreds of rows:
#: mild; the same for every candidate, so the comparison is fair and about 100x cheaper than an
#: inner C search per fit). The chosen set's model then picks its own C (``C="auto"``).
SELECTION_C = 1.0

#: Feature sets the shipped model is chosen from, simplest first (ties go to the simpler).
#: "form" features (prompt and answer length, the length-summed log-likelihood, the share of
#: high-entropy steps) describe the question's shape more than the model's state: they enter only
#: in the last set, and stay out unless it wins out of family.
CANDIDATE_FEATURE_SETS: dict[str, tuple[str, ...]] = {
    "max-prob": ("max_prob_mean",),
    # mean surprisal: under greedy decoding the mean of -log2 max-prob (max-prob on a log scale)
    "log max-prob": ("surprisal_mean",),
    "confidence": _CONFIDENCE,
    "confidence + internals": _CONFIDENCE + _INTERNALS,
    "all (with form features)": DEFAULT_RISK_FEATURES,
}


def family_splits(families: Any) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(family, train indices, test indices) for each family in sorted order: test = that
    family's rows, train = every other row."""
    g = _as_families(families)
    for name in sorted(set(g.tolist())):
        test = np.flatnonzero(g == name)
        yield name, np.flatnonzero(g != name), test


def _as_families(families: Any) -> np.ndarray:
    g = np.asarray(families)
    if g.ndim != 1:
        raise ValueError(f"families must be 1-D (one family per row), got shape {g.shape}")
    g = g.astype(str)
    if len(set(g.tolist())) < 3:
        raise ValueError(f"leave-one-family-out needs at least 3 families, got {sorted(set(g.tolist()))}")
    return g


def held_out_scores(frame: "pd.DataFrame", labels: Any, families: Any, feature_names: Sequence[str],
                    C: float | str = "auto") -> np.ndarray:
    """Risk of every row from a RiskModel on ``feature_names`` fitted on the other families only."""
    y = _as_labels(labels, len(frame))
    out = np.full(len(frame), np.nan)
    for _, train, test in family_splits(families):
        model = RiskModel(feature_names, C=C).fit(frame.iloc[train], y[train])
        out[test] = model.predict_proba(frame.iloc[test])
    return out


def nested_held_out_scores(frame: "pd.DataFrame", labels: Any, families: Any,
                           candidates: Mapping[str, Sequence[str]] = CANDIDATE_FEATURE_SETS,
                           C: float | str = "auto") -> tuple[np.ndarray, dict[str, str]]:
    """Held-out risk of every row where the feature set, too, is chosen without its family:
    for each held-out family, an inner leave-one-family-out over the remaining families scores
    every candidate (:func:`choose_feature_set`), the best is refitted on all remaining families and scores the
    held-out one. Returns (scores, family -> chosen candidate)."""
    y = _as_labels(labels, len(frame))
    g = _as_families(families)
    out = np.full(len(frame), np.nan)
    chosen: dict[str, str] = {}
    for name, train, test in family_splits(g):
        sub, ysub, gsub = frame.iloc[train], y[train], g[train]
        best = choose_feature_set(sub, ysub, gsub, candidates)
        chosen[name] = best
        model = RiskModel(candidates[best], C=C).fit(sub, ysub)
        out[test] = model.predict_proba(frame.iloc[test])
    return out, chosen


def per_family_auroc(scores: Any, labels: Any, families: Any) -> dict[str, float]:
    """AUROC inside each family that holds both labels (family -> AUROC)."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(np.int64)
    g = np.asarray(families).astype(str)
    return {f: feature_auroc(s[g == f], y[g == f]) for f in sorted(set(g.tolist())) if 0 < y[g == f].sum() < (g == f).sum()}


def within_family_auroc(scores: Any, labels: Any, families: Any) -> float:
    """Mean over families (holding both labels) of the AUROC inside each family: how well a score
    ranks answers to questions of one kind. A score that only knows the kind (its base rate)
    gets 0.5 here, however well it does pooled."""
    values = list(per_family_auroc(scores, labels, families).values())
    return float(np.mean(values)) if values else math.nan


def choose_feature_set(frame: "pd.DataFrame", labels: Any, families: Any,
                       candidates: Mapping[str, Sequence[str]] = CANDIDATE_FEATURE_SETS,
                       C: float | str = SELECTION_C) -> str:
    """The simplest candidate (earliest in ``candidates``) whose leave-one-family-out scores rank
    answers within families (:func:`per_family_auroc`, averaged) no worse than the best
    candidate's by more than one standard error of their per-family difference (the one-SE rule:
    a bigger feature set must win by more than the noise across families).

    Within families, not pooled: a feature that encodes the question kind smoothly (prompt length
    vs difficulty) still predicts a held-out family's base rate, and pooled AUROC rewards that."""
    y = _as_labels(labels, len(frame))
    names = list(candidates)
    table = {n: per_family_auroc(held_out_scores(frame, y, families, candidates[n], C), y, families) for n in names}
    fams = sorted(set.intersection(*(set(t) for t in table.values())))
    if not fams:
        return names[0]
    a = np.array([[table[n][f] for f in fams] for n in names])  # [candidates, families]
    best = int(np.argmax(a.mean(axis=1)))
    for i in range(len(names)):
        diff = a[best] - a[i]
        se = float(diff.std(ddof=1) / math.sqrt(len(fams))) if len(fams) > 1 else 0.0
        if diff.mean() <= se:
            return names[i]
    return names[best]  # pragma: no cover - the best itself always qualifies


def kfold_scores(frame: "pd.DataFrame", labels: Any, feature_names: Sequence[str], folds: int = 5, seed: int = 0,
                 C: float | str = "auto") -> np.ndarray:
    """Out-of-fold risk from stratified k-fold over all rows (families mixed: the in-family figure)."""
    from sklearn.model_selection import StratifiedKFold

    y = _as_labels(labels, len(frame))
    out = np.full(len(frame), np.nan)
    for train, test in StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(np.zeros(len(y)), y):
        out[test] = RiskModel(feature_names, C=C).fit(frame.iloc[train], y[train]).predict_proba(frame.iloc[test])
    return out


@dataclass
class TransferReport:
    """What :func:`evaluate_transfer` measured.

    ``held_out``: the nested family-held-out scores' report (pooled AUROC with interval, ECE,
    Brier, the baselines, ``per_group`` = per family); ``chosen``: the feature set picked for each
    held-out family; ``candidates``: each candidate's own family-held-out and k-fold AUROC and
    ECE (a table); ``features``: each feature's held-out AUROC as a one-feature calibrated model
    and its raw AUROC; ``kfold``: the secondary, in-family report of the final choice.
    """

    held_out: RiskReport
    chosen: dict[str, str]
    candidates: "pd.DataFrame"
    features: "pd.DataFrame"
    kfold: RiskReport
    final: str
    scores: np.ndarray = field(repr=False)
    #: the final feature set's own leave-one-family-out report (fixed set, no selection inside):
    #: what the shipped model, that set fitted on all families, earned on families it did not see
    final_held_out: RiskReport

    @property
    def best_baseline(self) -> tuple[str, float]:
        name = max(self.held_out.baselines, key=lambda k: self.held_out.baselines[k]["auroc"])
        return name, float(self.held_out.baselines[name]["auroc"])

    def within_family(self) -> dict[str, float]:
        """Mean per-family AUROC of the held-out risk and of each baseline (families holding both labels)."""
        t = self.held_out.per_group
        out = {"risk": float(t["auroc"].mean())}
        out.update({b: float(t[f"{b}: auroc"].mean()) for b in self.held_out.baselines})
        return out

    def per_family_table(self) -> "pd.DataFrame":
        """Per family: n, wrong, the risk's held-out AUROC, each baseline's AUROC, the risk's ECE."""
        t = self.held_out.per_group
        cols = ["n", "n_positive", "auroc", "ece"] + [f"{b}: auroc" for b in self.held_out.baselines]
        return t[cols].rename(columns={"n_positive": "wrong", "auroc": "risk auroc", "ece": "risk ece"})

    def targets(self) -> dict[str, bool]:
        """The issue's targets: pooled held-out AUROC >= best baseline + 0.05, >= the best baseline
        in every family (where defined), held-out ECE <= 0.05."""
        _, best = self.best_baseline
        t = self.per_family_table()
        base_cols = [c for c in t.columns if c.endswith(": auroc")]
        defined = t["risk auroc"].notna()
        every = bool((t.loc[defined, "risk auroc"] >= t.loc[defined, base_cols].max(axis=1) - 1e-12).all())
        return {"pooled_gap_0.05": self.held_out.auroc >= best + 0.05, "every_family": every,
                "ece_0.05": self.held_out.ece <= 0.05}

    def to_dict(self) -> dict[str, Any]:
        name, best = self.best_baseline
        return {"held_out": self.held_out.to_dict(), "chosen": self.chosen, "final": self.final,
                "candidates": self.candidates.reset_index().to_dict(orient="records"),
                "features": self.features.reset_index().to_dict(orient="records"),
                "kfold": {"auroc": self.kfold.auroc, "auroc_ci": list(self.kfold.auroc_ci), "ece": self.kfold.ece},
                "best_baseline": {"name": name, "auroc": best}, "within_family": self.within_family(),
                "targets": self.targets()}


def baseline_scores(frame: "pd.DataFrame") -> dict[str, np.ndarray]:
    """Every :data:`BASELINE_SCORES` on ``frame`` (higher = riskier)."""
    return {name: f(frame) for name, f in BASELINE_SCORES.items()}


def evaluate_transfer(frame: "pd.DataFrame", labels: Any, families: Any,
                      candidates: Mapping[str, Sequence[str]] = CANDIDATE_FEATURE_SETS, *,
                      feature_names: Sequence[str] = DEFAULT_RISK_FEATURES, folds: int = 5,
                      n_bootstrap: int = 1000, seed: int = 0, C: float | str = "auto") -> TransferReport:
    """Family-held-out validation of the whole recipe (feature-set choice included), the
    baselines beside it, every candidate's own held-out figures, per-feature held-out AUROC, and
    the k-fold figure of the final choice (chosen on all families) as the secondary number."""
    import pandas as pd

    y = _as_labels(labels, len(frame))
    g = _as_families(families)
    base = baseline_scores(frame)
    nested, chosen = nested_held_out_scores(frame, y, g, candidates, C)
    held = evaluate_risk(nested, y, baselines=base, groups=g, n_bootstrap=n_bootstrap, seed=seed)
    rows = []
    held_by, kfold_by = {}, {}  # each candidate's scores, kept for the final choice's reports
    for cname, feats in candidates.items():
        h = held_by[cname] = held_out_scores(frame, y, g, feats, C)
        k = kfold_by[cname] = kfold_scores(frame, y, feats, folds, seed, C)
        rows.append({"candidate": cname, "n_features": len(feats), "held_out_auroc": feature_auroc(h, y),
                     "held_out_within_family": within_family_auroc(h, y, g),
                     "held_out_ece": expected_calibration_error(h, y),
                     "kfold_auroc": feature_auroc(k, y), "kfold_ece": expected_calibration_error(k, y)})
    cand = pd.DataFrame(rows).set_index("candidate")
    feat_rows = []
    for name in feature_names:  # one feature: regularisation hardly matters, compared at SELECTION_C
        h = held_out_scores(frame, y, g, [name], SELECTION_C)
        raw = feature_auroc(frame[name].to_numpy(np.float64), y)
        feat_rows.append({"feature": name, "held_out_auroc": feature_auroc(h, y),
                          "held_out_within_family": within_family_auroc(h, y, g), "raw_auroc": raw})
    feats_t = pd.DataFrame(feat_rows).set_index("feature").sort_values("held_out_auroc", ascending=False)
    final = choose_feature_set(frame, y, g, candidates)
    kfold = evaluate_risk(kfold_by[final], y, baselines=base, n_bootstrap=n_bootstrap, seed=seed)
    final_ho = evaluate_risk(held_by[final], y, baselines=base, groups=g, n_bootstrap=n_bootstrap, seed=seed)
    return TransferReport(held_out=held, chosen=chosen, candidates=cand, features=feats_t, kfold=kfold, final=final,
                          scores=nested, final_held_out=final_ho)


def read_features(path: Any) -> "pd.DataFrame":
    """A features table written by ``benchmarks/bench_signal.py`` (question, family, difficulty,
    form, correct and the features), floats parsed exactly as written."""
    import pandas as pd

    df = pd.read_csv(path, float_precision="round_trip", keep_default_na=False, na_values=[""])
    missing = [c for c in ("family", "correct", *DEFAULT_RISK_FEATURES) if c not in df.columns]
    if missing:
        raise ValueError(f"{path} is not a suite features table: it lacks {missing}")
    df["correct"] = df["correct"].astype(str).str.lower().map({"true": True, "false": False})
    if df["correct"].isna().any():
        raise ValueError(f"{path}: column 'correct' must hold True/False")
    return df


def fit_shipped_risk(frame: "pd.DataFrame", labels: Any, families: Any, *, report: TransferReport | None = None,
                     candidates: Mapping[str, Sequence[str]] = CANDIDATE_FEATURE_SETS, C: float | str = "auto") -> RiskModel:
    """The model to ship: the candidate chosen by leave-one-family-out on all families
    (``report.final`` when a report is given), fitted on all rows; its meta records the feature
    set and, with a report, the family-held-out figures the recipe earned (what the badge shows)."""
    y = _as_labels(labels, len(frame))
    name = report.final if report is not None else choose_feature_set(frame, y, families, candidates)
    model = RiskModel(candidates[name], C=C).fit(frame, y)
    model.meta["feature_set"] = name
    model.meta["n_families"] = len(set(np.asarray(families).astype(str).tolist()))
    if report is not None:
        bname, best = report.best_baseline
        h = report.final_held_out
        within = h.per_group["auroc"].dropna().to_numpy()  # per family holding both labels, sorted by name
        model.meta["held_out"] = {
            "protocol": f"leave one question family out ({model.meta['n_families']} families): the {name!r} feature set "
                        "fitted on the other families scores the held-out one",
            "auroc": h.auroc, "auroc_ci": list(h.auroc_ci), "ece": h.ece, "brier": h.brier,
            "within_family_auroc": float(np.mean(within)),
            "best_baseline": bname, "best_baseline_auroc": best,
            "baselines": {k: v["auroc"] for k, v in h.baselines.items()},
            "recipe_auroc": report.held_out.auroc, "recipe_ece": report.held_out.ece,
            "families_defined": len(within),
        }
        model.meta["kfold"] = {"auroc": report.kfold.auroc, "ece": report.kfold.ece}
    return model
