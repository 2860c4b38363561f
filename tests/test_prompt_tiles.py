"""The prompt pass blocked over query tiles gives the same trace as one tile (the full
matrix), on SmolLM2 and on random configs with GQA, a sliding window, T5's relative position
bias and BART; and the automatic sparse cap keeps exactly the top weights of every row."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import corevital_widgets as corevital

from .test_engine_correctness import _bart, _gpt2, _qwen2_gqa, _t5, check_trace
from .trace_helpers import assert_groups_close

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
    assert_groups_close(b, a, atol=2e-3, rtol=1e-3)
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


# ----------------------------------------------------------------- the CPU path, against float64
def _dense_reference(q, k, scale, causal, threshold):
    """Prompt head statistics and the CSR profile of query [1, H, P, d] and key [1, Hkv, K, d]
    (queries the last P of the K positions), written directly from METRICS.md in float64 numpy:
    the full [H, P, K] attention, nothing tiled."""
    qn, kn = q[0].double().numpy(), k[0].double().numpy()
    n_heads, n_rows, _ = qn.shape
    n_keys = kn.shape[1]
    kn = np.repeat(kn, n_heads // kn.shape[0], axis=0)  # grouped-query heads share keys
    scores = np.einsum("hqd,hkd->hqk", qn, kn) * scale
    if causal:
        position = np.arange(n_rows)[:, None] + (n_keys - n_rows)
        scores = np.where(np.arange(n_keys)[None, :] <= position, scores, -np.inf)
    a = np.exp(scores - scores.max(-1, keepdims=True))
    a /= a.sum(-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.where(a > 0, a * np.log2(a), 0.0).sum(-1)
    mid = a[..., n_keys // 3 : (2 * n_keys) // 3].sum(-1)
    stats = np.stack([entropy.mean(-1), a.max(-1).mean(-1), a[..., 0].mean(-1),
                      mid.mean(-1) / ((a.sum(-1) - mid).mean(-1) + 1e-10)])
    keep = a > threshold
    return stats, a, keep.sum(-1), np.nonzero(keep)[2], a[keep]


@pytest.mark.parametrize("causal, n_rows, n_keys", [(True, 181, 181), (True, 97, 150), (False, 133, 133)],
                         ids=["causal", "causal-queries-after-a-prefix", "bidirectional"])
def test_cpu_prompt_path_equals_a_dense_float64_computation(monkeypatch, causal, n_rows, n_keys):
    """The CPU path (cache-sized tiles, entropy from log-sum-exp and Σ p·s, block-filtered
    sparse search, CSR order by one gather) at a size that forces many tiles, with grouped-query
    heads, key counts that are not whole key blocks and peaked rows (several entries above the
    threshold per row), against the dense float64 definition."""
    from corevital_widgets.engine import prompt_attention as pa

    torch.manual_seed(1)
    n_heads, n_kv, dim, scale, threshold = 6, 2, 16, 0.25, 0.01
    q = torch.randn(1, n_heads, n_rows, dim) * 2.5
    k = torch.randn(1, n_kv, n_keys, dim) * 2.5
    q = q.transpose(1, 2).contiguous().transpose(1, 2)  # the [B, H, P, d] view of a [B, P, H*d] projection
    monkeypatch.setattr(pa, "CPU_TILE_BYTES", 6 * n_heads * 4 * 64)  # a few rows per tile
    tiles = pa.cpu_tiles(n_rows, n_keys, n_heads, causal, 10**9)
    assert len(tiles) >= 8 and tiles[-1][1] == n_rows
    acc = pa.PromptAccumulator(n_heads, n_rows, n_keys, threshold, 0, torch.device("cpu"))
    pa.cpu_prompt_layer(acc, q, k, scale, causal, max_rows=10**9)
    stats, dense, counts, keys, weights = _dense_reference(q, k, scale, causal, threshold)
    np.testing.assert_allclose(acc.head_stats().numpy(), stats, rtol=1e-5, atol=1e-5)
    sparse = acc.sparse()
    assert sparse.counts.shape == (n_heads, n_rows)
    assert counts.sum() > 3 * n_heads * n_rows, "peaked rows: several entries per row"
    # the CSR profile as a dense [H, P, K] matrix equals the reference's weights above the
    # threshold (a float32 weight within 1e-6 of it may fall either side)
    got = np.zeros(dense.shape)
    flat_counts = sparse.counts.numpy().reshape(-1)
    row = np.repeat(np.arange(flat_counts.size), flat_counts)
    got.reshape(-1, n_keys)[row, sparse.keys.numpy()] = sparse.weights.numpy()
    edge = np.abs(dense - threshold) < 1e-6
    assert edge.sum() < 10
    np.testing.assert_allclose(got[~edge], np.where(dense > threshold, dense, 0.0)[~edge], rtol=1e-5, atol=1e-7)
    assert ((got > 0) == (dense > threshold))[~edge].all()
    keys_in_rows = np.split(sparse.keys.numpy(), np.cumsum(flat_counts)[:-1])
    assert all((np.diff(r) > 0).all() for r in keys_in_rows), "CSR order: head, row, keys ascending"

    # a row budget (attention_tile_bytes) smaller than the cache-sized tile: same numbers
    small = pa.PromptAccumulator(n_heads, n_rows, n_keys, threshold, 0, torch.device("cpu"))
    pa.cpu_prompt_layer(small, q, k, scale, causal, max_rows=3)
    torch.testing.assert_close(small.head_stats(), acc.head_stats(), rtol=1e-6, atol=1e-6)
    assert torch.equal(small.sparse().keys, sparse.keys) and torch.equal(small.sparse().counts, sparse.counts)

    # the tiles on worker threads (above, with more than one torch thread) or inline: identical
    inline = pa.PromptAccumulator(n_heads, n_rows, n_keys, threshold, 0, torch.device("cpu"))
    with monkeypatch.context() as m:
        m.setattr(pa, "_tile_pool", lambda workers: None)
        pa.cpu_prompt_layer(inline, q, k, scale, causal, max_rows=10**9)
    assert torch.equal(inline.partials, acc.partials)
    assert all(torch.equal(a, b) for a, b in zip(vars(inline.sparse()).values(), vars(sparse).values()))

    # with a cap: the cap largest weights of every row, keys ascending
    capped = pa.PromptAccumulator(n_heads, n_rows, n_keys, threshold, 3, torch.device("cpu"))
    pa.cpu_prompt_layer(capped, q, k, scale, causal, max_rows=10**9)
    top = capped.sparse()
    assert (top.counts == sparse.counts.clamp(max=3)).all()
    starts = np.concatenate([[0], np.cumsum(top.counts.numpy().reshape(-1))])
    for r in range(0, n_heads * n_rows, 37):  # a sample of rows (reference check, clarity over speed)
        head, query = divmod(r, n_rows)
        want = np.argsort(-np.where(dense[head, query] > threshold, dense[head, query], 0.0), kind="stable")
        want = np.sort(want[: min(3, int(counts[head, query]))])
        assert (top.keys.numpy()[starts[r]:starts[r + 1]] == want).all()


def test_cpu_prompt_path_equals_the_general_tiled_path_on_smollm2(smollm2, monkeypatch):
    """On the real model, the CPU path and the general tiled torch path (the one every other
    call shape takes) give the same trace, with the CPU path forced into many tiles."""
    from corevital_widgets.engine import attention, prompt_attention

    model, tok = smollm2
    monkeypatch.setattr(prompt_attention, "CPU_TILE_BYTES", 9 * 4 * 40)  # a row or a few per tile
    fast = corevital.analyze(model, PROMPT, tok, max_new_tokens=4)
    assert len(prompt_attention.cpu_tiles(fast.n_prompt, fast.n_prompt, 9, True, 10**9)) >= 8
    monkeypatch.setattr(attention, "cpu_prompt_supported", lambda *a, **k: False)
    general = corevital.analyze(model, PROMPT, tok, max_new_tokens=4)
    assert_same_trace(fast, general)
