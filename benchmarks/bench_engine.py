"""Engine benchmark: ``corevital.analyze`` vs plain ``model.generate`` (SDPA) on SmolLM2, CPU.

Two rows, each alternating the two calls in one process so machine noise hits both alike, the
baseline measured in the same run; each prints the median ratio against its target:

- short: a 500-token prompt and 64 new tokens (both runs forced to exactly 64 with
  min_new_tokens); also the trace size and bytes per sparse entry (target <= 1.3x);
- long: a 3,000-token prompt and 8 new tokens, where the prompt pass (prompt telemetry over
  3,000 x 3,000 attention per head and layer, prompt surprisal over 3,000 positions) dominates
  (target <= 1.5x).

    .venv/bin/python benchmarks/bench_engine.py [--rows short,long] [--repeats 5] [--long-repeats 5]
"""

from __future__ import annotations

import argparse
import inspect
import statistics
import time

import torch

import corevital_widgets as corevital


def long_prompt(tokenizer, n_tokens: int) -> str:
    """Exactly ``n_tokens`` of natural English text (stdlib docstrings), decoded to a string."""
    import argparse as m1
    import collections as m2
    import json as m3
    import logging as m4
    import unittest as m5
    import functools as m9
    import re as m7
    import subprocess as m6
    import threading as m8

    # the first five modules give ~2,200 tokens; the others extend it for the long-prompt row
    text = "\n\n".join(inspect.getdoc(m) or "" for m in (m4, m1, m5, m2, m3, m6, m7, m8, m9))
    ids = tokenizer(text)["input_ids"]
    if len(ids) < n_tokens:
        raise SystemExit(f"prompt source has only {len(ids)} tokens")
    return tokenizer.decode(ids[:n_tokens])


def alternate(model, tok, prompt: str, n: int, repeats: int, label: str,
              **extra: dict) -> tuple[list[float], list[float], dict[str, list[float]], corevital.Trace]:
    """Alternate plain generate with analyze (and each ``extra`` analyze variant) ``repeats``
    times after one warm-up of each; returns (generate times, analyze times, variant times, the
    last trace)."""
    ids = tok(prompt, return_tensors="pt")["input_ids"]

    def plain() -> float:
        t = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                                 do_sample=False, pad_token_id=tok.eos_token_id)
        assert out.shape[1] == ids.shape[1] + n
        return time.perf_counter() - t

    def ours(**kw) -> tuple[float, corevital.Trace]:
        t = time.perf_counter()
        trace = corevital.analyze(model, prompt, tok, max_new_tokens=n, min_new_tokens=n, **kw)
        return time.perf_counter() - t, trace

    plain()  # warm-up both paths
    ours()
    t_plain: list[float] = []
    t_ours: list[float] = []
    t_extra: dict[str, list[float]] = {name: [] for name in extra}
    trace = None
    for i in range(repeats):
        a = plain()
        b, trace = ours()
        t_plain.append(a)
        t_ours.append(b)
        line = f"  {label} run {i}: generate {a:.3f} s   analyze {b:.3f} s   ratio {b / a:.3f}"
        for name, kw in extra.items():
            c, _ = ours(**kw)
            t_extra[name].append(c)
            line += f"   {name} {c:.3f} s ({c / a:.3f})"
        print(line, flush=True)
    assert trace is not None
    return t_plain, t_ours, t_extra, trace


def print_medians(t_plain: list[float], t_ours: list[float], target: float) -> None:
    """The row's median times and median per-run ratio against its target."""
    med = statistics.median([b / a for a, b in zip(t_plain, t_ours)])
    print()
    print(f"median generate  {statistics.median(t_plain):.3f} s")
    print(f"median analyze   {statistics.median(t_ours):.3f} s")
    print(f"median ratio     {med:.3f}x   (target <= {target}x)  {'OK' if med <= target else 'MISSED'}")


def short_row(model, tok, args) -> None:
    prompt = long_prompt(tok, args.prompt_tokens)
    n = args.new_tokens
    print(f"short row: prompt {args.prompt_tokens} tokens, {n} new tokens")
    t_plain, t_ours, t_extra, trace = alternate(model, tok, prompt, n, args.repeats, "short",
                                                **{"with logit lens": {"logit_lens": True}})
    lens_ratios = [c / a for a, c in zip(t_plain, t_extra["with logit lens"])]
    size = len(trace.to_bytes())
    sparse = trace.sparse
    raw_tuples = sparse.nnz * 6
    print_medians(t_plain, t_ours, target=1.3)
    print(f"logit lens       {statistics.median(lens_ratios):.3f}x generate (opt-in, analyze(logit_lens=True))")
    print(f"trace size       {size / 1e6:.3f} MB  (target <= 2.5 MB)  {'OK' if size <= 2.5e6 else 'MISSED'}")
    small = len(corevital.analyze(model, prompt, tok, max_new_tokens=n, min_new_tokens=n,
                                  attention_weight_bits=7).to_bytes())
    print(f"trace size, attention_weight_bits=7 (relative error <= 0.4%): {small / 1e6:.3f} MB "
          f"{'OK' if small <= 2.5e6 else 'MISSED'}")
    print(f"sparse entries   {sparse.nnz:,}  ({sparse.nnz / sparse.row_counts.size:.1f} keys per query row, "
          f"threshold {sparse.threshold})")
    print(f"bytes per entry  {size / max(1, sparse.nnz):.3f} B (whole file / entries); raw 6-byte tuples would be "
          f"{raw_tuples / 1e6:.2f} MB")
    print(f"in-memory sparse {(sparse.keys.nbytes + sparse.weights.nbytes + sparse.row_counts.nbytes) / 1e6:.2f} MB "
          f"(CSR uint16 keys + float16 weights + row counts)")


def long_row(model, tok, args) -> None:
    prompt = long_prompt(tok, args.long_prompt_tokens)
    n = args.long_new_tokens
    print(f"long row: prompt {args.long_prompt_tokens} tokens, {n} new tokens")
    t_plain, t_ours, t_extra, trace = alternate(model, tok, prompt, n, args.long_repeats, "long",
                                                **{"without prompt telemetry": {"prompt_telemetry": False}})
    print_medians(t_plain, t_ours, target=1.5)
    no_prompt = [c / a for a, c in zip(t_plain, t_extra["without prompt telemetry"])]
    print(f"without prompt telemetry {statistics.median(no_prompt):.3f}x generate")
    print(f"sparse entries   {trace.sparse.nnz:,}  ({trace.sparse.nnz / trace.sparse.row_counts.size:.1f} keys per "
          f"query row), trace file {len(trace.to_bytes()) / 1e6:.2f} MB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default="short,long", help="comma-separated rows to run: short, long")
    ap.add_argument("--repeats", type=int, default=5, help="alternating runs of the short row")
    ap.add_argument("--prompt-tokens", type=int, default=500)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--long-repeats", type=int, default=5, help="alternating runs of the long row")
    ap.add_argument("--long-prompt-tokens", type=int, default=3000)
    ap.add_argument("--long-new-tokens", type=int, default=8)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = {r.strip() for r in args.rows.split(",") if r.strip()}
    unknown = rows - {"short", "long"}
    if unknown:
        raise SystemExit(f"unknown rows {sorted(unknown)}; choose from short, long")

    model, tok = corevital.load_default_model()
    print(f"model: SmolLM2-135M-Instruct ({model.config._attn_implementation} by default), "
          f"torch threads {torch.get_num_threads()}")
    if "short" in rows:
        short_row(model, tok, args)
    if "long" in rows:
        if "short" in rows:
            print()
        long_row(model, tok, args)


if __name__ == "__main__":
    main()
