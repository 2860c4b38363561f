"""Batched-analysis benchmark: traced tokens per second of ``analyze_many`` at batch sizes 1, 8
and 32 against plain batched ``model.generate`` at the same sizes, in one run.

Default (the GPU row of issue 16): a random-weight 8B-class Llama config (hidden 4096, 32 layers,
32 heads over 8 key-value heads, intermediate 14336, vocabulary 128256) in bfloat16 on CUDA, 512
prompts of 200-800 tokens, 64 new tokens (every run forced to exactly 64 with min_new_tokens).
The prompts are random words of an offline word-level tokenizer (one token per word), so lengths
are exact. Both sides sort the prompts by length and pad on the left, the same batches. Batch
size 1 (both sides) runs on the first ``--batch1-prompts`` prompts only (it is a rate; tracing 512
prompts one at a time takes most of an hour), the larger sizes on all of them. analyze_many writes
every trace to a temporary out_dir, as a dataset run does (``--in-memory`` keeps them in memory).

Steady state by default: before each batch size's timed rows, one untimed pass of plain generate
runs over the same batches, so that neither side pays torch's first-time cost of a new attention
shape (cuDNN attention builds a plan per shape: seconds per batch of new lengths). Without it
(``--no-warm-shapes``) generate pays that cost on every batch and analyze_many, run second,
does not: a flattering ratio. analyze_many's own first-time costs (its kernels' variants, its
allocations) stay inside its timed pass unless ``--warm-analyze`` gives it an untimed pass too.

Targets: analyze_many at batch 32 >= 0.7x plain batched generate at batch 32, and >= 10x
analyze_many at batch 1.

    python benchmarks/bench_batch.py                      # the GPU row (one H200)
    python benchmarks/bench_batch.py --device cpu --layers 2 --hidden 64 --prompts 16 --new-tokens 8   # smoke

The Ray row (``--ray-workers 1,2``, on a machine with 2 GPUs; needs the ``[ray]`` extra):
``corevital.ray_analyze_many`` over ``--ray-prompts`` prompts at ``--ray-batch-size`` with one
actor per GPU, for each worker count in turn, in one local Ray started once; each actor builds the
same random model on its GPU through a loader (its build time is part of each run, as for a user).
Target: 2 workers (one per GPU) >= 1.8x the traced tokens per second of 1. Each run is also
measured once every actor has saved its first batch (from the trace files' modification times), so
that the fixed start-up (Ray's actors, imports, the model build) can be told from the scaling.

    python benchmarks/bench_batch.py --ray-workers 1,2 --ray-prompts 256
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
import warnings

import torch

TARGET_VS_GENERATE = 0.7
TARGET_VS_BATCH1 = 10.0
TARGET_RAY_SCALING = 1.8


def word_tokenizer(vocab_size: int):
    """An offline word-level ``PreTrainedTokenizerFast``: <pad>=0, <s>=1, </s>=2, then "w3".."w{V-1}",
    one token per whitespace-separated word."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i for i in range(3, vocab_size)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   padding_side="left")


def build_model(args: argparse.Namespace, vocab: int, device: torch.device, dtype: torch.dtype):
    from transformers import LlamaConfig, LlamaForCausalLM

    heads = args.heads or max(2, args.hidden // 128)
    kv_heads = args.kv_heads or max(1, heads // 4)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=args.hidden, intermediate_size=args.intermediate or int(args.hidden * 3.5),
                      num_hidden_layers=args.layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                      max_position_embeddings=max(4096, args.max_len + args.new_tokens + 8), bos_token_id=1,
                      eos_token_id=2, pad_token_id=0, attn_implementation="sdpa")
    cfg.name_or_path = f"random-llama-{args.layers}x{args.hidden}"
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM._from_config(cfg, dtype=dtype)
    return model.eval()


def add_model_args(ap: argparse.ArgumentParser) -> None:
    """The random Llama's options (bench_batch, bench_batch_shapes and profile_batch build it)."""
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default=None, help="default: bfloat16 on CUDA, float32 on the CPU")
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--hidden", type=int, default=4096)
    ap.add_argument("--heads", type=int, default=0, help="default: hidden / 128 (32 for 4096)")
    ap.add_argument("--kv-heads", type=int, default=0, help="default: heads / 4 (8 for 32)")
    ap.add_argument("--intermediate", type=int, default=0, help="default: 3.5 x hidden (14336 for 4096)")
    ap.add_argument("--vocab", type=int, default=128256)


def device_and_dtype(args: argparse.Namespace) -> tuple[torch.device, torch.dtype]:
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.bfloat16 if device.type == "cuda" else torch.float32)
    return device, dtype


def make_prompts(n: int, lo: int, hi: int, vocab: int) -> list[str]:
    rng = random.Random(0)
    return [" ".join(f"w{rng.randrange(3, vocab)}" for _ in range(rng.randint(lo, hi))) for _ in range(n)]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain_generate(model, tok, prompts: list[str], batch_size: int, new_tokens: int, device: torch.device) -> tuple[float, int]:
    """Seconds and generated tokens of plain batched generate (prompts sorted by length, left padding)."""
    order = sorted(prompts, key=lambda p: len(p.split()))
    tokens = 0
    sync(device)
    t = time.perf_counter()
    for b0 in range(0, len(order), batch_size):
        enc = tok(order[b0 : b0 + batch_size], return_tensors="pt", padding=True).to(device)
        with torch.inference_mode():
            out = model.generate(**enc, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                                 pad_token_id=tok.pad_token_id)
        tokens += (out.shape[1] - enc["input_ids"].shape[1]) * out.shape[0]
    sync(device)
    return time.perf_counter() - t, tokens


def traced(model, tok, prompts: list[str], batch_size: int, new_tokens: int, device: torch.device,
           in_memory: bool) -> tuple[float, int]:
    """Seconds and traced tokens of analyze_many at ``batch_size`` (traces saved to a temporary folder)."""
    from corevital_widgets.batch import analyze_many

    with tempfile.TemporaryDirectory() as out:
        sync(device)
        t = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")  # kept, not shown: the sparse-profile size notes of random weights
            ts = analyze_many(model, prompts, tok, out_dir=None if in_memory else out, progress=False,
                              batch_size=batch_size, max_new_tokens=new_tokens, min_new_tokens=new_tokens)
        sync(device)
        seconds = time.perf_counter() - t
    alone = [str(w.message) for w in caught if any(k in str(w.message) for k in ("one at a time", "splitting", "split into"))]
    if alone:  # a batch traced one prompt at a time (or split) is part of the rate: say so
        print(f"    {len(alone)} batch(es) not run whole: {alone[0][:300]}")
    return seconds, len(ts) * new_tokens  # min_new_tokens: every prompt traced exactly new_tokens steps


class RandomModelLoader:
    """Picklable loader for Ray actors: the benchmark's random model on the actor's GPU (Ray
    shows each GPU actor only its own GPU as cuda:0) and the word tokenizer."""

    def __init__(self, args: argparse.Namespace, dtype: torch.dtype) -> None:
        self.args, self.dtype = args, dtype

    def __call__(self):
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return build_model(self.args, self.args.vocab, device, self.dtype), word_tokenizer(self.args.vocab)


def ray_rows(args: argparse.Namespace, prompts: list[str], dtype: torch.dtype) -> None:
    """ray_analyze_many with 1, 2, ... workers over the same prompts, one local Ray."""
    import ray

    from corevital_widgets.distributed import ray_analyze_many

    t0 = time.perf_counter()
    ray.init(include_dashboard=False, log_to_driver=False)
    print(f"  Ray started in {time.perf_counter() - t0:.1f} s", flush=True)
    loader = RandomModelLoader(args, dtype)
    counts = [int(w) for w in args.ray_workers.split(",")]
    subset = prompts[: args.ray_prompts]
    kw = dict(model_name="random-llama", batch_size=args.ray_batch_size, progress=False,
              max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens)
    print(f"Ray: {ray.cluster_resources().get('GPU', 0):g} GPUs; {len(subset)} prompts at batch size "
          f"{args.ray_batch_size}, {args.new_tokens} new tokens; each run builds its model(s) in its actor(s)")
    with tempfile.TemporaryDirectory() as out, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if args.ray_warm:  # Triton's kernel cache, shared by later actors; actor start-up measured alone
            t0 = time.perf_counter()
            ray_analyze_many(loader, subset[: 2 * max(counts)], os.path.join(out, "warm"), num_workers=max(counts),
                             **{**kw, "batch_size": 2, "max_new_tokens": 2, "min_new_tokens": 2})
            print(f"  warm-up ({max(counts)} actors start, build their models, trace 2 prompts each): "
                  f"{time.perf_counter() - t0:.1f} s", flush=True)
        rates, after = {}, {}
        for workers in counts:
            t = time.perf_counter()
            ray_analyze_many(loader, subset, os.path.join(out, f"w{workers}"), num_workers=workers, **kw)
            seconds = time.perf_counter() - t
            rates[workers] = len(subset) * args.new_tokens / seconds
            after[workers] = rate_after_first_batches(os.path.join(out, f"w{workers}"), workers * args.ray_batch_size,
                                                      args.new_tokens)
            print(f"  {workers} worker(s): {seconds:7.1f} s   {rates[workers]:8.1f} traced tok/s whole run; "
                  f"{after[workers]:8.1f} tok/s once every actor saved its first batch", flush=True)
    ray.shutdown()
    one, most = rates[min(counts)], max(counts)
    ratio = rates[most] / one
    print(f"target: {most} workers >= {TARGET_RAY_SCALING}x {min(counts)}: {ratio:.2f}x "
          f"{'PASS' if ratio >= TARGET_RAY_SCALING else 'FAIL'} (whole runs, actor start-up and model build included); "
          f"{after[most] / after[min(counts)]:.2f}x once every actor saved its first batch")


def rate_after_first_batches(out_dir: str, first_files: int, new_tokens: int) -> float:
    """Traced tokens per second between the ``first_files``-th saved trace file (every actor's
    first batch on disk: start-up and model build behind) and the last one, from the files'
    modification times (every run is forced to ``new_tokens`` tokens)."""
    from corevital_widgets.batch import TRACE_SUFFIX

    times = sorted(os.path.getmtime(os.path.join(out_dir, f)) for f in os.listdir(out_dir) if f.endswith(TRACE_SUFFIX))
    if len(times) <= first_files:
        return float("nan")
    return (len(times) - first_files) * new_tokens / max(1e-9, times[-1] - times[first_files - 1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(ap)
    ap.add_argument("--prompts", type=int, default=512)
    ap.add_argument("--min-len", type=int, default=200)
    ap.add_argument("--max-len", type=int, default=800)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--batch-sizes", default="1,8,32")
    ap.add_argument("--batch1-prompts", type=int, default=32, help="prompts traced at batch size 1 (a rate)")
    ap.add_argument("--in-memory", action="store_true", help="keep traces in memory instead of saving them")
    ap.add_argument("--sdpa", choices=("default", "no-cudnn"), default="default",
                    help="no-cudnn: both sides run with torch's flash / memory-efficient / math attention only "
                         "(torch's cuDNN attention builds a plan for every new shape: seconds per batch of new lengths)")
    ap.add_argument("--warm-shapes", action=argparse.BooleanOptionalAction, default=True,
                    help="steady state (the default): one untimed pass of plain generate over every batch first, so "
                         "that neither side pays torch's first-time cost of a new attention shape. --no-warm-shapes: "
                         "generate runs each batch first and pays it, and analyze_many then runs warm (flatters "
                         "analyze_many: 0.87x where the steady state is 0.52x on the H200)")
    ap.add_argument("--warm-analyze", action="store_true",
                    help="also one untimed pass of analyze_many over every batch before its timed one (its own "
                         "first-time costs: kernel variants, allocations), as generate gets; off by default, so the "
                         "row times analyze_many's first pass over its batches")
    ap.add_argument("--ray-workers", default="", help="the Ray row instead: worker counts, e.g. 1,2")
    ap.add_argument("--ray-prompts", type=int, default=256)
    ap.add_argument("--ray-batch-size", type=int, default=32)
    ap.add_argument("--ray-warm", type=int, default=1, help="0: no warm-up run before the timed Ray runs")
    args = ap.parse_args()

    device, dtype = device_and_dtype(args)
    if device.type == "cpu":
        torch.set_num_threads(max(1, min(torch.get_num_threads(), os.cpu_count() or 1)))
    tok = word_tokenizer(args.vocab)
    if args.ray_workers:
        ray_rows(args, make_prompts(args.prompts, args.min_len, args.max_len, args.vocab), dtype)
        return
    t = time.perf_counter()
    model = build_model(args, args.vocab, device, dtype)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: random Llama, {args.layers} layers, hidden {args.hidden}, heads {model.config.num_attention_heads}/"
          f"{model.config.num_key_value_heads}, vocab {args.vocab}, {n_params / 1e9:.2f} B params, {dtype}, {device} "
          f"(built in {time.perf_counter() - t:.1f} s)")
    prompts = make_prompts(args.prompts, args.min_len, args.max_len, args.vocab)
    sizes = [int(s) for s in args.batch_sizes.split(",")]
    print(f"{len(prompts)} prompts of {args.min_len}-{args.max_len} tokens, {args.new_tokens} new tokens; batch size 1 on "
          f"the first {min(args.batch1_prompts, len(prompts))}; SDPA backends: {args.sdpa}")

    with sdpa_backends(args.sdpa):
        table(args, model, tok, prompts, sizes, device)


def sdpa_backends(choice: str):
    """The SDPA backends both sides run with (the model computes the same attention either way,
    rounded differently)."""
    import contextlib

    if choice == "default":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])


def table(args: argparse.Namespace, model, tok, prompts: list[str], sizes: list[int], device: torch.device) -> None:
    """The generate / analyze_many rows and the targets."""
    warm = prompts[: min(2, len(prompts))]  # compile / allocate once, outside the timings
    plain_generate(model, tok, warm, len(warm), 2, device)
    traced(model, tok, warm, len(warm), 2, device, True)
    traced(model, tok, warm[:1], 1, 2, device, True)

    rows = []
    for bs in sizes:
        subset = prompts[: args.batch1_prompts] if bs == 1 else prompts
        if args.warm_shapes:
            f_s, f_tok = plain_generate(model, tok, subset, bs, args.new_tokens, device)
            print(f"  batch {bs:>3}: untimed warm pass, plain generate on shapes it had not seen: {f_tok / f_s:9.1f} tok/s "
                  f"({f_s:7.1f} s)", flush=True)
        g_s, g_tok = plain_generate(model, tok, subset, bs, args.new_tokens, device)
        if args.warm_analyze:
            w_s, w_tok = traced(model, tok, subset, bs, args.new_tokens, device, args.in_memory)
            print(f"  batch {bs:>3}: untimed warm pass, analyze_many on batches it had not traced: "
                  f"{w_tok / w_s:9.1f} tok/s ({w_s:7.1f} s)", flush=True)
        a_s, a_tok = traced(model, tok, subset, bs, args.new_tokens, device, args.in_memory)
        rows.append((bs, len(subset), g_tok / g_s, a_tok / a_s, g_s, a_s))
        print(f"  batch {bs:>3}: {len(subset)} prompts  generate {g_tok / g_s:9.1f} tok/s ({g_s:7.1f} s)   "
              f"analyze_many {a_tok / a_s:9.1f} tok/s ({a_s:7.1f} s)", flush=True)

    base = next((r[3] for r in rows if r[0] == 1), None)
    print()
    print(f"{'batch':>5} {'prompts':>7} {'generate tok/s':>15} {'analyze_many tok/s':>19} {'vs generate':>12} {'vs analyze bs1':>15}")
    for bs, n, g, a, _, _ in rows:
        vs_base = f"{a / base:14.1f}x" if base else f"{'-':>15}"
        print(f"{bs:>5} {n:>7} {g:>15.1f} {a:>19.1f} {a / g:>11.2f}x {vs_base}")
    big = max(rows, key=lambda r: r[0])
    print()
    ok_gen = big[3] / big[2] >= TARGET_VS_GENERATE
    protocol = "both warm" if args.warm_analyze else "analyze_many's first pass"
    print(f"target: analyze_many at batch {big[0]} >= {TARGET_VS_GENERATE}x plain generate at batch {big[0]} ({protocol}): "
          f"{big[3] / big[2]:.2f}x {'PASS' if ok_gen else 'FAIL'}")
    if base:
        ok_base = big[3] / base >= TARGET_VS_BATCH1
        print(f"target: analyze_many at batch {big[0]} >= {TARGET_VS_BATCH1:.0f}x analyze_many at batch 1: "
              f"{big[3] / base:.1f}x {'PASS' if ok_base else 'FAIL'}")


if __name__ == "__main__":
    main()
