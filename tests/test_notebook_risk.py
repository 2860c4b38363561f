"""notebooks/risk.ipynb runs top to bottom with nbclient (real SmolLM2, real kernel, a small suite batch):
the dataset view and the reliability diagram are in its outputs, with the widget state saved."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .test_notebook_quickstart import WIDGET_STATE, WIDGET_VIEW, execute_notebook

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "risk.ipynb"
VEGA_LITE = "application/vnd.vegalite.v5+json"


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    return execute_notebook(NOTEBOOK, tmp_path_factory.mktemp("nb_risk"), timeout=300)


def _outputs(nb):
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]


def test_risk_notebook_runs_quickly_without_errors(executed):
    nb, elapsed = executed
    errors = [o for o in _outputs(nb) if o.output_type == "error"]
    assert not errors, errors
    assert elapsed < 180, f"the notebook took {elapsed:.0f} s"


def test_risk_notebook_shows_the_dataset_view_and_the_reliability_diagram(executed):
    nb, _ = executed
    state = nb.metadata["widgets"][WIDGET_STATE]["state"]
    views = [o["data"][WIDGET_VIEW]["model_id"] for o in _outputs(nb) if WIDGET_VIEW in o.get("data", {})]
    ours = [state[mid]["state"] for mid in views if state.get(mid, {}).get("model_name") == "AnyModel"]
    dataset = [s for s in ours if s.get("view") == "dataset"]
    assert len(dataset) == 1
    ds = dataset[0]
    n = len(ds["rows"]["prompt"])
    # a risk is a probability, or None where it is withheld (outside the calibrated range, "n/s")
    risks = ds["rows"]["risk"]
    assert n == 8 and len(risks) == n and all(r is None or 0 <= r <= 1 for r in risks)
    assert [r is None for r in risks] == ds["rows"]["risk_withheld"]
    assert set(ds["rows"]["correct"]) == {True, False}  # graded, both outcomes present
    assert ds["table"]["sort"] == "risk" and ds["table"]["desc"] is True
    # the riskiest row is open, its dashboard payload embedded
    assert ds["loaded_row"] == ds["row"] == max(range(n), key=lambda i: -1.0 if risks[i] is None else risks[i])
    assert any(b["path"] == ["data"] for b in state[next(m for m in views if state[m]["state"] is ds)].get("buffers", []))
    # the reliability diagram: Altair's output (a Vega-Lite spec, or the HTML that embeds it)
    charts = [json.dumps(o["data"].get(VEGA_LITE)) if VEGA_LITE in o.get("data", {}) else o["data"].get("text/html", "")
              for o in _outputs(nb) if "data" in o]
    diagram = [c for c in charts if "Reliability (ECE" in c and "mean_predicted" in c]
    assert len(diagram) == 1
