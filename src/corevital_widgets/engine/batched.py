"""``analyze_batch``: N prompts per ``model.generate`` call, N traces, each equal (float
tolerance) to the trace the same prompt gets alone from :func:`.analyze.analyze`.

How padding is kept out of every statistic (shared/METRICS.md, "Batched analysis"):

- Causal LMs are padded on the LEFT (transformers derives each sequence's position ids from the
  attention mask), encoder-decoders on the RIGHT of the encoder input (absolute encoder positions
  start at 0, as alone; the decoder has no padding). Each sequence's real prompt positions are a
  span ``[start, end)`` of the padded prompt.
- The prompt pass (prefill / encoder) is read per sequence, over its span only: its queries and
  keys are sliced to the real positions, so padded keys are not keys, padded query rows are not
  rows, and key indices count from the sequence's first real token (the sink is its first real
  token). When the model's mask restricted to the span is exactly the causal (or, for an
  encoder, the full) mask — checked once per mask tensor — the spans go through the same fast
  paths as batch size 1: on CUDA the fused Triton kernels, once per layer for the whole batch
  (:func:`.triton_prompt.fused_prompt_batch` reads each sequence's span through a table of
  offsets; its sparse buffer within ``attention_tile_bytes``); on the CPU the path of
  :mod:`.prompt_attention`, one sequence at a time. Otherwise each span goes through the tiled
  torch path with the sliced mask, one sequence at a time, within ``attention_tile_bytes``.
- Per-step data (logits [B, V], layer vectors [B, D], score rows [B, L, H, S] with padded keys
  at -inf from the model's mask) go to one :class:`.step_chunks.StepChunks` with a batch
  dimension: every per-step formula runs once per chunk over all sequences (a chunk's score rows
  get :func:`chunk_score_budget` of the batch's memory). A decode step's score rows are not
  computed layer by layer: each layer's query row, keys and boolean key mask are kept, and at the
  step's end all layers' head statistics come from one fused kernel on CUDA
  (``Collector._fused_step_stats``), else all layers are scored together
  (``Collector._score_rows_of_queries``).
- A sequence that ends (EOS) before the others has T_i steps; the steps generate still runs
  for it afterwards are dropped.
- Exactness is checked, not assumed: the first forward of every block is verified over the real
  span of the most and the least padded sequence (the model's output there must equal
  corevital's recomputation), and the most padded sequence's first next-token logits must equal
  those of its prompt alone (one plain forward of the shortest prompt: it catches positions that
  shift with the padding and padding read outside attention). A failed check traces the batch's
  prompts alone.

What cannot be batched exactly (sampling, stopping criteria, callbacks, generation options that
read the padded ids, attention read from returned probabilities, flash-attention's unpadded
calls, a model that does not take position ids, a mask that does not hide the padding, ...)
is traced one prompt at a time through :func:`.analyze.analyze`, with a warning and a note in the
trace meta (``meta["batch"]["note"]``) — never a silently different trace.

Traces are made in two phases: :func:`pending_batch` runs the device work (generate, the last
reductions, one host copy per buffer, the padding probe) and returns one builder per prompt that
makes its Trace from host memory alone, so ``analyze_many`` builds and saves a batch's traces on
other threads while the next batch generates; :func:`analyze_batch` builds them at once.

Memory: a batch's estimated footprint (the model's KV cache and prefill activations, plus the
collector's own score rows, logits chunk, prompt states and one layer's batched prompt pass:
:func:`batch_bytes_estimate`) must fit
``batch_bytes`` (default: 80% of the free device memory on CUDA, :data:`DEFAULT_CPU_BATCH_BYTES`
on the CPU); a larger batch is split into smaller ones with a warning, and a CUDA out-of-memory
error splits the batch in two and retries.
"""

from __future__ import annotations

import functools
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ..trace.health import DEFAULT_THRESHOLDS
from ..trace.trace import Trace
from . import adapters, metrics, step_chunks
from .attention import (
    CallSpec,
    attention_probs,
    attention_scores,
    fused_or_none,
    mismatch_tolerance,
    tapped_attention,
)
from .collector import DEFAULT_MAX_SPARSE_BYTES, CollectedArrays, Collector, _tensor_output, recomputation_error
from .logit_head import find_head, plain_linear
from .model_state import preserved_model_state
from .prompt_attention import (
    DEFAULT_TILE_BYTES,
    PromptAccumulator,
    cpu_prompt_layer,
    cpu_prompt_supported,
    fused_row_partials,
)
from .step_chunks import CHUNK_STEPS, StepChunks, chunk_steps
from .structure import ModelStructure, Stack, execution_device, inspect_model
from .triton_prompt import FusedBatch, fused_prompt_batch, fused_prompt_supported

#: Default memory budget of one batch on the CPU, bytes (on CUDA: 80% of the free memory).
DEFAULT_CPU_BATCH_BYTES = 4 * 2**30
#: Share of the free CUDA memory a batch may use by default.
CUDA_FREE_SHARE = 0.8
#: Ceiling of a batched run's budget for a chunk of score rows, bytes (see chunk_score_budget).
BATCH_CHUNK_SCORE_BYTES = 512 * 2**20
#: float32 arrays of a chunk's score-row size alive while it is reduced (the buffer, the softmax
#: weights, and the entropy's and variance's temporaries).
SCORE_REDUCTION_COPIES = 5

#: generate keyword arguments known to act on every sequence of a batch as on the sequence alone
#: (they do not read the padded ids); any other one sends the prompts through batch size 1.
PER_SEQUENCE_GENERATE_KWARGS = frozenset({
    "eos_token_id", "pad_token_id", "min_new_tokens", "bad_words_ids", "suppress_tokens", "begin_suppress_tokens",
    "forced_bos_token_id", "forced_eos_token_id", "use_cache", "temperature", "top_p", "typical_p", "min_p",
    "epsilon_cutoff", "eta_cutoff", "length_penalty", "renormalize_logits", "remove_invalid_values",
})
#: analyze keyword arguments of analyze() itself (everything else goes to generate).
_ANALYZE_KWARGS = ("max_new_tokens", "do_sample", "seed", "prompt_telemetry", "attention_threshold", "top_k",
                   "attention_cap", "max_sparse_bytes", "attention_tile_bytes", "logit_lens", "attention_weight_bits",
                   "thresholds", "on_step", "progress", "on_prompt_layer", "stop")
#: attention implementations whose calls carry a [B, 1|H, q, k] mask the batched path slices.
_BATCHED_IMPLEMENTATIONS = (None, "eager", "sdpa")


class BatchUnsupported(ValueError):
    """A batched run that could not be traced exactly: its prompts are traced alone."""


# ------------------------------------------------------------------------- the collector
@dataclass
class _SequencePrompt:
    """One sequence's prompt telemetry (host tensors per layer) and its own sparse cap."""

    start: int  # first real position in the padded prompt stack
    end: int  # one past the last
    cap: int
    heads: dict[int, torch.Tensor] = field(default_factory=dict)
    sparse: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    surprisal: torch.Tensor | None = None

    @property
    def n(self) -> int:
        return self.end - self.start


def _slice_rows_keys(x: torch.Tensor | None, i: int, start: int, end: int, q_len: int) -> torch.Tensor | None:
    """Sequence ``i``'s part of a [B|1, H|1, q|1, k] tensor (mask, position bias): its batch row
    (kept when broadcast), query rows ``start:end`` (when it has q rows) and keys ``start:end``."""
    if x is None:
        return None
    x = x[i : i + 1] if x.shape[0] > 1 else x
    if x.shape[-2] == q_len and q_len > 1:
        x = x[..., start:end, :]
    return x[..., start:end]


class BatchedCollector(Collector):
    """:class:`.collector.Collector` for B sequences at once (see the module docstring)."""

    def __init__(self, model: nn.Module, structure: ModelStructure, input_ids: torch.Tensor,
                 spans: list[tuple[int, int]], score_bytes: int | None = None, **kwargs: Any) -> None:
        super().__init__(model, structure, input_ids, **kwargs)
        self.batch = int(input_ids.shape[0])
        self.width = int(input_ids.shape[1])  # padded prompt length
        self.padded = any(e - s != self.width for s, e in spans)
        self.seqs = [_SequencePrompt(s, e, self.cap) for s, e in spans]
        lm_head = structure.lm_head if kwargs.get("logit_lens") else None
        head = structure.lm_head
        vocab = int(head.weight.shape[0]) if head is not None and getattr(head, "weight", None) is not None else None
        self.chunks = StepChunks(self.max_steps, self.top_k, lm_head=lm_head, final_norm=structure.final_norm,
                                 lens_scale=kwargs.get("lens_scale", 1.0),
                                 lens_device=execution_device(lm_head) if lm_head is not None else None,
                                 batch=self.batch, vocab=vocab, score_bytes=score_bytes)
        self._plain_masks: dict[tuple, bool] = {}
        self._prompt_final_rows: torch.Tensor | None = None  # flat [B*P] rows of the final states kept
        #: the sequence whose first logits are checked against its prompt alone (the most padded)
        self.probe = min(range(self.batch), key=lambda i: (self.seqs[i].n, i))
        #: an unpadded sequence (the longest): its batched-vs-alone difference is the batch's own
        #: rounding noise, the yardstick for the probe's
        self.anchor = max(range(self.batch), key=lambda i: (self.seqs[i].n, -i))
        self.first_logits: torch.Tensor | None = None  # the probe's step-0 logits [V]
        self.anchor_logits: torch.Tensor | None = None  # the anchor's

    # -------------------------------------------------------------------- spans
    def stack_padded(self, stack: Stack) -> bool:
        """Whether this stack's sequences have padding (the decoder of an encoder-decoder has none)."""
        return self.padded and stack.role != "decoder"

    def span(self, stack: Stack, i: int, q_len: int) -> tuple[int, int]:
        if stack.role == "decoder":
            return 0, q_len
        return self.seqs[i].start, self.seqs[i].end

    def sequence_call(self, stack: Stack, i: int, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor | None,
                      mask: torch.Tensor | None, spec: CallSpec) -> tuple[Any, ...]:
        """Sequence ``i``'s part of a prompt-pass call: (query, key, value, mask, spec), sliced to its span."""
        q_len = query.shape[-2]
        s, e = self.span(stack, i, q_len)
        kw = dict(spec.kwargs)
        if kw.get("position_bias") is not None:
            kw["position_bias"] = _slice_rows_keys(kw["position_bias"], i, s, e, q_len)
        sinks = kw.get("sinks")
        if isinstance(sinks, torch.Tensor) and sinks.dim() == 4:
            sinks = sinks[i : i + 1] if sinks.shape[0] > 1 else sinks
            kw["sinks"] = sinks[:, :, s:e] if sinks.shape[2] == q_len and q_len > 1 else sinks
        return (query[i : i + 1, :, s:e], key[i : i + 1, :, s:e],
                None if value is None else value[i : i + 1, :, s:e],
                _slice_rows_keys(mask, i, s, e, q_len),
                CallSpec(spec.implementation, spec.scaling, spec.dropout, kw))

    def plain_mask(self, stack: Stack, mask: torch.Tensor, q_len: int, causal: bool) -> bool:
        """Whether ``mask`` [B|1, h, q, k], restricted to every sequence's span, is exactly the
        causal mask (``causal``) or the full one: the fast prompt paths then apply. Checked once per
        mask tensor and forward, in row blocks within the tile budget (one host sync)."""
        key = (mask.data_ptr(), tuple(mask.shape), mask.dtype, self.step, id(stack), causal)
        known = self._plain_masks.get(key)
        if known is not None:
            return known
        ok: list[torch.Tensor] = []
        if mask.shape[-2] != q_len or mask.shape[-1] < q_len:
            self._plain_masks[key] = False
            return False
        for i in range(self.batch):  # a loop over the batch's sequences, one comparison each
            s, e = self.span(stack, i, q_len)
            m = _slice_rows_keys(mask, i, s, e, q_len)
            n = e - s
            rows = max(1, self.tile_bytes // max(1, 2 * n * m.shape[1]))
            for r0 in range(0, n, rows):
                part = m[..., r0 : r0 + rows, :]
                valid = part if part.dtype == torch.bool else part > torch.finfo(part.dtype).min / 2
                if causal:
                    r = torch.arange(r0, min(n, r0 + rows), device=part.device)
                    want = torch.arange(n, device=part.device)[None, :] <= r[:, None]
                    ok.append((valid == want).all())
                else:
                    ok.append(valid.all())
        result = bool(torch.stack(ok).all()) if ok else True
        self._plain_masks[key] = result
        return result

    # -------------------------------------------------------------------- hooks
    def _on_model_pre(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        self.step += 1
        if self.step >= self.max_steps:
            raise RuntimeError(f"generate ran more forwards ({self.step + 1}) than max_new_tokens={self.max_steps}")
        if self.step > 0:
            ids = kwargs.get("decoder_input_ids")
            if ids is None:
                ids = kwargs.get("input_ids", args[0] if args else None)
            if ids is not None:
                self.record_token(self.step - 1, ids[:, -1])
        if self.chunks.ready(self.step):
            self.chunks.reduce(self._tokens_known)

    def _on_model_out(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        self._flush_pending()
        if self._finished_step != self.step:
            raise ValueError(
                f"{self._model_name()}: the blocks corevital instruments ({type(self.structure.step.module).__name__}) "
                "did not run in the model's forward; refused before generating"
            )
        logits = output.logits[:, -1]
        if logits.shape[0] != self.batch:
            raise BatchUnsupported(f"{self._model_name()}: logits of {logits.shape[0]} rows for {self.batch} sequences")
        if self._prompt_final is not None:
            self._batched_prompt_surprisal(self._prompt_final, logits)
            self._prompt_final = None
        if self.step == 0 and self.padded:
            self.first_logits = logits[self.probe].clone()
            self.anchor_logits = logits[self.anchor].clone()
        self.chunks.put_logits(self.step, logits)

    def _batched_prompt_surprisal(self, h: torch.Tensor, logits_last: torch.Tensor) -> None:
        """``h``: the real rows [N, D] of the prefill's final states that predict a next prompt
        token (every sequence's, in order), then the B last rows. The head is found on sequence
        0's last position, as alone."""
        n_rows = h.shape[0] - self.batch
        found = find_head(self.model, self.structure.lm_head, h[n_rows], logits_last[0])
        if found is None:
            self.notes["prompt_surprisal"] = ("unavailable: no hidden-to-logits map corevital knows reproduces this "
                                              "model's logits (post-processing it does not model)")
            return
        self.notes["logit_head"] = found[0]
        head_device = execution_device(self.structure.lm_head)
        assert self._prompt_final_rows is not None
        ids = self.prompt_ids.reshape(-1).to(head_device)[self._prompt_final_rows.to(head_device) + 1]
        bits = metrics.prompt_surprisal_bits(h[:n_rows].to(head_device), found[1], ids,
                                             linear=plain_linear(found[0], self.structure.lm_head))
        bits = self._to_host(bits)  # one copy for the batch (waited for in finish_batch)
        for seq, part in zip(self.seqs, torch.split(bits, [seq.n - 1 for seq in self.seqs])):
            seq.surprisal = part

    def _make_first_pre(self, stack: Stack) -> Any:
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            hidden = args[0] if args else kwargs["hidden_states"]
            if hidden.dim() != 3 or hidden.shape[0] != self.batch:
                raise BatchUnsupported(f"{self._model_name()}: its {stack.role} blocks take hidden states of shape "
                                       f"{tuple(hidden.shape)}, not [batch {self.batch}, tokens, hidden]")
            self._widths[id(stack)] = hidden.shape[-1]
            self._tokens[id(stack)] = hidden.shape[1]
            if self._in_prompt_pass(stack):
                self._prev_hidden = hidden

        return hook

    def _make_layer_hook(self, stack: Stack, i: int) -> Any:
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            self._layer_output(stack, i, _tensor_output(output))

        return hook

    def _make_stack_hook(self, stack: Stack) -> Any:
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            h = _tensor_output(output)
            if stack.output is stack.module:
                self._stack_done(stack, h)
            else:
                self._pending_final[id(stack)] = (stack, h)

        return hook

    def _make_output_hook(self, stack: Stack) -> Any:
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            if self._pending_final.pop(id(stack), None) is not None:
                self._stack_done(stack, _tensor_output(output))

        return hook

    def _layer_output(self, stack: Stack, i: int, h: torch.Tensor) -> None:
        """h: [B, S, D] output of layer i."""
        width = self._widths.get(id(stack))
        tokens = self._tokens.get(id(stack))
        if (h.dim() != 3 or h.shape[0] != self.batch or (tokens is not None and h.shape[1] != tokens)
                or (width is not None and h.shape[-1] != width)):
            raise BatchUnsupported(f"{self._model_name()}: the output of {stack.role} block {i} is {tuple(h.shape)}, "
                                   f"not [batch {self.batch}, tokens, hidden]")
        if stack.role != "encoder":
            self._step_vecs[i] = h[:, -1] if h.shape[1] == 1 else h[:, -1].clone()
        if self._in_prompt_pass(stack) and self._prev_hidden is not None:
            prev = self._prev_hidden if self._prev_hidden.device == h.device else self._prev_hidden.to(h.device)
            self._layer_transformation[i] = self._to_host(metrics.layer_transformation(prev, h))
            self._prev_hidden = h

    def _stack_done(self, stack: Stack, h: torch.Tensor) -> None:
        prompt_pass = self._in_prompt_pass(stack)
        self._layer_output(stack, stack.num_layers - 1, h)
        self._prev_hidden = None
        if prompt_pass and stack.role == "causal" and self.structure.lm_head is not None and h.shape[1] > 1:
            if h.shape[1] != self.width:
                raise BatchUnsupported(f"{self._model_name()}: its blocks see {h.shape[1]} positions for a padded "
                                       f"prompt of {self.width} tokens")
            # the rows that predict a next real prompt token, then every sequence's last row
            rows = torch.cat([torch.arange(i * self.width + seq.start, i * self.width + seq.end - 1)
                              for i, seq in enumerate(self.seqs)])
            last = torch.arange(self.batch) * self.width + self.width - 1
            self._prompt_final_rows = rows
            flat = h.reshape(-1, h.shape[-1])
            self._prompt_final = flat[torch.cat([rows, last]).to(h.device)]  # a copy (the states are not kept)
        if stack.role != "encoder":
            self._finish_step()

    def _step_score_matrix(self) -> tuple[torch.Tensor, list[float]] | None:
        """This step's score rows [B, L, H, S] (padded keys at -inf) and each layer's scale."""
        found = super()._step_score_matrix()  # [L, B, H, S]
        if found is None:
            return None
        return found[0].transpose(0, 1), found[1]

    def _prompt_layers_seen(self) -> set[int]:
        return set(self.seqs[0].heads)

    # ---------------------------------------------------------------- attention
    def on_attention(self, module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attention_mask: torch.Tensor | None, spec: CallSpec, output: torch.Tensor) -> None:
        observe_batched_call(self, module, query, key, value, attention_mask, spec, output)

    def verify_call(self, entry: tuple[Stack, int], module: nn.Module, query: torch.Tensor, key: torch.Tensor,
                    value: torch.Tensor, attention_mask: torch.Tensor | None, spec: CallSpec,
                    output: torch.Tensor) -> None:
        """As alone (:meth:`.collector.Collector.verify_call`), over a sequence's real span: the
        model's output there must equal corevital's recomputation from the sliced call (a model
        that lets padding leak into a real row fails here). Checked on the most padded sequence
        and the least padded one (every sequence goes through the same code; a check costs a host
        sync per layer)."""
        stack = entry[0]
        where = self._checked_call_site(entry, module, spec)
        if query.shape[0] != self.batch:
            raise BatchUnsupported(f"{where} runs a batch of {query.shape[0]} for {self.batch} sequences")
        q_len = query.shape[-2]
        theirs = output if output.dim() == 4 else output.reshape(*output.shape[:2], query.shape[1], -1)
        tolerance = mismatch_tolerance(query.dtype)
        if not self.stack_padded(stack) or q_len == 1:
            calls = [(query, key, value, attention_mask, spec, theirs)]
        else:
            calls = []
            longest = max(range(self.batch), key=lambda i: (self.seqs[i].n, -i))
            for i in sorted({self.probe, longest}):  # the first forward only
                s, e = self.span(stack, i, q_len)
                calls.append((*self.sequence_call(stack, i, query, key, value, attention_mask, spec),
                              theirs[i : i + 1, s:e]))
        for q, k, v, m, sp, out in calls:
            err = recomputation_error(module, q, k, v, m, sp, out)
            if not err <= tolerance:
                raise BatchUnsupported(
                    f"{self._model_name()}: corevital's recomputation of the attention of {where} over a sequence's "
                    f"real positions does not reproduce the model's batched output (relative difference {err:.3g})"
                )

    def prompt_done(self, i: int, entry: tuple[Stack, int], acc: PromptAccumulator) -> None:
        """Sequence ``i``'s layer statistics and sparse profile, to the host (as alone)."""
        stack, layer = entry
        seq = self.seqs[i]
        seq.heads[layer] = self._to_host(acc.head_stats())
        sp = acc.sparse()
        counts, keys, weights = sp.counts.to(torch.int32), sp.keys.to(torch.int32), sp.weights.to(torch.float16)
        seq.cap, recap = self._layer_cap(stack, seq.sparse, seq.cap, counts.numel(), keys.numel(), acc.cap)
        if recap:
            counts, keys, weights = metrics.cap_rows(counts, keys, weights, seq.cap)
        seq.sparse[layer] = (self._to_host(counts), self._to_host(keys), self._to_host(weights))
        if self.on_prompt_layer is not None and i == self.batch - 1:
            self.on_prompt_layer(len(seq.heads), sum(a is not None for a in stack.attention))

    def prompt_done_batch(self, entry: tuple[Stack, int], fused: FusedBatch, cap: int) -> None:
        """Every sequence's layer statistics and sparse profile from one batched kernel call
        (:func:`.triton_prompt.fused_prompt_batch`, run with ``cap``): the head statistics of all
        sequences in one set of ops, and one host copy per array for the whole batch (each
        sequence keeps views of it). As :meth:`prompt_done` per sequence otherwise: a sequence
        whose own cap differs from ``cap`` has its rows capped on the device, alone."""
        stack, layer = entry
        rows = fused.table[:, 2]
        valid = (torch.arange(fused.stats.shape[-1], device=rows.device) < rows[:, None])[:, None, :]  # [B, 1, P]
        partials = fused_row_partials(fused.stats, valid)  # [5, B, H]: rows past a sequence's are not rows
        heads = metrics.prompt_head_stats(partials, rows[:, None].to(partials.dtype))  # [4, B, H]
        heads_host = self._to_host(heads.transpose(0, 1).contiguous())  # [B, 4, H]
        counts_host = self._to_host(fused.counts)
        keys_host = self._to_host(fused.keys)
        weights16 = fused.weights.to(torch.float16)
        weights_host = self._to_host(weights16)
        offsets = fused.offsets()
        n_heads = fused.counts.shape[1]
        for b, seq in enumerate(self.seqs):  # per sequence: views of the batch's host copies (a loop over sequences)
            seq.heads[layer] = heads_host[b]
            p, lo, hi = fused.rows[b], offsets[b], offsets[b + 1]
            seq.cap, recap = self._layer_cap(stack, seq.sparse, seq.cap, n_heads * p, hi - lo, cap)
            if recap:
                capped = metrics.cap_rows(fused.counts[b, :, :p], fused.keys[lo:hi], weights16[lo:hi], seq.cap)
                seq.sparse[layer] = tuple(self._to_host(t) for t in capped)  # type: ignore[assignment]
            else:
                seq.sparse[layer] = (counts_host[b, :, :p], keys_host[lo:hi], weights_host[lo:hi])
        if self.on_prompt_layer is not None:
            self.on_prompt_layer(len(self.seqs[-1].heads), sum(a is not None for a in stack.attention))

    # ------------------------------------------------------------------- finish
    def finish_batch(self, lengths: list[int]) -> None:
        """The device part of the end of a batch: the last chunk's reductions, one host copy per
        step buffer, the prompt pass's host copies waited for. Each sequence's arrays are then
        :meth:`assemble`'d from host memory alone (any thread)."""
        self.chunks.reduce(self._tokens_known)
        self._check_recorded()
        if self.prompt_telemetry and self.seqs[0].heads:
            self._check_prompt_layers()
        n_steps = max(lengths) if lengths else 0
        self._host_out = {name: buf[:n_steps].cpu().numpy() for name, buf in self.chunks.out.items()}  # [T, B, ...]
        self._sync_host_copies()
        self._lengths = list(lengths)

    def assemble(self, i: int) -> CollectedArrays:
        """Sequence ``i``'s arrays, its T_i steps only, from host memory (after :meth:`finish_batch`)."""
        seq, n = self.seqs[i], self._lengths[i]
        mine = {name: np.ascontiguousarray(a[:n, i]) for name, a in self._host_out.items()}
        seq_lt = {layer: t[i, seq.start : seq.end] for layer, t in self._layer_transformation.items()}  # [B, P] host
        psurp = None if seq.surprisal is None else seq.surprisal.cpu().numpy()
        return self._assemble(mine, seq.heads, seq_lt, seq.sparse, psurp)


def _step_rows(module: nn.Module, query: torch.Tensor, key: torch.Tensor, mask: torch.Tensor | None,
               spec: CallSpec) -> tuple[torch.Tensor, float]:
    """Masked score rows [B, H, S] of every sequence's last query row, and the factor still to
    apply (as :func:`.attention.step_row_scores`, for the whole batch)."""
    q_len = query.shape[-2]
    last = slice(q_len - 1, q_len)
    if spec.plain and (mask is None or mask.dtype == torch.bool):
        return attention_scores(module, query, key, mask, spec, last, scaled=False)[:, :, -1, :], spec.softmax_scale(query)
    return attention_scores(module, query, key, mask, spec, last)[:, :, -1, :], 1.0


def observe_batched_call(collector: BatchedCollector, module: nn.Module, query: torch.Tensor, key: torch.Tensor,
                         value: torch.Tensor, attention_mask: torch.Tensor | None, spec: CallSpec,
                         output: torch.Tensor) -> None:
    """One attention call of a batched forward (see the module docstring)."""
    entry = collector.entry_of(module)
    if entry is None:
        return
    stack = entry[0]
    if attention_mask is not None and attention_mask.dim() != 4:
        raise BatchUnsupported(f"the attention mask of {stack.role} layer {entry[1]} is {attention_mask.dim()}-D, "
                               "not [batch, heads, queries, keys]")
    padded = collector.stack_padded(stack)
    if padded and attention_mask is None:
        raise BatchUnsupported(f"{collector._model_name()}: {stack.role} layer {entry[1]} got no attention mask for "
                               "a padded batch, so padding cannot be told from the prompt")
    if collector.verifying(stack):
        collector.verify_call(entry, module, query, key, value, attention_mask, spec, output)
    q_len = query.shape[-2]
    if q_len > 1:
        step = stack.role != "encoder"
        n_keys = spec.key_limit(module, attention_mask, q_len, key.shape[-2])
        key = key[..., :n_keys, :]
        if collector._in_prompt_pass(stack):
            if attention_mask is None:  # no padding anywhere: exactly the call alone, per sequence
                causal, plain = spec.implicit_causal(module, None, q_len), True
            else:  # the span of the model's mask must be exactly causal (prefill) or full (encoder)
                causal = stack.role == "causal"
                plain = collector.plain_mask(stack, attention_mask, q_len, causal)
            n_heads = query.shape[1]
            if not (plain and _fused_prompt_pass(collector, entry, module, query, key, spec, causal)):
                for i in range(collector.batch):  # the batch's sequences, one prompt pass each (within the tile budget)
                    q, k, _, m, sp = collector.sequence_call(stack, i, query, key, None, attention_mask, spec)
                    n = q.shape[-2]
                    acc = PromptAccumulator(n_heads, n, n, collector.threshold, collector.seqs[i].cap, q.device)
                    if plain and cpu_prompt_supported(q, k, None, sp.kwargs, module.training):
                        cpu_prompt_layer(acc, q, k, sp.softmax_scale(q), causal, collector.tile_rows(n_heads, n))
                    else:
                        _tiled_prompt(collector, module, acc, q, k, m, sp)
                    collector.prompt_done(i, entry, acc)
        if step:
            collector.on_step_scores(entry, *_step_rows(module, query, key, attention_mask, spec))
    elif stack.role != "encoder":
        modelled, valid = _step_keys_valid(attention_mask, key.shape[-2])
        if spec.plain and modelled and (valid is not None or spec.sliding_window is None):
            # keep references only: every layer's rows are scored together at the step's end
            collector.on_step_query(entry, query[:, :, -1, :], key, spec.softmax_scale(query), valid)
        else:
            collector.on_step_scores(entry, *_step_rows(module, query, key, attention_mask, spec))


def _step_keys_valid(mask: torch.Tensor | None, n_keys: int) -> tuple[bool, torch.Tensor | None]:
    """Whether the deferred scoring models a decode step's mask (a boolean [B|1, 1, 1, S] mask or
    none; not a float or per-head one), and the keys it lets through, [B|1, n_keys] bool (None
    without a mask: all)."""
    if mask is None:
        return True, None
    if mask.dtype != torch.bool or mask.shape[1] != 1 or mask.shape[-2] != 1 or mask.shape[-1] < n_keys:
        return False, None
    return True, mask[:, 0, -1, :n_keys]


def _fused_prompt_pass(collector: BatchedCollector, entry: tuple[Stack, int], module: nn.Module, query: torch.Tensor,
                       key: torch.Tensor, spec: CallSpec, causal: bool) -> bool:
    """Every sequence's prompt pass of one layer through the fused Triton kernels at once (one
    launch per kernel for the whole batch, each sequence over its own span: the same numbers as
    its call alone). False when the kernels do not apply (the caller then goes sequence by
    sequence)."""
    stack = entry[0]
    q0, k0, _, _, sp = collector.sequence_call(stack, 0, query, key, None, None, spec)
    if not fused_prompt_supported(q0, k0, None, sp.kwargs, collector.threshold, module.training):
        return False
    spans = []
    for i in range(collector.batch):  # the table of spans the kernels read (a loop over sequences)
        s, e = collector.span(stack, i, query.shape[-2])
        spans.append((s, s, e - s, e - s))
    caps = {seq.cap for seq in collector.seqs}
    cap = caps.pop() if len(caps) == 1 else 0  # differing caps: applied per sequence by prompt_done_batch
    found = fused_or_none(lambda: fused_prompt_batch(query, key, spans, sp.scaling, causal, collector.threshold, cap,
                                                     collector.tile_bytes))
    if found is None:
        return False
    collector.prompt_done_batch(entry, found, cap)
    return True


def _tiled_prompt(collector: BatchedCollector, module: nn.Module, acc: PromptAccumulator, query: torch.Tensor,
                  key: torch.Tensor, mask: torch.Tensor | None, spec: CallSpec) -> None:
    """One sequence's prompt pass over query tiles with its sliced mask (the general path of
    :func:`.attention.observe_call`)."""
    q_len, n_keys = query.shape[-2], key.shape[-2]
    causal = spec.implicit_causal(module, mask, q_len)
    tile = collector.tile_rows(query.shape[1], n_keys)
    for r0 in range(0, q_len, tile):
        rows = slice(r0, min(q_len, r0 + tile))
        upto = min(n_keys, rows.stop + n_keys - q_len) if causal else n_keys
        scores = attention_scores(module, query, key[..., :upto, :], mask, spec, rows, total_keys=n_keys)
        acc.add(attention_probs(scores)[0], r0)
        del scores


# ------------------------------------------------------------------------ memory budget
def _text_config(model: Any) -> Any:
    config = model.config
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def chunk_score_budget(batch_bytes: int) -> int:
    """The budget of a batched run's chunk of score rows, bytes: 1/64 of the batch's budget,
    between CHUNK_SCORE_BYTES and BATCH_CHUNK_SCORE_BYTES. A batch of 32 sequences of an 8B
    model has 117 MB of rows per step: a larger chunk reduces several steps in one set of ops."""
    return int(min(BATCH_CHUNK_SCORE_BYTES, max(step_chunks.CHUNK_SCORE_BYTES, batch_bytes // 64)))


def batch_bytes_estimate(model: Any, structure: ModelStructure, n_seqs: int, prompt_len: int, max_new_tokens: int,
                         *, prompt_telemetry: bool = True, tile_bytes: int = DEFAULT_TILE_BYTES,
                         max_sparse_bytes: int = DEFAULT_MAX_SPARSE_BYTES, chunk_score_bytes: int | None = None) -> int:
    """Estimated peak memory of one batched run beyond the weights, bytes: the model's KV cache
    and prefill activations (and eager attention's [B, H, P, P] weights), plus the collector's
    own buffers: a chunk of steps' score rows [chunk, B, L, H, S] with their reduction's
    temporaries (the chunk sized as :func:`.step_chunks.chunk_steps` sizes it for
    ``chunk_score_bytes``), the chunk's [chunk, B, V] logits with their float32 log-softmax
    temporaries, the prefill's final states kept for prompt surprisal, and one
    layer's prompt pass: the tile / sparse buffer (``tile_bytes``, for the whole batch), the
    per-row statistics [5, B, H, P] float32 and every sequence's compacted entries of the layer
    (its share of ``max_sparse_bytes``, at 8 bytes an entry on the device)."""
    cfg = _text_config(model)
    elt = next(model.parameters()).element_size()
    hidden = int(getattr(cfg, "hidden_size", 0) or getattr(cfg, "d_model", 0) or 1)
    heads = int(getattr(cfg, "num_attention_heads", 0) or getattr(cfg, "num_heads", 0) or 1)
    kv_heads = int(getattr(cfg, "num_key_value_heads", 0) or heads)
    head_dim = int(getattr(cfg, "head_dim", 0) or getattr(cfg, "d_kv", 0) or hidden // heads)
    inter = int(getattr(cfg, "intermediate_size", 0) or getattr(cfg, "d_ff", 0) or 4 * hidden)
    vocab = int(getattr(cfg, "vocab_size", 0) or 1)
    n_layers = structure.step.num_layers + (structure.prompt.num_layers if structure.is_encoder_decoder else 0)
    total = prompt_len + max_new_tokens
    kv = 2 * n_layers * n_seqs * kv_heads * total * head_dim * elt
    prefill = n_seqs * prompt_len * (6 * hidden + 2 * inter) * elt + n_seqs * prompt_len * prompt_len
    impl = getattr(model.config, "_attn_implementation", None)
    if impl in (None, "eager"):
        prefill += 2 * n_seqs * heads * prompt_len * prompt_len * 4
    step_rows = (n_seqs, structure.step.num_layers, heads, total)
    steps = min(max(1, max_new_tokens), chunk_steps(step_rows, n_seqs, vocab, chunk_score_bytes))
    scores = SCORE_REDUCTION_COPIES * steps * n_seqs * structure.step.num_layers * heads * (total + CHUNK_STEPS) * 4
    logits = steps * n_seqs * vocab * (elt + 12)
    final = n_seqs * prompt_len * hidden * elt if prompt_telemetry else 0
    prompt_layers = max(1, structure.prompt.num_layers)
    prompt_pass = (tile_bytes + 5 * n_seqs * heads * prompt_len * 4
                   + n_seqs * 2 * max_sparse_bytes // prompt_layers) if prompt_telemetry else 0
    return int(kv + prefill + scores + logits + final + prompt_pass)


def default_batch_bytes(device: torch.device) -> int:
    """The default budget: 80% of the free memory of a CUDA device, else DEFAULT_CPU_BATCH_BYTES."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * CUDA_FREE_SHARE)
    return DEFAULT_CPU_BATCH_BYTES


# --------------------------------------------------------------------------- analyze_batch
def _obstacle(model: Any, structure: ModelStructure, routes: dict[int, str], kwargs: dict[str, Any]) -> str | None:
    """Why these prompts cannot be traced exactly in one batch (None: they can)."""
    if kwargs.get("do_sample"):
        return "sampling (do_sample=True) draws other random numbers in a batch than alone"
    for name in ("on_step", "stop", "on_prompt_layer"):
        if kwargs.get(name) is not None:
            return f"{name} follows one sequence's generation"
    generate = {k: v for k, v in kwargs.items() if k not in _ANALYZE_KWARGS}
    other = sorted(k for k in generate if k not in PER_SEQUENCE_GENERATE_KWARGS)
    if other:
        return f"generate option(s) {other} are not known to act on each sequence of a padded batch as alone"
    config = getattr(model, "generation_config", None)
    for name, neutral in (("repetition_penalty", 1.0), ("no_repeat_ngram_size", 0), ("encoder_repetition_penalty", 1.0),
                          ("encoder_no_repeat_ngram_size", 0), ("sequence_bias", None), ("stop_strings", None)):
        value = getattr(config, name, None)
        if value is not None and value != neutral:
            return f"the model's generation config sets {name}={value!r}, which reads the padded ids"
    impl = getattr(model.config, "_attn_implementation", None)
    if impl not in _BATCHED_IMPLEMENTATIONS:
        return f"attention implementation {impl!r} does not pass a [batch, heads, queries, keys] padding mask"
    if any(route != "interface" for route in routes.values()):
        return "some attention modules are read from their returned probabilities or their own SDPA call"
    if any(a is None for a in structure.step.attention + structure.prompt.attention):
        return "blocks without softmax attention (state-space, convolution, linear attention) may carry padding along"
    if not structure.is_encoder_decoder:
        import inspect

        if "position_ids" not in inspect.signature(model.forward).parameters:
            return "the model's forward takes no position_ids (left padding would shift its positions)"
    return None


def _eos_ids(model: Any, kwargs: dict[str, Any]) -> set[int]:
    eos = kwargs.get("eos_token_id", getattr(getattr(model, "generation_config", None), "eos_token_id", None))
    if eos is None:
        return set()
    if isinstance(eos, torch.Tensor):
        eos = eos.tolist()
    return {int(e) for e in (eos if isinstance(eos, (list, tuple, set)) else [eos])}


def _alone(model: Any, prompts: list[str], tokenizer: Any, kwargs: dict[str, Any], why: str) -> list[Trace]:
    from .analyze import analyze

    traces = []
    for prompt in prompts:
        trace = analyze(model, prompt, tokenizer, **kwargs)
        trace.meta["batch"] = {"size": 1, "note": f"traced alone: {why}"}
        traces.append(trace)
    return traces


#: Makes one sequence's Trace from host memory (after its batch's device work is done).
PendingTrace = Callable[[], Trace]


def analyze_batch(model: Any, prompts: list[str], tokenizer: Any | None = None, *, batch_bytes: int | None = None,
                  **analyze_kwargs: Any) -> list[Trace]:
    """Trace ``prompts`` in one ``generate`` call (left padding; right padding of the encoder
    input for encoder-decoders) and return one Trace per prompt, in order, each equal (float
    tolerance) to ``analyze(model, prompt, tokenizer, **analyze_kwargs)``.

    ``batch_bytes`` is the memory budget of one batch (:func:`batch_bytes_estimate`; default:
    :func:`default_batch_bytes`): a batch over it is split into smaller ones, with a warning. What
    cannot be batched exactly is traced one prompt at a time, with a warning and
    ``trace.meta["batch"]["note"]`` saying why (see the module docstring).
    """
    return [make() for make in pending_batch(model, prompts, tokenizer, batch_bytes=batch_bytes, **analyze_kwargs)]


def pending_batch(model: Any, prompts: list[str], tokenizer: Any | None = None, *, batch_bytes: int | None = None,
                  **analyze_kwargs: Any) -> list[PendingTrace]:
    """:func:`analyze_batch`'s device work: every generate call of the batch runs here, and what
    is left is one builder per prompt, in order, that makes its Trace from host memory (on any
    thread: ``analyze_many`` builds a batch's traces while the next batch generates)."""
    from .analyze import _check_inputs, _context_length
    from .loading import resolve_model, resolve_tokenizer

    prompts = list(prompts)
    if not prompts:
        return []
    model = resolve_model(model)
    tokenizer = resolve_tokenizer(model, tokenizer)
    kw = dict(analyze_kwargs)
    kw.pop("progress", None)
    max_new_tokens = kw.get("max_new_tokens", 64)
    generate_kwargs = {k: v for k, v in kw.items() if k not in _ANALYZE_KWARGS}
    for prompt in prompts:
        _check_inputs(prompt, max_new_tokens, kw.get("attention_threshold", 0.01), kw.get("top_k", 10), generate_kwargs)
    if len(prompts) == 1:
        return [_ready(_analyze_one(model, prompts[0], tokenizer, kw))]
    structure = inspect_model(model)
    routes = adapters.plan_attention(model, structure)
    why = _obstacle(model, structure, routes, kw)
    if why is not None:
        warnings.warn(f"corevital: {len(prompts)} prompts traced one at a time, not batched: {why}", RuntimeWarning,
                      stacklevel=2)
        return [_ready(t) for t in _alone(model, prompts, tokenizer, kw, why)]
    encoded = [tokenizer(p, return_tensors="pt")["input_ids"][0] for p in prompts]
    context = _context_length(model)
    for ids in encoded:
        if ids.numel() == 0:
            raise ValueError("a prompt tokenised to zero tokens; pass some text")
        if context is not None and not model.config.is_encoder_decoder and ids.numel() + int(max_new_tokens) > context:
            raise ValueError(
                f"the prompt is {ids.numel()} tokens and max_new_tokens={max_new_tokens}, but the model's context is "
                f"{context} tokens; shorten the prompt or lower max_new_tokens"
            )
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    device = execution_device(embeddings if embeddings is not None else model)
    budget = int(batch_bytes) if batch_bytes is not None else default_batch_bytes(device)
    traces: list[PendingTrace | None] = [None] * len(prompts)
    for i, ids in enumerate(encoded):
        if ids.numel() == 1:  # alone its forward has no prompt pass (one row): the same by construction
            traces[i] = _ready(_analyze_one(model, prompts[i], tokenizer, kw))
    # shortest first: little padding
    order = sorted((i for i in range(len(prompts)) if traces[i] is None), key=lambda i: (encoded[i].numel(), i))
    if not order:
        return traces  # type: ignore[return-value]
    score_bytes = chunk_score_budget(budget)
    groups = _split(model, structure, [encoded[i].numel() for i in order], int(max_new_tokens), kw, budget, score_bytes)
    note = None
    if len(groups) > 1:
        sizes = [len(g) for g in groups]
        need = _estimate(model, structure, len(order), max(encoded[i].numel() for i in order), int(max_new_tokens), kw,
                         score_bytes)
        note = (f"a batch of {len(order)} prompts needs about {need / 2**20:.0f} MiB, over the budget of "
                f"{budget / 2**20:.0f} MiB (batch_bytes): split into batches of {sizes}")
        warnings.warn(f"corevital: {note}", RuntimeWarning, stacklevel=2)
    start = 0
    for group in groups:
        members = order[start : start + len(group)]
        start += len(group)
        for i, make in zip(members, _run_or_split(model, structure, routes, tokenizer, [prompts[i] for i in members],
                                                  [encoded[i] for i in members], kw, device, score_bytes)):
            traces[i] = make if note is None else _noted(make, note)
    return traces  # type: ignore[return-value]


def _estimate(model: Any, structure: ModelStructure, n_seqs: int, prompt_len: int, max_new_tokens: int,
              kw: dict[str, Any], score_bytes: int) -> int:
    """:func:`batch_bytes_estimate` of a batch run with the analyze keyword arguments ``kw`` and
    the chunk budget ``score_bytes``."""
    return batch_bytes_estimate(model, structure, n_seqs, prompt_len, max_new_tokens,
                                prompt_telemetry=kw.get("prompt_telemetry", True),
                                tile_bytes=kw.get("attention_tile_bytes", DEFAULT_TILE_BYTES),
                                max_sparse_bytes=kw.get("max_sparse_bytes", DEFAULT_MAX_SPARSE_BYTES),
                                chunk_score_bytes=score_bytes)


def _split(model: Any, structure: ModelStructure, lengths: list[int], max_new_tokens: int, kw: dict[str, Any],
           budget: int, score_bytes: int) -> list[list[int]]:
    """Consecutive groups (lengths ascending) whose estimate fits ``budget`` (a single prompt
    always forms a group: alone it needs what batch size 1 needs)."""
    groups: list[list[int]] = []
    current: list[int] = []
    for n in lengths:
        trial = current + [n]
        estimate = _estimate(model, structure, len(trial), max(trial), max_new_tokens, kw, score_bytes)
        if current and estimate > budget:
            groups.append(current)
            current = [n]
        else:
            current = trial
    if current:
        groups.append(current)
    return groups


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def _analyze_one(model: Any, prompt: str, tokenizer: Any, kw: dict[str, Any]) -> Trace:
    from .analyze import analyze

    trace = analyze(model, prompt, tokenizer, **kw)
    trace.meta["batch"] = {"size": 1}
    return trace


def _ready(trace: Trace) -> PendingTrace:
    """A Trace already made, as a builder."""
    return lambda: trace


def _noted(make: PendingTrace, note: str) -> PendingTrace:
    """``make`` with ``note`` appended to its trace's ``meta["batch"]["note"]``."""
    def build() -> Trace:
        trace = make()
        meta = trace.meta.setdefault("batch", {})
        meta["note"] = f"{meta['note']}; {note}" if meta.get("note") else note
        return trace

    return build


def _run_or_split(model: Any, structure: ModelStructure, routes: dict[int, str], tokenizer: Any, prompts: list[str],
                  encoded: list[torch.Tensor], kw: dict[str, Any], device: torch.device,
                  score_bytes: int) -> list[PendingTrace]:
    """One batch; out of memory: two halves; not exact in a batch: one prompt at a time."""
    if len(prompts) == 1:
        return [_ready(_analyze_one(model, prompts[0], tokenizer, kw))]
    try:
        return _run_batch(model, structure, routes, tokenizer, prompts, encoded, kw, device, score_bytes)
    except BatchUnsupported as exc:
        why = str(exc)
    except ValueError as exc:  # e.g. a refusal: alone, each prompt gets batch size 1's own answer
        why = f"the batched run was refused ({exc})"
    except (RuntimeError, MemoryError) as exc:
        if not _is_oom(exc) and not isinstance(exc, MemoryError):
            raise
        if device.type == "cuda":
            torch.cuda.empty_cache()
        half = len(prompts) // 2
        warnings.warn(f"corevital: a batch of {len(prompts)} prompts ran out of memory; splitting it into "
                      f"{half} + {len(prompts) - half}", RuntimeWarning, stacklevel=3)
        split = f"split after running out of memory in a batch of {len(prompts)}"
        return [_noted(make, split) for part in (slice(0, half), slice(half, None))
                for make in _run_or_split(model, structure, routes, tokenizer, prompts[part], encoded[part], kw, device,
                                          score_bytes)]
    warnings.warn(f"corevital: {len(prompts)} prompts traced one at a time, not batched: {why}", RuntimeWarning,
                  stacklevel=3)
    return [_ready(t) for t in _alone(model, prompts, tokenizer, kw, why)]


def _run_batch(model: Any, structure: ModelStructure, routes: dict[int, str], tokenizer: Any, prompts: list[str],
               encoded: list[torch.Tensor], kw: dict[str, Any], device: torch.device,
               score_bytes: int) -> list[PendingTrace]:
    """One batch through generate (the device work, on this thread); returns a builder per
    sequence that makes its Trace from host memory alone. ``score_bytes``: the budget of a chunk
    of score rows (:func:`chunk_score_budget`)."""
    from .analyze import _build_trace, _implementation, _lens_scale, trace_model_meta

    t_start = time.perf_counter()
    max_new_tokens = int(kw.get("max_new_tokens", 64))
    top_k = int(kw.get("top_k", 10))
    prompt_telemetry = bool(kw.get("prompt_telemetry", True))
    threshold = float(kw.get("attention_threshold", 0.01))
    cap = int(kw.get("attention_cap", 0))
    logit_lens = bool(kw.get("logit_lens", False))
    seed = kw.get("seed")
    thresholds = kw.get("thresholds") or DEFAULT_THRESHOLDS
    generate_kwargs = {k: v for k, v in kw.items() if k not in _ANALYZE_KWARGS}
    enc_dec = structure.is_encoder_decoder
    n = len(encoded)
    width = max(int(e.numel()) for e in encoded)
    pad = getattr(tokenizer, "pad_token_id", None)
    if pad is None:
        pad = getattr(tokenizer, "eos_token_id", None)
    fill = int(pad) if pad is not None else 0
    input_ids = torch.full((n, width), fill, dtype=encoded[0].dtype)
    mask = torch.zeros((n, width), dtype=torch.long)
    spans = []
    for i, ids in enumerate(encoded):  # the batch's sequences (left padding; right for an encoder)
        p = int(ids.numel())
        s = 0 if enc_dec else width - p
        input_ids[i, s : s + p] = ids
        mask[i, s : s + p] = 1
        spans.append((s, s + p))
    input_ids, mask = input_ids.to(device), mask.to(device)
    gen_kwargs = dict(generate_kwargs)
    gen_kwargs.setdefault("pad_token_id", pad)
    gen_kwargs["num_beams"] = 1
    gen_kwargs["num_return_sequences"] = 1
    tapped = [m for m in structure.attention_modules if routes[id(m)] == "interface"]
    t_gen = time.perf_counter()
    with preserved_model_state(model), tapped_attention(tapped, _implementation(model)):
        collector = BatchedCollector(
            model, structure, input_ids, spans, score_bytes=score_bytes, max_steps=max_new_tokens, top_k=top_k,
            prompt_telemetry=prompt_telemetry, attention_threshold=threshold, attention_cap=cap,
            tile_bytes=int(kw.get("attention_tile_bytes", DEFAULT_TILE_BYTES)),
            max_sparse_bytes=int(kw.get("max_sparse_bytes", DEFAULT_MAX_SPARSE_BYTES)), logit_lens=logit_lens,
            lens_scale=_lens_scale(model),
        )
        with collector.running(routes, device, seed):
            output = model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                    do_sample=False, **gen_kwargs)
            generated = output[:, 1:] if enc_dec else output[:, width:]  # (drop the decoder start token)
            n_steps = int(generated.shape[1])
            if n_steps:
                collector.record_token(n_steps - 1, generated[:, -1])
            gen_host = generated.cpu().numpy()
            lengths = _lengths(gen_host, _eos_ids(model, generate_kwargs))
            collector.finish_batch(lengths)
        probe = None
        if collector.first_logits is not None:
            pair = (collector.probe, collector.anchor)
            probe = _check_probe(model, [encoded[i] for i in pair], [output[i, :1] if enc_dec else None for i in pair],
                                 [collector.first_logits, collector.anchor_logits], device)
    t_done = time.perf_counter()
    model_meta = trace_model_meta(model, structure)  # once, on this thread, the model restored
    simple = {k: v for k, v in generate_kwargs.items() if isinstance(v, (int, float, str, bool))}

    def build(i: int) -> Trace:
        """Sequence i's Trace, from host memory only (any thread)."""
        t_build = time.perf_counter()
        params = {"max_new_tokens": max_new_tokens, "do_sample": False, "seed": seed,  # as analyze() records them
                  "prompt_telemetry": prompt_telemetry, "attention_threshold": threshold,
                  "attention_cap": int(collector.seqs[i].cap), "top_k": top_k, "logit_lens": logit_lens,
                  "attention_weight_bits": int(kw.get("attention_weight_bits", 10)), **simple}
        trace = _build_trace(model, structure, tokenizer, encoded[i].numpy(), gen_host[i, : lengths[i]],
                             collector.assemble(i), thresholds, params=params, device=str(device),
                             model_meta=model_meta)
        if collector.notes:
            trace.meta["notes"] = dict(collector.notes)
        trace.meta["timings"] = {"setup_s": t_gen - t_start, "generate_s": t_done - t_gen,
                                 "build_s": time.perf_counter() - t_build}
        trace.meta["batch"] = {"size": n, "padding": "right (encoder input)" if enc_dec else "left"}
        if probe is not None:  # the padding probe's relative logit differences (see _check_probe)
            trace.meta["batch"]["probe"] = probe
        return trace

    return [functools.partial(build, i) for i in range(n)]


#: The probe may differ from its prompt alone by at most this many times the unpadded anchor's
#: own batched-vs-alone difference (both relative to their largest logit), or the dtype's floor.
PROBE_NOISE_FACTOR = 4.0
#: The probe's limit whatever the anchor's noise, relative to the largest logit: float32, and half
#: precision (bfloat16 keeps 8 bits: an 8B model's batched logits differ from alone by a few
#: percent from the matrix shapes alone; padding read as content or positions counted from the
#: padded start change them by far more).
PROBE_FLOOR_FP32, PROBE_FLOOR_HALF = 1e-3, 0.2


def _check_probe(model: Any, ids: list[torch.Tensor], decoder_start: list[torch.Tensor | None],
                 batched_logits: list[torch.Tensor], device: torch.device) -> dict[str, float]:
    """The most padded sequence's first next-token logits in the batch must equal those of its
    prompt alone (one plain forward, no hooks): what the attention verification cannot see
    (positions that shift with the padding, padding read by non-attention blocks) shows here.

    "Equal" is measured against the batch's own rounding noise: the longest sequence has no
    padding, so its batched-vs-alone difference is what the batch's other matrix shapes alone do
    to the logits (in bfloat16 a few percent of the largest logit after many layers). The probe
    passes when its relative difference is within the dtype's floor (PROBE_FLOOR_FP32,
    PROBE_FLOOR_HALF) or PROBE_NOISE_FACTOR times the anchor's; padding read as content or shifted
    positions change the logits by far more than rounding does."""
    import inspect

    extra = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}
    rel = []
    for seq_ids, start, got in zip(ids, decoder_start, batched_logits):
        with torch.inference_mode():
            if start is not None:
                out = model(input_ids=seq_ids[None].to(device), decoder_input_ids=start[None].to(device), **extra)
            else:
                out = model(input_ids=seq_ids[None].to(device), **extra)
            want = out.logits[0, -1].float()
        scale = max(1.0, float(want.abs().max()))
        rel.append(float((got.float().to(want.device) - want).abs().max()) / scale)
    floor = PROBE_FLOOR_FP32 if batched_logits[0].dtype in (torch.float32, torch.float64) else PROBE_FLOOR_HALF
    limit = max(floor, PROBE_NOISE_FACTOR * rel[1])
    if not rel[0] <= limit:
        raise BatchUnsupported(
            f"the first next-token logits of a padded sequence differ from those of its prompt alone by {rel[0]:.3g} "
            f"of the largest logit, over the limit {limit:.3g} (the unpadded sequence's own batch-vs-alone "
            f"difference is {rel[1]:.3g}): the model does not treat left padding as absent (e.g. positions that "
            "shift with it)"
        )
    return {"padded_difference": rel[0], "unpadded_difference": rel[1], "limit": limit}


def _lengths(generated: np.ndarray, eos: set[int]) -> list[int]:
    """Steps per sequence: up to and including its first EOS (generate pads it afterwards)."""
    n_steps = generated.shape[1]
    if not eos or n_steps == 0:
        return [n_steps] * generated.shape[0]
    hit = np.isin(generated, list(eos))
    first = np.where(hit.any(1), hit.argmax(1) + 1, n_steps)
    return [int(x) for x in first]


__all__ = ["analyze_batch", "pending_batch", "PendingTrace", "batch_bytes_estimate", "default_batch_bytes",
           "BatchUnsupported", "BatchedCollector"]
