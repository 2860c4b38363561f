"""Does the verdict mean something? SmolLM2 on the CPU, with the model's own baseline.

1. Fit: the built-in ordinary prompts (``FIT_PROMPTS``) traced with ``analyze_many`` and a
   :class:`~corevital_widgets.Baseline` fitted on them (``--write-default`` ships it); the wall
   time of tracing and of fitting.
2. Ordinary prompts written apart (``EVALUATION_PROMPTS``): share green / yellow / red.
3. Injected faults on evaluation prompts: NaN in a middle layer, x1000 activations in a middle
   layer, a frozen final layer (all must be red with the right flag), and one middle-layer head
   whose queries are scaled x30 (must be yellow, blamed on that layer and head).
4. The false-alarm rate on held-out healthy runs for two alpha values: the fitting and
   evaluation traces pooled, split at random 50 times into a baseline part and a held-out part;
   the share of held-out runs that alarm, with its binomial sampling error.

    python benchmarks/bench_verdict.py [--n-fit 200] [--runs runs/verdict] [--write-default]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
import corevital_widgets as corevital  # noqa: E402
from corevital_widgets.analysis.baseline import Baseline  # noqa: E402
from corevital_widgets.analysis.ordinary_prompts import EVALUATION_PROMPTS, FIT_PROMPTS, chat_or_plain  # noqa: E402
from corevital_widgets.analysis.verdict import assess  # noqa: E402
from corevital_widgets.batch import _numeric_fault, analyze_many  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.test_faults import bent_head_hook, frozen_fault, layer_hook  # noqa: E402  (the shared fault injections)

MID, HEAD, NEW_TOKENS = 15, 4, 32
DEFAULT_FILE = Path(__file__).resolve().parents[1] / "src" / "corevital_widgets" / "data" / "baseline_smollm2.json"


def _hook(module, fault, from_call=2):
    return layer_hook(module, fault, from_call)


def faults(model):
    return {
        "nan in layer 15": (lambda: _hook(model.model.layers[MID], lambda h: torch.full_like(h, float("nan"))), "red", "NaN"),
        "x1000 in layer 15": (lambda: _hook(model.model.layers[MID], lambda h: h * 1000.0), "red", "mid-layer anomaly"),
        # a fresh frozen state for every run
        "frozen final layer": (lambda: _hook(model.model.layers[-1], frozen_fault()), "red", "repetition loop"),
        "head 4 of layer 15 queries x30": (lambda: bent_head_hook(model.model.layers[MID].self_attn, HEAD), "yellow",
                                           f"layer {MID}"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-fit", type=int, default=220)
    ap.add_argument("--runs", default="runs/verdict", help="folder for the traces (a re-run resumes)")
    ap.add_argument("--fault-prompts", type=int, default=5)
    ap.add_argument("--splits", type=int, default=50)
    ap.add_argument("--write-default", action="store_true", help="ship the fitted baseline in the package")
    args = ap.parse_args()
    model, tok = corevital.load_default_model()
    runs = Path(args.runs)

    t0 = time.perf_counter()
    fit_prompts = [chat_or_plain(tok, t, c) for t, c in FIT_PROMPTS[: args.n_fit]]
    fit_ts = analyze_many(model, fit_prompts, tok, out_dir=runs / "fit", max_new_tokens=NEW_TOKENS, progress=False)
    t1 = time.perf_counter()
    fit_traces = [t for t in fit_ts if not _numeric_fault(t)]
    base = Baseline.fit(fit_traces, description=f"{len(fit_prompts)} built-in ordinary prompts (FIT_PROMPTS), "
                                                  f"{NEW_TOKENS} new tokens, greedy")
    t2 = time.perf_counter()
    print(f"fit: {len(fit_prompts)} prompts traced in {t1 - t0:.0f} s (cached traces are not re-traced), baseline fitted "
          f"in {t2 - t1:.1f} s on {base.n_traces} runs ({base.n_calibration} for calibration); thresholds "
          + ", ".join(f"alpha {a:g}: {t:.2f}" for a, t in sorted(base.thresholds.items())))
    if args.write_default:
        base.save(DEFAULT_FILE)
        print(f"written {DEFAULT_FILE}")
    corevital.register_baseline(base)

    eval_prompts = [chat_or_plain(tok, t, c) for t, c in EVALUATION_PROMPTS]
    eval_ts = analyze_many(model, eval_prompts, tok, out_dir=runs / "eval", max_new_tokens=NEW_TOKENS, progress=False)
    verdicts = [assess(t, base) for t in eval_ts]
    colors = [v.color for v in verdicts]
    print(f"ordinary prompts written apart ({len(colors)}): green {colors.count('green')}, yellow {colors.count('yellow')}, "
          f"red {colors.count('red')} -> {100 * colors.count('green') / len(colors):.0f}% green")
    for v, p in zip(verdicts, EVALUATION_PROMPTS):
        if v.color != "green":
            print(f"  {v.color}: {p[0]!r}: {v.sentence}")
    print("the absolute rules alone (previous badge): "
          f"{sum(t.health.verdict == 'yellow' for t in eval_ts)} of {len(colors)} yellow")

    for name, (install, want, words) in faults(model).items():
        ok = 0
        for text, chat in EVALUATION_PROMPTS[: args.fault_prompts]:
            handle = install()
            try:
                trace = corevital.analyze(model, chat_or_plain(tok, text, chat), tok, max_new_tokens=NEW_TOKENS)
            finally:
                handle.remove()
            v = assess(trace, base)
            hit = v.color == want and words in v.sentence
            if want == "yellow":
                hit = hit and bool(v.blame) and v.blame[0].layer == MID and HEAD in v.blame[0].reasons[0].heads
            ok += hit
            if not hit:
                print(f"  missed ({name}): {v.color}: {v.sentence}")
        print(f"fault {name}: {ok}/{args.fault_prompts} {want} with the right flag/blame")

    pool = fit_traces + [t for t in eval_ts if not _numeric_fault(t)]
    rng = np.random.default_rng(0)
    for alpha in (0.05, 0.10):
        rates = []
        for _ in range(args.splits):
            order = rng.permutation(len(pool))
            n_fit = int(len(pool) * 0.6)
            b = Baseline.fit([pool[i] for i in order[:n_fit]], seed=int(rng.integers(1 << 30)))
            held = [pool[i] for i in order[n_fit:]]
            rates.append(np.mean([b.deviation(t, alpha).unusual for t in held]))
        n_held = len(pool) - int(len(pool) * 0.6)
        se = np.sqrt(alpha * (1 - alpha) / n_held)
        print(f"false-alarm rate at alpha {alpha:g}: {np.mean(rates):.3f} (split-to-split sd {np.std(rates):.3f}, "
              f"{args.splits} splits of {len(pool)} healthy runs, {n_held} held out each; binomial error of one split "
              f"{se:.3f})")


if __name__ == "__main__":
    main()
