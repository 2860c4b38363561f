"""A model dispatched with accelerate (``dispatch_model`` with a per-layer device_map, all on
``cpu``, which still installs accelerate's hooks and alignment paths) gives the same trace as
the plain model, and analyze leaves accelerate's hooks in place."""

from __future__ import annotations

import copy

import numpy as np
import torch

import corevital_widgets as corevital
from corevital_widgets.engine.model_state import hook_counts

from .test_prompt_tiles import PROMPT, assert_same_trace


def _llama(vocab):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    return LlamaForCausalLM(cfg).eval()


def test_accelerate_dispatched_model_gives_the_same_trace(smollm2):
    from accelerate import dispatch_model

    tok = smollm2[1]
    plain = _llama(len(tok))
    dispatched = copy.deepcopy(plain)
    device_map = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.norm": "cpu", "lm_head": "cpu",
                  **{f"model.layers.{i}": "cpu" for i in range(4)}}
    dispatched = dispatch_model(dispatched, device_map=device_map, force_hooks=True)
    assert hasattr(dispatched.model.layers[2], "_hf_hook"), "accelerate's per-layer hooks are installed"
    hooks = hook_counts(dispatched)

    a = corevital.analyze(plain, PROMPT, tok, max_new_tokens=6, min_new_tokens=6)
    b = corevital.analyze(dispatched, PROMPT, tok, max_new_tokens=6, min_new_tokens=6)
    assert_same_trace(a, b)
    assert a.sparse == b.sparse
    assert np.array_equal(a.heads.entropy, b.heads.entropy)
    assert hook_counts(dispatched) == hooks, "accelerate's hooks survive analyze"
    assert hasattr(dispatched.model.layers[2], "_hf_hook")
