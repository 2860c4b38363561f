"""Per-step inputs kept raw for a chunk of generation steps, then reduced together.

A decode step of a small model is bound by kernel launches, not by the GPU: reducing each
step's logits, hidden vectors and attention rows on its own costs ~100 small kernels per token.
So each step only *copies* its raw inputs into a slot of a chunk buffer (the logits row [V],
the stacked layer vectors [L, D], the score rows [L, H, S], the chosen token), a handful of
kernels, and every ``chunk`` steps all metric formulas of :mod:`.metrics` run once over the
whole chunk. Results are the same numbers, computed by the same formulas, batched over steps.

A chunk is reduced when it is full and the token of its last step is known (at the next
step's start), and at the end of the run. Memory: the chunk's score rows are bounded by
CHUNK_SCORE_BYTES (long contexts get shorter chunks, down to one step).

Batched analysis (:mod:`.batched`) puts the same inputs with a leading batch dimension after
the step one (logits [B, V], vectors [B, D], score rows [B, L, H, S], tokens [B]); every
buffer and output then has shape [steps, B, ...] and the formulas run over all sequences of
the chunk at once. With ``batch`` set, the chunk's float32 logits [chunk, B, V] are also bounded
by LOGIT_CHUNK_BYTES, and the score rows get a larger budget than CHUNK_SCORE_BYTES when the
batch's memory budget allows (a batch of 32 sequences' rows of one step already exceed it).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import metrics

#: Steps per chunk (at most).
CHUNK_STEPS = 32
#: Budget for one chunk's score rows [chunk, L, H, S] float32, bytes.
CHUNK_SCORE_BYTES = 64 * 2**20
#: Rows of [rows, V] logit-lens logits decoded at once, bytes budget.
LENS_BYTES = 128 * 2**20
#: Budget for one chunk's float32 logits [chunk, B, V] of a batched run (the log-softmax and its
#: temporaries are of the same size), bytes.
LOGIT_CHUNK_BYTES = 256 * 2**20
#: Previous steps the repetition check compares with.
REPETITION_PREVIOUS = 3


def chunk_steps(score_shape: tuple[int, ...] | None, batch: int | None = None, vocab: int | None = None,
                score_bytes: int | None = None) -> int:
    """Steps per chunk (at least 1, at most CHUNK_STEPS) for score rows of one step of shape
    ``score_shape`` [..., L, H, S] (None: no attention rows): the chunk's float32 rows
    [chunk, ..., L, H, S + CHUNK_STEPS] fit ``score_bytes`` (default CHUNK_SCORE_BYTES), and with
    ``batch`` and ``vocab`` its float32 logits [chunk, batch, vocab] fit LOGIT_CHUNK_BYTES."""
    limit = CHUNK_STEPS
    if score_shape is not None:  # any leading batch dimensions count too
        n_rows = math.prod(score_shape[:-1])
        budget = CHUNK_SCORE_BYTES if score_bytes is None else score_bytes
        limit = min(limit, budget // (n_rows * (score_shape[-1] + CHUNK_STEPS) * 4))
    if batch is not None and vocab:
        limit = min(limit, LOGIT_CHUNK_BYTES // (batch * vocab * 4))
    return max(1, limit)


class StepChunks:
    """Raw per-step inputs of up to ``chunk`` steps and the per-step outputs they reduce to.

    ``out`` maps names to device tensors [max_steps, ...]: step_stats [5] (entropy bits,
    margin, top-k mass, max prob, perplexity), top_k_ids / top_k_probs [k], logit_flags [2],
    surprisal (bits), hidden [3, L] (norm, std, mean), hidden_flags [2, L], repetition,
    head_stats [3, L, H] (entropy bits, concentration, score variance), optional lens_entropy /
    lens_top1 [L].
    """

    def __init__(self, max_steps: int, top_k: int, *, lm_head: torch.nn.Module | None = None,
                 final_norm: torch.nn.Module | None = None, lens_scale: float = 1.0,
                 lens_device: torch.device | None = None, batch: int | None = None,
                 vocab: int | None = None, score_bytes: int | None = None) -> None:
        self.max_steps, self.top_k = max_steps, top_k
        #: budget of a chunk's score rows, bytes (None: CHUNK_SCORE_BYTES)
        self.score_bytes = score_bytes
        #: sequences per step (batched analysis; None: one sequence, no batch dimension) and the
        #: vocabulary size (bounds the chunk's logits when batched)
        self.batch, self.vocab = batch, vocab
        self.lm_head, self.final_norm, self.lens_scale, self.lens_device = lm_head, final_norm, lens_scale, lens_device
        self.start = 0  # first step of the current chunk
        self.chunk = 0  # its capacity (steps), chosen at its first step
        self._n_hidden = self._n_logits = 0  # steps of the chunk with hidden vectors / logits put
        self.out: dict[str, torch.Tensor] = {}
        self._logits: torch.Tensor | None = None  # [chunk, V]
        self._tokens: torch.Tensor | None = None  # [max_steps] chosen token ids
        self._hidden: torch.Tensor | None = None  # [chunk, L, D]
        self._scores: torch.Tensor | None = None  # [chunk, L, H, S_max] float32, -inf beyond each row
        self._score_slots: list[int] = []  # the chunk's steps (slots) with score rows put
        self._scales: list[list[float]] = []  # per slot of _score_slots, per layer
        self._n_attention = 0  # steps of the chunk with score rows or head statistics put
        self._rows_budgeted = False  # whether the chunk was sized for score rows (its first step had them)
        self._tail: torch.Tensor | None = None  # [REPETITION_PREVIOUS, D] last-layer vectors before the chunk

    @property
    def filled(self) -> int:
        """Steps of the current chunk whose forward ran (put anything)."""
        return max(self._n_hidden, self._n_logits, self._n_attention)

    # ------------------------------------------------------------------ buffers
    def _out(self, name: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device,
             fill: float = 0.0) -> torch.Tensor:
        buf = self.out.get(name)
        if buf is None:
            buf = torch.full((self.max_steps, *shape), fill, dtype=dtype, device=device)
            self.out[name] = buf
        return buf

    def _slot(self, step: int) -> int:
        slot = step - self.start
        assert 0 <= slot < self.chunk, f"step {step} outside the chunk of {self.chunk} starting at {self.start}"
        return slot

    def _alloc(self, current: torch.Tensor | None, shape: tuple[int, ...], dtype: torch.dtype,
               device: torch.device, fill: float | None = None) -> torch.Tensor:
        """A chunk buffer of at least ``shape`` (reused when it fits: only ever at slot 0)."""
        if current is not None and current.dtype == dtype and current.device == device and current.dim() == len(shape) \
                and current.shape[0] >= shape[0] and tuple(current.shape[1:-1]) == tuple(shape[1:-1]) \
                and current.shape[-1] >= shape[-1] and (fill is not None or current.shape[-1] == shape[-1]):
            return current
        if fill is None:
            return torch.empty(shape, dtype=dtype, device=device)
        return torch.full(shape, fill, dtype=dtype, device=device)

    # ------------------------------------------------------------ per step: copies only
    def begin_step(self, step: int, score_shape: tuple[int, int, int] | None) -> None:
        """Called once per step before its ``put_*``; a chunk's first step sizes the chunk so
        that its score rows [chunk, L, H, S + chunk] fit the score budget (:func:`chunk_steps`)."""
        if step != self.start:
            self._slot(step)
            return
        self.chunk = min(chunk_steps(score_shape, self.batch, self.vocab, self.score_bytes),
                         self.max_steps - self.start)
        self._rows_budgeted = score_shape is not None

    def put_scores(self, step: int, scores: torch.Tensor, scales: list[float]) -> None:
        """Score rows [L, H, S] (batched: [B, L, H, S]) of ``step`` (masked keys at -inf, not
        multiplied by ``scales`` yet; one factor per layer)."""
        slot = self._slot(step)
        self._n_attention += 1
        if not self._rows_budgeted:  # the chunk was sized without rows (its first step's came fused): reduce now
            self._put_stats(step, _scaled_stats(scores[None], [list(scales)])[0])
            return
        n_keys = scores.shape[-1]
        if not self._score_slots:
            self._scores = self._alloc(self._scores, (self.chunk, *scores.shape[:-1], n_keys + self.chunk),
                                       torch.float32, scores.device, fill=float("-inf"))
        buf = self._scores
        assert buf is not None
        if n_keys > buf.shape[-1]:  # keys grew faster than one per step (not seen in practice): widen
            wider = torch.full((*buf.shape[:-1], n_keys + self.chunk), float("-inf"), dtype=buf.dtype, device=buf.device)
            wider[..., : buf.shape[-1]] = buf
            self._scores = buf = wider
        buf[slot, ..., :n_keys] = scores
        self._score_slots.append(slot)
        self._scales.append(list(scales))

    def put_head_stats(self, step: int, stats: torch.Tensor) -> None:
        """The step's head statistics [3, L, H] (batched: [B, 3, L, H]) computed without score
        rows (the fused decode-step kernel): what :meth:`put_scores`' rows reduce to."""
        self._slot(step)
        self._n_attention += 1
        self._put_stats(step, stats)

    def _put_stats(self, steps: int | slice | torch.Tensor, stats: torch.Tensor) -> None:
        shape = tuple(stats.shape[1:]) if not isinstance(steps, int) else tuple(stats.shape)
        self._out("head_stats", shape, torch.float32, stats.device)[steps] = stats

    def put_hidden(self, step: int, vectors: list[torch.Tensor]) -> None:
        """The step's vector [D] (batched: [B, D]) of every layer (views are fine: copied here,
        once), stacked to [L, D] ([B, L, D])."""
        slot = self._slot(step)
        dev = vectors[0].device
        if slot == 0:
            shape = (*vectors[0].shape[:-1], len(vectors), vectors[0].shape[-1])
            self._hidden = self._alloc(self._hidden, (self.chunk, *shape), vectors[0].dtype, dev)
        assert self._hidden is not None
        if all(v.device == dev for v in vectors):
            torch.stack(vectors, dim=-2, out=self._hidden[slot])
        else:  # a model split over devices: one stacked copy per device, not one per layer
            by_device: dict[torch.device, list[int]] = {}
            for i, v in enumerate(vectors):
                by_device.setdefault(v.device, []).append(i)
            for device, layers in by_device.items():
                part = torch.stack([vectors[i] for i in layers], dim=-2)
                index = torch.tensor(layers, device=dev)
                self._hidden[slot].index_copy_(-2, index, part.to(dev, non_blocking=True))
        self._n_hidden = slot + 1

    def put_logits(self, step: int, logits: torch.Tensor) -> None:
        """The raw next-token logits [V] (batched: [B, V]) of ``step`` (before any warping)."""
        if self.chunk == 0:  # no instrumented layer stack ran this step
            self.begin_step(step, None)
        slot = self._slot(step)
        if slot == 0:
            self._logits = self._alloc(self._logits, (self.chunk, *logits.shape), logits.dtype, logits.device)
        assert self._logits is not None
        self._logits[slot].copy_(logits)
        self._n_logits = slot + 1

    def put_token(self, step: int, token: torch.Tensor) -> None:
        """The token chosen at ``step`` (batched: [B], one per sequence; known at the next step's
        start, or at the end)."""
        if self._tokens is None:
            dev = self._logits.device if self._logits is not None else token.device
            self._tokens = torch.zeros(self.max_steps, *token.shape, dtype=torch.int64, device=dev)
        self._tokens[step] = token

    def ready(self, next_step: int) -> bool:
        """Whether the chunk is full once ``next_step`` starts (its tokens are all known)."""
        return self.chunk > 0 and next_step - self.start >= self.chunk

    # ------------------------------------------------------------------- reductions
    def reduce(self, n_known_tokens: int) -> None:
        """Reduce the chunk's steps (all of them ran their forward); steps < n_known_tokens
        have their chosen token recorded (surprisal), later ones stay NaN."""
        n = self.filled
        if n == 0:
            return
        steps = slice(self.start, self.start + n)
        if self._n_logits == n:
            self._reduce_logits(steps, n, n_known_tokens)
        if self._n_hidden == n:
            self._reduce_hidden(steps, n)
        if self._score_slots:
            self._reduce_scores(n)
        self.start += n
        self._n_hidden = self._n_logits = self._n_attention = 0
        self._score_slots, self._scales = [], []
        self.chunk = 0

    def _reduce_logits(self, steps: slice, n: int, n_known_tokens: int) -> None:
        assert self._logits is not None
        logits = self._logits[:n]
        dev = logits.device
        lead = tuple(logits.shape[1:-1])  # batch dimensions (none for one sequence)
        stats, ids, probs, logp = metrics.output_distribution(logits, self.top_k)
        self._out("step_stats", (*lead, 5), torch.float32, dev)[steps] = stats
        self._out("top_k_ids", (*lead, self.top_k), torch.int64, dev)[steps] = ids
        self._out("top_k_probs", (*lead, self.top_k), torch.float32, dev)[steps] = probs
        flags = torch.stack([torch.isnan(logits).any(-1), torch.isinf(logits).any(-1)], -1)
        self._out("logit_flags", (*lead, 2), torch.bool, dev)[steps] = flags
        surprisal = self._out("surprisal", lead, torch.float32, dev, float("nan"))
        known = min(n, n_known_tokens - steps.start)
        if known > 0 and self._tokens is not None:
            tokens = self._tokens[steps.start : steps.start + known].to(dev)
            surprisal[steps.start : steps.start + known] = metrics.token_surprisal_bits(logp[:known], tokens)

    def _reduce_hidden(self, steps: slice, n: int) -> None:
        assert self._hidden is not None
        vec = self._hidden[:n].float()  # [n, L, D] (batched: [n, B, L, D])
        dev, n_layers = vec.device, vec.shape[-2]
        lead = tuple(vec.shape[1:-2])
        floats, flags = metrics.hidden_stats(vec)
        self._out("hidden", (*lead, 3, n_layers), torch.float32, dev)[steps] = floats
        self._out("hidden_flags", (*lead, 2, n_layers), torch.bool, dev)[steps] = flags
        last = vec[..., -1, :]  # [n, (B,) D] final-layer (final-normed) vectors
        if self._tail is None:
            self._tail = torch.zeros(REPETITION_PREVIOUS, *last.shape[1:], dtype=torch.float32, device=dev)
        seq = torch.cat([self._tail, last])
        rep = metrics.repetition_similarities(seq, REPETITION_PREVIOUS)  # [n, (B)]
        first = torch.arange(steps.start, steps.start + n, device=dev) < REPETITION_PREVIOUS
        first = first.view(n, *(1 for _ in lead))
        self._out("repetition", lead, torch.float32, dev, float("nan"))[steps] = rep.masked_fill(first, float("nan"))
        self._tail = seq[-REPETITION_PREVIOUS:].clone()
        if self.lm_head is not None:
            self._reduce_lens(steps, vec)

    def _reduce_lens(self, steps: slice, vec: torch.Tensor) -> None:
        assert self.lm_head is not None
        head_dev = self.lens_device or vec.device
        n_layers = vec.shape[-2]
        lead = tuple(vec.shape[1:-2])
        vocab = self.lm_head.weight.shape[0]
        rows = vec.reshape(-1, n_layers, vec.shape[-1])  # [n (* B), L, D]: steps (of every sequence)
        per = max(1, LENS_BYTES // max(1, n_layers * vocab * 4))  # rows decoded at once
        ents, tops = [], []
        for s0 in range(0, rows.shape[0], per):  # chunks of rows: the [rows, L, V] logits stay bounded
            ent, top1 = metrics.logit_lens(rows[s0 : s0 + per].to(head_dev), self.final_norm, self.lm_head,
                                           scale=self.lens_scale)
            ents.append(ent)
            tops.append(top1)
        shape = (vec.shape[0], *lead, n_layers)
        self._out("lens_entropy", (*lead, n_layers), torch.float32, head_dev)[steps] = torch.cat(ents).view(shape)
        self._out("lens_top1", (*lead, n_layers), torch.int64, head_dev)[steps] = torch.cat(tops).view(shape)

    def _reduce_scores(self, n: int) -> None:
        """Head statistics of the chunk's steps that put score rows (all ``n`` of them, or some)."""
        assert self._scores is not None
        slots = self._score_slots
        if slots == list(range(n)):
            self._put_stats(slice(self.start, self.start + n), _scaled_stats(self._scores[:n], self._scales))
        else:
            index = torch.tensor(slots, device=self._scores.device)
            self._put_stats(index + self.start, _scaled_stats(self._scores[index], self._scales))
        self._scores.fill_(float("-inf"))  # rows may shrink (sliding-window caches)


def _scaled_stats(scores: torch.Tensor, scales: list[list[float]]) -> torch.Tensor:
    """:func:`metrics.step_attention_stats` of steps' unscaled score rows [n, (B,) L, H, S], each
    step's layer l multiplied by ``scales[step][l]`` first: [n, (B,) 3, L, H]."""
    flat = {s for per_step in scales for s in per_step}
    if len(flat) == 1:
        scale = flat.pop()
        if scale != 1.0:
            scores = scores * scale
    else:
        n = scores.shape[0]
        factors = torch.tensor(scales, dtype=torch.float32)  # [n, L]
        lead = scores.dim() - 4  # batch dimensions
        scores = scores * factors.to(scores.device).view(n, *(1 for _ in range(lead)), -1, 1, 1)
    return metrics.step_attention_stats(scores)


def pad_rows(mats: list[torch.Tensor]) -> torch.Tensor:
    """Stack per-layer score rows [H_l, S_l] into [L, max H_l, max S_l], -inf padded: shorter
    rows (sliding-window layers keep shorter caches) and missing heads (layers with fewer heads),
    whose statistics then come out NaN."""
    n_keys = max(m.shape[-1] for m in mats)
    n_heads = max(m.shape[-2] for m in mats)
    if any(m.shape[-1] != n_keys or m.shape[-2] != n_heads for m in mats):
        mats = [F.pad(m, (0, n_keys - m.shape[-1], 0, n_heads - m.shape[-2]), value=float("-inf")) for m in mats]
    if len({m.dtype for m in mats}) > 1:
        mats = [m.float() for m in mats]
    return torch.stack(mats)
