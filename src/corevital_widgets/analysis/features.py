"""Named scalar features of one Trace, for risk models and dataset tables (numpy only).

Every feature is defined once, here. Units: entropy and surprisal in bits, probabilities in
[0, 1], ratios and fractions dimensionless. A feature whose inputs are absent (no prompt
telemetry, fewer than 4 generated steps for repetition, no logit lens) is NaN, never 0.

Shapes: T generated steps, L layers, H heads, P prompt tokens.

| name | definition | units |
|---|---|---|
| n_steps | T, generated tokens | count |
| n_prompt | P, prompt tokens | count |
| entropy_mean | mean over steps of ``timeline.entropy`` | bits |
| entropy_max | max over steps of ``timeline.entropy`` | bits |
| high_entropy_fraction | fraction of steps with entropy > ``thresholds.high_entropy_bits`` (4) | fraction |
| margin_mean | mean over steps of ``timeline.top_k_margin`` (p(1) − p(2)) | probability |
| margin_min | min over steps of ``timeline.top_k_margin`` | probability |
| max_prob_mean | mean over steps of ``timeline.max_prob`` | probability |
| max_prob_min | min over steps of ``timeline.max_prob`` | probability |
| surprisal_mean | mean over steps of ``timeline.surprisal`` (−log2 p(chosen)) | bits |
| surprisal_max | max over steps of ``timeline.surprisal`` | bits |
| sequence_log2_likelihood | −Σ over steps of ``timeline.surprisal`` = log2 p(answer \\| prompt) | bits (≤ 0) |
| collapsed_head_rate | Σ ``attention.collapsed_head_count`` / (T·L·H) | fraction |
| attention_entropy_spread | mean over steps and layers of ``attention.entropy_max − attention.entropy_min`` | bits |
| attention_entropy_mean | mean over steps and layers of ``attention.entropy_mean`` | bits |
| hidden_norm_growth | mean over steps of ‖h‖ of layer L−2 over ‖h‖ of layer 0 (the last layer before the final norm over the first layer; NaN when L < 2) | ratio |
| mid_norm_ratio_max | max over steps of (max ‖h‖ over the middle third of layers) / (mean ‖h‖ over the early third), the quantity the mid-layer flag tests against 8 (NaN when L < 3) | ratio |
| repetition_similarity_max | max over steps of ``timeline.repetition_similarity`` (NaN when T ≤ 3) | cosine |
| prompt_surprisal_mean | mean of ``prompt.surprisal`` (NaN without prompt telemetry) | bits |
| layer_transformation_mean | mean over layers and prompt tokens of ``prompt.layer_transformation`` (1 − cos) | dimensionless |
| layer_transformation_max | max over layers of the per-layer mean over prompt tokens of ``prompt.layer_transformation`` | dimensionless |
| basin_mean | mean over layers and heads of ``prompt.basin`` | ratio |
| basin_min | min over layers and heads of ``prompt.basin`` | ratio |
| basin_low_fraction | fraction of (layer, head) with basin < ``thresholds.basin_ignores_middle`` (0.3) | fraction |
| sink_mean | mean over layers and heads of ``prompt.sink`` | probability |
| lens_entropy_mean | mean over steps and layers of ``layers.lens_entropy`` (logit lens; only when recorded) | bits |
| lens_entropy_mid_mean | mean over steps of the middle third of layers of ``layers.lens_entropy`` | bits |
| lens_entropy_drop | mean over steps of (lens entropy at layer L//2 − lens entropy at the last layer) | bits |
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from ..trace.trace import Trace

#: Every feature name :func:`trace_features` returns, in order (lens features only when recorded).
FEATURE_NAMES: tuple[str, ...] = (
    "n_steps", "n_prompt",
    "entropy_mean", "entropy_max", "high_entropy_fraction",
    "margin_mean", "margin_min", "max_prob_mean", "max_prob_min",
    "surprisal_mean", "surprisal_max", "sequence_log2_likelihood",
    "collapsed_head_rate", "attention_entropy_spread", "attention_entropy_mean",
    "hidden_norm_growth", "mid_norm_ratio_max", "repetition_similarity_max",
    "prompt_surprisal_mean", "layer_transformation_mean", "layer_transformation_max",
    "basin_mean", "basin_min", "basin_low_fraction", "sink_mean",
)
LENS_FEATURE_NAMES: tuple[str, ...] = ("lens_entropy_mean", "lens_entropy_mid_mean", "lens_entropy_drop")

_NAN = float("nan")


def _stat(values: np.ndarray, how: str) -> float:
    """mean/max/min/sum of the finite-or-not values as float64; NaN when empty.

    ``nanmax``/``nanmean`` are used so that a NaN entry that only means "undefined here"
    (repetition similarity of the first 3 steps) is skipped; all-NaN gives NaN.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0 or np.isnan(v).all():
        return _NAN
    return float({"mean": np.nanmean, "max": np.nanmax, "min": np.nanmin, "sum": np.nansum}[how](v))


def _lens_entropy(trace: "Trace") -> np.ndarray | None:
    lens = getattr(trace.layers, "lens_entropy", None)
    if lens is None:
        return None
    lens = np.asarray(lens, dtype=np.float64)
    if lens.ndim != 2 or lens.size == 0:
        return None
    return lens


def trace_features(trace: "Trace") -> dict[str, float]:
    """The named scalar features of one trace (see the module table for definitions and units).

    Returns a dict name -> float in :data:`FEATURE_NAMES` order, plus
    :data:`LENS_FEATURE_NAMES` when the trace recorded ``layers.lens_entropy``.
    """
    tl, lay, att, pr = trace.timeline, trace.layers, trace.attention, trace.prompt
    th = trace.thresholds
    n_steps, n_layers, n_heads = trace.n_steps, trace.n_layers, trace.n_heads
    ent = tl.entropy.astype(np.float64)
    surprisal = tl.surprisal.astype(np.float64)
    norms = lay.l2_norm.astype(np.float64)

    f: dict[str, float] = {
        "n_steps": float(n_steps),
        "n_prompt": float(trace.n_prompt),
        "entropy_mean": _stat(ent, "mean"),
        "entropy_max": _stat(ent, "max"),
        "high_entropy_fraction": float((ent > th.high_entropy_bits).mean()) if n_steps else _NAN,
        "margin_mean": _stat(tl.top_k_margin, "mean"),
        "margin_min": _stat(tl.top_k_margin, "min"),
        "max_prob_mean": _stat(tl.max_prob, "mean"),
        "max_prob_min": _stat(tl.max_prob, "min"),
        "surprisal_mean": _stat(surprisal, "mean"),
        "surprisal_max": _stat(surprisal, "max"),
        "sequence_log2_likelihood": -float(surprisal.sum()) if n_steps else _NAN,
    }
    denom = n_steps * len(trace.attention_layers) * n_heads  # hybrid stacks: only blocks with attention
    f["collapsed_head_rate"] = float(att.collapsed_head_count.astype(np.int64).sum() / denom) if denom else _NAN
    f["attention_entropy_spread"] = _stat(att.entropy_max.astype(np.float64) - att.entropy_min.astype(np.float64), "mean")
    f["attention_entropy_mean"] = _stat(att.entropy_mean, "mean")

    if n_steps and norms.ndim == 2 and norms.shape[1] >= 2:
        with np.errstate(divide="ignore", invalid="ignore"):
            f["hidden_norm_growth"] = _stat(norms[:, -2] / norms[:, 0], "mean")
    else:
        f["hidden_norm_growth"] = _NAN
    early, mid = slice(0, n_layers // 3), slice(n_layers // 3, (2 * n_layers) // 3)
    if n_steps and n_layers >= 3:
        with np.errstate(divide="ignore", invalid="ignore"):
            f["mid_norm_ratio_max"] = _stat(norms[:, mid].max(axis=1) / norms[:, early].mean(axis=1), "max")
    else:
        f["mid_norm_ratio_max"] = _NAN
    f["repetition_similarity_max"] = _stat(tl.repetition_similarity, "max")

    f["prompt_surprisal_mean"] = _stat(pr.surprisal, "mean")
    lt = np.asarray(pr.layer_transformation, dtype=np.float64)
    f["layer_transformation_mean"] = _stat(lt, "mean")
    f["layer_transformation_max"] = _stat(lt.mean(axis=1), "max") if lt.ndim == 2 and lt.size else _NAN
    basin = np.asarray(pr.basin, dtype=np.float64)
    f["basin_mean"] = _stat(basin, "mean")
    f["basin_min"] = _stat(basin, "min")
    f["basin_low_fraction"] = float((basin < th.basin_ignores_middle).mean()) if basin.size else _NAN
    f["sink_mean"] = _stat(pr.sink, "mean")

    lens = _lens_entropy(trace)
    if lens is not None:
        n_lens_layers = lens.shape[1]
        lmid = slice(n_lens_layers // 3, max((2 * n_lens_layers) // 3, n_lens_layers // 3 + 1))
        f["lens_entropy_mean"] = _stat(lens, "mean")
        f["lens_entropy_mid_mean"] = _stat(lens[:, lmid], "mean")
        f["lens_entropy_drop"] = _stat(lens[:, n_lens_layers // 2] - lens[:, -1], "mean")
    return f
