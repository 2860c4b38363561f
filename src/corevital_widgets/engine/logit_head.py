"""The model's own map from a final hidden state to logits, found and verified per run.

Prompt surprisal (and the logit lens) need logits at positions the model never turns into
logits during generation (``logits_to_keep=1``). ``output_embeddings(h)`` is that map for
Llama, but not for models that post-process (Cohere's ``logit_scale``, Gemma's final
soft-capping, Granite's ``logits_scaling``, T5's tied-embedding rescale) or that put a
prediction head before the unembedding (BERT-style decoders, ModernBERT). So the candidates
below are tried on the prefill's last position, where the model's own logits are known, and
the first that reproduces them is used; when none does, prompt surprisal is left NaN (with a
note in the trace meta) rather than computed wrongly.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

Head = Callable[[torch.Tensor], torch.Tensor]


#: The name of the plain unembedding among the candidates (no map before or after it).
PLAIN_HEAD = "output embeddings"


def _text_config(model: nn.Module) -> object:
    config = getattr(model, "config", None)
    return config.get_text_config() if config is not None and hasattr(config, "get_text_config") else config


def _number(config: object, name: str) -> float | None:
    value = getattr(config, name, None)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value else None


def candidates(model: nn.Module, lm_head: nn.Module) -> list[tuple[str, Head]]:
    """Named candidate maps hidden [..., D] -> logits [..., V], most common first."""
    config = _text_config(model)
    pre: list[tuple[str, Head]] = [(PLAIN_HEAD, lm_head)]
    for name, child in model.named_children():  # a prediction head beside the unembedding (BERT, ModernBERT)
        if child is lm_head or child is getattr(model, "base_model", None):
            continue
        if any(isinstance(m, nn.ModuleList) for m in child.modules()):  # a stack or a tower, not a head
            continue
        pre.append((f"{name} then output embeddings", lambda h, c=child: lm_head(c(h))))
        pre.append((name, child))
    d_model = _number(config, "d_model")
    if d_model:  # T5: the decoder output is scaled by d_model**-0.5 before a tied unembedding
        pre.append(("output embeddings of h * d_model**-0.5", lambda h: lm_head(h * d_model ** -0.5)))
    if (m := _number(config, "logits_mup_width_multiplier")) is not None:  # muP (Inkling)
        pre.append((f"output embeddings of h / {m}", lambda h, m=m: lm_head(h / m)))
    post: list[tuple[str, Callable[[torch.Tensor], torch.Tensor]]] = [("", lambda z: z)]
    if (s := _number(config, "logit_scale")) is not None:
        post.append((f" * logit_scale {s}", lambda z, s=s: z * s))
    if (s := _number(config, "logits_scaling")) is not None:
        post.append((f" / logits_scaling {s}", lambda z, s=s: z / s))
    for name in ("final_logit_softcapping", "logits_soft_cap"):
        if (c := _number(config, name)) is not None:
            post.append((f", soft-capped at {c}", lambda z, c=c: torch.tanh(z / c) * c))
    return [(pname + qname, (lambda h, p=p, q=q: q(p(h)))) for pname, p in pre for qname, q in post]


def find_head(model: nn.Module, lm_head: nn.Module | None, hidden_last: torch.Tensor,
              logits_last: torch.Tensor) -> tuple[str, Head] | None:
    """The first candidate whose logits for ``hidden_last`` [D] equal the model's own
    ``logits_last`` [V] (same argmax; difference within the dtype's rounding), or None."""
    if lm_head is None:
        return None
    want = logits_last.float()
    tol = (1e-3 if logits_last.dtype in (torch.float32, torch.float64) else 3e-2) * max(1.0, float(want.abs().max()))
    for name, head in candidates(model, lm_head):
        try:
            got = head(hidden_last[None].to(_device(lm_head)))[0].float().to(want.device)
        except Exception:  # noqa: BLE001 - a candidate that does not apply to this shape
            continue
        if got.shape[-1] > want.shape[-1]:  # a padded vocabulary the model cuts (unpadded_vocab_size)
            got = got[..., : want.shape[-1]]
            head = (lambda h, head=head, v=want.shape[-1]: head(h)[..., :v])
            name = f"{name}, first {want.shape[-1]} logits"
        if got.shape == want.shape and float((got - want).abs().max()) <= tol and int(got.argmax()) == int(want.argmax()):
            return name, head
    return None


def plain_linear(name: str, lm_head: nn.Module | None) -> nn.Linear | None:
    """``lm_head`` when the head :func:`find_head` found (by ``name``) is exactly it, an
    ``nn.Linear`` with nothing before or after (the fast CPU prompt surprisal applies), else None."""
    return lm_head if name == PLAIN_HEAD and isinstance(lm_head, nn.Linear) else None


def _device(module: nn.Module) -> torch.device:
    for p in module.parameters():
        if p.device.type != "meta":
            return p.device
    return torch.device("cpu")
