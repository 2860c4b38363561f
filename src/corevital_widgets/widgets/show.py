"""``corevital.show``: analyse with live progress, or show a saved Trace."""

from __future__ import annotations

import inspect
from typing import Any

from .components import INTERRUPTED_PHASE, PROMPT_PHASE, Dashboard

def _in_kernel() -> bool:
    """True inside a Jupyter kernel (where widgets render), False in a terminal or script."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover
        return False
    ip = get_ipython()
    return ip is not None and getattr(ip, "kernel", None) is not None


def _default_max_new_tokens(analyze: Any) -> int:
    p = inspect.signature(analyze).parameters.get("max_new_tokens")
    return int(p.default) if p is not None and isinstance(p.default, int) else 0


def show(model: Any, prompt: str | None = None, tokenizer: Any = None, *, display: bool = True,
         **analyze_kwargs: Any) -> Dashboard:
    """Show the dashboard for a Trace, or run ``corevital.analyze`` and show it filling live.

    ``show(trace)`` wraps a finished (or loaded) Trace. ``show(model, prompt, tokenizer, **kw)``
    generates with ``analyze(model, prompt, tokenizer, **kw)``: in a notebook the dashboard is
    displayed at once, its progress bar advances and the generated tokens appear as they are
    produced; in a terminal a tqdm bar shows progress. Returns the :class:`Dashboard`
    (``.selection``, ``.on_select``, ``.trace``, ``.save_html``).
    """
    from ..trace.trace import Trace

    if isinstance(model, Trace):
        if prompt is not None:
            raise TypeError("show(trace) takes no prompt; the trace already holds one")
        return Dashboard(model, tokenizer=tokenizer)
    if prompt is None:
        raise TypeError("show(model, prompt, tokenizer=None, **analyze_kwargs) needs a prompt")

    from ..engine.analyze import analyze

    live = _in_kernel() and display
    dash = Dashboard()
    total = int(analyze_kwargs.get("max_new_tokens", _default_max_new_tokens(analyze)))
    telemetry = analyze_kwargs.get("prompt_telemetry", True)
    dash.start_live(total, phase=PROMPT_PHASE if telemetry else "generating")
    if live:
        dash._display_now()
    user_on_step = analyze_kwargs.pop("on_step", None)
    user_on_layer = analyze_kwargs.pop("on_prompt_layer", None)

    def on_prompt_layer(done: int, layers: int) -> None:
        dash.prompt_progress(done, layers)
        if user_on_layer is not None:
            user_on_layer(done, layers)

    decode = getattr(tokenizer, "decode", None)

    def on_step(step: int, token_id: int) -> None:
        text = decode([token_id]) if decode is not None else f"#{token_id}"
        dash.push_token(step, text)
        if user_on_step is not None:
            user_on_step(step, token_id)

    analyze_kwargs.setdefault("progress", not live)
    try:
        trace = analyze(model, prompt, tokenizer, on_step=on_step, on_prompt_layer=on_prompt_layer, **analyze_kwargs)
    except BaseException as exc:
        # the view says what happened (the tokens streamed so far stay); analyze restored the model
        dash.flush_live()
        dash.progress = {**dash.progress, "done": True,
                         "phase": INTERRUPTED_PHASE if isinstance(exc, KeyboardInterrupt) else "failed"}
        raise
    dash.flush_live()
    dash.set_trace(trace, tokenizer=tokenizer)
    return dash
