"""The default study's table and confirmatory verdicts (docs/snippets/study-figures.md),
generated from a study folder.

    python benchmarks/readme_study_table.py study

Prints the mean ± sd table (top-1 error, NLL raw and T-scaled, PGD accuracy) from
``summary.csv`` and one line per confirmatory claim line from ``claims.csv``, so that the site
shows exactly what the default run wrote.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path


def main(folder: str) -> None:
    out = Path(folder)
    with open(out / "summary.csv", newline="") as fh:
        summary = list(csv.DictReader(fh))
    with open(out / "claims.csv", newline="") as fh:
        claims = list(csv.DictReader(fh))
    with open(out / "results.csv", newline="") as fh:
        results = list(csv.DictReader(fh))
    sizes = {r["regime"]: (r["train_size"], r["test_size"]) for r in results}
    print("| regime (train / test) | method | top-1 error % | NLL | NLL, T-scaled | PGD acc % |")
    print("|---|---|---|---|---|---|")
    last = None
    for s in summary:
        regime = s["regime"]
        label = f"{regime} ({' / '.join(sizes[regime])})" if regime != last else ""
        last = regime
        print(
            f"| {label} | {s['variant']} | {float(s['top1_error_mean']):.2f} ± "
            f"{float(s['top1_error_std']):.2f} | {float(s['nll_mean']):.3f} | "
            f"{float(s['nll_ts_mean']):.3f} | {float(s['pgd_accuracy_mean']):.1f} ± "
            f"{float(s['pgd_accuracy_std']):.1f} |"
        )
    print()
    for c in claims:
        if c["family"] != "confirmatory":
            continue
        b = f" − {c['method_b']}" if c["method_b"] else ""
        print(
            f"- {c['claim']}, {c['regime']}: {c['method_a']}{b} {float(c['mean_diff']):+.2f} "
            f"[{float(c['ci_low']):+.2f}, {float(c['ci_high']):+.2f}], p_adj "
            f"{float(c['p_adjusted']):.2g} → **{c['verdict']}**"
        )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "study")
