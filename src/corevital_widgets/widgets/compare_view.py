"""``corevital.compare(trace_a, trace_b)``: two runs side by side in one view.

The numbers come from :func:`corevital_widgets.analysis.compare.compare` (a
:class:`~corevital_widgets.analysis.compare.Comparison`); this view sends them as one binary
payload (:func:`.payload.compare_payload`) and ``to_pandas()`` returns the same ranked table the
page shows.
"""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING, Any

import traitlets

from .base import ViewWidget
from .payload import compare_payload

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from ..analysis.compare import Comparison
    from ..trace.trace import Trace

#: rows of the ranked table in the static face
FACE_ROWS = 15


class CompareView(ViewWidget):
    """Two traces aligned: prompts diffed token-wise (changed tokens marked), answers step by
    step, metric curves overlaid, the per-head difference heatmap (same architecture) or
    per-layer profiles (different shapes), both verdicts, and the ranked differences.

    ``selection``: ``{"stat", "layer", "head", "metric"}`` (the heatmap's statistic, the picked
    cell, the timeline metric)."""

    view = traitlets.Unicode("compare").tag(sync=True)
    data = traitlets.Bytes(b"").tag(sync=True)
    selection = traitlets.Dict().tag(sync=True)

    def __init__(self, comparison: "Comparison | None" = None, **kwargs: Any) -> None:
        kwargs.setdefault("selection", {"stat": "prompt_entropy", "layer": None, "head": None, "metric": "entropy"})
        super().__init__(**kwargs)
        self._comparison: Comparison | None = None
        if comparison is not None:
            self.set_comparison(comparison)

    @property
    def comparison(self) -> "Comparison | None":
        """The :class:`~corevital_widgets.analysis.compare.Comparison` shown (None: nothing yet)."""
        return self._comparison

    def set_comparison(self, comparison: "Comparison") -> None:
        """Show ``comparison``: the heatmap opens on the statistic of the largest per-head difference."""
        from ..analysis.baseline import HEAD_STATS

        self._comparison = comparison
        top = next((d for d in comparison.differences if d.stat in HEAD_STATS), None)
        self.selection = {**self.selection, "stat": top.stat if top else self.selection.get("stat", "prompt_entropy"),
                          "layer": None, "head": None}
        self.data = compare_payload(comparison)
        self._update_faces(text_too=True)

    def to_pandas(self) -> "pd.DataFrame":
        """The ranked differences the page's table shows (stat, layer, head, a, b, delta, scaled, text)."""
        if self._comparison is None:
            raise ValueError("nothing compared yet: CompareView(compare(a, b)) or corevital.compare(trace_a, trace_b)")
        return self._comparison.to_pandas()

    def text_face(self) -> str:
        if self._comparison is None:
            return "corevital compare: pick two runs"
        return self._comparison.summary()

    def face_bundle(self) -> dict[str, str]:
        """The static face: the summary and the first rows of the ranked table, as HTML."""
        from .static_face import face_bundle

        extra = ""
        if self._comparison is not None:
            rows = "".join(f"<tr><td>{i + 1}</td><td>{escape(d.text())}</td></tr>"
                           for i, d in enumerate(self._comparison.differences[:FACE_ROWS]))
            extra = f"<table>{rows}</table>"
        return face_bundle(None, self.face_id, self.text_face(),
                           "Static copy of the comparison as saved; where widgets run, the live view below replaces it.",
                           extra_html=extra)


def compare(trace_a: "Trace", trace_b: "Trace", labels: tuple[str, str] = ("A", "B")) -> CompareView:
    """Compare two traces in one view (see :class:`CompareView`); ``.to_pandas()`` gives the ranked
    differences, ``.comparison`` the full :class:`~corevital_widgets.analysis.compare.Comparison`.

    Cases: one prompt on two models (base vs fine-tuned, bf16 vs 4-bit), two prompts on one
    model, greedy vs sampled."""
    from ..analysis.compare import compare as compare_traces

    if not (isinstance(labels, (tuple, list)) and len(labels) == 2 and all(isinstance(x, str) for x in labels)):
        raise TypeError(f"labels must be two strings, got {labels!r}")
    return CompareView(compare_traces(trace_a, trace_b, tuple(labels)))
