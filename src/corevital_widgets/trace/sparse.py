"""Sparse prompt attention: CSR over (layer, head, query) rows, and its vectorised queries.

Every prompt attention weight above a threshold is kept (optionally at most ``cap`` keys per
query row). Rows are ordered layer-major, then head, then query; within a row, keys ascend.
``row_counts[l, h, q]`` is the number of kept keys of that row, so the query index is implied
by the row and never stored.
"""

from __future__ import annotations

from collections.abc import Sequence

from dataclasses import dataclass, field

import numpy as np


def _key_dtype(prompt_len: int) -> str:
    return "uint16" if prompt_len <= np.iinfo(np.uint16).max + 1 else "uint32"


@dataclass(eq=False)
class SparseAttention:
    """CSR sparse attention over the prompt.

    row_counts: [L, H, P] kept keys per query row (uint16, or uint32 for long prompts).
    keys: [N] key index of each entry (uint16, or uint32 when P > 65,536).
    weights: [N] attention weight of each entry, float16.
    threshold: weights <= threshold were dropped. cap: per-row top-k cap, 0 = none.
    """

    row_counts: np.ndarray
    keys: np.ndarray
    weights: np.ndarray
    threshold: float = 0.01
    cap: int = 0
    _row_ptr: np.ndarray | None = field(default=None, repr=False)
    _entry_query: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        p = self.row_counts.shape[-1] if self.row_counts.ndim == 3 else 0
        self.row_counts = np.ascontiguousarray(self.row_counts, dtype=_key_dtype(p))
        self.keys = np.ascontiguousarray(self.keys, dtype=_key_dtype(p))
        self.weights = np.ascontiguousarray(self.weights, dtype="float16")
        if int(self.row_counts.sum(dtype=np.int64)) != self.keys.size or self.keys.size != self.weights.size:
            raise ValueError(
                f"inconsistent sparse attention: row counts sum to {int(self.row_counts.sum(dtype=np.int64))} "
                f"but there are {self.keys.size} keys and {self.weights.size} weights"
            )

    @classmethod
    def empty(cls, layers: int = 0, heads: int = 0, prompt_len: int = 0, threshold: float = 0.01) -> "SparseAttention":
        return cls(np.zeros((layers, heads, prompt_len)), np.zeros(0), np.zeros(0), threshold)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(L, H, P)."""
        return tuple(self.row_counts.shape)  # type: ignore[return-value]

    @property
    def nnz(self) -> int:
        """Number of stored entries."""
        return int(self.keys.size)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"row_counts": self.row_counts, "keys": self.keys, "weights": self.weights}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SparseAttention):
            return NotImplemented
        return (
            self.threshold == other.threshold and self.cap == other.cap
            and all(a.dtype == b.dtype and np.array_equal(a, b) for a, b in zip(self.arrays().values(), other.arrays().values()))
        )

    # ----------------------------------------------------------------- indexing helpers
    @property
    def row_ptr(self) -> np.ndarray:
        """[L*H*P + 1] int64 offsets of every row into keys/weights."""
        if self._row_ptr is None:
            ptr = np.zeros(self.row_counts.size + 1, dtype=np.int64)
            np.cumsum(self.row_counts.ravel(), out=ptr[1:])
            self._row_ptr = ptr
        return self._row_ptr

    @property
    def entry_query(self) -> np.ndarray:
        """[N] query index of every entry (built once, on first ``attended_by``)."""
        if self._entry_query is None:
            n_layers, n_heads, p = self.shape
            q = np.tile(np.arange(p, dtype=np.int32), n_layers * n_heads)
            self._entry_query = np.repeat(q, self.row_counts.ravel())
        return self._entry_query

    def _select(self, layer: int | Sequence[int] | None, head: int | None) -> tuple[np.ndarray, np.ndarray]:
        n_layers, n_heads, _ = self.shape
        if layer is None:
            layers = np.arange(n_layers)
        elif isinstance(layer, (list, tuple, np.ndarray)):
            layers = np.array([_check_index(i, n_layers, "layer") for i in layer], dtype=np.int64)
        else:
            layers = np.array([_check_index(layer, n_layers, "layer")])
        heads = np.arange(n_heads) if head is None else np.array([_check_index(head, n_heads, "head")])
        return layers, heads

    def _gather_rows(self, rows: np.ndarray) -> np.ndarray:
        """Entry indices of the given flat row ids, concatenated (vectorised)."""
        return _gather_ranges(self.row_ptr[rows], self.row_ptr[rows + 1])

    # ------------------------------------------------------------------------ queries
    def attends_to(self, token: int, layer: int | Sequence[int] | None = None,
                   head: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Keys that prompt position ``token`` attends to, with their weights.

        With ``layer``/``head`` given, the stored row; with either None (or a list of layers),
        the mean over the selected layers/heads (entries below the threshold count as 0). Returns
        (keys int64 ascending, weights float32).
        """
        n_layers, n_heads, p = self.shape
        token = _check_index(token, p, "token")
        layers, heads = self._select(layer, head)
        rows = ((layers[:, None] * n_heads + heads[None, :]) * p + token).ravel()
        idx = self._gather_rows(rows)
        return _aggregate(self.keys[idx], self.weights[idx], p, len(rows))

    def attended_by(self, token: int, layer: int | Sequence[int] | None = None,
                    head: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Query positions that attend to prompt position ``token``, with their weights.

        Aggregation over layers/heads as in :meth:`attends_to`. Returns (queries int64
        ascending, weights float32).
        """
        n_layers, n_heads, p = self.shape
        token = _check_index(token, p, "token")
        layers, heads = self._select(layer, head)
        blocks = (layers[:, None] * n_heads + heads[None, :]).ravel()
        ptr = self.row_ptr
        lo, hi = ptr[blocks * p], ptr[(blocks + 1) * p]
        idx = _gather_ranges(lo, hi)
        hit = idx[self.keys[idx] == token]
        return _aggregate(self.entry_query[hit], self.weights[hit], p, len(blocks))

    def dense(self, layer: int, head: int) -> np.ndarray:
        """[P, P] float32 matrix of one head with dropped entries as 0 (for small prompts)."""
        n_layers, n_heads, p = self.shape
        block = _check_index(layer, n_layers, "layer") * n_heads + _check_index(head, n_heads, "head")
        lo, hi = self.row_ptr[block * p], self.row_ptr[(block + 1) * p]
        out = np.zeros((p, p), dtype=np.float32)
        q = np.repeat(np.arange(p), self.row_counts[layer, head].astype(np.int64))
        out[q, self.keys[lo:hi].astype(np.int64)] = self.weights[lo:hi]
        return out


def round_float16_mantissa(weights: np.ndarray, bits: int) -> np.ndarray:
    """Round non-negative float16 values to ``bits`` of their 10 mantissa bits (nearest, ties
    up), still as float16: relative error <= 2**-(bits + 1). bits=10 returns them unchanged."""
    if not 1 <= bits <= 10:
        raise ValueError(f"bits must be in 1..10 (float16 has 10 mantissa bits), got {bits}")
    w = np.ascontiguousarray(weights, dtype=np.float16)
    if bits == 10:
        return w
    drop = 10 - bits
    u = w.view(np.uint16).astype(np.uint32)
    u = ((u + (1 << (drop - 1))) >> drop) << drop  # a carry into the exponent is the correct rounding
    return u.astype(np.uint16).view(np.float16)


def _gather_ranges(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Concatenation of arange(lo[i], hi[i]) for all i, without a Python loop."""
    lengths = hi - lo
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = np.repeat(lo - np.concatenate(([0], np.cumsum(lengths)[:-1])), lengths)
    return np.arange(total, dtype=np.int64) + offsets


def _aggregate(index: np.ndarray, weights: np.ndarray, size: int, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    if n_rows == 1:
        order = np.argsort(index, kind="stable")
        return index[order].astype(np.int64), weights[order].astype(np.float32)
    summed = np.bincount(index.astype(np.int64), weights=weights.astype(np.float64), minlength=size) / n_rows
    nz = np.flatnonzero(summed)
    return nz.astype(np.int64), summed[nz].astype(np.float32)


def _check_index(value: int, size: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{what} must be an int, got {type(value).__name__}")
    v = int(value)
    if not -size <= v < size:
        raise ValueError(f"{what} {v} is out of range: this trace has {size} {what}s (0..{size - 1})")
    return v % size
