"""The prompt pass blocked over query tiles gives the same trace as one tile (the full
matrix), on SmolLM2 and on random configs with GQA, a sliding window, T5's relative position
bias and BART; and the automatic sparse cap keeps exactly the top weights of every row."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import corevital_widgets as corevital

from .test_engine_correctness import _bart, _gpt2, _qwen2_gqa, _t5, check_trace

PROMPT = "Alice gave Bob the red book because he had asked for it twice, and then she left for Paris."


def _mistral_sliding(vocab):
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    cfg = MistralConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, sliding_window=5)
    return MistralForCausalLM(cfg).eval()


def tile_budget_for(rows: int, heads: int, keys: int) -> int:
    return rows * heads * keys * 12


def assert_same_trace(a, b):
    assert (a.generated_ids == b.generated_ids).all()
    for g in ("timeline", "layers", "attention", "heads", "prompt"):
        for name, x in getattr(a, g).arrays().items():
            y = getattr(getattr(b, g), name)
            if x.dtype.kind == "f":
                np.testing.assert_allclose(x.astype(np.float64), y.astype(np.float64), atol=2e-3, rtol=1e-3,
                                           err_msg=f"{g}.{name}")
            else:
                assert np.array_equal(x, y), f"{g}.{name}"
    n_layers, n_heads, _ = a.sparse.shape
    for layer in range(n_layers):
        for head in range(n_heads):
            np.testing.assert_allclose(a.sparse.dense(layer, head), b.sparse.dense(layer, head), atol=2e-3)


def test_smollm2_tiles_equal_one_tile(smollm2):
    model, tok = smollm2
    one = corevital.analyze(model, PROMPT, tok, max_new_tokens=5)
    p = one.n_prompt
    tiled = corevital.analyze(model, PROMPT, tok, max_new_tokens=5, attention_tile_bytes=tile_budget_for(8, 9, p))
    assert p % 8, "odd tiling: the last tile is partial"
    assert_same_trace(one, tiled)
    rows1 = corevital.analyze(model, PROMPT, tok, max_new_tokens=5, attention_tile_bytes=1)  # one row per tile
    assert_same_trace(one, rows1)


@pytest.mark.parametrize("build", [_gpt2, _qwen2_gqa, _mistral_sliding, _t5, _bart],
                         ids=["gpt2-random-config", "qwen2-gqa-random-config", "mistral-sliding-window-random-config",
                              "t5-random-config", "bart-random-config"])
def test_random_configs_tiles_equal_one_tile_and_reference(smollm2, build):
    tok = smollm2[1]
    model = build(len(tok))
    one = corevital.analyze(model, PROMPT, tok, max_new_tokens=6, min_new_tokens=6)
    tiled = corevital.analyze(model, PROMPT, tok, max_new_tokens=6, min_new_tokens=6,
                              attention_tile_bytes=tile_budget_for(3, 4, one.n_prompt))
    assert_same_trace(one, tiled)
    check_trace(tiled, model)  # and both equal the teacher-forced eager reference
    calls = one.n_steps * one.n_layers + (one.meta["num_prompt_layers"] if one.meta["is_encoder_decoder"] else 0)
    assert one.meta["attention_calls"] == calls, "one prompt pass (prefill or encoder), no extra forward"


def test_automatic_cap_warns_and_keeps_top_weights(smollm2):
    model, tok = smollm2
    full = corevital.analyze(model, PROMPT, tok, max_new_tokens=3)
    budget = full.sparse.nnz * 4 // 3  # the uncapped profile is 3x over budget
    with pytest.warns(RuntimeWarning, match="keeping at most"):
        capped = corevital.analyze(model, PROMPT, tok, max_new_tokens=3, max_sparse_bytes=budget)
    cap = capped.sparse.cap
    assert cap >= 1 and capped.meta["generation"]["attention_cap"] == cap
    assert capped.sparse.row_counts.max() <= cap
    explicit = corevital.analyze(model, PROMPT, tok, max_new_tokens=3, attention_cap=cap)
    assert capped.sparse == explicit.sparse, "post-hoc capping of layer 0 equals capping during the pass"
    for layer, head, q in [(0, 0, full.n_prompt - 1), (0, 4, 10), (17, 2, 20)]:
        keys, w = full.attends_to(q, layer, head)
        want = set(keys[np.argsort(-w.astype(np.float64), kind="stable")[:cap]].tolist())
        got, _ = capped.attends_to(q, layer, head)
        assert len(got) == min(cap, len(keys))
        assert np.sort(w)[::-1][: len(got)].tolist() == sorted(capped.attends_to(q, layer, head)[1].tolist(), reverse=True)
        assert set(got.tolist()) == want or len(set(w.tolist())) < len(w), "top weights kept (ties aside)"


def test_a_failing_triton_kernel_falls_back_to_the_torch_path_once(smollm2, monkeypatch):
    """If the fused kernels fail (say, a GPU whose Triton lacks an instruction), analyze warns
    once, switches them off for the process and gives the torch path's trace; out-of-memory
    errors are not swallowed."""
    from corevital_widgets.engine import attention, triton_prompt

    model, tok = smollm2
    want = corevital.analyze(model, PROMPT, tok, max_new_tokens=3)
    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        raise RuntimeError("PassManager::run failed (no such instruction on this GPU)")

    monkeypatch.setattr(triton_prompt, "disabled_reason", None)
    monkeypatch.setattr(attention, "fused_prompt_supported",
                        lambda *a, **k: triton_prompt.disabled_reason is None)  # "eligible" until switched off
    monkeypatch.setattr(attention, "fused_prompt_layer", broken)
    with pytest.warns(RuntimeWarning, match="fused Triton prompt kernels failed") as caught:
        got = corevital.analyze(model, PROMPT, tok, max_new_tokens=3)
    assert len([w for w in caught if "Triton" in str(w.message)]) == 1 and calls == [1]
    assert "no such instruction" in triton_prompt.disabled_reason
    assert_same_trace(want, got)

    monkeypatch.setattr(triton_prompt, "disabled_reason", None)

    def oom(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(attention, "fused_prompt_layer", oom)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        corevital.analyze(model, PROMPT, tok, max_new_tokens=3)
    assert model.config._attn_implementation != "corevital", "the model is restored after the error"
