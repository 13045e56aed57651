"""Do a study's verdicts replicate? Compare the claims of two studies run with different
``--base-seed`` (independent training draws and initialisations), side by side.

    unimix study --out study-b0 --base-seed 0
    unimix study --out study-b1 --base-seed 1
    python benchmarks/replication_check.py study-b0 study-b1 [--family confirmatory]

Prints one table of the lines both studies tested (mean difference, adjusted interval, verdict of
each) and the lines where one says ``holds`` and the other ``reversed`` — a verdict that flips
when the training images are redrawn was never a finding. Exit status 1 when a confirmatory line
flips.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path


def read_claims(folder: Path) -> dict[tuple[str, ...], dict[str, str]]:
    with open(folder / "claims.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    key = ("claim", "regime", "metric", "method_a", "method_b")
    return {tuple(r[k] for k in key): r for r in rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("first", type=Path)
    parser.add_argument("second", type=Path)
    parser.add_argument(
        "--family", default=None, help="only this family (confirmatory|exploratory)"
    )
    args = parser.parse_args(argv)
    a, b = read_claims(args.first), read_claims(args.second)
    shared = [k for k in a if k in b and (args.family is None or a[k]["family"] == args.family)]
    print(
        f"| line | {args.first.name}: mean [CI] → verdict | {args.second.name}: mean [CI] → verdict |"
    )
    print("|---|---|---|")
    flips = []
    for k in shared:
        cells = []
        for side in (a, b):
            r = side[k]
            cells.append(
                f"{float(r['mean_diff']):+.3g} [{float(r['ci_low']):+.3g}, "
                f"{float(r['ci_high']):+.3g}] → {r['verdict']}"
            )
        name = f"{k[0]} {k[1]} {k[2]}: {k[3]}" + (f" − {k[4]}" if k[4] else "")
        print(f"| {name} ({a[k]['family']}) | {cells[0]} | {cells[1]} |")
        if {a[k]["verdict"], b[k]["verdict"]} == {"holds", "reversed"}:
            flips.append((name, a[k]["family"]))
    print()
    print(f"{len(shared)} lines in both; {len(flips)} flip between holds and reversed")
    for name, family in flips:
        print(f"  FLIP ({family}): {name}")
    return 1 if any(f == "confirmatory" for _, f in flips) else 0


if __name__ == "__main__":
    sys.exit(main())
