"""The collector: hooks that reduce what the model computes, on the device, as it computes it.

Per generation step t (forward number t of ``generate``) it hands the step's raw inputs — the
logits, every layer's vector at the step's position, every layer's attention score row, the
chosen token — to :class:`.step_chunks.StepChunks`, which reduces them per chunk of steps into
device buffers indexed by t (output distribution, hidden-state summaries, per-head attention
entropy/concentration, repetition similarity). During the prompt pass (the causal LM's
prefill, or the encoder pass of an encoder-decoder) it also records the prompt telemetry, whose
per-layer results start copying to the host as they are made. Everything else is copied to the
host once, in :meth:`Collector.finish`.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import metrics
from . import adapters
from . import triton_step
from .attention import (ACTIVE_COLLECTOR, LEGACY_MODULE, CallSpec, fused_or_none, mismatch_tolerance, observe_call,
                        output_mismatch)
from .logit_head import find_head, plain_linear
from .prompt_attention import DEFAULT_TILE_BYTES, PromptAccumulator, tile_rows
from .step_chunks import StepChunks, pad_rows
from .structure import ModelStructure, Stack, execution_device

#: Default ceiling for the sparse prompt attention of a run (uncapped estimate), bytes.
DEFAULT_MAX_SPARSE_BYTES = 512 * 2**20

#: Largest stack of one decode step's keys (several layers) scored in one batched matmul, bytes;
#: the layers are taken in groups that fit (a long cache: one layer at a time, GPU-bound anyway).
STEP_BATCH_BYTES = 256 * 2**20


#: Size of one pinned host arena of :class:`HostCopies`, bytes.
HOST_ARENA_BYTES = 64 * 2**20


class HostCopies:
    """Asynchronous device-to-host copies of a run's prompt telemetry, into pinned memory.

    Pinned buffers are carved out of arenas of HOST_ARENA_BYTES (a tensor over a quarter of that
    gets its own), not allocated per tensor: a pinned allocation is a slow driver call (about a
    quarter of a millisecond), and a batched prompt pass makes thousands of small copies
    (sequences x layers x 4 tensors). Each copy runs on the current stream without waiting;
    :meth:`sync` waits for every device with copies in flight, and nothing may read a returned
    buffer before it. CPU tensors are returned as they are."""

    def __init__(self) -> None:
        self.devices: set[torch.device] = set()
        self._arena: torch.Tensor | None = None
        self._used = 0

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        if t.device.type != "cuda":
            return t
        nbytes = t.numel() * t.element_size()
        if nbytes > HOST_ARENA_BYTES // 4:
            host = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
        else:
            start = -(-self._used // 64) * 64  # aligned for any dtype
            if self._arena is None or start + nbytes > self._arena.numel():
                self._arena = torch.empty(HOST_ARENA_BYTES, dtype=torch.uint8, pin_memory=True)
                start = 0
            self._used = start + nbytes
            host = self._arena[start : start + nbytes].view(t.dtype).view(t.shape)
        host.copy_(t, non_blocking=True)
        self.devices.add(t.device)
        return host

    def sync(self) -> None:
        """Wait for every copy in flight (then the returned buffers hold the data)."""
        for device in self.devices:
            torch.cuda.synchronize(device)
        self.devices.clear()


def recomputation_error(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                        mask: torch.Tensor | None, spec: CallSpec, output: torch.Tensor) -> float:
    """Relative difference between the model's attention output and corevital's recomputation
    (probabilities times values) on the first, middle and last query rows (one host sync)."""
    n = query.shape[-2]
    # the index is made on the host and copied without waiting: torch.tensor(..., device=cuda) and
    # torch.unique would each stop the launching thread until the device caught up
    rows = torch.tensor(sorted({0, n // 2, n - 1})).to(query.device, non_blocking=True)
    return output_mismatch(module, query, key, value, mask, spec, output, rows)


def _enter_legacy(module: nn.Module, args: tuple) -> None:
    LEGACY_MODULE.set(module)


def _leave_legacy(module: nn.Module, args: tuple, output: Any) -> None:
    LEGACY_MODULE.set(None)


def _ask_for_weights(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """Forward pre-hook: ask a legacy attention module for its probabilities (its own
    ``output_attentions`` path; the model-level output is unaffected)."""
    position = adapters.positional_index(module, "output_attentions")
    if position is not None and position < len(args):
        args = (*args[:position], True, *args[position + 1:])
    elif position is not None or "output_attentions" in kwargs or adapters.accepts_kwarg(module, "output_attentions"):
        kwargs["output_attentions"] = True
    return args, kwargs


def _pad_heads(values: np.ndarray, n_heads: int, fill: float) -> np.ndarray:
    """``values`` [..., H_l] padded to ``n_heads`` along the last axis (a layer with fewer heads)."""
    if values.shape[-1] == n_heads:
        return values
    pad = np.full((*values.shape[:-1], n_heads - values.shape[-1]), fill, dtype=values.dtype)
    return np.concatenate([values, pad], -1)


def _all_layers(values: np.ndarray, layers: list[int], n_layers: int, axis: int) -> np.ndarray:
    """``values`` of the blocks ``layers`` (along ``axis``) spread over all ``n_layers`` blocks;
    blocks without softmax attention get NaN (never 0)."""
    if len(layers) == n_layers:
        return values
    shape = list(values.shape)
    shape[axis] = n_layers
    out = np.full(shape, np.nan, dtype=values.dtype if values.dtype.kind == "f" else np.float32)
    index = [slice(None)] * values.ndim
    index[axis] = layers
    out[tuple(index)] = values
    return out


def _mask_id(valid: torch.Tensor | None) -> tuple | None:
    """What tells a decode step's key mask from another: layers given views of one mask share it."""
    return None if valid is None else (valid.data_ptr(), tuple(valid.shape), tuple(valid.stride()))


def _tensor_output(output: Any) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    if hasattr(output, "last_hidden_state"):
        return output.last_hidden_state
    return output[0]


@dataclass
class CollectedArrays:
    """Host copies of everything collected, trimmed to the T generated steps."""

    step_stats: np.ndarray  # [T, 5] entropy, margin, top-k mass, max prob, perplexity
    surprisal: np.ndarray  # [T]
    top_k_ids: np.ndarray  # [T, K]
    top_k_probs: np.ndarray  # [T, K]
    logit_flags: np.ndarray  # [T, 2] nan, inf
    repetition: np.ndarray  # [T]
    hidden: np.ndarray  # [T, 3, L] norm, std, mean
    hidden_flags: np.ndarray  # [T, 2, L] nan, inf
    head_entropy: np.ndarray  # [T, L, H] float32
    head_concentration: np.ndarray  # [T, L, H]
    score_variance: np.ndarray  # [T, L]
    attention_flags: np.ndarray  # [T, L, 2]
    prompt_heads: np.ndarray | None  # [L, 4, H]
    layer_transformation: np.ndarray | None  # [L, P]
    prompt_surprisal: np.ndarray | None  # [P-1]
    sparse_counts: np.ndarray | None  # [L, H, P]
    sparse_keys: np.ndarray | None  # [N]
    sparse_weights: np.ndarray | None  # [N] float16
    attention_calls: int
    lens_entropy: np.ndarray | None = None  # [T, L]
    lens_top1: np.ndarray | None = None  # [T, L]


class Collector:
    """Installs hooks on a model, collects during one ``generate`` call, removes them."""

    def __init__(
        self,
        model: nn.Module,
        structure: ModelStructure,
        prompt_ids: torch.Tensor,
        *,
        max_steps: int,
        top_k: int,
        prompt_telemetry: bool,
        attention_threshold: float,
        attention_cap: int = 0,
        tile_bytes: int = DEFAULT_TILE_BYTES,
        max_sparse_bytes: int = DEFAULT_MAX_SPARSE_BYTES,
        logit_lens: bool = False,
        lens_scale: float = 1.0,
        on_prompt_layer: Callable[[int, int], None] | None = None,
    ) -> None:
        self.model = model
        #: called as ``on_prompt_layer(done, total)`` after each block's prompt telemetry (progress)
        self.on_prompt_layer = on_prompt_layer
        self.structure = structure
        self.prompt_ids = prompt_ids  # [P] on the model's input device
        self.max_steps = max_steps
        self.top_k = top_k
        self.prompt_telemetry = prompt_telemetry
        self.threshold = float(attention_threshold)
        self.cap = int(attention_cap)
        self.tile_bytes = int(tile_bytes)
        self.max_sparse_bytes = int(max_sparse_bytes)
        self.step = -1  # index of the forward being run (= generation step)
        self.attention_calls = 0
        self._handles: list[Any] = []
        lm_head = structure.lm_head if logit_lens else None
        self.chunks = StepChunks(max_steps, top_k, lm_head=lm_head, final_norm=structure.final_norm,
                                 lens_scale=lens_scale, lens_device=execution_device(lm_head) if lm_head is not None else None)
        self._tokens_known = 0  # steps whose chosen token is recorded
        # this step's masked score rows [H, S] per layer, with the softmax scale still to apply
        self._step_rows: dict[int, tuple[torch.Tensor, float]] = {}
        # decode steps: per layer the query row [(B,) H, d], the keys [(B,) Hkv, S, d], the softmax
        # scale and the valid keys [B, S] (None: all); see on_step_query
        self._step_queries: dict[int, tuple[torch.Tensor, torch.Tensor, float, torch.Tensor | None]] = {}
        self._step_vecs: dict[int, torch.Tensor] = {}  # this step's vector [D] per layer
        self._prev_hidden: torch.Tensor | None = None  # prompt pass: previous layer [P, D]
        self._prompt_heads: dict[int, torch.Tensor] = {}
        self._layer_transformation: dict[int, torch.Tensor] = {}
        self._sparse: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        self._prompt_surprisal: torch.Tensor | None = None
        self._prompt_final: torch.Tensor | None = None  # prefill's final hidden states [P, D], until the logits
        self._widths: dict[int, int] = {}
        self._pending_final: dict[int, tuple[Stack, torch.Tensor]] = {}  # stack output awaiting the base model's
        self._tokens: dict[int, int] = {}  # positions each stack's first block receives, this forward
        self._last_block: dict[int, torch.Tensor] = {}  # each stack's last block output, this forward  # hidden width each stack's first block receives
        self._finished_step = -1  # the last step whose forward went through the instrumented blocks
        self.notes: dict[str, str] = {}  # what the trace meta should say about this run (e.g. a metric left NaN)
        self._to_host = HostCopies()  # the prompt pass's host copies in flight
        self._step_layers = structure.step.attention_layers  # blocks with softmax attention, ascending
        self._prob_layers: set[int] = set()  # step layers read from returned probabilities (no scores)

    # ------------------------------------------------------------------ steps
    def _in_prompt_pass(self, stack: Stack) -> bool:
        return self.prompt_telemetry and (stack.role == "encoder" or (stack.role == "causal" and self.step == 0))

    # ---------------------------------------------------------------------- hooks
    def install(self, routes: dict[int, str] | None = None) -> None:
        """Hook the model; attention modules on the "weights" route (legacy modules that compute
        attention themselves) are asked for their own probabilities, read and dropped."""
        model = self.model
        for module in self.structure.attention_modules:
            route = routes.get(id(module)) if routes is not None else None
            if route == "weights":
                self._handles.append(module.register_forward_pre_hook(_ask_for_weights, with_kwargs=True))
                self._handles.append(module.register_forward_hook(self._on_weights))
            elif route == "sdpa_call":
                self._handles.append(module.register_forward_pre_hook(_enter_legacy))
                self._handles.append(module.register_forward_hook(_leave_legacy))
        self._handles.append(model.register_forward_pre_hook(self._on_model_pre, with_kwargs=True))
        self._handles.append(model.register_forward_hook(self._on_model_out, with_kwargs=True))
        stacks = {id(self.structure.step): self.structure.step, id(self.structure.prompt): self.structure.prompt}
        for stack in stacks.values():
            self._handles.append(stack.layers[0].register_forward_pre_hook(self._make_first_pre(stack), with_kwargs=True))
            for i, layer in enumerate(stack.layers[:-1]):
                self._handles.append(layer.register_forward_hook(self._make_layer_hook(stack, i)))
            self._handles.append(stack.module.register_forward_hook(self._make_stack_hook(stack)))
            if stack.output is not stack.module:
                self._handles.append(stack.output.register_forward_hook(self._make_output_hook(stack)))

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        LEGACY_MODULE.set(None)

    def _on_model_pre(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        self.step += 1
        if self.step >= self.max_steps:
            raise RuntimeError(f"generate ran more forwards ({self.step + 1}) than max_new_tokens={self.max_steps}")
        if self.step > 0:  # the token chosen at the previous step is this input's last
            ids = kwargs.get("decoder_input_ids")
            if ids is None:
                ids = kwargs.get("input_ids", args[0] if args else None)
            if ids is not None:
                self.record_token(self.step - 1, ids[0, -1])
        if self.chunks.ready(self.step):  # a full chunk whose tokens are all known: reduce it
            self.chunks.reduce(self._tokens_known)

    def record_token(self, step: int, token: torch.Tensor) -> None:
        """The token chosen at ``step`` (for its surprisal)."""
        self.chunks.put_token(step, token)
        self._tokens_known = step + 1

    def _on_model_out(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        self._flush_pending()
        if self._finished_step != self.step:
            raise ValueError(
                f"{self._model_name()}: the blocks corevital instruments ({type(self.structure.step.module).__name__}) "
                "did not run in the model's forward (its text decoder is elsewhere, e.g. a speech or vision model "
                "that generates through another stack); refused before generating"
            )
        logits = output.logits[0, -1]
        if self._prompt_final is not None:
            self._prompt_surprisal_from_head(self._prompt_final, logits)
            self._prompt_final = None
        self.chunks.put_logits(self.step, logits)

    def _prompt_surprisal_from_head(self, h: torch.Tensor, logits_last: torch.Tensor) -> None:
        """Prompt surprisal through the model's own hidden-to-logits map, verified on the last
        position (:mod:`.logit_head`); NaN with a note when no candidate reproduces it."""
        found = find_head(self.model, self.structure.lm_head, h[-1], logits_last)
        if found is None:
            self.notes["prompt_surprisal"] = ("unavailable: no hidden-to-logits map corevital knows reproduces this "
                                              "model's logits (post-processing it does not model)")
            return
        self.notes["logit_head"] = found[0]
        head_device = execution_device(self.structure.lm_head)
        ids = self.prompt_ids.to(head_device)
        self._prompt_surprisal = metrics.prompt_surprisal_bits(h[:-1].to(head_device), found[1], ids[1:],
                                                               linear=plain_linear(found[0], self.structure.lm_head))

    def _make_first_pre(self, stack: Stack) -> Callable:
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            hidden = args[0] if args else kwargs["hidden_states"]
            if hidden.dim() != 3 or hidden.shape[0] != 1:
                raise ValueError(
                    f"{self._model_name()}: its {stack.role} blocks take hidden states of shape {tuple(hidden.shape)}, "
                    "not [batch 1, tokens, hidden] (a sequence-first layout or extra residual streams); corevital "
                    "cannot place its per-token metrics, so it is refused before generating (the model unchanged)"
                )
            self._widths[id(stack)] = hidden.shape[-1]
            self._tokens[id(stack)] = hidden.shape[1]
            if self._in_prompt_pass(stack):
                self._prev_hidden = hidden[0]

        return hook

    def _layer_output(self, stack: Stack, i: int, h: torch.Tensor) -> None:
        """h: [S, D] output of layer i (the last layer's output is the stack's final-normed one)."""
        width = self._widths.get(id(stack))
        tokens = self._tokens.get(id(stack))
        if h.dim() == 2 and tokens is not None and h.shape[0] != tokens:
            raise ValueError(
                f"{self._model_name()}: {stack.role} block {i} returns {h.shape[0]} positions for {tokens} input "
                "positions (extra prediction streams); corevital cannot place its per-token metrics, so it is refused "
                "before generating (nothing returned, the model unchanged)"
            )
        if h.dim() != 2 or (width is not None and h.shape[-1] != width):
            raise ValueError(
                f"{self._model_name()}: the output of {stack.role} block {i} is {tuple(h.shape)}, not [tokens, hidden] "
                f"with the stack's input width {width} (several residual streams or a "
                "width that changes between blocks); per-layer hidden-state metrics are not defined for it, so it is "
                "refused before generating (nothing returned, the model unchanged)"
            )
        if stack.role != "encoder":
            # decoding: keep the [D] view (no copy; stacked once at the step's end); a prompt
            # pass copies its last row so the [P, D] states are not kept alive
            self._step_vecs[i] = h[-1] if h.shape[0] == 1 else h[-1].clone()
        if self._in_prompt_pass(stack) and self._prev_hidden is not None:
            prev = self._prev_hidden if self._prev_hidden.device == h.device else self._prev_hidden.to(h.device)
            self._layer_transformation[i] = self._to_host(metrics.layer_transformation(prev, h))
            self._prev_hidden = h

    def _make_layer_hook(self, stack: Stack, i: int) -> Callable:
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            self._layer_output(stack, i, _tensor_output(output)[0])

        return hook

    def _make_stack_hook(self, stack: Stack) -> Callable:
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            h = _tensor_output(output)[0]
            if stack.output is stack.module:
                self._stack_done(stack, h)
            else:  # the base model around it applies a final norm: take its output if it runs
                self._pending_final[id(stack)] = (stack, h)

        return hook

    def _make_output_hook(self, stack: Stack) -> Callable:
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            if self._pending_final.pop(id(stack), None) is not None:
                self._stack_done(stack, _tensor_output(output)[0])

        return hook

    def _flush_pending(self) -> None:
        """The stack's own output, when the base model's hook did not run (its forward bypassed)."""
        for stack, h in list(self._pending_final.values()):
            self._pending_final.pop(id(stack))
            self._stack_done(stack, h)

    def _stack_done(self, stack: Stack, h: torch.Tensor) -> None:
        """The stack's final hidden states [S, D] of this forward: the last layer's vector, the
        prompt's final states (for surprisal), and the end of the step."""
        prompt_pass = self._in_prompt_pass(stack)
        self._layer_output(stack, stack.num_layers - 1, h)
        self._prev_hidden = None
        if prompt_pass and stack.role == "causal" and self.structure.lm_head is not None and h.shape[0] > 1:
            if h.shape[0] != self.prompt_ids.shape[0]:
                raise ValueError(
                    f"{self._model_name()}: its blocks see {h.shape[0]} positions for a prompt of "
                    f"{self.prompt_ids.shape[0]} tokens (virtual prompt tokens, byte patches or merged tokens), so "
                    "per-token metrics cannot be aligned with the prompt; refused before generating"
                )
            self._prompt_final = h.clone()  # surprisal at the model's output, once its own logits show the head
        if stack.role != "encoder":
            self._finish_step()

    def _finish_step(self) -> None:
        """End of a step's forward through the layers: hand its raw score rows and layer
        vectors to the chunk (copies only; the metrics are computed per chunk)."""
        if self._finished_step == self.step:
            raise ValueError(
                f"{self._model_name()}: its block stack ran twice in one forward (a looped or recurrent model); "
                "corevital's per-layer metrics assume one pass, so it is refused (nothing returned, the model unchanged)"
            )
        self._finished_step = self.step
        seen = sorted(set(self._step_rows) | set(self._step_queries))
        if seen != self._step_layers:
            missing = sorted(set(self._step_layers) - set(seen))
            raise ValueError(
                f"step {self.step}: the attention of layers {missing} did not go through the attention function "
                "corevital reads (transformers' AttentionInterface); the trace would be partial, so none is returned"
            )
        if self.step == 0 and self.structure.is_encoder_decoder and self.prompt_telemetry:
            self._check_prompt_layers()
        stats = self._fused_step_stats()
        rows = None if stats is not None else self._step_score_matrix()
        self.chunks.begin_step(self.step, tuple(rows[0].shape) if rows is not None else None)  # type: ignore[arg-type]
        if stats is not None:
            self.chunks.put_head_stats(self.step, stats)
        elif rows is not None:
            self.chunks.put_scores(self.step, *rows)
        n_layers = self.structure.step.num_layers
        if len(self._step_vecs) != n_layers:
            skipped = sorted(set(range(n_layers)) - set(self._step_vecs))
            raise ValueError(
                f"{self._model_name()}: blocks {skipped} of its stack did not run in step {self.step} (blocks skipped "
                "without their inputs, e.g. cross-attention layers of a vision model given text only); the trace "
                "would be misaligned, so it is refused (nothing returned, the model unchanged)"
            )
        vecs = [self._step_vecs[i] for i in range(n_layers)]
        self._step_vecs = {}
        self.chunks.put_hidden(self.step, vecs)

    # ----------------------------------------------------------------- attention
    def on_attention(self, module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attention_mask: torch.Tensor | None, spec: CallSpec, output: torch.Tensor) -> None:
        """One call of the model's (tapped) attention function."""
        observe_call(self, module, query, key, value, attention_mask, spec, output)

    def verify_call(self, entry: tuple[Stack, int], module: nn.Module, query: torch.Tensor, key: torch.Tensor,
                    value: torch.Tensor, attention_mask: torch.Tensor | None, spec: CallSpec,
                    output: torch.Tensor) -> None:
        """First forward (prefill / encoder pass / first decoder step) of every block: the call
        carries no argument the statistics do not understand, and corevital's probabilities times
        the values reproduce the model's own output on the first, middle and last query rows.
        Otherwise stop before any token is produced rather than return a wrong trace."""
        where = self._checked_call_site(entry, module, spec)
        if query.shape[0] != 1:
            raise ValueError(f"{where} runs a batch of {query.shape[0]}; corevital traces one sequence")
        err = recomputation_error(module, query, key, value, attention_mask, spec, output)
        if not err <= mismatch_tolerance(query.dtype):
            raise ValueError(
                f"{self._model_name()}: corevital's recomputation of the attention of {where} does not reproduce the "
                f"model's output (relative difference {err:.3g}), so its statistics would be wrong; refused before "
                "generating (nothing returned, the model unchanged). Please report the model type."
            )

    @contextmanager
    def running(self, routes: dict[int, str], device: torch.device, seed: int | None) -> Iterator[None]:
        """While the model generates: this collector is the active observer with its hooks
        installed, under inference mode, with the caller's random state saved and restored around
        it (seeded with ``seed`` when given); hooks and observer are removed on any exit."""
        token = ACTIVE_COLLECTOR.set(self)
        self.install(routes)
        try:
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.inference_mode():
                if seed is not None:
                    torch.manual_seed(int(seed))
                yield
        finally:
            self.remove()
            ACTIVE_COLLECTOR.reset(token)

    def _checked_call_site(self, entry: tuple[Stack, int], module: nn.Module, spec: CallSpec) -> str:
        """The call's description for messages; refuses a call carrying arguments the statistics
        do not model."""
        stack, layer = entry
        where = f"{stack.role} layer {layer} ({type(module).__name__}, attention implementation {spec.implementation!r})"
        unknown = adapters.unsupported_kwargs(spec.kwargs)
        if unknown:
            raise ValueError(f"{self._model_name()}: {where} passes {unknown} to its attention function, which "
                             "corevital's statistics do not model; refused before generating (nothing returned, the "
                             "model unchanged). Try attn_implementation='sdpa' or 'eager'.")
        return where

    def _once_per_forward(self, entry: tuple[Stack, int]) -> None:
        if entry[1] in self._step_rows or entry[1] in self._step_queries:
            raise ValueError(
                f"{self._model_name()}: the attention of {entry[0].role} block {entry[1]} ran twice in one forward "
                "(differential attention, two softmax maps per block, or a looped stack); corevital's per-layer metrics "
                "read one softmax per block and pass, so it is refused before generating (nothing returned, the model "
                "unchanged)"
            )

    def _prompt_layers_seen(self) -> set[int]:
        """The prompt-stack layers whose prompt-pass attention was read."""
        return set(self._prompt_heads)

    def _check_prompt_layers(self) -> None:
        missing = sorted(set(self.structure.prompt.attention_layers) - self._prompt_layers_seen())
        if missing:
            raise ValueError(
                f"{self._model_name()}: the prompt pass's attention of layers {missing} did not go through the "
                "attention function corevital reads; the prompt telemetry would be partial, so no trace is returned"
            )

    def _model_name(self) -> str:
        config = getattr(self.model, "config", None)
        return f"{getattr(config, 'model_type', '') or '?'} ({type(self.model).__name__})"

    def verifying(self, stack: Stack) -> bool:
        """Whether calls of this stack are checked now (its first forward)."""
        return self.step <= 0 or stack.role == "encoder"

    def _on_weights(self, module: nn.Module, args: tuple, output: Any) -> Any:
        """Forward hook of a "weights"-route module: read its probabilities [1, H, q, k], drop them
        from its output (the model never accumulates them)."""
        entry = self.entry_of(module)
        if entry is None or not isinstance(output, (tuple, list)) or len(output) < 2:
            return None
        probs = output[1]
        stack, layer = entry
        if not isinstance(probs, torch.Tensor) or probs.dim() != 4 or probs.shape[0] != 1:
            raise ValueError(f"{self._model_name()}: {stack.role} layer {layer} ({type(module).__name__}) returned no "
                             "[1, heads, queries, keys] attention probabilities; it cannot be traced exactly")
        p = probs[0].float()
        if self.verifying(stack):
            sums = p.sum(-1)
            if not bool(torch.all((sums - 1).abs() < 1e-2) | torch.isnan(sums).all()):
                raise ValueError(f"{self._model_name()}: the attention weights of {stack.role} layer {layer} do not "
                                 "sum to 1 over the keys (not plain softmax attention); refused")
        n_heads, q_len, n_keys = p.shape
        if q_len > 1:
            acc, step = self.prompt_pass(entry, n_heads, n_keys, p.device)
            if acc is not None:
                acc.add(p, 0)
                self.on_prompt_done(entry, acc)
            if step:
                self.on_step_scores(entry, torch.log(p[:, -1, :]))
        elif stack.role != "encoder":
            self.on_step_scores(entry, torch.log(p[:, -1, :]))
        if stack.role != "encoder":
            self._prob_layers.add(layer)
        return type(output)([output[0], None, *output[2:]]) if isinstance(output, list) else (output[0], None, *output[2:])

    def entry_of(self, module: nn.Module) -> tuple[Stack, int] | None:
        """(stack, layer) of an instrumented self-attention module; None for cross-attention."""
        entry = self.structure.attention_index.get(id(module))
        if entry is not None:
            self.attention_calls += 1
        elif id(module) not in self.structure.cross_attention:
            name = self.structure.module_names.get(id(module), type(module).__name__)
            raise ValueError(
                f"{self._model_name()}: the attention module {name} ({type(module).__name__}) ran but is not one "
                "corevital reads (a second attention per block, a second stack, or attention over something other "
                "than the tokens); the trace would be partial, so it is refused (nothing returned, the model unchanged)"
            )
        return entry

    def tile_rows(self, n_heads: int, n_keys: int) -> int:
        return tile_rows(n_heads, n_keys, self.tile_bytes, self.threshold)

    def prompt_pass(self, entry: tuple[Stack, int], n_heads: int, n_keys: int,
                    device: torch.device) -> tuple[PromptAccumulator | None, bool]:
        """For a multi-row attention call: an accumulator when prompt telemetry is recorded,
        and whether its last row is this step's row (a causal LM's prefill)."""
        stack, _ = entry
        step = stack.role != "encoder"
        acc = None
        if self._in_prompt_pass(stack):
            acc = PromptAccumulator(n_heads, n_keys, n_keys, self.threshold, self.cap, device)  # where the layer lives
        return acc, step

    def on_step_scores(self, entry: tuple[Stack, int], scores: torch.Tensor, scale: float = 1.0) -> None:
        """Keep one layer's masked pre-softmax scores [H, S] of the step's query row (not
        multiplied by ``scale`` yet); all layers are stacked, scaled and reduced together when the
        step's forward ends (one set of ops per step, none per layer)."""
        self._once_per_forward(entry)
        self._step_rows[entry[1]] = (scores, scale)

    def on_step_query(self, entry: tuple[Stack, int], query: torch.Tensor, key: torch.Tensor, scale: float,
                      valid: torch.Tensor | None = None) -> None:
        """Keep references to one layer's query row and keys of a decode step (no copy, no op):
        query [H, d] and keys [Hkv, S, d] of one sequence, or [B, H, d] and [B, Hkv, S, d] of a
        batch, with ``valid`` [B|1, S] bool the keys its mask lets through (None: all). Their
        score rows are computed for all layers at once at the step's end."""
        self._once_per_forward(entry)
        self._step_queries[entry[1]] = (query, key, scale, valid)

    def _fused_step_stats(self) -> torch.Tensor | None:
        """This step's head statistics [3, L, H] ([B, 3, L, H] for a batch) from the fused
        decode-step kernel (:mod:`.triton_step`), when every attention layer of the step kept its
        query and keys (none gave score rows) under one key mask and the kernel takes them; None
        otherwise (the score rows' path)."""
        kept = self._step_queries
        if self._step_rows or not kept:
            return None
        order = sorted(kept)
        valid = kept[order[0]][3]
        if len({_mask_id(kept[i][3]) for i in order}) > 1:
            return None
        queries, keys = [kept[i][0] for i in order], [kept[i][1] for i in order]
        if not triton_step.step_stats_supported(queries, keys, valid):
            return None
        scales = [kept[i][2] for i in order]
        stats = fused_or_none(lambda: triton_step.fused_step_stats(queries, keys, scales, valid), "decode-step")
        if stats is None:
            return None
        self._step_queries = {}
        return stats if queries[0].dim() == 3 else stats[0]

    def _score_rows_of_queries(self) -> None:
        """Score rows (unscaled, masked keys at -inf) of the step's kept queries, into
        ``_step_rows``: layers that share device, shapes, dtype and mask are stacked and scored
        in one batched matmul, as many at once as fit STEP_BATCH_BYTES of keys."""
        kept = self._step_queries
        self._step_queries = {}
        groups: dict[tuple, list[int]] = {}
        for i in sorted(kept):
            q, k, _, valid = kept[i]
            groups.setdefault((q.device, tuple(q.shape), q.dtype, tuple(k.shape), k.dtype, _mask_id(valid)), []).append(i)
        for layers in groups.values():
            k0, valid = kept[layers[0]][1], kept[layers[0]][3]
            per = max(1, STEP_BATCH_BYTES // max(1, k0.numel() * k0.element_size()))
            hidden = None if valid is None else ~valid[None, :, None, :]  # [1, B|1, 1, S]: keys masked out
            for g0 in range(0, len(layers), per):
                part = layers[g0 : g0 + per]
                # [Lg, B, H, d] and [Lg, B, Hkv, S, d] (one sequence: B = 1)
                q = torch.stack([kept[i][0] for i in part]) if len(part) > 1 else kept[part[0]][0][None]
                k = torch.stack([kept[i][1] for i in part]) if len(part) > 1 else kept[part[0]][1][None]
                if q.dim() == 3:
                    q, k = q[:, None], k[:, None]
                lg, b, h, d = q.shape
                rows = metrics.grouped_matmul(q.reshape(lg * b, h, 1, d), k.reshape(lg * b, *k.shape[2:]).transpose(-1, -2))
                rows = rows.reshape(lg, b, h, -1)
                if hidden is not None:
                    rows = rows.masked_fill(hidden, float("-inf"))
                for j, i in enumerate(part):
                    self._step_rows[i] = (rows[j] if kept[i][0].dim() == 3 else rows[j, 0], kept[i][2])

    def _step_score_matrix(self) -> tuple[torch.Tensor, list[float]] | None:
        """This step's score rows of all attention layers [L, H, S] (unscaled, layer order) and
        each layer's scale. Rows of layers on other devices cross once per device, stacked."""
        if self._step_queries:
            self._score_rows_of_queries()
        if not self._step_rows:
            return None
        order = sorted(self._step_rows)
        rows = self._step_rows
        self._step_rows = {}
        dev = rows[order[0]][0].device
        scales = [rows[i][1] for i in order]
        devices = {rows[i][0].device for i in order}
        if len(devices) == 1:
            return pad_rows([rows[i][0] for i in order]), scales
        parts, part_layers = [], []
        for device in devices:  # one stacked copy per device
            layers = [i for i in order if rows[i][0].device == device]
            parts.append(pad_rows([rows[i][0] for i in layers]).to(dev, non_blocking=True))
            part_layers += layers
        n_keys = max(p.shape[-1] for p in parts)
        stacked = torch.cat([F.pad(p.float(), (0, n_keys - p.shape[-1]), value=float("-inf")) for p in parts])
        position = {layer: j for j, layer in enumerate(part_layers)}
        return stacked[torch.tensor([position[i] for i in order], device=dev)], scales

    def on_prompt_done(self, entry: tuple[Stack, int], acc: PromptAccumulator) -> None:
        """Keep a layer's prompt head statistics; move its sparse profile to the host now."""
        stack, layer = entry
        self._prompt_heads[layer] = self._to_host(acc.head_stats())  # one copy per layer, prompt pass only
        sp = acc.sparse()  # the layer's one host sync: the compaction's size
        # the narrowest types that hold them (keys < P, counts <= 1/threshold): fewer bytes to copy
        counts, keys, weights = sp.counts.to(torch.int32), sp.keys.to(torch.int32), sp.weights.to(torch.float16)
        self.cap, recap = self._layer_cap(stack, self._sparse, self.cap, counts.numel(), keys.numel(), acc.cap)
        if recap:
            counts, keys, weights = metrics.cap_rows(counts, keys, weights, self.cap)
        self._sparse[layer] = (self._to_host(counts), self._to_host(keys), self._to_host(weights))
        if self.on_prompt_layer is not None:
            self.on_prompt_layer(len(self._prompt_heads), sum(a is not None for a in stack.attention))

    def _layer_cap(self, stack: Stack, done: dict, cap: int, n_rows: int, n_entries: int,
                   used_cap: int) -> tuple[int, bool]:
        """A sequence's keys-per-row cap after one more layer, and whether that layer's rows,
        computed with ``used_cap``, must still be capped to it. The cap is chosen at the
        sequence's first layer (``done``: its layers so far, none yet; ``n_rows`` = heads x query
        rows, ``n_entries`` found) unless given; a layer computed before that, or with another
        cap, is capped to it."""
        if not done and not cap:
            cap = self._cap_for(stack, n_rows, n_entries)
        return cap, bool(cap) and used_cap != cap

    def _cap_for(self, stack: Stack, n_rows: int, n_entries: int) -> int:
        """After a sequence's first layer (``n_rows`` = heads x query rows, ``n_entries`` found):
        0 when the uncapped profile of all layers fits ``max_sparse_bytes`` (4 bytes per entry),
        else the keys per query row that make it fit, with a warning."""
        n_layers = stack.num_layers
        estimate = n_entries * n_layers * 4
        if estimate <= self.max_sparse_bytes:
            return 0
        cap = max(1, int(self.max_sparse_bytes // (4 * n_rows * n_layers)))
        warnings.warn(
            f"the sparse prompt attention at threshold {self.threshold} would take about {estimate / 2**20:.0f} MiB "
            f"({n_entries * n_layers:,} entries), over max_sparse_bytes={self.max_sparse_bytes / 2**20:.0f} MiB; "
            f"keeping at most {cap} keys per query row (pass attention_cap or max_sparse_bytes to choose)",
            RuntimeWarning, stacklevel=2,
        )
        return cap

    # ---------------------------------------------------------------------- finish
    def finish(self, n_steps: int) -> CollectedArrays:
        """Trim to the ``n_steps`` generated tokens and copy everything to the host."""
        self.chunks.reduce(self._tokens_known)
        self._check_recorded()
        if self.prompt_telemetry and self._prompt_heads:
            self._check_prompt_layers()
        out = {name: buf[:n_steps].cpu().numpy() for name, buf in self.chunks.out.items()}
        self._sync_host_copies()
        psurp = None if self._prompt_surprisal is None else self._prompt_surprisal.cpu().numpy()
        return self._assemble(out, self._prompt_heads, self._layer_transformation, self._sparse, psurp)

    def _check_recorded(self) -> None:
        missing = [k for k in ("step_stats", "hidden", "head_stats") if k not in self.chunks.out]
        if missing:
            raise ValueError(
                "the model ran without the instrumented attention/hidden-state paths "
                f"(nothing recorded for {missing}); it does not route attention through transformers' "
                "AttentionInterface, so corevital cannot analyse it"
            )

    def _sync_host_copies(self) -> None:
        self._to_host.sync()  # the prompt pass's asynchronous host copies

    def _assemble(self, out: dict[str, np.ndarray], prompt_heads_by_layer: dict[int, torch.Tensor],
                  transformation: dict[int, torch.Tensor], sparse: dict[int, tuple[torch.Tensor, ...]],
                  prompt_surprisal: np.ndarray | None) -> CollectedArrays:
        """The CollectedArrays of one sequence from its host arrays: ``out`` (the step buffers,
        [T, ...]) and its prompt telemetry per layer (host tensors)."""
        n_step_layers = self.structure.step.num_layers
        raw = out["head_stats"].copy()  # [T, 3, L_attention, H]
        for layer in self._prob_layers:  # read from probabilities: no pre-softmax scores, no score variance
            raw[:, 2, self._step_layers.index(layer)] = np.nan
        flags = np.stack([np.isnan(raw[:, 0]).any(-1), np.isinf(raw[:, 1]).any(-1)], -1)  # [T, L_attention, 2]
        attention_flags = np.zeros((flags.shape[0], n_step_layers, 2), dtype=bool)
        attention_flags[:, self._step_layers] = flags
        head = _all_layers(raw, self._step_layers, n_step_layers, axis=2)
        head_entropy, head_concentration = head[:, 0], head[:, 1]
        prompt_heads = lt = psurp = counts = keys = vals = None
        if self.prompt_telemetry and prompt_heads_by_layer:
            stack = self.structure.prompt
            n, attn = stack.num_layers, stack.attention_layers
            n_heads = max(prompt_heads_by_layer[i].shape[-1] for i in attn)  # layers may differ in head count
            heads = np.stack([_pad_heads(prompt_heads_by_layer[i].numpy(), n_heads, np.nan) for i in attn])
            prompt_heads = _all_layers(heads, attn, n, axis=0)
            # numpy, not torch, on the host: torch's CPU ops are OpenMP-parallel and slow down a
            # hundredfold while other threads (trace savers) or processes keep the cores busy
            lt = np.stack([transformation[i].numpy() for i in range(n)])
            psurp = prompt_surprisal
            no_rows = np.zeros((n_heads, sparse[attn[0]][0].shape[-1]), dtype=np.int32)
            counts = np.stack([_pad_heads(sparse[i][0].numpy().T, n_heads, 0).T if i in sparse else no_rows
                               for i in range(n)])
            keys = np.concatenate([sparse[i][1].numpy() for i in attn])
            vals = np.concatenate([sparse[i][2].numpy() for i in attn])
        return CollectedArrays(
            step_stats=out["step_stats"],
            surprisal=out["surprisal"],
            top_k_ids=out["top_k_ids"],
            top_k_probs=out["top_k_probs"],
            logit_flags=out["logit_flags"],
            repetition=out["repetition"],
            hidden=out["hidden"],
            hidden_flags=out["hidden_flags"],
            head_entropy=head_entropy,
            head_concentration=head_concentration,
            score_variance=head[:, 2].max(-1),
            attention_flags=attention_flags,
            prompt_heads=prompt_heads,
            layer_transformation=lt,
            prompt_surprisal=psurp,
            sparse_counts=counts,
            sparse_keys=keys,
            sparse_weights=vals,
            attention_calls=self.attention_calls,
            lens_entropy=out.get("lens_entropy"),
            lens_top1=out.get("lens_top1"),
        )
