"""The prompt pass of one layer as two fused Triton kernels (CUDA only).

Same numbers as the tiled torch path (:mod:`.prompt_attention`), without ever writing a score
or weight to memory: like a flash-attention forward, each program holds a block of query rows
and streams the keys through shared memory.

1. ``_row_stats``: per (head, query row), an online softmax in base 2 over the row's keys —
   running max ``m``, sum ``l = Σ 2^(s-m)``, ``A = Σ 2^(s-m)(s-m)`` (entropy), middle-third sum
   — giving entropy in bits ``log2 l - A / l``, concentration ``1 / l``, sink ``2^(s0-m) / l``,
   middle mass and the row's log-sum-exp. Scores ``s`` are ``q·k · scale · log2(e)`` in
   float32 (the torch path rounds them to the model dtype first; they agree within it).
2. ``_sparse_rows``: the keys again, now with each row's log-sum-exp known: every weight
   ``2^(s - lse) > threshold`` is written, in key order, into a fixed [H, rows, R] buffer
   (R = ceil(1/threshold) + 1 bounds a softmax row's entries above the threshold), so no host
   sync is needed until the one compaction per layer.

Eligible calls (see :func:`fused_prompt_supported`): one sequence, no attention mask other than
plain causal (transformers passes ``None`` then), no position bias or soft-capping, a head
size of at most 256, a positive threshold. Everything else takes the torch path.
"""

from __future__ import annotations

import itertools
import math
import os
from dataclasses import dataclass
from typing import Any

import torch

try:  # triton ships with CUDA builds of torch; the CPU build has none
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised on CPU-only installs
    triton = None
    tl = None

LOG2E = 1.4426950408889634
#: Largest per-row sparse buffer (entries) the kernel accepts: threshold >= 1/(MAX_ROW_ENTRIES-1).
MAX_ROW_ENTRIES = 1024
#: Set to "0" to force the torch path (benchmarks compare the two).
ENV_SWITCH = "COREVITAL_TRITON"


#: Why the kernels were switched off in this process (a failure seen by the attention function).
disabled_reason: str | None = None


def disable(reason: str) -> None:
    """Switch the kernels off for the rest of the process (after a Triton failure)."""
    global disabled_reason
    disabled_reason = reason


def triton_available() -> bool:
    return (triton is not None and disabled_reason is None and torch.cuda.is_available()
            and os.environ.get(ENV_SWITCH, "1") != "0")


def row_entries(threshold: float) -> int:
    """Size of a row's sparse buffer: at most ceil(1/threshold) weights of a softmax row exceed it."""
    return math.ceil(1.0 / threshold) + 1


def kernels_take(query: torch.Tensor, key: torch.Tensor) -> bool:
    """Whether corevital's Triton kernels (this module's and :mod:`.triton_step`'s) can run on
    these tensors: the kernels on, CUDA, query and key of one dtype whose dot this GPU has
    (bfloat16: sm80+), a head size of at most 256."""
    return (
        triton_available()
        and query.is_cuda
        and query.dtype in (torch.float16, torch.bfloat16, torch.float32)
        and (query.dtype != torch.bfloat16 or torch.cuda.get_device_capability(query.device)[0] >= 8)
        and key.dtype == query.dtype
        and query.shape[-1] <= 256
    )


def fused_prompt_supported(query: torch.Tensor, key: torch.Tensor, attention_mask: torch.Tensor | None,
                           kwargs: dict[str, Any], threshold: float, training: bool) -> bool:
    """Whether the fused kernels express this prompt-pass call exactly."""
    return (
        kernels_take(query, key)
        and query.shape[0] == 1
        and attention_mask is None
        and kwargs.get("position_bias") is None
        and kwargs.get("softcap") is None
        and kwargs.get("sliding_window") is None
        and not training
        and query.shape[1] % key.shape[1] == 0
        and 0.0 < threshold
        and row_entries(threshold) <= MAX_ROW_ENTRIES
    )


if triton is not None:

    @triton.jit
    def _scores_block(q, K, kv_base, stride_kn, stride_kd, offs_n, offs_d, n_keys, qpos, qk_scale,
                      CAUSAL: tl.constexpr, HEAD_D: tl.constexpr, IEEE: tl.constexpr):
        """Scores (base-2 logits) of a [BLOCK_M, BLOCK_N] block; masked keys at -inf."""
        kmask = offs_n < n_keys
        k = tl.load(K + kv_base + offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd,
                    mask=kmask[:, None] & (offs_d[None, :] < HEAD_D), other=0.0)
        if IEEE:
            s = tl.dot(q, tl.trans(k), input_precision="ieee")
        else:
            s = tl.dot(q, tl.trans(k))
        s = s * qk_scale
        valid = kmask[None, :]
        if CAUSAL:
            valid = valid & (offs_n[None, :] <= qpos[:, None])
        return tl.where(valid, s, float("-inf")), valid

    @triton.jit
    def _sequence(SEQ, b):
        """Sequence ``b``'s row of the [B, 4] int32 table: first query row, first key, query rows, keys."""
        return tl.load(SEQ + b * 4), tl.load(SEQ + b * 4 + 1), tl.load(SEQ + b * 4 + 2), tl.load(SEQ + b * 4 + 3)

    # Triton compiles a kernel again for every new combination of its integer arguments' "is 1" and
    # "divisible by 16": arguments that follow a batch's width (or a decode step's key count) are
    # not specialized, so each kernel compiles once (in a dataset's first batch), not again at a
    # later batch whose width happens to divide by 16. Strides that address the queries and keys
    # stay specialized (their divisibility lets the loads be vectorized).
    @triton.jit(do_not_specialize=["stride_ob", "stride_oc", "stride_oh"])
    def _row_stats(Q, K, OUT, SEQ, stride_qb, stride_qh, stride_qm, stride_qd, stride_kb, stride_kh, stride_kn,
                   stride_kd, stride_ob, stride_oc, stride_oh, groups, qk_scale,
                   CAUSAL: tl.constexpr, HEAD_D: tl.constexpr, BLOCK_D: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, IEEE: tl.constexpr):
        """Rows of sequence ``program_id(2)``; OUT is [5, B, H, rows] (its rows past the sequence's untouched)."""
        start_m = tl.program_id(0)
        head = tl.program_id(1)
        b = tl.program_id(2).to(tl.int64)
        q_start, k_start, n_rows, n_keys = _sequence(SEQ, b)
        q_offset = n_keys - n_rows
        Q += b * stride_qb + q_start.to(tl.int64) * stride_qm
        K += b * stride_kb + k_start.to(tl.int64) * stride_kn
        offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_d = tl.arange(0, BLOCK_D)
        rmask = offs_m < n_rows
        qpos = offs_m + q_offset
        q = tl.load(Q + head * stride_qh + offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd,
                    mask=rmask[:, None] & (offs_d[None, :] < HEAD_D), other=0.0)
        kv_base = (head // groups) * stride_kh
        m = tl.full([BLOCK_M], -1.0e30, tl.float32)
        l = tl.zeros([BLOCK_M], tl.float32)
        a = tl.zeros([BLOCK_M], tl.float32)
        lmid = tl.zeros([BLOCK_M], tl.float32)
        s0 = tl.zeros([BLOCK_M], tl.float32)
        mid_lo = n_keys // 3
        mid_hi = (2 * n_keys) // 3
        hi = n_keys
        if CAUSAL:
            hi = tl.minimum(n_keys, q_offset + (start_m + 1) * BLOCK_M)
        hi = hi * (start_m * BLOCK_M < n_rows).to(tl.int32)  # a block past this sequence's rows: nothing to do
        for start_n in range(0, hi, BLOCK_N):
            offs_n = start_n + tl.arange(0, BLOCK_N)
            s, valid = _scores_block(q, K, kv_base, stride_kn, stride_kd, offs_n, offs_d, n_keys, qpos, qk_scale,
                                     CAUSAL, HEAD_D, IEEE)
            if start_n == 0:
                s0 = tl.sum(tl.where(offs_n[None, :] == 0, s, 0.0), 1)
            m_new = tl.maximum(m, tl.max(s, 1))
            alpha = tl.exp2(m - m_new)
            e = tl.exp2(s - m_new[:, None])  # 0 where masked
            d = tl.where(valid, s - m_new[:, None], 0.0)
            a = alpha * (a + (m - m_new) * l) + tl.sum(e * d, 1)
            l = alpha * l + tl.sum(e, 1)
            in_mid = (offs_n >= mid_lo) & (offs_n < mid_hi)
            lmid = alpha * lmid + tl.sum(tl.where(in_mid[None, :], e, 0.0), 1)
            m = m_new
        inv = 1.0 / l
        base = OUT + b * stride_ob + head * stride_oh + offs_m
        tl.store(base, tl.log2(l) - a * inv, mask=rmask)  # entropy, bits
        tl.store(base + stride_oc, inv, mask=rmask)  # concentration: the largest weight
        tl.store(base + 2 * stride_oc, tl.exp2(s0 - m) * inv, mask=rmask)  # sink: weight on key 0
        tl.store(base + 3 * stride_oc, lmid * inv, mask=rmask)  # middle-third mass
        tl.store(base + 4 * stride_oc, m + tl.log2(l), mask=rmask)  # log2-sum-exp2 of the row

    @triton.jit(do_not_specialize=["stride_lb", "stride_lh", "rows", "row0"])
    def _sparse_rows(Q, K, LSE, KEYS, WEIGHTS, COUNTS, SEQ, stride_qb, stride_qh, stride_qm, stride_qd, stride_kb,
                     stride_kh, stride_kn, stride_kd, stride_lb, stride_lh, rows, row0, groups, qk_scale, threshold, R,
                     CAUSAL: tl.constexpr, HEAD_D: tl.constexpr, BLOCK_D: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, IEEE: tl.constexpr):
        """Rows row0 + [0, rows) of one head of sequence ``program_id(2)``; buffers are
        [B, H, rows, R] / [B, H, rows] (a row past the sequence's gets count 0)."""
        start_m = tl.program_id(0)
        head = tl.program_id(1)
        b = tl.program_id(2).to(tl.int64)
        q_start, k_start, n_rows, n_keys = _sequence(SEQ, b)
        q_offset = n_keys - n_rows
        Q += b * stride_qb + q_start.to(tl.int64) * stride_qm
        K += b * stride_kb + k_start.to(tl.int64) * stride_kn
        local = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_m = row0 + local
        offs_d = tl.arange(0, BLOCK_D)
        in_chunk = local < rows
        rmask = in_chunk & (offs_m < n_rows)
        qpos = offs_m + q_offset
        q = tl.load(Q + head * stride_qh + offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd,
                    mask=rmask[:, None] & (offs_d[None, :] < HEAD_D), other=0.0)
        lse = tl.load(LSE + b * stride_lb + head * stride_lh + offs_m, mask=rmask, other=0.0)
        kv_base = (head // groups) * stride_kh
        row_id = (b * tl.num_programs(1) + head) * rows + local
        out_row = row_id * R
        count = tl.zeros([BLOCK_M], tl.int32)
        hi = n_keys
        if CAUSAL:
            hi = tl.minimum(n_keys, q_offset + row0 + (start_m + 1) * BLOCK_M)
        hi = hi * (row0 + start_m * BLOCK_M < n_rows).to(tl.int32)
        for start_n in range(0, hi, BLOCK_N):
            offs_n = start_n + tl.arange(0, BLOCK_N)
            s, valid = _scores_block(q, K, kv_base, stride_kn, stride_kd, offs_n, offs_d, n_keys, qpos, qk_scale,
                                     CAUSAL, HEAD_D, IEEE)
            w = tl.exp2(s - lse[:, None])
            keep = ((w > threshold) & valid & rmask[:, None]).to(tl.int32)
            n_keep = tl.sum(keep, 1)
            if tl.max(n_keep, 0) > 0:  # most blocks hold no weight above the threshold: skip the scan
                pos = count[:, None] + tl.cumsum(keep, 1) - 1
                ok = (keep > 0) & (pos < R)
                tl.store(KEYS + out_row[:, None] + pos, offs_n[None, :] + tl.zeros([BLOCK_M, BLOCK_N], tl.int32),
                         mask=ok)
                tl.store(WEIGHTS + out_row[:, None] + pos, w, mask=ok)
                count += n_keep
        tl.store(COUNTS + row_id, tl.minimum(count, R), mask=in_chunk)


def _blocks(head_dim: int) -> tuple[int, int, int, int]:
    """(BLOCK_M, BLOCK_N, BLOCK_D, num_warps) for a head size."""
    block_d = max(16, triton.next_power_of_2(head_dim))
    if block_d <= 64:
        return 128, 64, block_d, 4
    if block_d <= 128:
        return 128, 64, block_d, 8
    return 64, 32, block_d, 8


def fused_prompt_layer(query: torch.Tensor, key: torch.Tensor, scaling: float | None, causal: bool, threshold: float,
                       cap: int, buffer_bytes: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One layer's prompt statistics and sparse profile from query [1, H, P, d] and key
    [1, Hkv, K, d] (queries are the last P of the K positions).

    Returns (row statistics [5, H, P] float32 = entropy bits, concentration, sink, middle-third
    mass, log2-sum-exp2; sparse counts [H, P] int32; keys [N] int32; weights [N] float32) with
    the entries in (head, row, key) order. ``buffer_bytes`` bounds the sparse buffer of one
    launch (rows are taken in chunks). One host sync (the compaction).

    The kernels run on the tensors' own device and its current stream (a model split over
    several GPUs has layers on each; Triton launches on the *current* device otherwise)."""
    return fused_prompt_batch(query, key, [(0, 0, query.shape[-2], key.shape[-2])], scaling, causal, threshold, cap,
                              buffer_bytes).sequence(0)


@dataclass
class FusedBatch:
    """One layer's prompt pass for the B sequences of a batch (:func:`fused_prompt_batch`)."""

    stats: torch.Tensor  # [5, B, H, P] float32 row statistics; rows past a sequence's P_b unspecified
    counts: torch.Tensor  # [B, H, P] int32 entries per row; 0 past a sequence's rows
    keys: torch.Tensor  # [N] int32, (sequence, head, row, key) order; key indices from the span's start
    weights: torch.Tensor  # [N] float32
    rows: list[int]  # P_b, query rows per sequence
    entries: list[int]  # N_b, entries per sequence (on the host)
    table: torch.Tensor  # [B, 4] int32 on the device: the spans the kernels read (P_b in column 2)

    def offsets(self) -> list[int]:
        """Where each sequence's entries start in ``keys`` / ``weights`` (and the end)."""
        return [0, *itertools.accumulate(self.entries)]

    def sequence(self, b: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sequence ``b``'s (stats [5, H, P_b], counts [H, P_b], keys, weights), as
        :func:`fused_prompt_layer` returns them for its span alone."""
        lo, hi = self.offsets()[b : b + 2]
        p = self.rows[b]
        return self.stats[:, b, :, :p], self.counts[b, :, :p], self.keys[lo:hi], self.weights[lo:hi]


def fused_prompt_batch(query: torch.Tensor, key: torch.Tensor, spans: list[tuple[int, int, int, int]],
                       scaling: float | None, causal: bool, threshold: float, cap: int,
                       buffer_bytes: int) -> FusedBatch:
    """:func:`fused_prompt_layer` for the B sequences of a padded batch in one launch per kernel:
    query [B, H, Wq, d], key [B, Hkv, Wk, d], and per sequence b ``spans[b]`` = (first query row,
    first key, query rows P_b, keys K_b): its queries are ``query[b, :, q0 : q0 + P_b]``, the last
    P_b of its keys ``key[b, :, k0 : k0 + K_b]`` (key indices count from k0; nothing outside the
    span is read, so padding is neither a key nor a row). Returns a :class:`FusedBatch`:
    ``.sequence(b)`` is what :func:`fused_prompt_layer` gives for sequence b's slices alone.
    ``buffer_bytes`` bounds the sparse buffer of one launch (all sequences' rows together). Two host syncs per chunk of rows at most (the compaction, and the
    per-sequence entry counts), not per sequence."""
    with torch.cuda.device(query.device):
        return _fused_prompt_batch(query, key, spans, scaling, causal, threshold, cap, buffer_bytes)


def _fused_prompt_batch(query: torch.Tensor, key: torch.Tensor, spans: list[tuple[int, int, int, int]],
                        scaling: float | None, causal: bool, threshold: float, cap: int,
                        buffer_bytes: int) -> FusedBatch:
    n_seqs, n_heads, _, head_dim = query.shape
    device = query.device
    if scaling is None:
        scaling = head_dim ** -0.5
    qk_scale = float(scaling) * LOG2E
    groups = n_heads // key.shape[1]
    block_m, block_n, block_d, warps = _blocks(head_dim)
    ieee = query.dtype == torch.float32
    table = torch.tensor(spans, dtype=torch.int32).to(device, non_blocking=True)
    n_rows = max(p for _, _, p, _ in spans)
    qs, ks = query.stride(), key.stride()
    stats = torch.empty(5, n_seqs, n_heads, n_rows, dtype=torch.float32, device=device)
    _row_stats[(triton.cdiv(n_rows, block_m), n_heads, n_seqs)](
        query, key, stats, table, qs[0], qs[1], qs[2], qs[3], ks[0], ks[1], ks[2], ks[3],
        stats.stride(1), stats.stride(0), stats.stride(2), groups, qk_scale,
        CAUSAL=causal, HEAD_D=head_dim, BLOCK_D=block_d, BLOCK_M=block_m, BLOCK_N=block_n, IEEE=ieee,
        num_warps=warps, num_stages=2)
    lse = stats[4]
    r = row_entries(threshold)
    chunk = max(block_m, (buffer_bytes // max(1, n_seqs * n_heads * r * 8)) // block_m * block_m)
    counts_parts, keys_parts, weight_parts = [], [], []
    for row0 in range(0, n_rows, chunk):
        rows = min(chunk, n_rows - row0)
        keys_buf = torch.empty(n_seqs, n_heads, rows, r, dtype=torch.int32, device=device)
        w_buf = torch.empty(n_seqs, n_heads, rows, r, dtype=torch.float32, device=device)
        counts = torch.empty(n_seqs, n_heads, rows, dtype=torch.int32, device=device)
        _sparse_rows[(triton.cdiv(rows, block_m), n_heads, n_seqs)](
            query, key, lse, keys_buf, w_buf, counts, table, qs[0], qs[1], qs[2], qs[3], ks[0], ks[1], ks[2], ks[3],
            lse.stride(0), lse.stride(1), rows, row0, groups, qk_scale, float(threshold), r,
            CAUSAL=causal, HEAD_D=head_dim, BLOCK_D=block_d, BLOCK_M=block_m, BLOCK_N=block_n, IEEE=ieee,
            num_warps=warps, num_stages=2)
        slot = torch.arange(r, device=device)
        if cap and cap < r:  # the cap largest of each row, keys kept ascending
            w_masked = torch.where(slot < counts[..., None], w_buf, -1.0)
            top_w, top_slot = torch.topk(w_masked, cap, dim=-1)
            top_slot, order = torch.sort(top_slot, dim=-1)
            w_buf, keys_buf = top_w.gather(-1, order), keys_buf.gather(-1, top_slot)
            counts, slot = counts.clamp(max=cap), slot[:cap]
        kept = (slot < counts[..., None]).reshape(-1).nonzero().squeeze(1)  # a host sync
        counts_parts.append(counts)
        keys_parts.append(keys_buf.reshape(-1)[kept])
        weight_parts.append(w_buf.reshape(-1)[kept])
    counts = torch.cat(counts_parts, dim=2)  # [B, H, rows]; 0 past each sequence's rows
    keys_flat, weights = torch.cat(keys_parts), torch.cat(weight_parts)
    if len(counts_parts) > 1:  # chunks arrive in (chunk, sequence, head, row) order; CSR wants (sequence, head, row)
        rows_of = (torch.arange(n_seqs * n_heads, device=device)[:, None] * n_rows)
        row_id = torch.cat([(rows_of + i * chunk + torch.arange(c.shape[2], device=device)[None, :]).reshape(-1)
                            for i, c in enumerate(counts_parts)])
        per_entry = torch.repeat_interleave(row_id, torch.cat([c.reshape(-1) for c in counts_parts]).long())
        order = torch.sort(per_entry, stable=True).indices
        keys_flat, weights = keys_flat[order], weights[order]
    per_seq = counts.sum((1, 2)).tolist() if n_seqs > 1 else [keys_flat.numel()]  # a host sync (B > 1)
    return FusedBatch(stats, counts, keys_flat, weights, [p for _, _, p, _ in spans], per_seq, table)
