"""Notebook widgets for a Trace: health badge, token timeline, head heatmap, attention graph,
the dashboard composing them, the dataset view of a TraceSet, the compare view of two traces,
the explorer (prompt box, Run / Stop, history), ``show`` and standalone HTML export."""

from .components import (
    AttentionGraph,
    Dashboard,
    HeadHeatmap,
    HealthBadge,
    TokenTimeline,
    TraceWidget,
    link_selection,
)
from .compare_view import CompareView, compare
from .dataset_view import DatasetView
from .explorer import Explorer, explore
from .html_export import export_html, widget_to_html
from .show import show

__all__ = [
    "show", "export_html", "widget_to_html", "Dashboard", "HealthBadge", "TokenTimeline", "HeadHeatmap",
    "AttentionGraph", "TraceWidget", "link_selection", "DatasetView", "CompareView", "compare", "Explorer", "explore",
]
