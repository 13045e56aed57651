"""The locality study's pieces: task label rules and determinism, the locality index, the
prediction (from the theory alone) and the slope/interaction estimator on planted data."""

from __future__ import annotations

import math
import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from unimix.data import build_dataset
from unimix.data.digit_tasks import compose_local, compose_pair
from unimix.study.locality import DIAL, LOCAL_TASK, LONG_TASK, locality_slopes
from unimix.theory import border_clipping, locality_index


def _pool(n: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthetic 8×8 'digits' whose label is written in the image: class c lights row c % 8."""
    labels = torch.arange(n) % 10
    images = torch.zeros(n, 1, 8, 8)
    images[torch.arange(n), 0, labels % 8, :] = 1.0
    images[torch.arange(n), 0, :, labels // 8] = 0.5  # classes 8, 9 differ by column
    return images, labels


def test_local_label_is_the_pasted_digit() -> None:
    x, y = _pool()
    out, lab = compose_local(x, y, 200, 32, torch.Generator().manual_seed(1))
    assert out.shape == (200, 1, 32, 32)
    # the digit is pasted whole: some 8×8 window equals one pool image of the label's class
    windows = out[:, 0].unfold(1, 8, 1).unfold(2, 8, 1)  # [N, 25, 25, 8, 8]
    for i in range(0, 200, 17):
        proto = x[y == lab[i]][0, 0]
        hit = (windows[i] >= proto).all(-1).all(-1)
        assert bool(hit.any()), f"image {i}: no window contains its label's digit"


def test_split_halves_are_far_and_label_is_the_digit() -> None:
    x, y = _pool()
    out, lab = compose_pair(x, y, 100, 32, torch.Generator().manual_seed(5), "split")
    assert float(out[:, 0, 12:20, :].sum()) == 0 and float(out[:, 0, :, 12:20].sum()) == 0
    tl = out[:, 0, :12, :12].unfold(1, 8, 1).unfold(2, 8, 1).flatten(1, 2)
    br = out[:, 0, 20:, 20:].unfold(1, 8, 1).unfold(2, 8, 1).flatten(1, 2)
    for i in range(100):
        proto = x[y == lab[i]][0, 0]
        top, bottom = proto.clone(), proto.clone()
        top[4:], bottom[:4] = 0, 0
        assert bool((tl[i] == top).all(-1).all(-1).any()), i
        assert bool((br[i] == bottom).all(-1).all(-1).any()), i


@pytest.mark.parametrize("rule", ["same", "parity"])
def test_pair_label_rule_and_digits_are_far(rule: str) -> None:
    x, y = _pool()
    g = torch.Generator().manual_seed(2)
    out, lab = compose_pair(x, y, 300, 32, g, rule)
    tl, br = out[:, 0, :12, :12], out[:, 0, 20:, 20:]
    assert float(out[:, 0, 12:20, :].sum()) == 0 and float(out[:, 0, :, 12:20].sum()) == 0
    # recover a and b from the corners by matching the pool
    def ident(corner: torch.Tensor) -> torch.Tensor:
        win = corner.unfold(1, 8, 1).unfold(2, 8, 1).flatten(1, 2)  # [N, W, 8, 8]
        score = torch.stack([(win == x[c, 0]).all(-1).all(-1).any(-1) for c in range(10)], 1)
        assert bool((score.sum(1) >= 1).all())
        return y[score.float().argmax(1)]

    a, b = ident(tl), ident(br)
    want = (a == b).long() if rule == "same" else (a + b) % 2
    assert torch.equal(lab, want)
    if rule == "same":
        assert 0.35 < lab.float().mean() < 0.65  # balanced by construction


@pytest.mark.parametrize("task", ["digits_local", "digits_pair"])
def test_tasks_are_deterministic_and_replicates_redraw(task: str) -> None:
    a = build_dataset(task, split_seed=3, n_train=50, n_test=50, val_fraction=0.2)
    b = build_dataset(task, split_seed=3, n_train=50, n_test=50, val_fraction=0.2)
    c = build_dataset(task, split_seed=4, n_train=50, n_test=50, val_fraction=0.2)
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.test.labels, b.test.labels)
    assert not torch.equal(a.train.images, c.train.images)
    assert a.image_size == (32, 32) and a.val is not None
    assert a.num_classes == 10


def test_task_options_are_checked() -> None:
    with pytest.raises(ValueError, match="image_size"):
        build_dataset("digits_local", image_size=16)
    with pytest.raises(TypeError, match="n_train"):
        build_dataset("digits_pair", train_per_class=5)


def test_locality_index_contract() -> None:
    assert locality_index("mixup") == pytest.approx(1.0, abs=1e-9)
    hm = [locality_index("hmix", r=r) for r in (0.25, 0.5, 0.75, 1.0)]
    assert all(a > b for a, b in zip(hm, hm[1:], strict=False)), hm
    assert locality_index("cutmix") < 0.6
    # clipping alone does not move the index; it is reported apart
    assert locality_index("cutmix", boundary="clip") == locality_index("cutmix", boundary="wrap")
    assert border_clipping("cutmix", boundary="clip") != 0.0
    assert border_clipping("cutmix", boundary="wrap") == 0.0
    assert math.isnan(locality_index("none"))


def test_dial_spans_the_index() -> None:
    assert len(DIAL) >= 8
    values = [locality_index(s.method, **s.kwargs) for s in DIAL]
    assert max(values) == pytest.approx(1.0) and min(values) < 0.5


def test_predict_never_reads_results(tmp_path, monkeypatch) -> None:
    import builtins

    from unimix.cli import main

    opened: list[str] = []
    real_open = builtins.open

    def spy(file, *args, **kwargs):  # type: ignore[no-untyped-def]
        opened.append(str(file))
        return real_open(file, *args, **kwargs)

    (tmp_path / "results.csv").write_text("task,setting\nx,y\n")
    (tmp_path / "claims.csv").write_text("claim\nx\n")
    monkeypatch.setattr(builtins, "open", spy)
    monkeypatch.chdir(tmp_path)
    assert main(["predict", "--out", str(tmp_path)]) == 0
    assert not [f for f in opened if f.endswith(("results.csv", "claims.csv", "summary.csv"))]
    text = (tmp_path / "predictions.csv").read_text()
    assert "interaction" in text and "digits_local" in text and "digits_pair" in text


def _planted(slope_local: float, slope_long: float, reps: int, noise: float, seed: int):
    rng = random.Random(seed)
    index = {s.name: locality_index(s.method, **s.kwargs) for s in DIAL}
    rows = []
    for rep in range(reps):
        for task, slope in ((LOCAL_TASK, slope_local), (LONG_TASK, slope_long)):
            base = 10 + rng.gauss(0, 1)
            rows.append({"task": task, "setting": "none", "replicate": rep, "top1_error": base})
            for name, x in index.items():
                gain = slope * x + rng.gauss(0, noise)
                rows.append(
                    {"task": task, "setting": name, "replicate": rep, "top1_error": base - gain}
                )
    return rows, index


@settings(max_examples=8, deadline=None)
@given(st.floats(2.0, 6.0), st.integers(0, 10_000))
def test_estimator_finds_a_planted_interaction(effect: float, seed: int) -> None:
    rows, index = _planted(effect, -effect, reps=8, noise=0.5, seed=seed)
    s = locality_slopes(rows, index)
    assert s.per_task[LOCAL_TASK].ci_low > 0 and s.per_task[LONG_TASK].ci_high < 0
    assert s.interaction is not None and s.interaction.ci_low > 0
    assert s.interaction.ci_low < 2 * effect < s.interaction.ci_high + 1e-9 or abs(
        s.interaction.mean - 2 * effect
    ) < 1.5


def test_estimator_without_effect_is_not_significant_often() -> None:
    hits = 0
    for seed in range(40):
        rows, index = _planted(0.0, 0.0, reps=8, noise=1.0, seed=seed)
        inter = locality_slopes(rows, index).interaction
        assert inter is not None
        hits += not (inter.ci_low <= 0 <= inter.ci_high)
    assert hits <= 7  # 5 % nominal: 2 expected of 40; 7 is p < 0.01 under the null


def test_claim_lines_put_the_interaction_in_the_confirmatory_family() -> None:
    from unimix.study.claims import correct
    from unimix.study.locality import locality_claim_lines

    rows, index = _planted(4.0, -4.0, reps=8, noise=0.5, seed=1)
    lines = locality_claim_lines(locality_slopes(rows, index), "+")
    correct(lines, ["locality_interaction"])
    inter = [ln for ln in lines if ln.claim == "locality_interaction"]
    assert len(inter) == 1 and inter[0].family == "confirmatory" and inter[0].verdict == "holds"
    slopes = {ln.regime: ln for ln in lines if ln.claim == "locality_slope"}
    assert slopes[LOCAL_TASK].verdict == "holds" and slopes[LONG_TASK].verdict == "reversed"
    assert all(ln.family == "exploratory" for ln in slopes.values())
    # the same data against the opposite prediction is reversed, not silently flipped
    lines = locality_claim_lines(locality_slopes(rows, index), "-")
    correct(lines, ["locality_interaction"])
    assert [ln.verdict for ln in lines if ln.claim == "locality_interaction"] == ["reversed"]


def test_the_study_planned_runs_map_onto_the_dial_and_the_verdict_leads_the_report(
    tmp_path,
) -> None:
    """From the locality recipe's own run plan (its regimes, method names and setting strings):
    a planted positive interaction comes out `holds` in the confirmatory family, and the
    prediction with its verdict is the first section of the report document."""
    from unimix.study import StudyConfig, plan_runs
    from unimix.study.document import Document, Heading, to_markdown
    from unimix.study.locality import locality_verdict, predict_rows, write_predictions
    from unimix.study.runner import load_study_section

    runs = plan_runs(StudyConfig(out=tmp_path, recipe="locality", seeds=6))
    assert {r.regime for r in runs} == {"local", "pair", "global"}
    digest = write_predictions(predict_rows(), tmp_path / "predictions.csv")
    index = {s.name: locality_index(s.method, **s.kwargs) for s in DIAL}
    tasks = dict(load_study_section("locality")["locality"])
    slope = {"local": 4.0, "pair": -4.0, "global": 0.0}
    rng = random.Random(0)
    rows, names = [], set()
    for r in runs:
        base = 10.0 + r.replicate  # shared by every setting of a replicate and regime
        if r.method == "none":
            error = base
        else:
            from unimix.study.locality import rows_from_results

            mapped = rows_from_results(
                [{"regime": r.regime, "method": r.method, "setting": r.setting,
                  "replicate": r.replicate, "top1_error": 0.0}], tasks)  # fmt: skip
            assert len(mapped) == 1, f"{r.variant} maps onto no dial setting"
            names.add(mapped[0]["setting"])
            error = base - slope[r.regime] * index[mapped[0]["setting"]] + rng.gauss(0, 0.3)
        rows.append({"regime": r.regime, "method": r.method, "setting": r.setting,
                     "replicate": r.replicate, "top1_error": error})  # fmt: skip
    assert names == set(index)  # every dial setting was planned and is recognised
    blocks, lines = locality_verdict(tmp_path, rows, tasks, digest)
    inter = [ln for ln in lines if ln.claim == "locality_interaction"]
    assert len(inter) == 1 and inter[0].family == "confirmatory" and inter[0].verdict == "holds"
    assert inter[0].paired.n == 6
    assert isinstance(blocks[0], Heading) and blocks[0].text == "The prediction and its verdict"
    text = to_markdown(Document("report", list(blocks)))
    assert digest in text and "holds" in text and "minimum detectable interaction" in text
    assert "across the dial" in text
    assert (tmp_path / "figures" / "locality_tasks.png").is_file()


@pytest.mark.slow
def test_predict_ranks_the_dial_for_a_dataset_and_says_how_far_to_trust_it(tmp_path, capsys):
    """`unimix predict --dataset digits`: a brief baseline, every dial setting ranked by its
    second-order term with its locality index at the data's size, and the locality study's
    record printed beside it; `--model-run` on that baseline gives the same ranking."""
    import csv

    from unimix.cli import main
    from unimix.study.advise import STUDY_RECORD, trust_statement

    out = tmp_path / "p"
    assert main(["predict", "--dataset", "digits", "--epochs", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert trust_statement(STUDY_RECORD) in printed
    with open(out / "ranking.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["rank"]) for r in rows] == list(range(1, len(DIAL) + 1))
    assert {r["setting"] for r in rows} == {s.name for s in DIAL}
    second = [float(r["second_order"]) for r in rows]
    assert second == sorted(second, reverse=True) and all(math.isfinite(v) for v in second)
    size = build_dataset("digits").image_size
    for r in rows:
        s = next(s for s in DIAL if s.name == r["setting"])
        assert float(r["locality_index"]) == pytest.approx(
            locality_index(s.method, *size, **s.kwargs), rel=1e-5
        )
    again = tmp_path / "q"
    assert main(["predict", "--dataset", "digits", "--model-run", str(out / "baseline"),
                 "--out", str(again)]) == 0  # fmt: skip
    assert (again / "ranking.csv").read_text() == (out / "ranking.csv").read_text()
    assert not (again / "baseline").exists()  # the given run was used, nothing trained


def test_the_recorded_study_is_what_the_readme_quotes() -> None:
    """`unimix predict`'s trust statement and README's "Does the theory predict?" report the
    same measured interaction, and the record is a complete verdict."""
    from pathlib import Path

    from unimix.study.advise import STUDY_RECORD, trust_statement

    assert STUDY_RECORD is not None
    assert STUDY_RECORD["verdict"] in ("holds", "reversed", "unresolved")
    assert STUDY_RECORD["ci_low"] <= STUDY_RECORD["mean"] <= STUDY_RECORD["ci_high"]
    # a verdict agrees with its interval (two-sided 95 %, predicted sign +)
    low, high = STUDY_RECORD["ci_low"], STUDY_RECORD["ci_high"]
    expected = "holds" if low > 0 else "reversed" if high < 0 else "unresolved"
    assert STUDY_RECORD["verdict"] == expected
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme[readme.index("## Does the theory predict?") :]
    section = section[: section.index("\n## ", 5)]
    quoted = f"{STUDY_RECORD['mean']:+.2f} points"
    interval = f"[{low:+.2f}, {high:+.2f}]"
    assert quoted in section and interval in section
    assert quoted in trust_statement(STUDY_RECORD) and interval in trust_statement(STUDY_RECORD)
