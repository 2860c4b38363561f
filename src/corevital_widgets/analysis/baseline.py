"""The model's own normal: a :class:`Baseline` fitted on traces of ordinary prompts, and how far a
new trace is from it.

What is compared ("cells", one number per trace each, see :func:`trace_cells`): per layer and
head the mean over steps of the step attention entropy (bits) and concentration, the prompt
head entropy, concentration, sink and log-basin; per layer the mean log hidden-state norm and
the mean layer transformation; and the timeline's mean entropy, mean surprisal and mean margin.

A trace's deviation in one cell is a robust z-score, ``(value - median) / scale`` with the
median and the scale taken over the fitting traces. The scale is the larger of 1.4826 x MAD and
the cell's central 90% range over 3.29 (so a cell whose normal runs have a heavy tail, such as
the basin of short prompts, says so), floored per statistic so structural heads that never move
do not turn rounding into alarms.

Thousands of cells are tested at once, so a per-cell threshold would alarm on most healthy
runs. The alarm is instead one statistic per trace, ``S = max over cells of |z|``, and its
threshold is calibrated on held-out healthy traces (split conformal: the fitting traces are
split in two; the medians and scales come from one half, the threshold is the
ceil((n + 1)(1 - alpha))-th smallest S of the other half). A new healthy run of the same
kind then alarms with probability at most alpha — the family-wise false-alarm rate of the
whole run, whatever the number of cells — and close to alpha for continuous S.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from ..trace.trace import Trace

BASELINE_VERSION = 1

#: The alarm rates a baseline is calibrated for (the threshold of each is stored).
ALPHAS = (0.01, 0.05, 0.10)
DEFAULT_ALPHA = 0.05

#: Each cell's scale is at least its central (1 - 2 x this) range over the fitting runs,
#: divided by the same range of a standard normal (so it equals the standard deviation for
#: normal data and grows with heavy tails).
TAIL_QUANTILE = 0.05
_NORMAL_QUANTILE = 1.6448536269514722  # standard normal 95th percentile

#: Smallest scale per statistic (its units): below this, differences are rounding, not behaviour.
SCALE_FLOORS = {
    "step_entropy": 0.05, "step_concentration": 0.02,
    "prompt_entropy": 0.05, "prompt_concentration": 0.02, "prompt_sink": 0.02, "prompt_log_basin": 0.05,
    "hidden_log_norm": 0.02, "layer_transformation": 0.01,
    "entropy_mean": 0.1, "surprisal_mean": 0.1, "margin_mean": 0.02,
}
#: What each statistic is, in words and units (blame, narrative).
DESCRIPTIONS = {
    "step_entropy": ("attention entropy while generating", "bits"),
    "step_concentration": ("attention concentration while generating", ""),
    "prompt_entropy": ("prompt attention entropy", "bits"),
    "prompt_concentration": ("prompt attention concentration", ""),
    "prompt_sink": ("attention to the first token", ""),
    "prompt_log_basin": ("log basin (middle of the prompt vs its ends)", ""),
    "hidden_log_norm": ("log hidden-state norm", ""),
    "layer_transformation": ("layer transformation", ""),
    "entropy_mean": ("mean output entropy", "bits"),
    "surprisal_mean": ("mean surprisal", "bits"),
    "margin_mean": ("mean top-1 margin", ""),
}
#: Per-layer-and-head statistics ([L, H]); per-layer ([L]); per-trace scalars.
HEAD_STATS = ("step_entropy", "step_concentration", "prompt_entropy", "prompt_concentration", "prompt_sink",
              "prompt_log_basin")
LAYER_STATS = ("hidden_log_norm", "layer_transformation")
RUN_STATS = ("entropy_mean", "surprisal_mean", "margin_mean")
#: Quantiles kept of every step's value of these timeline metrics (for "above 97% of steps").
STEP_QUANTILE_METRICS = ("entropy", "surprisal", "top_k_margin")
N_QUANTILES = 101


def _nanmean(a: np.ndarray, axis: int) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        count = np.sum(~np.isnan(a), axis=axis)
        total = np.nansum(a, axis=axis)
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def trace_cells(trace: "Trace") -> dict[str, np.ndarray]:
    """One number per cell of ``trace`` (see the module docstring); NaN where undefined
    (blocks without attention, no prompt telemetry, no steps)."""
    L, H = trace.n_layers, trace.n_heads
    nan_lh = np.full((L, H), np.nan)
    cells: dict[str, np.ndarray] = {}
    if trace.n_steps:
        cells["step_entropy"] = _nanmean(trace.heads.entropy, 0)
        cells["step_concentration"] = _nanmean(trace.heads.concentration, 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            cells["hidden_log_norm"] = _nanmean(np.log(np.maximum(trace.layers.l2_norm.astype(np.float64), 1e-30)), 0)
    else:
        cells["step_entropy"] = cells["step_concentration"] = nan_lh
        cells["hidden_log_norm"] = np.full(L, np.nan)
    pr = trace.prompt
    same = pr.head_entropy.shape == (L, H)  # the prompt stack is the step stack (causal LMs)
    cells["prompt_entropy"] = pr.head_entropy.astype(np.float64) if same else nan_lh
    cells["prompt_concentration"] = pr.head_concentration.astype(np.float64) if same else nan_lh
    cells["prompt_sink"] = pr.sink.astype(np.float64) if same else nan_lh
    with np.errstate(divide="ignore", invalid="ignore"):
        cells["prompt_log_basin"] = np.log(np.maximum(pr.basin.astype(np.float64), 1e-6)) if same else nan_lh
    lt = pr.layer_transformation
    cells["layer_transformation"] = _nanmean(lt, 1) if lt.ndim == 2 and lt.shape[0] == L and lt.size else np.full(L, np.nan)
    tl = trace.timeline
    cells["entropy_mean"] = np.array(_nanmean(tl.entropy, 0) if trace.n_steps else np.nan)
    cells["surprisal_mean"] = np.array(_nanmean(tl.surprisal, 0) if trace.n_steps else np.nan)
    cells["margin_mean"] = np.array(_nanmean(tl.top_k_margin, 0) if trace.n_steps else np.nan)
    return cells


@dataclass
class Deviation:
    """How far one trace is from a baseline: per cell z-scores, their max |z| (``score``), the
    calibrated ``threshold`` at ``alpha`` and whether the run is unusual."""

    z: dict[str, np.ndarray]
    values: dict[str, np.ndarray]
    score: float
    threshold: float
    alpha: float

    @property
    def unusual(self) -> bool:
        return bool(self.score > self.threshold)

    def cells_over(self, threshold: float | None = None) -> list[tuple[str, tuple[int, ...], float]]:
        """(statistic, index, z) of every cell with |z| above the threshold, largest first."""
        t = self.threshold if threshold is None else threshold
        out = []
        for name, z in self.z.items():
            with np.errstate(invalid="ignore"):
                hits = np.argwhere(np.abs(z) > t)
            for idx in hits:
                out.append((name, tuple(int(i) for i in idx), float(z[tuple(idx)])))
        return sorted(out, key=lambda c: -abs(c[2]))


@dataclass
class Baseline:
    """A model's normal. Build with :meth:`fit` (or :func:`~corevital_widgets.fit_baseline`),
    compare a trace with :meth:`deviation`; ``save``/``load`` as versioned JSON."""

    fingerprint: str
    model_name: str
    n_traces: int
    center: dict[str, np.ndarray]
    scale: dict[str, np.ndarray]
    thresholds: dict[float, float]
    step_quantiles: dict[str, np.ndarray] = field(default_factory=dict)
    shapes: tuple[int, int] = (0, 0)  # (L, H)
    n_calibration: int = 0
    description: str = ""

    # ---------------------------------------------------------------------- fitting
    @classmethod
    def fit(cls, traces: Iterable["Trace"], *, alphas: Iterable[float] = ALPHAS, calibration_fraction: float = 0.5,
            seed: int = 0, description: str = "") -> "Baseline":
        """Fit on healthy traces of one model: medians and scales from one part, the alarm
        thresholds from the other (``calibration_fraction`` of them, at least 20)."""
        traces = list(traces)
        if len(traces) < 40:
            raise ValueError(f"a baseline needs at least 40 healthy traces (20 to fit, 20 to calibrate), got {len(traces)}")
        prints = {t.meta.get("model_fingerprint") for t in traces}
        if len(prints) > 1:
            raise ValueError(f"the traces come from {len(prints)} different models (fingerprints {sorted(map(str, prints))}); "
                             "fit one baseline per model")
        shapes = {(t.n_layers, t.n_heads) for t in traces}
        if len(shapes) > 1:
            raise ValueError(f"the traces have different shapes {sorted(shapes)}; fit one baseline per model")
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(traces))
        n_cal = max(20, int(round(len(traces) * calibration_fraction)))
        cal, fit_part = [traces[i] for i in order[:n_cal]], [traces[i] for i in order[n_cal:]]
        cells = [trace_cells(t) for t in fit_part]
        center, scale = {}, {}
        for name in cells[0]:
            stack = np.stack([c[name] for c in cells])
            with np.errstate(invalid="ignore"), _quiet():
                med = np.nanmedian(stack, axis=0)
                mad = np.nanmedian(np.abs(stack - med), axis=0) * 1.4826
                lo, hi = np.nanquantile(stack, [TAIL_QUANTILE, 1 - TAIL_QUANTILE], axis=0)
            # the larger of the MAD and the spread of the tails: a cell whose normal runs have a
            # heavy tail (the basin of short prompts) gets a scale that says so
            tails = (hi - lo) / (2 * _NORMAL_QUANTILE)
            center[name] = med
            scale[name] = np.maximum(np.maximum(np.nan_to_num(mad, nan=0.0), np.nan_to_num(tails, nan=0.0)),
                                     SCALE_FLOORS[name])
        first = traces[0]
        base = cls(fingerprint=str(first.meta.get("model_fingerprint", "")), model_name=str(first.meta.get("model_name", "")),
                   n_traces=len(traces), center=center, scale=scale, thresholds={}, shapes=next(iter(shapes)),
                   n_calibration=len(cal), description=description)
        scores = np.sort([base._score(trace_cells(t))[1] for t in cal])
        for a in alphas:
            k = math.ceil((len(scores) + 1) * (1 - float(a)))
            base.thresholds[float(a)] = float(scores[k - 1]) if k <= len(scores) else float("inf")
        steps = {m: np.concatenate([getattr(t.timeline, m).astype(np.float64) for t in traces]) for m in STEP_QUANTILE_METRICS}
        base.step_quantiles = {m: np.nanquantile(v, np.linspace(0, 1, N_QUANTILES)) for m, v in steps.items() if v.size}
        return base

    # -------------------------------------------------------------------- comparing
    def _score(self, cells: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], float]:
        """Robust z-scores (value - median) / scale per cell (1-element arrays for run
        statistics), and the run's statistic S, their largest magnitude."""
        z = {}
        for name, value in cells.items():
            if name not in self.center:
                continue
            c, s = self.center[name], self.scale[name]
            if np.shape(value) != np.shape(c):
                raise ValueError(f"{name}: trace shape {np.shape(value)} vs baseline {np.shape(c)}")
            with np.errstate(invalid="ignore"):
                z[name] = np.atleast_1d((np.asarray(value, dtype=np.float64) - c) / s).reshape(np.shape(c) or (1,))
        worst = 0.0
        for zz in z.values():
            finite = np.abs(zz[np.isfinite(zz)])
            if finite.size:
                worst = max(worst, float(finite.max()))
        return z, worst

    def threshold(self, alpha: float = DEFAULT_ALPHA) -> float:
        if alpha not in self.thresholds:
            raise ValueError(f"this baseline is calibrated for alpha in {sorted(self.thresholds)}, not {alpha}")
        return self.thresholds[alpha]

    def check(self, trace: "Trace") -> None:
        """Raise ValueError unless ``trace`` comes from the model this baseline was fitted for."""
        fp = trace.meta.get("model_fingerprint")
        if self.fingerprint and fp and fp != self.fingerprint:
            raise ValueError(
                f"this baseline was fitted for {self.model_name!r} (fingerprint {self.fingerprint}); the trace comes from "
                f"{trace.meta.get('model_name')!r} (fingerprint {fp}). Fit a baseline for this model: "
                "corevital.fit_baseline(model, tokenizer)"
            )
        if (trace.n_layers, trace.n_heads) != tuple(self.shapes):
            raise ValueError(f"the trace has {trace.n_layers} layers x {trace.n_heads} heads, the baseline "
                             f"{self.shapes[0]} x {self.shapes[1]}")

    def deviation(self, trace: "Trace", alpha: float = DEFAULT_ALPHA) -> Deviation:
        """The trace's z-scores against this baseline and whether it alarms at ``alpha``."""
        self.check(trace)
        cells = trace_cells(trace)
        z, score = self._score(cells)
        return Deviation(z=z, values=cells, score=score, threshold=self.threshold(alpha), alpha=alpha)

    def step_percentile(self, metric: str, value: float) -> float:
        """Share of this model's steps (in the fitting traces) with ``metric`` below ``value``, 0..1."""
        q = self.step_quantiles.get(metric)
        if q is None or not np.isfinite(value):
            return float("nan")
        return float(np.interp(value, q, np.linspace(0, 1, len(q)), left=0.0, right=1.0))

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict[str, Any]:
        def arr(a: np.ndarray) -> Any:
            return np.asarray(a, dtype=np.float64).round(6).tolist()

        return {
            "corevital_baseline": BASELINE_VERSION, "fingerprint": self.fingerprint, "model_name": self.model_name,
            "n_traces": self.n_traces, "n_calibration": self.n_calibration, "shapes": list(self.shapes),
            "description": self.description,
            "thresholds": {str(a): t for a, t in self.thresholds.items()},
            "center": {k: arr(v) for k, v in self.center.items()}, "scale": {k: arr(v) for k, v in self.scale.items()},
            "step_quantiles": {k: arr(v) for k, v in self.step_quantiles.items()},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Baseline":
        version = d.get("corevital_baseline")
        if version != BASELINE_VERSION:
            raise ValueError(f"not a corevital baseline of version {BASELINE_VERSION} (found {version!r}); refit it")

        def arr(v: Any) -> np.ndarray:
            return np.array(v, dtype=np.float64)

        return cls(fingerprint=d["fingerprint"], model_name=d["model_name"], n_traces=int(d["n_traces"]),
                   center={k: arr(v) for k, v in d["center"].items()}, scale={k: arr(v) for k, v in d["scale"].items()},
                   thresholds={float(a): float(t) for a, t in d["thresholds"].items()},
                   step_quantiles={k: arr(v) for k, v in d.get("step_quantiles", {}).items()},
                   shapes=tuple(d["shapes"]), n_calibration=int(d.get("n_calibration", 0)),
                   description=d.get("description", ""))

    def save(self, path: str | PathLike[str]) -> None:
        """Write as JSON, atomically."""
        from ..trace.storage import write_text_atomic

        write_text_atomic(Path(path), json.dumps(self.to_dict()))

    @classmethod
    def load(cls, path: str | PathLike[str]) -> "Baseline":
        try:
            data = json.loads(Path(path).read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not a baseline JSON file ({err})") from err
        return cls.from_dict(data)


class _quiet:
    """Silence numpy's all-NaN slice warnings (blocks without attention are NaN by design)."""

    def __enter__(self) -> None:
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc: Any) -> None:
        self._ctx.__exit__(*exc)
