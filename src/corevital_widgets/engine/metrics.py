"""Every metric formula of the engine, in batched torch ops on the model's device.

Units: entropy and surprisal in bits (natural-log values divided by ln 2); probabilities in
[0, 1]. Nothing here loops over tokens, heads or entries in Python, and nothing copies to
the host: callers write the results into device buffers and copy once per run.
Definitions: shared/METRICS.md.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

LN2 = math.log(2.0)


def entropy_bits(p: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Shannon entropy in bits of probability vectors along ``dim`` (0·log 0 = 0)."""
    return -torch.special.xlogy(p, p).sum(dim) / LN2


def entropy_bits_from_logp(logp: torch.Tensor) -> torch.Tensor:
    """Entropy in bits over the last dim from log-probabilities (``log_softmax`` output);
    0·log 0 = 0, and NaN logits give NaN (never a silent 0)."""
    p = logp.exp()
    return -torch.where(p == 0, torch.zeros_like(p), p * logp).sum(-1) / LN2


# ------------------------------------------------------------------ output distribution
def output_distribution(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Metrics of next-token distributions from raw logits [..., V] (before any warping).

    Returns (stats [..., 5] float32 = entropy bits, top-k margin p1-p2, top-k mass, max prob,
    perplexity 2**entropy; top_k ids [..., k]; top_k probs [..., k]; log-probs [..., V] float32).
    """
    logp = torch.log_softmax(logits.float(), dim=-1)
    ent = entropy_bits_from_logp(logp)
    top_logp, ids = torch.topk(logp, k, dim=-1)  # exp is monotonic: same order, only k exps
    probs = top_logp.exp()
    first = probs[..., 0]
    second = probs[..., 1] if k > 1 else torch.zeros_like(first)
    stats = torch.stack([ent, first - second, probs.sum(-1), first, torch.exp2(ent)], dim=-1)
    return stats, ids, probs, logp


def logit_lens(hidden: torch.Tensor, final_norm: torch.nn.Module | None, lm_head: torch.nn.Module,
               normed_last: bool = True, scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Logit lens: per-layer hidden vectors [..., L, D] decoded through the final norm and the
    unembedding. Returns (entropy bits [..., L], top-1 token id [..., L]); the [..., L, V]
    logits live only inside this call. With ``normed_last`` the last layer's vector is already
    final-normed (transformers' last hidden state) and is not normed again."""
    h = hidden.to(lm_head.weight.dtype)
    if final_norm is not None:
        normed = final_norm(h[..., :-1, :] if normed_last else h)
        h = torch.cat([normed, h[..., -1:, :]], dim=-2) if normed_last else normed
    logp = torch.log_softmax(lm_head(h * scale if scale != 1.0 else h).float(), dim=-1)
    return entropy_bits_from_logp(logp), logp.argmax(-1)


def token_surprisal_bits(logp: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
    """-log2 p(token) for log-probs [..., V] and token ids [...]."""
    return -logp.gather(-1, token_ids.unsqueeze(-1)).squeeze(-1) / LN2


#: CPU: positions per logit chunk of the prompt surprisal (a larger matrix product streams the
#: unembedding fewer times) and per cross-entropy call within a chunk (its log-softmax stays in
#: the cache instead of making a second chunk-sized matrix in memory).
CPU_SURPRISAL_CHUNK, CPU_SURPRISAL_ROWS = 512, 64
#: CPU, float32 linear unembedding: positions per pass and vocabulary rows per logit block of
#: :func:`_linear_surprisal_nats` (a [rows, block] logit tile stays in the cache).
CPU_LSE_ROWS, CPU_LSE_VOCAB = 4096, 1024


def prompt_surprisal_bits(hidden: torch.Tensor, lm_head: "torch.nn.Module | Callable[[torch.Tensor], torch.Tensor]",
                          next_ids: torch.Tensor, chunk: int = 256,
                          linear: "torch.nn.Linear | None" = None) -> torch.Tensor:
    """Surprisal (bits) of every prompt token after the first, from the prefill's final hidden
    states [P, D] and the model's map to logits (``lm_head``: the unembedding, or the verified
    head of :mod:`.logit_head`): shifted cross-entropy, computed ``chunk`` positions at a time so
    no [P, V] logit matrix is ever materialised whole (on the CPU: CPU_SURPRISAL_CHUNK positions,
    the cross-entropy CPU_SURPRISAL_ROWS at a time).

    ``linear``: when the verified head is exactly this float32 ``nn.Linear`` (the plain
    unembedding), on the CPU the surprisal is log Σ exp(logits) − logit[next] with the
    log-sum-exp taken over cache-sized vocabulary blocks and the next token's logit as one dot
    product per position: the same numbers within float32 rounding, no logit matrix written to
    memory and read back."""
    n = next_ids.shape[0]
    if (linear is not None and hidden.device.type == "cpu" and linear.weight.device.type == "cpu"
            and linear.weight.dtype == torch.float32 and hidden.dtype == torch.float32):
        return _linear_surprisal_nats(hidden, linear.weight, linear.bias, next_ids) / LN2
    rows = chunk
    if hidden.device.type == "cpu":
        chunk, rows = CPU_SURPRISAL_CHUNK, CPU_SURPRISAL_ROWS
    parts = []
    for s in range(0, n, chunk):
        logits = lm_head(hidden[s : s + chunk]).float()
        ids = next_ids[s : s + chunk]
        parts += [F.cross_entropy(logits[r : r + rows], ids[r : r + rows], reduction="none")
                  for r in range(0, logits.shape[0], rows)]
    return (torch.cat(parts) if parts else hidden.new_zeros(0, dtype=torch.float32)) / LN2


def _linear_surprisal_nats(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                           next_ids: torch.Tensor) -> torch.Tensor:
    """−log p(next) in nats under logits = hidden · weightᵀ (+ bias), [P] (see prompt_surprisal_bits)."""
    vocab = weight.shape[0]
    starts = range(0, vocab, CPU_LSE_VOCAB)
    parts = []
    for r0 in range(0, next_ids.shape[0], CPU_LSE_ROWS):
        h, ids = hidden[r0 : r0 + CPU_LSE_ROWS], next_ids[r0 : r0 + CPU_LSE_ROWS]
        lse = torch.empty(h.shape[0], len(starts))
        for j, v0 in enumerate(starts):
            b = None if bias is None else bias[v0 : v0 + CPU_LSE_VOCAB]
            lse[:, j] = torch.logsumexp(F.linear(h, weight[v0 : v0 + CPU_LSE_VOCAB], b), -1)
        target = (h * weight.index_select(0, ids)).sum(-1)
        if bias is not None:
            target = target + bias.index_select(0, ids)
        parts.append(torch.logsumexp(lse, -1) - target)
    return torch.cat(parts) if parts else hidden.new_zeros(0)


# -------------------------------------------------------------------------- attention
def grouped_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a [B, H, q, x] @ b [B, Hkv, x, y] for grouped-query attention (H = Hkv * groups, heads
    of a group adjacent) without repeating b per head: a is viewed as [B, Hkv, groups*q, x]."""
    bsz, heads, q_len, _ = a.shape
    kv_heads = b.shape[1]
    if kv_heads == heads:
        return torch.matmul(a, b)
    out = torch.matmul(a.reshape(bsz, kv_heads, (heads // kv_heads) * q_len, a.shape[-1]), b)
    return out.reshape(bsz, heads, q_len, b.shape[-1])


def attention_row_stats(weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row entropy (bits) and concentration (largest weight) of attention rows [..., S]."""
    return entropy_bits(weights), weights.amax(-1)


def step_attention_stats(scores: torch.Tensor) -> torch.Tensor:
    """Statistics of steps' attention rows of every layer, from their masked pre-softmax
    scores [..., L, H, S] (masked or absent keys at -inf).

    Returns [..., 3, L, H] float32: entropy (bits) and concentration of the softmax row, and
    the population variance of the scores over the row's keys (the pre-softmax-variance
    signal). A NaN score makes that head's entropy NaN."""
    s = scores.float()
    weights = torch.softmax(s, dim=-1)
    ent, conc = attention_row_stats(weights)
    valid = s > float("-inf")
    n = valid.sum(-1).clamp_min(1)
    x = torch.where(valid, s, torch.zeros((), dtype=s.dtype, device=s.device))
    mean = x.sum(-1) / n
    var = torch.where(valid, (x - mean.unsqueeze(-1)) ** 2, torch.zeros((), dtype=s.dtype, device=s.device)).sum(-1) / n
    return torch.stack([ent, conc, var], dim=-3)


def prompt_head_partials(weights: torch.Tensor, n_keys: int) -> torch.Tensor:
    """Per-head sums over a tile of prompt query rows [H, tq, n_keys] of the quantities whose
    means make the prompt head statistics: [5, H] float32 = entropy (bits), concentration (row
    max), sink (weight on key 0), middle mass (keys [P//3, 2P//3)), mass on all other keys."""
    ent, conc = attention_row_stats(weights)
    mid = weights[..., n_keys // 3 : (2 * n_keys) // 3].sum(-1)
    other = 1.0 - mid  # softmax rows sum to 1
    return torch.stack([ent.sum(-1), conc.sum(-1), weights[..., 0].sum(-1), mid.sum(-1), other.sum(-1)])


def prompt_head_stats(partials: torch.Tensor, n_rows: int) -> torch.Tensor:
    """[4, H] prompt head statistics from summed partials over all ``n_rows`` query rows:
    entropy (bits) and concentration, means over rows; sink, mean attention to key 0; basin,
    mean middle-third mass over (mean mass on the other keys + 1e-10)."""
    mean = partials / n_rows
    return torch.stack([mean[0], mean[1], mean[2], mean[3] / (mean[4] + 1e-10)])


def sparse_candidates(weights: torch.Tensor, threshold: float, cap: int = 0) -> tuple[torch.Tensor, ...]:
    """Candidate sparse entries of a tile of attention rows [H, tq, S], in fixed-size arrays so
    that no host sync is needed: every weight > threshold (a row has fewer than 1/threshold of
    them, which bounds the size), at most ``cap`` per row when cap > 0.

    Returns (row counts [H, tq], head, row-in-tile, key, weight, valid) with the entries in
    (head, row, key) order, keys ascending within a row; entries where ``valid`` is False are
    padding."""
    n_heads, n_rows, n_keys = weights.shape
    if cap and cap < n_keys:
        vals, idx = torch.topk(weights, cap, dim=-1)
        idx, order = torch.sort(idx, dim=-1)
        vals = vals.gather(-1, order)
        keep = vals > threshold
        flat = torch.arange(keep.numel(), device=weights.device)
        return keep.sum(-1), flat // (n_rows * cap), (flat // cap) % n_rows, idx.reshape(-1), vals.reshape(-1), keep.reshape(-1)
    keep = weights > threshold
    per_row = min(n_keys, math.ceil(1.0 / threshold) + 1) if threshold > 0 else n_keys
    flat = torch.nonzero_static(keep.reshape(-1), size=n_heads * n_rows * per_row, fill_value=-1).squeeze(1)
    valid = flat >= 0
    f = flat.clamp_min(0)
    return keep.sum(-1), f // (n_rows * n_keys), (f // n_keys) % n_rows, f % n_keys, weights.reshape(-1)[f], valid


def cap_rows(counts: torch.Tensor, keys: torch.Tensor, weights: torch.Tensor, cap: int) -> tuple[torch.Tensor, ...]:
    """Keep the ``cap`` largest weights of every CSR row (counts [..., P] rows in order);
    keys stay ascending within rows. Returns (counts, keys, weights)."""
    flat_counts = counts.reshape(-1).long()
    row = torch.repeat_interleave(torch.arange(flat_counts.numel(), device=keys.device), flat_counts)
    by_weight = torch.sort(-weights.float(), stable=True).indices
    order = by_weight[torch.sort(row[by_weight], stable=True).indices]  # rows, weight descending
    starts = torch.cumsum(flat_counts, 0) - flat_counts
    rank = torch.arange(order.numel(), device=keys.device) - starts[row[order]]
    kept = order[rank < cap]
    kept = kept[torch.sort(keys[kept].long(), stable=True).indices]
    kept = kept[torch.sort(row[kept], stable=True).indices]  # rows, key ascending
    return counts.clamp(max=cap), keys[kept], weights[kept]


# ----------------------------------------------------------------------- hidden states
def hidden_stats(h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summaries of hidden vectors [..., L, D]: (float [..., 3, L] = L2 norm, population std,
    mean; bool [..., 2, L] = any NaN, any Inf)."""
    hf = h.float()
    floats = torch.stack([torch.linalg.vector_norm(hf, dim=-1), hf.std(-1, correction=0), hf.mean(-1)], dim=-2)
    flags = torch.stack([torch.isnan(hf).any(-1), torch.isinf(hf).any(-1)], dim=-2)
    return floats, flags


def layer_transformation(prev: torch.Tensor, cur: torch.Tensor) -> torch.Tensor:
    """1 - cos(h_l, h_{l-1}) per token for hidden states [P, D] of consecutive layers."""
    return 1.0 - F.cosine_similarity(cur.float(), prev.float(), dim=-1, eps=1e-8)


def repetition_similarities(seq: torch.Tensor, previous: int) -> torch.Tensor:
    """For vectors ``seq`` [previous + n, D] (the ``previous`` before a run of n steps, then
    the n steps' own): per step, the min cosine similarity to each of its ``previous``
    predecessors. Returns [n]."""
    n = seq.shape[0] - previous
    w = seq.float()
    sims = torch.stack([F.cosine_similarity(w[previous:], w[previous - j : previous - j + n], dim=-1, eps=1e-8)
                        for j in range(1, previous + 1)])
    return sims.min(0).values
