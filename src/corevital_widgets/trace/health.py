"""Health flags, computed from a Trace's arrays (numpy only). Thresholds live here, once.

Rules (shared/METRICS.md): NaN/Inf anywhere in hidden states, attention or logits; any
collapsed head at any step; steps with entropy above 4 bits; a repetition loop (final-layer
hidden state of the newest token with cosine > 0.9995 to each of the previous 3 steps — or, the
token rule a reader can see, a span of generated tokens repeated 3 times back to back covering
at least 12 tokens); a
mid-layer anomaly (NaN/Inf in the middle third of layers, or a middle-layer L2 norm above
8x the mean L2 norm of the early third of the same step).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from .groups import Attention, Layers, Timeline


@dataclass(frozen=True)
class Thresholds:
    """Every threshold of the metric set. Override with ``Thresholds(high_entropy_bits=5.0)``."""

    collapsed_entropy_bits: float = 0.1  #: a head with entropy below this (bits) is collapsed
    focused_concentration: float = 0.9  #: a head whose largest weight exceeds this is focused
    high_entropy_bits: float = 4.0  #: a step with entropy above this (bits) is high-entropy
    repetition_cosine: float = 0.9995  #: cosine above which two final-layer states repeat
    repetition_window: int = 3  #: previous steps that must all repeat
    repetition_copies: int = 3  #: token rule: a span of generated tokens repeated this many times back to back
    repetition_min_tokens: int = 12  #: token rule: ... covering at least this many tokens (no "!!!")
    mid_layer_norm_ratio: float = 8.0  #: middle-layer norm over early-third mean norm
    basin_ignores_middle: float = 0.3  #: basin score below which a head ignores the middle


DEFAULT_THRESHOLDS = Thresholds()

FLAG_NAMES = (
    "nan_detected",
    "inf_detected",
    "attention_collapse_detected",
    "high_entropy_steps",
    "repetition_loop_detected",
    "mid_layer_anomaly_detected",
)
#: Flags that mean the numbers themselves went wrong (red verdict).
NUMERIC_FLAGS = ("nan_detected", "inf_detected", "mid_layer_anomaly_detected")


@dataclass(frozen=True)
class FiredAt:
    """Where a flag first fired: generation step and layer (None where no layer applies)."""

    step: int
    layer: int | None = None


@dataclass(frozen=True)
class Health:
    """The health verdict of one run.

    verdict: "red" when a numeric flag fired (NaN/Inf, mid-layer anomaly) or a repetition loop,
    "yellow" when attention collapsed or any step had high entropy, else "green".
    first_fired: flag name -> FiredAt, only for flags that fired.
    """

    nan_detected: bool = False
    inf_detected: bool = False
    attention_collapse_detected: bool = False
    high_entropy_steps: int = 0
    repetition_loop_detected: bool = False
    mid_layer_anomaly_detected: bool = False
    first_fired: dict[str, FiredAt] = field(default_factory=dict)
    #: the token rule's repeated span (first step, period in tokens, copies), None when it did not fire
    repetition_span: tuple[int, int, int] | None = None

    @property
    def verdict(self) -> Literal["green", "yellow", "red"]:
        if any(getattr(self, f) for f in NUMERIC_FLAGS) or self.repetition_loop_detected:
            return "red"
        if self.attention_collapse_detected or self.high_entropy_steps > 0:
            return "yellow"
        return "green"

    @property
    def fired(self) -> list[str]:
        """Names of the flags that fired, in FLAG_NAMES order."""
        return [name for name in FLAG_NAMES if getattr(self, name)]

    def to_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("first_fired", "repetition_span")}
        out["repetition_span"] = None if self.repetition_span is None else list(self.repetition_span)
        out["first_fired"] = {k: {kk: vv for kk, vv in asdict(v).items() if vv is not None} for k, v in self.first_fired.items()}
        out["verdict"] = self.verdict
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "Health":
        first = {k: FiredAt(int(v["step"]), None if v.get("layer") is None else int(v["layer"])) for k, v in d.get("first_fired", {}).items()}
        return cls(
            nan_detected=bool(d["nan_detected"]),
            inf_detected=bool(d["inf_detected"]),
            attention_collapse_detected=bool(d["attention_collapse_detected"]),
            high_entropy_steps=int(d["high_entropy_steps"]),
            repetition_loop_detected=bool(d["repetition_loop_detected"]),
            mid_layer_anomaly_detected=bool(d["mid_layer_anomaly_detected"]),
            first_fired=first,
            repetition_span=None if d.get("repetition_span") is None else tuple(int(x) for x in d["repetition_span"]),
        )


def _first_step_layer(mask: np.ndarray) -> FiredAt | None:
    """First (step, layer) where a [T, L] mask is true, step-major."""
    hits = np.argwhere(mask)
    return FiredAt(int(hits[0, 0]), int(hits[0, 1])) if len(hits) else None


def _first_step(mask: np.ndarray) -> FiredAt | None:
    hits = np.flatnonzero(mask)
    return FiredAt(int(hits[0])) if len(hits) else None


def _earliest(*candidates: FiredAt | None) -> FiredAt | None:
    """The earliest step; at equal steps a located (layer) hit wins over the logits, which
    only show the consequence."""
    found = [c for c in candidates if c is not None]
    return min(found, key=lambda c: (c.step, float("inf") if c.layer is None else c.layer)) if found else None


def thirds(n_layers: int) -> tuple[slice, slice]:
    """(early third, middle third) of n_layers as slices: [0, L//3) and [L//3, 2L//3)."""
    return slice(0, n_layers // 3), slice(n_layers // 3, (2 * n_layers) // 3)


def mid_layer_anomaly_mask(layers: "Layers", attention: "Attention", t: Thresholds = DEFAULT_THRESHOLDS,
                           prompt_len: int | None = None) -> np.ndarray:
    """[T, L] true where a middle-third layer is anomalous at that step (per-step baseline).

    The norm rule skips a step whose position is the sequence's first token (step 0 of a
    one-token prompt): that position carries the model's attention-sink "massive activations"
    by design (SmolLM2: a 1-token prompt fired it on every run); NaN/Inf still count there."""
    n_steps, n_layers = layers.l2_norm.shape
    early, mid = thirds(n_layers)
    mask = np.zeros((n_steps, n_layers), dtype=bool)
    nonfinite = layers.has_nan | layers.has_inf | attention.has_nan | attention.has_inf
    mask[:, mid] = nonfinite[:, mid]
    if early.stop > 0:
        with np.errstate(invalid="ignore", over="ignore"):
            baseline = layers.l2_norm[:, early].astype(np.float64).mean(axis=1, keepdims=True)
            high = layers.l2_norm[:, mid] > t.mid_layer_norm_ratio * baseline
        if prompt_len == 1 and n_steps:
            high[0] = False
        mask[:, mid] |= high
    return mask


def repeated_span(ids: np.ndarray, copies: int = 3, min_tokens: int = 12) -> tuple[int, int, int] | None:
    """The first span of ``ids`` that repeats at least ``copies`` times back to back and covers at
    least ``min_tokens`` tokens: (start, period, copies seen) — earliest start, then shortest
    period. Vectorised per period (a loop over periods, never over tokens)."""
    ids = np.asarray(ids)
    best: tuple[int, int, int] | None = None
    for period in range(1, len(ids) // copies + 1):
        n_copies = max(copies, -(-min_tokens // period))
        need = (n_copies - 1) * period  # ids[i] == ids[i + period] for `need` positions in a row
        eq = ids[period:] == ids[:-period]
        if eq.size < need:
            continue
        idx = np.arange(eq.size)
        run = idx - np.maximum.accumulate(np.where(eq, -1, idx))  # Trues in a row ending at each index
        hits = np.flatnonzero(run >= need)
        if not hits.size:
            continue
        start = int(hits[0]) - need + 1
        if best is not None and start >= best[0]:
            continue
        breaks = np.flatnonzero(~eq[start:])
        length = int(breaks[0]) if breaks.size else eq.size - start
        best = (start, period, length // period + 1)
    return best


def compute_health(timeline: "Timeline", layers: "Layers", attention: "Attention", t: Thresholds = DEFAULT_THRESHOLDS,
                   generated_ids: np.ndarray | None = None, prompt_len: int | None = None) -> Health:
    """Evaluate every flag on the trace arrays (and the generated token ids, for the token
    repetition rule) and record where each first fired."""
    first: dict[str, FiredAt] = {}

    nan_at = _earliest(_first_step_layer(layers.has_nan | attention.has_nan), _first_step(timeline.logits_has_nan))
    inf_at = _earliest(_first_step_layer(layers.has_inf | attention.has_inf), _first_step(timeline.logits_has_inf))
    collapse_at = _first_step_layer(attention.collapsed_head_count > 0)
    high = timeline.entropy > t.high_entropy_bits
    high_at = _first_step(high)
    with np.errstate(invalid="ignore"):
        loop_at = _first_step(timeline.repetition_similarity > t.repetition_cosine)
    span = None if generated_ids is None else repeated_span(generated_ids, t.repetition_copies, t.repetition_min_tokens)
    if span is not None:  # fired where the last copy begins
        token_at = FiredAt(span[0] + (t.repetition_copies - 1) * span[1])
        loop_at = token_at if loop_at is None or token_at.step < loop_at.step else loop_at
    mid_at = _first_step_layer(mid_layer_anomaly_mask(layers, attention, t, prompt_len))

    for name, at in (
        ("nan_detected", nan_at), ("inf_detected", inf_at), ("attention_collapse_detected", collapse_at),
        ("high_entropy_steps", high_at), ("repetition_loop_detected", loop_at), ("mid_layer_anomaly_detected", mid_at),
    ):
        if at is not None:
            first[name] = at

    return Health(
        nan_detected=nan_at is not None,
        inf_detected=inf_at is not None,
        attention_collapse_detected=collapse_at is not None,
        high_entropy_steps=int(high.sum()),
        repetition_loop_detected=loop_at is not None,
        mid_layer_anomaly_detected=mid_at is not None,
        first_fired=first,
        repetition_span=span,
    )
