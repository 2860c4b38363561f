"""The anywidget classes: four views of a Trace and the dashboard that composes them.

Every class is one anywidget model; the view it renders is its ``view`` trait. The dashboard is
one model too, so its four views share one ``selection`` without a round trip. Arrays travel
as binary payloads (:mod:`.payload`); the sparse prompt attention stays here and only the
answer to the current token/layer/head (``edges``) goes to the browser.
"""

from __future__ import annotations

import sys
import time
import traceback
from collections.abc import Callable
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any

import traitlets

from .base import ViewWidget
from .payload import TIMELINE_METRICS, edges_payload, trace_payload
from .static_face import face_bundle, face_svg

if TYPE_CHECKING:  # pragma: no cover
    from ..trace.trace import Trace

SELECTION_KEYS = ("step", "token", "layer", "head", "metric")
SelectCallback = Callable[[dict[str, Any]], None]


#: ``progress["phase"]`` while the prompt pass runs (then "generating", "failed").
PROMPT_PHASE = "reading the prompt"
#: ``progress["phase"]`` after a kernel interrupt (KeyboardInterrupt): no trace is coming
INTERRUPTED_PHASE = "interrupted"


class TraceWidget(ViewWidget):
    """Base of every corevital view: a Trace's payload, the shared selection, and the edges.

    ``selection`` (dict): ``step`` (generated step, 0-based), ``token`` (prompt position),
    ``layer`` / ``head`` (None = aggregated over all), ``metric`` (a timeline field such as
    ``"entropy"``). ``options`` holds view settings (heatmap source/value, its colouring ``heat_color``:
    ``"value"`` or ``"z"`` against the model's baseline, edge threshold as a
    probability, whether incoming edges are drawn). ``risk_model``: the RiskModel whose risk of a
    wrong answer the health badge shows (default: the shipped one for the trace's model, the same
    number ``trace.summary()`` prints).
    """

    view = traitlets.Unicode("dashboard").tag(sync=True)
    data = traitlets.Bytes(b"").tag(sync=True)
    edges = traitlets.Bytes(b"").tag(sync=True)
    selection = traitlets.Dict().tag(sync=True)
    options = traitlets.Dict().tag(sync=True)
    progress = traitlets.Dict().tag(sync=True)
    live_tokens = traitlets.List(traitlets.Unicode()).tag(sync=True)

    _needs_edges = False
    _trace: "Trace | None" = None

    def __init__(self, trace: "Trace | None" = None, *, tokenizer: Any = None, risk_model: Any = None,
                 **kwargs: Any) -> None:
        kwargs.setdefault("selection", {"step": None, "token": None, "layer": None, "head": None, "metric": "entropy"})
        kwargs.setdefault("options", {"heat_source": "step", "heat_value": "entropy", "heat_color": "value", "threshold": 0.02,
                                      "incoming": False})
        super().__init__(**kwargs)
        self._trace: Trace | None = None
        #: the RiskModel whose risk the badge shows (None: the shipped default for the trace's model)
        self.risk_model = risk_model
        self._callbacks: list[SelectCallback] = []
        self._last_live_push = 0.0
        self._pending_live: list[str] = []
        #: seconds the last sparse query took in Python (click -> edges, the kernel's share)
        self.edges_compute_s: float | None = None
        self.observe(self._handle_selection, names="selection")
        self.observe(self._handle_options, names="options")
        if trace is not None:
            self.set_trace(trace, tokenizer=tokenizer)

    def text_face(self) -> str:
        """What this view says as plain text (the trace's short summary, or the live progress)."""
        if self._trace is None:
            pr = self.progress or {}
            return f"corevital {self.view}: no trace yet ({pr.get('phase', 'waiting')} {pr.get('step', 0)}/{pr.get('total', 0)})"
        from ..analysis.summary import short_summary

        return short_summary(self._trace)

    def face_svg(self) -> str | None:
        """The static picture of this view as it is now (selection, heatmap options), as SVG text;
        None before the trace exists."""
        if self._trace is None:
            return None
        return face_svg(self._trace, self.view, self.selection, self.options, self.risk_model)

    def face_bundle(self) -> dict[str, str]:
        """The static face's output bundle (``text/html`` and ``image/svg+xml``), with how to
        share a page without a kernel."""
        note = ("Static picture of this corevital view as saved; where widgets run, the live view below replaces it. "
                if self._trace is not None else "")
        return face_bundle(self.face_svg(), self.face_id, self.text_face(),
                           note + "A page without a kernel: corevital.export_html(trace, path).")

    # ------------------------------------------------------------------ public API
    @property
    def trace(self) -> "Trace | None":
        """The Trace shown (None while generation is still running)."""
        return self._trace

    def set_trace(self, trace: "Trace", tokenizer: Any = None) -> None:
        """Show ``trace``: send its payload and select step 0 and the last prompt token.

        ``tokenizer`` decodes the top-k alternatives and logit-lens tokens for hover text."""
        self._trace = trace
        self.data = trace_payload(trace, self.view, tokenizer, self.risk_model)
        sel = dict(self.selection)
        sel.update(
            step=0 if trace.n_steps else None,
            token=trace.n_prompt - 1 if trace.n_prompt else None,
            layer=None, head=None,
        )
        self.progress = {**self.progress, "step": trace.n_steps, "total": max(trace.n_steps, int(self.progress.get("total", 0) or 0)), "done": True}
        if sel == self.selection:
            self._update_edges(sel)
        else:
            self.selection = sel
        self._update_faces(text_too=True)

    def select(self, **changes: Any) -> dict[str, Any]:
        """Change the selection from Python, e.g. ``select(token=5, layer=3, head=None)``."""
        unknown = set(changes) - set(SELECTION_KEYS)
        if unknown:
            raise ValueError(f"unknown selection keys {sorted(unknown)}; expected {list(SELECTION_KEYS)}")
        self.selection = {**self.selection, **changes}
        return dict(self.selection)

    def on_select(self, callback: SelectCallback) -> SelectCallback:
        """Call ``callback(selection_dict)`` after every selection change (also usable as a decorator)."""
        self._callbacks.append(callback)
        return callback

    # --------------------------------------------------------------- live progress
    def start_live(self, total: int, phase: str = "generating") -> None:
        """Reset to an empty view that fills as tokens arrive (``total``: max new tokens)."""
        self._trace = None
        self.data = b""
        self.edges = b""
        self.live_tokens = []
        self.progress = {"step": 0, "total": int(total), "done": False, "phase": phase}

    def prompt_progress(self, done: int, total: int) -> None:
        """The prompt pass's progress: ``done`` of ``total`` blocks have their prompt telemetry
        (what ``analyze(on_prompt_layer=...)`` reports; the long phase of a long prompt)."""
        self.progress = {**self.progress, "phase": PROMPT_PHASE, "layer": int(done), "layers": int(total)}

    def push_token(self, step: int, text: str, *, min_interval_s: float = 0.05) -> None:
        """Append one generated token piece; sends at most one update per ``min_interval_s``."""
        if self.progress.get("phase") == PROMPT_PHASE:  # the first token: the prompt pass is over
            self.progress = {**self.progress, "phase": "generating"}
        self._pending_live.append(text)
        if time.perf_counter() - self._last_live_push >= min_interval_s:
            self.flush_live(step)

    def flush_live(self, step: int | None = None) -> None:
        """Send the pieces buffered by :meth:`push_token`."""
        pending, self._pending_live = self._pending_live, []
        if pending:
            self.live_tokens = [*self.live_tokens, *pending]
        n = len(self.live_tokens) if step is None else step + 1
        self.progress = {**self.progress, "step": n}
        self._last_live_push = time.perf_counter()

    # ------------------------------------------------------------------ internals
    @traitlets.validate("selection")
    def _valid_selection(self, proposal: Any) -> dict[str, Any]:
        sel = dict(proposal["value"])
        out: dict[str, Any] = {}
        limits = {}
        if self._trace is not None:
            limits = {"step": self._trace.n_steps, "token": self._trace.n_prompt,
                      "layer": self._trace.n_layers, "head": self._trace.n_heads}
        for key in ("step", "token", "layer", "head"):
            v = sel.get(key)
            if isinstance(v, float) and v.is_integer():
                v = int(v)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
                raise traitlets.TraitError(f"selection[{key!r}] must be an int or None, got {v!r}")
            if v is not None and key in limits and not 0 <= v < limits[key]:
                raise traitlets.TraitError(f"selection[{key!r}]={v} is out of range 0..{limits[key] - 1}")
            out[key] = v
        metric = sel.get("metric", "entropy")
        if metric not in TIMELINE_METRICS:
            raise traitlets.TraitError(f"selection['metric']={metric!r}; expected one of {list(TIMELINE_METRICS)}")
        out["metric"] = metric
        return out

    def _handle_selection(self, change: dict[str, Any]) -> None:
        old, new = change["old"] or {}, change["new"]
        if any(old.get(k) != new.get(k) for k in ("token", "layer", "head")) or not self.edges:
            self._update_edges(new)
        if self._trace is not None:
            self._update_faces()
        if not self._callbacks:
            return
        with self._output_to_cell():
            for cb in list(self._callbacks):
                try:
                    cb(dict(new))
                except Exception:  # a user callback must not break the widget's message handling
                    traceback.print_exc(file=sys.stderr)

    def _handle_options(self, change: dict[str, Any]) -> None:
        old, new = change["old"] or {}, change["new"]
        if bool(new.get("incoming")) and not bool(old.get("incoming")):
            self._update_edges(self.selection)  # attended_by is computed only when shown
        if self._trace is not None and (old.get("heat_source"), old.get("heat_value")) != (new.get("heat_source"), new.get("heat_value")):
            self._update_faces()

    def _update_edges(self, sel: dict[str, Any]) -> None:
        if not self._needs_edges or self._trace is None or sel.get("token") is None:
            return
        if self._trace.sparse.row_counts.size == 0:
            return  # made with prompt_telemetry=False: nothing to query (the view says so)
        t0 = time.perf_counter()
        self.edges = edges_payload(self._trace, sel["token"], sel.get("layer"), sel.get("head"),
                                   incoming=bool(self.options.get("incoming")))
        self.edges_compute_s = time.perf_counter() - t0

    def save_html(self, path: str | PathLike[str], title: str | None = None) -> Path:
        """Write a standalone HTML page showing this view as it is now (no kernel, no network)."""
        from .html_export import widget_to_html

        return widget_to_html(self, path, title=title)


class HealthBadge(TraceWidget):
    """Traffic-light verdict against the model's own normal (:func:`~corevital_widgets.assess`): its
    sentence and narrative, the blamed layers (a click selects the layer and its first blamed head),
    the health flags as facts with where each first fired (a click selects that place), and the risk
    of a wrong answer with its kind (calibrated / uncalibrated heuristic)."""

    view = traitlets.Unicode("badge").tag(sync=True)


class TokenTimeline(TraceWidget):
    """Prompt and generated tokens coloured by a metric (with legend and units), the metric's
    curve over steps, and the top-k alternatives on hover; a click selects a step or token."""

    view = traitlets.Unicode("timeline").tag(sync=True)


class HeadHeatmap(TraceWidget):
    """Layers x heads (canvas) for the selected step or the prompt: entropy (bits) or
    concentration, sink and basin for the prompt; collapsed and focused heads marked. When the
    model has a baseline, "vs normal" colours each head by its z-score against it instead (cells
    past the alarm line outlined). For a trace
    made with ``logit_lens=True`` also the logit lens, layers x steps (entropy in bits, the
    layer's top-1 token on hover)."""

    view = traitlets.Unicode("heatmap").tag(sync=True)


class AttentionGraph(TraceWidget):
    """Prompt tokens as text with the selected token's attention edges (computed in Python)."""

    view = traitlets.Unicode("graph").tag(sync=True)
    _needs_edges = True


class Dashboard(TraceWidget):
    """All four views on one model, sharing one selection. ``dashboard.selection`` is a dict;
    ``dashboard.on_select(cb)`` registers a callback."""

    view = traitlets.Unicode("dashboard").tag(sync=True)
    _needs_edges = True

    def _display_now(self) -> None:
        """Display the view now (before generation), so it can fill live; the cell's return value
        then does not display it again."""
        from IPython import get_ipython

        self._display_with_face()
        self._shown_in_cell = getattr(get_ipython(), "execution_count", None)


def link_selection(*widgets: TraceWidget) -> list[Any]:
    """Share one selection between standalone views, in the browser (works without a kernel too)."""
    import ipywidgets

    if len(widgets) < 2:
        return []
    first = widgets[0]
    return [ipywidgets.jslink((first, "selection"), (w, "selection")) for w in widgets[1:]]
