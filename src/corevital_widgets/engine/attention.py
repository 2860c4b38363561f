"""Reading attention beside the model's own attention function.

corevital never replaces the attention a model computes. For the duration of ``analyze`` the
function the model already uses — the AttentionInterface entry of its implementation name
("sdpa", "flash_attention_2", ...), or for "eager" the modeling file's own
``eager_attention_forward`` — is wrapped (:func:`tapped_attention`). The model keeps seeing
its implementation name, so model-side branches such as
``config._attn_implementation in ("eager", "sdpa")`` (indexer masks, sink handling) run as
they would without corevital, and every keyword argument reaches the original function
untouched. The wrapper calls the original, returns its result, and hands the call's query,
keys, mask and keyword arguments to the active observer (the :class:`.collector.Collector`
during ``analyze``), which recomputes the pre-softmax scores beside it:

- a decode step (one query row): the masked score row goes to the collector, which reduces
  all layers at once when the step's forward ends;
- a prompt pass (prefill or encoder): fused Triton kernels on CUDA, a cache-sized blocked pass
  on the CPU (:func:`.prompt_attention.cpu_prompt_layer`), else a blocked pass over query
  tiles; at most one tile of one layer's attention exists at any time.

How the scores are formed from the call's arguments (scaling, T5 position bias, soft-capping,
sliding windows, implicit causal masking, attention sinks) is :class:`CallSpec`; which
keyword arguments are understood is :mod:`.adapters`.
"""

from __future__ import annotations

import inspect
import threading
import warnings
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator, Protocol

import torch
from torch import nn

from . import metrics
from . import triton_prompt
from .prompt_attention import cpu_prompt_layer, cpu_prompt_supported
from .triton_prompt import fused_prompt_layer, fused_prompt_supported

if TYPE_CHECKING:  # pragma: no cover
    from .collector import Collector


class Observer(Protocol):
    """What the tapped attention function reports to (the collector)."""

    def on_attention(self, module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attention_mask: torch.Tensor | None, spec: "CallSpec", output: torch.Tensor) -> None: ...


ACTIVE_COLLECTOR: ContextVar["Observer | None"] = ContextVar("corevital_active_observer", default=None)

#: The legacy attention module whose forward is running now ("sdpa_call" route: modules that
#: call ``torch.nn.functional.scaled_dot_product_attention`` themselves, e.g. falcon).
LEGACY_MODULE: ContextVar["nn.Module | None"] = ContextVar("corevital_legacy_module", default=None)


# ------------------------------------------------------------------------ call semantics
@dataclass(frozen=True)
class CallSpec:
    """How one attention call forms its probabilities, from the arguments it was given.

    implementation: the implementation name the model uses ("eager", "sdpa", ...).
    scaling: factor on q·k (None: 1/sqrt(head size)). kwargs: every other keyword argument.
    """

    implementation: str
    scaling: float | None
    dropout: float
    kwargs: dict[str, Any] = field(default_factory=dict)

    def softmax_scale(self, query: torch.Tensor) -> float:
        """The factor scores are multiplied by: the call's ``scaling``, else 1/sqrt(head size)."""
        return query.shape[-1] ** -0.5 if self.scaling is None else float(self.scaling)

    @property
    def plain(self) -> bool:
        """Whether the scores are q·k times the scale alone (no position bias, no soft-capping)."""
        return self.kwargs.get("position_bias") is None and self.kwargs.get("softcap") is None

    @property
    def sinks(self) -> torch.Tensor | None:
        """Sink logits that join the softmax denominator: per head [H] (gpt-oss ``s_aux``) or per
        head and query row [B, H, q, 1] (Inkling 2 ``sinks``)."""
        sinks = self.kwargs.get("s_aux")
        return sinks if sinks is not None else self.kwargs.get("sinks")

    @property
    def sliding_window(self) -> int | None:
        w = self.kwargs.get("sliding_window")
        return int(w) if isinstance(w, int) and not isinstance(w, bool) and w > 0 else None

    def implicit_causal(self, module: nn.Module, attention_mask: torch.Tensor | None, q_len: int) -> bool:
        """Whether the function masks causally by itself: only without a mask, for several query
        rows, and not in eager attention (which applies the mask it is given and nothing else)."""
        if attention_mask is not None or q_len <= 1 or self.implementation == "eager":
            return False
        flag = self.kwargs.get("is_causal")
        return bool(flag if flag is not None else getattr(module, "is_causal", True))

    def key_limit(self, module: nn.Module, attention_mask: torch.Tensor | None, q_len: int, n_keys: int) -> int:
        """Keys the function looks at: SDPA's implicit-causal prefill over a longer (static)
        cache crops the keys to the first q_len (upper-left alignment); else all of them."""
        if self.implementation == "sdpa" and self.implicit_causal(module, attention_mask, q_len) and n_keys > q_len:
            return q_len
        return n_keys


def _causal_valid(q_len: int, n_keys: int, rows: slice | torch.Tensor, device: torch.device, total_keys: int | None = None,
                  window: int | None = None) -> torch.Tensor:
    """[1, 1, r, n_keys] causal (and sliding-window) mask of query rows ``rows`` (queries are
    the last q_len of ``total_keys`` positions; only the first n_keys keys are shown). A
    window w keeps keys with key > query - w (transformers' sliding-window convention)."""
    q_idx = torch.arange(q_len, device=device)[rows] + ((total_keys or n_keys) - q_len)
    k_idx = torch.arange(n_keys, device=device)
    valid = k_idx <= q_idx[:, None]
    if window is not None:
        valid = valid & (k_idx > q_idx[:, None] - window)
    return valid[None, None]


def attention_scores(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    attention_mask: torch.Tensor | None,
    spec: CallSpec,
    rows: slice | torch.Tensor = slice(None),
    total_keys: int | None = None,
    scaled: bool = True,
) -> torch.Tensor:
    """Pre-softmax scores of the query rows ``rows`` as the call computes them, with masked keys
    set to -inf. query [B, Hq, q, d], key [B, Hkv, k, d] (grouped-query heads share keys;
    ``key`` may be the first k of ``total_keys`` keys); returns [B, Hq, r, k] in the query
    dtype. With ``scaled=False`` (plain calls only) the softmax scale is left to the caller."""
    q_len, n_keys = query.shape[-2], key.shape[-2]
    full_keys = total_keys or n_keys
    scores = metrics.grouped_matmul(query[..., rows, :], key.transpose(-1, -2))
    scaling = spec.softmax_scale(query) if scaled or not spec.plain else 1.0
    if scaling != 1.0:
        scores = scores * scaling
    position_bias = spec.kwargs.get("position_bias")
    if position_bias is not None:  # T5 relative position bias
        bias = position_bias[..., :n_keys]
        scores = scores + (bias[..., rows, :] if bias.shape[-2] == q_len else bias)
    softcap = spec.kwargs.get("softcap")
    if softcap is not None:  # Gemma-2 style logit soft-capping
        scores = torch.tanh(scores / softcap) * softcap
    valid: torch.Tensor | None = None
    if attention_mask is not None:
        mask = attention_mask[..., :n_keys]
        if mask.shape[-2] == q_len:
            mask = mask[..., rows, :]
        if mask.dtype == torch.bool:
            valid = mask
        else:
            valid = mask > torch.finfo(mask.dtype).min / 2
            scores = scores + torch.where(valid, mask, torch.zeros((), dtype=mask.dtype, device=mask.device))
    elif spec.implicit_causal(module, attention_mask, q_len) or (
            spec.sliding_window is not None and full_keys > spec.sliding_window):  # e.g. flash attention's window
        valid = _causal_valid(q_len, n_keys, rows, scores.device, full_keys, spec.sliding_window)
    if valid is not None:
        scores = scores.masked_fill(~valid, float("-inf"))
    return scores


def step_row_scores(module: nn.Module, query: torch.Tensor, key: torch.Tensor, attention_mask: torch.Tensor | None,
                    spec: CallSpec) -> tuple[torch.Tensor, float]:
    """Masked scores [H, S] of the last query row, and the factor still to multiply them by.

    Where the scale commutes with the masking (no position bias, no soft-capping, no additive
    float mask) the row is returned unscaled, so the collector scales every layer's row in one
    op at the step's end; otherwise it is scaled here and the factor is 1."""
    q_len = query.shape[-2]
    last = slice(q_len - 1, q_len)
    if spec.plain and (attention_mask is None or attention_mask.dtype == torch.bool):
        rows = attention_scores(module, query, key, attention_mask, spec, last, scaled=False)
        return rows[0, :, -1, :], spec.softmax_scale(query)
    return attention_scores(module, query, key, attention_mask, spec, last)[0, :, -1, :], 1.0


def attention_probs(scores: torch.Tensor) -> torch.Tensor:
    """Softmax in float32 over keys (masked keys, at -inf, get 0). With attention sinks this is
    the row renormalised over the real keys (METRICS.md, model variants)."""
    return torch.softmax(scores, dim=-1, dtype=torch.float32)


def model_probs(scores: torch.Tensor, spec: CallSpec, rows: slice | torch.Tensor = slice(None)) -> torch.Tensor:
    """The probabilities the model multiplies the values by (float32) for query rows ``rows``:
    with sinks, the sink logit joins the denominator and its share is dropped; else
    :func:`attention_probs`."""
    sinks = spec.sinks
    if sinks is None:
        return attention_probs(scores)
    sinks = sinks.to(device=scores.device, dtype=torch.float32)
    if sinks.dim() == 4:  # per query row
        sink = (sinks[:, :, rows] if sinks.shape[2] > 1 else sinks).expand(*scores.shape[:-1], 1)
    else:
        sink = sinks.reshape(1, -1, 1, 1).expand(*scores.shape[:-1], 1)
    return torch.softmax(torch.cat([scores.float(), sink], -1), dim=-1)[..., :-1]


def recomputed_output(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                      attention_mask: torch.Tensor | None, spec: CallSpec, rows: slice | torch.Tensor) -> torch.Tensor:
    """The attention output [B, r, H, dv] of query rows ``rows`` (a slice or an index tensor) from corevital's own
    probabilities (float32): what the model's output must equal if the statistics are right."""
    n_keys = spec.key_limit(module, attention_mask, query.shape[-2], key.shape[-2])
    scores = attention_scores(module, query, key[..., :n_keys, :], attention_mask, spec, rows)
    probs = model_probs(scores, spec, rows)
    return metrics.grouped_matmul(probs, value[..., :n_keys, :].float()).transpose(1, 2)


def output_mismatch(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                    attention_mask: torch.Tensor | None, spec: CallSpec, output: torch.Tensor,
                    rows: slice | torch.Tensor = slice(None)) -> float:
    """Largest difference between the model's attention output and corevital's recomputation
    over query rows ``rows``, relative to the output's largest magnitude (NaN outputs count as
    agreeing where both are NaN). inf when the shapes cannot be matched."""
    mine = recomputed_output(module, query, key, value, attention_mask, spec, rows)
    theirs = output
    if theirs.dim() == 3:  # some functions return [B, q, H*dv]
        theirs = theirs.reshape(*theirs.shape[:2], mine.shape[2], -1)
    if theirs.shape[1] == query.shape[-2] and theirs.shape[1] != mine.shape[1]:
        theirs = theirs[:, rows]
    if theirs.shape != mine.shape:
        return float("inf")
    theirs = theirs.float()
    both_nan = torch.isnan(theirs) & torch.isnan(mine)
    diff = torch.where(both_nan, torch.zeros_like(mine), (theirs - mine).abs())
    scale = torch.nan_to_num(theirs, nan=0.0, posinf=0.0, neginf=0.0).abs().max().clamp_min(1e-6)
    return float(torch.nan_to_num(diff, nan=float("inf")).max() / scale)


def mismatch_tolerance(dtype: torch.dtype) -> float:
    """Largest relative output difference accepted as the same computation in ``dtype``."""
    return {torch.float32: 2e-3, torch.float64: 1e-6}.get(dtype, 3e-2)


# ------------------------------------------------------------------ statistics of a call
def observe_call(collector: "Collector", module: nn.Module, query: torch.Tensor, key: torch.Tensor,
                 value: torch.Tensor, attention_mask: torch.Tensor | None, spec: CallSpec,
                 output: torch.Tensor) -> None:
    """Hand one attention call's statistics to the collector (see the module docstring)."""
    entry = collector.entry_of(module)
    if entry is None:
        return
    if collector.verifying(entry[0]):
        collector.verify_call(entry, module, query, key, value, attention_mask, spec, output)
    q_len = query.shape[-2]
    if q_len > 1:  # a prompt pass: fused kernels on CUDA, cache-sized tiles on the CPU, else query tiles
        n_keys = spec.key_limit(module, attention_mask, q_len, key.shape[-2])
        key = key[..., :n_keys, :]
        acc, step = collector.prompt_pass(entry, query.shape[1], n_keys, query.device)
        step_done = False
        if acc is not None:
            causal = spec.implicit_causal(module, attention_mask, q_len)
            fused = None
            if fused_prompt_supported(query, key, attention_mask, spec.kwargs, acc.threshold, module.training):
                fused = _try_fused(query, key, spec.scaling, causal, acc.threshold, acc.cap, collector.tile_bytes)
            if fused is not None:
                acc.add_fused(*fused)
            elif cpu_prompt_supported(query, key, attention_mask, spec.kwargs, module.training):
                cpu_prompt_layer(acc, query, key, spec.softmax_scale(query), causal,
                                 collector.tile_rows(query.shape[1], n_keys))
            else:
                tile = collector.tile_rows(query.shape[1], n_keys)
                for r0 in range(0, q_len, tile):
                    rows = slice(r0, min(q_len, r0 + tile))
                    # a causal tile never sees keys past its last row: skip them (exact, halves the work)
                    upto = min(n_keys, rows.stop + n_keys - q_len) if causal else n_keys
                    scores = attention_scores(module, query, key[..., :upto, :], attention_mask, spec, rows,
                                              total_keys=n_keys)
                    acc.add(attention_probs(scores)[0], r0)
                    if step and rows.stop == q_len:  # a copy: the tile itself must not outlive this loop
                        collector.on_step_scores(entry, scores[0, :, -1, :].clone())
                        step_done = True
                    del scores
            collector.on_prompt_done(entry, acc)
        if step and not step_done:
            collector.on_step_scores(entry, *step_row_scores(module, query, key, attention_mask, spec))
    elif entry[0].role != "encoder":
        if attention_mask is None and spec.plain and spec.sliding_window is None:
            # a decode step: keep references only; every layer's row is computed at the step's end
            collector.on_step_query(entry, query[0, :, -1, :], key[0], spec.softmax_scale(query))
        else:
            collector.on_step_scores(entry, *step_row_scores(module, query, key, attention_mask, spec))


def _try_fused(query: torch.Tensor, key: torch.Tensor, scaling: float | None, causal: bool, threshold: float,
               cap: int, buffer_bytes: int) -> tuple[torch.Tensor, ...] | None:
    """The fused kernels' result for one sequence, or None after a Triton failure (see :func:`fused_or_none`)."""
    return fused_or_none(lambda: fused_prompt_layer(query, key, scaling, causal, threshold, cap, buffer_bytes))


def fused_or_none(run: Callable[[], Any], what: str = "prompt") -> Any:
    """``run()`` (a call of the fused kernels), or None after a Triton failure (e.g. a GPU whose
    compiler lacks an instruction): the kernels are then switched off for the process, with one
    warning, and the caller takes its torch path (the prompt pass's tiles, the decode step's score
    rows); ``what`` names the kernels in the warning. Out-of-memory errors propagate."""
    try:
        return run()
    except torch.cuda.OutOfMemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - any compile/launch failure of the optional fast path
        triton_prompt.disable(f"{type(exc).__name__}: {exc}")
        warnings.warn(f"corevital: the fused Triton {what} kernels failed ({type(exc).__name__}: {exc}); using the "
                      "torch path from now on (same numbers, slower)", RuntimeWarning, stacklevel=3)
        return None


# ----------------------------------------------------------------------------- the tap
def _bind(signature: inspect.Signature | None, args: tuple, kwargs: dict) -> tuple[float | None, float, dict]:
    """(scaling, dropout, other keyword arguments) of a call to an attention function whose
    positional parameters after ``attention_mask`` are given by ``signature``."""
    kw = dict(kwargs)
    if args and signature is not None:
        names = [p.name for p in signature.parameters.values()
                 if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)][5:]
        kw.update(zip(names, args))
    scaling = kw.pop("scaling", None)
    dropout = kw.pop("dropout", 0.0)
    return (None if scaling is None else float(scaling)), float(dropout or 0.0), kw


def _tap(original: Callable, implementation: str) -> Callable:
    """``original`` wrapped: it computes the layer; the active observer, if any, reads the call."""
    try:
        signature: inspect.Signature | None = inspect.signature(original)
    except (TypeError, ValueError):  # pragma: no cover - builtins
        signature = None

    def corevital_tapped_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                                   attention_mask: torch.Tensor | None, *args: Any, **kwargs: Any) -> Any:
        result = original(module, query, key, value, attention_mask, *args, **kwargs)
        observer = ACTIVE_COLLECTOR.get()
        if observer is not None:
            scaling, dropout, kw = _bind(signature, args, kwargs)
            out = result[0] if isinstance(result, tuple) else result
            observer.on_attention(module, query, key, value, attention_mask, CallSpec(implementation, scaling, dropout, kw), out)
        return result

    corevital_tapped_attention.__wrapped__ = original  # type: ignore[attr-defined]
    corevital_tapped_attention.corevital_tap = True  # type: ignore[attr-defined]
    return corevital_tapped_attention


_SDPA_PARAMS = ("attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")


def _tap_sdpa(original: Callable) -> Callable:
    """``torch.nn.functional.scaled_dot_product_attention`` wrapped: it computes; when a legacy
    "sdpa_call" module is running (:data:`LEGACY_MODULE`), the active observer reads the call."""

    def corevital_tapped_sdpa(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, *args: Any,
                              **kwargs: Any) -> torch.Tensor:
        out = original(query, key, value, *args, **kwargs)
        module = LEGACY_MODULE.get()
        observer = ACTIVE_COLLECTOR.get() if module is not None else None
        if observer is not None:
            bound = {**dict(zip(_SDPA_PARAMS, args)), **kwargs}
            mask = bound.get("attn_mask")
            spec = CallSpec("sdpa", bound.get("scale"), float(bound.get("dropout_p") or 0.0),
                            {"is_causal": bool(bound.get("is_causal", False))})
            observer.on_attention(module, query, key, value, mask, spec, out.transpose(1, 2))  # [B, q, H, d]
        return out

    corevital_tapped_sdpa.__wrapped__ = original  # type: ignore[attr-defined]
    return corevital_tapped_sdpa


def _patch_sdpa_function() -> Callable[[], None]:
    import torch.nn.functional as F

    before = F.scaled_dot_product_attention
    F.scaled_dot_product_attention = _tap_sdpa(before)

    def restore() -> None:
        F.scaled_dot_product_attention = before

    return restore


def implementation_of(module: nn.Module, default: str | None) -> str:
    """The attention implementation name an attention module dispatches on."""
    config = getattr(module, "config", None)
    impl = getattr(config, "_attn_implementation", None) if config is not None else None
    return str(impl or default or "eager")


_lock = threading.RLock()
_installed: dict[tuple, list[Any]] = {}  # patch key -> [count, undo]


def _patch_interface(name: str) -> Callable[[], None]:
    """Wrap the AttentionInterface entry ``name`` class-wide (and in the shared instance's local
    mapping if it overrides it); returns the undo."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, AttentionInterface

    undo: list[Callable[[], None]] = []
    global_map = AttentionInterface._global_mapping
    if name in global_map:
        before = global_map[name]
        global_map[name] = _tap(before, name)
        undo.append(lambda: global_map.__setitem__(name, before))
    local_map = ALL_ATTENTION_FUNCTIONS._local_mapping
    if name in local_map:
        local_before = local_map[name]
        local_map[name] = _tap(local_before, name)
        undo.append(lambda: local_map.__setitem__(name, local_before))

    def restore() -> None:
        for u in reversed(undo):
            u()

    return restore


def _patch_eager(namespace: dict) -> Callable[[], None]:
    """Wrap a modeling file's ``eager_attention_forward`` (what eager attention calls)."""
    before = namespace["eager_attention_forward"]
    namespace["eager_attention_forward"] = _tap(before, "eager")
    return lambda: namespace.__setitem__("eager_attention_forward", before)


def patch_targets(modules: list[nn.Module], default: str | None) -> list[tuple]:
    """What to wrap so that every module's attention goes through the tap: one AttentionInterface
    name per non-eager implementation, one modeling namespace per eager attention class."""
    targets: dict[tuple, tuple] = {}
    for module in modules:
        impl = implementation_of(module, default)
        if impl == "eager":
            namespace = inspect.unwrap(type(module).forward).__globals__  # the modeling file's, under decorators
            if "eager_attention_forward" in namespace:
                targets[("eager", id(namespace))] = ("eager", namespace)
        else:
            targets[("interface", impl)] = ("interface", impl.removeprefix("paged|"))
    return list(targets.items())


@contextmanager
def tapped_attention(modules: list[nn.Module], default: str | None = None, sdpa_function: bool = False) -> Iterator[None]:
    """Wrap the attention function(s) these attention modules use (and, with ``sdpa_function``,
    ``torch.nn.functional.scaled_dot_product_attention`` for legacy "sdpa_call" modules), for
    the body's duration. Reference-counted: nested or concurrent uses (threads; each has its own
    observer) share one wrapping, removed when the last one exits, also on error or
    KeyboardInterrupt."""
    keys = []
    targets = patch_targets(modules, default)
    if sdpa_function:
        targets.append((("sdpa_function",), ("sdpa_function", None)))
    with _lock:
        for key, (kind, what) in targets:
            slot = _installed.get(key)
            if slot is None:
                undo = (_patch_eager(what) if kind == "eager" else _patch_sdpa_function() if kind == "sdpa_function"
                        else _patch_interface(what))
                _installed[key] = slot = [0, undo]
            slot[0] += 1
            keys.append(key)
    try:
        yield
    finally:
        with _lock:
            for key in reversed(keys):
                slot = _installed[key]
                slot[0] -= 1
                if slot[0] == 0:
                    slot[1]()
                    del _installed[key]
