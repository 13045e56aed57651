"""End-to-end tests of ``unimix study`` on a tiny budget."""

import json
import re

import pytest

from unimix.cli import main
from unimix.study import RESULT_COLUMNS, TIMING_COLUMNS, StudyConfig, read_results, run_study
from unimix.study.report import fmt, shown_metrics

TINY = [
    "image_size=8",
    "epochs=1",
    "batch_size=64",
    "deterministic=true",
    "tensorboard=false",
    "model_kwargs.widths=[8, 16]",
]


def _config(out, methods=("none", "hmix"), seeds=1):
    return StudyConfig(
        out=out,
        methods=list(methods),
        seeds=seeds,
        regimes=["low"],
        overrides=list(TINY),
        device="cpu",
        pgd_steps=2,
        progress=False,
    )


def _parse_md_table(text: str, heading: str) -> list[list[str]]:
    section = text.split(heading, 1)[1]
    lines = [ln for ln in section.splitlines() if ln.startswith("|")]
    rows = []
    for ln in lines[2:]:
        rows.append([c.strip().strip("*") for c in ln.strip("|").split("|")])
        if not ln:
            break
    return rows


def test_study_end_to_end_writes_every_output_and_report_matches_results(tmp_path):
    out = tmp_path / "study"
    code = main(
        [
            "study",
            "--methods",
            "none,hmix",
            "--seeds",
            "1",
            "--regimes",
            "low",
            "--out",
            str(out),
            "--device",
            "cpu",
            "--pgd-steps",
            "2",
            "--no-progress",
            *sum((["--set", s] for s in TINY), []),
        ]
    )
    assert code == 0
    for name in (
        "results.csv",
        "summary.csv",
        "claims.csv",
        "report.md",
        "report.html",
        "config.yaml",
    ):
        assert (out / name).is_file(), name
    for fig in ("curves", "robustness", "reliability", "gallery", "profiles"):
        assert (out / "figures" / f"{fig}.png").stat().st_size > 1000, fig
    for run in ("low/none-rep0", "low/hmix-rep0"):
        for name in ("config.yaml", "metrics.csv", "checkpoint.pt", "evaluation.json"):
            assert (out / "runs" / run / name).is_file(), (run, name)

    rows = read_results(out / "results.csv")
    assert [r["method"] for r in rows] == ["none", "hmix"]
    assert set(rows[0]) == set(RESULT_COLUMNS)
    for r in rows:
        assert 0 <= r["top1_error"] <= 100 and 0 <= r["pgd_accuracy"] <= 100
        # attacks never help (on the attacked subset of the test set)
        ev = json.loads(
            (out / "runs" / "low" / f"{r['method']}-rep0" / "evaluation.json").read_text()
        )
        assert r["pgd_accuracy"] <= 100 - 100 * ev["top1_error"] + 1e-6
    assert rows[0]["mix_overhead_pct"] == 0.0

    # The report's per-run table and summary show exactly results.csv's numbers.
    md = (out / "report.md").read_text()
    table = _parse_md_table(md, "## Every run (results.csv)")
    cols = [c for c, _, _ in shown_metrics(10)]
    assert "top5_error" not in cols  # top-5 of 10 classes says nothing
    for row, parsed in zip(rows, table, strict=False):
        assert parsed[0] == row["regime"] == "low"
        assert parsed[1] == row["method"] and int(parsed[3]) == row["seed"]
        for col, cell in zip(cols, parsed[4:], strict=False):
            assert cell == fmt(row[col], col), (col, cell, row[col])
    summary = _parse_md_table(md, "## Summary")
    for row, parsed in zip(rows, summary, strict=False):
        assert parsed[0] == row["method"]
        for col, cell in zip(cols, parsed[2:], strict=False):
            assert cell == fmt(row[col], col)
    # the claims cite the same numbers, and one seed cannot be judged
    diff = rows[1]["top1_error"] - rows[0]["top1_error"]
    assert f"hmix − none, top-1 error %: {'+' if diff >= 0 else ''}{fmt(diff)}" in md
    assert "cannot be judged" in md
    # the report leads with the table of the best method per regime, then the verdicts
    assert md.index("## Best method and setting per regime") < md.index("## Verdicts")
    assert md.index("## Verdicts") < md.index("## Summary")
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 5
    assert fmt(rows[1]["pgd_accuracy"]) in html
    assert re.search(r"torch: \d", md)


def test_interrupted_study_resumes_to_the_same_results(tmp_path):
    class Stop(Exception):
        pass

    def stop_after_first(run):
        raise Stop(run.name)

    full = _config(tmp_path / "full", methods=("none", "mixup", "cutmix"))
    run_study(full, log=lambda s: None)

    part = _config(tmp_path / "part", methods=("none", "mixup", "cutmix"))
    with pytest.raises(Stop):
        run_study(part, log=lambda s: None, after_run=stop_after_first)
    assert (tmp_path / "part" / "runs" / "low" / "none-rep0" / "evaluation.json").exists()
    assert not (tmp_path / "part" / "results.csv").exists()
    logs = []
    run_study(part, log=logs.append)
    assert "1 already done" in logs[0]

    a = read_results(tmp_path / "full" / "results.csv")
    b = read_results(tmp_path / "part" / "results.csv")
    for ra, rb in zip(a, b, strict=True):
        for col in RESULT_COLUMNS:
            if col not in TIMING_COLUMNS:
                assert ra[col] == rb[col], (ra["method"], col)


def test_bad_study_arguments_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown mixing method 'cutout'.*known methods"):
        StudyConfig(out=tmp_path, methods=["none", "cutout"])
    with pytest.raises(ValueError, match="seeds"):
        StudyConfig(out=tmp_path, seeds=0)
