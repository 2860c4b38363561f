"""The user's model is left exactly as it was (also when analyze raises), and bad input gets
a clear ValueError/TypeError."""

from __future__ import annotations

import pytest
import torch

import corevital_widgets as corevital
from corevital_widgets.engine.model_state import hook_counts


def _snapshot(model):
    import sys

    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, AttentionInterface

    modeling = sys.modules[type(model.model.layers[0].self_attn).__module__]
    return {
        "attn": model.config._attn_implementation,
        # the attention functions corevital taps for the run are the originals again
        "sdpa_function": AttentionInterface._global_mapping["sdpa"],
        "local_overrides": dict(ALL_ATTENTION_FUNCTIONS._local_mapping),
        "eager_function": modeling.eager_attention_forward,
        "torch_sdpa": torch.nn.functional.scaled_dot_product_attention,
        "hooks": hook_counts(model),
        "training": [m.training for m in model.modules()],
        "generation_config": model.generation_config.to_dict(),
        "params": sum(float(p.detach().sum()) for p in model.parameters()),
    }


def test_model_left_as_it_was_after_success_and_after_error(smollm2):
    model, tok = smollm2
    model.train()  # an unusual state, to see it restored exactly
    model.model.layers[3].eval()
    try:
        before = _snapshot(model)
        assert before["attn"] == "sdpa"
        corevital.analyze(model, "Hello", tok, max_new_tokens=3)
        assert _snapshot(model) == before

        def explode(step, token):
            if step == 1:
                raise RuntimeError("user callback failed")

        with pytest.raises(RuntimeError, match="user callback failed"):
            corevital.analyze(model, "Hello", tok, max_new_tokens=5, on_step=explode)
        assert _snapshot(model) == before
        with pytest.raises(ValueError):
            corevital.analyze(model, "", tok)
        assert _snapshot(model) == before

        def interrupt(step, token):  # Ctrl-C in the middle of generation
            if step == 2:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            corevital.analyze(model, "Hello", tok, max_new_tokens=6, on_step=interrupt)
        assert _snapshot(model) == before
        model.set_attn_implementation("eager")  # a model configured for eager keeps eager, and is read exactly
        trace = corevital.analyze(model, "Hello", tok, max_new_tokens=3)
        assert trace.meta["attention_implementation"] == "eager"
        assert model.config._attn_implementation == "eager"
        model.set_attn_implementation("sdpa")
        assert _snapshot(model) == before
    finally:
        model.eval()


def test_on_step_reports_every_token_in_order(smollm2):
    model, tok = smollm2
    seen = []
    trace = corevital.analyze(model, "Count: one, two,", tok, max_new_tokens=6, on_step=lambda s, t: seen.append((s, t)))
    assert seen == list(enumerate(trace.generated_ids.tolist()))


@pytest.mark.parametrize(
    "prompt, kwargs, err, match",
    [
        (123, {}, TypeError, "prompt must be a str"),
        (None, {}, TypeError, "prompt must be a str"),
        ("", {}, ValueError, "prompt is empty"),
        ("   \n", {}, ValueError, "prompt is empty"),
        (["a", "b"], {}, TypeError, "batch size is 1"),
        ("hi", {"max_new_tokens": 0}, ValueError, "max_new_tokens must be at least 1"),
        ("hi", {"max_new_tokens": 2.5}, TypeError, "max_new_tokens must be an int"),
        ("hi", {"attention_threshold": 1.5}, ValueError, "attention_threshold"),
        ("hi", {"top_k": 0}, ValueError, "top_k"),
        ("hi", {"num_beams": 3}, ValueError, "beam search"),
        ("hi", {"num_return_sequences": 2}, ValueError, "batch size is 1"),
        ("hi", {"output_attentions": True}, ValueError, "output_attentions"),
    ],
)
def test_bad_input_is_rejected_clearly(smollm2, prompt, kwargs, err, match):
    model, tok = smollm2
    with pytest.raises(err, match=match):
        corevital.analyze(model, prompt, tok, **kwargs)


def test_prompt_longer_than_context_is_rejected(smollm2):
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = smollm2[1]
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=32, n_embd=32, n_layer=2, n_head=2))
    with pytest.raises(ValueError, match=r"context is 32 tokens"):
        corevital.analyze(model, "word " * 40, tok, max_new_tokens=4)


def test_missing_tokenizer_says_to_pass_one():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(vocab_size=100, n_positions=32, n_embd=32, n_layer=2, n_head=2))
    with pytest.raises(ValueError, match="pass tokenizer="):
        corevital.analyze(model, "hello")


def test_model_without_attention_is_rejected(smollm2):
    from transformers import MambaConfig, MambaForCausalLM

    tok = smollm2[1]
    model = MambaForCausalLM(MambaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, state_size=4))
    with pytest.raises(ValueError, match="no stack of blocks with softmax self-attention"):
        corevital.analyze(model, "hello", tok, max_new_tokens=2)


@pytest.mark.parametrize("model", [object(), "definitely/not/a/local/path", torch.nn.Linear(2, 2)])
def test_not_a_model_is_rejected(smollm2, model):
    with pytest.raises((TypeError, ValueError), match="model"):
        corevital.analyze(model, "hello", smollm2[1])


def test_wrong_tokenizer_type_is_rejected(smollm2):
    with pytest.raises(TypeError, match="tokenizer must be"):
        corevital.analyze(smollm2[0], "hello", tokenizer="gpt2")
