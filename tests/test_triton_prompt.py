"""The fused Triton prompt pass (CUDA only; skipped elsewhere — run through the device tool:
``python -m pytest tests/test_triton_prompt.py``).

1. ``fused_prompt_layer`` equals a float64 recomputation from the same query/key values
   (softmax rows, entropy in bits, max weight, sink, middle-third mass, every weight above the
   threshold in CSR order), over causal / non-causal / offset queries, odd lengths, GQA, head
   sizes 64 / 80 / 128, float32 and bfloat16, a per-row cap and chunked sparse buffers.
2. ``fused_prompt_batch`` over a left-padded batch (one launch per kernel) equals
   ``fused_prompt_layer`` on each sequence's span alone: padding is neither a key nor a row.
3. ``analyze`` on a random Llama (float32) gives the same trace with the kernels as with the
   tiled torch path, and the teacher-forced eager reference agrees with it; ``analyze_batch``
   runs each layer's prompt pass as one batched call and equals each prompt alone."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from corevital_widgets.engine import triton_prompt

pytestmark = pytest.mark.skipif(not triton_prompt.triton_available(), reason="needs CUDA and Triton")


def reference(q: torch.Tensor, k: torch.Tensor, scale: float, causal: bool, threshold: float, cap: int):
    """float64: per-row stats [5, H, P] (entropy bits, max, sink, middle mass, log2-sum-exp2) and
    the CSR (counts [H, P], weights, keys) with each row's distance to the threshold."""
    q64, k64 = q[0].double(), k[0].double()
    groups = q64.shape[0] // k64.shape[0]
    k64 = k64.repeat_interleave(groups, dim=0)
    n_rows, n_keys = q64.shape[1], k64.shape[1]
    s = q64 @ k64.transpose(-1, -2) * scale
    if causal:
        pos = torch.arange(n_rows)[:, None] + (n_keys - n_rows)
        s = s.masked_fill(torch.arange(n_keys)[None, :] > pos, float("-inf"))
    w = torch.softmax(s, -1)
    ent = -torch.special.xlogy(w, w).sum(-1) / math.log(2)
    mid = w[..., n_keys // 3 : (2 * n_keys) // 3].sum(-1)
    stats = torch.stack([ent, w.amax(-1), w[..., 0], mid, torch.logsumexp(s, -1) / math.log(2)])
    keep = w > threshold
    if cap:
        kth = torch.topk(w, min(cap, n_keys), -1).values[..., -1:]
        keep &= w >= kth
    # how close the nearest weight is to the selection boundary, per row (ties are ambiguous)
    margin = (w - threshold).abs().amin(-1)
    return stats, keep.sum(-1), w[keep], torch.nonzero(keep)[:, 2], margin


CASES = [
    # heads, kv heads, rows, keys, head dim, causal
    (4, 4, 333, 333, 64, True),
    (8, 2, 200, 517, 128, True),  # queries are the last 200 of 517 positions; GQA
    (6, 3, 257, 257, 80, False),  # non-causal (encoder), head size not a power of two
    (2, 1, 1, 1, 64, True),
    (4, 2, 1500, 1500, 128, True),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("heads, kv_heads, rows, keys, dim, causal", CASES)
@pytest.mark.parametrize("cap, buffer_bytes", [(0, 2**30), (0, 1), (5, 2**30)], ids=["uncapped", "chunked", "cap5"])
def test_fused_layer_equals_float64(dtype, heads, kv_heads, rows, keys, dim, causal, cap, buffer_bytes):
    g = torch.Generator(device="cuda").manual_seed(rows * 7 + dim)
    # spread logits (scaled up) so rows range from peaked to flat
    q = (torch.randn(1, heads, rows, dim, device="cuda", generator=g) * 2.5).to(dtype)
    k = torch.randn(1, kv_heads, keys, dim, device="cuda", generator=g).to(dtype)
    scale = dim ** -0.5
    threshold = 0.01
    stats, counts, key_idx, weights = triton_prompt.fused_prompt_layer(q, k, scale, causal, threshold, cap, buffer_bytes)
    want, want_counts, want_w, want_keys, margin = reference(q.cpu(), k.cpu(), scale, causal, threshold, cap)

    np.testing.assert_allclose(stats[:4].cpu().double().numpy(), want[:4].numpy(), atol=2e-5, rtol=2e-5)
    np.testing.assert_allclose(stats[4].cpu().double().numpy(), want[4].numpy(), atol=1e-4)

    got_counts = counts.cpu().long()
    clear = margin > 1e-5  # rows with no weight within float error of the threshold
    assert clear.float().mean() > 0.9
    assert torch.equal(got_counts[clear], want_counts[clear]), "same number of entries per row"
    assert int(got_counts.sum()) == key_idx.numel() == weights.numel()
    if bool(clear.all()):
        assert torch.equal(key_idx.cpu().long(), want_keys), "same keys, (head, row, key) order"
        np.testing.assert_allclose(weights.cpu().double().numpy(), want_w.numpy(), atol=2e-6, rtol=2e-5)
    assert (weights > threshold).all()
    if cap:
        assert int(got_counts.max()) <= cap


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "full"])
@pytest.mark.parametrize("cap, buffer_bytes", [(0, 2**30), (0, 1), (5, 2**30)], ids=["uncapped", "chunked", "cap5"])
def test_batch_kernels_equal_each_sequence_alone(dtype, causal, cap, buffer_bytes):
    g = torch.Generator(device="cuda").manual_seed(3)
    lengths = [700, 1, 333, 129, 700]  # the widest unpadded; one single-token prompt
    width, heads, kv_heads, dim = max(lengths), 8, 2, 128
    # the layout transformers hands the attention function: [B, tokens, H, d] viewed as [B, H, tokens, d]
    q = (torch.randn(len(lengths), width, heads, dim, device="cuda", generator=g) * 2.5).to(dtype).transpose(1, 2)
    k = torch.randn(len(lengths), width, kv_heads, dim, device="cuda", generator=g).to(dtype).transpose(1, 2)
    spans = [(width - n, width - n, n, n) for n in lengths]
    got = triton_prompt.fused_prompt_batch(q, k, spans, dim ** -0.5, causal, 0.01, cap, buffer_bytes)
    assert got.rows == lengths and sum(got.entries) == got.keys.numel() == got.weights.numel()
    assert int(got.counts.sum()) == got.keys.numel(), "rows past a sequence's hold no entries"
    for b, n in enumerate(lengths):
        alone = triton_prompt.fused_prompt_layer(q[b : b + 1, :, width - n :].contiguous(),
                                                 k[b : b + 1, :, width - n :].contiguous(), dim ** -0.5, causal, 0.01,
                                                 cap, buffer_bytes)
        stats, counts, keys, weights = got.sequence(b)
        assert stats.shape == (5, heads, n) and counts.shape == (heads, n)
        torch.testing.assert_close(stats, alone[0], atol=1e-6, rtol=1e-6)
        assert torch.equal(counts, alone[1]), f"sequence {b}: entries per row"
        assert torch.equal(keys, alone[2]), f"sequence {b}: keys count from the sequence's first real token"
        torch.testing.assert_close(weights, alone[3], atol=1e-7, rtol=1e-6)


def test_unsupported_calls_take_the_torch_path():
    q = torch.zeros(1, 4, 8, 64, device="cuda")
    k = torch.zeros(1, 2, 8, 64, device="cuda")
    ok = triton_prompt.fused_prompt_supported
    assert ok(q, k, None, {}, 0.01, False)
    assert not ok(q, k, torch.ones(1, 1, 8, 8, dtype=torch.bool, device="cuda"), {}, 0.01, False), "explicit mask"
    assert not ok(q, k, None, {"position_bias": torch.zeros(1)}, 0.01, False), "T5 bias"
    assert not ok(q, k, None, {"softcap": 50.0}, 0.01, False), "soft-capping"
    assert not ok(q, k, None, {}, 0.0, False), "threshold 0: unbounded rows"
    assert not ok(q, k, None, {}, 0.01, True), "training (dropout)"
    assert not ok(q.cpu(), k.cpu(), None, {}, 0.01, False), "CPU tensors"


def _llama(vocab: int, initializer_range: float = 0.02):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=128, intermediate_size=256, num_hidden_layers=3,
                      num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=4096,
                      initializer_range=initializer_range)
    return LlamaForCausalLM(cfg).eval().cuda()


def _word_tokenizer(vocab: int):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    t = Tokenizer(models.WordLevel({f"w{i}": i for i in range(vocab)}, unk_token="w0"))
    t.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=t, unk_token="w0", eos_token="w1", pad_token="w1",
                                   padding_side="left")


def test_analyze_with_kernels_equals_torch_path_and_reference(monkeypatch):
    import corevital_widgets as corevital

    from .test_engine_correctness import check_trace
    from .test_prompt_tiles import assert_same_trace

    vocab = 500
    tok = _word_tokenizer(vocab)
    prompt = " ".join(f"w{i}" for i in np.random.default_rng(0).integers(2, vocab, 700))
    model = _llama(vocab)
    calls = []
    real = triton_prompt.fused_prompt_layer

    def counting(*a, **kw):
        calls.append(a[0].shape)
        return real(*a, **kw)

    monkeypatch.setattr("corevital_widgets.engine.attention.fused_prompt_layer", counting)
    fused = corevital.analyze(model, prompt, tok, max_new_tokens=6, min_new_tokens=6)
    assert len(calls) == 3, "every layer's prompt pass went through the kernels"
    monkeypatch.setenv(triton_prompt.ENV_SWITCH, "0")
    tiled = corevital.analyze(model, prompt, tok, max_new_tokens=6, min_new_tokens=6)
    assert len(calls) == 3, "the switch turns the kernels off"
    assert_same_trace(fused, tiled)
    check_trace(fused, model.cpu())  # the eager reference runs on the CPU


def test_analyze_batch_runs_one_batched_kernel_call_per_layer_and_equals_alone(monkeypatch):
    from corevital_widgets.engine import batched

    from .test_batched import assert_same_trace as assert_same_as_alone

    import corevital_widgets as corevital

    vocab = 500
    tok = _word_tokenizer(vocab)
    rng = np.random.default_rng(1)
    prompts = [" ".join(f"w{i}" for i in rng.integers(2, vocab, n)) for n in (640, 37, 300, 2)]
    model = _llama(vocab, initializer_range=0.4)  # clear-cut greedy choices: no near-ties for rounding to flip
    calls = []
    real = triton_prompt.fused_prompt_batch

    def counting(query, key, spans, *a, **kw):
        calls.append(len(spans))
        return real(query, key, spans, *a, **kw)

    monkeypatch.setattr(batched, "fused_prompt_batch", counting)
    traces = batched.analyze_batch(model, prompts, tok, max_new_tokens=6, min_new_tokens=6)
    assert calls == [len(prompts)] * 3, "one call per layer, for the whole batch"
    for prompt, trace in zip(prompts, traces):
        assert_same_as_alone(corevital.analyze(model, prompt, tok, max_new_tokens=6, min_new_tokens=6), trace, prompt)
