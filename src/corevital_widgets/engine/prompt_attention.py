"""The prompt pass of one layer, blocked over query tiles: at most one tile of attention
weights ([H, tile_rows, P] float32) exists at a time, whatever the prompt length. Each tile
adds its partial head statistics and sparse entries.

Two torch paths:

- the general one (:meth:`PromptAccumulator.add`, any mask, position bias, soft-capping, sinks,
  any device): the tile's probabilities go through :func:`.metrics.prompt_head_partials` and
  :func:`.metrics.sparse_candidates` (fixed-size candidate arrays, no host sync on a GPU);
- the CPU one (:func:`cpu_prompt_layer`, plain q·k scores with no mask or the implicit causal
  one): tiles of a few megabytes run single-threaded on one worker thread per intra-op thread,
  the entropy from the row's log-sum-exp and Σ p·s instead of a log per weight, the sparse
  search only in blocks of keys whose largest score can pass the threshold, and the CSR order
  made by one gather per layer instead of a sort. Same definitions, same numbers within float32
  rounding (tests/test_prompt_tiles.py compares it with a dense float64 computation).
"""

from __future__ import annotations

import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import metrics

#: Default budget for one tile of attention (scores and weights), bytes.
DEFAULT_TILE_BYTES = 256 * 2**20


def tile_rows(n_heads: int, n_keys: int, tile_bytes: int, threshold: float = 0.01) -> int:
    """Query rows per tile so that a tile's scores, float32 probabilities, one temporary and
    its sparse candidates (at most 1/threshold per row, 24 bytes each) fit ``tile_bytes``."""
    per_row_keys = min(n_keys, math.ceil(1.0 / threshold) + 1) if threshold > 0 else n_keys
    per_row = n_heads * (n_keys * 12 + per_row_keys * 24)
    return max(1, int(tile_bytes // per_row))


def fused_row_partials(row_stats: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Sums over query rows of the fused kernels' row statistics [5, ..., P] (entropy bits,
    concentration, sink, middle-third mass, lse): [5, ...] = the first four summed, then the mass
    off the middle third (the partials of :func:`metrics.prompt_head_stats`). Rows where
    ``valid`` (broadcast to [..., P]) is False are left out."""
    stats, other = row_stats[:4], 1.0 - row_stats[3]
    if valid is not None:
        stats, other = torch.where(valid, stats, 0.0), torch.where(valid, other, 0.0)
    return torch.cat([stats.sum(-1), other.sum(-1)[None]])


@dataclass
class LayerSparse:
    """One layer's CSR pieces, (head, query) row order: counts [H, P], keys [N], weights [N]."""

    counts: torch.Tensor
    keys: torch.Tensor
    weights: torch.Tensor


class PromptAccumulator:
    """Accumulates one layer's prompt statistics over query tiles."""

    def __init__(self, n_heads: int, n_rows: int, n_keys: int, threshold: float, cap: int, device: torch.device) -> None:
        self.n_rows, self.n_keys = n_rows, n_keys
        self.threshold, self.cap = threshold, cap
        self.partials = torch.zeros(5, n_heads, dtype=torch.float32, device=device)
        self._counts: list[torch.Tensor] = []
        self._entries: list[tuple[torch.Tensor, ...]] = []
        self._fused: LayerSparse | None = None

    def add(self, weights: torch.Tensor, row0: int) -> None:
        """weights [H, tq, P] float32 for query rows row0 .. row0 + tq (no host sync)."""
        self.partials += metrics.prompt_head_partials(weights, self.n_keys)
        counts, head, row, key, val, valid = metrics.sparse_candidates(weights, self.threshold, self.cap)
        self._counts.append(counts)
        self._entries.append((head, row + row0, key, val, valid))

    def add_fused(self, row_stats: torch.Tensor, counts: torch.Tensor, keys: torch.Tensor, weights: torch.Tensor) -> None:
        """All rows at once from the fused kernels (:func:`.triton_prompt.fused_prompt_layer`):
        per-row statistics [5, H, P] (entropy bits, concentration, sink, middle mass, lse) and
        the layer's sparse profile, already in CSR order."""
        self.partials += fused_row_partials(row_stats)
        self._fused = LayerSparse(counts, keys, weights)

    def set_sparse(self, layer: LayerSparse) -> None:
        """The whole layer's sparse profile, already in CSR order (:func:`cpu_prompt_layer`)."""
        self._fused = layer

    def head_stats(self) -> torch.Tensor:
        """[4, H]: entropy, concentration, sink, basin (see metrics.prompt_head_stats)."""
        return metrics.prompt_head_stats(self.partials, self.n_rows)

    def sparse(self) -> LayerSparse:
        """Compact the tiles' candidates (one host sync per layer) into CSR (head, row) order."""
        if self._fused is not None:
            return self._fused
        counts = torch.cat(self._counts, dim=1)
        head, row, key, val, valid = (torch.cat(parts) if len(parts) > 1 else parts[0] for parts in zip(*self._entries))
        keep = valid.nonzero().squeeze(1)
        head, row, key, val = head[keep], row[keep], key[keep], val[keep]
        if len(self._entries) > 1:
            # tiles arrive in (tile, head, row) order; CSR wants (head, row): a stable sort keeps keys ascending
            order = torch.sort(head * self.n_rows + row, stable=True).indices
            key, val = key[order], val[order]
        return LayerSparse(counts, key, val)


# --------------------------------------------------------------------------- the CPU path
#: CPU path: target size of one tile's float32 scores, bytes (a tile's scores and weights take
#: twice that). Bigger tiles leave the caches, smaller ones pay more per-op overhead; on the
#: 2-core development machine 2-8 MB were within 15% of each other for SmolLM2 at 3,000 tokens.
CPU_TILE_BYTES = 4 * 2**20
#: CPU path: keys per block of the sparse search (a block whose largest weight does not pass
#: the threshold holds no entry; only the others are searched weight by weight).
SPARSE_BLOCK = 32
#: A masked key's score on the CPU path: exp() of it is exactly 0 and 0 · it is 0, where -inf
#: would make Σ p·s NaN.
_MASKED = torch.finfo(torch.float32).min
_LN2 = math.log(2.0)


def cpu_prompt_supported(query: torch.Tensor, key: torch.Tensor, attention_mask: torch.Tensor | None,
                         kwargs: dict, training: bool) -> bool:
    """Whether :func:`cpu_prompt_layer` expresses this prompt-pass call exactly: on the CPU, one
    sequence, scores q·k times the scale (no position bias, soft-capping, attention sinks or
    sliding window), and no mask other than the implicit causal one (transformers passes None)."""
    return (
        query.device.type == "cpu"
        and key.device.type == "cpu"
        and query.shape[0] == 1
        and attention_mask is None
        and kwargs.get("position_bias") is None
        and kwargs.get("softcap") is None
        and kwargs.get("sliding_window") is None
        and kwargs.get("s_aux") is None
        and kwargs.get("sinks") is None
        and not training
        and query.is_floating_point()
        and query.shape[1] % key.shape[1] == 0
    )


def cpu_tiles(q_len: int, n_keys: int, n_heads: int, causal: bool, max_rows: int) -> list[tuple[int, int, int]]:
    """(first row, end row, keys) of the CPU path's query tiles: each tile's float32 scores take
    about CPU_TILE_BYTES (a causal tile of n rows from row r0 sees r0 + offset + n keys), at most
    ``max_rows`` rows; key counts are whole SPARSE_BLOCKs (the padding is masked)."""
    block = SPARSE_BLOCK
    padded = -(-n_keys // block) * block
    offset = n_keys - q_len
    budget = CPU_TILE_BYTES / (4 * n_heads)  # score elements per head
    tiles = []
    r0 = 0
    while r0 < q_len:
        if causal:
            seen = float(min(r0 + offset, padded))  # keys visible before the tile's first row
            rows = int((-seen + math.sqrt(seen * seen + 4 * budget)) / 2)
        else:
            rows = int(budget // padded)
        r1 = min(q_len, r0 + max(1, min(max_rows, rows)))
        tiles.append((r0, r1, min(padded, -(-(r1 + offset) // block) * block) if causal else padded))
        r0 = r1
    return tiles


class _Layer:
    """What every tile of one layer's CPU pass shares (read-only while the tiles run)."""

    def __init__(self, query: torch.Tensor, key: torch.Tensor, scale: float, causal: bool, threshold: float,
                 tiles: list[tuple[int, int, int]]) -> None:
        _, self.n_heads, self.q_len, self.head_dim = query.shape
        self.n_kv, self.n_keys = key.shape[1], key.shape[2]
        self.groups = self.n_heads // self.n_kv
        self.offset = self.n_keys - self.q_len  # query row i sits at position offset + i
        padded = -(-self.n_keys // SPARSE_BLOCK) * SPARSE_BLOCK
        # [Hkv, P, g, d]: a tile's rows of one key head's query heads form one [n * g, d] matrix (a view)
        self.q = (query[0].float() * scale).view(self.n_kv, self.groups, self.q_len, self.head_dim)
        self.q = self.q.transpose(1, 2).contiguous()
        self.kt = F.pad(key[0].float().transpose(1, 2), (0, padded - self.n_keys)).contiguous()  # [Hkv, d, K padded]
        self.causal = causal
        self.lo, self.hi = self.n_keys // 3, (2 * self.n_keys) // 3
        # the block test's margin: it only selects candidates, every weight is tested exactly after
        self.threshold = threshold
        self.log_thr = math.log(threshold) - 1e-4 if threshold > 0 else -math.inf
        self.hidden = None
        if causal:  # hidden[i, j]: key c0 + j is masked for the tile's row i (c0: the first row's first unseen key)
            most = max(r1 - r0 for r0, r1, _ in tiles)
            self.hidden = torch.arange(most + SPARSE_BLOCK)[None, :] >= torch.arange(most)[:, None]
        self.most = max(self.n_heads * (r1 - r0) * width for r0, r1, width in tiles)
        self.buffers = threading.local()  # per thread: its tiles' score and weight buffers

    def tile(self, r0: int, r1: int, width: int) -> tuple[torch.Tensor, ...]:
        """One tile's per-row statistics (max s, max p, Σ p·s, sink weight, middle mass; each
        [Hkv, n*g] in (key head, row, group) order) and its sparse entries (CSR row
        head * P + row, key, weight; rows in tile order, keys ascending within a row)."""
        n_kv, groups, block = self.n_kv, self.groups, SPARSE_BLOCK
        n, n_blocks = r1 - r0, width // block
        rows = n_kv * n * groups
        buffers = getattr(self.buffers, "pair", None)
        if buffers is None:  # a fresh multi-megabyte tensor per tile costs its page faults each time
            buffers = self.buffers.pair = (torch.empty(self.most), torch.empty(self.most))
        s = buffers[0][: rows * width].view(n_kv, n * groups, width)
        torch.bmm(self.q[:, r0:r1].reshape(n_kv, n * groups, self.head_dim), self.kt[:, :, :width], out=s)
        c0 = r0 + self.offset + 1
        if self.hidden is not None and c0 < width:
            s.view(n_kv, n, groups, width)[..., c0:].masked_fill_(self.hidden[:n, None, : width - c0], _MASKED)
        elif self.hidden is None and width > self.n_keys:
            s[..., self.n_keys:] = _MASKED
        block_max = s.view(n_kv, n * groups, n_blocks, block).amax(-1)  # [Hkv, n*g, blocks] of the scores
        s_max, best = block_max.max(-1)
        p = torch.ops.aten._softmax.out(s, -1, False, out=buffers[1][: s.numel()].view(s.shape))
        # the largest weight sits in the block of the largest score (softmax is monotonic)
        best_block = torch.arange(0, rows * n_blocks, n_blocks) + best.view(-1)
        conc = p.view(-1, block).index_select(0, best_block).amax(-1).view(n_kv, n * groups)
        sink = p[..., 0].clone()
        mid_hi = min(self.hi, width)
        mid = p[..., self.lo:mid_hi].sum(-1) if self.lo < mid_hi else torch.zeros_like(conc)
        # p = max p · e^(s − max s) > threshold only in blocks whose largest score passes
        # max s + log(threshold / max p): those blocks are kept (a few per row)
        hot = block_max > (s_max - conc.log() + self.log_thr)[..., None]
        cand = hot.view(-1).nonzero().squeeze(1)  # flat block ids, ascending
        weights = p.view(-1, block).index_select(0, cand).view(-1)
        hits = (weights > self.threshold).nonzero().squeeze(1)  # candidate block, then key: ascending
        hit_block = hits // block
        flat_block = cand.index_select(0, hit_block)
        row = flat_block // n_blocks  # the entry's row in the tile: (key head, row, group)
        keys = (flat_block - row * n_blocks) * block + (hits - hit_block * block)
        kv = row // (n * groups)
        row = row - kv * (n * groups)
        query_row = row // groups
        csr_row = (kv * groups + row - query_row * groups) * self.q_len + r0 + query_row
        ps = s.mul_(p).sum(-1)  # Σ p·s (s is not needed after this)
        return s_max, conc, ps, sink, mid, csr_row, keys, weights.index_select(0, hits)


#: Worker threads of the CPU path (each runs its tiles' ops single-threaded), created on first
#: use: (pool, its size, the process it belongs to).
_POOL: tuple[ThreadPoolExecutor, int, int] | None = None
_POOL_LOCK = threading.Lock()


def _one_thread() -> None:
    torch.set_num_threads(1)  # this worker's own ops; the caller restores the default for new threads


def _tile_pool(workers: int) -> ThreadPoolExecutor | None:
    """The CPU path's worker threads, ``workers`` of them (None for one: tiles run inline). A
    forked child gets its own pool (the parent's threads do not exist there)."""
    global _POOL
    if workers <= 1:
        return None
    with _POOL_LOCK:
        if _POOL is None or _POOL[1] != workers or _POOL[2] != os.getpid():
            if _POOL is not None and _POOL[2] == os.getpid():
                _POOL[0].shutdown(wait=False)
            _POOL = (ThreadPoolExecutor(workers, thread_name_prefix="corevital-prompt", initializer=_one_thread),
                     workers, os.getpid())
        return _POOL[0]


def _in_worker(fn, *args):  # noqa: ANN001, ANN202
    with torch.no_grad():  # a worker thread does not inherit the caller's grad mode
        return fn(*args)


def cpu_prompt_layer(acc: PromptAccumulator, query: torch.Tensor, key: torch.Tensor, scale: float, causal: bool,
                     max_rows: int) -> None:
    """One layer's prompt statistics and sparse profile on the CPU, into ``acc``, from query
    [1, H, P, d] and key [1, Hkv, K, d] (queries are the last P of the K positions; grouped-query
    heads share keys, heads of a group adjacent), over the tiles of :func:`cpu_tiles`.

    Per tile, in float32: scores s = (q · scale) kᵀ with masked keys at a finite minimum, their
    maxima per block of SPARSE_BLOCK keys, p = softmax(s); per row max s, the largest weight
    max p (in the block of the largest score), Σ p·s, the sink weight p[0] and the middle-third
    mass; the sparse entries p > threshold, searched weight by weight only in the blocks that
    can hold one (p = max p · e^(s − max s), so a block whose largest score is below
    max s + log(threshold / max p) holds none). After the last tile, for all rows at once:
    entropy (log Σ e^s − Σ p·s) / ln 2 with log Σ e^s = max s − log max p, the per-head sums,
    and the entries put in CSR (head, row) order by one gather. No log per weight, no pass over
    all weights for the sparse search beyond the block maxima.

    Everything runs on as many worker threads as the caller has intra-op threads, each tile's
    ops single-threaded in its worker: no fork and join of a thread team per op (on a busy
    machine every such join waits for a descheduled thread), a tile in one core's cache, and the
    same numbers (each tile is computed alone; results are put together in tile order)."""
    tiles = cpu_tiles(query.shape[2], key.shape[2], query.shape[1], causal, max_rows)
    threads = torch.get_num_threads()
    pool = _tile_pool(threads) if len(tiles) > 1 else None
    args = (query, key, scale, causal, float(acc.threshold), tiles)
    if pool is None:
        layer = _Layer(*args)
        partials, sparse = _finish_layer(layer, tiles, [layer.tile(*t) for t in tiles], acc.cap)
    else:
        layer = pool.submit(_in_worker, _Layer, *args).result()
        results = list(pool.map(_in_worker, [layer.tile] * len(tiles), *zip(*tiles)))
        partials, sparse = pool.submit(_in_worker, _finish_layer, layer, tiles, results, acc.cap).result()
        torch.set_num_threads(threads)  # the workers set the process-wide default for new threads to 1
    acc.partials += partials
    acc.set_sparse(sparse)


def _finish_layer(layer: _Layer, tiles: list[tuple[int, int, int]], results: list[tuple[torch.Tensor, ...]],
                  cap: int) -> tuple[torch.Tensor, LayerSparse]:
    """The per-head partial sums [5, H] and the CSR profile from every tile's results (in tile
    order), capped at ``cap`` keys per row when cap > 0."""
    n_heads, q_len, n_kv, groups = layer.n_heads, layer.q_len, layer.n_kv, layer.groups
    s_max, conc, ps, sink, mid = (torch.cat([r[i] for r in results], 1) for i in range(5))  # [Hkv, P*g]
    ent = (s_max - conc.log() - ps).clamp_min_(0.0) / _LN2
    partials = torch.stack([ent, conc, sink, mid, 1.0 - mid]).view(5, n_kv, q_len, groups).sum(2).view(5, n_heads)
    csr_row, keys, vals = (torch.cat([r[i] for r in results]) for i in (5, 6, 7))
    n_entries = csr_row.numel()
    counts = torch.bincount(csr_row, minlength=n_heads * q_len)
    if n_entries:
        # a row's entries are adjacent in tile order (keys ascending): the gather index of CSR
        # position j is where its row begins in tile order plus its rank in the row
        first = torch.ones(n_entries, dtype=torch.bool)
        first[1:] = csr_row[1:] != csr_row[:-1]
        begins = first.nonzero().squeeze(1)
        shift = torch.zeros(n_heads * q_len, dtype=torch.long)
        shift[csr_row.index_select(0, begins)] = begins
        shift -= torch.cumsum(counts, 0) - counts
        src = torch.repeat_interleave(shift, counts, output_size=n_entries) + torch.arange(n_entries)
        keys, vals = keys.index_select(0, src), vals.index_select(0, src)
    counts = counts.view(n_heads, q_len)
    if cap:
        counts, keys, vals = metrics.cap_rows(counts, keys, vals, cap)
    return partials, LayerSparse(counts, keys, vals)
