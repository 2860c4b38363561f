"""The static face of a view: what a reader without running widgets sees.

A saved notebook is read in many places that cannot run a widget: GitHub's and VS Code's
previews, nbviewer, ``jupyter nbconvert --to html`` opened without the widget CDN, a teammate's
JupyterLab reopening it without saved widget state. Each corevital view is therefore displayed as
two outputs: this face (``text/html`` with an inline SVG, and the same SVG as ``image/svg+xml``)
and then the live widget. The widget's front end hides its face as soon as it renders
(``face_id``), so where widgets run only the live view shows; everywhere else the face does.

The face is drawn here, in Python, without a browser: plain SVG text (badge, the answer's tokens
coloured by the selected metric, the metric's curve, the layer x head heatmap as a small
embedded PNG, the selected prompt token's strongest edges). Colours come from the same scale file
as the browser's (``data/scales.json``), so a colour means the same number in both. A dashboard
face of a 500-token prompt with 64 generated tokens is about 15 KB.
"""

from __future__ import annotations

import base64
import json
import re
import struct
import textwrap
import zlib
from functools import lru_cache
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from ..trace.trace import Trace

SCALES_PATH = Path(__file__).resolve().parent.parent / "data" / "scales.json"

WIDTH = 760  # px
_CHAR = 6.6  # px per character of the 11 px monospace font
_MAX_CHIPS = 240  # generated tokens drawn as chips; the rest are counted
_MAX_EDGES = 8  # strongest edges of the selected token listed
_LIGHT = {"green": "#2e9d4f", "yellow": "#e0a800", "red": "#d62728"}
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


@lru_cache(maxsize=1)
def scales() -> dict[str, Any]:
    """The colour ramps and fixed metric domains shared with the browser (``data/scales.json``)."""
    return json.loads(SCALES_PATH.read_text(encoding="utf-8"))


def metric_def(key: str, heat: bool = False) -> dict[str, Any]:
    """The scale entry of a timeline metric (``heat=False``) or a heatmap value."""
    s = scales()
    if heat:
        return s["heat"].get(key, s["heat"]["entropy"])
    return next((m for m in s["metrics"] if m["key"] == key), s["metrics"][0])


def normalize(values: np.ndarray, d: dict[str, Any]) -> np.ndarray:
    """Position of each value in the metric's fixed domain, clipped to [0, 1]; NaN stays NaN."""
    v = np.asarray(values, dtype=np.float64)
    lo, hi = d["domain"]
    with np.errstate(invalid="ignore", divide="ignore"):
        if d.get("log"):
            t = (np.log(np.maximum(v, lo)) - np.log(lo)) / (np.log(hi) - np.log(lo))
        else:
            t = (v - lo) / (hi - lo)
    return np.clip(t, 0.0, 1.0)


def ramp(t: np.ndarray, name: str) -> np.ndarray:
    """RGB (uint8, [..., 3]) along a named ramp at positions ``t`` in [0, 1] (NaN: grey #888)."""
    stops = np.asarray(scales()["ramps"][name], dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    x = np.nan_to_num(np.clip(t, 0, 1)) * (len(stops) - 1)
    i = np.minimum(len(stops) - 2, np.floor(x).astype(int))
    f = (x - i)[..., None]
    rgb = np.round(stops[i] + (stops[i + 1] - stops[i]) * f)
    rgb[np.isnan(t)] = 136
    return rgb.astype(np.uint8)


def _png(rgb: np.ndarray) -> bytes:
    """A truecolour PNG of an [h, w, 3] uint8 image (each row filter type 0)."""
    h, w, _ = rgb.shape
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rgb.reshape(h, w * 3)], axis=1).tobytes()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def _t(s: Any) -> str:
    """Text safe inside SVG/HTML (escaped, no XML-illegal control characters)."""
    return escape(_CONTROL.sub("", str(s)), quote=True)


def _fmt(v: float) -> str:
    if v is None or not np.isfinite(v):
        return "–"
    return f"{float(v):.3g}"


def _shown(piece: str) -> str:
    return "∅" if piece == "" else piece.replace("\n", "↵").replace("\t", "⇥")


def _clip(s: str, n: int) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"


def _wrap(s: str, width: int, max_lines: int) -> list[str]:
    """``s`` in lines of at most ``width`` characters, the last one shortened with "…" if needed."""
    lines = textwrap.wrap(s or "", width)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = _clip(lines[-1] + " …", width)
    return lines


class _Svg:
    """An SVG being laid out top to bottom (``y``: the next free row, px)."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.y = 0.0

    def text(self, x: float, y: float, s: str, size: int = 12, weight: str = "normal", fill: str = "#222",
             mono: bool = False) -> None:
        fam = ' font-family="ui-monospace,Menlo,Consolas,monospace"' if mono else ""
        bold = ' font-weight="bold"' if weight != "normal" else ""
        self.parts.append(f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}"{bold}{fam} fill="{fill}">{_t(s)}</text>')

    def finish(self) -> str:
        h = int(np.ceil(self.y + 6))
        return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{h}" viewBox="0 0 {WIDTH} {h}" '
                f'font-family="system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif">'
                f'<rect width="{WIDTH}" height="{h}" fill="#fff"/>' + "".join(self.parts) + "</svg>")


def _badge(svg: _Svg, trace: "Trace", risk_model: Any) -> None:
    from ..analysis.risk import trace_risk
    from ..analysis.verdict import assess

    v = assess(trace)
    y = svg.y + 22
    svg.parts.append(f'<circle cx="16" cy="{y - 5:.1f}" r="9" fill="{_LIGHT.get(v.color, "#888")}"/>')
    for line in _wrap(f"{v.color.upper()} — {v.sentence}", 95, 2):
        svg.text(32, y, line, 13, "bold")
        y += 17
    narrative = v.narrative[len(v.sentence):].strip() if v.narrative.startswith(v.sentence) else v.narrative
    for line in _wrap(narrative, 120, 3):
        svg.text(32, y, line, 11, fill="#444")
        y += 15
    risk = trace_risk(trace, risk_model)
    if risk is not None:
        svg.text(32, y, ("risk of a wrong answer: " + (f"{risk.value:.2f} ({risk.label})" if risk.shown is not None
                                                       else f"not shown ({risk.label})")), 11, fill="#444")
        y += 15
    svg.text(32, y, _clip(f"{trace.meta.get('model_name', '?')} · prompt {trace.n_prompt} tokens · "
                          f"generated {trace.n_steps} tokens", 125), 11, fill="#666")
    svg.y = y + 8


def _timeline(svg: _Svg, trace: "Trace", metric: str, step: int | None) -> None:
    d = metric_def(metric)
    values = np.asarray(getattr(trace.timeline, d["key"]), dtype=np.float64)
    svg.y += 14
    svg.text(8, svg.y, f"generated tokens coloured by {d['label']} ({d['unit']}, {d['domain'][0]:g}–{d['domain'][1]:g}"
             f"{' log' if d.get('log') else ''}, fixed scale; warmer = less sure)", 11, "bold")
    pieces = [_shown(p) for p in trace.generated_tokens[:_MAX_CHIPS]]
    t = normalize(values[: len(pieces)], d)
    bad = t if d["higherIsWorse"] else 1 - t
    colours = ramp(bad, "alarm")
    x, y = 8.0, svg.y + 6
    for i, (piece, c, b) in enumerate(zip(pieces, colours, bad)):
        w = max(1, len(piece)) * _CHAR + 4
        if x + w > WIDTH - 8:
            x, y = 8.0, y + 17
        alpha = 0.0 if np.isnan(b) else 0.35 + 0.6 * b
        outline = ' stroke="#000" stroke-width="1.5"' if step == i else ""
        svg.parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="15" rx="2" '
                         f'fill="rgb({c[0]},{c[1]},{c[2]})" fill-opacity="{alpha:.2f}"{outline}/>')
        svg.text(x + 2, y + 11.5, piece, 11, mono=True)
        x += w + 1
    if trace.n_steps > len(pieces):
        svg.text(x + 4, y + 11.5, f"… +{trace.n_steps - len(pieces)} more", 11, fill="#666")
    svg.y = y + 22
    finite = values[np.isfinite(values)]
    if values.size >= 2 and finite.size:
        # the metric's curve on its fixed domain (y from the top of the band), at most one point per px
        h, x0, x1 = 44.0, 40.0, WIDTH - 10.0
        idx = np.unique(np.linspace(0, values.size - 1, min(values.size, int(x1 - x0))).astype(int))
        ty = svg.y + h - h * normalize(values[idx], d)
        tx = x0 + (x1 - x0) * idx / max(1, values.size - 1)
        ok = np.isfinite(ty)
        pts = " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(tx[ok], ty[ok]))
        svg.parts.append(f'<rect x="{x0}" y="{svg.y:.1f}" width="{x1 - x0:.1f}" height="{h}" fill="#f6f6f6"/>'
                         f'<polyline points="{pts}" fill="none" stroke="#1976d2" stroke-width="1.2"/>')
        svg.text(4, svg.y + 9, f"{d['domain'][1]:g}", 10, fill="#666")
        svg.text(4, svg.y + h, f"{d['domain'][0]:g}", 10, fill="#666")
        svg.y += h + 6


def heat_matrix(trace: "Trace", source: str, value: str, step: int | None) -> tuple[np.ndarray, str, str]:
    """The matrix the heatmap shows for ``source`` ("step" / "prompt" / "lens") and ``value``:
    ([rows, cols] float, scale key, caption). Layers are rows; heads (or, for the lens, steps) columns."""
    if source == "lens" and trace.layers.lens_entropy.size:
        return np.asarray(trace.layers.lens_entropy, np.float64).T, "lens_entropy", "logit-lens entropy, layers × steps"
    if source == "prompt" and trace.prompt.head_entropy.size:
        pr = trace.prompt
        m = {"entropy": pr.head_entropy, "concentration": pr.head_concentration, "sink": pr.sink, "basin": pr.basin}
        key = value if value in m else "entropy"
        return np.asarray(m[key], np.float64), key, f"prompt attention {key}, mean over the prompt's rows"
    key = value if value in ("entropy", "concentration") else "entropy"
    s = 0 if step is None else int(step)
    arr = getattr(trace.heads, key)
    if arr.ndim != 3 or arr.shape[0] == 0:
        return np.full((trace.n_layers, trace.n_heads), np.nan), key, "no generated step"
    return np.asarray(arr[min(s, arr.shape[0] - 1)], np.float64), key, f"attention {key} at step {s}"


def _heatmap(svg: _Svg, trace: "Trace", options: dict[str, Any], sel: dict[str, Any]) -> None:
    m, key, caption = heat_matrix(trace, options.get("heat_source", "step"), options.get("heat_value", "entropy"),
                                  sel.get("step"))
    d = metric_def(key, heat=True)
    rows, cols = m.shape
    cw = max(2.0, min(24.0, 420.0 / max(cols, 1)))
    ch = max(2.0, min(12.0, 300.0 / max(rows, 1)))
    svg.y += 14
    svg.text(8, svg.y, f"{caption} ({d['unit']}, {d['domain'][0]:g}–{d['domain'][1]:g}{' log' if d.get('log') else ''}); "
             f"{rows} layers (rows, 0 at top) × {cols} {'steps' if key == 'lens_entropy' else 'heads'}", 11, "bold")
    x0, y0 = 40.0, svg.y + 6
    png = base64.b64encode(_png(ramp(normalize(m, d), "heat"))).decode()
    svg.parts.append(f'<image class="cv-face-heatmap" x="{x0}" y="{y0:.1f}" width="{cw * cols:.1f}" height="{ch * rows:.1f}" '
                     f'preserveAspectRatio="none" style="image-rendering:pixelated" data-cells="{rows * cols}" '
                     f'href="data:image/png;base64,{png}"/>')
    for r in range(0, rows, max(1, rows // 6)):
        svg.text(x0 - 22, y0 + ch * r + min(ch, 10), str(r), 9, fill="#666")
    layer, head = sel.get("layer"), sel.get("head")
    if layer is not None and 0 <= layer < rows:
        hx, hw = (x0 + cw * head, cw) if head is not None and key != "lens_entropy" and 0 <= head < cols else (x0, cw * cols)
        svg.parts.append(f'<rect x="{hx:.1f}" y="{y0 + ch * layer:.1f}" width="{hw:.1f}" height="{ch:.1f}" '
                         'fill="none" stroke="#d62728" stroke-width="1.5"/>')
    # legend: the ramp at 6 stops with the domain's ends
    lx = x0 + cw * cols + 24
    stops = ramp(np.linspace(0, 1, 6), "heat")
    for i, c in enumerate(stops):
        svg.parts.append(f'<rect x="{lx + 14 * i:.1f}" y="{y0:.1f}" width="14" height="10" fill="rgb({c[0]},{c[1]},{c[2]})"/>')
    svg.text(lx, y0 + 22, f"{d['domain'][0]:g}", 10, fill="#666")
    svg.text(lx + 70, y0 + 22, f"{d['domain'][1]:g} {d['unit']}", 10, fill="#666")
    svg.text(lx, y0 + 36, "grey: no attention in that layer", 10, fill="#666")
    svg.y = y0 + max(ch * rows, 40) + 4


def _edges(svg: _Svg, trace: "Trace", sel: dict[str, Any]) -> None:
    token = sel.get("token")
    svg.y += 14
    if trace.sparse.row_counts.size == 0:
        svg.text(8, svg.y, "no prompt attention in this trace (made with prompt_telemetry=False)", 11)
        svg.y += 6
        return
    if token is None or not 0 <= token < trace.n_prompt:
        svg.text(8, svg.y, "no prompt token selected", 11)
        svg.y += 6
        return
    layer, head = sel.get("layer"), sel.get("head")
    where = f"layer {'all (mean)' if layer is None else layer}, head {'all (mean)' if head is None else head}"
    tok = _shown(trace.prompt_tokens[token])
    if layer is not None and layer not in trace.prompt_attention_layers:
        svg.text(8, svg.y, f"prompt token {token} '{_clip(tok, 30)}' · layer {layer} has no softmax attention", 11, "bold")
        svg.y += 6
        return
    keys, w = trace.attends_to(token, layer, head)
    order = np.argsort(-w, kind="stable")[:_MAX_EDGES]
    svg.text(8, svg.y, f"prompt token {token} '{_clip(tok, 30)}' attends to ({where}; strongest {len(order)} of "
             f"{len(keys)} above {trace.sparse.threshold:g})", 11, "bold")
    y = svg.y + 6
    for k, wt in zip(keys[order], w[order]):
        svg.parts.append(f'<rect x="8" y="{y:.1f}" width="{max(1.0, 200 * float(wt)):.1f}" height="12" fill="#1976d2" '
                         f'fill-opacity="0.7"/>')
        svg.text(214, y + 10, f"→ token {int(k)} '{_clip(_shown(trace.prompt_tokens[int(k)]), 40)}' {float(wt):.2f}", 11,
                 mono=True)
        y += 15
    svg.y = y


#: which parts each view's face draws (the dashboard and the dataset view's trace: all)
FACE_PARTS = {
    "badge": ("badge",), "timeline": ("timeline",), "heatmap": ("heatmap",), "graph": ("edges",),
    "dashboard": ("badge", "timeline", "heatmap", "edges"),
}


def face_svg(trace: "Trace", view: str = "dashboard", selection: dict[str, Any] | None = None,
             options: dict[str, Any] | None = None, risk_model: Any = None) -> str:
    """The static SVG of ``view`` of ``trace`` at ``selection`` (step, token, layer, head, metric)
    with the view ``options`` (heatmap source and value): a self-contained image, no scripts."""
    sel = {"step": 0, "token": trace.n_prompt - 1 if trace.n_prompt else None, "layer": None, "head": None,
           "metric": "entropy", **(selection or {})}
    opts = options or {}
    svg = _Svg()
    parts = FACE_PARTS.get(view, FACE_PARTS["dashboard"])
    if "badge" in parts:
        _badge(svg, trace, risk_model)
    if "timeline" in parts:
        _timeline(svg, trace, sel.get("metric") or "entropy", sel.get("step"))
    if "heatmap" in parts:
        _heatmap(svg, trace, opts, sel)
    if "edges" in parts:
        _edges(svg, trace, sel)
    return svg.finish()


def face_bundle(svg: str | None, face_id: str, text: str, note: str, extra_html: str = "") -> dict[str, str]:
    """The face's output bundle: ``text/html`` (the SVG inline in a box the live widget hides,
    with ``note`` under it) and ``image/svg+xml`` for viewers that prefer an image. Without an SVG
    (generation still running, or a table view) the box holds ``text`` and ``extra_html``."""
    cls = f"cv-face cv-face-{face_id}"
    body = svg if svg is not None else f"<pre>{_t(text)}</pre>{extra_html}"
    html = (f'<div class="{cls}" style="max-width:{WIDTH}px">{body}'
            f'<div style="font-size:11px;color:#666">{_t(note)}</div></div>')
    out = {"text/html": html}
    if svg is not None:
        out["image/svg+xml"] = svg
    return out
