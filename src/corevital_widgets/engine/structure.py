"""Finding what the engine instruments in a transformers model: layer stacks and their
self-attention modules. Works by structure (a ModuleList of blocks, some or all of which hold
an attention module), not by model name, so Llama, GPT-2, Qwen2, T5 and BART are covered, and
so are hybrid stacks (Jamba, Qwen3-Next, LFM2: some blocks are state-space, linear-attention or
convolution mixers, which have no softmax attention and get ``None``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

Role = Literal["causal", "encoder", "decoder"]

#: Attribute names of the final norm of a stack (Llama/Qwen/Mistral, GPT-2, T5, OPT/others).
_FINAL_NORM_NAMES = ("norm", "ln_f", "final_layer_norm", "final_layernorm", "layer_norm")
_CROSS_ATTENTION_NAMES = ("encoder_attn", "crossattention", "cross_attn", "encdecattention", "cross_attention")


@dataclass
class Stack:
    """One stack of transformer blocks.

    module: the module owning the blocks (its output carries ``last_hidden_state``).
    layers: the blocks, in order. attention: each block's self-attention module, None for a
    block without softmax attention (hybrid stacks).
    role: "causal" (decoder-only: prompt and steps), "encoder" (prompt only) or "decoder" (steps).
    """

    module: nn.Module
    layers: list[nn.Module]
    attention: list[nn.Module | None]
    role: Role
    #: the module whose output is the stack's final hidden state (transformers' last
    #: ``hidden_states`` entry): ``module`` itself, or the base model around it when that applies
    #: a final norm after it (RoBERTa-PreLayerNorm)
    output: nn.Module | None = None

    def __post_init__(self) -> None:
        if self.output is None:
            self.output = self.module

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def attention_layers(self) -> list[int]:
        """Indices of the blocks with softmax self-attention, ascending."""
        return [i for i, a in enumerate(self.attention) if a is not None]


@dataclass
class ModelStructure:
    """The stacks of a model: ``step`` produces per-step data, ``prompt`` the prompt telemetry
    (the same stack for causal LMs, the encoder for encoder-decoders)."""

    step: Stack
    prompt: Stack
    lm_head: nn.Module | None
    is_encoder_decoder: bool
    final_norm: nn.Module | None = None
    attention_index: dict[int, tuple[Stack, int]] = field(default_factory=dict)
    #: every module's path (for messages) and the ids of cross-attention modules (never read)
    module_names: dict[int, str] = field(default_factory=dict)
    cross_attention: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.reindex()

    def reindex(self) -> None:
        """Rebuild the module -> (stack, layer) index after ``attention`` lists changed."""
        self.attention_index.clear()
        for stack in {id(self.step): self.step, id(self.prompt): self.prompt}.values():
            for i, module in enumerate(stack.attention):
                if module is not None:
                    self.attention_index[id(module)] = (stack, i)

    @property
    def attention_modules(self) -> list[nn.Module]:
        """Every instrumented self-attention module (both stacks)."""
        return [m for stack in {id(self.step): self.step, id(self.prompt): self.prompt}.values()
                for m in stack.attention if m is not None]


def execution_device(module: nn.Module) -> torch.device:
    """Where a module computes: accelerate's execution device when the module is dispatched
    (offloaded weights sit on the meta device until called), else its parameters' device."""
    hook = getattr(module, "_hf_hook", None)
    device = getattr(hook, "execution_device", None)
    if device is not None:
        return torch.device(device) if not isinstance(device, int) else torch.device("cuda", device)
    for p in module.parameters():
        if p.device.type != "meta":
            return p.device
    return torch.device("cpu")


def _innermost_self_attention(block: nn.Module) -> nn.Module | None:
    """The block's self-attention: the first innermost submodule whose class name ends in
    "Attention" (skipping cross-attention by its attribute name); failing that, the first
    innermost one whose code dispatches through the AttentionInterface (MLA modules named
    otherwise)."""
    from .adapters import uses_attention_interface

    for test in (lambda m: type(m).__name__.endswith("Attention"), uses_attention_interface):
        for name, module in block.named_modules():
            if not test(module):
                continue
            if any(part in name.lower() for part in _CROSS_ATTENTION_NAMES):
                continue
            if any(test(c) for c in module.modules() if c is not module):
                continue
            return module
    return None


def _find_stack(root: nn.Module, role: Role, n_layers: int | None = None) -> Stack | None:
    """The stack of blocks under ``root``: among the ModuleLists of which at least one block
    holds a self-attention module, the one with ``n_layers`` blocks (the config's layer count),
    else the one with the most such blocks, then the longest."""
    best: tuple[tuple[bool, int, int], nn.Module, nn.ModuleList, list] | None = None
    for owner in root.modules():
        for child in owner.children():
            if not isinstance(child, nn.ModuleList) or len(child) == 0:
                continue
            attention = [_innermost_self_attention(b) for b in child]
            n_attention = sum(a is not None for a in attention)
            if n_attention == 0:
                continue
            # the config's layer count first, then blocks holding self-attention (a block's own
            # sub-layer list, as T5's, holds one), then length
            rank = (len(child) == n_layers, n_attention, len(child))
            if best is None or rank > best[0]:
                best = (rank, owner, child, attention)
    if best is None:
        return None
    _, owner, blocks, attention = best
    return Stack(owner, list(blocks), attention, role)


def _layer_count(config: object | None) -> int | None:
    for name in ("num_hidden_layers", "n_layer", "num_layers", "n_layers"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def inspect_model(model: nn.Module) -> ModelStructure:
    """Find the stacks to instrument; raise ValueError when the model has none we understand."""
    config = getattr(model, "config", None)
    is_enc_dec = bool(getattr(config, "is_encoder_decoder", False))
    if is_enc_dec:
        encoder = model.get_encoder() if hasattr(model, "get_encoder") else None
        try:
            decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
        except (AttributeError, NotImplementedError, TypeError):
            decoder = None
        prompt = _find_stack(encoder, "encoder") if encoder is not None else None
        step = _find_stack(decoder, "decoder") if decoder is not None else None
    else:
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        try:
            decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
        except (AttributeError, NotImplementedError, TypeError):
            decoder = None
        step = None
        if isinstance(decoder, nn.Module) and decoder is not model:  # the text decoder of a speech/vision model
            step = _find_stack(decoder, "causal", _layer_count(text))
        step = prompt = step or _find_stack(model, "causal", _layer_count(text))
    base = getattr(model, "base_model", None)
    if (step is not None and not is_enc_dec and isinstance(base, nn.Module) and base is not model
            and base is not step.module and any(m is step.module for m in base.modules())
            and not any(isinstance(m, nn.ModuleList) and m is not None and len(m) and m[0] is not step.layers[0]
                        and any(_innermost_self_attention(b) is not None for b in m) for m in base.modules())):
        step.output = base  # a final norm applied by the base model after the block stack
    if step is None or prompt is None:
        model_type = getattr(config, "model_type", "") or "?"
        raise ValueError(
            f"corevital cannot trace this {model_type} model ({type(model).__name__}): it has no stack of blocks with "
            "softmax self-attention (a module whose class name ends in 'Attention'); a pure state-space or recurrent "
            "model (Mamba, RWKV, xLSTM) has none for corevital's attention metrics to read. Nothing was run and the "
            "model is unchanged. Pass a transformers causal LM (Llama, GPT-2, Qwen2, ...) or encoder-decoder (T5, BART)."
        )
    lm_head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    final_norm = next((getattr(step.module, n) for n in _FINAL_NORM_NAMES if isinstance(getattr(step.module, n, None), nn.Module)), None)
    names = {id(m): n for n, m in model.named_modules()}
    cross = {id(m) for n, m in model.named_modules() if any(part in n.lower() for part in _CROSS_ATTENTION_NAMES)}
    return ModelStructure(step=step, prompt=prompt, lm_head=lm_head, is_encoder_decoder=is_enc_dec, final_norm=final_norm,
                          module_names=names, cross_attention=cross)
