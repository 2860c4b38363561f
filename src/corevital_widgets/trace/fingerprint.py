"""Model identity by content: a short hash of the model's shape and of some of its weights.

Baselines and risk coefficients are matched on it, never on ``name_or_path``: the same SmolLM2
weights loaded through ``load_default_model``, through plain transformers from the GGUF file, or
cast to bfloat16 get the same fingerprint; a fine-tuned checkpoint (other weights) does not.
The weights are read as bfloat16 (so a float32, float16 or bfloat16 load of the same checkpoint
agree) from the input embeddings: three rows spread over the vocabulary, 64 values each. It
lives with the Trace (numpy only: the weight tensor is only indexed and copied to the host),
so the engine, the analysis and the widgets share one definition."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np

#: Values hashed from each sampled embedding row.
_ROW_VALUES = 64


def _bfloat16_round(x: np.ndarray) -> np.ndarray:
    """float32 values rounded to the nearest bfloat16 (ties to even), as float32."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
    return rounded.astype(np.uint32).view(np.float32)


def _attribute(config: Any, name: str) -> Any:
    """A config value, None when absent or per-layer (configs whose layers differ raise on it)."""
    try:
        return getattr(config, name, None)
    except Exception:  # noqa: BLE001 - transformers' AmbiguousGlobalPerLayerAttributeError and the like
        return None


def model_fingerprint(model: Any) -> str:
    """16 hex digits identifying a transformers model's architecture and weights."""
    config = getattr(model, "config", None)
    text = config.get_text_config() if config is not None and hasattr(config, "get_text_config") else config
    shape = {name: _attribute(text, name) for name in
             ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "vocab_size")}
    h = hashlib.sha256(json.dumps(shape, sort_keys=True, default=str).encode())
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    weight = getattr(emb, "weight", None)
    if weight is not None and getattr(weight, "ndim", 0) == 2 and str(getattr(weight, "device", "")) != "meta":
        n = int(weight.shape[0])
        rows = [1 % n, n // 2, n - 1]
        sample = weight.detach()[rows, :_ROW_VALUES].float().cpu().numpy()
        h.update(_bfloat16_round(sample).tobytes())
    return h.hexdigest()[:16]


def trace_fingerprint(trace: Any) -> str | None:
    """The fingerprint recorded in a trace's meta (None for traces made before fingerprints)."""
    fp = getattr(trace, "meta", {}).get("model_fingerprint")
    return str(fp) if fp else None
