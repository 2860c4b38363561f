"""Finding the baseline of a trace's model: baselines registered in this session
(:func:`register_baseline`) first, then the ones shipped in the package (``data/baseline_*.json``),
matched on the model fingerprint in the trace meta — never on the model's name."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from .baseline import Baseline

if TYPE_CHECKING:  # pragma: no cover
    from ..trace.trace import Trace

_registered: dict[str, Baseline] = {}


def register_baseline(baseline: Baseline) -> None:
    """Make ``baseline`` the one used for traces of its model (by fingerprint) in this session."""
    if not baseline.fingerprint:
        raise ValueError("this baseline has no model fingerprint (traces made before fingerprints existed); refit it")
    _registered[baseline.fingerprint] = baseline


@lru_cache(maxsize=1)
def shipped_baselines() -> dict[str, Baseline]:
    """The baselines that ship with the package, by fingerprint."""
    out = {}
    for path in sorted((Path(__file__).resolve().parents[1] / "data").glob("baseline_*.json")):
        b = Baseline.from_dict(json.loads(path.read_text()))
        out[b.fingerprint] = b
    return out


def find_baseline(trace: "Trace") -> Baseline | None:
    """The baseline for the trace's model, or None."""
    fp = trace.meta.get("model_fingerprint")
    if not fp:
        return None
    return _registered.get(fp) or shipped_baselines().get(fp)
