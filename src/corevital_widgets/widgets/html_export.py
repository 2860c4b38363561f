"""Standalone HTML export: one self-contained page, no kernel, no network.

The page inlines the front-end bundle and the widget's synced state (binary payloads as
base64) and renders the same views through a minimal in-page model with anywidget's
front-end API (get / set / on / off / save_changes). Selections made on the page update the
views that need no kernel; attention edges are those of the selection at export time.
"""

from __future__ import annotations

import base64
import html
import json
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .base import ViewWidget, _esm_source
from .components import Dashboard, TraceWidget

if TYPE_CHECKING:  # pragma: no cover
    from ..trace.trace import Trace

_STATE_KEYS = ("view", "data", "edges", "selection", "options", "progress", "live_tokens")
#: the dataset view's table (rows, sort and filter state, the row shown)
_DATASET_KEYS = ("rows", "columns", "row", "loaded_row", "table", "status")

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>body {{ margin: 16px; font-family: system-ui, sans-serif; }} h1 {{ font-size: 16px; }}
.corevital-verdict p {{ margin: 4px 0; }} .corevital-verdict .corevital-narrative {{ color: #555; }}</style>
</head><body>
<h1>{title}</h1>
<div id="corevital-root">{verdict}</div>
<script id="corevital-state" type="application/json">{state}</script>
<script id="corevital-esm" type="text/plain">{esm}</script>
<script type="module">
const raw = JSON.parse(document.getElementById("corevital-state").textContent);
const state = {{}};
for (const [k, v] of Object.entries(raw)) {{
  if (v && typeof v === "object" && v.__b64__ !== undefined) {{
    const bin = atob(v.__b64__); const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    state[k] = new DataView(bytes.buffer);
  }} else state[k] = v;
}}
const listeners = new Map();
const model = {{
  get: (k) => state[k],
  set: (k, v) => {{ state[k] = v; for (const f of listeners.get("change:" + k) ?? []) f(); }},
  on: (e, f) => {{ if (!listeners.has(e)) listeners.set(e, []); listeners.get(e).push(f); }},
  off: (e, f) => {{ if (listeners.has(e)) listeners.set(e, listeners.get(e).filter((g) => g !== f)); }},
  save_changes: () => {{}}, send: () => {{}}, widget_manager: {{}},
}};
const src = document.getElementById("corevital-esm").textContent;
const url = URL.createObjectURL(new Blob([src], {{ type: "text/javascript" }}));
const mod = await import(url);
const el = document.getElementById("corevital-root");
const said = document.getElementById("corevital-verdict"); // the text-only verdict, said again by the badge
(mod.default ?? mod).render({{ model, el }});
if (said) said.remove();
document.body.dataset.rendered = "1";
</script>
</body></html>
"""


def _state(widget: "ViewWidget") -> dict[str, Any]:
    out: dict[str, Any] = {"_static": True}
    for key in (k for k in (*_STATE_KEYS, *_DATASET_KEYS) if widget.has_trait(k)):
        v = getattr(widget, key)
        out[key] = {"__b64__": base64.b64encode(bytes(v)).decode("ascii")} if isinstance(v, (bytes, bytearray, memoryview)) else v
    return out


def _verdict_block(widget: "ViewWidget") -> str:
    """The verdict's sentence and narrative as plain page text: what the page says before (or
    without) its script; the rendered badge then says the same and this block goes."""
    trace = getattr(widget, "trace", None)
    if trace is None:
        return ""
    from ..analysis.verdict import assess

    v = assess(trace)
    rest = v.narrative[len(v.sentence):].strip() if v.narrative.startswith(v.sentence) else v.narrative
    return (f'<div id="corevital-verdict" class="corevital-verdict" data-verdict="{html.escape(v.color)}"><p>'
            f'<b>{html.escape(v.color)}</b> · <b class="corevital-sentence">{html.escape(v.sentence)}</b>'
            + (f' <span class="corevital-narrative">{html.escape(rest)}</span>' if rest else "")
            + f'</p><p class="corevital-calibration">{html.escape(v.calibration)}</p></div>')


def _script_safe(text: str) -> str:
    return text.replace("</", "<\\/")


def widget_to_html(widget: "ViewWidget", path: str | PathLike[str], title: str | None = None) -> Path:
    """Write ``widget`` (any corevital view) as a standalone page at ``path``; returns the path."""
    trace = getattr(widget, "trace", None)
    if title is None:
        name = trace.meta.get("model_name", "model") if trace is not None else "model"
        title = f"corevital · {name}"
    page = _PAGE.format(
        title=html.escape(title),
        verdict=_verdict_block(widget),
        state=_script_safe(json.dumps(_state(widget), separators=(",", ":"))),
        esm=_script_safe(_esm_source()),
    )
    out = Path(path)
    out.write_text(page, encoding="utf-8")
    return out


def export_html(trace: "Trace", path: str | PathLike[str], *, tokenizer: Any = None, title: str | None = None,
                selection: dict[str, Any] | None = None) -> Path:
    """Write the dashboard of ``trace`` as a standalone HTML page (no kernel, no network needed).

    ``selection`` (e.g. ``{"token": 5, "layer": 3}``) picks what the page shows first; its
    attention edges are computed now and embedded. Returns the path written.
    """
    dash = Dashboard(trace, tokenizer=tokenizer)
    if selection:
        dash.select(**selection)
    return widget_to_html(dash, path, title=title)
