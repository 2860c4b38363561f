"""Per-step metrics are reduced per chunk of steps (engine/step_chunks.py). Chunk boundaries
must not change a single value: the same run with chunks of 1, 2 and 5 steps (and with the
chunk sized down by the score-row budget) gives the trace of one chunk, and the repetition
check still compares each step with the 3 before it across chunk boundaries."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import corevital_widgets as corevital
from corevital_widgets.engine import metrics, step_chunks

from .test_faults import _layer_hook
from .test_prompt_tiles import assert_same_trace

PROMPT = "Write a short list of five fruits and their colours:"


def _trace(smollm2, **kw):
    model, tok = smollm2
    return corevital.analyze(model, PROMPT, tok, max_new_tokens=13, min_new_tokens=13, do_sample=True, seed=3,
                             logit_lens=True, **kw)


@pytest.mark.parametrize("chunk", [1, 2, 5])
def test_chunk_size_does_not_change_the_trace(smollm2, monkeypatch, chunk):
    whole = _trace(smollm2)
    monkeypatch.setattr(step_chunks, "CHUNK_STEPS", chunk)
    chunked = _trace(smollm2)
    assert_same_trace(whole, chunked)
    for g in ("timeline", "layers", "attention", "heads"):
        for name, x in getattr(whole, g).arrays().items():
            y = getattr(getattr(chunked, g), name)
            if x.dtype.kind == "f":
                np.testing.assert_allclose(x.astype(np.float64), y.astype(np.float64), rtol=1e-5, atol=1e-6,
                                           err_msg=f"{g}.{name}")
    assert np.isfinite(chunked.timeline.surprisal).all(), "every step's token reached its surprisal"
    assert np.isnan(chunked.timeline.repetition_similarity[:3]).all()
    assert np.isfinite(chunked.timeline.repetition_similarity[3:]).all()


def test_score_budget_shrinks_chunks_without_changing_values(smollm2, monkeypatch):
    whole = _trace(smollm2)
    model, tok = smollm2
    n_keys = whole.n_prompt + 2
    one_step = model.config.num_hidden_layers * model.config.num_attention_heads * (n_keys + 32) * 4
    monkeypatch.setattr(step_chunks, "CHUNK_SCORE_BYTES", one_step * 3)  # chunks of 3 steps
    assert_same_trace(whole, _trace(smollm2))


def test_repetition_across_chunk_boundaries(smollm2, monkeypatch):
    monkeypatch.setattr(step_chunks, "CHUNK_STEPS", 2)
    model, tok = smollm2
    frozen = torch.randn(model.config.hidden_size, generator=torch.Generator().manual_seed(0))
    # the final layer's output is frozen from forward 5 on: steps 5.. repeat; step 8 is the first
    # whose 3 predecessors (5, 6, 7) all equal it, and 5..8 span three chunks of 2
    handle = _layer_hook(model, model.config.num_hidden_layers - 1, lambda h: frozen.expand_as(h).clone(), from_step=5)
    try:
        trace = corevital.analyze(model, PROMPT, tok, max_new_tokens=12, min_new_tokens=12)
    finally:
        handle.remove()
    rep = trace.timeline.repetition_similarity
    assert trace.health.first_fired["repetition_loop_detected"].step == 8
    np.testing.assert_allclose(rep[8:], 1.0, atol=1e-5)
    assert (rep[3:8] < 0.9995).all()


def _torch_step_stats(queries, keys, scales, valid):
    """The fused decode-step kernel's contract in plain torch (float32 products): [B, 3, L, H]."""
    rows = []
    for q, k, scale in zip(queries, keys, scales):
        q, k = (q[None], k[None]) if q.dim() == 2 else (q, k)
        groups = q.shape[1] // k.shape[1]
        s = torch.einsum("bkgd,bksd->bkgs", q.float().unflatten(1, (k.shape[1], groups)), k.float()).flatten(1, 2)
        if valid is not None:
            s = s.masked_fill(~valid[:, None, :], float("-inf"))
        rows.append(s * scale)
    return metrics.step_attention_stats(torch.stack(rows, 1))


@pytest.mark.parametrize("fused_steps", ["odd", "even", "all"])
def test_steps_with_fused_head_stats_mix_with_score_rows(smollm2, monkeypatch, fused_steps):
    """Steps whose head statistics come from the fused kernel (on CUDA; here its torch contract)
    and steps that put score rows can share a chunk in either order: a chunk sized without rows
    reduces a later step's rows at once, one sized with rows reduces only the steps that put
    them. Every value equals the all-rows trace's."""
    from corevital_widgets.engine import triton_step

    whole = _trace(smollm2)
    calls = []

    def supported(queries, keys, valid):
        calls.append(1)
        n = len(calls)
        return fused_steps == "all" or (n % 2 == 1) == (fused_steps == "odd")

    monkeypatch.setattr(step_chunks, "CHUNK_STEPS", 4)
    monkeypatch.setattr(triton_step, "step_stats_supported", supported)
    monkeypatch.setattr(triton_step, "fused_step_stats", _torch_step_stats)
    mixed = _trace(smollm2)
    assert len(calls) == whole.n_steps - 1, "every decode step (not the prefill) offered its queries to the kernel"
    assert_same_trace(whole, mixed)
    np.testing.assert_allclose(mixed.heads.entropy.astype(np.float64), whole.heads.entropy.astype(np.float64),
                               rtol=1e-4, atol=1e-5)
