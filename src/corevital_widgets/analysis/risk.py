"""Risk of a wrong answer from trace features: evaluation, a fitted model, a heuristic.

* :func:`evaluate_risk` — AUROC with a bootstrap 95% interval, ECE (15 equal-width bins),
  Brier score, a reliability diagram and a ROC chart (Altair), baselines beside the score.
* :class:`RiskModel` — standardised features + logistic regression (scikit-learn to fit; the
  regularisation strength chosen by an inner cross-validation on log-loss over the training
  data only, which is what keeps the probabilities calibrated; prediction and JSON
  persistence are numpy only, no pickle).
* :func:`heuristic_risk` — the seed document's uncalibrated weighted combination.

Convention: label 1 = the event the score predicts (a wrong answer), score = its probability.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from .features import FEATURE_NAMES, trace_features

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from ..trace.trace import Trace

ECE_BINS = 15
#: Inverse regularisation strengths ``RiskModel(C="auto")`` chooses from (log-spaced).
AUTO_C_GRID: tuple[float, ...] = tuple(float(c) for c in np.logspace(-3, 3, 13))
AUTO_C_FOLDS = 5
#: Features the default RiskModel uses: defined on every trace made with prompt telemetry
#: (repetition similarity is NaN for T <= 3 and logit-lens features are optional, so left out).
DEFAULT_RISK_FEATURES: tuple[str, ...] = tuple(n for n in FEATURE_NAMES if n != "repetition_similarity_max")
DEFAULT_MODEL_FILE = Path(__file__).resolve().parents[1] / "data" / "risk_smollm2.json"
DEFAULT_MODEL_NAMES = ("SmolLM2-135M-Instruct", "HuggingFaceTB/SmolLM2-135M-Instruct")
_FORMAT = "corevital-risk-model"


# ---------------------------------------------------------------------------- input checks
def _fingerprint_of(model: Any) -> str | None:
    """The content fingerprint of a Trace (recorded), a model object, or a fingerprint string."""
    import re

    from ..trace.fingerprint import model_fingerprint, trace_fingerprint

    if isinstance(model, str):
        return model if re.fullmatch(r"[0-9a-f]{16}", model) else None
    if hasattr(model, "meta") and hasattr(model, "timeline"):
        return trace_fingerprint(model)
    if hasattr(model, "config") and hasattr(model, "get_input_embeddings"):
        return model_fingerprint(model)
    return None


@lru_cache(maxsize=1)
def _shipped_risk_files() -> dict[str, Path]:
    """fingerprint -> shipped RiskModel JSON (``data/risk_*.json``)."""
    out = {}
    for path in sorted(DEFAULT_MODEL_FILE.parent.glob("risk_*.json")):
        fp = json.loads(path.read_text(encoding="utf-8")).get("meta", {}).get("fingerprint")
        if fp:
            out[fp] = path
    return out


def _is_traceset(x: Any) -> bool:
    """A :class:`~corevital_widgets.TraceSet` (duck-typed: analysis does not import batch)."""
    return hasattr(x, "to_pandas") and hasattr(x, "paths") and hasattr(x, "__iter__")


def _as_labels(labels: Any, n: int | None = None) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {y.shape}")
    if n is not None and y.size != n:
        raise ValueError(f"labels has {y.size} entries but scores has {n}; pass one label per score")
    if y.dtype == bool:
        y = y.astype(np.int64)
    if y.dtype.kind not in "iuf" or not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0/1 or bool (1 = the event the score predicts, e.g. a wrong answer)")
    y = y.astype(np.int64)
    if y.min() == y.max():
        raise ValueError(f"labels hold a single class (all {int(y[0])}); AUROC and fitting need both 0 and 1")
    return y


def _as_scores(scores: Any, name: str = "scores") -> np.ndarray:
    if isinstance(scores, (str, bytes)):
        raise TypeError(f"{name} must be an array of numbers, got {type(scores).__name__}")
    try:
        s = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be an array of numbers") from None
    if s.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {s.shape}")
    bad = np.flatnonzero(~np.isfinite(s))
    if bad.size:
        raise ValueError(f"{name} has {bad.size} NaN/Inf values (first at index {bad[0]}); drop or fill them first")
    return s


def _auroc_rows(s: np.ndarray, y: np.ndarray) -> np.ndarray:
    """AUROC of every row of s [B, n] against y [B, n] (Mann-Whitney U with tied ranks averaged)."""
    from scipy.stats import rankdata

    ranks = rankdata(s, axis=1)
    n_pos = y.sum(axis=1)
    n_neg = y.shape[1] - n_pos
    with np.errstate(invalid="ignore", divide="ignore"):
        return ((ranks * y).sum(axis=1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def feature_auroc(scores: Any, labels: Any) -> float:
    """AUROC of ``scores`` as a predictor of ``labels == 1`` (0.5 = chance)."""
    s = _as_scores(scores)
    y = _as_labels(labels, s.size)
    return float(_auroc_rows(s[None], y[None])[0])


def bootstrap_auroc_ci(scores: Any, labels: Any, n_bootstrap: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the AUROC (resamples with a single class are skipped)."""
    s = _as_scores(scores)
    y = _as_labels(labels, s.size)
    rng = np.random.default_rng(seed)
    out: list[np.ndarray] = []
    chunk = max(1, min(n_bootstrap, 2_000_000 // max(s.size, 1)))
    for start in range(0, n_bootstrap, chunk):
        idx = rng.integers(0, s.size, size=(min(chunk, n_bootstrap - start), s.size))
        yy = y[idx]
        keep = (yy.min(axis=1) == 0) & (yy.max(axis=1) == 1)
        out.append(_auroc_rows(s[idx][keep], yy[keep]))
    values = np.concatenate(out)
    alpha = (1 - level) / 2
    return float(np.quantile(values, alpha)), float(np.quantile(values, 1 - alpha))


def reliability_table(probs: Any, labels: Any, n_bins: int = ECE_BINS) -> "pd.DataFrame":
    """Per equal-width bin of predicted probability: bin edges, count, mean prediction, observed rate.

    Bin b holds predictions in [b/n, (b+1)/n); the last bin also holds 1.0. Empty bins are kept (count 0).
    """
    import pandas as pd

    p = _as_scores(probs, "probabilities")
    y = np.asarray(labels, dtype=np.float64)
    if p.min() < 0 or p.max() > 1:
        raise ValueError("probabilities must lie in [0, 1] for ECE, Brier and the reliability diagram")
    b = np.minimum((p * n_bins).astype(np.int64), n_bins - 1)
    count = np.bincount(b, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.bincount(b, weights=p, minlength=n_bins) / count
        rate = np.bincount(b, weights=y, minlength=n_bins) / count
    edges = np.arange(n_bins + 1) / n_bins
    return pd.DataFrame({"bin_lo": edges[:-1], "bin_hi": edges[1:], "count": count, "mean_predicted": mean_p, "observed_rate": rate})


def expected_calibration_error(probs: Any, labels: Any, n_bins: int = ECE_BINS) -> float:
    """ECE = Σ_bins (n_b / n) · |observed rate_b − mean prediction_b| over equal-width bins."""
    t = reliability_table(probs, labels, n_bins)
    used = t["count"].to_numpy() > 0
    w = t["count"].to_numpy()[used] / t["count"].sum()
    return float((w * np.abs(t["observed_rate"].to_numpy()[used] - t["mean_predicted"].to_numpy()[used])).sum())


def roc_points(scores: Any, labels: Any) -> "pd.DataFrame":
    """The ROC curve: false/true positive rate at every distinct threshold (from (0, 0) to (1, 1))."""
    import pandas as pd

    s = _as_scores(scores)
    y = _as_labels(labels, s.size)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]  # last index of each distinct threshold
    tp = np.cumsum(y)[last]
    fp = (last + 1) - tp
    return pd.DataFrame({"threshold": np.r_[np.inf, s[last]], "fpr": np.r_[0.0, fp / (y.size - y.sum())],
                         "tpr": np.r_[0.0, tp / y.sum()]})


@dataclass
class RiskReport:
    """What :func:`evaluate_risk` measured. auroc/auroc_ci (bootstrap 95%), ece (15 bins), brier,
    n; baselines: name -> {"auroc", "auroc_ci"}; reliability: per-bin table; roc: curve points."""

    auroc: float
    auroc_ci: tuple[float, float]
    ece: float
    brier: float
    n: int
    n_positive: int
    reliability: "pd.DataFrame" = field(repr=False)
    roc: "pd.DataFrame" = field(repr=False)
    baselines: dict[str, dict[str, Any]] = field(default_factory=dict)
    baseline_rocs: dict[str, "pd.DataFrame"] = field(default_factory=dict, repr=False)
    #: with ``groups``: one row per group (n, n_positive, the score's AUROC, its interval and ECE,
    #: each baseline's AUROC and interval); NaN where a group holds one class only
    per_group: "pd.DataFrame | None" = field(default=None, repr=False)

    def table(self) -> "pd.DataFrame":
        """One row for the score and one per baseline: AUROC, its 95% interval, ECE, Brier."""
        import pandas as pd

        rows = [{"score": "risk score", "auroc": self.auroc, "ci_lo": self.auroc_ci[0], "ci_hi": self.auroc_ci[1],
                 "ece": self.ece, "brier": self.brier}]
        rows += [{"score": name, "auroc": b["auroc"], "ci_lo": b["auroc_ci"][0], "ci_hi": b["auroc_ci"][1],
                  "ece": math.nan, "brier": math.nan} for name, b in self.baselines.items()]
        return pd.DataFrame(rows).set_index("score")

    def to_dict(self) -> dict[str, Any]:
        d = {"auroc": self.auroc, "auroc_ci": list(self.auroc_ci), "ece": self.ece, "brier": self.brier, "n": self.n,
             "n_positive": self.n_positive, "baselines": {k: {"auroc": v["auroc"], "auroc_ci": list(v["auroc_ci"])} for k, v in self.baselines.items()},
             "reliability": self.reliability.replace({np.nan: None}).to_dict(orient="list")}
        if self.per_group is not None:
            d["per_group"] = self.per_group.reset_index().astype(object).where(self.per_group.reset_index().notna(), None).to_dict(orient="records")
        return d

    def reliability_chart(self) -> Any:
        """Altair reliability diagram: observed rate vs mean prediction per bin (size = count), with the diagonal."""
        import altair as alt
        import pandas as pd

        t = self.reliability[self.reliability["count"] > 0]
        diag = alt.Chart(pd.DataFrame({"x": [0.0, 1.0], "y": [0.0, 1.0]})).mark_line(strokeDash=[4, 4], color="gray").encode(x="x", y="y")
        pts = alt.Chart(t).mark_line(point=True).encode(
            x=alt.X("mean_predicted:Q", title="mean predicted risk", scale=alt.Scale(domain=[0, 1])),
            y=alt.Y("observed_rate:Q", title="observed rate", scale=alt.Scale(domain=[0, 1])),
            size=alt.Size("count:Q"), tooltip=["bin_lo", "bin_hi", "count", "mean_predicted", "observed_rate"])
        return (diag + pts).properties(title=f"Reliability (ECE {self.ece:.3f}, Brier {self.brier:.3f})", width=320, height=320)

    def roc_chart(self) -> Any:
        """Altair ROC curves of the score and every baseline."""
        import altair as alt
        import pandas as pd

        frames = [self.roc.assign(score=f"risk score (AUROC {self.auroc:.3f})")]
        frames += [r.assign(score=f"{k} (AUROC {self.baselines[k]['auroc']:.3f})") for k, r in self.baseline_rocs.items()]
        data = pd.concat(frames)[["fpr", "tpr", "score"]]
        return alt.Chart(data).mark_line().encode(
            x=alt.X("fpr:Q", title="false positive rate"), y=alt.Y("tpr:Q", title="true positive rate"), color="score:N",
        ).properties(title="ROC", width=320, height=320)


def evaluate_risk(scores: Any, labels: Any, *, baselines: Mapping[str, Any] | None = None,
                  groups: Any = None, n_bootstrap: int = 1000, seed: int = 0) -> RiskReport:
    """Evaluate risk probabilities ``scores`` (in [0, 1]) against binary ``labels`` (1 = wrong answer).

    baselines: other scores by name (any real-valued, higher = riskier; e.g. 1 − mean max-prob,
    mean token entropy, − sequence log-likelihood); only their AUROC and interval are computed.
    groups: one label per score (e.g. the question family); the report's ``per_group`` then has
    every group's AUROC with its interval, for the score and each baseline, and the score's ECE.
    For a transfer claim the scores must come from models that never saw the group they score
    (see :mod:`~corevital_widgets.analysis.transfer`).
    Raises ValueError on NaN/Inf scores, mismatched lengths, non-binary or single-class labels.
    """
    s = _as_scores(scores)
    y = _as_labels(labels, s.size)
    if s.min() < 0 or s.max() > 1:
        raise ValueError("scores must be probabilities in [0, 1] (ECE and Brier need them); pass raw scores as baselines")
    report = RiskReport(
        auroc=feature_auroc(s, y), auroc_ci=bootstrap_auroc_ci(s, y, n_bootstrap, seed),
        ece=expected_calibration_error(s, y), brier=float(np.mean((s - y) ** 2)), n=int(s.size), n_positive=int(y.sum()),
        reliability=reliability_table(s, y), roc=roc_points(s, y),
    )
    for name, b in (baselines or {}).items():
        bs = _as_scores(b, f"baseline {name!r}")
        if bs.size != s.size:
            raise ValueError(f"baseline {name!r} has {bs.size} values but scores has {s.size}")
        report.baselines[name] = {"auroc": feature_auroc(bs, y), "auroc_ci": bootstrap_auroc_ci(bs, y, n_bootstrap, seed)}
        report.baseline_rocs[name] = roc_points(bs, y)
    if groups is not None:
        report.per_group = _per_group(s, y, {k: np.asarray(v, dtype=np.float64) for k, v in (baselines or {}).items()},
                                      groups, n_bootstrap, seed)
    return report


def _per_group(s: np.ndarray, y: np.ndarray, baselines: Mapping[str, np.ndarray], groups: Any, n_bootstrap: int,
               seed: int) -> "pd.DataFrame":
    import pandas as pd

    g = np.asarray(groups).astype(str)
    if g.shape != s.shape:
        raise ValueError(f"groups has {g.size} entries but scores has {s.size}; pass one group per score")
    rows = []
    for name in sorted(set(g.tolist())):
        m = g == name
        yy = y[m]
        two = 0 < yy.sum() < yy.size
        row: dict[str, Any] = {"group": name, "n": int(m.sum()), "n_positive": int(yy.sum())}

        def put(prefix: str, v: np.ndarray) -> None:
            if two:
                row[f"{prefix}auroc"] = float(_auroc_rows(v[m][None], yy[None])[0])
                row[f"{prefix}ci_lo"], row[f"{prefix}ci_hi"] = bootstrap_auroc_ci(v[m], yy, n_bootstrap, seed)
            else:
                row[f"{prefix}auroc"] = row[f"{prefix}ci_lo"] = row[f"{prefix}ci_hi"] = math.nan

        put("", s)
        row["ece"] = expected_calibration_error(s[m], yy)
        row["mean_risk"], row["wrong_rate"] = float(s[m].mean()), float(yy.mean())
        for bname, b in baselines.items():
            put(f"{bname}: ", b)
        rows.append(row)
    return pd.DataFrame(rows).set_index("group")


# ------------------------------------------------------------------------------ heuristic
def heuristic_risk(trace: "Trace") -> float:
    """The seed's Phase-2 weighted combination (uncalibrated, in [0, 1]):

    0.20·H̄/log2 V + 0.15·(1 − mean margin) + 0.15·min(1, mean surprisal / log2 V)
    + 0.20·[any collapsed head] + 0.15·(mean prompt layer transformation / 2, 0 without telemetry)
    + 0.10·[NaN or Inf] + 0.05·[repetition loop]. H̄: mean step entropy (bits); V: vocabulary size.
    """
    from ..trace.trace import Trace

    if not isinstance(trace, Trace):
        raise TypeError(f"heuristic_risk needs a Trace, got {type(trace).__name__}")
    if trace.n_steps == 0:
        raise ValueError("the trace has no generated steps; there is nothing to score")
    f = trace_features(trace)
    vocab = int(trace.meta.get("vocab_size") or 0)
    max_bits = math.log2(vocab) if vocab > 1 else max(float(f["entropy_max"]), 1.0)
    lt = f["layer_transformation_mean"]
    h = trace.health
    return float(
        0.20 * min(1.0, f["entropy_mean"] / max_bits)
        + 0.15 * (1.0 - f["margin_mean"])
        + 0.15 * min(1.0, f["surprisal_mean"] / max_bits)
        + 0.20 * float(h.attention_collapse_detected)
        + 0.15 * (0.0 if math.isnan(lt) else min(1.0, lt / 2.0))
        + 0.10 * float(h.nan_detected or h.inf_detected)
        + 0.05 * float(h.repetition_loop_detected)
    )


# ------------------------------------------------------------------------------ RiskModel
class RiskModel:
    """P(wrong answer | trace features): StandardScaler + LogisticRegression.

    ``C`` is the inverse L2 strength; ``"auto"`` (the default) picks it from
    :data:`AUTO_C_GRID` by a stratified 5-fold cross-validation on log-loss *inside* the
    training data passed to :meth:`fit` (no test data is seen), then refits on all of it; the
    chosen value is kept in ``C_`` and saved in the JSON.
    ``fit`` uses scikit-learn; ``predict_proba`` and the JSON round trip are numpy only, so
    a loaded model predicts bit-for-bit what the saved one did. ``kind="heuristic"`` wraps
    :func:`heuristic_risk` (uncalibrated) for models without shipped coefficients.
    """

    def __init__(self, feature_names: Sequence[str] = DEFAULT_RISK_FEATURES, *, C: float | str = "auto",
                 kind: str = "logistic") -> None:
        if kind not in ("logistic", "heuristic"):
            raise ValueError(f"kind must be 'logistic' or 'heuristic', got {kind!r}")
        names = list(feature_names)
        if not names or not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
            raise ValueError("feature_names must be a non-empty list of distinct feature names")
        self.kind = kind
        self.feature_names = names
        if isinstance(C, str):
            if C != "auto":
                raise ValueError(f"C must be a positive number or 'auto', got {C!r}")
        elif isinstance(C, bool) or not isinstance(C, (int, float)) or not math.isfinite(C) or C <= 0:
            raise ValueError(f"C must be a positive number or 'auto', got {C!r}")
        self.C: float | str = C if isinstance(C, str) else float(C)
        #: the regularisation actually used by the fitted model (= C unless C == "auto")
        self.C_: float | None = None
        self.mean_: np.ndarray | None = None
        self.scale_: np.ndarray | None = None
        self.coef_: np.ndarray | None = None
        self.intercept_: float | None = None
        #: per-feature min / max of the training data (what the probabilities are calibrated on)
        self.train_min_: np.ndarray | None = None
        self.train_max_: np.ndarray | None = None
        self.meta: dict[str, Any] = {}

    # -- features in
    def _matrix(self, x: Any) -> np.ndarray:
        import pandas as pd

        from ..trace.trace import Trace

        if isinstance(x, Trace):
            x = pd.DataFrame([trace_features(x)])
        elif _is_traceset(x):
            x = x.to_pandas()
        elif isinstance(x, Mapping):
            x = pd.DataFrame([x])
        if not isinstance(x, pd.DataFrame):
            raise TypeError(f"features must be a Trace, TraceSet, DataFrame or dict of features, got {type(x).__name__}")
        missing = [n for n in self.feature_names if n not in x.columns]
        if missing:
            raise ValueError(f"features lack columns {missing}; compute them with trace.features() / TraceSet.to_pandas()")
        m = x[self.feature_names].to_numpy(dtype=np.float64)
        bad = ~np.isfinite(m)
        if bad.any():
            r, c = np.argwhere(bad)[0]
            raise ValueError(f"feature {self.feature_names[c]!r} is NaN/Inf in row {r} ({int(bad.sum())} bad values); "
                             "prompt features need prompt_telemetry=True — drop those rows or choose other feature_names")
        return m

    def fit(self, features: Any, labels: Any) -> "RiskModel":
        """Fit on a DataFrame (or TraceSet) of features and 0/1 labels (1 = wrong). Returns self."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import GridSearchCV, StratifiedKFold
        from sklearn.preprocessing import StandardScaler

        if self.kind != "logistic":
            raise ValueError("a heuristic RiskModel has nothing to fit")
        m = self._matrix(features)
        y = _as_labels(labels, m.shape[0])
        scaler = StandardScaler().fit(m)
        z = scaler.transform(m)
        if self.C == "auto":
            if np.bincount(y, minlength=2).min() < AUTO_C_FOLDS:
                raise ValueError(f"C='auto' chooses the regularisation by {AUTO_C_FOLDS}-fold cross-validation and needs at "
                                 f"least {AUTO_C_FOLDS} examples of each label; pass a number for C or more labelled traces")
            search = GridSearchCV(LogisticRegression(max_iter=5000), {"C": list(AUTO_C_GRID)}, scoring="neg_log_loss",
                                  cv=StratifiedKFold(AUTO_C_FOLDS, shuffle=True, random_state=0)).fit(z, y)
            lr = search.best_estimator_
            self.C_ = float(search.best_params_["C"])
        else:
            self.C_ = float(self.C)
            lr = LogisticRegression(C=self.C_, max_iter=5000).fit(z, y)
        self.mean_, self.scale_ = scaler.mean_.astype(np.float64), scaler.scale_.astype(np.float64)
        self.coef_, self.intercept_ = lr.coef_[0].astype(np.float64), float(lr.intercept_[0])
        self.train_min_, self.train_max_ = m.min(0), m.max(0)
        self.meta = {"n_train": int(m.shape[0]), "n_positive": int(y.sum())}
        return self

    def predict_proba(self, x: Any) -> Any:
        """P(label 1): a float for one Trace or dict, an array for a TraceSet or DataFrame."""
        from ..trace.trace import Trace

        single = isinstance(x, (Trace, Mapping))
        if self.kind == "heuristic":
            if isinstance(x, Trace):
                return heuristic_risk(x)
            if _is_traceset(x):
                return np.array([heuristic_risk(t) for t in x])
            raise TypeError("the heuristic risk needs Traces (its health flags); pass a Trace or TraceSet")
        if self.coef_ is None:
            raise RuntimeError("this RiskModel is not fitted; call fit() or RiskModel.load()")
        standard = (self._matrix(x) - self.mean_) / self.scale_
        # summed feature by feature in a fixed order (vectorised over rows), so a trace gets the
        # same bits alone or in a batch (BLAS and numpy's reductions change order with the shape)
        z = np.full(standard.shape[0], self.intercept_)
        for j, c in enumerate(self.coef_):
            z += standard[:, j] * c
        p = 1.0 / (1.0 + np.exp(-z))
        return float(p[0]) if single else p

    def outside_mask(self, x: Any) -> np.ndarray:
        """bool [rows, features]: which features of each row (a Trace, TraceSet, feature dict or
        DataFrame) lie outside the range of the training data, where the probability is an
        extrapolation, not a calibrated value. All False for the heuristic and for models saved
        without ranges."""
        m = self._matrix(x)
        if self.kind != "logistic" or self.train_min_ is None or self.train_max_ is None:
            return np.zeros(m.shape, dtype=bool)
        return (m < self.train_min_) | (m > self.train_max_)

    def outside_range(self, x: Any) -> list[str]:
        """Names of the features of one Trace (or feature dict) outside the training range
        (see :meth:`outside_mask`)."""
        bad = self.outside_mask(x)[0]
        return [name for name, b in zip(self.feature_names, bad) if b]

    # -- persistence (JSON, no pickle)
    def to_json(self) -> str:
        d: dict[str, Any] = {"format": _FORMAT, "version": 1, "kind": self.kind, "feature_names": self.feature_names,
                             "C": self.C, "meta": self.meta}
        if self.kind == "logistic":
            if self.coef_ is None:
                raise RuntimeError("fit the RiskModel before saving it")
            d.update(C_=self.C_, mean=self.mean_.tolist(), scale=self.scale_.tolist(), coef=self.coef_.tolist(),
                     intercept=self.intercept_)
            if self.train_min_ is not None and self.train_max_ is not None:
                d.update(train_min=self.train_min_.tolist(), train_max=self.train_max_.tolist())
        return json.dumps(d, indent=1)

    @classmethod
    def from_json(cls, text: str) -> "RiskModel":
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not a RiskModel JSON: {exc}") from None
        if not isinstance(d, dict) or d.get("format") != _FORMAT:
            raise ValueError(f"not a RiskModel JSON (format is not {_FORMAT!r})")
        m = cls(d["feature_names"], C=d.get("C", 1.0), kind=d["kind"])
        m.meta = dict(d.get("meta", {}))
        if m.kind == "logistic":
            k = len(m.feature_names)
            arrays = [np.asarray(d[key], dtype=np.float64) for key in ("mean", "scale", "coef")]
            if any(a.shape != (k,) for a in arrays):
                raise ValueError(f"RiskModel JSON: mean/scale/coef must each have {k} entries (one per feature)")
            m.mean_, m.scale_, m.coef_ = arrays
            m.intercept_ = float(d["intercept"])
            m.C_ = float(d.get("C_", m.C if not isinstance(m.C, str) else float("nan")))
            if "train_min" in d and "train_max" in d:
                lo, hi = (np.asarray(d[key], dtype=np.float64) for key in ("train_min", "train_max"))
                if lo.shape != (k,) or hi.shape != (k,):
                    raise ValueError(f"RiskModel JSON: train_min/train_max must each have {k} entries")
                m.train_min_, m.train_max_ = lo, hi
        return m

    def save(self, path: str | PathLike[str]) -> None:
        """Write :meth:`to_json` to ``path`` atomically."""
        from ..trace.storage import write_text_atomic

        write_text_atomic(Path(path), self.to_json())

    @classmethod
    def load(cls, path: str | PathLike[str]) -> "RiskModel":
        return cls.from_json(Path(path).read_text(encoding="utf-8"))

    @classmethod
    def load_default(cls, model: Any) -> "RiskModel":
        """The shipped coefficients for this model, matched by content (the model fingerprint:
        shape + a sample of the weights), never by name: SmolLM2 loaded any way gets them. For any
        other model the uncalibrated heuristic, with a warning. ``model``: a Trace (its recorded
        fingerprint), a model object, or a fingerprint string. (A name string is accepted for
        traces made before fingerprints were recorded.)"""
        fp = _fingerprint_of(model)
        shipped = _shipped_risk_files()
        if fp is not None and fp in shipped:
            return cls.load(shipped[fp])
        if fp is None and isinstance(model, str) and model in DEFAULT_MODEL_NAMES and DEFAULT_MODEL_FILE.is_file():
            return cls.load(DEFAULT_MODEL_FILE)
        name = getattr(getattr(model, "meta", None), "get", lambda *_: None)("model_name") or (
            model if isinstance(model, str) else type(model).__name__)
        warnings.warn(f"no fitted risk coefficients ship for {name!r} (fingerprint {fp}); using the uncalibrated "
                      "heuristic_risk (fit a RiskModel on labelled traces of your model for probabilities)", UserWarning, stacklevel=2)
        return cls(kind="heuristic")

    def __eq__(self, other: object) -> bool:
        """Same kind, features, hyper-parameters and (when fitted) identical coefficients."""
        if not isinstance(other, RiskModel):
            return NotImplemented
        if (self.coef_ is None) != (other.coef_ is None):
            return False
        if self.coef_ is None or self.kind == "heuristic":
            return (self.kind, self.feature_names, self.C) == (other.kind, other.feature_names, other.C)
        return self.to_json() == other.to_json()

    def __repr__(self) -> str:
        state = "heuristic" if self.kind == "heuristic" else ("fitted" if self.coef_ is not None else "unfitted")
        return f"<RiskModel {state}, {len(self.feature_names)} features>"


# ------------------------------------------------------------------- one trace's risk
def risk_kind_label(kind: str) -> str:
    """How a RiskModel's ``kind`` is shown: ``"calibrated"`` for fitted coefficients,
    ``"uncalibrated heuristic"`` for the seed's heuristic."""
    return "uncalibrated heuristic" if kind == "heuristic" else "calibrated"


@dataclass(frozen=True)
class TraceRisk:
    """The risk of a wrong answer shown for one trace (by ``trace.summary()`` and the health badge).

    ``value`` in [0, 1]; ``kind`` is the RiskModel's (``"logistic"`` or ``"heuristic"``);
    ``label`` is the short form (``"calibrated"`` / ``"extrapolated"`` / ``"uncalibrated heuristic"``) and
    ``description`` the long one.
    """

    value: float
    kind: str
    #: features outside the fitted model's training range (the value is then extrapolated)
    outside: tuple[str, ...] = ()
    #: what the model earned on question families it was not fitted on, in words ("" if unknown)
    validation: str = ""

    @property
    def calibrated(self) -> bool:
        """True for fitted coefficients (a probability), False for the seed's heuristic score."""
        return self.kind != "heuristic"

    @property
    def label(self) -> str:
        return "extrapolated" if self.calibrated and self.outside else risk_kind_label(self.kind)

    @property
    def description(self) -> str:
        if not self.calibrated:
            return "uncalibrated heuristic score"
        if self.outside:
            names = ", ".join(self.outside[:3]) + (f" and {len(self.outside) - 3} more" if len(self.outside) > 3 else "")
            return (f"no probability shown: this run's {names} {'is' if len(self.outside) == 1 else 'are'} outside the range "
                    "the risk model was calibrated on, where its number cannot be trusted; fit corevital.RiskModel on "
                    "your own labelled answers for runs like this")
        return "calibrated probability of a wrong answer" + (f" ({self.validation})" if self.validation else "")

    @property
    def shown(self) -> float | None:
        """The value to print: None when it would be an extrapolated probability."""
        return None if (self.calibrated and self.outside) else self.value

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (what the widget payload carries); ``value`` is None when extrapolated."""
        return {"value": self.shown, "kind": self.kind, "label": self.label, "description": self.description,
                "outside": list(self.outside)}


def trace_risk(trace: "Trace", risk_model: Any = None) -> TraceRisk | None:
    """Risk of a wrong answer for ``trace``: ``risk_model`` when given, else the shipped model for
    the trace's model (``RiskModel.load_default``; the uncalibrated heuristic for other models,
    without its warning). None when the trace cannot be scored (no steps, missing features)."""
    if risk_model is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            risk_model = RiskModel.load_default(trace if trace.meta.get("model_fingerprint")
                                                else str(trace.meta.get("model_name", "")))
    try:  # a feature the model needs is undefined for this trace (e.g. no middle layers in a 2-layer model)
        value = float(risk_model.predict_proba(trace))
        outside = tuple(risk_model.outside_range(trace))
    except ValueError:
        return None
    if not np.isfinite(value):
        return None
    return TraceRisk(value, str(risk_model.kind), outside, validation_text(risk_model))


def validation_text(risk_model: "RiskModel") -> str:
    """The family-held-out figure a fitted model's meta records, in words (what the badge and
    ``summary()`` show next to its probability); "" when the model carries none."""
    h = (risk_model.meta or {}).get("held_out") if risk_model.kind != "heuristic" else None
    if not isinstance(h, Mapping) or "auroc" not in h:
        return ""
    what = risk_model.meta.get("feature_set")
    text = (f"{f'a calibrated {what}; ' if what else ''}on question families it was not fitted on: "
            f"AUROC {h['auroc']:.2f}, ECE {h.get('ece', float('nan')):.2f}")
    if "best_baseline" in h:
        text += f"; the plain {h['best_baseline']} ranks with {h['best_baseline_auroc']:.2f}"
    return text
