"""The study's statistics and parsing: paired intervals, verdicts, grid and regimes (no training)."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unimix.study import CLAIM_COLUMNS, StudyConfig, parse_grid, plan_runs
from unimix.study.report import ClaimLine, check_claims, summarize, write_claims
from unimix.study.stats import (
    CANNOT_JUDGE,
    HOLDS,
    REVERSED,
    UNRESOLVED,
    aggregate_verdict,
    paired_difference,
    spearman,
)


def test_a_constructed_difference_is_detected_and_its_reverse_is_reversed():
    # method a is 1 point better (lower error) than b on every seed, plus seed noise shared by both
    noise = [0.3, -0.2, 0.5, -0.4, 0.1]
    b = [3.0 + n for n in noise]
    a = [2.0 + n + 0.05 * (-1) ** i for i, n in enumerate(noise)]
    p = paired_difference(a, b)
    assert p.ci_low < -1.0 < p.ci_high < 0 and p.n == 5
    assert p.verdict("low") == HOLDS
    assert paired_difference(b, a).verdict("low") == REVERSED
    assert p.verdict("high") == REVERSED  # for accuracies, lower is worse


def test_identical_methods_are_unresolved_and_one_seed_cannot_be_judged():
    values = [2.5, 3.1, 2.8, 3.3]
    same = paired_difference(values, values)
    assert same.mean == 0 and same.ci_low == same.ci_high == 0
    assert same.verdict("low") == UNRESOLVED
    assert same.p_value == 1.0
    one = paired_difference([1.0], [2.0])
    assert math.isnan(one.ci_low) and one.verdict("low") == CANNOT_JUDGE


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.integers(-500, 500).map(lambda v: v / 100), min_size=2, max_size=12),
    st.integers(-300, 300).map(lambda v: v / 100),
)
def test_interval_matches_the_t_formula_and_contains_the_mean(diffs, shift):
    from scipy import stats

    b = [0.0] * len(diffs)
    a = [d + shift for d in diffs]
    p = paired_difference(a, b)
    assert p.ci_low <= p.mean + 1e-12 and p.mean <= p.ci_high + 1e-12
    lo, hi = (
        stats.t.interval(0.95, len(a) - 1, loc=p.mean, scale=stats.sem(a))
        if p.sd > 0
        else (
            p.mean,
            p.mean,
        )
    )
    assert p.ci_low == pytest.approx(lo, abs=1e-9) and p.ci_high == pytest.approx(hi, abs=1e-9)


def test_aggregate_verdict_follows_from_its_parts():
    assert aggregate_verdict([HOLDS, HOLDS]) == HOLDS
    assert aggregate_verdict([HOLDS, UNRESOLVED]) == UNRESOLVED
    assert aggregate_verdict([HOLDS, REVERSED, UNRESOLVED]) == REVERSED  # a counter-example
    assert aggregate_verdict([HOLDS, CANNOT_JUDGE]) == CANNOT_JUDGE


def test_spearman_with_interval():
    rho, lo, hi = spearman([1, 2, 3, 4, 5, 6], [2, 4, 6, 8, 10, 12])
    assert rho == pytest.approx(1.0) and lo > 0
    rho, lo, hi = spearman([1, 2, 3, 4, 5, 6], [6, 5, 4, 3, 2, 1])
    assert rho == pytest.approx(-1.0) and hi < 0
    assert math.isnan(spearman([1, 2, 3], [3, 1, 2])[1])  # n ≤ 3: no interval


def _rows(errors: dict[str, list[float]]):
    rows = []
    for method, values in errors.items():
        for seed, e in enumerate(values):
            rows.append(
                {
                    "regime": "low",
                    "method": method,
                    "setting": "",
                    "seed": seed,
                    "top1_error": e,
                    "nll": 0.1,
                    "nll_ts": 0.1,
                    "ece": 1.0,
                    "ece_ts": 1.0,
                    "temperature": 1.0,
                    "fgsm_accuracy": 50.0,
                    "pgd_accuracy": 40.0,
                    "occlusion_accuracy": 80.0,
                    "top5_error": 0.0,
                    "time_per_epoch_s": 1.0,
                    "images_per_s": 100.0,
                    "mix_overhead_pct": 0.0 if method == "none" else 1.0,
                }
            )
    return rows


def test_claims_on_constructed_results_and_claims_csv_columns(tmp_path):
    rows = _rows(
        {
            "none": [4.0, 4.2, 3.9, 4.1],
            "mixup": [3.0, 3.1, 2.9, 3.2],  # clearly better
            "cutmix": [4.0, 4.2, 3.9, 4.1],  # identical to none
        }
    )
    summary = summarize(rows, ["none", "mixup", "cutmix"])
    claims = {c.key: c for c in check_claims(summary, rows)}
    err = claims["msda_beats_none_error"]
    verdicts = {ln.method_a: ln.verdict for ln in err.lines}
    assert verdicts == {"mixup": HOLDS, "cutmix": UNRESOLVED}
    assert err.verdict == UNRESOLVED and "1 of 2 lines hold" in err.details[0]
    assert claims["mixing_cost"].verdict == HOLDS  # 1 % < 5 % on every seed
    lines: list[ClaimLine] = [ln for c in claims.values() for ln in c.lines]
    write_claims(lines, tmp_path / "claims.csv")
    header = (tmp_path / "claims.csv").read_text().splitlines()[0]
    assert header.split(",") == list(CLAIM_COLUMNS)
    assert CLAIM_COLUMNS == (
        "claim",
        "regime",
        "metric",
        "method_a",
        "method_b",
        "mean_diff",
        "ci_low",
        "ci_high",
        "seeds",
        "verdict",
        "p_value",
        "p_adjusted",
        "family",
    )


def test_parse_grid_reads_values_and_maps_bare_method_parameters():
    grid = parse_grid(["alpha=0.2,1", "r=0.25,0.75", "label_weight=effective,nominal"])
    assert grid == {
        "alpha": [0.2, 1],
        "method_params.r": [0.25, 0.75],
        "label_weight": ["effective", "nominal"],
    }
    for bad in ("alpha", "alpha=", "seed=1,2"):
        with pytest.raises(ValueError, match="grid"):
            parse_grid([bad])
    with pytest.raises(ValueError, match="twice"):
        parse_grid(["alpha=1,1"])


def test_plan_runs_regimes_and_grid(tmp_path):
    cfg = StudyConfig(
        out=tmp_path,
        methods=["none", "mixup", "hmix"],
        seeds=2,
        regimes=["low", "full"],
        grid=parse_grid(["method_params.r=0.25,0.75", "mix_prob=0.5,1"]),
    )
    runs = plan_runs(cfg)
    by = {}
    for r in runs:
        by.setdefault((r.regime, r.method), set()).add(r.setting)
    # none ignores mixing keys; mixup ignores HMix's r; hmix gets every combination
    assert by[("low", "none")] == {""}
    assert by[("low", "mixup")] == {"mix_prob=0.5", "mix_prob=1"}
    assert len(by[("low", "hmix")]) == 4
    assert len(runs) == 2 * 2 * (1 + 2 + 4)
    low = next(r for r in runs if r.regime == "low")
    full = next(r for r in runs if r.regime == "full")
    assert low.config.train_per_class is not None and full.config.train_per_class is None
    assert len({r.run_dir for r in runs}) == len(runs)
    with pytest.raises(ValueError, match="unknown regime.*'tiny'"):
        plan_runs(StudyConfig(out=tmp_path, regimes=["tiny"]))
