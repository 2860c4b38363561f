"""Shared fixtures: the real SmolLM2 (loaded once per session) and small random-config models."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def smollm2():
    """(model, tokenizer) of the real pretrained SmolLM2-135M-Instruct, float32 on CPU."""
    import corevital_widgets as corevital

    return corevital.load_default_model()


@pytest.fixture(scope="session")
def chat_prompt(smollm2):
    """A chat-templated question for SmolLM2."""
    _, tok = smollm2
    return tok.apply_chat_template(
        [{"role": "user", "content": "Why is the sky blue? Answer in two sentences."}], tokenize=False, add_generation_prompt=True
    )


@pytest.fixture(scope="session")
def smollm2_trace(smollm2, chat_prompt):
    """One greedy trace of 24 steps, shared by the read-only tests."""
    import corevital_widgets as corevital

    model, tok = smollm2
    return corevital.analyze(model, chat_prompt, tok, max_new_tokens=24)


@pytest.fixture(scope="session")
def smollm2_traceset(smollm2, tmp_path_factory):
    """(TraceSet, suite items, correct): 4 suite questions, 8 greedy steps each, with the logit
    lens, saved to a temporary folder (shared by the dataset-view and browser tests)."""
    import corevital_widgets as corevital
    from corevital_widgets.suite import build_suite, grade, suite_prompts

    model, tok = smollm2
    items = build_suite()[:4]
    ts = corevital.analyze_many(model, suite_prompts(items, tok), tok, out_dir=tmp_path_factory.mktemp("traceset"),
                                max_new_tokens=8, logit_lens=True, progress=False)
    correct = [grade(item, text) for item, text in zip(items, ts.to_pandas()["text"])]
    return ts, items, correct


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory):
    """A local Hugging Face model folder (what `corevital analyze/batch MODEL_DIR` and the Ray
    workers load): a random-weight Llama (4 layers, hidden 64, GQA 4/2 heads; initializer range 0.4
    so greedy choices are clear-cut, never near-ties that thread counts could flip) saved with
    save_pretrained, beside the offline byte tokenizer of tests/tiny_tokenizer.py with a small
    chat template."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from .tiny_tokenizer import VOCAB_SIZE, byte_tokenizer

    tok = byte_tokenizer.__wrapped__()  # a fresh one (the cached one stays without a chat template)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=VOCAB_SIZE, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      bos_token_id=1, eos_token_id=2, pad_token_id=0, initializer_range=0.4)
    folder = tmp_path_factory.mktemp("tiny_llama_dir")
    LlamaForCausalLM(cfg).eval().save_pretrained(folder)
    tok.chat_template = ("{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                         "{% if add_generation_prompt %}assistant:{% endif %}")
    tok.save_pretrained(folder)
    return folder
