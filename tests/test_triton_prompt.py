"""The fused Triton prompt pass (CUDA only; skipped elsewhere — run through the device tool:
``python -m pytest tests/test_triton_prompt.py``).

1. ``fused_prompt_layer`` equals a float64 recomputation from the same query/key values
   (softmax rows, entropy in bits, max weight, sink, middle-third mass, every weight above the
   threshold in CSR order), over causal / non-causal / offset queries, odd lengths, GQA, head
   sizes 64 / 80 / 128, float32 and bfloat16, a per-row cap and chunked sparse buffers.
2. ``analyze`` on a random Llama (float32) gives the same trace with the kernels as with the
   tiled torch path, and the teacher-forced eager reference agrees with it."""

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


def _llama(vocab: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=128, intermediate_size=256, num_hidden_layers=3,
                      num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=4096)
    return LlamaForCausalLM(cfg).eval().cuda()


def test_analyze_with_kernels_equals_torch_path_and_reference(monkeypatch):
    from transformers import PreTrainedTokenizerFast
    from tokenizers import Tokenizer, models, pre_tokenizers

    import corevital_widgets as corevital

    from .test_engine_correctness import check_trace
    from .test_prompt_tiles import assert_same_trace

    vocab = 500
    t = Tokenizer(models.WordLevel({f"w{i}": i for i in range(vocab)}, unk_token="w0"))
    t.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=t, unk_token="w0", eos_token="w1", pad_token="w1")
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
