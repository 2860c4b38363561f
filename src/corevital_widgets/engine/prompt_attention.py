"""The prompt pass of one layer, blocked over query tiles: at most one tile of attention
weights ([H, tile_rows, P] float32) exists at a time, whatever the prompt length. Each tile
adds its partial head statistics and sparse entries; the layer output is assembled from the
tiles' weights, so outputs and statistics come from the same probabilities."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from . import metrics

#: Default budget for one tile of attention (scores and weights), bytes.
DEFAULT_TILE_BYTES = 256 * 2**20


def tile_rows(n_heads: int, n_keys: int, tile_bytes: int, threshold: float = 0.01) -> int:
    """Query rows per tile so that a tile's scores, float32 probabilities, one temporary and
    its sparse candidates (at most 1/threshold per row, 24 bytes each) fit ``tile_bytes``."""
    per_row_keys = min(n_keys, math.ceil(1.0 / threshold) + 1) if threshold > 0 else n_keys
    per_row = n_heads * (n_keys * 12 + per_row_keys * 24)
    return max(1, int(tile_bytes // per_row))


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
        sums = row_stats[:4].sum(-1)
        self.partials += torch.cat([sums, (1.0 - row_stats[3]).sum(-1, keepdim=True).T])
        self._fused = LayerSparse(counts, keys, weights)

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
