"""GPU benchmark (run through the device tool): corevital vs plain SDPA and vs the eager
``output_attentions`` approach of other tools, on random-weight Llama configs in bf16.

Prints, side by side in one run:
- decode: ``generate`` of 128 tokens after a 512-token prompt — SDPA, eager with all
  attentions/hidden states returned, and ``corevital.analyze`` (every per-step metric, with
  and without prompt telemetry); ratios against SDPA;
- prompt telemetry at 512 / 2k / 8k / 32k tokens: time and extra peak GPU memory of an SDPA
  forward, an eager forward with attentions, and ``analyze(max_new_tokens=1)`` (full prompt
  telemetry: per-head stats, sparse profile, layer transformation, prompt surprisal);
- a correctness check first: the same small random model traced on CUDA and on the CPU.

    python benchmarks/bench_gpu.py [--configs 1b,8b] [--lengths 512,2048,8192,32768] [--repeats 3]
    python benchmarks/bench_gpu.py --devices 2 [--repeats 3]     # 70B-class model sharded over 2 GPUs
    python benchmarks/bench_gpu.py --quantized [--repeats 3]     # bitsandbytes 4-bit / 8-bit overhead

Timings need no trained weights; random weights are initialised on the GPU.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
import corevital_widgets as corevital  # noqa: E402

CONFIGS = {
    # Llama-3.2-1B-like and Llama-3.1-8B-like shapes
    "1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
               num_key_value_heads=8, vocab_size=128256, max_position_embeddings=40960),
    "8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
               num_key_value_heads=8, vocab_size=128256, max_position_embeddings=40960),
}


def word_tokenizer(vocab: int):
    """An offline word-level tokenizer: 'w<i>' is token i (no hub access is needed)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = {f"w{i}": i for i in range(vocab - 1)}
    words["<unk>"] = vocab - 1
    tok = Tokenizer(models.WordLevel(words, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<unk>", pad_token="<unk>")


def prompt_of(n: int, vocab: int, seed: int = 0) -> str:
    ids = np.random.default_rng(seed).integers(0, min(vocab - 1, 50000), n)
    return " ".join(f"w{i}" for i in ids)


def build(name: str, dtype=torch.bfloat16, device: str = "cuda"):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(**CONFIGS[name], attn_implementation="sdpa")
    with torch.device(device):
        model = LlamaForCausalLM._from_config(cfg, dtype=dtype)
    return model.eval()


def cuda_time(fn, repeats: int = 1):
    """(median seconds, extra peak bytes over what was allocated before, last result)."""
    times, peak, out = [], 0, None
    for _ in range(repeats):
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        out = fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
        peak = max(peak, torch.cuda.max_memory_allocated() - base)
        del out
        out = None
    return statistics.median(times), peak


def guarded(fn, repeats=1):
    try:
        return cuda_time(fn, repeats)
    except torch.cuda.OutOfMemoryError:
        gc.collect()
        torch.cuda.empty_cache()
        return None


def fmt(res, base=None):
    if res is None:
        return "out of memory".ljust(34)
    t, m = res
    s = f"{t:7.3f} s {m / 2**30:7.2f} GB"
    if base:
        s += f"  ({t / base[0]:.2f}x, {m / max(base[1], 1):.2f}x mem)"
    return s.ljust(34)


def correctness_check() -> None:
    """The same small random Llama (GQA) traced on CUDA (float32) and CPU: equal traces."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=128, intermediate_size=256, num_hidden_layers=4, num_attention_heads=8,
                      num_key_value_heads=2, vocab_size=1000, max_position_embeddings=4096)
    cpu = LlamaForCausalLM(cfg).eval()
    gpu = LlamaForCausalLM(cfg).eval()
    gpu.load_state_dict(cpu.state_dict())
    gpu = gpu.cuda()
    tok = word_tokenizer(1000)
    prompt = prompt_of(300, 1000, seed=1)
    a = corevital.analyze(cpu, prompt, tok, max_new_tokens=12, min_new_tokens=12)
    b = corevital.analyze(gpu, prompt, tok, max_new_tokens=12, min_new_tokens=12, attention_tile_bytes=2**20)
    worst = {}
    for g in ("timeline", "layers", "attention", "heads", "prompt"):
        for k, x in getattr(a, g).arrays().items():
            if x.dtype.kind == "f":
                y = getattr(getattr(b, g), k)
                worst[f"{g}.{k}"] = float(np.nanmax(np.abs(x.astype(np.float64) - y.astype(np.float64)))) if x.size else 0.0
    same_tokens = bool((a.generated_ids == b.generated_ids).all())
    sparse_diff = max(float(np.abs(a.sparse.dense(l, h) - b.sparse.dense(l, h)).max()) for l in range(4) for h in range(8))
    bad = {k: v for k, v in worst.items() if v > 5e-3}
    print(f"correctness CUDA vs CPU (random Llama, GQA, 300-token prompt, tiled on CUDA): tokens equal={same_tokens}, "
          f"max |diff| over all float arrays {max(worst.values()):.2e}, sparse {sparse_diff:.2e} "
          f"-> {'OK' if same_tokens and not bad and sparse_diff < 5e-3 else 'MISMATCH ' + str(bad)}")


def split_check() -> None:
    """A model split between cuda:0 and the CPU by accelerate (layers 0-3 on the GPU, 4-7 and the head on the CPU):
    every per-layer reduction runs where its layer lives and the trace equals the unsplit
    (all-CPU) run. Counts host<->device copies per step with the profiler, ours vs plain generate."""
    import tempfile

    from torch.profiler import ProfilerActivity, profile
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=512, intermediate_size=1024, num_hidden_layers=8, num_attention_heads=8,
                      num_key_value_heads=4, vocab_size=32000, max_position_embeddings=2048)
    ref = LlamaForCausalLM(cfg).eval()
    tok = word_tokenizer(32000)
    prompt = prompt_of(200, 32000, seed=3)
    n = 10
    with tempfile.TemporaryDirectory() as d:
        ref.save_pretrained(d)
        device_map = {"model.embed_tokens": 0, "model.rotary_emb": 0, "model.norm": "cpu", "lm_head": "cpu",
                      **{f"model.layers.{i}": 0 if i < 4 else "cpu" for i in range(8)}}
        split = AutoModelForCausalLM.from_pretrained(d, device_map=device_map, dtype=torch.float32).eval()
    where = sorted({str(p.device) for p in split.parameters()})
    layer_dev = [str(next(layer.parameters()).device) for layer in split.model.layers]
    a = corevital.analyze(ref, prompt, tok, max_new_tokens=n, min_new_tokens=n)
    b = corevital.analyze(split, prompt, tok, max_new_tokens=n, min_new_tokens=n)
    rel = {}
    for g in ("timeline", "layers", "attention", "heads", "prompt"):
        for k, x in getattr(a, g).arrays().items():
            if x.dtype.kind == "f" and x.size:
                x64, y64 = x.astype(np.float64), getattr(getattr(b, g), k).astype(np.float64)
                rel[f"{g}.{k}"] = float(np.nanmax(np.abs(x64 - y64) / (np.abs(x64) + 1e-2)))
    name = max(rel, key=rel.get)
    worst = rel[name]
    same = bool((a.generated_ids == b.generated_ids).all())
    print(f"split model: parameters on {where}; layers on {layer_dev}")
    print(f"  trace split vs unsplit (CPU): tokens equal={same}, max relative diff {worst:.2e} ({name}), "
          f"sparse entries {a.sparse.nnz} vs {b.sparse.nnz} -> {'OK' if same and worst < 5e-3 else 'MISMATCH'}")

    ids = tok(prompt, return_tensors="pt")["input_ids"]

    def count_copies(fn) -> int:
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            fn()
            torch.cuda.synchronize()
        return sum(1 for e in prof.events() if e.name.startswith("Memcpy") and ("HtoD" in e.name or "DtoH" in e.name))

    plain = count_copies(lambda: split.generate(ids.to("cuda"), attention_mask=torch.ones_like(ids).cuda(),
                                                max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0))
    ours = count_copies(lambda: corevital.analyze(split, prompt, tok, max_new_tokens=n, min_new_tokens=n))
    n_layers = len(split.model.layers)
    print(f"  host<->device copies: plain generate {plain}, analyze {ours}: "
          f"{(ours - plain) / (n * n_layers):.2f} extra per layer per step (prompt pass and final copies included)")

#: Llama-3-70B-like layer shapes for the sharded run (the layer count is chosen to fill the GPUs).
SHARDED_70B = dict(hidden_size=8192, intermediate_size=28672, num_attention_heads=64, num_key_value_heads=8,
                   vocab_size=128256, max_position_embeddings=16384)


def build_sharded(n_devices: int, fill: float = 0.8, max_layers: int = 80):
    """A random-weight 70B-class Llama in bf16 with as many layers as fit ``fill`` of the first
    ``n_devices`` GPUs (at most ``max_layers``), placed by accelerate (``infer_auto_device_map``,
    what ``device_map="auto"`` does) and dispatched with its hooks. Weights are created on the
    meta device and materialised in place on each layer's GPU (no host copy of 100+ GB)."""
    from accelerate import dispatch_model, infer_auto_device_map
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    probe = LlamaConfig(**SHARDED_70B, num_hidden_layers=1)
    with torch.device("meta"):
        one = LlamaForCausalLM._from_config(probe, dtype=torch.bfloat16)
    per_layer = sum(t.numel() for t in one.model.layers[0].parameters()) * 2
    fixed = (sum(t.numel() for t in one.parameters()) * 2) - per_layer
    budget = {i: int(torch.cuda.get_device_properties(i).total_memory * fill) for i in range(n_devices)}
    n_layers = int(min(max_layers, (sum(budget.values()) - fixed) // per_layer))
    cfg = LlamaConfig(**SHARDED_70B, num_hidden_layers=n_layers, attn_implementation="sdpa")
    with torch.device("meta"):
        model = LlamaForCausalLM._from_config(cfg, dtype=torch.bfloat16)
    device_map = infer_auto_device_map(model, max_memory=budget, no_split_module_classes=["LlamaDecoderLayer"],
                                       dtype=torch.bfloat16)
    torch.manual_seed(0)
    for name, dev in device_map.items():
        module = model.get_submodule(name) if name else model
        module.to_empty(device=torch.device("cuda", dev) if isinstance(dev, int) else dev)
        with torch.no_grad():
            for pname, prm in module.named_parameters():
                if "norm" in pname:
                    prm.fill_(1.0)
                else:
                    prm.normal_(0.0, 0.02)
    rot_dev = next(model.model.embed_tokens.parameters()).device
    with torch.device(rot_dev):  # its buffers (inverse frequencies), recomputed on its device
        model.model.rotary_emb = LlamaRotaryEmbedding(config=cfg)
    model = dispatch_model(model, device_map=device_map)
    gb = per_layer * n_layers / 2**30
    return model.eval(), device_map, n_layers, gb


def sharded_run(n_devices: int, repeats: int, decode_tokens: int, decode_prompt: int, prompt_len: int) -> None:
    """Issue 6's run: decode ratio vs plain SDPA generate on the same sharded model, prompt
    telemetry at ``prompt_len`` tokens, and cross-GPU copies per layer per step (profiler)."""
    from torch.profiler import ProfilerActivity, profile

    model, device_map, n_layers, gb = build_sharded(n_devices)
    per_dev: dict = {}
    for i in range(n_layers):  # the device of each layer (a map entry may hold several, or the whole model)
        owner = max((k for k in device_map if f"model.layers.{i}.".startswith(k + "." if k else "")), key=len)
        per_dev[device_map[owner]] = per_dev.get(device_map[owner], 0) + 1
    print(f"sharded: {n_layers} layers of a 70B-class Llama (hidden 8192, 64 heads, 8 KV), bf16, "
          f"{gb:.0f} GB of layer weights over {n_devices} GPU(s); layers per device {per_dev}")
    tok = word_tokenizer(model.config.vocab_size)
    prompt = prompt_of(decode_prompt, model.config.vocab_size)
    first = next(model.model.embed_tokens.parameters()).device
    ids = tok(prompt, return_tensors="pt")["input_ids"].to(first)
    n = decode_tokens

    def gen_sdpa():
        with torch.inference_mode():
            return model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                                  do_sample=False, pad_token_id=0)

    def ours():
        return corevital.analyze(model, prompt, tok, max_new_tokens=n, min_new_tokens=n, prompt_telemetry=False)

    def sync_all():
        for i in range(n_devices):
            torch.cuda.synchronize(i)

    def timed(fn) -> float:
        sync_all()
        t = time.perf_counter()
        fn()
        sync_all()
        return time.perf_counter() - t

    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gen_sdpa(), ours()  # warm-up
    plain_t, ours_t = [], []
    for _ in range(repeats):
        plain_t.append(timed(gen_sdpa))
        ours_t.append(timed(ours))
    ratios = [o / p for o, p in zip(ours_t, plain_t)]
    print(f"decode {n} tokens after {decode_prompt}: SDPA generate {statistics.median(plain_t):.3f} s, "
          f"analyze (every per-step metric) {statistics.median(ours_t):.3f} s; median per-run ratio "
          f"{statistics.median(ratios):.3f} (runs {', '.join(f'{r:.2f}' for r in ratios)})")

    def peer_copies(fn) -> int:
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            fn()
            sync_all()
        # "Memcpy PtoP" = between two GPUs ("DtoD" is a copy within one GPU)
        return sum(1 for e in prof.events() if e.name.startswith("Memcpy") and "PtoP" in e.name)

    short = 16
    plain_c = peer_copies(lambda: model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=short,
                                                 min_new_tokens=short, do_sample=False, pad_token_id=0))
    ours_c = peer_copies(lambda: corevital.analyze(model, prompt, tok, max_new_tokens=short, min_new_tokens=short,
                                                   prompt_telemetry=False))
    print(f"GPU-to-GPU copies over {short} steps: plain generate {plain_c}, analyze {ours_c}: "
          f"{(ours_c - plain_c) / (short * n_layers):.3f} extra per layer per step")

    pr = prompt_of(prompt_len, model.config.vocab_size, seed=prompt_len)
    pid = tok(pr, return_tensors="pt")["input_ids"].to(first)

    def fwd_sdpa():
        with torch.inference_mode():
            return model(pid, use_cache=True, logits_to_keep=1).logits

    def telemetry():
        return corevital.analyze(model, pr, tok, max_new_tokens=1)

    with warnings.catch_warnings(record=True) as caught_prompt:
        warnings.simplefilter("always")
        fwd_sdpa(), telemetry()  # warm-up (kernel compilation)
        base = statistics.median(timed(fwd_sdpa) for _ in range(2))
        tel = statistics.median(timed(telemetry) for _ in range(2))
    print(f"prompt telemetry at {prompt_len} tokens: SDPA forward {base:.3f} s, analyze(max_new_tokens=1) {tel:.3f} s "
          f"({tel / base:.2f}x)")
    fallback = [str(w.message) for w in caught + caught_prompt if "Triton" in str(w.message)]
    print(f"Triton fallback warnings: {len(fallback)}" + (f" ({fallback[0][:200]})" if fallback else ""))


def quantized_run(repeats: int, decode_tokens: int, decode_prompt: int) -> None:
    """bitsandbytes 4-bit (NF4) and 8-bit (LLM.int8) versions of the 1B-class random Llama:
    decode time of analyze vs plain generate on the same quantized model (median of per-run
    ratios), prompt telemetry of a 2k prompt vs a forward."""
    import tempfile

    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    folder = tempfile.mkdtemp()
    model = build("1b")
    model.save_pretrained(folder)
    vocab = model.config.vocab_size
    del model
    gc.collect()
    torch.cuda.empty_cache()
    tok = word_tokenizer(vocab)
    prompt = prompt_of(decode_prompt, vocab)
    configs = {"nf4": BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16),
               "int8": BitsAndBytesConfig(load_in_8bit=True)}
    for name, quant in configs.items():
        model = AutoModelForCausalLM.from_pretrained(folder, quantization_config=quant, device_map={"": 0},
                                                     dtype=torch.bfloat16).eval()
        ids = tok(prompt, return_tensors="pt")["input_ids"].cuda()
        n = decode_tokens

        def gen():
            with torch.inference_mode():
                return model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                                      do_sample=False, pad_token_id=0)

        def ours(telemetry=False):
            return corevital.analyze(model, prompt, tok, max_new_tokens=n, min_new_tokens=n, prompt_telemetry=telemetry)

        gen(), ours()  # warm-up
        plain_t, ours_t, full_t = [], [], []
        for _ in range(repeats):
            plain_t.append(cuda_time(gen)[0])
            ours_t.append(cuda_time(ours)[0])
            full_t.append(cuda_time(lambda: ours(True))[0])
        ratios = [o / p for o, p in zip(ours_t, plain_t)]
        full = [o / p for o, p in zip(full_t, plain_t)]
        print(f"{name}: 1B-class Llama, decode {n} tokens after {decode_prompt}: generate {statistics.median(plain_t):.3f} s, "
              f"analyze (per-step metrics) {statistics.median(ours_t):.3f} s, with prompt telemetry "
              f"{statistics.median(full_t):.3f} s; median per-run ratio {statistics.median(ratios):.3f} "
              f"(runs {', '.join(f'{r:.2f}' for r in ratios)}), with prompt telemetry {statistics.median(full):.3f}")
        del model
        gc.collect()
        torch.cuda.empty_cache()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", default="1b,8b")
    ap.add_argument("--lengths", default="512,2048,8192,32768")
    ap.add_argument("--decode-prompt", type=int, default=512)
    ap.add_argument("--decode-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tile-mb", type=int, default=256, help="attention tile budget (MiB)")
    ap.add_argument("--skip-check", action="store_true")
    ap.add_argument("--split-check", action="store_true", help="only the cuda:0 + CPU split check")
    ap.add_argument("--skip-decode", action="store_true", help="only the prompt-telemetry table")
    ap.add_argument("--devices", type=int, default=0,
                    help="the sharded run instead: a 70B-class model filling this many GPUs (device_map='auto')")
    ap.add_argument("--compare-torch", action="store_true",
                    help="also time prompt telemetry with the tiled torch path (COREVITAL_TRITON=0) beside the kernels")
    ap.add_argument("--quantized", action="store_true",
                    help="the bitsandbytes run instead: 4-bit and 8-bit 1B-class models, analyze vs generate")
    args = ap.parse_args()
    if args.quantized:
        quantized_run(args.repeats, args.decode_tokens, args.decode_prompt)
        return
    if args.split_check:
        split_check()
        return
    if args.devices:
        sharded_run(args.devices, args.repeats, args.decode_tokens, args.decode_prompt, 8192)
        return
    print(f"{torch.cuda.get_device_name()} | torch {torch.__version__} | "
          f"transformers {__import__('transformers').__version__}")
    if not args.skip_check:
        correctness_check()
    tile = args.tile_mb * 2**20
    for name in args.configs.split(","):
        model = build(name)
        cfg = model.config
        tok = word_tokenizer(cfg.vocab_size)
        print(f"\n=== {name}: {cfg.num_hidden_layers} layers x {cfg.num_attention_heads} heads "
              f"({cfg.num_key_value_heads} KV), hidden {cfg.hidden_size}, bf16, "
              f"{sum(p.numel() for p in model.parameters()) / 1e9:.2f} B params ===")
        n, p = args.decode_tokens, args.decode_prompt
        prompt = prompt_of(p, cfg.vocab_size)
        ids = tok(prompt, return_tensors="pt")["input_ids"].cuda()

        def gen_sdpa():
            with torch.inference_mode():
                return model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                                      do_sample=False, pad_token_id=0)

        def gen_eager():
            model.set_attn_implementation("eager")
            try:
                with torch.inference_mode():
                    return model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,
                                          min_new_tokens=n, do_sample=False, pad_token_id=0, output_attentions=True,
                                          output_hidden_states=True, output_scores=True, return_dict_in_generate=True)
            finally:
                model.set_attn_implementation("sdpa")

        def gen_swapped():  # the model's attention function tapped, nothing collected: what the tap alone costs
            from corevital_widgets.engine.attention import tapped_attention

            with tapped_attention([layer.self_attn for layer in model.model.layers], "sdpa"):
                return gen_sdpa()

        def ours(telemetry=True):
            return lambda: corevital.analyze(model, prompt, tok, max_new_tokens=n, min_new_tokens=n,
                                             prompt_telemetry=telemetry, attention_tile_bytes=tile)

        if args.skip_decode:
            runs = None
        else:
            gen_sdpa(), ours()()  # warm-up
            runs = {"sdpa": [], "swap": [], "ours": [], "ours_no_prompt": []}
        for _ in range(args.repeats if runs is not None else 0):
            # alternate, so drift hits all alike
            runs["sdpa"].append(cuda_time(gen_sdpa))
            runs["swap"].append(cuda_time(gen_swapped))
            runs["ours"].append(cuda_time(ours(True)))
            runs["ours_no_prompt"].append(cuda_time(ours(False)))
        if runs is not None:
            med = {k: (statistics.median(t for t, _ in v), max(m for _, m in v)) for k, v in runs.items()}
            eager = guarded(gen_eager)
            print(f"decode: generate {n} tokens after a {p}-token prompt (median of {args.repeats}, alternating)")
            print(f"  SDPA generate                          {fmt(med['sdpa'])}")
            print(f"  eager + all attentions/hidden returned {fmt(eager, med['sdpa'])}")
            print(f"  attention tapped, nothing collected    {fmt(med['swap'], med['sdpa'])}")
            print(f"  corevital.analyze, all metrics         {fmt(med['ours'], med['sdpa'])}")
            print(f"  corevital.analyze, no prompt telemetry {fmt(med['ours_no_prompt'], med['sdpa'])}")
            ratios = [o[0] / s[0] for o, s in zip(runs["ours_no_prompt"], runs["sdpa"])]
            print(f"  median of per-run ratios: analyze/SDPA {statistics.median(ratios):.3f}, "
                  f"swap/SDPA {statistics.median(w[0] / s[0] for w, s in zip(runs['swap'], runs['sdpa'])):.3f}, "
                  f"analyze/swap {statistics.median(o[0] / w[0] for o, w in zip(runs['ours_no_prompt'], runs['swap'])):.3f}")
            print(f"  per-step-metrics ratio (no prompt telemetry) per run: {', '.join(f'{r:.3f}' for r in ratios)}")

        print("prompt telemetry: time, extra peak GPU memory (ratios vs SDPA forward)")
        for length in (int(x) for x in args.lengths.split(",")):
            pr = prompt_of(length, cfg.vocab_size, seed=length)
            pid = tok(pr, return_tensors="pt")["input_ids"].cuda()

            def fwd_sdpa():
                with torch.inference_mode():
                    return model(pid, use_cache=True, logits_to_keep=1).logits

            def fwd_eager():
                model.set_attn_implementation("eager")
                try:
                    with torch.inference_mode():
                        out = model(pid, use_cache=True, logits_to_keep=1, output_attentions=True,
                                    output_hidden_states=True)
                        return out.attentions
                finally:
                    model.set_attn_implementation("sdpa")

            def telemetry():
                import warnings

                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    tr = corevital.analyze(model, pr, tok, max_new_tokens=1, attention_tile_bytes=tile)
                telemetry.cap = tr.sparse.cap
                telemetry.nnz = tr.sparse.nnz
                telemetry.warned = bool(caught)
                return tr

            reps = 1 if length > 8192 else 2
            base = guarded(fwd_sdpa, reps)
            eag = guarded(fwd_eager) if length <= 8192 else None
            guarded(telemetry)  # warm-up: Triton compiles its kernels for this shape class once
            our = guarded(telemetry, reps)
            extra = f"sparse {telemetry.nnz:,} entries" + (f", auto-capped at {telemetry.cap}/row" if telemetry.cap else "") \
                if our else ""
            print(f"  {length:>6} tokens  SDPA {fmt(base)} eager+attn {fmt(eag, base)} corevital {fmt(our, base)} {extra}")
            if args.compare_torch:
                from corevital_widgets.engine.triton_prompt import ENV_SWITCH

                os.environ[ENV_SWITCH] = "0"
                try:
                    tiled = guarded(telemetry, reps)
                finally:
                    os.environ.pop(ENV_SWITCH)
                print(f"  {'':>6}         tiled torch path instead of the Triton kernels: {fmt(tiled, base)}")
        del model
        gc.collect()
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
