"""Independent reference computations (numpy float64) of the metric definitions in
shared/METRICS.md, from a plain teacher-forced transformers forward with eager attention.
Written separately from the engine's torch code on purpose: tests compare the two."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def entropy_bits(p: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.where(p > 0, p * np.log2(p), 0.0).sum(-1)


@dataclass
class Forward:
    logits: np.ndarray  # [S, V] decoder positions
    hidden: np.ndarray  # [L+1, S, D] decoder hidden states (embedding output first)
    attn: np.ndarray  # [L, H, S, S] decoder self-attention
    prompt_hidden: np.ndarray  # [Lp+1, P, D] (same as hidden for causal LMs)
    prompt_attn: np.ndarray  # [Lp, H, P, P]
    step_pos: np.ndarray  # [T] decoder position of each generation step


@contextmanager
def eager_attention(model):
    """The model in eager attention for the body (every sub-config, also for models that refuse a
    dynamic switch, such as falcon), restored after."""
    before = {id(c): (c, c._attn_implementation_internal) for m in model.modules()
              if hasattr(c := getattr(m, "config", None), "_attn_implementation_internal")}
    model.set_attn_implementation("eager")
    for c, _ in before.values():
        c._attn_implementation_internal = "eager"
    try:
        yield
    finally:
        for c, impl in before.values():
            c._attn_implementation_internal = impl


def teacher_forced(model, prompt_ids: np.ndarray, gen_ids: np.ndarray) -> Forward:
    """One plain forward over prompt + generated tokens with eager attention (restored after)."""
    dev = model.get_input_embeddings().weight.device
    with eager_attention(model):
        with torch.no_grad():
            if model.config.is_encoder_decoder:
                start = model.config.decoder_start_token_id
                dec = np.concatenate([[start], gen_ids[:-1]])
                out = model(input_ids=torch.tensor(prompt_ids, device=dev)[None],
                            decoder_input_ids=torch.tensor(dec, device=dev)[None],
                            output_attentions=True, output_hidden_states=True)
                hidden = np.stack([h[0].double().cpu().numpy() for h in out.decoder_hidden_states])
                attn = np.stack([a[0].double().cpu().numpy() for a in out.decoder_attentions])
                p_hidden = np.stack([h[0].double().cpu().numpy() for h in out.encoder_hidden_states])
                p_attn = np.stack([a[0].double().cpu().numpy() for a in out.encoder_attentions])
                pos = np.arange(len(gen_ids))
            else:
                ids = np.concatenate([prompt_ids, gen_ids])
                out = model(input_ids=torch.tensor(ids, device=dev)[None], output_attentions=True, output_hidden_states=True)
                hidden = np.stack([h[0].double().cpu().numpy() for h in out.hidden_states])
                attn = np.stack([a[0].double().cpu().numpy() for a in out.attentions])
                p = len(prompt_ids)
                p_hidden, p_attn = hidden[:, :p], attn[:, :, :p, :p]
                pos = np.arange(len(gen_ids)) + p - 1
    return Forward(out.logits[0].double().cpu().numpy(), hidden, attn, p_hidden, p_attn, pos)


def timeline(f: Forward, gen_ids: np.ndarray, k: int) -> dict[str, np.ndarray]:
    p = softmax(f.logits[f.step_pos])
    srt = -np.sort(-p, axis=-1)
    ent = entropy_bits(p)
    return {
        "entropy": ent, "top_k_margin": srt[:, 0] - srt[:, 1], "voter_agreement": srt[:, :k].sum(-1),
        "max_prob": srt[:, 0], "perplexity": 2.0 ** ent,
        "surprisal": -np.log2(p[np.arange(len(gen_ids)), gen_ids]),
    }


def layers(f: Forward) -> dict[str, np.ndarray]:
    h = f.hidden[1:, f.step_pos].transpose(1, 0, 2)  # [T, L, D]
    return {"l2_norm": np.sqrt((h ** 2).sum(-1)), "std": h.std(-1), "mean": h.mean(-1)}


def heads(f: Forward) -> dict[str, np.ndarray]:
    rows = f.attn[:, :, f.step_pos, :].transpose(2, 0, 1, 3)  # [T, L, H, S]
    return {"entropy": entropy_bits(rows), "concentration": rows.max(-1)}


def prompt(f: Forward, prompt_ids: np.ndarray, causal: bool) -> dict[str, np.ndarray]:
    a = f.prompt_attn  # [L, H, P, P]
    n = a.shape[-1]
    mid = a[..., n // 3 : 2 * n // 3].sum(-1)
    other = a.sum(-1) - mid
    h = f.prompt_hidden
    cos = (h[1:] * h[:-1]).sum(-1) / (np.linalg.norm(h[1:], axis=-1) * np.linalg.norm(h[:-1], axis=-1))
    out = {
        "head_entropy": entropy_bits(a).mean(-1), "head_concentration": a.max(-1).mean(-1),
        "sink": a[..., 0].mean(-1), "basin": mid.mean(-1) / (other.mean(-1) + 1e-10),
        "layer_transformation": 1.0 - cos,
    }
    if causal:
        lp = f.logits[: n - 1]
        lse = np.log(np.exp(lp - lp.max(-1, keepdims=True)).sum(-1)) + lp.max(-1)
        out["surprisal"] = (lse - lp[np.arange(n - 1), prompt_ids[1:]]) / np.log(2)
    return out


def repetition(f: Forward) -> np.ndarray:
    v = f.hidden[-1, f.step_pos]  # [T, D]
    v = v / np.linalg.norm(v, axis=-1, keepdims=True)
    out = np.full(len(v), np.nan)
    for t in range(3, len(v)):  # reference code: clarity over speed
        out[t] = min(float(v[t] @ v[t - i]) for i in (1, 2, 3))
    return out
