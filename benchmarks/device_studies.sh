#!/usr/bin/env bash
# Studies that need more cores than CI has, on a lent machine's CPUs (results do not depend on who
# runs them): the default study with another --base-seed (does each verdict replicate?) and the
# protocol pilot of recipes/digits.yaml. Run from the repository root; results under $OUT.
set -u
OUT=${OUT:-$PWD/device-out}; mkdir -p "$OUT"
cores=$(nproc --all)  # before OMP_NUM_THREADS=1: GNU nproc honours it and would say 1
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 MPLBACKEND=Agg OMP_NUM_THREADS=1
half=$(( cores > 3 ? cores / 2 : 1 ))
s=$(date +%s)
( python3 -m unimix study --out /tmp/b1 --base-seed 1 --workers "$half" --device cpu --no-progress \
    >"$OUT/b1.log" 2>&1; echo "b1 rc=$? after $(( $(date +%s) - s )) s" >>"$OUT/summary.txt"
  cp /tmp/b1/claims.csv "$OUT/b1_claims.csv"; cp /tmp/b1/results.csv "$OUT/b1_results.csv"
  cp /tmp/b1/report.md "$OUT/b1_report.md" ) &
( python3 -m unimix study --out /tmp/pilot --methods none,mixup,cutmix --seeds 3 --regimes low,mid \
    --grid epochs=30,60 --grid mix_prob=0.5,1 --base-seed 100 --workers "$half" --device cpu \
    --no-progress >"$OUT/pilot.log" 2>&1; echo "pilot rc=$? after $(( $(date +%s) - s )) s" >>"$OUT/summary.txt"
  cp /tmp/pilot/summary.csv "$OUT/pilot_summary.csv" ) &
wait
tail -n 3 "$OUT/b1.log" "$OUT/pilot.log"
cat "$OUT/summary.txt"
