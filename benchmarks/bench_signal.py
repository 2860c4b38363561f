"""Does the risk score find wrong answers on questions of kinds it was not fitted on? (SmolLM2)

    python benchmarks/bench_signal.py [--out-dir /tmp/corevital_suite] [--per-family 50]
                                      [--collect-only | --evaluate-only] [--write-default]
                                      [--results-dir DIR] [--device cpu] [--folds 5] [--seed 0]

1. Traces every question of the broad labelled suite (``build_suite``: 18 families, built
   offline) with ``analyze_many`` (greedy, resumable: re-running continues): short answers with
   ``--short-tokens`` new tokens, two-sentence answers with ``--free-tokens``.
2. Grades each answer (label 1 = wrong answer, the event the risk predicts) and writes the
   features table (``suite_features.csv.gz``: question, family, label and every feature, floats
   written exactly) — what the shipped model is refitted from, bit for bit.
3. Headline: leave-one-family-out (``analysis.transfer.evaluate_transfer``): every family is
   scored by a model fitted on the other families only, its feature set chosen by an inner
   leave-one-family-out over those same other families; pooled and per-family AUROC (bootstrap
   95% intervals) and ECE beside the confidence baselines (1 - mean max-prob, mean entropy,
   - sequence log-likelihood, - min margin). Secondary: stratified k-fold with families mixed.
4. Each candidate feature set's own held-out figures and each feature's held-out AUROC.
5. ``--write-default``: the feature set chosen on all families, fitted on all of them, written
   as the shipped SmolLM2 coefficients with the held-out figures in its meta.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

#: New tokens per answer: short answers stop at EOS well before; two sentences need more.
SHORT_TOKENS, FREE_TOKENS = 16, 48
FEATURES_CSV = ROOT / "benchmarks" / "data" / "suite_features_smollm2.csv.gz"


def collect(out_dir: Path, per_family: int, device: str, evaluate_only: bool, short_tokens: int, free_tokens: int,
            batch_size: int = 1):
    """Trace (or, with evaluate_only, read the manifests of) the suite; a DataFrame of features,
    family, difficulty, form, gold answer, answer text and correctness, in suite order."""
    import pandas as pd

    from corevital_widgets.batch import TraceSet, analyze_many
    from corevital_widgets.suite import build_suite, grade, suite_prompts

    items = build_suite(per_family=per_family)
    parts = []
    model = tok = None
    for form, tokens in (("short", short_tokens), ("free", free_tokens)):
        idx = [i for i, it in enumerate(items) if it.form == form]
        if not idx:
            continue
        sub = [items[i] for i in idx]
        folder = out_dir / form
        if evaluate_only:
            ts = TraceSet.load(folder)
            if len(ts) != len(sub) or not all(it.question in p for it, p in zip(sub, ts.prompts)):
                raise SystemExit(f"{folder} does not hold the traces of this suite ({len(ts)} prompts)")
        else:
            if model is None:
                import corevital_widgets as corevital

                model, tok = corevital.load_default_model()
                model = model.to(device)
            t0 = time.perf_counter()
            ts = analyze_many(model, suite_prompts(sub, tok), tok, out_dir=folder, max_new_tokens=tokens,
                              batch_size=batch_size)
            print(f"{form}: traced {len(ts)} prompts in {time.perf_counter() - t0:.0f} s (resumed runs count only the new ones)")
        df = ts.to_pandas()
        df.index = idx
        df["question"] = [it.question for it in sub]
        df["family"] = [it.kind for it in sub]
        df["difficulty"] = [it.difficulty for it in sub]
        df["form"] = form
        df["gold"] = [it.answer for it in sub]
        df["correct"] = [grade(it, text) for it, text in zip(sub, df["text"])]
        parts.append(df)
    return pd.concat(parts).sort_index()


def write_features(df, path: Path) -> None:
    """The table the shipped model is refitted from: floats in their shortest exact form."""
    from corevital_widgets.analysis.risk import DEFAULT_RISK_FEATURES

    path.parent.mkdir(parents=True, exist_ok=True)
    cols = ["question", "family", "difficulty", "form", "correct", *DEFAULT_RISK_FEATURES]
    df[cols].to_csv(path, index=False, compression={"method": "gzip", "mtime": 0})


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir", type=Path, default=Path("/tmp/corevital_suite"))
    ap.add_argument("--per-family", type=int, default=50)
    ap.add_argument("--short-tokens", type=int, default=SHORT_TOKENS)
    ap.add_argument("--free-tokens", type=int, default=FREE_TOKENS)
    ap.add_argument("--collect-only", action="store_true")
    ap.add_argument("--evaluate-only", action="store_true", help="read finished --out-dir manifests; trace nothing")
    ap.add_argument("--from-csv", type=Path, default=None, help="evaluate a features table instead of traces")
    ap.add_argument("--write-default", action="store_true", help="write the shipped SmolLM2 coefficients and features table")
    ap.add_argument("--results-dir", type=Path, default=None, help="where tables and charts go (default: --out-dir)")
    ap.add_argument("--device", default="cpu", help="torch device for tracing, e.g. cuda")
    ap.add_argument("--batch-size", type=int, default=1, help="prompts per generate call (analyze_many batch_size)")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bootstrap", type=int, default=2000)
    args = ap.parse_args(argv)

    if args.from_csv:
        from corevital_widgets.analysis.transfer import read_features

        df = read_features(args.from_csv)
    else:
        df = collect(args.out_dir, args.per_family, args.device, args.evaluate_only, args.short_tokens, args.free_tokens,
                     args.batch_size)
    results = args.results_dir or args.out_dir
    results.mkdir(parents=True, exist_ok=True)
    print(f"accuracy {df['correct'].mean():.3f} over {len(df)} questions in {df['family'].nunique()} families")
    if args.collect_only:
        write_features(df, results / "suite_features.csv.gz")
        return
    evaluate(df, args, results)


def evaluate(df, args, results: Path) -> None:
    import pandas as pd

    from corevital_widgets.analysis.risk import DEFAULT_MODEL_FILE
    from corevital_widgets.analysis.transfer import evaluate_transfer, fit_shipped_risk

    wrong = (~df["correct"].to_numpy(bool)).astype(int)
    fam = df["family"].to_numpy(str)
    t0 = time.perf_counter()
    rep = evaluate_transfer(df, wrong, fam, folds=args.folds, n_bootstrap=args.bootstrap, seed=args.seed)
    took = time.perf_counter() - t0
    pd.set_option("display.width", 200)
    fmt = lambda x: f"{x:.3f}"  # noqa: E731
    print(f"\nlabel: wrong answer; {wrong.sum()} wrong of {len(wrong)} ({wrong.mean():.1%}); {len(set(fam))} families; "
          f"evaluated in {took:.0f} s\n")
    h = rep.held_out
    print("FAMILY-HELD-OUT (headline): each family scored by a model fitted without it, feature set chosen without it")
    print(h.table().to_string(float_format=fmt))
    print("\nper family (risk held out; baselines need no fitting):")
    print(rep.per_family_table().to_string(float_format=fmt))
    print("\nfeature set chosen for each held-out family:", json.dumps(rep.chosen))
    print("\ncandidates (each with a fixed feature set): family-held-out and k-fold (families mixed) AUROC / ECE")
    print(rep.candidates.to_string(float_format=fmt))
    print("\nper feature: held-out AUROC of a one-feature calibrated model, raw AUROC as a risk score")
    print(rep.features.to_string(float_format=fmt))
    name, best = rep.best_baseline
    print(f"\nheadline: family-held-out AUROC {h.auroc:.3f} [{h.auroc_ci[0]:.3f}, {h.auroc_ci[1]:.3f}] vs best baseline "
          f"{name} {best:.3f} (gap {h.auroc - best:+.3f}); held-out ECE {h.ece:.3f}; Brier {h.brier:.3f}")
    print("mean within-family AUROC (held out):", json.dumps({k: round(v, 3) for k, v in rep.within_family().items()}))
    print(f"secondary: {args.folds}-fold (families mixed) AUROC of the final choice {rep.final!r}: {rep.kfold.auroc:.3f} "
          f"[{rep.kfold.auroc_ci[0]:.3f}, {rep.kfold.auroc_ci[1]:.3f}], ECE {rep.kfold.ece:.3f}")
    f = rep.final_held_out
    print(f"shipped recipe: {rep.final!r} fitted on all families; the same set held out by family: AUROC {f.auroc:.3f} "
          f"[{f.auroc_ci[0]:.3f}, {f.auroc_ci[1]:.3f}], ECE {f.ece:.3f}, Brier {f.brier:.3f}")
    print("targets:", json.dumps(rep.targets()))
    for cname, chart in (("reliability_held_out", h.reliability_chart()), ("roc_held_out", h.roc_chart())):
        chart.save(str(results / f"{cname}.html"))
    (results / "transfer_report.json").write_text(json.dumps(rep.to_dict(), indent=1, default=float))
    rep.per_family_table().to_csv(results / "per_family.csv")
    if args.write_default:
        write_features(df, FEATURES_CSV)
        import corevital_widgets as corevital
        from corevital_widgets.trace.fingerprint import model_fingerprint

        final = fit_shipped_risk(df, wrong, fam, report=rep)
        fingerprint = model_fingerprint(corevital.load_default_model()[0])
        final.meta.update(fingerprint=fingerprint, model_name="SmolLM2-135M-Instruct",
                          suite="corevital_widgets.suite.build_suite(seed=0)",
                          short_tokens=args.short_tokens, free_tokens=args.free_tokens,
                          label="1 = wrong answer (suite.grade)", features_table=str(FEATURES_CSV.relative_to(ROOT)))
        final.save(DEFAULT_MODEL_FILE)
        print(f"wrote {FEATURES_CSV} and the shipped coefficients ({final.meta['feature_set']!r}) to {DEFAULT_MODEL_FILE}")
    print(f"charts and report written to {results}")


if __name__ == "__main__":
    main()
