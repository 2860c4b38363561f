"""Models as people run them on GPUs (skipped without CUDA; run through the device tool:
``python -m pytest tests/test_gpu_models.py``):

1. split over two GPUs (accelerate device map, layers on cuda:0 and cuda:1): the same trace as
   the same weights whole on one GPU — with the fused Triton prompt kernels on, launched on
   each layer's own device, and no fallback warning;
2. bitsandbytes 4-bit (NF4) and 8-bit (LLM.int8) models: the trace equals the quantized
   model's own eager teacher-forced recomputation, and the tokens equal plain ``generate``.

Random-weight Llama configs (no hub access), the offline byte tokenizer."""

from __future__ import annotations

import copy
import importlib.util
import warnings

import numpy as np
import pytest
import torch

import corevital_widgets as corevital

from .test_engine_correctness import check_trace
from .test_prompt_tiles import assert_same_trace
from .tiny_tokenizer import byte_tokenizer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

PROMPT = ("The committee met on Tuesday to review the budget for the new library, and after a long discussion "
          "about the roof, the windows and the reading room, it decided to")


def _llama(n_layers=8, dtype=torch.float32):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=byte_tokenizer().vocab_size + 3, hidden_size=256, intermediate_size=512,
                      num_hidden_layers=n_layers, num_attention_heads=8, num_key_value_heads=4,
                      max_position_embeddings=1024, bos_token_id=1, eos_token_id=None, pad_token_id=0)
    return LlamaForCausalLM(cfg).to(dtype).eval()


def _generate(model, n):
    tok = byte_tokenizer()
    ids = tok(PROMPT, return_tensors="pt")["input_ids"].to(model.get_input_embeddings().weight.device)
    with torch.inference_mode():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                             do_sample=False, pad_token_id=0)
    return out[0, ids.shape[1]:].cpu().numpy()


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_a_model_split_over_two_gpus_gives_the_same_trace_as_whole():
    from accelerate import dispatch_model

    tok = byte_tokenizer()
    whole = _llama().to("cuda:0")
    split = dispatch_model(copy.deepcopy(whole).cpu(), device_map={
        "model.embed_tokens": 0, "model.rotary_emb": 0, **{f"model.layers.{i}": (0 if i < 3 else 1) for i in range(8)},
        "model.norm": 1, "lm_head": 1})
    assert {str(p.device) for p in split.model.layers[7].parameters()} == {"cuda:1"}
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a Triton fallback would warn
        a = corevital.analyze(whole, PROMPT, tok, max_new_tokens=24, min_new_tokens=24)
        b = corevital.analyze(split, PROMPT, tok, max_new_tokens=24, min_new_tokens=24)
    assert b.meta["devices"] == ["cuda:0", "cuda:1"]
    assert (b.generated_ids == _generate(split, 24)).all(), "tokens equal plain generate on the split model"
    assert_same_trace(a, b)
    assert a.sparse == b.sparse or all(
        np.allclose(a.sparse.dense(layer, h), b.sparse.dense(layer, h), atol=2e-3) for layer in range(8) for h in range(8))
    check_trace(b, split)


@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="needs bitsandbytes")
@pytest.mark.parametrize("bits", [4, 8], ids=["nf4", "int8"])
def test_bitsandbytes_quantized_model_matches_its_own_eager_recomputation(bits, tmp_path):
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    _llama(n_layers=4).save_pretrained(tmp_path)
    if bits == 4:
        quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32)
    else:
        quant = BitsAndBytesConfig(load_in_8bit=True)
    model = AutoModelForCausalLM.from_pretrained(tmp_path, quantization_config=quant, device_map={"": 0},
                                                 dtype=torch.float32).eval()
    assert any("4bit" in type(m).__name__ or "8bit" in type(m).__name__ for m in model.modules()), "really quantized"
    trace = corevital.analyze(model, PROMPT, byte_tokenizer(), max_new_tokens=16, min_new_tokens=16)
    assert (trace.generated_ids == _generate(model, 16)).all(), "tokens equal plain generate"
    # int8 matmuls round their outputs through float16: a KV-cached step and one full forward differ more
    check_trace(trace, model, tol=1.0 if bits == 4 else 10.0)
