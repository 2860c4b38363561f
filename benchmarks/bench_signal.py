"""Does the trace predict wrong answers? SmolLM2-135M-Instruct on the labelled question suite.

    python benchmarks/bench_signal.py [--out-dir /tmp/corevital_bench_signal] [--max-new-tokens 12]
                                      [--limit N] [--device cuda] [--collect-only | --evaluate-only]
                                      [--results-dir DIR] [--folds 5] [--seed 0] [--write-default]

Tracing 717 questions takes about 6 min on one H100 (--device cuda), ~40 min on 2 CPU cores;
``--collect-only`` on a GPU machine then ``--evaluate-only`` on a copy of its ``manifest.json``
(the manifest holds every summary the evaluation needs) splits the two.

1. Traces every suite question with ``analyze_many`` (greedy, resumable: re-running continues).
2. Grades each answer by normalised match (label 1 = wrong answer, the event the risk predicts).
3. 5-fold stratified cross-validation: a RiskModel (StandardScaler + LogisticRegression whose
   regularisation is chosen by an inner 5-fold log-loss search over the four training folds
   only) is fitted on four folds and scores the held-out fold only; the pooled out-of-fold
   scores are evaluated once. The same protocol is then repeated with other fold shuffles
   (``--repeat-seeds``) to show how much AUROC / ECE move with the split alone.
4. Prints one table: each feature's AUROC (oriented so that > 0.5 means "higher = riskier" is
   not assumed: the raw AUROC of the feature as a risk score is shown, and its max(A, 1 − A)),
   the risk model's AUROC with a bootstrap 95% interval, ECE and Brier, and the three baselines
   (1 − mean max-prob, mean token entropy, − sequence log-likelihood) as risk scores.
5. Writes the reliability diagram and ROC chart (Altair JSON + HTML) to the out dir.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def collect(out_dir: Path, max_new_tokens: int, limit: int | None, evaluate_only: bool = False, device: str = "cpu"):
    from corevital_widgets.batch import TraceSet, analyze_many
    from corevital_widgets.suite import build_suite, grade, suite_prompts

    items = build_suite()
    if limit:
        items = items[:limit]  # the suite is shuffled once, so a prefix is a fair sample
    if evaluate_only:  # a finished out_dir (e.g. traced on a GPU machine): summaries from its manifest
        ts = TraceSet.load(out_dir)
        if len(ts) != len(items) or not all(it.question in p for it, p in zip(items, ts.prompts)):
            raise SystemExit(f"{out_dir} does not hold the traces of this suite ({len(ts)} prompts)")
    else:
        import corevital_widgets as corevital

        model, tok = corevital.load_default_model()
        model = model.to(device)
        prompts = suite_prompts(items, tok)
        t0 = time.perf_counter()
        ts = analyze_many(model, prompts, tok, out_dir=out_dir, max_new_tokens=max_new_tokens)
        print(f"traced {len(ts)} prompts in {time.perf_counter() - t0:.0f} s (resumed runs count only the new ones)")
    df = ts.to_pandas()
    df["kind"] = [it.kind for it in items]
    df["difficulty"] = [it.difficulty for it in items]
    df["gold"] = [it.answer for it in items]
    df["correct"] = [grade(it, text) for it, text in zip(items, df["text"])]
    return df


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir", type=Path, default=Path("/tmp/corevital_bench_signal"))
    ap.add_argument("--max-new-tokens", type=int, default=12)
    ap.add_argument("--limit", type=int, default=None, help="use an evenly spaced subset of the suite")
    ap.add_argument("--collect-only", action="store_true")
    ap.add_argument("--evaluate-only", action="store_true", help="read a finished --out-dir's manifest; trace nothing")
    ap.add_argument("--write-default", action="store_true",
                    help="after cross-validation, fit on all questions and write the shipped SmolLM2 coefficients")
    ap.add_argument("--results-dir", type=Path, default=None, help="where tables and charts go (default: --out-dir)")
    ap.add_argument("--device", default="cpu", help="torch device for tracing, e.g. cuda")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat-seeds", type=int, default=5, help="also run the CV with this many fold shuffles (1 = off)")
    args = ap.parse_args(argv)

    df = collect(args.out_dir, args.max_new_tokens, args.limit, args.evaluate_only, args.device)
    results = args.results_dir or args.out_dir
    results.mkdir(parents=True, exist_ok=True)
    args.results_dir = results
    df.drop(columns=["prompt"]).to_csv(results / "suite_results.csv")
    print(f"accuracy {df['correct'].mean():.3f} over {len(df)} questions;",
          ", ".join(f"{k} {g['correct'].mean():.2f}" for k, g in df.groupby("difficulty", sort=False)))
    if args.collect_only:
        return
    evaluate(df, args)


def evaluate(df, args) -> None:
    from sklearn.model_selection import StratifiedKFold

    from corevital_widgets.analysis.risk import (
        DEFAULT_RISK_FEATURES,
        RiskModel,
        evaluate_risk,
        feature_auroc,
    )

    wrong = (~df["correct"].to_numpy(bool)).astype(int)
    features = df[list(DEFAULT_RISK_FEATURES)]
    def out_of_fold(seed: int) -> np.ndarray:
        oof = np.full(len(df), np.nan)
        for train, test in StratifiedKFold(n_splits=args.folds, shuffle=True, random_state=seed).split(features, wrong):
            model = RiskModel().fit(features.iloc[train], wrong[train])  # never sees `test`
            oof[test] = model.predict_proba(features.iloc[test])
        assert not np.isnan(oof).any()
        return oof

    oof = out_of_fold(args.seed)

    baselines = {
        "baseline: 1 - mean max_prob": 1.0 - df["max_prob_mean"].to_numpy(float),
        "baseline: mean entropy": df["entropy_mean"].to_numpy(float),
        "baseline: -seq log-likelihood": -df["sequence_log2_likelihood"].to_numpy(float),
    }
    report = evaluate_risk(oof, wrong, baselines=baselines, n_bootstrap=2000, seed=args.seed)
    print(f"\nlabel: wrong answer; {wrong.sum()} wrong of {len(wrong)} ({wrong.mean():.1%}); {args.folds}-fold out-of-fold scores\n")
    print(report.table().to_string(float_format=lambda x: f"{x:.3f}"))
    print("\nsingle-feature AUROC as a risk score (max(A, 1-A) = separability either way):")
    rows = []
    for name in DEFAULT_RISK_FEATURES:
        a = feature_auroc(df[name].to_numpy(float), wrong)
        rows.append((name, a, max(a, 1 - a)))
    for name, a, sep in sorted(rows, key=lambda r: -r[2]):
        print(f"  {name:28s} {a:.3f}   {sep:.3f}")
    print("\nwithin each question kind (does the score rank answers, not just question types?):")
    kinds = df["kind"].to_numpy()
    for kind in sorted(set(kinds)):
        m = kinds == kind
        if wrong[m].min() == wrong[m].max():
            continue
        base = {b: feature_auroc(v[m], wrong[m]) for b, v in baselines.items()}
        print(f"  {kind:11s} n={m.sum():4d} wrong={wrong[m].mean():.2f}  risk AUROC {feature_auroc(oof[m], wrong[m]):.3f}  "
              + "  ".join(f"{b.removeprefix('baseline: ')} {a:.3f}" for b, a in base.items()))
    best_base = max(report.baselines[b]["auroc"] for b in baselines)
    print(f"\nrisk model AUROC {report.auroc:.3f} [{report.auroc_ci[0]:.3f}, {report.auroc_ci[1]:.3f}], "
          f"best baseline {best_base:.3f} (gap {report.auroc - best_base:+.3f}); ECE {report.ece:.3f}; Brier {report.brier:.3f}")
    others = [s for s in range(args.seed, args.seed + args.repeat_seeds) if s != args.seed]
    if others:
        from corevital_widgets.analysis.risk import expected_calibration_error

        reps = [(args.seed, report.auroc, report.ece, report.brier)]
        for s in others:
            o = out_of_fold(s)
            reps.append((s, feature_auroc(o, wrong), expected_calibration_error(o, wrong), float(np.mean((o - wrong) ** 2))))
        a = np.array([r[1:] for r in reps])
        print(f"same protocol, fold shuffles {[r[0] for r in reps]}: AUROC {a[:, 0].min():.3f}-{a[:, 0].max():.3f}, "
              f"ECE {a[:, 1].min():.3f}-{a[:, 1].max():.3f} (mean {a[:, 1].mean():.3f}), Brier {a[:, 2].min():.3f}-{a[:, 2].max():.3f}")
    print(f"targets: AUROC >= 0.75: {report.auroc >= 0.75}; gap >= 0.05: {report.auroc - best_base >= 0.05}; ECE <= 0.05: {report.ece <= 0.05}")
    for name, chart in (("reliability", report.reliability_chart()), ("roc", report.roc_chart())):
        chart.save(str(args.results_dir / f"{name}.html"))
        chart.save(str(args.results_dir / f"{name}.json"))
    summary = {"n": len(wrong), "n_wrong": int(wrong.sum()), **report.to_dict()}
    (args.results_dir / "signal_report.json").write_text(json.dumps(summary, indent=1))
    if args.write_default:
        from corevital_widgets.analysis.risk import DEFAULT_MODEL_FILE

        final = RiskModel().fit(features, wrong)
        final.meta.update(model="SmolLM2-135M-Instruct", suite="corevital_widgets.suite.build_suite(seed=0)",
                          max_new_tokens=args.max_new_tokens, label="1 = wrong answer (normalised match)",
                          C_selection="inner 5-fold log-loss over the training data", cv_auroc=report.auroc, cv_ece=report.ece, cv_brier=report.brier)
        DEFAULT_MODEL_FILE.parent.mkdir(parents=True, exist_ok=True)
        final.save(DEFAULT_MODEL_FILE)
        print(f"wrote the shipped coefficients to {DEFAULT_MODEL_FILE}")
    print(f"charts and report written to {args.results_dir}")


if __name__ == "__main__":
    main()
