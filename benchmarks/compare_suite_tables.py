"""Do two suite features tables (``bench_signal.py --collect-only``) hold the same run?

Compares a table traced another way (e.g. on a GPU, through the batched path) with a reference
(default: the shipped batch-1 CPU table): same questions in the same order, the same correctness,
each risk feature's largest absolute and relative difference, the feature in which the rows differ
most, and the shipped risk model's numbers on both (per-question risk, AUROC for wrong answers).
Exits 1 when correctness differs or the AUROCs differ by more than ``--auroc-tol``.

    python benchmarks/compare_suite_tables.py NEW.csv.gz [--reference benchmarks/data/suite_features_smollm2.csv.gz]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_signal import FEATURES_CSV as SHIPPED_TABLE  # noqa: E402 (the table bench_signal writes and ships)


def compare(new_path: Path, ref_path: Path) -> dict:
    """The comparison as a dict (see the module docstring)."""
    from sklearn.metrics import roc_auc_score

    from corevital_widgets.analysis.risk import DEFAULT_MODEL_FILE, DEFAULT_RISK_FEATURES, RiskModel
    from corevital_widgets.analysis.transfer import read_features

    new, ref = read_features(new_path), read_features(ref_path)
    if len(new) != len(ref) or not (new["question"].to_numpy() == ref["question"].to_numpy()).all():
        raise SystemExit(f"{new_path} and {ref_path} do not hold the same questions in the same order")
    feats = list(DEFAULT_RISK_FEATURES)
    a, b = new[feats].to_numpy(float), ref[feats].to_numpy(float)
    both_nan = np.isnan(a) & np.isnan(b)
    diff = np.where(both_nan, 0.0, np.abs(a - b))
    rel = diff / np.maximum(np.abs(b), 1e-12)
    model = RiskModel.load(DEFAULT_MODEL_FILE)
    risk_new, risk_ref = np.asarray(model.predict_proba(new)), np.asarray(model.predict_proba(ref))
    wrong_new, wrong_ref = ~new["correct"].to_numpy(bool), ~ref["correct"].to_numpy(bool)
    worst = int(np.nanargmax(diff.max(0)))
    return {
        "questions": len(new),
        "correctness_differs": int((wrong_new != wrong_ref).sum()),
        "nan_pattern_differs": int((np.isnan(a) != np.isnan(b)).sum()),
        "max_abs_diff": {f: float(np.nanmax(diff[:, i])) for i, f in enumerate(feats)},
        "max_rel_diff": {f: float(np.nanmax(rel[:, i])) for i, f in enumerate(feats)},
        "worst_feature": feats[worst],
        "risk_max_abs_diff": float(np.max(np.abs(risk_new - risk_ref))),
        "auroc_new": float(roc_auc_score(wrong_new, risk_new)),
        "auroc_reference": float(roc_auc_score(wrong_ref, risk_ref)),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("new", type=Path)
    ap.add_argument("--reference", type=Path, default=SHIPPED_TABLE)
    ap.add_argument("--auroc-tol", type=float, default=1e-3)
    args = ap.parse_args(argv)
    r = compare(args.new, args.reference)
    print(f"{r['questions']} questions; correctness differs on {r['correctness_differs']}; "
          f"NaN pattern differs in {r['nan_pattern_differs']} cells")
    print(f"{'feature':<32} {'max |diff|':>12} {'max rel':>10}")
    for f, d in r["max_abs_diff"].items():
        print(f"{f:<32} {d:12.3g} {r['max_rel_diff'][f]:10.3g}")
    print(f"largest difference in: {r['worst_feature']}")
    print(f"shipped risk model: per-question risk within {r['risk_max_abs_diff']:.3g}; "
          f"AUROC (wrong answers) {r['auroc_new']:.4f} here vs {r['auroc_reference']:.4f} in the reference")
    same = r["correctness_differs"] == 0 and abs(r["auroc_new"] - r["auroc_reference"]) <= args.auroc_tol
    print("SAME RUN" if same else "DIFFERENT")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
