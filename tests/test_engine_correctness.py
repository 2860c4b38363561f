"""Every metric group of a trace equals an independent recomputation from one plain
teacher-forced forward (eager attention, output_attentions/output_hidden_states) over the
prompt + generated tokens: on the real SmolLM2 and on small random-config GPT-2, Qwen2 (GQA),
T5 and BART models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import corevital_widgets as corevital

from . import reference as ref

ATOL = 2e-3  # float32 incremental decoding (KV cache) vs one full forward


_SCALE = 1.0  # tolerance factor of the check in progress (check_trace's ``tol``)


def close(actual, expected, atol=None, rtol=2e-3, what=""):
    atol = (ATOL if atol is None else atol) * _SCALE
    rtol = rtol * _SCALE
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), expected, atol=atol, rtol=rtol, err_msg=what)


def check_trace(trace, model, tol: float = 1.0) -> None:
    """Every group of ``trace`` against the eager teacher-forced reference; ``tol`` scales every
    tolerance (1 = float32 on the CPU; reduced-precision models state their own)."""
    global _SCALE
    _SCALE = tol
    try:
        _check_trace(trace, model, tol)
    finally:
        _SCALE = 1.0


def _check_trace(trace, model, tol: float) -> None:
    gen, prm = trace.generated_ids, trace.prompt_ids
    assert trace.n_steps >= 4, "need a few steps to compare"
    f = ref.teacher_forced(model, prm, gen)
    k = trace.meta["top_k"]

    exp = ref.timeline(f, gen, k)
    for name, want in exp.items():
        close(getattr(trace.timeline, name), want, what=f"timeline.{name}")
    probs = ref.softmax(f.logits[f.step_pos])
    top = np.argsort(-probs, axis=-1)[:, :k]
    assert (trace.timeline.top_k_ids[:, 0] == top[:, 0]).all()
    close(trace.timeline.top_k_probs, np.take_along_axis(probs, top, -1), atol=1e-3, what="top_k_probs")

    for name, want in ref.layers(f).items():
        close(getattr(trace.layers, name), want, rtol=1e-3, what=f"layers.{name}")
    assert not trace.layers.has_nan.any() and not trace.layers.has_inf.any()

    hd = ref.heads(f)
    close(trace.heads.entropy, hd["entropy"], atol=1e-2, what="heads.entropy (float16)")
    close(trace.heads.concentration, hd["concentration"], atol=1e-3, what="heads.concentration (float16)")
    th = trace.thresholds
    close(trace.attention.entropy_mean, hd["entropy"].mean(-1), what="attention.entropy_mean")
    close(trace.attention.entropy_min, hd["entropy"].min(-1), what="attention.entropy_min")
    close(trace.attention.entropy_max, hd["entropy"].max(-1), what="attention.entropy_max")
    close(trace.attention.concentration_max, hd["concentration"].max(-1), what="attention.concentration_max")
    close(trace.attention.concentration_min, hd["concentration"].min(-1), what="attention.concentration_min")
    # counts: exact away from the thresholds' boundaries
    safe = np.abs(hd["entropy"] - th.collapsed_entropy_bits) > 1e-3 * tol
    assert ((hd["entropy"] < th.collapsed_entropy_bits) == (trace.heads.entropy.astype(np.float64) < th.collapsed_entropy_bits))[safe].all()
    assert (trace.attention.collapsed_head_count == (hd["entropy"] < th.collapsed_entropy_bits).sum(-1)).mean() > 0.99
    assert (trace.attention.focused_head_count == (hd["concentration"] > th.focused_concentration).sum(-1)).mean() > 0.99

    pr = ref.prompt(f, prm, causal=not model.config.is_encoder_decoder)
    for name in ("head_entropy", "head_concentration", "sink", "basin", "layer_transformation"):
        close(getattr(trace.prompt, name), pr[name], what=f"prompt.{name}")
    if "surprisal" in pr:
        close(trace.prompt.surprisal, pr["surprisal"], what="prompt.surprisal")
    else:
        assert np.isnan(trace.prompt.surprisal).all() and trace.prompt.surprisal.shape == (len(prm) - 1,)

    # sparse profile: every kept weight is > threshold and matches the dense attention in float16
    thr = trace.sparse.threshold
    n_layers, n_heads = f.prompt_attn.shape[:2]
    for layer in {0, n_layers // 2, n_layers - 1}:
        for head in {0, n_heads - 1}:
            dense = f.prompt_attn[layer, head]
            want = np.where(dense > thr, dense, 0.0)
            got = trace.sparse.dense(layer, head)
            boundary = np.abs(dense - thr) < 1e-4 * tol
            assert ((got > 0) == (want > 0))[~boundary].all(), f"kept set differs at layer {layer} head {head}"
            close(got[~boundary], want[~boundary], atol=2e-3, rtol=1e-3, what="sparse weights")
            keys, weights = trace.attends_to(len(prm) - 1, layer, head)
            row = want[len(prm) - 1]
            assert set(keys.tolist()) ^ set(np.flatnonzero(row).tolist()) <= set(np.flatnonzero(boundary[-1]).tolist())

    close(trace.timeline.repetition_similarity[3:], ref.repetition(f)[3:], atol=1e-4, what="repetition_similarity")


def test_smollm2_matches_teacher_forced_forward(smollm2, smollm2_trace):
    model, _ = smollm2
    check_trace(smollm2_trace, model)
    assert smollm2_trace.meta["attention_calls"] == smollm2_trace.n_steps * smollm2_trace.n_layers


def test_smollm2_sampled_with_seed_is_reproducible_and_correct(smollm2):
    model, tok = smollm2
    state = torch.random.get_rng_state()
    a = corevital.analyze(model, "Once upon a time", tok, max_new_tokens=12, do_sample=True, seed=7, temperature=0.9)
    b = corevital.analyze(model, "Once upon a time", tok, max_new_tokens=12, do_sample=True, seed=7, temperature=0.9)
    assert torch.equal(state, torch.random.get_rng_state()), "analyze must not move the global RNG"
    assert (a.generated_ids == b.generated_ids).all()
    assert a.meta["generation"]["temperature"] == 0.9
    check_trace(a, model)  # metrics are on the raw distribution, not the temperature-warped one


def _tokenizer(smollm2):
    return smollm2[1]


def _gpt2(vocab):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_positions=256, n_embd=64, n_layer=3, n_head=4)).eval()


def _qwen2_gqa(vocab):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    return Qwen2ForCausalLM(cfg).eval()


def _t5(vocab):
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    cfg = T5Config(vocab_size=vocab, d_model=64, d_kv=16, d_ff=128, num_layers=3, num_decoder_layers=3, num_heads=4,
                   decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    return T5ForConditionalGeneration(cfg).eval()


def _bart(vocab):
    from transformers import BartConfig, BartForConditionalGeneration

    torch.manual_seed(0)
    cfg = BartConfig(vocab_size=vocab, d_model=64, encoder_layers=3, decoder_layers=3, encoder_attention_heads=4,
                     decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, max_position_embeddings=256,
                     decoder_start_token_id=2, pad_token_id=1, bos_token_id=0, eos_token_id=2, forced_eos_token_id=None)
    return BartForConditionalGeneration(cfg).eval()


@pytest.mark.parametrize(
    "build", [_gpt2, _qwen2_gqa, _t5, _bart],
    ids=["gpt2-random-config", "qwen2-gqa-random-config", "t5-random-config", "bart-random-config"],
)
def test_random_config_models_match_teacher_forced_forward(smollm2, build):
    tok = _tokenizer(smollm2)
    model = build(len(tok))
    trace = corevital.analyze(model, "The quick brown fox jumps over the lazy dog near the river bank.", tok,
                              max_new_tokens=8, min_new_tokens=8)
    assert trace.n_steps == 8
    assert trace.meta["is_encoder_decoder"] == model.config.is_encoder_decoder
    check_trace(trace, model)
