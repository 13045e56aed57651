"""The study's claims (issue 18): a known effect is found, identical methods stay unresolved at
the nominal rate (family-wise), choices are made on validation only, the temperature bound is
flagged, replicates redraw the split, and added replicates make the verdicts sequential."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tiny_study import tiny_study
from unimix.evaluate.metrics import fit_temperature
from unimix.study import StudyConfig, plan_runs, summarize
from unimix.study.claims import (
    DEFAULT_CONFIRMATORY,
    check_claims,
    confidence_set_of_best,
)
from unimix.study.evaluation import temperature_at_bound
from unimix.study.stats import HOLDS, REVERSED, UNRESOLVED
from unimix.study.types import T_BOUNDS

METHODS = ("none", "mixup", "cutmix", "hmix", "gmix")


def simulated_rows(effects: dict[str, float], replicates: int, rng, val_effects=None):
    """results.csv-like rows: per replicate a shared draw (the split), per run its own noise."""
    rows = []
    for k in range(replicates):
        shared = rng.normal(5.0, 1.0)  # the replicate's difficulty, common to every method
        for method in METHODS:
            test = shared + effects.get(method, 0.0) + rng.normal(0, 0.5)
            val = shared + (val_effects or effects).get(method, 0.0) + rng.normal(0, 0.5)
            rows.append(
                {
                    "regime": "low",
                    "method": method,
                    "setting": "",
                    "replicate": k,
                    "seed": k,
                    "top1_error": test,
                    "val_error": val,
                    "top5_error": 0.0,
                    "nll": 0.1,
                    "nll_ts": 0.1,
                    "ece": 1.0,
                    "ece_ts": 1.0,
                    "temperature": 1.0,
                    "fgsm_accuracy": 50.0,
                    "pgd_accuracy": 40.0,
                    "occlusion_accuracy": 80.0,
                    "time_per_epoch_s": 1.0,
                    "images_per_s": 100.0,
                    "mix_overhead_pct": 0.0 if method == "none" else 1.0,
                }
            )
    return rows


def claims_of(rows):
    return {c.key: c for c in check_claims(summarize(rows, METHODS), rows)}


def confirmatory_lines(claims):
    return [ln for c in claims.values() for ln in c.lines if ln.family == "confirmatory"]


def test_a_constructed_effect_is_found_in_the_confirmatory_family():
    rows = simulated_rows(
        {"mixup": -1.5, "cutmix": -1.5, "hmix": -1.5, "gmix": -1.5}, 8, np.random.default_rng(1)
    )
    claims = claims_of(rows)
    msda = claims["msda_beats_none_error"]
    assert msda.verdict == HOLDS
    for ln in msda.lines:
        assert ln.family == "confirmatory" and ln.p_adjusted < 0.05
        assert ln.ci[1] < 0  # the printed interval agrees with the verdict


def test_identical_methods_give_a_false_confirmatory_verdict_at_most_at_the_nominal_rate():
    """300 simulated default studies where every method is the same: the share with any decided
    (holds or reversed) confirmatory line is the family-wise error; Holm keeps it at ≤ 5 %.
    Without the correction (7 lines at 5 % each) it would be about 25 %."""
    rng = np.random.default_rng(2026)
    studies, any_decided, raw_any = 300, 0, 0
    for _ in range(studies):
        lines = confirmatory_lines(claims_of(simulated_rows({}, 8, rng)))
        assert len(lines) == 7 and {ln.claim for ln in lines} == set(DEFAULT_CONFIRMATORY)
        any_decided += any(ln.verdict in (HOLDS, REVERSED) for ln in lines)
        raw_any += any(ln.paired.p_value < 0.05 for ln in lines)
    rate = any_decided / studies
    assert rate <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / studies), rate
    assert raw_any / studies > 0.1  # the uncorrected lines would have erred far more often


def test_every_verdict_agrees_with_its_interval():
    rng = np.random.default_rng(3)
    for _ in range(20):
        rows = simulated_rows({"mixup": rng.normal(0, 1), "gmix": rng.normal(0, 1)}, 6, rng)
        for c in claims_of(rows).values():
            for ln in c.lines:
                low, high = ln.ci
                if ln.verdict == UNRESOLVED:
                    assert low <= 0 <= high or ln.paired.mean == 0
                elif ln.verdict in (HOLDS, REVERSED):
                    assert low > 0 or high < 0


def test_choices_are_made_on_validation_and_never_read_the_test_columns():
    """Validation says CutMix is the better earlier method and GMix the best; the test columns
    say the opposite. The choices follow validation, and poisoning the test columns does not move
    them."""
    rng = np.random.default_rng(4)
    val = {"cutmix": -2.0, "gmix": -3.0}
    test = {"mixup": -2.0, "none": -3.0}
    rows = simulated_rows(test, 8, rng, val_effects=val)
    summary = summarize(rows, METHODS)
    comparator = {ln.method_b for ln in claims_of(rows)["new_vs_best_earlier"].lines}
    best = confidence_set_of_best(summary, rows)[0]["best"]["variant"]
    assert comparator == {"cutmix"} and best == "gmix"
    for r in rows:
        r["top1_error"] = 99.0 if r["method"] in ("cutmix", "gmix") else 0.0
    summary = summarize(rows, METHODS)
    assert {ln.method_b for ln in claims_of(rows)["new_vs_best_earlier"].lines} == comparator
    assert confidence_set_of_best(summary, rows)[0]["best"]["variant"] == best


def test_the_confidence_set_drops_only_variants_shown_worse_than_the_best():
    rows = simulated_rows({"none": 3.0, "cutmix": 0.05}, 8, np.random.default_rng(5))
    entry = confidence_set_of_best(summarize(rows, METHODS), rows)[0]
    assert "none" not in entry["members"]
    assert entry["best"]["variant"] in entry["members"]
    assert {v for v, _, _ in entry["excluded"]} == {"none"}


def test_the_temperature_fit_is_bounded_and_a_fit_at_the_bound_is_flagged():
    logits = torch.tensor([[9.0, 0.0], [0.0, 9.0]] * 20)  # separable: NLL falls as T → 0
    labels = torch.tensor([0, 1] * 20)
    t = fit_temperature(logits, labels, low=T_BOUNDS[0], high=T_BOUNDS[1])
    assert t == pytest.approx(T_BOUNDS[0], rel=1e-6)
    assert temperature_at_bound(t) and not temperature_at_bound(1.3)


def test_replicates_redraw_the_split_shared_by_every_method(tmp_path):
    runs = plan_runs(StudyConfig(out=tmp_path, seeds=3, regimes=["low"]))
    by_rep: dict[int, set[tuple[int, int]]] = {}
    for r in runs:
        assert r.config.split_seed == r.split_seed and r.config.seed == r.seed
        by_rep.setdefault(r.replicate, set()).add((r.split_seed, r.seed))
    assert all(len(v) == 1 for v in by_rep.values())  # every method of a replicate: one draw
    assert len({next(iter(v)) for v in by_rep.values()}) == 3  # replicates differ
    other = plan_runs(StudyConfig(out=tmp_path, seeds=3, regimes=["low"], base_seed=1))
    assert not {r.split_seed for r in runs} & {r.split_seed for r in other}


def tiny(out, seeds, **kwargs):
    return tiny_study(out, epochs=2, seeds=seeds, workers=1, **kwargs)


@pytest.mark.slow
def test_replicates_added_to_a_finished_study_are_recorded_and_make_it_sequential(tmp_path):
    import yaml

    from unimix.study import run_study

    out = tmp_path / "study"
    run_study(tiny(out, 2), log=lambda _: None)
    assert "sequential" not in (out / "report.md").read_text()
    run_study(tiny(out, 3), log=lambda _: None)
    record = yaml.safe_load((out / "config.yaml").read_text())
    assert record["replicates_added"][0]["before"] == 2
    assert record["replicates_added"][0]["after"] == 3
    report = (out / "report.md").read_text()
    assert "every verdict is sequential and counts as exploratory" in report
    assert "confirmatory" not in (out / "claims.csv").read_text().split("\n", 1)[1]


@pytest.mark.slow
def test_a_quick_smoke_run_says_so_and_never_blocks_the_full_study(tmp_path):
    from unimix.study import run_study

    out = tmp_path / "study"
    run_study(tiny(out, 2, quick=True), log=lambda _: None)
    report = (out / "report.md").read_text()
    assert report.index("SMOKE RUN") < report.index("comparisons were tested")
    assert "2 epochs on 8×8 images, 2 replicates" in report  # what was trained, not a fixed text
    assert "Best method" not in report
    # theory beside practice is a description: the locality index, no correlation over 1 method
    theory = report[report.index("## Theory next to practice") :]
    assert "locality index" in theory and "Spearman" not in report
    assert "recipe locality" in theory
    run_study(tiny(out, 2), log=lambda _: None)  # the full study replaces the smoke run
    assert "SMOKE RUN" not in (out / "report.md").read_text()


def test_an_interaction_line_agrees_with_its_welch_interval():
    """Interaction lines use Welch's test: their adjusted interval must use Welch's degrees of
    freedom too, so that it excludes 0 exactly when the line is decided."""
    from unimix.study.stats import adjusted_interval, decide, welch_difference

    rng = np.random.default_rng(7)
    for _ in range(200):
        a, b = rng.normal(-0.8, 0.6, 8), rng.normal(0.0, 1.2, 8)
        w = welch_difference(list(a), list(b))
        for p_adj in (w.p_value, min(1.0, 3 * w.p_value)):
            low, high = adjusted_interval(w, p_adj)
            decided = decide(w, p_adj, "low") != UNRESOLVED
            assert decided == (high < 0 or low > 0), (w, p_adj, low, high)
