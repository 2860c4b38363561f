"""compare() and explore() in Python: the numbers of a comparison, Stop keeping a partial trace,
interrupts leaving the model as it was, and the explorer's history (real SmolLM2, CPU)."""

from __future__ import annotations

import copy
import time

import numpy as np
import pytest

import corevital_widgets as corevital
from corevital_widgets.analysis.baseline import HEAD_STATS, trace_cells
from corevital_widgets.analysis.compare import compare as compare_traces
from corevital_widgets.widgets.payload import compare_payload, decode_arrays

from .test_model_state_and_inputs import _snapshot

pytestmark = pytest.mark.slow


def _chat(tok, text):
    return tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)


def test_a_scaled_middle_layer_comes_first_in_the_ranked_differences(smollm2):
    """SmolLM2 against a second model object whose layer-15 attention output is scaled x3."""
    import torch

    model, tok = smollm2
    bent = copy.deepcopy(model)
    with torch.no_grad():
        bent.model.layers[15].self_attn.o_proj.weight.mul_(3.0)
    prompt = _chat(tok, "Name three primary colours.")
    a = corevital.analyze(model, prompt, tok, max_new_tokens=10)
    b = corevital.analyze(bent, prompt, tok, max_new_tokens=10)
    c = compare_traces(a, b, ("base", "bent"))
    assert c.same_prompt and c.same_shape
    first = c.differences[0]
    assert first.layer == 15, c.summary()
    assert "scaled" not in c.scale_source and "baseline" in c.scale_source
    # the ranked table's numbers are the traces' own cells
    df = c.to_pandas()
    ca, cb = trace_cells(a), trace_cells(b)
    for _, r in df.head(10).iterrows():
        if r["stat"] in HEAD_STATS:
            assert r["a"] == pytest.approx(ca[r["stat"]][int(r["layer"]), int(r["head"])])
            assert r["b"] == pytest.approx(cb[r["stat"]][int(r["layer"]), int(r["head"])])
    assert (np.diff(df["scaled"].to_numpy()) <= 1e-12).all()  # ranked, largest first


def test_one_word_changed_marks_that_token_and_the_widget_sends_the_same_numbers(smollm2):
    model, tok = smollm2
    a = corevital.analyze(model, _chat(tok, "What is the capital of France?"), tok, max_new_tokens=6)
    b = corevital.analyze(model, _chat(tok, "What is the capital of Spain?"), tok, max_new_tokens=6)
    view = corevital.compare(a, b, ("France", "Spain"))
    c = view.comparison
    assert not c.same_prompt
    assert [a.prompt_tokens[i] for i in np.flatnonzero(c.changed_a)] == [" France"]
    assert [b.prompt_tokens[i] for i in np.flatnonzero(c.changed_b)] == [" Spain"]
    meta, arrays = decode_arrays(view.data)
    assert arrays["a_changed"].tolist() == c.changed_a.astype(int).tolist()
    np.testing.assert_allclose(arrays["diff_prompt_entropy"], c.head_difference("prompt_entropy"), rtol=1e-6)
    df = view.to_pandas()
    assert [r["text"] for r in meta["differences"]] == df["text"].tolist()
    np.testing.assert_allclose([r["delta"] for r in meta["differences"]], df["delta"].to_numpy())
    assert "France vs Spain" in view.text_face()
    same = compare_traces(a, a)
    assert same.same_prompt and same.diverged_at is None and same.differences == []


def test_different_architectures_compare_per_layer(smollm2, tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    model, tok = smollm2
    cfg = LlamaConfig(vocab_size=tok.vocab_size + 100, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    tiny = LlamaForCausalLM(cfg).eval()  # random weights, a named architecture we have no weights for
    prompt = _chat(tok, "Hello there")
    a = corevital.analyze(model, prompt, tok, max_new_tokens=4)
    b = corevital.analyze(tiny, prompt, tok, max_new_tokens=4, min_new_tokens=4)
    c = compare_traces(a, b)
    assert not c.same_shape and c.same_prompt
    assert {d.stat for d in c.differences} <= {"entropy_mean", "surprisal_mean", "margin_mean"}
    pa, pb = c.layer_profiles("prompt_entropy")
    assert pa.shape == (30,) and pb.shape == (4,)
    with pytest.raises(ValueError, match="different shapes"):
        c.head_difference("prompt_entropy")
    meta, arrays = decode_arrays(compare_payload(c))
    assert "diff_prompt_entropy" not in arrays and arrays["prof_b_prompt_entropy"].shape == (4,)
    with pytest.raises(TypeError, match="two Traces"):
        compare_traces(a, "b")


def test_explorer_runs_stops_keeps_the_partial_trace_and_leaves_the_model_as_it_was(smollm2, tmp_path):
    model, tok = smollm2
    before = _snapshot(model)
    ex = corevital.explore(model, tok)
    assert ex.controls.has_chat_template and ex.controls.chat
    first = ex.run("What is the capital of France?", max_new_tokens=6)
    assert first == 1 and ex.runs[0].n_steps == 6 and ex.controls.runs[0]["settings_text"] == "greedy, 6 tokens, chat"
    assert ex.controls.picked == [1] and ex.dashboard.trace is ex.runs[0]
    # Stop mid-run: generation ends after the current step, the partial trace is kept and says so
    ex.run("Write a long story about a dragon and a knight.", max_new_tokens=300, wait=False)
    deadline = time.monotonic() + 120
    while ex.dashboard.progress.get("step", 0) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    ex.stop()
    ex.wait(120)
    part = ex.runs[-1]
    assert 3 <= part.n_steps < 300 and part.meta["stopped"]["by"] == "request"
    assert ex.controls.runs[-1]["stopped"] and "stopped after" in ex.controls.status
    assert _snapshot(model) == before
    # picking two opens the compare view; one shows it in the dashboard
    ex.controls.picked = [1, 2]
    assert ex.compare_view.comparison is not None and ex.compare_view.layout.display is None
    assert ex.dashboard.layout.display == "none"
    ex.controls.picked = [1]
    assert ex.dashboard.trace is ex.runs[0] and ex.compare_view.layout.display == "none"
    # save and open
    path = ex.save(1, tmp_path / "one.cvtrace")
    (new,) = ex.open(path)
    assert ex.controls.runs[-1]["source"] == "loaded" and ex.runs[-1].n_steps == 6 and new == 3
    with pytest.raises(ValueError, match="no run #9"):
        ex.save(9, tmp_path / "x.cvtrace")
    with pytest.raises(ValueError, match="max_new_tokens"):
        ex.run("x", max_new_tokens=0)
    with pytest.raises(TypeError, match="set by the explorer"):
        corevital.explore(model, tok, max_new_tokens=3)


def test_a_kernel_interrupt_in_show_leaves_the_model_and_says_interrupted(smollm2, monkeypatch):
    import importlib

    from corevital_widgets.widgets import components

    show_mod = importlib.import_module("corevital_widgets.widgets.show")

    model, tok = smollm2
    before = _snapshot(model)
    shown = []
    monkeypatch.setattr(show_mod, "_in_kernel", lambda: True)
    monkeypatch.setattr(components.Dashboard, "_display_now", lambda self: shown.append(self))

    def interrupt(step, token):  # Ctrl-C in the middle of generation
        if step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        corevital.show(model, "Once upon a time", tok, max_new_tokens=8, on_step=interrupt)
    assert _snapshot(model) == before
    (dash,) = shown
    assert dash.progress["phase"] == "interrupted" and dash.progress["done"]
    assert len(dash.live_tokens) == 3  # the tokens streamed before the interrupt stay on the page
