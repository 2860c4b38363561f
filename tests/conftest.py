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
