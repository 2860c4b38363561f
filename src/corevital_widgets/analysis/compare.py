"""Two traces side by side: what changed inside (:func:`compare`).

Cases: one prompt on two models (base vs fine-tuned, bf16 vs 4-bit), two prompts on one model,
greedy vs sampled. What is compared is the baseline's cell set (:func:`~.baseline.trace_cells`,
the one home of those statistics): per layer and head the step and prompt attention entropy,
concentration, sink and log-basin; per layer the mean log hidden-state norm and layer
transformation; the run's mean entropy, surprisal and margin. Plus, per layer, the *increment*
of the log hidden-state norm (layer l's norm over layer l-1's), which moves only at the layer
whose own computation changed, where the norm itself stays shifted in every later layer.

Differences in different units are ranked on one scale, ``|b - a| / scale``: the scale is the
model's baseline spread of that cell when both traces come from a model with a baseline (the
same robust spread the verdict uses), else the statistic's robust spread over the cells of both
traces (1.4826 x MAD over heads and layers, floored like the baseline's). The ranked table says
which scale it used.

Prompts are aligned token-wise (``difflib`` on the token strings): with the same prompt, every
token pairs with itself; otherwise changed, inserted and deleted tokens are marked on each
side. Generated steps are aligned by index; ``diverged_at`` is the first step whose tokens differ.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .baseline import DESCRIPTIONS, HEAD_STATS, LAYER_STATS, RUN_STATS, SCALE_FLOORS, trace_cells
from .registry import find_baseline

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from ..trace.trace import Trace

#: the extra per-layer statistic of a comparison (see the module docstring)
NORM_STEP = "hidden_log_norm_step"
_DESCRIPTIONS = {**DESCRIPTIONS, NORM_STEP: ("log hidden-state norm increment over the layer before", "")}
_FLOORS = {**SCALE_FLOORS, NORM_STEP: SCALE_FLOORS["hidden_log_norm"]}
#: rows kept in the ranked table
TOP_DIFFERENCES = 50


@dataclass(frozen=True)
class Difference:
    """One cell that differs: ``stat`` at ``layer`` / ``head`` (None for per-layer or per-run
    statistics), values ``a`` and ``b`` in the statistic's unit, and ``scaled`` = |b - a| / scale."""

    stat: str
    layer: int | None
    head: int | None
    a: float
    b: float
    scaled: float

    @property
    def delta(self) -> float:
        return self.b - self.a

    def text(self) -> str:
        """E.g. "layer 14 head 3: prompt attention entropy 2.1 → 0.3 bits (7.2 scales)"."""
        what, unit = _DESCRIPTIONS.get(self.stat, (self.stat, ""))
        where = "run" if self.layer is None else f"layer {self.layer}" + ("" if self.head is None else f" head {self.head}")
        shown_a, shown_b = _shown(self.stat, self.a), _shown(self.stat, self.b)
        return f"{where}: {what} {shown_a} → {shown_b}{' ' + unit if unit else ''} ({self.scaled:.1f} scales)"


def _shown(stat: str, v: float) -> str:
    if stat == "prompt_log_basin":  # people read the basin, not its log
        return f"basin {np.exp(v):.3g}"
    return f"{v:.3g}"


def _norm_steps(cells: dict[str, np.ndarray]) -> np.ndarray:
    n = np.asarray(cells["hidden_log_norm"], np.float64)
    return np.diff(n, prepend=np.nan) if n.size else n


@dataclass
class Comparison:
    """The result of :func:`compare`. ``differences`` is ranked, largest first."""

    a: "Trace"
    b: "Trace"
    labels: tuple[str, str]
    same_prompt: bool
    same_shape: bool
    #: per prompt token of a / b: True where the other prompt differs (changed, inserted or deleted)
    changed_a: np.ndarray
    changed_b: np.ndarray
    #: difflib opcodes over the prompt tokens: (tag, a0, a1, b0, b1)
    prompt_ops: list[tuple[str, int, int, int, int]]
    #: first generated step whose tokens differ (None: identical up to the shorter run)
    diverged_at: int | None
    cells_a: dict[str, np.ndarray]
    cells_b: dict[str, np.ndarray]
    scales: dict[str, np.ndarray]
    scale_source: str
    differences: list[Difference] = field(default_factory=list)

    def head_difference(self, stat: str) -> np.ndarray:
        """b - a of a per-head statistic, [L, H] (same architecture only)."""
        if stat not in HEAD_STATS:
            raise ValueError(f"{stat!r} is not a per-head statistic; expected one of {list(HEAD_STATS)}")
        if not self.same_shape:
            raise ValueError("the traces have different shapes: compare per-layer aggregates (layer_profiles) instead")
        return self.cells_b[stat] - self.cells_a[stat]

    def layer_profiles(self, stat: str) -> tuple[np.ndarray, np.ndarray]:
        """Per-layer values of ``stat`` for a and b (per-head statistics: mean over heads); the
        two may have different lengths (models of different depth)."""
        def prof(cells: dict[str, np.ndarray]) -> np.ndarray:
            v = _norm_steps(cells) if stat == NORM_STEP else np.asarray(cells[stat], np.float64)
            if v.ndim == 2:
                with np.errstate(invalid="ignore"):
                    cnt = np.sum(np.isfinite(v), 1)
                    return np.where(cnt > 0, np.nansum(v, 1) / np.maximum(cnt, 1), np.nan)
            return v
        return prof(self.cells_a), prof(self.cells_b)

    def to_pandas(self) -> "pd.DataFrame":
        """The ranked differences: stat, layer, head, a, b, delta (b - a), scaled, text."""
        import pandas as pd

        rows = [{"stat": d.stat, "layer": d.layer, "head": d.head, "a": d.a, "b": d.b, "delta": d.delta,
                 "scaled": d.scaled, "text": d.text()} for d in self.differences]
        return pd.DataFrame(rows, columns=["stat", "layer", "head", "a", "b", "delta", "scaled", "text"])

    def summary(self) -> str:
        """A few lines: what was compared, where the prompts and answers part, the largest differences."""
        a, b = self.labels
        lines = [f"compare {a} vs {b}: " + ("same prompt" if self.same_prompt else
                                           f"prompts differ at {int(self.changed_a.sum())} / {int(self.changed_b.sum())} tokens")
                 + ("" if self.diverged_at is None else f"; answers part at step {self.diverged_at}")
                 + ("" if self.same_shape else "; different architectures: per-layer aggregates")]
        lines += [f"  {i + 1}. {d.text()}" for i, d in enumerate(self.differences[:5])]
        lines.append(f"  (scale: {self.scale_source})")
        return "\n".join(lines)


def _align_prompts(a: "Trace", b: "Trace") -> tuple[list[tuple[str, int, int, int, int]], np.ndarray, np.ndarray]:
    ta, tb = list(map(str, a.prompt_tokens)), list(map(str, b.prompt_tokens))
    ops = difflib.SequenceMatcher(a=ta, b=tb, autojunk=False).get_opcodes()
    ca, cb = np.zeros(len(ta), bool), np.zeros(len(tb), bool)
    for tag, a0, a1, b0, b1 in ops:
        if tag != "equal":
            ca[a0:a1] = True
            cb[b0:b1] = True
    return [tuple(o) for o in ops], ca, cb


def _scales(a: "Trace", b: "Trace", ca: dict, cb: dict, same_shape: bool) -> tuple[dict[str, np.ndarray], str]:
    base = find_baseline(a)
    if base is not None and same_shape and find_baseline(b) is base:
        sc = {k: np.asarray(v, np.float64) for k, v in base.scale.items()}
        sc[NORM_STEP] = np.full_like(sc["hidden_log_norm"], _FLOORS[NORM_STEP]) if "hidden_log_norm" in sc else np.array(0.02)
        return sc, f"this model's baseline spread per cell ({base.model_name}, {base.n_traces} runs)"
    sc = {}
    for name in (*HEAD_STATS, *LAYER_STATS, NORM_STEP, *RUN_STATS):
        va = _norm_steps(ca) if name == NORM_STEP else np.asarray(ca[name], np.float64)
        vb = _norm_steps(cb) if name == NORM_STEP else np.asarray(cb[name], np.float64)
        pooled = np.concatenate([va.ravel(), vb.ravel()])
        pooled = pooled[np.isfinite(pooled)]
        mad = 1.4826 * float(np.median(np.abs(pooled - np.median(pooled)))) if pooled.size > 2 else 0.0
        sc[name] = np.asarray(max(mad, _FLOORS[name]))
    return sc, "each statistic's robust spread over the layers and heads of both runs (no shared baseline)"


def compare(a: "Trace", b: "Trace", labels: tuple[str, str] = ("A", "B")) -> Comparison:
    """Compare two traces (see the module docstring): prompt alignment, where the answers part,
    and every compared cell's difference ranked on a common scale.

    Per-head and per-layer cells are compared only when the two have the same number of layers
    and heads (the same architecture); otherwise the per-layer profiles are still available
    (:meth:`Comparison.layer_profiles`) and only the run statistics are ranked.
    """
    from ..trace.trace import Trace

    if not isinstance(a, Trace) or not isinstance(b, Trace):
        raise TypeError(f"compare(a, b) takes two Traces, got {type(a).__name__} and {type(b).__name__}")
    ops, changed_a, changed_b = _align_prompts(a, b)
    same_prompt = not changed_a.any() and not changed_b.any()
    ga, gb = np.asarray(a.generated_ids).ravel(), np.asarray(b.generated_ids).ravel()
    n = min(ga.size, gb.size)
    differ = np.flatnonzero(ga[:n] != gb[:n])
    diverged = int(differ[0]) if differ.size else (n if ga.size != gb.size else None)
    same_shape = (a.n_layers, a.n_heads) == (b.n_layers, b.n_heads)
    ca, cb = trace_cells(a), trace_cells(b)
    scales, source = _scales(a, b, ca, cb, same_shape)

    stats: list[tuple[str, np.ndarray, np.ndarray]] = [(s, np.atleast_1d(ca[s]), np.atleast_1d(cb[s])) for s in RUN_STATS]
    if same_shape:
        stats += [(s, ca[s], cb[s]) for s in (*HEAD_STATS, *LAYER_STATS)]
        stats.append((NORM_STEP, _norm_steps(ca), _norm_steps(cb)))
    diffs: list[Difference] = []
    for name, va, vb in stats:
        va, vb = np.asarray(va, np.float64), np.asarray(vb, np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            z = np.abs(vb - va) / np.broadcast_to(np.asarray(scales[name], np.float64).reshape(np.shape(scales[name]) or ()), va.shape)
        z = np.where(np.isfinite(z), z, -1.0)
        keep = np.argsort(-z.ravel(), kind="stable")[:TOP_DIFFERENCES]
        keep = keep[z.ravel()[keep] > 0]
        for flat in keep:
            idx = np.unravel_index(flat, va.shape)
            layer = None if name in RUN_STATS else int(idx[0])
            head = int(idx[1]) if va.ndim == 2 else None
            diffs.append(Difference(name, layer, head, float(va[idx]), float(vb[idx]), float(z[idx])))
    diffs.sort(key=lambda d: -d.scaled)
    return Comparison(a=a, b=b, labels=tuple(labels), same_prompt=same_prompt, same_shape=same_shape,
                      changed_a=changed_a, changed_b=changed_b, prompt_ops=ops, diverged_at=diverged,
                      cells_a=ca, cells_b=cb, scales=scales, scale_source=source, differences=diffs[:TOP_DIFFERENCES])
