"""Logit lens: lens_entropy / lens_top1 equal an independent recomputation (final norm +
lm_head over output_hidden_states of a teacher-forced forward) on the real SmolLM2; the last
layer's lens is the model's own output distribution; off by default; saved and loaded."""

from __future__ import annotations

import numpy as np
import torch

import corevital_widgets as corevital

from . import reference as ref


def test_lens_matches_norm_plus_unembedding_on_smollm2(smollm2, chat_prompt, tmp_path):
    model, tok = smollm2
    trace = corevital.analyze(model, chat_prompt, tok, max_new_tokens=8, logit_lens=True)
    t_n, l_n = trace.n_steps, trace.n_layers
    assert trace.layers.lens_entropy.shape == (t_n, l_n) and trace.layers.lens_top1.shape == (t_n, l_n)

    f = ref.teacher_forced(model, trace.prompt_ids, trace.generated_ids)
    with torch.no_grad():
        h = torch.tensor(f.hidden[1:, f.step_pos], dtype=torch.float32)  # [L, T, D]
        normed = torch.cat([model.model.norm(h[:-1]), h[-1:]])  # the last one is already final-normed
        logits = model.lm_head(normed).double().numpy()  # [L, T, V]
    p = ref.softmax(logits)
    want_entropy = ref.entropy_bits(p).T  # [T, L]
    np.testing.assert_allclose(trace.layers.lens_entropy, want_entropy, atol=2e-3, rtol=1e-3)
    agree = trace.layers.lens_top1 == p.argmax(-1).T
    assert agree.mean() > 0.99, "top-1 agrees except at near-ties"

    np.testing.assert_allclose(trace.layers.lens_entropy[:, -1], trace.timeline.entropy, atol=1e-4)
    assert (trace.layers.lens_top1[:, -1] == trace.timeline.top_k_ids[:, 0]).all()

    trace.save(tmp_path / "lens.cvtrace")
    assert corevital.load_trace(tmp_path / "lens.cvtrace") == trace


def test_lens_is_off_by_default(smollm2_trace):
    assert smollm2_trace.layers.lens_entropy.size == 0
    assert smollm2_trace.meta["generation"]["logit_lens"] is False
    assert "hidden_lens_entropy" not in smollm2_trace.to_pandas("layers")
