"""A decode step's attention statistics as one fused Triton kernel (CUDA only).

For every layer, sequence and head, the entropy (bits), concentration and pre-softmax score
variance of the step's one query row over its keys: the numbers of
:func:`.metrics.step_attention_stats`, without the torch path's copies (it stacks the layers'
keys, writes the score rows [B, L, H, S] in float32 and reduces them per chunk of steps; at batch
32 on an 8B model that is 1.7 GB of keys copied and 105 MB of rows written per step).

``_step_stats`` runs one program per (layer, sequence, key-value head): the query rows of the
heads that share the key-value head (padded to 16 for the tensor cores) stream the layer's keys
where its cache holds them (a table of each layer's offset from the first layer's keys), in
blocks of ``BLOCK_N``:

- an online softmax in base 2 (running max ``m``, ``l = Σ 2^(s-m)``, ``A = Σ 2^(s-m)(s-m)``)
  gives entropy ``log2 l - A / l`` bits and concentration ``1 / l`` (the largest weight);
- Chan's merge of each block's count, mean and summed squared deviations gives the population
  variance of the scaled scores ``q·k · scale`` over the valid keys.

Scores are float32 products of the model-dtype inputs (the torch path rounds them to the model
dtype first; they agree within it). A NaN or +inf score among a row's valid keys makes its
entropy and concentration NaN, as the torch path's softmax does; a row with no valid key gets NaN
entropy and concentration and variance 0, as there.
"""

from __future__ import annotations

import torch

from .triton_prompt import LOG2E, kernels_take, tl, triton

#: Keys per block of the kernel's loop (a block of 64 keys of a 128-wide head is 16 KB in bf16).
BLOCK_KEYS = 64


def step_stats_supported(queries: list[torch.Tensor], keys: list[torch.Tensor], valid: torch.Tensor | None) -> bool:
    """Whether :func:`fused_step_stats` computes this step's statistics exactly: CUDA tensors of
    one device and dtype, every layer's query [B, H, d] (or [H, d]) and keys [B, Hkv, S, d] (or
    [Hkv, S, d]) of one shape, the keys' last dimension contiguous, H a multiple of Hkv, d <= 256."""
    q0, k0 = queries[0], keys[0]
    if not kernels_take(q0, k0):
        return False
    if k0.dim() != q0.dim() + 1 or q0.shape[-1] != k0.shape[-1] or q0.shape[-2] % k0.shape[-3]:
        return False
    same = all(q.shape == q0.shape and q.dtype == q0.dtype and q.device == q0.device for q in queries) and all(
        k.shape == k0.shape and k.dtype == q0.dtype and k.device == q0.device and k.stride() == k0.stride()
        and (k.data_ptr() - k0.data_ptr()) % k.element_size() == 0 for k in keys)
    batch = q0.shape[0] if q0.dim() == 3 else 1
    return same and k0.stride(-1) == 1 and (valid is None or (
        valid.dtype == torch.bool and valid.dim() == 2 and valid.device == q0.device
        and valid.shape[-1] == k0.shape[-2] and valid.shape[0] in (1, batch)))


def fused_step_stats(queries: list[torch.Tensor], keys: list[torch.Tensor], scales: list[float],
                     valid: torch.Tensor | None) -> torch.Tensor:
    """The step's statistics [B, 3, L, H] float32 (entropy bits, concentration, score variance)
    of L layers' query rows ``queries[l]`` [B, H, d] over their keys ``keys[l]`` [B, Hkv, S, d]
    (one sequence: [H, d] and [Hkv, S, d], B = 1), scores multiplied by ``scales[l]``, keys
    where ``valid`` [B|1, S] is False left out (None: all keys). See
    :func:`step_stats_supported`; launches one kernel, no host sync."""
    with torch.cuda.device(queries[0].device):
        return _fused_step_stats(queries, keys, scales, valid)


def _fused_step_stats(queries: list[torch.Tensor], keys: list[torch.Tensor], scales: list[float],
                      valid: torch.Tensor | None) -> torch.Tensor:
    q = torch.stack(queries)  # [L, B, H, d] or [L, H, d], contiguous: a few MB
    if q.dim() == 3:
        q = q[:, None]
    k0 = keys[0]
    n_layers, n_seqs, n_heads, head_dim = q.shape
    ks = k0.stride() if k0.dim() == 4 else (0, *k0.stride())
    n_kv, n_keys = k0.shape[-3], k0.shape[-2]
    device = q.device
    offsets = torch.tensor([(k.data_ptr() - k0.data_ptr()) // k0.element_size() for k in keys], dtype=torch.int64)
    offsets = offsets.to(device, non_blocking=True)
    scale = torch.tensor(scales, dtype=torch.float32).to(device, non_blocking=True)
    if valid is None:
        mask, stride_vb = scale, 0  # not read
    else:
        mask = valid.contiguous().view(torch.uint8)
        stride_vb = mask.stride(0) if mask.shape[0] > 1 else 0
    out = torch.empty(n_seqs, 3, n_layers, n_heads, dtype=torch.float32, device=device)
    groups = n_heads // n_kv
    block_d = max(16, triton.next_power_of_2(head_dim))
    _step_stats[(n_layers * n_seqs * n_kv,)](
        q, k0, offsets, scale, mask, out, n_keys, n_seqs, n_kv,
        q.stride(0), q.stride(1), q.stride(2), ks[0], ks[1], ks[2],
        stride_vb, out.stride(0), out.stride(1), out.stride(2), out.stride(3), LOG2E,
        GROUPS=groups, HEAD_D=head_dim, BLOCK_D=block_d, BLOCK_M=max(16, triton.next_power_of_2(groups)),
        BLOCK_N=BLOCK_KEYS if block_d <= 128 else BLOCK_KEYS // 2, HAS_VALID=valid is not None,
        IEEE=q.dtype == torch.float32, num_warps=4, num_stages=2)
    return out


if triton is not None:

    @triton.jit(do_not_specialize=["n_keys", "n_seqs", "stride_vb"])  # see triton_prompt._row_stats
    def _step_stats(Q, K, KOFF, SCALE, VALID, OUT, n_keys, n_seqs, n_kv,
                    stride_ql, stride_qb, stride_qh, stride_kb, stride_kh, stride_kn,
                    stride_vb, stride_ob, stride_oc, stride_ol, stride_oh, log2e,
                    GROUPS: tl.constexpr, HEAD_D: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr,
                    BLOCK_N: tl.constexpr, HAS_VALID: tl.constexpr, IEEE: tl.constexpr):
        """Program (layer, sequence, key-value head): its GROUPS heads' statistics into OUT[b, :, layer, heads]."""
        pid = tl.program_id(0)
        kv = pid % n_kv
        b = ((pid // n_kv) % n_seqs).to(tl.int64)
        layer = pid // (n_kv * n_seqs)
        offs_m = tl.arange(0, BLOCK_M)
        rmask = offs_m < GROUPS
        heads = kv * GROUPS + offs_m
        offs_d = tl.arange(0, BLOCK_D)
        dmask = offs_d < HEAD_D
        q = tl.load(Q + layer * stride_ql + b * stride_qb + heads[:, None] * stride_qh + offs_d[None, :],
                    mask=rmask[:, None] & dmask[None, :], other=0.0)
        scale = tl.load(SCALE + layer)
        kbase = K + tl.load(KOFF + layer) + b * stride_kb + kv * stride_kh
        m = tl.full([BLOCK_M], -1.0e30, tl.float32)
        l = tl.zeros([BLOCK_M], tl.float32)
        a = tl.zeros([BLOCK_M], tl.float32)
        cnt = tl.zeros([BLOCK_M], tl.float32)
        mean = tl.zeros([BLOCK_M], tl.float32)
        m2 = tl.zeros([BLOCK_M], tl.float32)
        bad = tl.zeros([BLOCK_M], tl.int32)
        for start_n in range(0, n_keys, BLOCK_N):
            offs_n = start_n + tl.arange(0, BLOCK_N)
            inside = offs_n < n_keys
            kmask = inside
            if HAS_VALID:
                kmask = inside & (tl.load(VALID + b * stride_vb + offs_n, mask=inside, other=0) != 0)
            k = tl.load(kbase + offs_n[:, None] * stride_kn + offs_d[None, :], mask=inside[:, None] & dmask[None, :],
                        other=0.0)
            if IEEE:
                x = tl.dot(q, tl.trans(k), input_precision="ieee")
            else:
                x = tl.dot(q, tl.trans(k))
            x = x * scale  # the scaled scores, natural units [BLOCK_M, BLOCK_N]
            bad += tl.sum((((x != x) | (x == float("inf"))) & kmask[None, :]).to(tl.int32), 1)
            valid = kmask[None, :] & (x > float("-inf"))  # a NaN score is no key of the variance (as in torch)
            s = tl.where(valid, x * log2e, float("-inf"))
            m_new = tl.maximum(m, tl.max(s, 1))
            alpha = tl.exp2(m - m_new)
            e = tl.exp2(s - m_new[:, None])  # 0 where not valid
            d = tl.where(valid, s - m_new[:, None], 0.0)
            a = alpha * (a + (m - m_new) * l) + tl.sum(e * d, 1)
            l = alpha * l + tl.sum(e, 1)
            m = m_new
            nb = tl.sum(valid.to(tl.float32), 1)
            mb = tl.sum(tl.where(valid, x, 0.0), 1) / tl.maximum(nb, 1.0)
            dev = tl.where(valid, x - mb[:, None], 0.0)
            total = cnt + nb
            delta = mb - mean
            frac = nb / tl.maximum(total, 1.0)
            mean = mean + delta * frac
            m2 = m2 + tl.sum(dev * dev, 1) + delta * delta * cnt * frac
            cnt = total
        undefined = (bad > 0) | (l == 0.0)
        inv = 1.0 / l
        entropy = tl.where(undefined, float("nan"), tl.log2(l) - a * inv)
        concentration = tl.where(undefined, float("nan"), inv)
        base = OUT + b * stride_ob + layer * stride_ol + heads * stride_oh
        tl.store(base, entropy, mask=rmask)
        tl.store(base + stride_oc, concentration, mask=rmask)
        tl.store(base + 2 * stride_oc, m2 / tl.maximum(cnt, 1.0), mask=rmask)
