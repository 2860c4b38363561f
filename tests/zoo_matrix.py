"""The architecture matrix: every causal-LM and encoder-decoder architecture of the installed
transformers (enumerated from its auto mappings by :mod:`.zoo_models`), as a tiny random-weight
model, traced by ``analyze`` and compared with an independent eager teacher-forced
recomputation of the same tokens.

Outcomes of one architecture:

- ``exact``: traced through the tapped AttentionInterface; tokens equal plain ``generate``;
  timeline, hidden-state norms, per-step per-head attention, prompt telemetry and
  ``attends_to`` equal the reference; the model's state is restored.
- ``exact via fallback``: the same checks, read through the legacy route (the attention
  module's own probabilities: falcon, bloom, mpt, gpt_neo ...).
- ``refused``: ``analyze`` raised a ValueError before returning anything, the model unchanged;
  the reason is the first sentence of the message.
- ``not applicable``: the architecture cannot generate from text alone (needs pixel values,
  audio features ...), said by :mod:`.zoo_models`.
- ``WRONG``: a trace came back that disagrees with the reference — a silently wrong trace, the
  one outcome that must never occur (the test fails on it).

``python -m tests.zoo_matrix --write docs/architectures.md`` regenerates the table.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from dataclasses import dataclass

import numpy as np
import torch

from . import reference as ref
from .tiny_tokenizer import byte_tokenizer
from .zoo_models import ZooEntry, build_tiny, zoo_entries

PROMPT = "The old lighthouse keeper counted ships at night, and every morning he wrote"
NEW_TOKENS = 6
OUTCOMES = ("exact", "exact via fallback", "refused", "not applicable", "WRONG")


@dataclass
class Outcome:
    model_type: str
    kind: str
    class_name: str
    status: str
    detail: str = ""
    seconds: float = 0.0
    layers: str = ""  # e.g. "4 (attention: 1, 3)"


class Mismatch(AssertionError):
    """The trace disagrees with the reference."""


def _close(what: str, got, want, atol: float = 2e-3, rtol: float = 2e-3) -> None:
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        raise Mismatch(f"{what}: shape {got.shape} vs reference {want.shape}")
    bad = ~np.isclose(got, want, atol=atol, rtol=rtol, equal_nan=True)
    if bad.any():
        i = np.argwhere(bad)[0]
        raise Mismatch(f"{what}: {int(bad.sum())} values differ, first at {tuple(i)}: {got[tuple(i)]:.5g} vs {want[tuple(i)]:.5g}")


def _state(model) -> tuple:
    from corevital_widgets.engine.model_state import hook_counts

    impls = tuple(sorted((type(m).__name__, getattr(m.config, "_attn_implementation", None))
                         for m in model.modules() if hasattr(getattr(m, "config", None), "_attn_implementation")))
    return impls, tuple(sorted(hook_counts(model).items())), tuple(m.training for m in model.modules())


def _attention_matrix(attentions, n_layers: int, layers: list[int], n_rows: int) -> np.ndarray:
    """[L, H, S, S] from transformers' recorded attentions, renormalised over the real keys
    (sinks), NaN for blocks without attention."""
    att = [a for a in (attentions or ()) if a is not None]
    if len(att) not in (len(layers), n_layers):
        raise Mismatch(f"reference recorded {len(att)} attention maps for {len(layers)} attention layers")
    if len(att) == n_layers and len(layers) != n_layers:
        att = [att[i] for i in layers]
    n_heads = max(a.shape[1] for a in att)  # layers may differ in head count (extra heads NaN)
    out = np.full((n_layers, n_heads, n_rows, max(a.shape[-1] for a in att)), np.nan)
    for i, a in zip(layers, att):
        a = a[0].double().cpu().numpy()[:, -n_rows:, :]
        out[i, : a.shape[0]] = 0.0  # keys a layer does not see (a shorter window cache) have weight 0
        out[i, : a.shape[0], :, : a.shape[-1]] = a / a.sum(-1, keepdims=True)
    return out


def _positions(model, n: int, dev) -> dict:
    """``position_ids`` 0..n-1 as ``generate`` passes them, where the model takes them."""
    import inspect

    params = inspect.signature(type(model).forward).parameters
    return {"position_ids": torch.arange(n, device=dev)[None]} if "position_ids" in params else {}


def _spread(hidden: np.ndarray, n_layers: int, layers: list[int]) -> np.ndarray:
    """Hidden states [R+1, S, D] spread over all ``n_layers`` blocks [L+1, S, D] (NaN where
    transformers records nothing): when it records only attention blocks, its last entry is the
    stack's final output."""
    if hidden.shape[0] - 1 == n_layers or hidden.shape[0] - 1 != len(layers):
        return hidden
    out = np.full((n_layers + 1, *hidden.shape[1:]), np.nan)
    out[[0] + [i + 1 for i in layers[:-1]] + [n_layers]] = hidden
    return out


def reference_forward(model, prompt_ids: np.ndarray, gen_ids: np.ndarray, layers: list[int],
                      prompt_layers: list[int], n_layers: int | None = None) -> ref.Forward:
    """The eager teacher-forced forward, hybrid-aware (see :func:`tests.reference.teacher_forced`)."""
    dev = model.get_input_embeddings().weight.device
    with ref.eager_attention(model):
        with torch.no_grad():
            if model.config.is_encoder_decoder:
                start = model.config.decoder_start_token_id
                dec = np.concatenate([[start], gen_ids[:-1]])
                out = model(input_ids=torch.tensor(prompt_ids, device=dev)[None],
                            decoder_input_ids=torch.tensor(dec, device=dev)[None], output_attentions=True,
                            output_hidden_states=True)
                hidden = np.stack([h[0].double().cpu().numpy() for h in out.decoder_hidden_states])
                n_layers = hidden.shape[0] - 1
                self_att = out.decoder_attentions
                cross = out.cross_attentions or ()
                if (len(cross) == len(self_att) and all(a is not None and c is not None for a, c in zip(self_att, cross))
                        and float(self_att[0].sum(-1).max()) < 0.999
                        and torch.allclose((self_att[0].sum(-1) + cross[0].sum(-1)).double(),
                                           torch.ones((), dtype=torch.float64), atol=1e-4)):
                    # merged attention (T5Gemma 2): one softmax over decoder and encoder keys, recorded in two parts
                    self_att = tuple(torch.cat([a, c], -1) for a, c in zip(self_att, cross))
                attn = _attention_matrix(self_att, n_layers, layers, len(dec))
                p_hidden = np.stack([h[0].double().cpu().numpy() for h in out.encoder_hidden_states])
                p_attn = _attention_matrix(out.encoder_attentions, p_hidden.shape[0] - 1, prompt_layers, len(prompt_ids))
                pos = np.arange(len(gen_ids))
            else:
                ids = np.concatenate([prompt_ids, gen_ids])
                # positions as generate passes them (0, 1, ...): RoBERTa-style models would start at padding_idx + 1
                out = model(input_ids=torch.tensor(ids, device=dev)[None], output_attentions=True, output_hidden_states=True,
                            **_positions(model, len(ids), dev))
                hidden = np.stack([h[0].double().cpu().numpy() for h in out.hidden_states])
                n_layers = n_layers or hidden.shape[0] - 1
                hidden = _spread(hidden, n_layers, layers)
                attn = _attention_matrix(out.attentions, n_layers, layers, len(ids))
                p = len(prompt_ids)
                pos = np.arange(len(gen_ids)) + p - 1
                # the prompt telemetry describes the prefill: a forward over the prompt alone (models whose
                # attention depends on the sequence length, e.g. a dynamic top-k mask, differ beyond it)
                pre = model(input_ids=torch.tensor(prompt_ids, device=dev)[None], output_attentions=True,
                            output_hidden_states=True, **_positions(model, p, dev))
                p_hidden = _spread(np.stack([h[0].double().cpu().numpy() for h in pre.hidden_states]), n_layers, layers)
                p_attn = _attention_matrix(pre.attentions, n_layers, prompt_layers, p)
                logits = out.logits[0].double().cpu().numpy()
                logits[: p - 1] = pre.logits[0, : p - 1].double().cpu().numpy()
                return ref.Forward(logits, hidden, attn, p_hidden, p_attn, pos)
    return ref.Forward(out.logits[0].double().cpu().numpy(), hidden, attn, p_hidden, p_attn, pos)


def generate_reference(model, prompt_ids: np.ndarray, n_steps: int, layers: list[int]) -> ref.Forward:
    """For causal LMs whose incremental decoding differs from one full forward over the same
    tokens (an indexer's top-k keys depend on the sequence length): the eager ``generate`` of
    transformers with ``output_attentions``/``output_hidden_states``, step by step — the same
    computation the trace describes, recorded by transformers itself."""
    dev = model.get_input_embeddings().weight.device
    with ref.eager_attention(model):
        ids = torch.tensor(prompt_ids, device=dev)[None]
        with torch.no_grad():
            g = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n_steps, min_new_tokens=n_steps,
                               do_sample=False, num_beams=1, pad_token_id=0, output_logits=True, output_attentions=True,
                               output_hidden_states=True, return_dict_in_generate=True)
            prefill_logits = model(ids, **_positions(model, ids.shape[1], dev)).logits[0].double().cpu().numpy()
    p, size = len(prompt_ids), len(prompt_ids) + n_steps - 1
    n_layers = len(g.hidden_states[0]) - 1
    hidden = np.zeros((n_layers + 1, size, g.hidden_states[0][0].shape[-1]))
    logits = np.zeros((size, g.logits[0].shape[-1]))
    logits[:p] = prefill_logits
    attn = None
    for t in range(n_steps):
        rows = slice(0, p) if t == 0 else slice(p - 1 + t, p + t)
        hidden[:, rows] = np.stack([h[0].double().cpu().numpy() for h in g.hidden_states[t]])
        logits[p - 1 + t] = g.logits[t][0].double().cpu().numpy()
        a = _attention_matrix(g.attentions[t], n_layers, layers, rows.stop - rows.start)
        if attn is None:
            attn = np.zeros((n_layers, a.shape[1], size, size))
        attn[:, :, rows, : a.shape[-1]] = a
    attn[[i for i in range(n_layers) if i not in layers]] = np.nan
    return ref.Forward(logits, hidden, attn, hidden[:, :p], attn[:, :, :p, :p], np.arange(n_steps) + p - 1)


def check_against_reference(trace, model, step_logits: np.ndarray | None = None) -> str:
    """Every group of ``trace`` against the eager reference; raises Mismatch. ``step_logits``
    [T, V]: the raw logits plain ``generate`` produced (the timeline's reference where a model's
    incremental decoding differs from one full forward, as an indexer's top-k selection does)."""
    gen, prm = trace.generated_ids, trace.prompt_ids
    layers, p_layers = trace.attention_layers, trace.prompt_attention_layers
    f = reference_forward(model, prm, gen, layers, p_layers, trace.n_layers)
    k = trace.meta["top_k"]
    note = ""
    if step_logits is not None and not np.allclose(f.logits[f.step_pos], step_logits, atol=2e-3, rtol=2e-3):
        # this model's incremental decoding is not one full forward: use its own eager generate
        if model.config.is_encoder_decoder:
            raise Mismatch("incremental decoding differs from the teacher-forced forward (encoder-decoder)")
        f = generate_reference(model, prm, len(gen), layers)
        note = "reference: eager generate (its incremental decoding differs from one full forward)"
        if not np.allclose(f.logits[f.step_pos], step_logits, atol=2e-3, rtol=2e-3):
            raise Mismatch("eager generate's logits differ from the model's own generate")
    for name, want in ref.timeline(f, gen, k).items():
        _close(f"timeline.{name}", getattr(trace.timeline, name), want)
    if f.hidden.shape[0] - 1 != trace.n_layers:
        raise Mismatch(f"reference has {f.hidden.shape[0] - 1} layers, the trace {trace.n_layers}")
    recorded = [i for i in range(trace.n_layers) if not np.isnan(f.hidden[i + 1]).all()]
    if len(recorded) < trace.n_layers:  # transformers records attention blocks only (Mllama's cross blocks are not)
        note = (note + "; " if note else "") + "hidden states compared on the blocks transformers records"
    for name, want in ref.layers(f).items():
        _close(f"layers.{name}", getattr(trace.layers, name)[:, recorded], want[:, recorded], rtol=1e-3)
    hd = ref.heads(f)
    missing = np.isnan(f.attn[:, :, f.step_pos, :]).any(-1).transpose(2, 0, 1)  # [T, L, H]: no such head
    for v in hd.values():
        v[missing] = np.nan
    no_att = [i for i in range(trace.n_layers) if i not in layers]
    for v in hd.values():
        v[:, no_att] = np.nan  # blocks without attention: NaN, never 0
    _close("heads.entropy", trace.heads.entropy, hd["entropy"], atol=1e-2)
    _close("heads.concentration", trace.heads.concentration, hd["concentration"], atol=1e-3)
    if trace.meta.get("prompt_telemetry", trace.meta["generation"].get("prompt_telemetry", True)):
        pr = ref.prompt(f, prm, causal=not model.config.is_encoder_decoder)
        p_missing = np.isnan(f.prompt_attn).any(-1).any(-1)  # [L, H]
        for name in ("head_entropy", "head_concentration", "sink", "basin"):
            pr[name][p_missing] = np.nan
        p_no_att = [i for i in range(f.prompt_attn.shape[0]) if i not in p_layers]
        for name in ("head_entropy", "head_concentration", "sink", "basin"):
            pr[name][p_no_att] = np.nan
        for name in ("head_entropy", "head_concentration", "sink", "basin"):
            _close(f"prompt.{name}", getattr(trace.prompt, name), pr[name])
        if len(recorded) == trace.n_layers:
            _close("prompt.layer_transformation", trace.prompt.layer_transformation, pr["layer_transformation"])
        if "surprisal" in pr:
            _close("prompt.surprisal", trace.prompt.surprisal, pr["surprisal"])
        last = len(prm) - 1
        for layer in sorted({p_layers[0], p_layers[-1]}):
            keys, weights = trace.attends_to(last, layer, 0)
            row = f.prompt_attn[layer, 0, last]
            want_keys = np.flatnonzero(row > trace.sparse.threshold + 1e-4)
            if not set(want_keys.tolist()) <= set(keys.tolist()):
                raise Mismatch(f"attends_to(layer {layer}): keys {keys.tolist()} vs reference {want_keys.tolist()}")
            _close(f"attends_to(layer {layer})", weights, row[keys], atol=2e-3)
    return note


def _routes(model) -> set[str]:
    from corevital_widgets.engine import adapters
    from corevital_widgets.engine.structure import inspect_model

    structure = inspect_model(model)
    return {adapters.attention_route(m) or "none" for m in structure.attention_modules}


def run_entry(entry: ZooEntry) -> Outcome:
    """Build, trace, compare one architecture."""
    import corevital_widgets as corevital

    t0 = time.perf_counter()
    out = Outcome(entry.model_type, entry.kind, entry.class_name, "not applicable")
    if entry.skip_reason:
        out.detail = entry.skip_reason
        return out
    tok = byte_tokenizer()
    try:
        model = build_tiny(entry, vocab_size=tok.vocab_size + 3)
    except Exception as exc:  # noqa: BLE001 - a build failure is the harness's, reported as such
        out.status, out.detail = "not applicable", f"tiny config did not build: {type(exc).__name__}: {exc}"[:300]
        return out
    ids = tok(PROMPT, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        gen = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW_TOKENS,
                             min_new_tokens=NEW_TOKENS, do_sample=False, num_beams=1, pad_token_id=0, output_logits=True,
                             return_dict_in_generate=True)
    plain = gen.sequences[0, 1:] if model.config.is_encoder_decoder else gen.sequences[0, ids.shape[1]:]
    step_logits = torch.stack(gen.logits)[:, 0].double().numpy()
    before = _state(model)
    try:
        trace = corevital.analyze(model, PROMPT, tok, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS)
    except ValueError as exc:
        out.status, out.detail = "refused", str(exc)
        if _state(model) != before:
            out.status, out.detail = "WRONG", "refused but the model's state changed: " + str(exc)
        out.seconds = time.perf_counter() - t0
        return out
    except Exception as exc:  # noqa: BLE001 - any other error is a bug: it must be a clear refusal
        out.status = "WRONG"
        out.detail = f"crashed instead of a clear refusal: {type(exc).__name__}: {exc}"[:400] + "\n" + traceback.format_exc()[-600:]
        out.seconds = time.perf_counter() - t0
        return out
    n, att = trace.n_layers, trace.attention_layers
    out.layers = f"{n}" + ("" if len(att) == n else f" (attention: {', '.join(map(str, att))})")
    try:
        if _state(model) != before:
            raise Mismatch("the model's state was not restored")
        if not np.array_equal(trace.generated_ids, plain.numpy()):
            raise Mismatch(f"tokens {trace.generated_ids.tolist()} differ from plain generate {plain.tolist()}")
        out.detail = check_against_reference(trace, model, step_logits)
    except Mismatch as exc:
        out.status, out.detail = "WRONG", str(exc)
    except Exception as exc:  # noqa: BLE001 - the reference itself could not be formed
        out.status, out.detail = "WRONG", f"could not verify: {type(exc).__name__}: {exc}"[:400]
    else:
        out.status = "exact via fallback" if _routes(model) & {"weights", "sdpa_call"} else "exact"
    out.seconds = time.perf_counter() - t0
    return out


def run_matrix(entries: list[ZooEntry] | None = None, verbose: bool = False) -> list[Outcome]:
    outcomes = []
    for entry in entries or zoo_entries():
        o = run_entry(entry)
        outcomes.append(o)
        if verbose:
            print(f"{o.model_type:28s} {o.kind:8s} {o.status:20s} {o.seconds:5.2f}s {o.detail[:150]}", flush=True)
    return outcomes


def _reason(detail: str) -> str:
    """The first sentence of a refusal, without the model type prefix."""
    text = detail.split(": ", 1)[1] if detail.startswith("corevital cannot trace") and ": " in detail else detail
    return text.split(". ")[0].strip().rstrip(".")[:220]


def markdown(outcomes: list[Outcome]) -> str:
    import transformers

    counts = {s: sum(o.status == s for o in outcomes) for s in OUTCOMES}
    lines = [
        "# Architecture matrix",
        "",
        f"Every causal-LM and encoder-decoder architecture of transformers {transformers.__version__} (its auto mappings "
        "`MODEL_FOR_CAUSAL_LM_MAPPING_NAMES` and `MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES`), as a tiny "
        "random-weight model, traced by `analyze` and compared with an independent eager teacher-forced "
        "recomputation of the same tokens (tokens equal plain `generate`; timeline, hidden-state norms, per-step "
        "per-head attention, prompt telemetry, `attends_to`; the model's state restored). Generated by "
        "`python -m tests.zoo_matrix --write docs/architectures.md`; `tests/test_architectures.py` runs the same "
        "matrix in `make test` and fails if this table is stale or any trace is wrong.",
        "",
        "| outcome | architectures |",
        "|---|---|",
        *[f"| {s} | {counts[s]} |" for s in OUTCOMES],
        "",
        "- **exact**: the model's own attention function (its AttentionInterface entry, or its modeling file's eager "
        "function) computes the layer, corevital reads the same call beside it.",
        "- **exact via fallback**: the attention module computes attention itself (no AttentionInterface); corevital "
        "reads its call to `torch.nn.functional.scaled_dot_product_attention` (SDPA configurations) or the "
        "probabilities the module returns (`output_attentions` for that module only; eager).",
        "- Where a model's incremental decoding differs from one full forward over the same tokens (an indexer's top-k "
        "keys depend on the sequence length), the reference is transformers' own eager `generate` with "
        "`output_attentions`/`output_hidden_states`, step by step (noted in the table).",
        "- **refused**: `analyze` raises a `ValueError` naming the model type, the reason and what to do; nothing is "
        "returned and the model is unchanged.",
        "- **not applicable**: the architecture does not generate from text alone (it needs images, audio, ...).",
        "",
        "| model type | kind | class | outcome | layers | reason / note |",
        "|---|---|---|---|---|---|",
    ]
    for o in sorted(outcomes, key=lambda o: (OUTCOMES.index(o.status), o.model_type, o.kind)):
        note = _reason(o.detail) if o.status in ("refused", "WRONG") else o.detail[:160]
        lines.append(f"| {o.model_type} | {o.kind} | {o.class_name} | {o.status} | {o.layers} | {note.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--write", help="write the markdown table here")
    ap.add_argument("--only", help="comma-separated model types")
    args = ap.parse_args(argv)
    entries = zoo_entries()
    if args.only:
        wanted = set(args.only.split(","))
        entries = [e for e in entries if e.model_type in wanted]
    t0 = time.perf_counter()
    outcomes = run_matrix(entries, verbose=True)
    print({s: sum(o.status == s for o in outcomes) for s in OUTCOMES}, f"{time.perf_counter() - t0:.0f} s")
    if args.write:
        with open(args.write, "w") as fh:
            fh.write(markdown(outcomes))
    return 1 if any(o.status == "WRONG" for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
