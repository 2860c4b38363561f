"""The binary payload: the ONLY place that encodes arrays for the browser.

Layout of one payload (all integers little-endian), decoded by its twin ``js/src/payload.ts``::

    b"CVW1"                      4 bytes magic
    header_length                uint32
    header                       UTF-8 JSON: {"version": 1, "meta": {...}, "arrays": [entry, ...]}
    padding                      zero bytes up to a multiple of 8
    data                         the arrays, each starting at a multiple of 8 from the data start

Each entry is ``{"name", "dtype", "shape", "offset", "nbytes"}`` with ``offset`` relative to the
data start. dtypes: ``f4 f2 i4 i2 u4 u2 u1 b1`` (bool as one byte) and ``str``: a list of strings
(shape = its nested shape) stored as ``uint32 offsets[n + 1]`` followed by the UTF-8 bytes;
offsets are byte positions into the UTF-8 part.

Float16 stays float16 on the wire (the browser widens it to float32); float64/int64 are narrowed
to float32/int32. Nothing here loops over tokens, heads or sparse entries in Python.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from ..trace.groups import TIMELINE_METRICS
from ..analysis.registry import find_baseline
from ..analysis.risk import trace_risk
from ..analysis.verdict import assess

if TYPE_CHECKING:  # pragma: no cover
    from ..trace.trace import Trace

MAGIC = b"CVW1"
VERSION = 1
_ALIGN = 8

_TO_CODE = {
    "float32": "f4", "float16": "f2", "int32": "i4", "int16": "i2",
    "uint32": "u4", "uint16": "u2", "uint8": "u1", "bool": "b1",
}
_NARROW = {"float64": "float32", "int64": "int32", "uint64": "uint32", "int8": "int16"}
_FROM_CODE = {v: k for k, v in _TO_CODE.items()}

ArrayLike = Union[np.ndarray, Sequence[str], Sequence[Sequence[str]]]



def _pad(n: int) -> int:
    return (-n) % _ALIGN


def _encode_strings(values: ArrayLike) -> tuple[bytes, list[int]]:
    """Flatten a (nested) list of strings into offsets + UTF-8 bytes; returns (blob, shape)."""
    arr = np.asarray(values, dtype=object)
    shape = list(arr.shape)
    flat = [str(s) for s in arr.ravel()] if arr.size else []
    encoded = list(map(str.encode, flat))
    lengths = np.fromiter(map(len, encoded), dtype=np.uint32, count=len(encoded))
    offsets = np.zeros(len(encoded) + 1, dtype="<u4")
    np.cumsum(lengths, out=offsets[1:])
    return offsets.tobytes() + b"".join(encoded), shape


def encode_arrays(arrays: Mapping[str, ArrayLike], meta: Mapping[str, Any] | None = None) -> bytes:
    """Pack named arrays (numpy arrays or lists of strings) and a JSON-able ``meta`` into one payload.

    Returns the bytes to put in a traitlets ``Bytes`` trait (the browser receives a DataView).
    """
    entries: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    offset = 0
    for name, value in arrays.items():
        if isinstance(value, np.ndarray) and value.dtype != object:
            a = value
            if a.dtype.name in _NARROW:
                a = a.astype(_NARROW[a.dtype.name])
            code = _TO_CODE.get(a.dtype.name)
            if code is None:
                raise TypeError(f"payload array {name!r} has unsupported dtype {a.dtype}")
            raw = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).tobytes()
            shape = list(a.shape)
        else:
            raw, shape = _encode_strings(value)
            code = "str"
        entries.append({"name": name, "dtype": code, "shape": shape, "offset": offset, "nbytes": len(raw)})
        chunks.append(raw + b"\0" * _pad(len(raw)))
        offset += len(raw) + _pad(len(raw))
    header = json.dumps({"version": VERSION, "meta": dict(meta or {}), "arrays": entries},
                        separators=(",", ":"), allow_nan=False, default=_json_default).encode()
    head = MAGIC + struct.pack("<I", len(header)) + header
    return head + b"\0" * _pad(len(head)) + b"".join(chunks)


def decode_arrays(payload: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """Inverse of :func:`encode_arrays` (for tests and tools): returns (meta, arrays).

    Numeric arrays come back as numpy arrays of the wire dtype; strings as nested lists.
    """
    buf = memoryview(payload)
    if bytes(buf[:4]) != MAGIC:
        raise ValueError("not a corevital widget payload (bad magic)")
    (n,) = struct.unpack("<I", buf[4:8])
    header = json.loads(bytes(buf[8:8 + n]))
    if header.get("version") != VERSION:
        raise ValueError(f"payload version {header.get('version')} is not supported (expected {VERSION})")
    start = 8 + n + _pad(8 + n)
    out: dict[str, Any] = {}
    for e in header["arrays"]:
        lo = start + e["offset"]
        raw = buf[lo:lo + e["nbytes"]]
        if e["dtype"] == "str":
            count = int(np.prod(e["shape"], dtype=np.int64))
            offs = np.frombuffer(raw[:4 * (count + 1)], dtype="<u4")
            text = bytes(raw[4 * (count + 1):])
            flat = [text[a:b].decode() for a, b in zip(offs[:-1], offs[1:])]
            out[e["name"]] = np.array(flat, dtype=object).reshape(e["shape"]).tolist() if count else []
        else:
            dt = np.dtype(_FROM_CODE[e["dtype"]]).newbyteorder("<")
            out[e["name"]] = np.frombuffer(raw, dtype=dt).reshape(e["shape"])
    return header["meta"], out


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"not JSON-able: {type(o).__name__}")


def _finite_or_none(x: Any) -> Any:
    if isinstance(x, float) and not np.isfinite(x):
        return None
    return x


def _json_safe(x: Any) -> Any:
    """``x`` with every non-finite float (nested in dicts / lists) replaced by None."""
    if isinstance(x, Mapping):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    return _finite_or_none(x)


# ------------------------------------------------------------------------ trace payloads
#: Which array groups each view needs (the dashboard, and the dataset view's dashboard, need them all).
VIEW_PARTS: dict[str, tuple[str, ...]] = {
    "badge": ("risk",),
    "timeline": ("tokens", "timeline"),
    "heatmap": ("heads", "lens"),
    "graph": ("prompt_tokens",),
    "dashboard": ("tokens", "timeline", "heads", "lens", "risk"),
    "dataset": ("tokens", "timeline", "heads", "lens", "risk"),
}


def has_lens(trace: "Trace") -> bool:
    """Whether the trace was made with ``logit_lens=True`` (a [T, L] lens matrix with T >= 1)."""
    e = trace.layers.lens_entropy
    return e.ndim == 2 and e.size > 0 and e.shape == trace.layers.lens_top1.shape


#: The per-(layer, head) z-scores against the model's baseline the heatmap's "vs normal" mode
#: shows: payload array name -> statistic of :class:`~corevital_widgets.analysis.baseline.Deviation`.
Z_ARRAYS = {
    "z_step_entropy": "step_entropy", "z_step_concentration": "step_concentration",
    "z_prompt_entropy": "prompt_entropy", "z_prompt_concentration": "prompt_concentration",
    "z_prompt_sink": "prompt_sink", "z_prompt_basin": "prompt_log_basin",
}


def trace_meta(trace: "Trace", risk: dict[str, Any] | None = None, verdict: dict[str, Any] | None = None) -> dict[str, Any]:
    """The small JSON part of a payload: sizes, model, thresholds, the verdict (``verdict``:
    ``assess(trace).to_dict()``, computed when not given) and the health facts with where flags
    fired, whether the logit lens is present and (``risk``, see :func:`trace_risk`) the risk of a
    wrong answer. ``health.verdict`` is the old absolute-rules colour, kept for old readers; the
    badge's colour is ``verdict.color``."""
    t = trace.thresholds
    if verdict is None:
        verdict = assess(trace).to_dict()
    return {
        "model_name": str(trace.meta.get("model_name", "")),
        "n_prompt": trace.n_prompt, "n_steps": trace.n_steps,
        "n_layers": trace.n_layers, "n_heads": trace.n_heads,
        "top_k": int(trace.timeline.top_k_ids.shape[1]) if trace.timeline.top_k_ids.ndim == 2 else 0,
        "thresholds": {
            "collapsed_entropy_bits": t.collapsed_entropy_bits,
            "focused_concentration": t.focused_concentration,
            "high_entropy_bits": t.high_entropy_bits,
            "basin_ignores_middle": t.basin_ignores_middle,
        },
        "verdict": _json_safe(verdict),
        "health": {k: _finite_or_none(v) for k, v in trace.health.to_dict().items()},
        "fired": list(trace.health.fired),
        "metrics": {k: {"label": lab, "unit": unit} for k, (lab, unit) in TIMELINE_METRICS.items()},
        "sparse_threshold": float(trace.sparse.threshold),
        "has_prompt_attention": bool(trace.sparse.row_counts.size > 0),
        "has_lens": has_lens(trace),
        # hybrid stacks: layers with softmax attention (the others' attention metrics are NaN)
        "attention_layers": trace.attention_layers,
        "prompt_attention_layers": trace.prompt_attention_layers,
        "risk": risk,
    }


def top_k_token_strings(trace: "Trace", tokenizer: Any = None) -> list[list[str]] | None:
    """Decoded top-k alternatives [T][K]: ``trace.top_k_tokens`` when present, else decoded once
    per distinct id with ``tokenizer`` (one batch call), else None."""
    found = getattr(trace, "top_k_tokens", None)
    if found is not None:
        return [list(map(str, row)) for row in found]
    ids = trace.timeline.top_k_ids
    if tokenizer is None or ids.size == 0:
        return None
    uniq, inverse = np.unique(ids, return_inverse=True)
    pieces = np.array(tokenizer.batch_decode(uniq.reshape(-1, 1).tolist()), dtype=object)
    return pieces[inverse.reshape(ids.shape)].tolist()


def lens_token_strings(trace: "Trace", tokenizer: Any = None) -> tuple[np.ndarray, list[str]]:
    """The distinct logit-lens top-1 ids and their text: ``(ids [U] int32, pieces [U])``.

    Decoded with ``tokenizer`` (one batch call over the distinct ids) when given; otherwise
    looked up among the pieces the trace already holds (prompt, generated and top-k tokens),
    with ``""`` for an id the trace never decoded (the browser then shows ``#id``).
    """
    ids = np.unique(trace.layers.lens_top1).astype(np.int32)
    if ids.size == 0:
        return ids, []
    if tokenizer is not None:
        return ids, [str(x) for x in tokenizer.batch_decode(ids.reshape(-1, 1).tolist())]
    known_ids = [trace.prompt_ids.ravel(), trace.generated_ids.ravel()]
    known_text = [np.asarray(trace.prompt_tokens, dtype=object), np.asarray(trace.generated_tokens, dtype=object)]
    if trace.top_k_tokens and trace.timeline.top_k_ids.size:
        known_ids.append(trace.timeline.top_k_ids.ravel())
        known_text.append(np.asarray(trace.top_k_tokens, dtype=object).ravel())
    k_ids = np.concatenate(known_ids).astype(np.int64)
    k_text = np.concatenate(known_text)
    if k_ids.size == 0 or k_ids.size != k_text.size:  # nothing decoded to look up
        return ids, [""] * ids.size
    uniq, first = np.unique(k_ids, return_index=True)
    pos = np.minimum(np.searchsorted(uniq, ids), uniq.size - 1)
    text = np.where(uniq[pos] == ids, k_text[first[pos]], "")
    return ids, [str(x) for x in text]


def trace_payload(trace: "Trace", view: str = "dashboard", tokenizer: Any = None, risk_model: Any = None) -> bytes:
    """Encode what ``view`` needs of ``trace`` (never the sparse profile) into one payload.

    ``risk_model``: the :class:`~corevital_widgets.RiskModel` whose risk the badge shows
    (default: the shipped one for the trace's model, as ``trace.summary()`` uses).
    """
    if view not in VIEW_PARTS:
        raise ValueError(f"unknown view {view!r}; expected one of {sorted(VIEW_PARTS)}")
    parts = VIEW_PARTS[view]
    arrays: dict[str, ArrayLike] = {}
    if "tokens" in parts or "prompt_tokens" in parts:
        arrays["prompt_tokens"] = trace.prompt_tokens
    if "tokens" in parts:
        arrays["generated_tokens"] = trace.generated_tokens
        arrays["generated_ids"] = trace.generated_ids
    if "timeline" in parts:
        tl = trace.timeline
        for name in TIMELINE_METRICS:
            arrays[name] = getattr(tl, name)
        arrays["top_k_ids"] = tl.top_k_ids
        arrays["top_k_probs"] = tl.top_k_probs
        alt = top_k_token_strings(trace, tokenizer)
        if alt is not None:
            arrays["top_k_tokens"] = alt
        arrays["prompt_surprisal"] = trace.prompt.surprisal
    if "heads" in parts:
        arrays["head_entropy"] = trace.heads.entropy
        arrays["head_concentration"] = trace.heads.concentration
        pr = trace.prompt
        arrays["prompt_head_entropy"] = pr.head_entropy
        arrays["prompt_head_concentration"] = pr.head_concentration
        arrays["prompt_sink"] = pr.sink
        arrays["prompt_basin"] = pr.basin
    if "lens" in parts and has_lens(trace):
        arrays["lens_entropy"] = trace.layers.lens_entropy.astype(np.float32)
        arrays["lens_top1"] = trace.layers.lens_top1.astype(np.int32)
        lens_ids, lens_text = lens_token_strings(trace, tokenizer)
        arrays["lens_top1_ids"] = lens_ids
        arrays["lens_top1_text"] = lens_text
    baseline = find_baseline(trace)
    verdict = assess(trace, baseline).to_dict()
    extra: dict[str, Any] = {}
    if "heads" in parts and baseline is not None:
        dev = baseline.deviation(trace, verdict["alpha"])
        shape = (trace.n_layers, trace.n_heads)
        for name, stat in Z_ARRAYS.items():
            z = dev.z.get(stat)
            arrays[name] = (np.asarray(z, dtype=np.float32) if z is not None and np.shape(z) == shape
                            else np.full(shape, np.nan, dtype=np.float32))
        extra["z_threshold"] = _finite_or_none(float(dev.threshold))
    risk = None
    if "risk" in parts:
        found = trace_risk(trace, risk_model)
        risk = None if found is None else found.to_dict()
    return encode_arrays(arrays, {**trace_meta(trace, risk, verdict), **extra})


def edges_payload(trace: "Trace", token: int, layer: int | None, head: int | None, incoming: bool = True) -> bytes:
    """The attention edges of one prompt token, computed in Python from the sparse profile.

    ``out_keys``/``out_weights``: ``trace.attends_to(token, layer, head)``; ``in_queries``/
    ``in_weights``: ``trace.attended_by(...)`` (empty unless ``incoming``: it scans every entry
    of the selected heads, the costlier query). Weights are attention probabilities (float32).
    ``meta`` echoes the query so the browser never draws edges for a stale selection. A ``layer``
    without softmax attention (a state-space / convolution block of a hybrid stack) gets no edges
    and ``meta["no_attention"] = True``.
    """
    echo = {"token": int(token), "layer": layer, "head": head, "incoming": bool(incoming)}
    n_layers = trace.sparse.row_counts.shape[0] if trace.sparse.row_counts.ndim == 3 else 0
    if layer is not None and 0 <= layer < n_layers and layer not in trace.prompt_attention_layers:
        none_i, none_w = np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.float32)
        return encode_arrays({"out_keys": none_i, "out_weights": none_w, "in_queries": none_i, "in_weights": none_w},
                             {**echo, "no_attention": True})
    keys, w = trace.attends_to(token, layer, head)
    if incoming:
        queries, wi = trace.attended_by(token, layer, head)
    else:
        queries, wi = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    return encode_arrays(
        {"out_keys": keys.astype(np.int32), "out_weights": w.astype(np.float32),
         "in_queries": queries.astype(np.int32), "in_weights": wi.astype(np.float32)},
        echo,
    )


# ------------------------------------------------------------------------ compare payload
def compare_payload(c: Any) -> bytes:
    """Encode a :class:`~corevital_widgets.analysis.compare.Comparison` for the compare view.

    Arrays (``x`` = ``a`` or ``b``): ``x_prompt_tokens`` / ``x_generated_tokens`` (str),
    ``x_changed`` (u1 per prompt token: differs from the other prompt), ``x_<metric>`` per
    timeline metric (f4 [T_x]); with the same architecture ``diff_<stat>`` = b - a [L, H] of each
    per-head statistic; always ``prof_x_<stat>`` per layer (per-head stats: mean over heads).
    Meta: labels, same_prompt, same_shape, diverged_at, scale_source, shapes, both verdicts,
    the ranked differences (``differences``: stat, layer, head, a, b, delta, scaled, text) and
    each statistic's description and unit (``stats``).
    """
    from ..analysis.baseline import HEAD_STATS, LAYER_STATS
    from ..analysis.compare import _DESCRIPTIONS, NORM_STEP

    arrays: dict[str, ArrayLike] = {}
    for side, t, changed in (("a", c.a, c.changed_a), ("b", c.b, c.changed_b)):
        arrays[f"{side}_prompt_tokens"] = t.prompt_tokens
        arrays[f"{side}_generated_tokens"] = t.generated_tokens
        arrays[f"{side}_changed"] = changed.astype(np.uint8)
        for name in TIMELINE_METRICS:
            arrays[f"{side}_{name}"] = np.asarray(getattr(t.timeline, name), np.float32)
    if c.same_shape:
        for stat in HEAD_STATS:
            arrays[f"diff_{stat}"] = c.head_difference(stat).astype(np.float32)
    layer_stats = (*HEAD_STATS, *LAYER_STATS, NORM_STEP)
    for stat in layer_stats:
        pa, pb = c.layer_profiles(stat)
        arrays[f"prof_a_{stat}"] = pa.astype(np.float32)
        arrays[f"prof_b_{stat}"] = pb.astype(np.float32)
    rows = _json_safe([{"stat": d.stat, "layer": d.layer, "head": d.head, "a": d.a, "b": d.b, "delta": d.delta,
                        "scaled": d.scaled, "text": d.text()} for d in c.differences])
    meta = {
        "labels": list(c.labels), "same_prompt": bool(c.same_prompt), "same_shape": bool(c.same_shape),
        "diverged_at": c.diverged_at, "scale_source": c.scale_source,
        "shape_a": [c.a.n_layers, c.a.n_heads], "shape_b": [c.b.n_layers, c.b.n_heads],
        "n_steps": [c.a.n_steps, c.b.n_steps], "n_prompt": [c.a.n_prompt, c.b.n_prompt],
        "model_names": [str(c.a.meta.get("model_name", "")), str(c.b.meta.get("model_name", ""))],
        "verdicts": [_json_safe(assess(c.a).to_dict()), _json_safe(assess(c.b).to_dict())],
        "differences": rows,
        "head_stats": list(HEAD_STATS), "layer_stats": list(layer_stats),
        "stats": {k: {"label": v[0], "unit": v[1]} for k, v in _DESCRIPTIONS.items()},
        "summary": c.summary(),
    }
    return encode_arrays(arrays, meta)
