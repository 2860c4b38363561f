"""Why a dataset run is slower than one warm batch: first-time (new-shape) costs vs steady state,
for plain batched ``generate`` and ``analyze_batch``, with torch's default SDPA backends and with
cuDNN attention switched off, in one run.

torch's cuDNN attention builds an execution plan for every new shape; a dataset brings new
prompt widths (and so 64 new key lengths) in every batch. Each line times one batch of
``--batch-size`` prompts that nothing has run before ("fresh"), then the same batch again.

    python benchmarks/bench_batch_shapes.py                    # one H200: random 8B-class Llama, bf16
    python benchmarks/bench_batch_shapes.py --device cpu --layers 2 --hidden 64 --batch-size 4   # smoke
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch

from bench_batch import add_model_args, build_model, device_and_dtype, make_prompts, sdpa_backends, sync, word_tokenizer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(ap)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=64)
    args = ap.parse_args()
    args.max_len = 800
    from corevital_widgets.engine.batched import analyze_batch

    device, dtype = device_and_dtype(args)
    tok = word_tokenizer(args.vocab)
    model = build_model(args, args.vocab, device, dtype)
    bs, new = args.batch_size, args.new_tokens
    order = sorted(make_prompts(10 * bs, 200, 800, args.vocab), key=lambda p: len(p.split()))
    batches = iter([order[i * bs:(i + 1) * bs] for i in range(1, 10)])  # the shortest batch warms up
    warnings.simplefilter("ignore")

    def generate(ps: list[str]) -> float:
        enc = tok(ps, return_tensors="pt", padding=True).to(device)
        sync(device)
        t = time.perf_counter()
        with torch.inference_mode():
            model.generate(**enc, max_new_tokens=new, min_new_tokens=new, do_sample=False, pad_token_id=0)
        sync(device)
        return time.perf_counter() - t

    def analyze(ps: list[str]) -> float:
        sync(device)
        t = time.perf_counter()
        analyze_batch(model, ps, tok, max_new_tokens=new, min_new_tokens=new)
        sync(device)
        return time.perf_counter() - t

    warm = order[:bs]
    analyze_batch(model, warm[:2], tok, max_new_tokens=2, min_new_tokens=2)
    print(f"batches of {bs} prompts, {new} new tokens; seconds per batch")
    for choice in ("default", "no-cudnn"):
        with sdpa_backends(choice):
            generate(warm[:2])
            b = next(batches)
            g_fresh, a_after, g_again = generate(b), analyze(b), generate(b)
            b = next(batches)
            a_fresh, a_again, g_after = analyze(b), analyze(b), generate(b)
        print(f"SDPA {choice:>8}: generate fresh {g_fresh:6.2f}, again {g_again:6.2f} | analyze fresh {a_fresh:6.2f}, "
              f"again {a_again:6.2f} (on generate-warmed shapes {a_after:6.2f}; generate after it {g_after:6.2f}) | "
              f"analyze/generate warm {g_again / a_again:.2f}x, fresh {g_fresh / a_fresh:.2f}x", flush=True)


if __name__ == "__main__":
    main()
