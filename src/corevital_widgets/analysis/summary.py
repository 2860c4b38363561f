"""``Trace.summary()``: a readable plain-text report of one trace."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .verdict import assess

if TYPE_CHECKING:  # pragma: no cover
    from ..trace.trace import Trace

_VERDICT_WORDS = {"green": "GREEN (nothing unusual)", "yellow": "YELLOW (unusual for this model)",
                  "red": "RED (numbers went wrong)"}


def _piece(text: str, width: int = 14) -> str:
    shown = text.replace("\n", "\\n").replace("\t", "\\t")
    return shown if len(shown) <= width else shown[: width - 1] + "…"


def _fmt_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


def _risk_line(trace: "Trace") -> str:
    from .risk import trace_risk

    risk = trace_risk(trace)
    if risk is None:
        return ""
    return f"risk: {risk.description}" if risk.shown is None else f"risk: {risk.value:.2f} ({risk.description})"


def trace_summary(trace: "Trace", max_steps: int = 64) -> str:
    """Tokens, per-step entropy/surprisal/margin, health verdict, where each flag fired,
    prompt attention highlights, sizes and timings."""
    m = trace.meta
    tl = trace.timeline
    lines = [
        f"corevital trace — {m.get('model_name', '?')} ({m.get('architecture', '?')}, {trace.n_layers} layers x "
        f"{trace.n_heads} heads, {m.get('dtype', '?')} on {m.get('device', '?')})",
        f"prompt: {trace.n_prompt} tokens   generated: {trace.n_steps} tokens",
        f"text: {''.join(trace.generated_tokens)!r}",
        "",
        f"{'step':>4}  {'token':<14} {'entropy':>8} {'surprisal':>9} {'margin':>7} {'max p':>6}   (bits, bits, prob, prob)",
    ]
    n = min(trace.n_steps, max_steps)
    for t in range(n):
        lines.append(
            f"{t:>4}  {_piece(trace.generated_tokens[t]):<14} {tl.entropy[t]:>8.3f} {tl.surprisal[t]:>9.3f} "
            f"{tl.top_k_margin[t]:>7.3f} {tl.max_prob[t]:>6.3f}"
        )
    if trace.n_steps > n:
        lines.append(f"  … {trace.n_steps - n} more steps")
    if trace.n_steps:
        lines.append(
            f"mean entropy {np.nanmean(tl.entropy):.3f} bits, mean surprisal {np.nanmean(tl.surprisal):.3f} bits, "
            f"perplexity of the sequence {2 ** np.nanmean(tl.surprisal):.2f}"
        )
    h = trace.health
    v = assess(trace)
    lines += ["", f"verdict: {_VERDICT_WORDS[v.color]}", f"  {v.narrative}", f"  ({v.calibration})"]
    for blame in v.blame[:5]:
        lines.append(f"  blame: {blame.text()}")
    risk_line = _risk_line(trace)
    if risk_line:
        lines.append(risk_line)
    lines.append("health facts (the absolute rules):")
    for name in ("nan_detected", "inf_detected", "attention_collapse_detected", "high_entropy_steps",
                 "repetition_loop_detected", "mid_layer_anomaly_detected"):
        value = getattr(h, name)
        at = h.first_fired.get(name)
        where = ""
        if at is not None:
            where = f"  first at step {at.step}" + (f", layer {at.layer}" if at.layer is not None else "")
            if at.step < trace.n_steps:
                where += f" ({_piece(trace.generated_tokens[at.step])!r})"
        shown = str(value) if not isinstance(value, bool) else ("yes" if value else "no")
        lines.append(f"  {name:<28} {shown:<4}{where}")
    if trace.prompt.head_entropy.size:
        basin = trace.prompt.basin
        ignore = int((basin < trace.thresholds.basin_ignores_middle).sum())
        lines += [
            "",
            f"prompt: {trace.sparse.nnz:,} attention entries above {trace.sparse.threshold} "
            f"({trace.sparse.nnz / max(1, trace.sparse.row_counts.size):.1f} keys per query row); "
            f"{ignore} of {basin.size} heads ignore the middle of the prompt (basin < {trace.thresholds.basin_ignores_middle})",
        ]
        if trace.prompt.surprisal.size and not np.isnan(trace.prompt.surprisal).all():
            i = int(np.nanargmax(trace.prompt.surprisal))
            lines.append(f"most surprising prompt token: {_piece(trace.prompt_tokens[i + 1], 24)!r} "
                         f"({trace.prompt.surprisal[i]:.2f} bits)")
    size = len(trace.to_bytes())
    lines += ["", f"trace size: {_fmt_bytes(size)} on disk"]
    timings = m.get("timings")
    if timings:
        lines.append("timings: " + ", ".join(f"{k.removesuffix('_s')} {v:.2f} s" for k, v in timings.items()))
    return "\n".join(lines)


def short_summary(trace: "Trace", answer_chars: int = 160) -> str:
    """A few lines for a viewer that cannot run the widget (a terminal, GitHub's or nbviewer's
    notebook preview): model, verdict sentence, sizes, the answer (shortened), the risk, and how
    to see the interactive view."""
    v = assess(trace)
    answer = "".join(trace.generated_tokens).replace("\n", " ")
    if len(answer) > answer_chars:
        answer = answer[: answer_chars - 1] + "…"
    lines = [
        f"corevital — {trace.meta.get('model_name', '?')}: {v.color.upper()} — {v.sentence}",
        f"prompt {trace.n_prompt} tokens, generated {trace.n_steps}: {answer!r}",
    ]
    from .risk import trace_risk

    risk = trace_risk(trace)
    if risk is not None:
        lines.append(f"risk of a wrong answer: {risk.value:.2f} ({risk.label})" if risk.shown is not None
                     else f"risk of a wrong answer: not shown ({risk.label}: outside the range it was calibrated on)")
    lines.append("(interactive view: run the cell with a kernel; a page without one: corevital.export_html(trace, path))")
    return "\n".join(lines)
