"""Model identity by content: a short hash of the model's shape and of some of its weights.

Baselines and risk coefficients are matched on it, never on ``name_or_path``: the same SmolLM2
weights loaded through ``load_default_model``, through plain transformers from the GGUF file, or
cast to bfloat16 get the same fingerprint; a fine-tuned checkpoint (other weights) does not.
The weights are read as bfloat16 (so a float32, float16 or bfloat16 load of the same checkpoint
agree) from the input embeddings: three rows spread over the vocabulary. Cost: a few hundred
values copied to the host."""

from __future__ import annotations

import hashlib
import json

import torch
from torch import nn

#: Values hashed from each sampled embedding row.
_ROW_VALUES = 64


def model_fingerprint(model: nn.Module) -> str:
    """16 hex digits identifying the model's architecture and weights."""
    config = getattr(model, "config", None)
    text = config.get_text_config() if config is not None and hasattr(config, "get_text_config") else config
    shape = {name: getattr(text, name, None) for name in
             ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "vocab_size")}
    h = hashlib.sha256(json.dumps(shape, sort_keys=True, default=str).encode())
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    weight = getattr(emb, "weight", None)
    if isinstance(weight, torch.Tensor) and weight.dim() == 2 and weight.device.type != "meta":
        n = weight.shape[0]
        rows = torch.tensor([1 % n, n // 2, n - 1], device=weight.device)
        with torch.no_grad():
            sample = weight.index_select(0, rows)[:, :_ROW_VALUES].to(torch.bfloat16).float().cpu().contiguous()
        h.update(sample.numpy().tobytes())
    return h.hexdigest()[:16]
