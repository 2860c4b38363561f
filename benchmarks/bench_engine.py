"""Engine benchmark: ``corevital.analyze`` vs plain ``model.generate`` (SDPA) on SmolLM2, CPU.

A 500-token prompt and 64 new tokens (both runs forced to exactly 64 with min_new_tokens),
alternating the two in one process so machine noise hits both alike; prints the median
ratio, the trace size and bytes per sparse entry against the targets of the engine issue.

    .venv/bin/python benchmarks/bench_engine.py [--repeats 5] [--prompt-tokens 500] [--new-tokens 64]
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

    text = "\n\n".join(inspect.getdoc(m) or "" for m in (m4, m1, m5, m2, m3))
    ids = tokenizer(text)["input_ids"]
    if len(ids) < n_tokens:
        raise SystemExit(f"prompt source has only {len(ids)} tokens")
    return tokenizer.decode(ids[:n_tokens])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--prompt-tokens", type=int, default=500)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model, tok = corevital.load_default_model()
    prompt = long_prompt(tok, args.prompt_tokens)
    ids = tok(prompt, return_tensors="pt")["input_ids"]
    n = args.new_tokens
    print(f"model: SmolLM2-135M-Instruct ({model.config._attn_implementation} by default), "
          f"prompt {ids.shape[1]} tokens, {n} new tokens, torch threads {torch.get_num_threads()}")

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
    ratios, lens_ratios, t_plain, t_ours = [], [], [], []
    trace = None
    for i in range(args.repeats):
        a = plain()
        b, trace = ours()
        c, _ = ours(logit_lens=True)
        t_plain.append(a)
        t_ours.append(b)
        ratios.append(b / a)
        lens_ratios.append(c / a)
        print(f"  run {i}: generate {a:.3f} s   analyze {b:.3f} s   ratio {b / a:.3f}   "
              f"with logit lens {c:.3f} s ({c / a:.3f})")
    assert trace is not None
    size = len(trace.to_bytes())
    sparse = trace.sparse
    raw_tuples = sparse.nnz * 6
    med = statistics.median(ratios)
    print()
    print(f"median generate  {statistics.median(t_plain):.3f} s")
    print(f"median analyze   {statistics.median(t_ours):.3f} s")
    print(f"median ratio     {med:.3f}x   (target <= 1.3x)  {'OK' if med <= 1.3 else 'MISSED'}")
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


if __name__ == "__main__":
    main()
