"""The fused decode-step kernel (CUDA only; skipped elsewhere — run through the device tool:
``python -m pytest tests/test_triton_step.py``).

1. ``fused_step_stats`` equals a float64 recomputation (softmax entropy in bits, the largest
   weight, the population variance of the scaled scores over the valid keys) for layers whose
   keys live in separate allocations, GQA / MHA / MQA, head sizes 64 / 80 / 128 / 256, odd key
   counts, a key mask per sequence (a sequence with none valid), one sequence without a batch
   dimension, float32 / float16 / bfloat16; NaN scores give NaN entropy as the torch path does.
2. ``analyze`` and ``analyze_batch`` on a random Llama run every decode step through it (not the
   prefill, whose row comes from the prompt pass) and give the traces of the torch path.
3. No batch width or key count makes Triton compile the step or prompt kernels again."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from corevital_widgets.engine import metrics, triton_prompt, triton_step

pytestmark = pytest.mark.skipif(not triton_prompt.triton_available(), reason="needs CUDA and Triton")


def reference(queries, keys, scales, valid) -> torch.Tensor:
    """float64 [B, 3, L, H]: entropy (bits), concentration, score variance."""
    out = []
    for q, k, scale in zip(queries, keys, scales):
        q, k = (q[None], k[None]) if q.dim() == 2 else (q, k)
        k = k.double().repeat_interleave(q.shape[1] // k.shape[1], dim=1)
        s = torch.einsum("bhd,bhsd->bhs", q.double(), k) * scale
        ok = torch.ones_like(s, dtype=torch.bool) if valid is None else valid[:, None, :].expand_as(s)
        s = s.masked_fill(~ok, float("-inf"))
        w = torch.softmax(s, -1)
        ent = -torch.special.xlogy(w, w).sum(-1) / math.log(2)
        n = ok.sum(-1).clamp_min(1)
        x = torch.where(ok, s, 0.0)
        var = (torch.where(ok, x - (x.sum(-1) / n)[..., None], 0.0) ** 2).sum(-1) / n
        out.append(torch.stack([ent, w.amax(-1), var], 1))  # [B, 3, H]
    return torch.stack(out, 2)


#: the kernel multiplies the model-dtype values exactly and sums in float32
TOL = {torch.float32: 2e-4, torch.float16: 1e-3, torch.bfloat16: 1e-3}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("batch, heads, kv_heads, n_keys, dim, masked", [
    (4, 32, 8, 799, 128, True), (3, 8, 8, 64, 64, False), (2, 12, 1, 257, 80, True), (1, 4, 2, 1000, 256, False),
    (0, 16, 4, 333, 64, False),  # one sequence: query [H, d], keys [Hkv, S, d]
])
def test_fused_step_stats_equal_float64(dtype, batch, heads, kv_heads, n_keys, dim, masked):
    g = torch.Generator(device="cuda").manual_seed(batch * 1000 + n_keys)
    shape_q = (heads, dim) if batch == 0 else (batch, heads, dim)
    shape_k = (kv_heads, n_keys, dim) if batch == 0 else (batch, kv_heads, n_keys, dim)
    n_layers = 5
    queries = [torch.randn(shape_q, device="cuda", generator=g).to(dtype) for _ in range(n_layers)]
    keys = [torch.randn(shape_k, device="cuda", generator=g).to(dtype) for _ in range(n_layers)]  # separate allocations
    scales = [dim ** -0.5 * (1 + 0.5 * i) for i in range(n_layers)]
    valid = None
    if masked:
        valid = torch.rand(batch, n_keys, device="cuda", generator=g) > 0.4
        valid[0, :7] = False  # left padding
        if batch > 2:
            valid[2] = False  # a sequence with no valid key: NaN entropy / concentration, variance 0
    assert triton_step.step_stats_supported(queries, keys, valid)
    got = triton_step.fused_step_stats(queries, keys, scales, valid).double()
    want = reference(queries, keys, scales, valid)
    assert got.shape == want.shape
    tol = TOL[dtype]
    torch.testing.assert_close(got, want, atol=tol, rtol=tol, equal_nan=True)
    if masked and batch > 2:
        assert torch.isnan(got[2, :2]).all() and (got[2, 2] == 0).all()


def test_nan_scores_make_entropy_nan_as_the_torch_path_does():
    queries = [torch.randn(2, 8, 64, device="cuda") for _ in range(2)]
    keys = [torch.randn(2, 2, 50, 64, device="cuda") for _ in range(2)]
    keys[1][0, 1, 7, 3] = float("nan")  # sequence 0, key-value head 1 (query heads 4-7) of layer 1
    got = triton_step.fused_step_stats(queries, keys, [0.125, 0.125], None)
    rows = torch.stack([metrics.grouped_matmul(q[:, :, None], k.transpose(-1, -2))[:, :, 0] for q, k in zip(queries, keys)], 1)
    torch.testing.assert_close(got, metrics.step_attention_stats(rows * 0.125), atol=1e-4, rtol=1e-4, equal_nan=True)
    assert torch.isnan(got[0, 0, 1, 4:]).all() and torch.isfinite(got[0, 0, 1, :4]).all() and torch.isfinite(got[1]).all()


def test_unsupported_steps_take_the_score_rows():
    q = [torch.randn(2, 8, 64, device="cuda") for _ in range(2)]
    k = [torch.randn(2, 2, 50, 64, device="cuda") for _ in range(2)]
    assert triton_step.step_stats_supported(q, k, None)
    assert not triton_step.step_stats_supported([x.cpu() for x in q], [x.cpu() for x in k], None)
    assert not triton_step.step_stats_supported(q, [k[0], torch.randn(2, 2, 51, 64, device="cuda")], None)  # two lengths
    assert not triton_step.step_stats_supported(q, [x.transpose(-1, -2).contiguous().transpose(-1, -2) for x in k], None)
    assert not triton_step.step_stats_supported([torch.randn(2, 6, 64, device="cuda")] * 2, [torch.randn(2, 4, 50, 64, device="cuda")] * 2, None)
    assert not triton_step.step_stats_supported(q, k, torch.ones(3, 50, dtype=torch.bool, device="cuda"))  # 3 masks, 2 sequences


def test_analyze_and_analyze_batch_score_every_decode_step_with_the_kernel(monkeypatch):
    import corevital_widgets as corevital
    from corevital_widgets.engine import batched

    from .test_batched import assert_same_trace as assert_same_as_alone
    from .test_prompt_tiles import assert_same_trace
    from .test_triton_prompt import _llama, _word_tokenizer

    vocab = 500
    tok = _word_tokenizer(vocab)
    rng = np.random.default_rng(2)
    prompts = [" ".join(f"w{i}" for i in rng.integers(2, vocab, n)) for n in (300, 37, 2)]
    model = _llama(vocab, initializer_range=0.4)
    calls = []
    real = triton_step.fused_step_stats

    def counting(queries, keys, scales, valid):
        calls.append((len(queries), queries[0].dim()))
        return real(queries, keys, scales, valid)

    monkeypatch.setattr(triton_step, "fused_step_stats", counting)
    alone = [corevital.analyze(model, p, tok, max_new_tokens=6, min_new_tokens=6) for p in prompts]
    assert calls == [(3, 2)] * 5 * len(prompts), "each of the 5 decode steps, all 3 layers at once"
    calls.clear()
    traces = batched.analyze_batch(model, prompts, tok, max_new_tokens=6, min_new_tokens=6)
    assert calls == [(3, 3)] * 5, "each decode step of the batch in one call"
    for prompt, a, b in zip(prompts, alone, traces):
        assert_same_as_alone(a, b, prompt)
    monkeypatch.setenv(triton_prompt.ENV_SWITCH, "0")
    for prompt, a in zip(prompts, alone):
        assert_same_trace(a, corevital.analyze(model, prompt, tok, max_new_tokens=6, min_new_tokens=6))


def _compiled(kernel) -> int:
    """How many variants of ``kernel`` Triton has compiled on the current device."""
    caches = getattr(kernel, "device_caches", None)
    if caches is None:
        pytest.skip("this Triton release keeps its kernel cache elsewhere")
    return len(caches[torch.cuda.current_device()][0])


def test_kernels_compile_once_whatever_the_lengths():
    """A dataset's batches have every width and a decode step every key count: once a kernel is
    compiled for a dtype and head size, no length makes Triton compile it again (it would, for
    every new "is 1" / "divisible by 16" pattern of its integer arguments, in the middle of a run)."""
    g = torch.Generator(device="cuda").manual_seed(5)
    dtype = torch.float16

    def step(batch, n_keys):
        q = [torch.randn(batch, 8, 64, device="cuda", generator=g).to(dtype) for _ in range(2)]
        k = [torch.randn(batch, 2, n_keys, 64, device="cuda", generator=g).to(dtype) for _ in range(2)]
        valid = torch.ones(batch, n_keys, dtype=torch.bool, device="cuda")
        triton_step.fused_step_stats(q, k, [0.125, 0.125], valid)

    def prompt(width):
        q = torch.randn(2, 8, width, 64, device="cuda", generator=g).to(dtype)
        key = torch.randn(2, 2, width, 64, device="cuda", generator=g).to(dtype)
        spans = [(0, 0, width, width), (width // 3, width // 3, width - width // 3, width - width // 3)]
        triton_prompt.fused_prompt_batch(q, key, spans, None, True, 0.01, 0, 2**20)

    step(3, 63)
    prompt(63)
    kernels = (triton_step._step_stats, triton_prompt._row_stats, triton_prompt._sparse_rows)
    before = [_compiled(k) for k in kernels]
    for batch, n_keys in [(3, 64), (3, 65), (2, 80), (5, 97), (1, 112), (4, 1)]:
        step(batch, n_keys)
    for width in (64, 65, 80, 97, 112):
        prompt(width)
    assert [_compiled(k) for k in kernels] == before
