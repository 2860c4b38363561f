"""Where the time goes (run through the device tool): torch-profiler tables for
``analyze``'s prompt telemetry on the 8B config and for decode steps on the 1B config.

    python benchmarks/profile_gpu.py [--prompt 8192] [--decode-tokens 32] [--rows 25]

Prints, for the prompt pass, the operators by total GPU time and by CPU time; for decoding,
kernel launches per generated token and CPU time per token, plain SDPA generate vs analyze
(no prompt telemetry), and the operators our hooks add.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
import corevital_widgets as corevital  # noqa: E402
from bench_gpu import build, prompt_of, word_tokenizer  # noqa: E402


def kernel_count(prof) -> int:
    return sum(e.count for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--prompt", type=int, default=8192)
    ap.add_argument("--decode-tokens", type=int, default=32)
    ap.add_argument("--rows", type=int, default=25)
    ap.add_argument("--skip-prompt", action="store_true")
    ap.add_argument("--cprofile", action="store_true", help="Python-level profile of the decode runs instead")
    args = ap.parse_args()
    acts = [ProfilerActivity.CPU, ProfilerActivity.CUDA]

    if not args.skip_prompt:
        model = build("8b")
        tok = word_tokenizer(model.config.vocab_size)
        pr = prompt_of(args.prompt, model.config.vocab_size, seed=args.prompt)
        corevital.analyze(model, pr, tok, max_new_tokens=1)  # warm-up (kernel compilation)
        torch.cuda.synchronize()
        t = time.perf_counter()
        corevital.analyze(model, pr, tok, max_new_tokens=1)
        torch.cuda.synchronize()
        print(f"8b prompt telemetry, {args.prompt} tokens: {time.perf_counter() - t:.3f} s wall")
        with profile(activities=acts) as prof:
            corevital.analyze(model, pr, tok, max_new_tokens=1)
            torch.cuda.synchronize()
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=args.rows))
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))
        del model
        torch.cuda.empty_cache()

    model = build("1b")
    tok = word_tokenizer(model.config.vocab_size)
    n = args.decode_tokens
    pr = prompt_of(512, model.config.vocab_size)
    ids = tok(pr, return_tensors="pt")["input_ids"].cuda()

    def plain():
        with torch.inference_mode():
            model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                           do_sample=False, pad_token_id=0)

    def ours():
        corevital.analyze(model, pr, tok, max_new_tokens=n, min_new_tokens=n, prompt_telemetry=False)

    def fixed_cost(fn_tokens) -> float:
        fn_tokens(1)
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(5):
            fn_tokens(1)
        torch.cuda.synchronize()
        return (time.perf_counter() - t) / 5

    one_plain = fixed_cost(lambda k: model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=k,
                                                    min_new_tokens=k, do_sample=False, pad_token_id=0))
    one_ours = fixed_cost(lambda k: corevital.analyze(model, pr, tok, max_new_tokens=k, min_new_tokens=k,
                                                      prompt_telemetry=False))
    print(f"one token (fixed cost per call): generate {one_plain * 1e3:.1f} ms, analyze {one_ours * 1e3:.1f} ms")
    def ours_fn_only():  # the model's attention function tapped, nothing collected: the tap's own cost
        from corevital_widgets.engine.attention import tapped_attention

        with tapped_attention([layer.self_attn for layer in model.model.layers], "sdpa"):
            plain()

    if args.cprofile:
        import cProfile
        import pstats

        for name, fn in (("sdpa generate", plain), ("analyze", ours)):
            fn()
            prof = cProfile.Profile()
            prof.enable()
            fn()
            torch.cuda.synchronize()
            prof.disable()
            print(f"--- cProfile: {name}")
            pstats.Stats(prof).sort_stats("tottime").print_stats(args.rows)
        return
    for name, fn in (("sdpa generate", plain), ("tapped attention function only", ours_fn_only),
                     ("analyze, no prompt telemetry", ours)):
        fn()
        torch.cuda.synchronize()
        times = []
        for _ in range(5):
            t = time.perf_counter()
            fn()
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
        with profile(activities=acts) as prof:
            fn()
            torch.cuda.synchronize()
        print(f"{name}: {sorted(times)[2] / n * 1e3:.2f} ms/token (median of 5), "
              f"{kernel_count(prof) / n:.0f} kernels/token")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
