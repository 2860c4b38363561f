"""Batched analysis (engine/batched.py, ``analyze_many(..., batch_size=N)``): N prompts per
``generate`` call give N traces, each equal (float tolerance) to the trace the same prompt gets
alone — padding never leaks into a statistic (padded keys are not keys, padded query rows are
not rows, padded steps are not steps) — for the real SmolLM2, random-config GQA Llama models
(SDPA and eager attention) and random-config T5 and BART encoder-decoders; sequences that end
at different steps; a batch split under a small memory budget (and after an out-of-memory
error); what cannot be batched exactly falls back to batch size 1 with a warning; and
analyze_many writes the same files as batch size 1, in order, and resumes."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import corevital_widgets as corevital
from corevital_widgets import batch as batch_module
from corevital_widgets.batch import TRACE_SUFFIX, analyze_many
from corevital_widgets.engine import batched
from corevital_widgets.engine.batched import analyze_batch, batch_bytes_estimate
from corevital_widgets.engine.structure import inspect_model
from corevital_widgets.trace.storage import load_trace

from .test_engine_correctness import _bart, _gpt2, _t5
from .test_prompt_tiles import _mistral_sliding
from .trace_helpers import assert_groups_close

PROMPTS = [
    "Why is the sky blue?",
    "Write a haiku about autumn leaves falling gently on a quiet pond in the evening light.",
    "2+2=",
    "List three colours of the rainbow, one per line:",
    "Translate to French: good morning, my friend.",
    "Hi",  # one token: alone it has no prompt pass; traced alone inside the batch call
]


# ------------------------------------------------------------------------------ comparison
def _sparse_entries(trace) -> dict[tuple[int, int], float]:
    counts = trace.sparse.row_counts.astype(np.int64).ravel()
    rows = np.repeat(np.arange(counts.size), counts)
    return dict(zip(zip(rows.tolist(), trace.sparse.keys.astype(np.int64).tolist()),
                    trace.sparse.weights.astype(np.float64).tolist()))


def assert_same_trace(alone, batch, what: str = "") -> None:
    """Every Trace field of ``batch`` equals ``alone`` (float tolerance; float16 heads within a
    float16 step; sparse entries equal, key indices included, except weights within 1e-4 of the
    threshold, which float rounding may put on either side)."""
    assert np.array_equal(alone.prompt_ids, batch.prompt_ids), what
    assert alone.prompt_tokens == batch.prompt_tokens, what
    assert np.array_equal(alone.generated_ids, batch.generated_ids), f"{what}: {alone.generated_ids} vs {batch.generated_ids}"
    assert alone.generated_tokens == batch.generated_tokens, what
    assert_groups_close(alone, batch, atol=2e-3, rtol=1e-3, what=what)
    assert alone.sparse.shape == batch.sparse.shape, what
    assert alone.sparse.cap == batch.sparse.cap and alone.meta["generation"] == batch.meta["generation"], what
    a, b = _sparse_entries(alone), _sparse_entries(batch)
    for entry in set(a) ^ set(b):
        weight = a.get(entry, b.get(entry))
        assert abs(weight - alone.sparse.threshold) < 1e-4, f"{what}: sparse entry {entry} ({weight}) in one trace only"
    common = sorted(set(a) & set(b))
    np.testing.assert_allclose([b[e] for e in common], [a[e] for e in common], atol=1e-3, err_msg=f"{what} sparse")
    assert alone.health == batch.health, what
    assert alone.meta.get("notes") == batch.meta.get("notes"), what


def _check_batch(model, tok, prompts, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no fallback, no split
        traces = analyze_batch(model, prompts, tok, **kw)
    assert len(traces) == len(prompts)
    for prompt, trace in zip(prompts, traces):
        assert_same_trace(corevital.analyze(model, prompt, tok, **kw), trace, prompt)
    return traces


# ----------------------------------------------------------------------------------- models
def _gqa_llama(vocab: int, implementation: str = "sdpa"):
    """A random GQA Llama (4 query heads over 2 key-value heads); initializer range 0.4 so that
    greedy choices are clear-cut, never near-ties that float rounding could flip."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, initializer_range=0.4,
                      attn_implementation=implementation)
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def tok(smollm2):
    return smollm2[1]


@pytest.fixture(scope="module")
def gqa(tok):
    return _gqa_llama(len(tok))


# ------------------------------------------------------------------------- equal to alone
def test_smollm2_batch_equals_each_prompt_alone(smollm2, monkeypatch):
    model, tok = smollm2
    from corevital_widgets.engine import batched as engine_batched

    calls = []
    real = engine_batched.cpu_prompt_layer
    monkeypatch.setattr(engine_batched, "cpu_prompt_layer", lambda *a, **k: calls.append(1) or real(*a, **k))
    traces = _check_batch(model, tok, PROMPTS[:5], max_new_tokens=4)
    assert {t.meta["batch"]["size"] for t in traces} == {5}
    assert len({t.n_prompt for t in traces}) >= 4, "mixed lengths: the shorter sequences are padded"
    assert len(calls) == 5 * model.config.num_hidden_layers, "the padded prefill takes the fast CPU prompt path"


@pytest.mark.parametrize("build", [lambda v: _gqa_llama(v, "sdpa"), lambda v: _gqa_llama(v, "eager"), _mistral_sliding],
                         ids=["llama-gqa-sdpa-random-config", "llama-gqa-eager-random-config",
                              "mistral-sliding-window-random-config"])
def test_random_gqa_config_batch_equals_each_prompt_alone(tok, build):
    model = build(len(tok))
    traces = _check_batch(model, tok, PROMPTS, max_new_tokens=6, min_new_tokens=6, logit_lens=True)
    assert traces[-1].n_prompt == 1 and traces[-1].meta["batch"]["size"] == 1  # the one-token prompt, alone


@pytest.mark.parametrize("build", [_t5, _bart], ids=["t5-random-config", "bart-random-config"])
def test_random_encoder_decoder_batch_equals_each_prompt_alone(tok, build):
    model = build(len(tok))
    traces = _check_batch(model, tok, PROMPTS[:5], max_new_tokens=5, min_new_tokens=5)
    assert all(t.meta["batch"]["padding"] == "right (encoder input)" for t in traces)


def test_sequences_ending_at_different_steps(tok, gqa):
    prompts = PROMPTS[:5]
    free = [corevital.analyze(gqa, p, tok, max_new_tokens=8, min_new_tokens=8).generated_ids for p in prompts]
    # EOS: the token each prompt generates at step 1, 2, 3, 4 (a prompt may meet another's earlier)
    eos = sorted({int(ids[1 + i]) for i, ids in enumerate(free[:4])})
    traces = _check_batch(gqa, tok, prompts, max_new_tokens=8, eos_token_id=eos, prompt_telemetry=False)
    steps = [t.n_steps for t in traces]
    assert len(set(steps)) >= 2 and min(steps) < 8, steps
    for t in traces:
        assert t.timeline.entropy.shape == (t.n_steps,) and t.heads.entropy.shape[0] == t.n_steps
        assert t.layers.l2_norm.shape[0] == t.n_steps and t.attention.entropy_mean.shape[0] == t.n_steps
        if t.n_steps < 8:
            assert int(t.generated_ids[-1]) in eos and not np.isin(t.generated_ids[:-1], eos).any()


def test_decode_rows_are_scored_together_and_the_chunking_changes_nothing(tok, gqa, monkeypatch):
    """A padded batch's decode steps keep each layer's query row and keys (no op per layer) and
    score all layers at the step's end in one batched matmul, masked keys at -inf: the same
    traces as scoring layer by layer in one-step chunks (the old path, forced here)."""
    from corevital_widgets.engine import step_chunks
    from corevital_widgets.engine.collector import Collector

    kw = dict(max_new_tokens=6, min_new_tokens=6)
    prompts = PROMPTS[:5]
    kept = []
    real = Collector.on_step_query
    monkeypatch.setattr(Collector, "on_step_query", lambda self, *a, **k: kept.append((a[1].shape, a[4])) or real(self, *a, **k))
    together = analyze_batch(gqa, prompts, tok, **kw)
    layers = gqa.config.num_hidden_layers
    assert len(kept) == 5 * layers, "every decode step of every layer goes through the deferred scoring"
    assert all(shape[0] == 5 and valid is not None and valid.shape[0] == 5 for shape, valid in kept), \
        "batched query rows [B, H, d], with the padded keys masked"
    monkeypatch.setattr(batched, "_step_keys_valid", lambda mask, n: (False, None))  # layer by layer
    monkeypatch.setattr(step_chunks, "CHUNK_SCORE_BYTES", 1)  # one-step chunks
    monkeypatch.setattr(batched, "BATCH_CHUNK_SCORE_BYTES", 1)
    kept.clear()
    per_layer = analyze_batch(gqa, prompts, tok, **kw)
    assert not kept
    for prompt, a, b in zip(prompts, together, per_layer):
        assert_same_trace(a, b, prompt)


def test_the_chunk_budget_follows_the_batch_budget(tok, gqa):
    structure = inspect_model(gqa)
    assert batched.chunk_score_budget(2**20) == batched.step_chunks.CHUNK_SCORE_BYTES  # never below the default
    assert batched.chunk_score_budget(2**40) == batched.BATCH_CHUNK_SCORE_BYTES  # capped
    # longer chunks of score rows count in the estimate (the rows and their reduction's temporaries)
    small = batch_bytes_estimate(gqa, structure, 32, 4000, 64, chunk_score_bytes=2**20)
    large = batch_bytes_estimate(gqa, structure, 32, 4000, 64, chunk_score_bytes=2**30)
    assert large > small


# ------------------------------------------------------------------------------ memory
def test_too_large_batch_is_split_under_a_small_budget(tok, gqa):
    prompts = PROMPTS[:5]
    structure = inspect_model(gqa)
    longest = max(len(tok(p)["input_ids"]) for p in prompts)
    budget = batch_bytes_estimate(gqa, structure, 2, longest, 4) + 1  # two prompts fit, three do not
    assert batch_bytes_estimate(gqa, structure, 3, 1, 4) > budget
    with pytest.warns(RuntimeWarning, match=r"over the budget .* split into batches of \[2, 2, 1\]"):
        traces = analyze_batch(gqa, prompts, tok, batch_bytes=budget, max_new_tokens=4)
    assert sorted(t.meta["batch"]["size"] for t in traces) == [1, 2, 2, 2, 2]
    assert all("split into batches" in t.meta["batch"]["note"] for t in traces)
    for prompt, trace in zip(prompts, traces):
        assert_same_trace(corevital.analyze(gqa, prompt, tok, max_new_tokens=4), trace, prompt)


def test_out_of_memory_splits_the_batch_in_two(tok, gqa, monkeypatch):
    real = batched._run_batch
    sizes = []

    def tight(model, structure, routes, tokenizer, prompts, *args):
        sizes.append(len(prompts))
        if len(prompts) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(model, structure, routes, tokenizer, prompts, *args)

    monkeypatch.setattr(batched, "_run_batch", tight)
    prompts = PROMPTS[:4]
    with pytest.warns(RuntimeWarning, match="ran out of memory"):
        traces = analyze_batch(gqa, prompts, tok, max_new_tokens=3)
    assert sizes == [4, 2, 2]
    for prompt, trace in zip(prompts, traces):
        assert_same_trace(corevital.analyze(gqa, prompt, tok, max_new_tokens=3), trace, prompt)


# ------------------------------------------------------------------------------ fallback
def test_a_failing_batched_kernel_falls_back_to_the_per_sequence_path(tok, gqa, monkeypatch):
    """If the batched Triton prompt kernels fail, the batch warns once, switches them off and
    takes each sequence's torch path: the same traces."""
    from corevital_widgets.engine import triton_prompt

    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        raise RuntimeError("PassManager::run failed (no such instruction on this GPU)")

    monkeypatch.setattr(triton_prompt, "disabled_reason", None)
    monkeypatch.setattr(batched, "fused_prompt_supported", lambda *a, **k: triton_prompt.disabled_reason is None)
    monkeypatch.setattr(batched, "fused_prompt_batch", broken)
    kw = dict(max_new_tokens=3, min_new_tokens=3)
    with pytest.warns(RuntimeWarning, match="fused Triton prompt kernels failed") as caught:
        traces = analyze_batch(gqa, PROMPTS[:3], tok, **kw)
    assert calls == [1] and len([w for w in caught if "Triton" in str(w.message)]) == 1
    for prompt, trace in zip(PROMPTS[:3], traces):
        assert_same_trace(corevital.analyze(gqa, prompt, tok, **kw), trace, prompt)


def test_what_cannot_be_batched_exactly_is_traced_alone_with_a_warning(tok, gqa):
    prompts = PROMPTS[:3]
    kw = dict(max_new_tokens=4, do_sample=True, seed=5, temperature=0.8)
    with pytest.warns(RuntimeWarning, match="not batched: sampling"):
        traces = analyze_batch(gqa, prompts, tok, **kw)
    for prompt, trace in zip(prompts, traces):
        assert trace.meta["batch"]["note"].startswith("traced alone: sampling")
        assert_same_trace(corevital.analyze(gqa, prompt, tok, **kw), trace, prompt)
    with pytest.warns(RuntimeWarning, match=r"not batched: generate option\(s\) \['repetition_penalty'\]"):
        analyze_batch(gqa, prompts[:2], tok, max_new_tokens=2, repetition_penalty=1.3)


def test_a_model_that_lets_padding_leak_falls_back(tok, monkeypatch):
    """A model whose mask does not hide the padding: the per-sequence verification of the first
    forward catches it, and the prompts are traced alone (never a silently different trace)."""
    import transformers.masking_utils as mu

    model = _gqa_llama(len(tok))
    real = mu.sdpa_mask

    def leaky(*args, **kwargs):
        kwargs["attention_mask"] = None  # forget the padding: pads become keys
        kwargs["allow_is_causal_skip"] = False  # (and still pass a mask, so only the verification can tell)
        return real(*args, **kwargs)

    monkeypatch.setitem(mu.ALL_MASK_ATTENTION_FUNCTIONS._global_mapping, "sdpa", leaky)
    prompts = PROMPTS[:3]
    with pytest.warns(RuntimeWarning, match="traced one at a time.*does not reproduce the model's batched output"):
        traces = analyze_batch(model, prompts, tok, max_new_tokens=3)
    assert all(t.meta["batch"]["note"].startswith("traced alone") for t in traces)


def test_a_model_whose_positions_shift_with_padding_falls_back(tok, monkeypatch):
    """Learned absolute positions (GPT-2) counted from the padded start: every attention call
    reproduces itself, but the most padded sequence's first logits differ from its prompt
    alone — the probe catches it and the prompts are traced alone."""
    model = _gpt2(len(tok))
    monkeypatch.setattr(model, "_prepare_position_ids_for_generation",
                        lambda inputs, kwargs: torch.arange(inputs.shape[1])[None].expand(inputs.shape[0], -1))
    prompts = PROMPTS[:3]
    with pytest.warns(RuntimeWarning, match="traced one at a time.*differ from those of its prompt alone"):
        traces = analyze_batch(model, prompts, tok, max_new_tokens=3)
    for prompt, trace in zip(prompts, traces):
        assert_same_trace(corevital.analyze(model, prompt, tok, max_new_tokens=3), trace, prompt)


def test_the_padding_probe_is_measured_against_the_batch_own_rounding(tok, gqa):
    """bfloat16 on a GPU: batched and alone logits of an 8B model differ by a few percent of the
    largest logit from the matrix shapes alone. The probe compares the padded sequence's
    difference with the unpadded (longest) sequence's: within PROBE_NOISE_FACTOR times that
    noise it passes, far beyond it (as a position shift does) the batch is refused."""
    ids = [tok(p, return_tensors="pt")["input_ids"][0] for p in PROMPTS[:2]]
    with torch.inference_mode():
        alone = [gqa(input_ids=i[None]).logits[0, -1].bfloat16() for i in ids]
    scale = [max(1.0, float(a.float().abs().max())) for a in alone]
    torch.manual_seed(1)

    def noisy(a, s, rel):  # a difference of exactly rel * the largest logit
        d = torch.randn_like(a.float())
        return (a.float() + d / d.abs().max() * rel * s).bfloat16()

    anchor = noisy(alone[1], scale[1], 0.1)  # the unpadded sequence: 10% from rounding
    batched._check_probe(gqa, ids, [None, None], [noisy(alone[0], scale[0], 0.35), anchor], torch.device("cpu"))
    with pytest.raises(batched.BatchUnsupported, match=r"differ from those of its prompt alone by 0\.\d+ of the largest"):
        batched._check_probe(gqa, ids, [None, None], [noisy(alone[0], scale[0], 0.6), anchor], torch.device("cpu"))
    quiet = noisy(alone[1], scale[1], 0.0)  # no rounding noise: the dtype floor (PROBE_FLOOR_HALF) is the limit
    batched._check_probe(gqa, ids, [None, None], [noisy(alone[0], scale[0], 0.15), quiet], torch.device("cpu"))
    with pytest.raises(batched.BatchUnsupported):
        batched._check_probe(gqa, ids, [None, None], [noisy(alone[0], scale[0], 0.3), quiet], torch.device("cpu"))


# --------------------------------------------------------------------------- analyze_many
def _spy_on_batches(monkeypatch) -> list[str]:
    """The prompts every batched generate call of analyze_many traces, in order (filled as it runs)."""
    traced: list[str] = []
    real = batched.pending_batch

    def spy(model, batch_prompts, *args, **kwargs):
        traced.extend(batch_prompts)
        return real(model, batch_prompts, *args, **kwargs)

    monkeypatch.setattr(batched, "pending_batch", spy)
    return traced


def test_analyze_many_batched_writes_the_same_files_and_resumes(tok, gqa, tmp_path, monkeypatch):
    prompts = PROMPTS[:5] + ["Count from one to five:", "Name a planet."]
    kw = dict(max_new_tokens=4, min_new_tokens=4)
    one = analyze_many(gqa, prompts, tok, out_dir=tmp_path / "one", progress=False, **kw)
    four = analyze_many(gqa, prompts, tok, out_dir=tmp_path / "four", progress=False, batch_size=4, **kw)
    names = sorted(p.name for p in (tmp_path / "one").glob(f"*{TRACE_SUFFIX}"))
    assert names == sorted(p.name for p in (tmp_path / "four").glob(f"*{TRACE_SUFFIX}")) and len(names) == 7
    assert one.keys == four.keys and [p.name for p in one.paths] == [p.name for p in four.paths]
    for a, b, prompt in zip(one, four, prompts):
        assert_same_trace(a, b, prompt)
    assert one.to_pandas()["text"].tolist() == four.to_pandas()["text"].tolist()
    model_keys = ("attention_implementation", "model_fingerprint", "model_name", "dtype", "devices")
    for a, b in zip(one, four):  # read once per batch, with the model restored (builds overlap the next batch)
        assert {k: a.meta[k] for k in model_keys} == {k: b.meta[k] for k in model_keys}

    # resume: two traces lost; a re-run traces exactly those two, in one batch
    lost = [four.paths[1], four.paths[5]]
    for path in lost:
        path.unlink()
    traced = _spy_on_batches(monkeypatch)
    again = analyze_many(gqa, prompts, tok, out_dir=tmp_path / "four", progress=False, batch_size=4, **kw)
    assert sorted(traced) == sorted([prompts[1], prompts[5]])
    assert all(p.is_file() for p in lost)
    for i in (1, 5):
        assert_same_trace(one[i], load_trace(again.paths[i]), prompts[i])

    # in memory: the traces come back in the prompts' order
    traced.clear()
    mem = analyze_many(gqa, prompts, tok, progress=False, batch_size=3, **kw)
    assert len(traced) == 7
    for a, b, prompt in zip(one, mem, prompts):
        assert_same_trace(a, b, prompt)


def test_a_failure_while_building_traces_loses_nothing_on_disk(tok, gqa, tmp_path, monkeypatch):
    """A batch's traces are built on a thread while the next batch generates: an error there
    reaches the caller, the files already written stay, and a re-run traces only what is missing,
    into the same files a clean run writes."""
    from corevital_widgets.engine import analyze as analyze_module

    prompts = PROMPTS[:5]
    kw = dict(max_new_tokens=3, min_new_tokens=3)
    real_build = analyze_module._build_trace

    def failing(model, structure, tokenizer, prompt_ids, *args, **kwargs):
        if tokenizer.decode(prompt_ids.tolist()) == prompts[3]:
            raise RuntimeError("disk on fire")
        return real_build(model, structure, tokenizer, prompt_ids, *args, **kwargs)

    monkeypatch.setattr(analyze_module, "_build_trace", failing)
    with pytest.raises(RuntimeError, match="disk on fire"):
        analyze_many(gqa, prompts, tok, out_dir=tmp_path / "run", progress=False, batch_size=2, **kw)
    on_disk = {p.name for p in (tmp_path / "run").glob(f"*{TRACE_SUFFIX}")}
    assert on_disk and len(on_disk) < len(prompts)
    monkeypatch.setattr(analyze_module, "_build_trace", real_build)
    traced = _spy_on_batches(monkeypatch)
    again = analyze_many(gqa, prompts, tok, out_dir=tmp_path / "run", progress=False, batch_size=2, **kw)
    assert len(traced) == len(prompts) - len(on_disk), "nothing traced twice"
    assert prompts[3] in traced
    clean = analyze_many(gqa, prompts, tok, out_dir=tmp_path / "clean", progress=False, batch_size=2, **kw)
    assert [p.name for p in again.paths] == [p.name for p in clean.paths]
    for a, b, prompt in zip(clean, again, prompts):
        assert_same_trace(a, b, prompt)


def test_analyze_many_rejects_a_bad_batch_size(tok, gqa):
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="batch_size"):
            analyze_many(gqa, PROMPTS[:2], tok, progress=False, batch_size=bad)
    assert batch_module.analyze_many.__kwdefaults__["batch_size"] == 1


def test_token_texts_are_cached_per_tokenizer_and_stay_exact(tok):
    """Each token's text is decoded once per tokenizer (a dataset run decodes mostly ids it has
    seen), and equals decoding the id alone; added tokens start a new cache."""
    import copy

    from corevital_widgets.engine.analyze import _decode_pieces

    rng = np.random.default_rng(0)
    ids = rng.integers(0, len(tok), (30, 20))
    ids[:, 0] = tok.eos_token_id  # special tokens keep their text
    want = list(tok.batch_decode(ids.reshape(-1, 1).tolist(), skip_special_tokens=False))
    assert _decode_pieces(tok, ids) == want
    assert _decode_pieces(tok, ids.reshape(-1)[::-1]) == want[::-1], "now from the cache"
    grown = copy.deepcopy(tok)
    _decode_pieces(grown, ids)
    grown.add_tokens(["<corevital-new-token>"])
    new_id = len(grown) - 1
    assert _decode_pieces(grown, np.array([new_id, int(ids[0, 1])])) == ["<corevital-new-token>", want[1]]
