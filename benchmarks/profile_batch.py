"""Where a warm batch's time goes (through the device tool, one H200): ``analyze_batch`` of one
batch of the ``bench_batch.py`` workload against plain batched ``generate`` of the same batch,
both on shapes they have already run (the steady state of a dataset run).

    python benchmarks/profile_batch.py                  # 8B-class random Llama, batch 32
    python benchmarks/profile_batch.py --device cpu --layers 2 --hidden 64 --batch 4 --new-tokens 8   # smoke

Prints:
1. seconds per batch: plain generate; its prefill alone (one forward of the padded batch);
   analyze_batch; analyze_batch without prompt telemetry;
   and analyze_batch's phases, each boundary synchronised (so their sum exceeds the overlapped
   run a little): the prefill forward with its hooks (the prompt pass), the decode steps,
   ``finish_batch`` (last reductions, host copies), the padding probe, assembling each
   sequence's arrays and building its Trace (both on a builder thread in analyze_many,
   overlapped with the next batch);
2. for one more warm run of each side, from torch's profiler: kernels launched, host-blocking
   calls (stream / device synchronisations), the GPU's busy time (summed kernel time) against
   the wall time, and the operators that hold the CPU longest in analyze_batch.

``--pipeline N`` instead follows ``analyze_many``'s own loop over N prompts (batches of
``--batch``, traces saved to a temporary folder): plain generate, then analyze_many, each twice
(first on shapes new to it, then warm), then analyze_many warm in memory; for each analyze_many
run, where its wall time went: the main thread's device work (``pending_batch``), its waits for
the previous batch's traces to be built and saved, and the builder and saver threads' busy time
(a save split into encoding and compressing, writing with its fsync, and the fsyncs alone).

    python benchmarks/profile_batch.py --pipeline 192
    python benchmarks/profile_batch.py --pipeline 192 --pipeline-variants   # + built serially, GIL switch 0.5 ms

``--pipeline-variants`` adds three analyze_many runs in memory or saving: each batch's traces built
serially on the main thread (nothing beside its device work: the device work alone), and a shorter
GIL switch interval (does the main thread wait for the GIL after its host synchronisations?).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
import warnings
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
import bench_batch as bb  # noqa: E402
from bench_batch import sync  # noqa: E402

from corevital_widgets.engine import analyze as analyze_module  # noqa: E402
from corevital_widgets.engine import batched  # noqa: E402

SYNC_CALLS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize")


def timed(fn, device: torch.device) -> float:
    sync(device)
    t = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t


class _Clock:
    """Seconds summed by name (thread-safe), from timing wrappers patched onto functions and
    methods; every patch is undone on exit. With a CUDA ``device`` each wrapper synchronises at
    its boundaries (phases of one thread); without, it times wall time only (parts that overlap
    on several threads)."""

    def __init__(self, device: torch.device | None = None) -> None:
        import threading

        self.device, self.t = device, {}
        self._lock = threading.Lock()
        self._saved: list[tuple[object, str, object]] = []

    def add(self, name: str, seconds: float) -> None:
        with self._lock:
            self.t[name] = self.t.get(name, 0.0) + seconds

    def _sync(self) -> None:
        if self.device is not None:
            sync(self.device)

    def timed(self, name: str, fn):
        """``fn``, its calls' seconds added under ``name``."""
        def wrapper(*args, **kwargs):
            self._sync()
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self._sync()
                self.add(name, time.perf_counter() - t)
        return wrapper

    def patch(self, owner: object, attr: str, fn) -> None:
        self._saved.append((owner, attr, getattr(owner, attr)))
        setattr(owner, attr, fn)

    def patch_timed(self, owner: object, attr: str, name: str) -> None:
        self.patch(owner, attr, self.timed(name, getattr(owner, attr)))

    def __exit__(self, *exc) -> None:
        for owner, attr, real in reversed(self._saved):
            setattr(owner, attr, real)


class Phases(_Clock):
    """Wall time of analyze_batch's phases: wraps the collector's step hooks and the functions
    that run after generate, synchronising at each boundary."""

    def __init__(self, device: torch.device) -> None:
        super().__init__(device)
        self._marks: dict[str, float] = {}

    def _mark(self, name: str) -> None:
        self._sync()
        self._marks[name] = time.perf_counter()

    def __enter__(self) -> "Phases":
        collector = batched.BatchedCollector
        pre, out = collector._on_model_pre, collector._on_model_out
        phases = self

        def on_pre(c, *a, **k):
            if c.step == -1:  # the prefill forward begins
                phases._mark("prefill")
            return pre(c, *a, **k)

        def on_out(c, *a, **k):
            result = out(c, *a, **k)
            if c.step == 0:
                phases._sync()
                phases.add("prompt pass (prefill forward + telemetry)", time.perf_counter() - phases._marks["prefill"])
                phases._marks["decode"] = time.perf_counter()
            return result

        finish = self.timed("finish_batch (last reductions, host copies)", collector.finish_batch)

        def on_finish(c, *a, **k):
            phases._sync()
            phases.add("decode steps", time.perf_counter() - phases._marks["decode"])
            return finish(c, *a, **k)

        for attr, fn in (("_on_model_pre", on_pre), ("_on_model_out", on_out), ("finish_batch", on_finish)):
            self.patch(collector, attr, fn)
        self.patch_timed(batched, "_check_probe", "padding probe (two single-prompt forwards)")
        self.patch_timed(batched.BatchedCollector, "assemble", "assembling each sequence's arrays")
        self.patch_timed(analyze_module, "_build_trace", "building the Trace objects")
        return self


def profiled(fn, device: torch.device, rows: int, label: str) -> None:
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sync(device)
    t = time.perf_counter()
    with profile(activities=acts) as prof:
        fn()
        sync(device)
    wall = time.perf_counter() - t
    events = prof.key_averages()
    kernels = sum(e.count for e in events if e.device_type == torch.autograd.DeviceType.CUDA)
    busy = sum(e.self_device_time_total for e in events if e.device_type == torch.autograd.DeviceType.CUDA) / 1e6
    syncs = sum(e.count for e in events if e.key in SYNC_CALLS)
    copies = sum(e.count for e in events if e.key.startswith("cudaMemcpy"))
    print(f"{label}: wall {wall:.2f} s (profiled), kernels {kernels:,}, GPU busy {busy:.2f} s "
          f"({busy / wall:.0%}), synchronisations {syncs:,}, cudaMemcpy calls {copies:,}")
    if rows:
        print(events.table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=60))


#: The main thread's device work in PipelineClock's sums, and its trace building when serial.
MAIN_BUSY = "main: pending_batch (device work)"
MAIN_BUILD = "main: assemble + Trace (serial)"


class PipelineClock(_Clock):
    """Busy seconds of analyze_many's parts, from wrappers around the functions each thread runs.
    ``serial``: each batch's traces are built on the main thread right after its device work
    (nothing overlaps it), to tell the device work itself from what the threads beside it cost."""

    def __init__(self, serial: bool = False) -> None:
        super().__init__()
        self.serial = serial

    def __enter__(self) -> "PipelineClock":
        import corevital_widgets.batch as batch_module
        from corevital_widgets.trace import storage
        from corevital_widgets.trace.trace import Trace

        pending = self.timed(MAIN_BUSY, batched.pending_batch)
        build = self.timed(MAIN_BUILD if self.serial else "builder: assemble + Trace", lambda make: make())

        def pending_then_build(*a, **k):
            makers = pending(*a, **k)
            if self.serial:
                return [batched._ready(build(make)) for make in makers]
            return [functools.partial(build, make) for make in makers]

        self.patch(batched, "pending_batch", pending_then_build)
        self.patch_timed(batch_module, "trace_summary_row", "builder: summary row")
        self.patch_timed(Trace, "save", "savers: save (summed over threads)")
        # what a save is made of (beside the launching thread a save took 0.40 s on the H200 host at
        # zstd level 3, 0.17 s alone: 0.115 s of it compressing)
        self.patch_timed(storage, "_encode", "savers: of which encode + compress")
        self.patch_timed(storage, "write_bytes_atomic", "savers: of which write + fsync + rename (the manifest's too)")
        self.patch_timed(os, "fsync", "savers: of which fsync (the manifest's too)")
        return self


def pipeline(args: argparse.Namespace, model, tok, device: torch.device) -> None:
    """analyze_many's loop, part by part (see the module docstring)."""
    prompts = bb.make_prompts(args.pipeline, args.min_len, args.max_len, args.vocab)
    n, bs = args.new_tokens, args.batch
    print(f"analyze_many pipeline: {len(prompts)} prompts of {args.min_len}-{args.max_len} tokens, batch {bs}, "
          f"{n} new tokens, SDPA backends: {args.sdpa}")
    bb.traced(model, tok, prompts[:2], 2, 2, device, True)  # kernels compiled, outside the timings
    fast = 0.0005  # seconds: sys.setswitchinterval's for the runs that say so (CPython's default is 0.005)
    # (label, in memory: None for plain generate, serial, switch interval)
    runs = [("plain generate, shapes new to it", None, False, None), ("analyze_many, shapes new to it", False, False, None),
            ("plain generate, warm", None, False, None), ("analyze_many, warm", False, False, None),
            ("analyze_many, warm, in memory", True, False, None)]
    if args.pipeline_variants:
        runs += [("analyze_many, warm, in memory, built serially on the main thread", True, True, None),
                 (f"analyze_many, warm, in memory, switch interval {fast * 1e3:g} ms", True, False, fast),
                 (f"analyze_many, warm, switch interval {fast * 1e3:g} ms", False, False, fast)]
    default_interval = sys.getswitchinterval()
    for label, in_memory, serial, interval in runs:
        if in_memory is None:
            seconds, tokens = bb.plain_generate(model, tok, prompts, bs, n, device)
            print(f"{label}: {seconds:.1f} s, {tokens / seconds:.1f} tok/s", flush=True)
            continue
        sys.setswitchinterval(interval or default_interval)
        try:
            with PipelineClock(serial) as clock:
                seconds, tokens = bb.traced(model, tok, prompts, bs, n, device, in_memory)
        finally:
            sys.setswitchinterval(default_interval)
        print(f"{label}: {seconds:.1f} s, {tokens / seconds:.1f} tok/s", flush=True)
        main_busy = clock.t.get(MAIN_BUSY, 0.0) + clock.t.get(MAIN_BUILD, 0.0)
        for name, busy in clock.t.items():
            print(f"  {busy:7.2f} s  {name}")
        print(f"  {seconds - main_busy:7.2f} s  main: the rest (waiting for the builder and savers, manifest, set-up)",
              flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    bb.add_model_args(ap)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--first", type=int, default=4, help="which batch of the sorted 512 prompts (0 = shortest)")
    ap.add_argument("--min-len", type=int, default=200)
    ap.add_argument("--max-len", type=int, default=800)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--sdpa", choices=("default", "no-cudnn"), default="default")
    ap.add_argument("--rows", type=int, default=20, help="operators listed (0: none)")
    ap.add_argument("--pipeline", type=int, default=0, help="N: analyze_many's loop over N prompts instead")
    ap.add_argument("--pipeline-variants", action="store_true",
                    help="with --pipeline: also built serially, and with a shorter GIL switch interval")
    args = ap.parse_args()
    device, dtype = bb.device_and_dtype(args)
    model = bb.build_model(args, args.vocab, device, dtype)
    tok = bb.word_tokenizer(args.vocab)
    if args.pipeline:
        with bb.sdpa_backends(args.sdpa):
            pipeline(args, model, tok, device)
        return
    prompts = sorted(bb.make_prompts(512, args.min_len, args.max_len, args.vocab), key=lambda p: len(p.split()))
    batch = prompts[args.first * args.batch : (args.first + 1) * args.batch]
    lengths = [len(p.split()) for p in batch]
    n = args.new_tokens
    kw = dict(max_new_tokens=n, min_new_tokens=n)
    enc = tok(batch, return_tensors="pt", padding=True).to(device)

    def generate():
        with torch.inference_mode():
            model.generate(**enc, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0)

    def analyze(**extra):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            batched.analyze_batch(model, batch, tok, **kw, **extra)

    print(f"batch of {len(batch)} prompts of {min(lengths)}-{max(lengths)} tokens, {n} new tokens, {dtype}, {device}, "
          f"SDPA backends: {args.sdpa}")
    with bb.sdpa_backends(args.sdpa):
        for _ in range(2):  # every shape of both sides seen, kernels compiled
            generate()
            analyze()
            analyze(prompt_telemetry=False)
        g, a, a_np = timed(generate, device), timed(analyze, device), timed(lambda: analyze(prompt_telemetry=False), device)

        def prefill():
            with torch.inference_mode():
                model(**enc, logits_to_keep=1)

        prefill()
        print(f"plain prefill (one forward of the padded batch, as generate's first step): {timed(prefill, device):.3f} s")
        print(f"plain generate {g:.2f} s | analyze_batch {a:.2f} s ({g / a:.2f}x generate) | "
              f"without prompt telemetry {a_np:.2f} s")
        with Phases(device) as phases:
            total = timed(analyze, device)
        print(f"analyze_batch phases (synchronised at each boundary; total {total:.2f} s):")
        for name, seconds in phases.t.items():
            print(f"  {seconds:7.3f} s  {name}")
        print(f"  {total - sum(phases.t.values()):7.3f} s  the rest (set-up, padding, generate's own overhead)")
        profiled(generate, device, 0, "plain generate")
        profiled(analyze, device, args.rows, "analyze_batch")


if __name__ == "__main__":
    main()
