"""Golden plans: for each (method, mode, seed) the drawn plan and the mixed output of a fixed
input, stored small in ``tests/golden/plans.json`` — a change of random streams or kernels shows
in a diff. Regenerate deliberately with ``UNIMIX_WRITE_GOLDEN=1 pytest tests/test_golden_plans.py``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from unimix import Mixer, registry

GOLDEN = Path(__file__).parent / "golden" / "plans.json"
METHODS = [m for m in registry.available() if not registry.requires_model(m)]
CASES = [(m, mode, seed) for m in METHODS for mode in ("batch", "pair", "elem") for seed in (0, 1)]


def _record(method: str, mode: str, seed: int) -> dict[str, object]:
    x = torch.arange(4 * 3 * 8 * 10, dtype=torch.float32).reshape(4, 3, 8, 10) % 17 / 16
    mixer = Mixer(method, mode=mode, num_classes=4, generator=torch.Generator().manual_seed(seed))
    plan = mixer.sample(4, 8, 10)
    out, measured = mixer.apply(x, plan)

    def r(t: torch.Tensor) -> list[float]:
        return [round(float(v), 5) for v in t]

    return {
        "partner": plan.partner.tolist(),
        "lam": r(plan.lam),
        "method": plan.method.tolist(),
        "lam_effective": r(measured.lam_effective),
        "row_means": r(out.mean(dim=(1, 2, 3))),
        "row_weighted": r((out * torch.linspace(0, 1, 10)).sum(dim=(1, 2, 3))),
    }


def _key(method: str, mode: str, seed: int) -> str:
    return f"{method}/{mode}/{seed}"


if os.environ.get("UNIMIX_WRITE_GOLDEN") == "1":  # pragma: no cover - a deliberate regeneration
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(
        json.dumps({_key(*c): _record(*c) for c in CASES}, indent=0, sort_keys=True) + "\n"
    )


@pytest.mark.parametrize("method, mode, seed", CASES)
def test_plan_and_output_match_the_golden_record(method, mode, seed):
    golden = json.loads(GOLDEN.read_text())
    key = _key(method, mode, seed)
    assert key in golden, f"no golden record for {key}: regenerate with UNIMIX_WRITE_GOLDEN=1"
    got, want = _record(method, mode, seed), golden[key]
    assert got["partner"] == want["partner"] and got["method"] == want["method"]
    for field in ("lam", "lam_effective", "row_means", "row_weighted"):
        assert got[field] == pytest.approx(want[field], abs=2e-5), field
