#!/usr/bin/env bash
# One prepared check on a CUDA machine (run from the repository root; results under $OUT):
#   1. the whole test suite with CUDA visible (the CUDA-only tests run, the rest must still pass);
#   2. benchmarks/bench_mix.py --device cuda and benchmarks/bench_compile.py (inductor) on the GPU;
#   3. a short CIFAR-shaped training run (PreActResNet-18, 32x32x3, 100 classes, batch 128) on a
#      synthetic CIFAR-100 archive written here (no download), every method, time per epoch.
# Needs PyTorch with CUDA, timm, torchvision, scikit-learn, PyYAML, hypothesis, pytest-xdist.
set -u
OUT=${OUT:-$PWD/device-out}; mkdir -p "$OUT"
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 MPLBACKEND=Agg
bin=$(mktemp -d); printf '#!/bin/sh\nexec python3 -m unimix "$@"\n' >"$bin/unimix"; chmod +x "$bin/unimix"
export PATH=$bin:$PATH
{ nvidia-smi -L; python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"; nproc; } >"$OUT/env.txt" 2>&1

# 3 (in the background, on the GPU): a synthetic CIFAR-100 archive and one epoch per method.
data=$(mktemp -d)
python3 - "$data" <<'PY'
import pickle, sys, numpy as np, pathlib
root = pathlib.Path(sys.argv[1]) / "cifar-100-python"; root.mkdir(parents=True)
rng = np.random.default_rng(0)
for name, n in (("train", 10000), ("test", 2000)):
    d = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
         b"fine_labels": rng.integers(0, 100, n).tolist(), b"coarse_labels": [0] * n}
    pickle.dump(d, open(root / name, "wb"))
pickle.dump({b"fine_label_names": [f"c{i}".encode() for i in range(100)],
             b"coarse_label_names": [b"x"] * 20}, open(root / "meta", "wb"))
PY
(
  for m in none mixup cutmix hmix gmix; do
    s=$(date +%s.%N)
    timeout 120 python3 -m unimix train --recipe cifar100_preactresnet18 --data-dir "$data" \
      --epochs 2 --batch-size 128 --methods "$m" --device cuda --out "$data/run-$m" --no-progress \
      --set tensorboard=false >"$OUT/train-$m.log" 2>&1
    echo "$m rc=$? wall_s=$(python3 -c "import time;print(round(time.time()-$s,1))")"
    tail -n 3 "$data/run-$m/metrics.csv" 2>/dev/null
  done
) >"$OUT/train.txt" 2>&1 &
trainer=$!

# 2: benchmarks on the GPU
timeout 150 python3 benchmarks/bench_mix.py --device cuda --quick --out "$OUT/bench_mix_cuda.md" >"$OUT/bench_mix.log" 2>&1
echo "bench_mix rc=$?" >>"$OUT/summary.txt"
timeout 120 python3 benchmarks/bench_compile.py --steps 30 >"$OUT/bench_compile.txt" 2>&1
echo "bench_compile rc=$?" >>"$OUT/summary.txt"

# 1: the tests
timeout 240 python3 -m pytest -n 8 -q -p no:cacheprovider -o addopts="" >"$OUT/pytest.txt" 2>&1
echo "pytest rc=$?" >>"$OUT/summary.txt"; tail -n 30 "$OUT/pytest.txt"

wait $trainer
cat "$OUT/summary.txt" "$OUT/train.txt"
