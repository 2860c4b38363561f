"""Model-specific knowledge, in one place: which keyword arguments of an attention call the
statistics understand, which layer kinds have no softmax attention, how each attention module
is read (its route), and which blocks are refused before anything runs.

Everything else in the engine works by structure and by the arguments each call carries."""

from __future__ import annotations

import inspect
from functools import lru_cache
from typing import Any, Literal

from torch import nn

#: How a block's attention is read: through the tapped AttentionInterface function, or (legacy
#: modules that compute attention themselves) from the probabilities the module returns.
Route = Literal["interface", "sdpa_call", "weights"]

#: Keyword arguments of an attention call that :class:`.attention.CallSpec` applies itself
#: (they change the probabilities and are reproduced exactly).
HANDLED_KWARGS = frozenset({
    "position_bias",   # T5 relative position bias, added to the scores
    "softcap",         # Gemma-2 soft-capping tanh(s / c) * c
    "sliding_window",  # keys with key > query - window (applied when no mask carries it)
    "s_aux",           # attention sinks: a per-head logit in the softmax denominator (gpt-oss)
    "sinks",           # the same per head and query row [B, H, q, 1] (Inkling 2)
    "is_causal",       # implicit causal masking without a mask (SDPA and flash semantics)
})

#: Keyword arguments that never change the probabilities, given the query, keys and mask.
NEUTRAL_KWARGS = frozenset({
    "position_ids", "cache_position", "cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k",
    "use_cache", "output_attentions", "output_hidden_states", "layer_idx", "past_key_values", "past_key_value",
    "cache", "return_dict", "target_dtype", "logits_to_keep",
})

#: Values of ``config.layer_types`` for blocks whose mixer is not softmax attention.
NON_SOFTMAX_LAYER_TYPES = ("linear", "mamba", "conv", "ssm", "recurrent", "rwkv", "gated_delta", "deltanet",
                           "lightning", "mlp_only", "no_attention")



def unsupported_kwargs(kwargs: dict[str, Any]) -> list[str]:
    """Names of keyword arguments with a value (not None, not False) that corevital's statistics
    do not understand: a call carrying one is refused rather than traced wrongly."""
    return sorted(k for k, v in kwargs.items()
                  if k not in HANDLED_KWARGS and k not in NEUTRAL_KWARGS and v is not None and v is not False)


def layer_type(model: nn.Module, index: int) -> str | None:
    """``config.layer_types[index]`` of the model's text config, when it has one."""
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "get_text_config"):
        config = config.get_text_config()
    types = getattr(config, "layer_types", None)
    if isinstance(types, (list, tuple)) and 0 <= index < len(types) and isinstance(types[index], str):
        return types[index]
    return None


def is_non_softmax_layer(model: nn.Module, index: int) -> bool:
    """Whether the config declares block ``index`` a non-softmax mixer (linear attention,
    state space, convolution): a hybrid stack's block whose attention metrics are NaN."""
    kind = layer_type(model, index)
    return kind is not None and any(word in kind.lower() for word in NON_SOFTMAX_LAYER_TYPES)


@lru_cache(maxsize=None)
def _class_source(cls: type) -> str:
    parts = []
    for klass in cls.__mro__:
        if klass.__module__.startswith("torch."):
            break
        try:
            parts.append(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
    return "\n".join(parts)


@lru_cache(maxsize=None)
def _forward_parameters(cls: type) -> tuple[str, ...]:
    try:
        return tuple(inspect.signature(inspect.unwrap(cls.forward)).parameters)
    except (TypeError, ValueError):
        return ()


def positional_index(module: nn.Module, name: str) -> int | None:
    """Index of parameter ``name`` among ``forward``'s positional arguments (self excluded)."""
    params = _forward_parameters(type(module))
    return params.index(name) - 1 if name in params else None


def accepts_kwarg(module: nn.Module, name: str) -> bool:
    return name in _forward_parameters(type(module))


def _takes_output_attentions(module: nn.Module) -> bool:
    return accepts_kwarg(module, "output_attentions")


def uses_attention_interface(module: nn.Module) -> bool:
    """Whether the module's class (or a parent class) dispatches through the AttentionInterface."""
    cls = type(module)
    if cls.__module__.startswith("torch."):
        return False
    source = _class_source(cls)
    return "ALL_ATTENTION_FUNCTIONS" in source or "attention_interface(" in source


def attention_route(module: nn.Module) -> Route | None:
    """How corevital reads this attention module, judged from its class's code before anything
    runs: "interface" when it dispatches through transformers' AttentionInterface; "sdpa_call"
    when, configured for SDPA, it calls ``torch.nn.functional.scaled_dot_product_attention``
    itself (falcon): that call is read; "weights" when it computes a softmax itself and can return its own probabilities (``output_attentions``
    or always: falcon, bloom, mpt, gpt_neo); None when neither (refused, or a hybrid stack's
    non-softmax block). The first forward verifies every block was read as planned."""
    source = _class_source(type(module))
    if uses_attention_interface(module):
        return "interface"
    config = getattr(module, "config", None)
    if getattr(config, "_attn_implementation", None) == "sdpa" and "scaled_dot_product_attention" in source:
        return "sdpa_call"  # its SDPA branch calls torch's function: read that call (exact, nothing changed)
    if _takes_output_attentions(module) or "softmax(" in source:
        return "weights"  # verified at the first forward: [1, H, q, k] rows that sum to 1, or refused
    return None


def plan_attention(model: nn.Module, structure: Any) -> dict[int, Route]:
    """Before anything runs: the route of every instrumented attention module (keyed by
    ``id(module)``). Blocks the config declares non-softmax (linear attention, state space,
    convolution) whose module cannot be read become hybrid "no attention" blocks
    (``structure`` is updated); any other unreadable block is refused with a ValueError that
    names the model type, the reason and what to do."""
    model_type = str(getattr(getattr(model, "config", None), "model_type", "")) or type(model).__name__
    routes: dict[int, Route] = {}
    unreadable: list[str] = []
    for stack in {id(structure.step): structure.step, id(structure.prompt): structure.prompt}.values():
        for i, module in enumerate(stack.attention):
            if module is None:
                continue
            route = attention_route(module)
            if route is None and stack.role != "encoder" and is_non_softmax_layer(model, i):
                stack.attention[i] = None  # a hybrid block: hidden-state metrics only, attention NaN
            elif route is None:
                unreadable.append(f"{stack.role} layer {i} ({type(module).__name__})")
            else:
                routes[id(module)] = route
    structure.reindex()
    if unreadable:
        raise ValueError(
            f"corevital cannot trace this {model_type} model ({type(model).__name__}): the attention of "
            f"{', '.join(unreadable[:3])}{' and others' if len(unreadable) > 3 else ''} neither goes through "
            "transformers' AttentionInterface nor returns its attention probabilities, so its statistics cannot be "
            "read exactly. Nothing was run and the model is unchanged. See docs/architectures.md for what is supported."
        )
    if not structure.step.attention_layers:
        raise ValueError(
            f"corevital cannot trace this {model_type} model ({type(model).__name__}): no block of its stack has "
            "softmax attention (a pure state-space / recurrent model); corevital's attention metrics do not apply. "
            "Nothing was run and the model is unchanged."
        )
    return routes
