"""Widgets on a hybrid stack (random-weight tiny LFM2: convolution blocks between attention
layers): the layers without softmax attention are NaN in the trace, listed in the payload meta,
and answered with "no attention" (never zeros, never an error) by the edges query and the
dashboard. The browser side of the same is in js/test/hybrid.test.ts."""

from __future__ import annotations

import numpy as np
import pytest

import corevital_widgets as corevital
from corevital_widgets.widgets.payload import decode_arrays, edges_payload, trace_payload

from .tiny_tokenizer import VOCAB_SIZE, byte_tokenizer

LAYER_TYPES = ["conv", "full_attention", "conv", "full_attention"]
ATTENTION = [1, 3]
NO_ATTENTION = [0, 2]


@pytest.fixture(scope="module")
def hybrid_trace():
    """One 6-step trace of a random-config 4-layer LFM2 (hidden 64, 4 heads) on CPU."""
    import torch
    from transformers import Lfm2Config, Lfm2ForCausalLM

    torch.manual_seed(0)
    cfg = Lfm2Config(vocab_size=VOCAB_SIZE, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                     num_attention_heads=4, num_key_value_heads=2, layer_types=LAYER_TYPES,
                     max_position_embeddings=128, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    model = Lfm2ForCausalLM(cfg).eval()
    return corevital.analyze(model, "some prompt text here", byte_tokenizer(), max_new_tokens=6)


def test_random_config_hybrid_trace_has_nan_not_zero_for_layers_without_attention(hybrid_trace):
    tr = hybrid_trace
    assert (tr.n_layers, tr.n_heads) == (4, 4)
    assert tr.attention_layers == ATTENTION and tr.prompt_attention_layers == ATTENTION
    assert np.isnan(tr.heads.entropy[:, NO_ATTENTION, :].astype(np.float32)).all()
    assert np.isnan(tr.heads.concentration[:, NO_ATTENTION, :].astype(np.float32)).all()
    assert np.isfinite(tr.heads.entropy[:, ATTENTION, :].astype(np.float32)).all()
    assert np.isnan(tr.attention.entropy_mean[:, NO_ATTENTION]).all()
    assert np.isfinite(tr.attention.entropy_mean[:, ATTENTION]).all()
    for name in ("head_entropy", "head_concentration", "sink", "basin"):
        a = getattr(tr.prompt, name)
        assert np.isnan(a[NO_ATTENTION]).all(), name
        assert np.isfinite(a[ATTENTION]).all(), name


def test_random_config_hybrid_payload_lists_attention_layers_and_edges_say_no_attention(hybrid_trace):
    tr = hybrid_trace
    meta, arrays = decode_arrays(trace_payload(tr, "dashboard"))
    assert meta["attention_layers"] == ATTENTION and meta["prompt_attention_layers"] == ATTENTION
    assert np.isnan(arrays["prompt_head_entropy"][NO_ATTENTION]).all()

    token = tr.n_prompt - 1
    emeta, e = decode_arrays(edges_payload(tr, token, layer=NO_ATTENTION[0], head=0))
    assert emeta == {"token": token, "layer": NO_ATTENTION[0], "head": 0, "incoming": True, "no_attention": True}
    assert all(e[k].size == 0 for k in ("out_keys", "out_weights", "in_queries", "in_weights"))
    with pytest.raises(ValueError, match="no softmax attention"):
        tr.attends_to(token, layer=NO_ATTENTION[0])  # the raw query still refuses; the payload answers

    emeta, e = decode_arrays(edges_payload(tr, token, layer=ATTENTION[0], head=0))
    assert "no_attention" not in emeta and e["out_keys"].size > 0
    _, e_all = decode_arrays(edges_payload(tr, token, layer=None, head=None))
    keys, w = tr.attends_to(token)  # the mean over the attention layers only
    np.testing.assert_array_equal(e_all["out_keys"], keys)
    np.testing.assert_allclose(e_all["out_weights"], w, rtol=1e-6)


def test_random_config_hybrid_dashboard_selects_a_layer_without_attention(hybrid_trace):
    tr = hybrid_trace
    dash = corevital.show(tr)
    sel = dash.select(token=2, layer=NO_ATTENTION[1], head=None)
    assert sel["layer"] == NO_ATTENTION[1]
    emeta, e = decode_arrays(dash.edges)
    assert emeta["no_attention"] is True and emeta["layer"] == NO_ATTENTION[1] and e["out_keys"].size == 0
    dash.select(head=1)
    assert decode_arrays(dash.edges)[0]["no_attention"] is True
    dash.select(layer=ATTENTION[1])
    emeta, e = decode_arrays(dash.edges)
    assert "no_attention" not in emeta and emeta["layer"] == ATTENTION[1]
    dash.options = {**dash.options, "incoming": True}  # re-query with incoming edges on a no-attention layer
    dash.select(layer=NO_ATTENTION[0])
    assert decode_arrays(dash.edges)[0] == {"token": 2, "layer": NO_ATTENTION[0], "head": 1, "incoming": True,
                                            "no_attention": True}
