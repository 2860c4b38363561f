"""Interoperable exports of a Trace: compact JSON and tidy pandas DataFrames.

JSON format (``Trace.to_json()``), one object, no indentation, no nulls:

- ``schema_version``, ``meta`` (as in the trace), ``health`` (flags, ``first_fired`` and
  ``verdict``), ``prompt_ids``/``prompt_tokens``/``generated_ids``/``generated_tokens``;
- ``timeline``, ``layers``, ``attention``, ``heads``, ``prompt``: objects of nested arrays,
  same names and shapes as the Trace fields; booleans as true/false;
- floats are written with 6 significant digits; non-finite floats as the strings ``"NaN"``,
  ``"Infinity"``, ``"-Infinity"`` (JSON has no literal for them);
- with ``include_sparse=True``, ``sparse``: ``{"threshold", "cap", "shape": [L, H, P],
  "row_counts", "keys", "weights"}`` in CSR order (layer, head, query); omitted by default
  because it is large.
Keys whose value is None are left out.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from .trace import Trace

_GROUPS = ("timeline", "layers", "attention", "heads", "prompt")
_NONFINITE = {"nan": '"NaN"', "inf": '"Infinity"', "-inf": '"-Infinity"'}


def _array_json(a: np.ndarray) -> str:
    """Nested JSON list text of an array, vectorised formatting."""
    if a.dtype == bool:
        flat = np.where(a.ravel(), "true", "false")
    elif a.dtype.kind in "iu":
        flat = a.ravel().astype(str)
    else:
        flat = np.char.mod("%.6g", a.ravel().astype(np.float64))
        for raw, text in _NONFINITE.items():
            flat[flat == raw] = text
    return _nest(flat.tolist(), a.shape)


def _nest(items: list[str], shape: tuple[int, ...]) -> str:
    if len(shape) <= 1:
        return "[" + ",".join(items) + "]"
    step = int(np.prod(shape[1:], dtype=np.int64))
    return "[" + ",".join(_nest(items[i * step : (i + 1) * step], shape[1:]) for i in range(shape[0])) + "]"


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


def trace_to_json(trace: "Trace", *, include_sparse: bool = False) -> str:
    """Compact JSON text of the trace (format in the module docstring)."""
    dump = lambda v: json.dumps(_drop_none(v), separators=(",", ":"), ensure_ascii=False)  # noqa: E731
    parts = [
        f'"schema_version":{trace.meta.get("schema_version", 1)}',
        f'"meta":{dump(trace.meta)}',
        f'"health":{dump(trace.health.to_dict())}',
        f'"prompt_ids":{_array_json(trace.prompt_ids)}',
        f'"prompt_tokens":{dump(trace.prompt_tokens)}',
        f'"generated_ids":{_array_json(trace.generated_ids)}',
        f'"generated_tokens":{dump(trace.generated_tokens)}',
        f'"top_k_tokens":{dump(trace.top_k_tokens)}',
    ]
    for g in _GROUPS:
        fields = ",".join(f'"{k}":{_array_json(v)}' for k, v in getattr(trace, g).arrays().items())
        parts.append(f'"{g}":{{{fields}}}')
    if include_sparse:
        s = trace.sparse
        parts.append(
            f'"sparse":{{"threshold":{s.threshold},"cap":{s.cap},"shape":{list(s.shape)},'
            f'"row_counts":{_array_json(s.row_counts.ravel())},"keys":{_array_json(s.keys)},'
            f'"weights":{_array_json(s.weights)}}}'
        )
    return "{" + ",".join(parts) + "}"


def trace_to_pandas(trace: "Trace", kind: str = "steps") -> "pd.DataFrame":
    """Tidy DataFrame of one part of the trace.

    - ``steps``: one row per generated step: step, token_id, token, every timeline metric.
    - ``layers``: one row per (step, layer): hidden-state summaries and attention aggregates.
    - ``heads``: one row per (step, layer, head): entropy, concentration.
    - ``prompt``: one row per prompt token: position, token_id, token, surprisal (bits, NaN
      for the first token), and the layer transformation averaged over layers.
    """
    import pandas as pd

    t_n, l_n, h_n = trace.n_steps, trace.n_layers, trace.n_heads
    if kind == "steps":
        tl = trace.timeline
        cols = {"step": np.arange(t_n), "token_id": trace.generated_ids, "token": trace.generated_tokens}
        cols.update({k: v for k, v in tl.arrays().items() if v.ndim == 1})
        return pd.DataFrame(cols)
    if kind == "layers":
        step, layer = np.meshgrid(np.arange(t_n), np.arange(l_n), indexing="ij")
        cols = {"step": step.ravel(), "layer": layer.ravel()}
        cols.update({f"hidden_{k}": v.ravel() for k, v in trace.layers.arrays().items() if v.size})
        cols.update({f"attention_{k}": v.ravel() for k, v in trace.attention.arrays().items()})
        return pd.DataFrame(cols)
    if kind == "heads":
        step, layer, head = np.meshgrid(np.arange(t_n), np.arange(l_n), np.arange(h_n), indexing="ij")
        return pd.DataFrame({"step": step.ravel(), "layer": layer.ravel(), "head": head.ravel(),
                             "entropy": trace.heads.entropy.ravel().astype(np.float32),
                             "concentration": trace.heads.concentration.ravel().astype(np.float32)})
    if kind == "prompt":
        p = trace.n_prompt
        surprisal = np.full(p, np.nan, dtype=np.float32)
        if trace.prompt.surprisal.size:
            surprisal[1:] = trace.prompt.surprisal
        lt = trace.prompt.layer_transformation
        return pd.DataFrame({"position": np.arange(p), "token_id": trace.prompt_ids, "token": trace.prompt_tokens,
                             "surprisal": surprisal,
                             "layer_transformation_mean": lt.mean(0) if lt.size else np.full(p, np.nan)})
    raise ValueError(f"kind must be one of 'steps', 'layers', 'heads', 'prompt'; got {kind!r}")
