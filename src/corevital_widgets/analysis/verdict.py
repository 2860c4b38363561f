"""The verdict of one run, its layer blame and a plain-words narrative (numpy only).

- **red** — the numbers went wrong: NaN/Inf, a mid-layer anomaly, a repetition loop (the
  seed's absolute rules, unchanged in meaning);
- **yellow** — unusual for this model: the run is outside the model's normal
  (:class:`~.baseline.Baseline`) at the calibrated false-alarm rate alpha;
- **green** — nothing unusual.

Without a baseline for the model there is no "unusual for this model" test: the verdict is green
or red, says so plainly, and the seed's collapse and high-entropy rules are reported as facts
(heads collapsed from the first step on are structural — sink heads — not faults).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from .baseline import DEFAULT_ALPHA, DESCRIPTIONS, HEAD_STATS, LAYER_STATS, Baseline, Deviation

if TYPE_CHECKING:  # pragma: no cover
    from ..trace.trace import Trace

Color = Literal["green", "yellow", "red"]

_RED_WORDS = {
    "nan_detected": "NaN values", "inf_detected": "infinite values", "mid_layer_anomaly_detected": "a mid-layer anomaly",
    "repetition_loop_detected": "a repetition loop",
}


@dataclass
class Reason:
    """One statistic of one layer outside the model's normal."""

    statistic: str
    heads: list[int]
    z: float
    value: float
    normal: float
    scale: float
    first_step: int | None = None

    def text(self) -> str:
        desc, unit = DESCRIPTIONS.get(self.statistic, (self.statistic, ""))
        unit = f" {unit}" if unit else ""
        heads = "" if not self.heads else (f" head {self.heads[0]}" if len(self.heads) == 1
                                            else " heads " + ", ".join(map(str, self.heads[:6])) + ("…" if len(self.heads) > 6 else ""))
        step = "" if self.first_step is None else f", from step {self.first_step}"
        return (f"{heads.strip()}{': ' if heads else ''}{desc} {self.value:.2f}{unit} vs normal {self.normal:.2f} "
                f"± {self.scale:.2f} (z {self.z:+.1f}{step})")


@dataclass
class LayerBlame:
    """Why a layer is unusual: its reasons, and a severity (largest |z| over the threshold; > 1
    means past the alarm line)."""

    layer: int | None  # None: the run as a whole (timeline statistics)
    severity: float
    reasons: list[Reason]

    def text(self) -> str:
        where = "the run" if self.layer is None else f"layer {self.layer}"
        return f"{where} (severity {self.severity:.1f}): " + "; ".join(r.text() for r in self.reasons[:3])


@dataclass
class Verdict:
    """What the badge, ``summary()`` and the exported page say about one run."""

    color: Color
    sentence: str  # one sentence: what is unusual and where (or that nothing is)
    narrative: str  # one to three sentences built from the numbers
    reasons: list[str] = field(default_factory=list)  # the red flags or the yellow cells, in words
    blame: list[LayerBlame] = field(default_factory=list)
    baseline: str | None = None  # which normal was used, or None
    alpha: float | None = None
    score: float | None = None  # max |z| over cells
    threshold: float | None = None

    @property
    def calibration(self) -> str:
        """What the colour is judged against and how often a healthy run alarms, in words."""
        if self.baseline is None or self.alpha is None:
            return ("No baseline for this model: nothing is judged unusual for it; only numeric faults "
                    "(NaN/Inf, a mid-layer anomaly, a repetition loop) turn it red.")
        return (f"Judged against the {self.baseline}: a healthy run of this model is called unusual with "
                f"probability {self.alpha * 100:g}%.")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["calibration"] = self.calibration
        d["blame"] = [{"layer": b.layer, "severity": b.severity, "text": b.text(),
                       "reasons": [{**asdict(r), "text": r.text()} for r in b.reasons]} for b in self.blame]
        return d


def _piece(trace: "Trace", step: int) -> str:
    tok = trace.generated_tokens[step] if 0 <= step < len(trace.generated_tokens) else "?"
    return repr(tok.replace("\n", "\\n"))


def _red_reasons(trace: "Trace") -> list[str]:
    h = trace.health
    out = []
    for flag, words in _RED_WORDS.items():
        if getattr(h, flag):
            at = h.first_fired.get(flag)
            where = "" if at is None else f" at step {at.step}" + (f", layer {at.layer}" if at.layer is not None else "")
            rule = ""
            if flag == "repetition_loop_detected":
                rule = _repetition_rule(trace)
            out.append(f"{words}{where}{rule}")
    return out


def _repetition_rule(trace: "Trace") -> str:
    span = getattr(trace.health, "repetition_span", None)
    if span:
        start, period, copies = span
        text = "".join(trace.generated_tokens[start:start + period]).replace("\n", "\\n")
        return f" (token rule: {text!r} {copies} times)"
    return " (hidden-state rule: final-layer states repeat, cosine > {:.4f})".format(trace.thresholds.repetition_cosine)


def _first_step(trace: "Trace", stat: str, layer: int, heads: list[int], base: Baseline, threshold: float) -> int | None:
    """First step where a step statistic of these heads is past the threshold on its own."""
    if stat not in ("step_entropy", "step_concentration") or not trace.n_steps:
        return None
    series = (trace.heads.entropy if stat == "step_entropy" else trace.heads.concentration)[:, layer, heads].astype(np.float64)
    with np.errstate(invalid="ignore"):
        z = (series - base.center[stat][layer, heads]) / base.scale[stat][layer, heads]
        hits = np.argwhere(np.abs(z) > threshold)
    return int(hits[0, 0]) if len(hits) else None


def layer_blame(trace: "Trace", base: Baseline, dev: Deviation) -> list[LayerBlame]:
    """Per layer, the statistics past the alarm threshold (which heads, how far, first step),
    most severe layer first."""
    by_layer: dict[int | None, dict[str, list[tuple[tuple[int, ...], float]]]] = {}
    for stat, idx, z in dev.cells_over():
        layer = idx[0] if stat in HEAD_STATS or stat in LAYER_STATS else None
        by_layer.setdefault(layer, {}).setdefault(stat, []).append((idx, z))
    out = []
    for layer, stats in by_layer.items():
        reasons = []
        for stat, hits in stats.items():
            hits.sort(key=lambda h: -abs(h[1]))
            idx, z = hits[0]
            heads = [h[0][1] for h in hits] if stat in HEAD_STATS else []
            pick = idx if np.ndim(base.center[stat]) else ()
            value, normal, scale = (float(np.asarray(a)[pick]) for a in (dev.values[stat], base.center[stat], base.scale[stat]))
            first = _first_step(trace, stat, layer, heads, base, dev.threshold) if layer is not None else None
            reasons.append((abs(z) / dev.threshold, Reason(stat, heads, z, value, normal, scale, first)))
        reasons.sort(key=lambda r: -r[0])
        out.append(LayerBlame(layer, reasons[0][0], [r for _, r in reasons]))
    return sorted(out, key=lambda b: -b.severity)


def _uncertainty_sentence(trace: "Trace", base: Baseline | None) -> str:
    if not trace.n_steps:
        return ""
    ent = trace.timeline.entropy.astype(np.float64)
    if np.isnan(ent).all():
        return ""
    t = int(np.nanargmax(ent))
    text = f"Least certain at step {t} ({_piece(trace, t)}): {ent[t]:.1f} bits"
    if base is not None:
        share = base.step_percentile("entropy", float(ent[t]))
        if np.isfinite(share):
            text += f", above {100 * share:.0f}% of this model's steps"
    return text + "."


def _structural_facts(trace: "Trace") -> str:
    """The seed's collapse / high-entropy rules, stated as facts."""
    facts = []
    if trace.n_steps and trace.heads.entropy.size:
        collapsed = trace.heads.entropy.astype(np.float64) < trace.thresholds.collapsed_entropy_bits
        always = np.argwhere(collapsed.all(0))
        later = np.argwhere(collapsed.any(0) & ~collapsed[0])
        if len(always):
            facts.append(f"{len(always)} heads collapsed on every step (structural, e.g. layer {always[0][0]} head {always[0][1]})")
        if len(later):
            facts.append(f"{len(later)} heads collapsed after the first step")
    high = int(trace.health.high_entropy_steps)
    if high:
        facts.append(f"{high} steps above {trace.thresholds.high_entropy_bits:g} bits")
    return "; ".join(facts)


def assess(trace: "Trace", baseline: Baseline | None | str = "auto", alpha: float = DEFAULT_ALPHA) -> Verdict:
    """The verdict of ``trace``: red from the absolute rules, yellow when unusual for the model
    (``baseline``: a Baseline, "auto" for the shipped or registered one matching the trace's
    fingerprint, None for none), else green."""
    if isinstance(baseline, str):
        if baseline != "auto":
            raise ValueError(f"baseline must be a Baseline, 'auto' or None, not {baseline!r}")
        from .registry import find_baseline

        baseline = find_baseline(trace)
    name = str(trace.meta.get("model_name") or "this model").rsplit("/", 1)[-1]
    uncertainty = _uncertainty_sentence(trace, baseline)
    red = _red_reasons(trace)
    dev = baseline.deviation(trace, alpha) if baseline is not None else None
    blame = layer_blame(trace, baseline, dev) if (baseline is not None and dev is not None and dev.unusual) else []
    base_words = None if baseline is None else f"baseline of {baseline.n_traces} runs of {name}"
    common = dict(baseline=base_words, alpha=alpha if baseline is not None else None,
                  score=None if dev is None else dev.score, threshold=None if dev is None else dev.threshold, blame=blame)
    if red:
        numeric = [r for r in red if not r.startswith("a repetition loop")]
        loop = [r for r in red if r.startswith("a repetition loop")]
        parts = ([f"Numbers went wrong: {'; '.join(numeric)}"] if numeric else []) + \
                ([f"Stuck in {loop[0]}"] if loop else [])
        sentence = ". ".join(parts) + "."
        return Verdict("red", sentence, " ".join(s for s in (sentence, uncertainty) if s), reasons=red, **common)
    if baseline is None:
        facts = _structural_facts(trace)
        sentence = f"No numeric fault. No baseline for {name}, so nothing is judged unusual for it (fit one: corevital.fit_baseline)."
        narrative = " ".join(s for s in (sentence, uncertainty, (f"Facts: {facts}." if facts else "")) if s)
        return Verdict("green", sentence, narrative, **common)
    if dev is not None and dev.unusual and blame:
        top = blame[0]
        where = "the run" if top.layer is None else f"layer {top.layer}"
        sentence = f"Unusual for {name} at {where}: {top.reasons[0].text()}."
        reasons = [b.text() for b in blame]
        narrative = " ".join(s for s in (sentence, f"({len(blame)} place{'s' if len(blame) > 1 else ''} outside the normal "
                                                    f"of {baseline.n_traces} runs at a {100 * alpha:g}% false-alarm rate.)",
                                         uncertainty) if s)
        return Verdict("yellow", sentence, narrative, reasons=reasons, **common)
    sentence = f"Normal for {name} ({base_words})."
    return Verdict("green", sentence, " ".join(s for s in (sentence, uncertainty) if s), **common)
