"""``corevital.explore(model, tokenizer)``: type a prompt, Run / Stop, keep a history, compare two runs.

One ipywidgets box of three corevital views: the controls (:class:`ExplorerControls`: prompt box,
chat-template toggle, generation settings, Run / Stop, the run history), the :class:`Dashboard`
that fills live while a run generates and shows a picked run, and the :class:`CompareView` that
opens when two runs are picked. Every piece of state (history, picks, settings, the typed
prompt) is a trait in the kernel, so a page reload redraws it all while the kernel lives.

A run generates in a background thread so the kernel keeps answering the page: Stop sets an
event that ends generation after the current step (``analyze(stop=...)``), and the partial
trace is kept, marked as stopped. The model is only ever used by one run at a time.
"""

from __future__ import annotations

import threading
import traceback
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any

import traitlets

from .base import ViewWidget
from .compare_view import CompareView
from .components import PROMPT_PHASE, Dashboard

if TYPE_CHECKING:  # pragma: no cover
    from ..trace.trace import Trace

DEFAULT_SETTINGS = {"max_new_tokens": 48, "do_sample": False, "temperature": 0.8, "top_p": 0.95, "seed": 0}
SNIPPET_CHARS = 60


def check_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` completed with the defaults and checked; ValueError/TypeError say what is wrong."""
    unknown = set(settings) - set(DEFAULT_SETTINGS)
    if unknown:
        raise ValueError(f"unknown settings {sorted(unknown)}; expected {sorted(DEFAULT_SETTINGS)}")
    s = {**DEFAULT_SETTINGS, **settings}
    n = s["max_new_tokens"]
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"max_new_tokens must be an int >= 1, got {n!r}")
    if not isinstance(s["do_sample"], bool):
        raise TypeError(f"do_sample must be True or False, got {s['do_sample']!r}")
    t, p = s["temperature"], s["top_p"]
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not t > 0:
        raise ValueError(f"temperature must be a number > 0, got {t!r}")
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 < p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {p!r}")
    seed = s["seed"]
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ValueError(f"seed must be an int >= 0 or None, got {seed!r}")
    return s


def settings_text(s: dict[str, Any], chat: bool) -> str:
    """E.g. "greedy, 48 tokens, chat" or "sampling T=0.8 top-p 0.95 seed 0, 48 tokens"."""
    how = (f"sampling T={s['temperature']:g} top-p {s['top_p']:g}" + (f" seed {s['seed']}" if s["seed"] is not None else "")
           if s["do_sample"] else "greedy")
    return f"{how}, {s['max_new_tokens']} tokens" + (", chat" if chat else "")


def _settings_of(trace: "Trace") -> dict[str, Any]:
    """The generation settings a trace was made with, from its recorded parameters."""
    p = trace.meta.get("params", {})
    s = {"max_new_tokens": int(p.get("max_new_tokens", trace.n_steps) or 1), "do_sample": bool(p.get("do_sample", False)),
         "seed": p.get("seed")}
    for key in ("temperature", "top_p"):
        if isinstance(p.get(key), (int, float)) and not isinstance(p.get(key), bool):
            s[key] = float(p[key])
    return s


class ExplorerControls(ViewWidget):
    """The explorer's controls and history (the front end's "explorer" view). ``runs``: one dict
    per run (id, snippet, prompt, verdict, sentence, risk, risk_label, settings_text, n_steps,
    stopped, source, label); ``picked``: the ids of the picked runs (at most two)."""

    view = traitlets.Unicode("explorer").tag(sync=True)
    prompt = traitlets.Unicode("").tag(sync=True)
    chat = traitlets.Bool(True).tag(sync=True)
    has_chat_template = traitlets.Bool(False).tag(sync=True)
    settings = traitlets.Dict().tag(sync=True)
    running = traitlets.Bool(False).tag(sync=True)
    status = traitlets.Unicode("").tag(sync=True)
    runs = traitlets.List().tag(sync=True)
    picked = traitlets.List().tag(sync=True)

    def text_face(self) -> str:
        lines = [f"corevital explorer: {len(self.runs)} run(s)"]
        lines += [f"  #{r['id']} {r['verdict'] or '-'} {r['snippet']!r} ({r['settings_text']}, {r['n_steps']} steps"
                  f"{', stopped' if r['stopped'] else ''})" for r in self.runs]
        return "\n".join(lines)


class Explorer:
    """``corevital.explore(model, tokenizer, **analyze_kwargs)``: see the module docstring.

    ``explorer.runs``: the traces, in run order; ``explorer.run(prompt, ...)`` and
    ``explorer.stop()`` do from Python what Run and Stop do; ``save(i, path)`` writes run ``i``;
    ``open(path)`` adds a saved trace file or TraceSet folder to the history.
    """

    def __init__(self, model: Any, tokenizer: Any = None, **analyze_kwargs: Any) -> None:
        import ipywidgets

        for key in ("on_step", "on_prompt_layer", "stop", "max_new_tokens", "do_sample", "seed", "temperature", "top_p"):
            if key in analyze_kwargs:
                raise TypeError(f"explore(..., {key}=...) is set by the explorer itself (generation settings are in its controls)")
        self.model = model
        self.tokenizer = tokenizer
        self.analyze_kwargs = analyze_kwargs
        has_template = bool(getattr(tokenizer, "chat_template", None))
        self.controls = ExplorerControls(settings=dict(DEFAULT_SETTINGS), has_chat_template=has_template, chat=has_template)
        self.dashboard = Dashboard()
        self.compare_view = CompareView()
        self.compare_view.layout.display = "none"
        self.box = ipywidgets.VBox([self.controls, self.dashboard, self.compare_view])
        self._traces: dict[int, Trace] = {}
        self._next_id = 1
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.controls.on_msg(self._on_message)
        self.controls.observe(self._on_picked, names="picked")

    # ------------------------------------------------------------------ display
    def _ipython_display_(self, **kwargs: Any) -> None:
        from IPython.display import display

        display(self.box)

    def __repr__(self) -> str:
        return f"<Explorer: {len(self._traces)} run(s){', running' if self.running else ''}>"

    # --------------------------------------------------------------- public API
    @property
    def runs(self) -> list["Trace"]:
        """The traces of the history, in the order they were made or opened."""
        return [self._traces[r["id"]] for r in self.controls.runs]

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def run(self, prompt: str | None = None, *, chat: bool | None = None, wait: bool = True, **settings: Any) -> int | None:
        """Start a run as the Run button does (``prompt``/``chat``/``settings`` replace the
        controls' values first); with ``wait`` block until it ends. Returns the new run's id
        (None while it still runs, or if it failed: see ``controls.status``)."""
        if prompt is not None:
            if not isinstance(prompt, str):
                raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
            self.controls.prompt = prompt
        if chat is not None:
            self.controls.chat = bool(chat)
        if settings:
            self.controls.settings = check_settings({**self.controls.settings, **settings})
        before = self._next_id
        self._start()
        if wait and self._thread is not None:
            self._thread.join()
            return before if before in self._traces else None
        return None

    def stop(self) -> None:
        """End the running generation after its current step (the partial trace is kept)."""
        self._stop.set()

    def wait(self, timeout: float | None = None) -> None:
        """Block until the running generation ends."""
        if self._thread is not None:
            self._thread.join(timeout)

    def save(self, run: int, path: str | PathLike[str]) -> Path:
        """Save run ``run`` (its id in the history) as a trace file."""
        if run not in self._traces:
            raise ValueError(f"no run #{run}; the history has {sorted(self._traces)}")
        self._traces[run].save(path)
        return Path(path)

    def open(self, path: str | PathLike[str]) -> list[int]:
        """Add a saved trace file, or every trace of a TraceSet folder, to the history; returns their ids."""
        from ..batch import TraceSet
        from ..trace.storage import load_trace

        p = Path(path)
        if not p.exists():
            raise ValueError(f"{p} does not exist: pass a trace file (.cvtrace) or a TraceSet folder")
        traces = [load_trace(p)] if p.is_file() else list(TraceSet.load(p))
        return [self._add(t, source="loaded", label=f"{p.name}" if p.is_file() else f"{p.name}[{i}]")
                for i, t in enumerate(traces)]

    # ---------------------------------------------------------------- internals
    def _on_message(self, _w: Any, content: Any, _buffers: Any) -> None:
        if not isinstance(content, dict):
            return
        if content.get("type") == "run":
            self._start()
        elif content.get("type") == "stop":
            self.stop()

    def _start(self) -> None:
        with self._lock:
            if self.running:
                self.controls.status = "a run is in progress: Stop it first"
                return
            prompt = self.controls.prompt
            if not prompt.strip():
                self.controls.status = "type a prompt first"
                return
            try:
                settings = check_settings(dict(self.controls.settings))
            except (TypeError, ValueError) as exc:
                self.controls.status = f"settings: {exc}"
                return
            self._stop.clear()
            self.controls.running = True
            self._thread = threading.Thread(target=self._run, args=(prompt, bool(self.controls.chat), settings),
                                            name="corevital-explore", daemon=True)
            self._thread.start()

    def _run(self, prompt: str, chat: bool, settings: dict[str, Any]) -> None:
        from ..engine.analyze import analyze

        c, dash = self.controls, self.dashboard
        try:
            self._show("dashboard")
            c.status = "reading the prompt…"
            text = prompt
            if chat and c.has_chat_template:
                text = self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                          add_generation_prompt=True)
            kw = dict(self.analyze_kwargs)
            kw.update(max_new_tokens=settings["max_new_tokens"], do_sample=settings["do_sample"], seed=settings["seed"])
            if settings["do_sample"]:
                kw.update(temperature=float(settings["temperature"]), top_p=float(settings["top_p"]))
            dash.start_live(settings["max_new_tokens"], phase=PROMPT_PHASE if kw.get("prompt_telemetry", True) else "generating")
            decode = getattr(self.tokenizer, "decode", None)

            def on_step(step: int, token_id: int) -> None:
                dash.push_token(step, decode([token_id]) if decode is not None else f"#{token_id}")
                c.status = f"generating {step + 1}/{settings['max_new_tokens']}"

            trace = analyze(self.model, text, self.tokenizer, on_step=on_step, on_prompt_layer=dash.prompt_progress,
                            stop=self._stop, **kw)
            trace.meta["explore"] = {"prompt": prompt, "chat": chat, "settings": settings}
            dash.flush_live()
            run_id = self._add(trace, source="run", settings=settings, chat=chat, prompt=prompt)
            stopped = trace.meta.get("stopped")
            c.status = (f"run #{run_id}: {trace.n_steps} tokens" +
                        (f" (stopped after {trace.n_steps} of {settings['max_new_tokens']})" if stopped else ""))
        except Exception as exc:  # the page must hear about it; the model is restored by analyze
            dash.flush_live()
            dash.progress = {**dash.progress, "done": True, "phase": "failed"}
            c.status = f"failed: {type(exc).__name__}: {exc}"
            traceback.print_exc()
        finally:
            c.running = False

    def _add(self, trace: "Trace", *, source: str, label: str = "", settings: dict[str, Any] | None = None,
             chat: bool = False, prompt: str | None = None) -> int:
        from ..analysis.risk import trace_risk
        from ..analysis.verdict import assess

        with self._lock:
            run_id = self._next_id
            self._next_id += 1
        self._traces[run_id] = trace
        text = prompt if prompt is not None else str(trace.meta.get("explore", {}).get("prompt") or "".join(trace.prompt_tokens))
        v = assess(trace)
        risk = trace_risk(trace)
        s = settings or trace.meta.get("explore", {}).get("settings") or _settings_of(trace)
        row = {
            "id": run_id, "label": label or f"#{run_id}", "prompt": text,
            "snippet": text if len(text) <= SNIPPET_CHARS else text[: SNIPPET_CHARS - 1] + "…",
            "verdict": v.color, "sentence": v.sentence,
            "risk": None if risk is None or risk.shown is None else float(risk.value),
            "risk_label": "" if risk is None else risk.label,
            "settings_text": settings_text(check_settings(s), chat),
            "n_steps": int(trace.n_steps), "stopped": bool(trace.meta.get("stopped")), "source": source,
        }
        self.controls.runs = [*self.controls.runs, row]
        self.controls.picked = [run_id]
        return run_id

    def _show(self, which: str) -> None:
        self.dashboard.layout.display = None if which == "dashboard" else "none"
        self.compare_view.layout.display = None if which == "compare" else "none"

    def _on_picked(self, change: dict[str, Any]) -> None:
        ids = [i for i in change["new"] if i in self._traces][-2:]
        if len(ids) == 1:
            if self.dashboard.trace is not self._traces[ids[0]]:
                self.dashboard.set_trace(self._traces[ids[0]], tokenizer=self.tokenizer)
            self._show("dashboard")
        elif len(ids) == 2:
            from ..analysis.compare import compare

            a, b = ids
            self.compare_view.set_comparison(compare(self._traces[a], self._traces[b], (f"#{a}", f"#{b}")))
            self._show("compare")


def explore(model: Any, tokenizer: Any = None, **analyze_kwargs: Any) -> Explorer:
    """A prompt box with Run / Stop, a run history and a compare view (see :class:`Explorer`);
    ``analyze_kwargs`` go to every run's :func:`~corevital_widgets.analyze` (e.g. ``logit_lens=True``)."""
    if isinstance(model, str):
        from ..engine.loading import resolve_model

        model = resolve_model(model)
    if tokenizer is None:
        from ..engine.loading import resolve_tokenizer

        tokenizer = resolve_tokenizer(model, None)
    return Explorer(model, tokenizer, **analyze_kwargs)
