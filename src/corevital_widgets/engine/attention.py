"""The registered attention function.

The layer output comes from the fused kernel (``scaled_dot_product_attention``), exactly what
the model computes without corevital, so generation is unchanged. Statistics come from the
pre-softmax scores computed beside it:

- a decode step (one query row): the masked score row goes to the collector, which reduces
  all layers at once when the step's forward ends;
- a prompt pass (prefill or encoder): a blocked pass over query tiles builds each tile's
  probabilities, adds its statistics and sparse candidates, and lets it go, so at most one
  tile of one layer's attention exists at any time.

The function returns ``None`` weights, so the model never accumulates attention."""

from __future__ import annotations

import warnings
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from . import metrics
from . import triton_prompt
from .triton_prompt import fused_prompt_layer, fused_prompt_supported

if TYPE_CHECKING:  # pragma: no cover
    from .collector import Collector

#: The name the function is registered under in transformers' AttentionInterface.
ATTENTION_NAME = "corevital"

ACTIVE_COLLECTOR: ContextVar["Collector | None"] = ContextVar("corevital_active_collector", default=None)

_registered = False


def _causal_valid(q_len: int, n_keys: int, rows: slice, device: torch.device, total_keys: int | None = None) -> torch.Tensor:
    """[1, 1, r, n_keys] causal mask of query rows ``rows`` (queries are the last q_len of
    ``total_keys`` positions; only the first n_keys keys are shown)."""
    q_idx = torch.arange(q_len, device=device)[rows] + ((total_keys or n_keys) - q_len)
    return (torch.arange(n_keys, device=device) <= q_idx[:, None])[None, None]


def softmax_scale(query: torch.Tensor, scaling: float | None) -> float:
    """The factor scores are multiplied by: the module's ``scaling``, else 1/sqrt(head size)."""
    return query.shape[-1] ** -0.5 if scaling is None else float(scaling)


def plain_scores(kwargs: dict[str, Any]) -> bool:
    """Whether the scores are q·k times the scale alone (no T5 position bias, no soft-capping)."""
    return kwargs.get("position_bias") is None and kwargs.get("softcap") is None


def attention_scores(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None,
    kwargs: dict[str, Any],
    rows: slice = slice(None),
    total_keys: int | None = None,
) -> torch.Tensor:
    """Pre-softmax scores of the query rows ``rows`` as transformers' eager path computes them,
    with masked keys set to -inf. query [B, Hq, q, d], key [B, Hkv, k, d] (grouped-query heads
    share keys; ``key`` may be the first k of ``total_keys`` keys); returns [B, Hq, r, k] in
    the query dtype."""
    q_len, n_keys = query.shape[-2], key.shape[-2]
    scaling = softmax_scale(query, scaling)
    scores = metrics.grouped_matmul(query[..., rows, :], key.transpose(-1, -2))
    if scaling != 1.0:
        scores = scores * scaling
    position_bias = kwargs.get("position_bias")
    if position_bias is not None:  # T5 relative position bias
        bias = position_bias[..., :n_keys]
        scores = scores + (bias[..., rows, :] if bias.shape[-2] == q_len else bias)
    softcap = kwargs.get("softcap")
    if softcap is not None:  # Gemma-2 style logit soft-capping
        scores = torch.tanh(scores / softcap) * softcap
    valid: torch.Tensor | None = None
    if attention_mask is not None:
        mask = attention_mask[..., :n_keys]
        if mask.shape[-2] == q_len:
            mask = mask[..., rows, :]
        if mask.dtype == torch.bool:
            valid = mask
        else:
            valid = mask > torch.finfo(mask.dtype).min / 2
            scores = scores + torch.where(valid, mask, torch.zeros((), dtype=mask.dtype, device=mask.device))
    elif q_len > 1 and getattr(module, "is_causal", False):
        valid = _causal_valid(q_len, n_keys, rows, scores.device, total_keys)
    if valid is not None:
        scores = scores.masked_fill(~valid, float("-inf"))
    return scores


def step_row_scores(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None,
    kwargs: dict[str, Any],
) -> tuple[torch.Tensor, float]:
    """Masked scores [H, S] of the last query row, and the factor still to multiply them by.

    Where the scale commutes with the masking (no position bias, no soft-capping, no additive
    float mask) the row is returned unscaled, so the collector scales every layer's row in one
    op at the step's end; otherwise it is scaled here and the factor is 1."""
    q_len = query.shape[-2]
    last = slice(q_len - 1, q_len)
    if plain_scores(kwargs) and (attention_mask is None or attention_mask.dtype == torch.bool):
        scale = softmax_scale(query, scaling)
        return attention_scores(module, query, key, attention_mask, 1.0, kwargs, last)[0, :, -1, :], scale
    return attention_scores(module, query, key, attention_mask, scaling, kwargs, last)[0, :, -1, :], 1.0


def attention_probs(scores: torch.Tensor) -> torch.Tensor:
    """Softmax in float32 over keys (masked keys, at -inf, get 0)."""
    return torch.softmax(scores, dim=-1, dtype=torch.float32)


def layer_output(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None,
    dropout: float,
    kwargs: dict[str, Any],
) -> torch.Tensor:
    """The attention output [B, q, H, d]: the fused SDPA kernel where it expresses the layer,
    else eager math (T5 position bias, soft-capping)."""
    q_len, n_keys = query.shape[-2], key.shape[-2]
    p = dropout if module.training else 0.0
    if plain_scores(kwargs):
        mask = attention_mask[..., :n_keys] if attention_mask is not None else None
        causal = False
        if mask is None and q_len > 1 and getattr(module, "is_causal", False):
            if q_len == n_keys:
                causal = True
            else:
                mask = _causal_valid(q_len, n_keys, slice(None), query.device)
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=p, is_causal=causal,
                                             scale=scaling, enable_gqa=key.shape[1] != query.shape[1])
    else:
        probs = attention_probs(attention_scores(module, query, key, attention_mask, scaling, kwargs)).to(value.dtype)
        if p:
            probs = F.dropout(probs, p=p, training=True)
        out = metrics.grouped_matmul(probs, value)
    return out.transpose(1, 2).contiguous()


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
    """AttentionInterface function (see the module docstring)."""
    out = layer_output(module, query, key, value, attention_mask, scaling, dropout, kwargs)
    collector = ACTIVE_COLLECTOR.get()
    entry = collector.entry_of(module) if collector is not None else None
    if entry is None:
        return out, None
    q_len = query.shape[-2]
    if q_len > 1:  # a prompt pass: fused kernels on CUDA, else blocked over query tiles
        acc, step = collector.prompt_pass(entry, query.shape[1], key.shape[-2], query.device)  # type: ignore[union-attr]
        step_done = False
        if acc is not None:
            causal = bool(getattr(module, "is_causal", False))
            fused = None
            if fused_prompt_supported(query, key, attention_mask, kwargs, acc.threshold, module.training):
                fused = _try_fused(query, key, scaling, causal, acc.threshold, acc.cap, collector.tile_bytes)  # type: ignore[union-attr]
            if fused is not None:
                acc.add_fused(*fused)
            else:
                n_keys = key.shape[-2]
                tile = collector.tile_rows(query.shape[1], n_keys)  # type: ignore[union-attr]
                for r0 in range(0, q_len, tile):
                    rows = slice(r0, min(q_len, r0 + tile))
                    # a causal tile never sees keys past its last row: skip them (exact, halves the work)
                    upto = min(n_keys, rows.stop + n_keys - q_len) if causal else n_keys
                    scores = attention_scores(module, query, key[..., :upto, :], attention_mask, scaling, kwargs, rows,
                                              total_keys=n_keys)
                    acc.add(attention_probs(scores)[0], r0)
                    if step and rows.stop == q_len:  # a copy: the tile itself must not outlive this loop
                        collector.on_step_scores(entry, scores[0, :, -1, :].clone())  # type: ignore[union-attr]
                        step_done = True
                    del scores
            collector.on_prompt_done(entry, acc)  # type: ignore[union-attr]
        if step and not step_done:
            collector.on_step_scores(entry, *step_row_scores(module, query, key, attention_mask, scaling, kwargs))  # type: ignore[union-attr]
    elif entry[0].role != "encoder":
        if attention_mask is None and plain_scores(kwargs):
            # a decode step: keep references only; every layer's row is computed at the step's end
            collector.on_step_query(entry, query[0, :, -1, :], key[0], softmax_scale(query, scaling))  # type: ignore[union-attr]
        else:
            collector.on_step_scores(entry, *step_row_scores(module, query, key, attention_mask, scaling, kwargs))  # type: ignore[union-attr]
    return out, None


def _try_fused(query: torch.Tensor, key: torch.Tensor, scaling: float | None, causal: bool, threshold: float,
               cap: int, buffer_bytes: int) -> tuple[torch.Tensor, ...] | None:
    """The fused kernels' result, or None after a Triton failure (e.g. a GPU whose compiler
    lacks an instruction): the kernels are then switched off for the process, with one warning,
    and the caller takes the tiled torch path. Out-of-memory errors propagate."""
    try:
        return fused_prompt_layer(query, key, scaling, causal, threshold, cap, buffer_bytes)
    except torch.cuda.OutOfMemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - any compile/launch failure of the optional fast path
        triton_prompt.disable(f"{type(exc).__name__}: {exc}")
        warnings.warn(f"corevital: the fused Triton prompt kernels failed ({type(exc).__name__}: {exc}); using the "
                      "tiled torch path from now on (same numbers, slower on long prompts)", RuntimeWarning, stacklevel=2)
        return None


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
