"""Every metric formula of the engine, in batched torch ops on the model's device.

Units: entropy and surprisal in bits (natural-log values divided by ln 2); probabilities in
[0, 1]. Nothing here loops over tokens, heads or entries in Python, and nothing copies to
the host: callers write the results into device buffers and copy once per run.
Definitions: shared/METRICS.md.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

LN2 = math.log(2.0)


def entropy_bits(p: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Shannon entropy in bits of probability vectors along ``dim`` (0·log 0 = 0)."""
    return -torch.special.xlogy(p, p).sum(dim) / LN2


# ------------------------------------------------------------------ output distribution
def output_distribution(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Metrics of the next-token distribution of raw logits [V] (before any warping).

    Returns (stats [5] float32 = entropy bits, top-k margin p1-p2, top-k mass, max prob,
    perplexity 2**entropy; top_k ids [k]; top_k probs [k]; log-probs [V] float32).
    """
    logp = torch.log_softmax(logits.float(), dim=-1)
    p = logp.exp()
    ent = -torch.where(p == 0, torch.zeros_like(p), p * logp).sum() / LN2  # NaN logits stay NaN
    probs, ids = torch.topk(p, k)
    second = probs[1] if k > 1 else torch.zeros_like(probs[0])
    stats = torch.stack([ent, probs[0] - second, probs.sum(), probs[0], torch.exp2(ent)])
    return stats, ids, probs, logp


def token_surprisal_bits(logp: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
    """-log2 p(token) for log-probs [..., V] and token ids [...]."""
    return -logp.gather(-1, token_ids.unsqueeze(-1)).squeeze(-1) / LN2


def prompt_surprisal_bits(hidden: torch.Tensor, lm_head: torch.nn.Module, next_ids: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """Surprisal (bits) of every prompt token after the first, from the prefill's final hidden
    states [P, D]: shifted cross-entropy, computed ``chunk`` positions at a time so no [P, V]
    logit matrix is ever materialised whole."""
    n = next_ids.shape[0]
    parts = [
        F.cross_entropy(lm_head(hidden[s : s + chunk]).float(), next_ids[s : s + chunk], reduction="none")
        for s in range(0, n, chunk)
    ]
    return (torch.cat(parts) if parts else hidden.new_zeros(0, dtype=torch.float32)) / LN2


# -------------------------------------------------------------------------- attention
def attention_row_stats(weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row entropy (bits) and concentration (largest weight) of attention rows [..., S]."""
    return entropy_bits(weights), weights.amax(-1)


def masked_score_variance(scores: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """Population variance of pre-softmax scores [..., S] over the unmasked keys."""
    if valid is None:
        return scores.float().var(-1, correction=0)
    s = torch.where(valid, scores.float(), torch.zeros((), dtype=torch.float32, device=scores.device))
    n = valid.sum(-1).clamp_min(1)
    mean = s.sum(-1) / n
    return (torch.where(valid, (s - mean.unsqueeze(-1)) ** 2, torch.zeros_like(s))).sum(-1) / n


def prompt_head_stats(weights: torch.Tensor) -> torch.Tensor:
    """Per-head prompt statistics of one layer's full prompt attention [H, P, P].

    Returns [4, H] float32: entropy (bits, mean over query rows), concentration (mean over
    rows of the row's largest weight), sink (mean attention to key 0), basin (mean mass on
    keys [P//3, 2P//3) over mean mass on all other keys + 1e-10).
    """
    p = weights.shape[-1]
    ent, conc = attention_row_stats(weights)
    sink = weights[..., 0]
    mid = weights[..., p // 3 : (2 * p) // 3].sum(-1)
    other = weights.sum(-1) - mid
    basin = mid.mean(-1) / (other.mean(-1) + 1e-10)
    return torch.stack([ent.mean(-1), conc.mean(-1), sink.mean(-1), basin])


def sparse_rows(weights: torch.Tensor, threshold: float, cap: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CSR pieces of one layer's prompt attention [H, P, P]: every weight > threshold, at most
    ``cap`` per row when cap > 0. Returns (row counts [H, P], keys [N] ascending within each
    row, weights [N]) with rows in (head, query) order."""
    if cap and cap < weights.shape[-1]:
        vals, idx = torch.topk(weights, cap, dim=-1)
        idx, order = torch.sort(idx, dim=-1)
        vals = vals.gather(-1, order)
        keep = vals > threshold
        return keep.sum(-1), idx[keep], vals[keep]
    keep = weights > threshold
    flat = keep.reshape(-1).nonzero().squeeze(1)
    return keep.sum(-1), flat % weights.shape[-1], weights.reshape(-1)[flat]


# ----------------------------------------------------------------------- hidden states
def hidden_stats(h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summaries of hidden vectors [L, D]: (float [3, L] = L2 norm, population std, mean;
    bool [2, L] = any NaN, any Inf)."""
    hf = h.float()
    floats = torch.stack([torch.linalg.vector_norm(hf, dim=-1), hf.std(-1, correction=0), hf.mean(-1)])
    flags = torch.stack([torch.isnan(hf).any(-1), torch.isinf(hf).any(-1)])
    return floats, flags


def layer_transformation(prev: torch.Tensor, cur: torch.Tensor) -> torch.Tensor:
    """1 - cos(h_l, h_{l-1}) per token for hidden states [P, D] of consecutive layers."""
    return 1.0 - F.cosine_similarity(cur.float(), prev.float(), dim=-1, eps=1e-8)


def repetition_similarity(window: torch.Tensor) -> torch.Tensor:
    """Min cosine similarity of the newest vector (row 0) of ``window`` [1 + W, D] to each of
    the W previous ones (rows 1..W)."""
    w = window.float()
    return F.cosine_similarity(w[:1], w[1:], dim=-1, eps=1e-8).min()
