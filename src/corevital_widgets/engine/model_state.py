"""Leaving the user's model exactly as it was: attention implementation, hooks, train/eval
state of every submodule and generation config are restored on exit, also on error."""

from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import Iterator

from torch import nn


def _attn_implementations(model: nn.Module) -> dict[int, tuple[object, str | None]]:
    """Every config reachable from the model (sub-configs included) with its implementation."""
    out: dict[int, tuple[object, str | None]] = {}
    for module in model.modules():
        config = getattr(module, "config", None)
        if config is not None and hasattr(config, "_attn_implementation_internal"):
            out[id(config)] = (config, config._attn_implementation_internal)
    return out


def hook_counts(model: nn.Module) -> dict[str, int]:
    """Number of forward (pre-)hooks of every submodule, keyed by module path (for checks)."""
    return {
        name: len(m._forward_hooks) + len(m._forward_pre_hooks)
        for name, m in model.named_modules()
        if m._forward_hooks or m._forward_pre_hooks
    }


@contextmanager
def preserved_model_state(model: nn.Module) -> Iterator[None]:
    """Run the body with the model in eval mode and restore everything on exit."""
    training = {m: m.training for m in model.modules()}
    impls = _attn_implementations(model)
    gen_config = getattr(model, "generation_config", None)
    gen_config_copy = copy.deepcopy(gen_config) if gen_config is not None else None
    try:
        model.eval()
        yield
    finally:
        for module, flag in training.items():
            module.training = flag
        for config, impl in impls.values():
            config._attn_implementation_internal = impl  # type: ignore[attr-defined]
        if gen_config is not None and gen_config.to_dict() != gen_config_copy.to_dict():  # type: ignore[union-attr]
            model.generation_config = gen_config_copy
