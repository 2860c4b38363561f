"""The registered attention function: computes a layer's attention output and hands the
attention weights to the active collector, which reduces them on the device right away and
lets them go. Only one layer's weights exist at a time; the model never receives them
(the function returns ``None`` weights), so nothing accumulates across layers."""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:  # pragma: no cover
    from .collector import Collector

#: The name the function is registered under in transformers' AttentionInterface.
ATTENTION_NAME = "corevital"

ACTIVE_COLLECTOR: ContextVar["Collector | None"] = ContextVar("corevital_active_collector", default=None)

_registered = False


def _grouped_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a [B, H, q, x] @ b [B, Hkv, x, y] for grouped-query attention (H = Hkv * groups, heads
    of a group adjacent) without repeating b per head: a is viewed as [B, Hkv, groups*q, x]."""
    bsz, heads, q_len, _ = a.shape
    kv_heads = b.shape[1]
    if kv_heads == heads:
        return torch.matmul(a, b)
    out = torch.matmul(a.reshape(bsz, kv_heads, (heads // kv_heads) * q_len, a.shape[-1]), b)
    return out.reshape(bsz, heads, q_len, b.shape[-1])


def attention_weights(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None,
    kwargs: dict[str, Any],
    rows: slice = slice(None),
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Eager attention probabilities of the query rows ``rows``, exactly as transformers'
    eager path computes them.

    query [B, Hq, q, d], key [B, Hkv, k, d] (grouped-query heads share keys).
    Returns (weights [B, H, r, k] float32, pre-softmax scores, valid-key mask or None).
    """
    q_len = query.shape[-2]
    query = query[..., rows, :]
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    scores = _grouped_matmul(query, key.transpose(-1, -2)) * scaling
    position_bias = kwargs.get("position_bias")
    if position_bias is not None:  # T5 relative position bias
        scores = scores + (position_bias[..., rows, :] if position_bias.shape[-2] == q_len else position_bias)
    softcap = kwargs.get("softcap")
    if softcap is not None:  # Gemma-2 style logit soft-capping
        scores = torch.tanh(scores / softcap) * softcap
    valid: torch.Tensor | None = None
    n_keys = key.shape[-2]
    if attention_mask is not None:
        mask = attention_mask[..., :n_keys]
        if mask.shape[-2] == q_len:
            mask = mask[..., rows, :]
        if mask.dtype == torch.bool:
            valid = mask
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        else:
            valid = mask > torch.finfo(mask.dtype).min / 2
            scores = scores + mask
    elif q_len > 1 and getattr(module, "is_causal", False):
        q_idx = torch.arange(q_len, device=scores.device)[rows] + (n_keys - q_len)
        valid = (torch.arange(n_keys, device=scores.device) <= q_idx[:, None])[None, None]
        scores = scores.masked_fill(~valid, torch.finfo(scores.dtype).min)
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32)
    return weights, scores, valid


def corevital_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """AttentionInterface function: eager attention whose weights go to the active collector.

    Prompt passes run blocked over query tiles (see prompt_attention.py); single-row decode
    steps in one piece. Returns ``None`` weights so the model never accumulates them."""
    collector = ACTIVE_COLLECTOR.get()
    entry = collector.entry_of(module) if collector is not None else None
    q_len = query.shape[-2]
    if q_len > 1:  # a prompt pass (prefill or encoder): blocked over query tiles
        acc, step = collector.prompt_pass(entry, query.shape[1], key.shape[-2]) if entry else (None, False)  # type: ignore[union-attr]
        tile = collector.tile_rows(query.shape[1], key.shape[-2]) if collector is not None else q_len
        outputs = []
        for r0 in range(0, q_len, tile):
            rows = slice(r0, min(q_len, r0 + tile))
            weights, scores, valid = attention_weights(module, query, key, attention_mask, scaling, kwargs, rows)
            if acc is not None:
                acc.add(weights[0], r0)
            if step and rows.stop == q_len:
                collector.on_step_row(entry, weights, scores, valid)  # type: ignore[union-attr]
            outputs.append(_attend(module, weights, value, dropout))
        if acc is not None:
            collector.on_prompt_done(entry, acc)  # type: ignore[union-attr]
        out = torch.cat(outputs, dim=2) if len(outputs) > 1 else outputs[0]
    else:
        weights, scores, valid = attention_weights(module, query, key, attention_mask, scaling, kwargs)
        if entry is not None and entry[0].role != "encoder":
            collector.on_step_row(entry, weights, scores, valid)  # type: ignore[union-attr]
        out = _attend(module, weights, value, dropout)
    return out.transpose(1, 2).contiguous(), None


def _attend(module: nn.Module, weights: torch.Tensor, value: torch.Tensor, dropout: float) -> torch.Tensor:
    probs = weights.to(value.dtype)
    if dropout and module.training:
        probs = nn.functional.dropout(probs, p=dropout, training=True)
    return _grouped_matmul(probs, value)


def register() -> str:
    """Register the attention function and its mask function with transformers (idempotent)."""
    global _registered
    if not _registered:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

        AttentionInterface.register(ATTENTION_NAME, corevital_attention)
        AttentionMaskInterface.register(ATTENTION_NAME, sdpa_mask)  # boolean, or None when plainly causal
        _registered = True
    return ATTENTION_NAME
