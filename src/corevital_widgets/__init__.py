"""corevital_widgets: see inside a Hugging Face language model while it generates.

    import corevital_widgets as corevital
    trace = corevital.analyze(model, "Why is the sky blue?", tokenizer=tok)
    print(trace.summary())

The engine (``analyze``) needs torch and transformers; a saved Trace loads, queries and
renders with numpy alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

from .trace.health import DEFAULT_THRESHOLDS, FiredAt, Health, Thresholds
from .trace.sparse import SparseAttention
from .trace.storage import TraceFileError, load_trace
from .trace.trace import SCHEMA_VERSION, Trace

if TYPE_CHECKING:  # pragma: no cover
    from .batch import TraceSet, analyze_many
    from .distributed import ray_analyze_many
    from .engine.analyze import analyze
    from .analysis.baseline import Baseline
    from .analysis.registry import register_baseline
    from .analysis.verdict import Verdict, assess
    from .batch import fit_baseline
    from .analysis.risk import RiskModel, evaluate_risk, heuristic_risk
    from .suite import build_suite, grade
    from .engine.loading import load_default_model
    from .widgets.components import AttentionGraph, Dashboard, HeadHeatmap, HealthBadge, TokenTimeline, link_selection
    from .widgets.dataset_view import DatasetView
    from .widgets.html_export import export_html
    from .widgets.show import show
    from .widgets.compare_view import CompareView, compare
    from .widgets.explorer import Explorer, explore

_LAZY = {
    "analyze": ("engine.analyze", "analyze"),
    "load_default_model": ("engine.loading", "load_default_model"),
    "show": ("widgets.show", "show"),
    "export_html": ("widgets.html_export", "export_html"),
    "Dashboard": ("widgets.components", "Dashboard"),
    "HealthBadge": ("widgets.components", "HealthBadge"),
    "TokenTimeline": ("widgets.components", "TokenTimeline"),
    "HeadHeatmap": ("widgets.components", "HeadHeatmap"),
    "AttentionGraph": ("widgets.components", "AttentionGraph"),
    "link_selection": ("widgets.components", "link_selection"),
    "DatasetView": ("widgets.dataset_view", "DatasetView"),
    "analyze_many": ("batch", "analyze_many"),
    "TraceSet": ("batch", "TraceSet"),
    "ray_analyze_many": ("distributed", "ray_analyze_many"),
    "RiskModel": ("analysis.risk", "RiskModel"),
    "heuristic_risk": ("analysis.risk", "heuristic_risk"),
    "evaluate_risk": ("analysis.risk", "evaluate_risk"),
    "build_suite": ("suite", "build_suite"),
    "grade": ("suite", "grade"),
    "Baseline": ("analysis.baseline", "Baseline"),
    "fit_baseline": ("batch", "fit_baseline"),
    "register_baseline": ("analysis.registry", "register_baseline"),
    "assess": ("analysis.verdict", "assess"),
    "Verdict": ("analysis.verdict", "Verdict"),
    "compare": ("widgets.compare_view", "compare"),
    "CompareView": ("widgets.compare_view", "CompareView"),
    "explore": ("widgets.explorer", "explore"),
    "Explorer": ("widgets.explorer", "Explorer"),
}


def __getattr__(name: str) -> Any:
    """Engine and widget entry points are imported on first use (torch / anywidget only then)."""
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(f".{module}", __name__), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "analyze", "load_default_model", "show", "export_html", "Dashboard", "HealthBadge", "TokenTimeline",
    "HeadHeatmap", "AttentionGraph", "link_selection", "DatasetView", "analyze_many", "TraceSet", "ray_analyze_many", "RiskModel", "heuristic_risk",
    "evaluate_risk", "build_suite", "grade", "Baseline", "fit_baseline", "register_baseline", "assess", "Verdict", "compare", "CompareView", "explore", "Explorer", "load_trace", "Trace", "TraceFileError", "SparseAttention", "Health", "FiredAt",
    "Thresholds", "DEFAULT_THRESHOLDS", "SCHEMA_VERSION", "__version__",
]
