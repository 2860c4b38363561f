"""Static figures of a Trace (altair): timeline curves and per-layer profiles.

``trace_chart(trace, metric)`` is what ``Trace.chart(metric)`` returns. Timeline metrics
(one value per generated step) give a curve over steps; per-layer metrics ([T, L] hidden-state
or attention summaries, or the prompt's layer transformation [L, P]) give a profile over
layers: the mean, min and max over steps (or prompt tokens), one line each.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .groups import TIMELINE_METRICS

if TYPE_CHECKING:  # pragma: no cover
    import altair as alt

    from .trace import Trace

#: Per-layer metrics: field -> (group attribute, title, unit).
LAYER_METRICS: dict[str, tuple[str, str, str]] = {
    "l2_norm": ("layers", "hidden-state L2 norm", "activation units"),
    "std": ("layers", "hidden-state std", "activation units"),
    "mean": ("layers", "hidden-state mean", "activation units"),
    "entropy_mean": ("attention", "attention entropy, mean over heads", "bits"),
    "entropy_min": ("attention", "attention entropy, min over heads", "bits"),
    "entropy_max": ("attention", "attention entropy, max over heads", "bits"),
    "concentration_max": ("attention", "attention concentration, max over heads", "probability"),
    "concentration_min": ("attention", "attention concentration, min over heads", "probability"),
    "collapsed_head_count": ("attention", "collapsed heads (< 0.1 bits)", "heads"),
    "focused_head_count": ("attention", "focused heads (> 0.9)", "heads"),
    "layer_transformation": ("prompt", "layer transformation 1 − cos(h_l, h_l−1)", "1 − cosine"),
}


def trace_chart(trace: "Trace", metric: str = "entropy") -> "alt.Chart":
    """An altair chart of ``metric``: a curve over generated steps or a profile over layers."""
    import altair as alt
    import pandas as pd

    if metric in TIMELINE_METRICS:
        title, unit = TIMELINE_METRICS[metric]
        values = np.asarray(getattr(trace.timeline, metric), dtype=np.float64)
        df = pd.DataFrame({"step": np.arange(values.size), "value": values, "token": trace.generated_tokens})
        y_title = f"{title} ({unit})"
        base = alt.Chart(df, title=f"{title} per generated step · {trace.meta.get('model_name', '')}")
        line = base.mark_line(point=True).encode(
            x=alt.X("step:Q", title="generation step"),
            y=alt.Y("value:Q", title=y_title, scale=alt.Scale(type="log") if metric == "perplexity" else alt.Undefined),
            tooltip=[alt.Tooltip("step:Q"), alt.Tooltip("token:N"), alt.Tooltip("value:Q", title=y_title, format=".3f")],
        )
        return line.properties(width=600, height=200)
    if metric in LAYER_METRICS:
        group, title, unit = LAYER_METRICS[metric]
        arr = np.asarray(getattr(getattr(trace, group), metric), dtype=np.float64)
        over = "prompt tokens" if group == "prompt" else "steps"
        per_layer = arr if group == "prompt" else arr.T  # -> [L, N]
        if per_layer.size == 0:
            raise ValueError(f"the trace has no {metric!r} values (prompt telemetry off or no steps)")
        with np.errstate(all="ignore"):
            df = pd.DataFrame({
                "layer": np.arange(per_layer.shape[0]),
                "mean": np.nanmean(per_layer, axis=1), "min": np.nanmin(per_layer, axis=1), "max": np.nanmax(per_layer, axis=1),
            })
        y_title = f"{title} ({unit})"
        long = df.melt(id_vars="layer", var_name="over " + over, value_name="value")
        return alt.Chart(long, title=f"{title} per layer (mean, min and max over {over})").mark_line(point=True).encode(
            x=alt.X("layer:Q", title="layer"),
            y=alt.Y("value:Q", title=y_title),
            color=alt.Color(f"over {over}:N", sort=["max", "mean", "min"]),
            tooltip=[alt.Tooltip("layer:Q"), alt.Tooltip(f"over {over}:N"), alt.Tooltip("value:Q", format=".3f")],
        ).properties(width=600, height=200)
    raise ValueError(f"unknown metric {metric!r}; expected one of {sorted(TIMELINE_METRICS) + sorted(LAYER_METRICS)}")
