"""``analyze``: run ``model.generate`` once with instrumentation and return a Trace."""

from __future__ import annotations

import platform
import time
import weakref
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import threading

from ..trace.groups import Attention, Heads, Layers, Prompt, Timeline
from ..trace.health import DEFAULT_THRESHOLDS, Thresholds
from ..trace.sparse import SparseAttention, round_float16_mantissa
from ..trace.trace import SCHEMA_VERSION, Trace
from . import adapters
from .attention import tapped_attention
from .collector import DEFAULT_MAX_SPARSE_BYTES, CollectedArrays, Collector
from .prompt_attention import DEFAULT_TILE_BYTES
from .loading import resolve_model, resolve_tokenizer
from ..trace.fingerprint import model_fingerprint
from .model_state import preserved_model_state
from .structure import ModelStructure, execution_device, inspect_model

_FORBIDDEN_GENERATE = {
    "num_beams": "beam search keeps several hypotheses per step; corevital traces one sequence (num_beams=1)",
    "num_return_sequences": "batch size is 1: one sequence per call",
    "output_attentions": "corevital computes attention statistics itself; do not request raw attentions",
    "return_dict_in_generate": "corevital returns a Trace, not generate's output dict",
    "input_ids": "pass the prompt as a string",
    "inputs": "pass the prompt as a string",
    "attention_mask": "the prompt is a single unpadded sequence; corevital builds the mask",
}


def _check_inputs(prompt: Any, max_new_tokens: Any, attention_threshold: Any, top_k: Any, generate_kwargs: dict) -> None:
    if isinstance(prompt, (list, tuple)):
        raise TypeError(
            f"batch size is 1: pass one prompt string, not a {type(prompt).__name__} of {len(prompt)}; "
            "analyse several prompts with a loop"
        )
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
    if not prompt.strip():
        raise ValueError("prompt is empty; pass some text to analyse")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)):
        raise TypeError(f"max_new_tokens must be an int, got {type(max_new_tokens).__name__}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if not isinstance(attention_threshold, (int, float)) or not 0.0 <= float(attention_threshold) < 1.0:
        raise ValueError(f"attention_threshold must be a number in [0, 1), got {attention_threshold!r}")
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
        raise ValueError(f"top_k must be a positive int, got {top_k!r}")
    for key, why in _FORBIDDEN_GENERATE.items():
        if key in generate_kwargs:
            value = generate_kwargs[key]
            if key in ("num_beams", "num_return_sequences") and value in (None, 1):
                continue
            raise ValueError(f"{key}={value!r} is not supported: {why}")


def _context_length(model: Any) -> int | None:
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


#: Each token id's text, per tokenizer: decoding one id is a pure function of it, and a dataset
#: run decodes every prompt's tokens and every step's top-k, mostly ids it has decoded before
#: (the tokenizer's Python wrapper costs ~3 us per id). Keyed weakly by the tokenizer, with its
#: vocabulary size (added tokens start a new cache); at most _PIECES_MAX ids each.
_PIECES: "weakref.WeakKeyDictionary[Any, tuple[int, dict[int, str]]]" = weakref.WeakKeyDictionary()
_PIECES_MAX = 1 << 20


def _piece_cache(tokenizer: Any) -> dict[int, str]:
    try:
        size = len(tokenizer)
        found = _PIECES.get(tokenizer)
        if found is None or found[0] != size or len(found[1]) > _PIECES_MAX:
            found = _PIECES[tokenizer] = (size, {})
        return found[1]
    except TypeError:  # a tokenizer that cannot be weakly referenced or hashed: no cache
        return {}


def _decode_pieces(tokenizer: Any, ids: np.ndarray) -> list[str]:
    """Each id's text, decoded alone (special tokens kept), in order."""
    flat = ids.reshape(-1).tolist()
    cache = _piece_cache(tokenizer)
    missing = sorted(set(flat).difference(cache))
    if missing:
        cache.update(zip(missing, tokenizer.batch_decode([[i] for i in missing], skip_special_tokens=False)))
    return [cache[i] for i in flat]


def _library_versions() -> dict[str, str]:
    import torch
    import transformers

    from .. import __version__

    return {"corevital_widgets": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "numpy": np.__version__, "python": platform.python_version()}


def analyze(
    model: Any,
    prompt: str,
    tokenizer: Any | None = None,
    *,
    max_new_tokens: int = 64,
    do_sample: bool = False,
    seed: int | None = None,
    prompt_telemetry: bool = True,
    attention_threshold: float = 0.01,
    top_k: int = 10,
    attention_cap: int = 0,
    max_sparse_bytes: int = DEFAULT_MAX_SPARSE_BYTES,
    attention_tile_bytes: int = DEFAULT_TILE_BYTES,
    logit_lens: bool = False,
    attention_weight_bits: int = 10,
    thresholds: Thresholds | None = None,
    on_step: Callable[[int, int], None] | None = None,
    progress: bool = False,
    on_prompt_layer: Callable[[int, int], None] | None = None,
    stop: "threading.Event | Callable[[], bool] | None" = None,
    **generate_kwargs: Any,
) -> Trace:
    """Generate from ``prompt`` with ``model`` and record the full metric set.

    Args:
        model: a transformers causal LM or encoder-decoder (or a local path to one).
        prompt: the prompt text (batch size 1). Apply a chat template yourself if you want one.
        tokenizer: the model's tokenizer; found from ``model.name_or_path`` when None.
        max_new_tokens: tokens to generate (T <= max_new_tokens; generation may stop at EOS).
        do_sample, seed: sampling (seeded reproducibly, global RNG state left untouched) or greedy.
        prompt_telemetry: record prompt telemetry from the prefill / encoder pass.
        attention_threshold: sparse prompt attention keeps weights above this probability.
        top_k: alternatives kept per step; also the k of ``voter_agreement`` (top-k mass).
        attention_cap: keep at most this many keys per prompt query row (0 = no cap).
        max_sparse_bytes: when no cap is given and the uncapped sparse profile would exceed this
            many bytes (estimated from the first layer), a cap is chosen so it fits, with a warning.
        attention_tile_bytes: memory budget for one tile of prompt attention (the prompt pass
            runs over query tiles so that no full [H, P, P] matrix is ever held).
        logit_lens: also decode every layer's hidden state through the final norm and the
            unembedding at every step: ``trace.layers.lens_entropy`` (bits) and ``lens_top1``
            [T, L]. Costs one [L, V] logit matrix per step (computed and dropped on the device).
        attention_weight_bits: mantissa bits kept of each float16 sparse weight (10 = exact
            float16, the default). 7 keeps a relative error <= 2**-8 (0.4%) and makes the trace
            file about a quarter smaller (the low mantissa bits are incompressible noise).
        thresholds: health-flag thresholds (defaults: shared/METRICS.md).
        on_step: called as ``on_step(step, token_id)`` after every generated token.
        on_prompt_layer: called as ``on_prompt_layer(done, total)`` after each block's prompt
            telemetry during the prompt pass (blocks with attention; a long prompt's pass is the
            slow phase, so this is its progress).
        progress: show a tqdm progress bar.
        stop: a ``threading.Event`` (or a callable returning bool): once set, generation ends
            after the current step and the trace holds the steps made so far, with
            ``trace.meta["stopped"]`` saying so (what a Stop button uses; a kernel interrupt
            instead raises KeyboardInterrupt, the model restored).
        **generate_kwargs: passed to ``model.generate`` (e.g. temperature, top_p, repetition_penalty).

    Metrics are computed on the raw logits the model produced, before any sampling warpers.
    The model is left exactly as it was (attention implementation, hooks, train/eval state,
    generation config), also when this raises.
    """
    import torch

    _check_inputs(prompt, max_new_tokens, attention_threshold, top_k, generate_kwargs)
    if isinstance(attention_weight_bits, bool) or not isinstance(attention_weight_bits, int) or not 1 <= attention_weight_bits <= 10:
        raise ValueError(f"attention_weight_bits must be an int in 1..10 (float16 mantissa bits), got {attention_weight_bits!r}")
    t_start = time.perf_counter()
    model = resolve_model(model)
    tokenizer = resolve_tokenizer(model, tokenizer)
    thresholds = thresholds or DEFAULT_THRESHOLDS
    max_new_tokens = int(max_new_tokens)

    encoded = tokenizer(prompt, return_tensors="pt")
    input_ids = encoded["input_ids"]
    if input_ids.shape[0] != 1:
        raise ValueError(f"the tokenizer produced a batch of {input_ids.shape[0]}; batch size must be 1")
    n_prompt = int(input_ids.shape[1])
    if n_prompt == 0:
        raise ValueError("the prompt tokenised to zero tokens; pass some text")
    context = _context_length(model)
    if context is not None and not model.config.is_encoder_decoder and n_prompt + max_new_tokens > context:
        raise ValueError(
            f"the prompt is {n_prompt} tokens and max_new_tokens={max_new_tokens}, but the model's context is "
            f"{context} tokens; shorten the prompt or lower max_new_tokens"
        )
    vocab = model.get_output_embeddings().weight.shape[0] if model.get_output_embeddings() is not None else None
    if vocab is not None and top_k > vocab:
        raise ValueError(f"top_k={top_k} exceeds the vocabulary size {vocab}")
    structure = inspect_model(model)
    routes = adapters.plan_attention(model, structure)  # refuses what cannot be read, before anything runs

    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    device = execution_device(embeddings if embeddings is not None else model)
    input_ids = input_ids.to(device)
    gen_kwargs = dict(generate_kwargs)
    pad = getattr(tokenizer, "pad_token_id", None)
    if pad is None:
        pad = getattr(tokenizer, "eos_token_id", None)
    gen_kwargs.setdefault("pad_token_id", pad)
    # one sequence, whatever the model's generation config says (FSMT's default is 5 beams)
    gen_kwargs["num_beams"] = 1
    gen_kwargs["num_return_sequences"] = 1
    user_stop = _StopRequest(stop) if stop is not None else None
    if user_stop is not None:
        from transformers import StoppingCriteriaList

        gen_kwargs["stopping_criteria"] = StoppingCriteriaList([*(gen_kwargs.get("stopping_criteria") or []), user_stop])
    streamer = _StepStreamer(on_step, max_new_tokens, progress, is_encoder_decoder=structure.is_encoder_decoder,
                             user_streamer=gen_kwargs.pop("streamer", None))

    t_gen = time.perf_counter()
    tapped = [m for m in structure.attention_modules if routes[id(m)] == "interface"]
    sdpa_call = any(route == "sdpa_call" for route in routes.values())
    with preserved_model_state(model), tapped_attention(tapped, _implementation(model), sdpa_function=sdpa_call):
        try:
            collector = Collector(
                model, structure, input_ids[0], max_steps=max_new_tokens, top_k=int(top_k),
                prompt_telemetry=prompt_telemetry, attention_threshold=attention_threshold, attention_cap=attention_cap,
                tile_bytes=attention_tile_bytes, max_sparse_bytes=max_sparse_bytes, logit_lens=logit_lens,
                lens_scale=_lens_scale(model), on_prompt_layer=on_prompt_layer,
            )
            with collector.running(routes, device, seed):
                output = model.generate(
                    input_ids=input_ids,
                    attention_mask=torch.ones_like(input_ids),
                    max_new_tokens=max_new_tokens,
                    do_sample=do_sample,
                    streamer=streamer if streamer.active else None,  # put() syncs: attach only when listened to
                    **gen_kwargs,
                )
                generated = output[0] if structure.is_encoder_decoder else output[0, n_prompt:]
                if structure.is_encoder_decoder:
                    generated = generated[1:]  # drop the decoder start token
                n_steps = int(generated.shape[0])
                if n_steps:
                    collector.record_token(n_steps - 1, generated[-1])
                arrays = collector.finish(n_steps)
        finally:
            streamer.close()
    t_done = time.perf_counter()

    prompt_np = input_ids[0].cpu().numpy()
    gen_np = generated.cpu().numpy()
    trace = _build_trace(
        model, structure, tokenizer, prompt_np, gen_np, arrays, thresholds,
        params={"max_new_tokens": max_new_tokens, "do_sample": bool(do_sample), "seed": seed,
                "prompt_telemetry": bool(prompt_telemetry), "attention_threshold": float(attention_threshold),
                "attention_cap": int(collector.cap), "top_k": int(top_k), "logit_lens": bool(logit_lens),
                "attention_weight_bits": int(attention_weight_bits),
                **{k: v for k, v in generate_kwargs.items() if isinstance(v, (int, float, str, bool)) and k != "streamer"}},
        device=str(device),
    )
    if collector.notes:
        trace.meta["notes"] = dict(collector.notes)
    if user_stop is not None and user_stop.fired_at is not None:
        # ended early on request: the trace holds every step made, and says it stopped
        trace.meta["stopped"] = {"by": "request", "steps": trace.n_steps, "max_new_tokens": max_new_tokens}
    trace.meta["timings"] = {"setup_s": t_gen - t_start, "generate_s": t_done - t_gen,
                             "build_s": time.perf_counter() - t_done}
    return trace


class _StopRequest:
    """A generation stopping criterion that ends generation after the current step once ``stop``
    is set (a ``threading.Event``) or returns True (a callable): a Stop button's request, not a
    kernel interrupt. ``fired_at``: the generated length when it fired (None: it never did)."""

    def __init__(self, stop: Any) -> None:
        if hasattr(stop, "is_set"):
            self._check = stop.is_set
        elif callable(stop):
            self._check = stop
        else:
            raise TypeError(f"stop must be a threading.Event or a callable returning bool, got {type(stop).__name__}")
        self.fired_at: int | None = None

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        done = bool(self._check())
        if done and self.fired_at is None:
            self.fired_at = int(input_ids.shape[-1])
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)


def _implementation(model: Any) -> str | None:
    config = getattr(model, "config", None)
    return getattr(config, "_attn_implementation", None) if config is not None else None


def _lens_scale(model: Any) -> float:
    """T5 scales the decoder output by d_model**-0.5 before a tied unembedding."""
    config = model.config
    if getattr(config, "model_type", "") == "t5" and getattr(config, "tie_word_embeddings", False):
        return float(config.d_model) ** -0.5
    return 1.0


class _StepStreamer:
    """A generate streamer: reports each new token to ``on_step`` and a tqdm bar."""

    def __init__(self, on_step: Callable[[int, int], None] | None, total: int, progress: bool, *,
                 is_encoder_decoder: bool, user_streamer: Any = None) -> None:
        self.on_step = on_step
        self.user = user_streamer
        self.skip = 1  # the first put() is the prompt (or the decoder start token)
        self.step = 0
        self.bar = None
        if progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc="corevital", unit="tok", leave=False)

    @property
    def active(self) -> bool:
        """Whether anyone listens (a callback, a progress bar or the user's own streamer)."""
        return self.on_step is not None or self.bar is not None or self.user is not None

    def put(self, value: Any) -> None:
        if self.user is not None:
            self.user.put(value)
        if self.skip:
            self.skip -= 1
            return
        for token in value.reshape(-1).tolist():
            if self.on_step is not None:
                self.on_step(self.step, int(token))
            self.step += 1
            if self.bar is not None:
                self.bar.update(1)

    def end(self) -> None:
        if self.user is not None:
            self.user.end()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def trace_model_meta(model: Any, structure: ModelStructure) -> dict[str, Any]:
    """The model's part of a trace's meta (name, architecture, sizes, dtype, devices, library
    versions, weight fingerprint, attention implementation). Read it while the model is not
    instrumented: during a run corevital's attention tap is its implementation."""
    config = model.config
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    return {
        "schema_version": SCHEMA_VERSION,
        "model_name": str(getattr(config, "name_or_path", "") or type(model).__name__),
        "model_class": type(model).__name__,
        "architecture": str(getattr(config, "model_type", "")),
        "is_encoder_decoder": structure.is_encoder_decoder,
        "num_layers": structure.step.num_layers,
        "num_prompt_layers": structure.prompt.num_layers,
        "hidden_size": int(getattr(text_config, "hidden_size", 0) or getattr(text_config, "d_model", 0) or 0),
        "vocab_size": int(getattr(text_config, "vocab_size", 0) or 0),
        "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
        "devices": sorted({str(execution_device(m)) for m in structure.step.layers}),
        "versions": _library_versions(),
        "model_fingerprint": model_fingerprint(model),
        "attention_implementation": _implementation(model) or "eager",
        "attention_layers": structure.step.attention_layers,
        "prompt_attention_layers": structure.prompt.attention_layers,
    }


def _build_trace(
    model: Any, structure: ModelStructure, tokenizer: Any, prompt_ids: np.ndarray, gen_ids: np.ndarray,
    a: CollectedArrays, thresholds: Thresholds, params: dict, device: str, model_meta: dict[str, Any] | None = None,
) -> Trace:
    """A Trace from one run's host arrays. ``model_meta``: :func:`trace_model_meta`, read once
    for a batch (else read here)."""
    n_steps = gen_ids.size
    n_heads = a.head_entropy.shape[-1]
    stats = a.step_stats
    timeline = Timeline(
        entropy=stats[:, 0], top_k_margin=stats[:, 1], voter_agreement=stats[:, 2], max_prob=stats[:, 3],
        perplexity=stats[:, 4], surprisal=a.surprisal, top_k_ids=a.top_k_ids, top_k_probs=a.top_k_probs,
        logits_has_nan=a.logit_flags[:, 0], logits_has_inf=a.logit_flags[:, 1], repetition_similarity=a.repetition,
    )
    lens = {} if a.lens_entropy is None else {"lens_entropy": a.lens_entropy, "lens_top1": a.lens_top1}
    layers = Layers(l2_norm=a.hidden[:, 0], std=a.hidden[:, 1], mean=a.hidden[:, 2],
                    has_nan=a.hidden_flags[:, 0], has_inf=a.hidden_flags[:, 1], **lens)
    he, hc = a.head_entropy, a.head_concentration
    with np.errstate(invalid="ignore"):
        attention = Attention(
            entropy_mean=he.mean(-1), entropy_min=he.min(-1), entropy_max=he.max(-1),
            concentration_max=hc.max(-1), concentration_min=hc.min(-1),
            collapsed_head_count=(he < thresholds.collapsed_entropy_bits).sum(-1),
            focused_head_count=(hc > thresholds.focused_concentration).sum(-1),
            score_variance_max=a.score_variance, has_nan=a.attention_flags[..., 0], has_inf=a.attention_flags[..., 1],
        )
    heads = Heads(entropy=he, concentration=hc)
    n_prompt = prompt_ids.size
    if a.prompt_heads is not None:
        ph = a.prompt_heads
        psurp = a.prompt_surprisal if a.prompt_surprisal is not None else np.full(max(n_prompt - 1, 0), np.nan)
        prompt = Prompt(surprisal=psurp, layer_transformation=a.layer_transformation, head_entropy=ph[:, 0],
                        head_concentration=ph[:, 1], sink=ph[:, 2], basin=ph[:, 3])
        weights = round_float16_mantissa(a.sparse_weights, params["attention_weight_bits"])  # type: ignore[arg-type]
        sparse = SparseAttention(a.sparse_counts, a.sparse_keys, weights,  # type: ignore[arg-type]
                                 threshold=params["attention_threshold"], cap=params["attention_cap"])
    else:
        empty2 = np.zeros((0, 0))
        prompt = Prompt(surprisal=np.zeros(0), layer_transformation=empty2, head_entropy=empty2,
                        head_concentration=empty2, sink=empty2, basin=empty2)
        sparse = SparseAttention.empty(threshold=params["attention_threshold"])
    meta = {
        **(model_meta if model_meta is not None else trace_model_meta(model, structure)),
        "num_heads": int(n_heads),
        "device": device,
        "distribution": "raw logits (before temperature/top-k/top-p warping)",
        "top_k": params["top_k"],
        "generation": params,
        "thresholds": dict(thresholds.__dict__),
        "attention_calls": a.attention_calls,
    }
    return Trace(
        meta=meta,
        prompt_ids=prompt_ids,
        prompt_tokens=_decode_pieces(tokenizer, prompt_ids),
        generated_ids=gen_ids,
        generated_tokens=_decode_pieces(tokenizer, gen_ids) if n_steps else [],
        top_k_tokens=np.array(_decode_pieces(tokenizer, a.top_k_ids), dtype=object).reshape(a.top_k_ids.shape).tolist(),
        timeline=timeline, layers=layers, attention=attention, heads=heads, prompt=prompt, sparse=sparse,
    )
