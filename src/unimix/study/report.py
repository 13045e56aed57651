"""The study's report: per-method summary, the paper's claims checked one by one, and the plots.

Writes ``summary.csv``, ``report.md`` and ``report.html`` (the same content, images embedded) and
the figures under ``OUT/figures/``. Every number in the report is computed from the rows of
``results.csv`` and printed with the same rounding in both documents.
"""

from __future__ import annotations

import base64
import html
import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unimix.train.fileio import atomic_write_text

__all__ = ["METRICS", "Claim", "summarize", "check_claims", "write_report", "fmt"]

#: (column, label, which way is better) of the summary table.
METRICS: tuple[tuple[str, str, str], ...] = (
    ("top1_error", "top-1 error %", "low"),
    ("top5_error", "top-5 error %", "low"),
    ("nll", "NLL", "low"),
    ("ece", "ECE %", "low"),
    ("fgsm_accuracy", "FGSM acc %", "high"),
    ("pgd_accuracy", "PGD acc %", "high"),
    ("occlusion_accuracy", "occlusion acc %", "high"),
    ("time_per_epoch_s", "s / epoch", "low"),
    ("images_per_s", "images/s", "high"),
    ("mix_overhead_pct", "mixing % of step", "low"),
)

#: The paper's cost claim: mixing takes at most this share of a training step.
OVERHEAD_LIMIT_PCT = 5.0
#: A difference smaller than this many standard errors is reported as inside the seed noise.
NOISE_SE = 2.0


def fmt(value: float, column: str = "") -> str:
    """The one rounding used everywhere in the report."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if column == "nll":
        return f"{value:.4f}"
    if column == "images_per_s":
        return f"{value:.0f}"
    return f"{value:.2f}"


def summarize(rows: Sequence[dict[str, Any]], methods: Sequence[str]) -> list[dict[str, Any]]:
    """Per method: number of seeds, and mean and sample standard deviation of every metric."""
    out = []
    for method in methods:
        sel = [r for r in rows if r["method"] == method]
        if not sel:
            continue
        entry: dict[str, Any] = {"method": method, "n_seeds": len(sel)}
        for col, _, _ in METRICS:
            values = [float(r[col]) for r in sel if not math.isnan(float(r[col]))]
            entry[f"{col}_mean"] = statistics.fmean(values) if values else math.nan
            entry[f"{col}_std"] = (
                statistics.stdev(values) if len(values) > 1 else 0.0 if values else math.nan
            )
        out.append(entry)
    return out


@dataclass
class Claim:
    """One claim of the paper, its verdict on this study, and the numbers that decide it."""

    title: str
    verdict: str  # "holds", "does not hold", "inside seed noise", "not tested"
    details: list[str]


def _by_method(summary: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {s["method"]: s for s in summary}


def _compare(
    a: dict[str, Any], b: dict[str, Any], col: str, better: str
) -> tuple[float, float, bool, bool]:
    """Improvement of ``a`` over ``b`` on ``col`` (positive = a better), its standard error,
    whether a is at least as good, and whether the difference is inside the seed noise."""
    diff = a[f"{col}_mean"] - b[f"{col}_mean"]
    if better == "low":
        diff = -diff
    se = math.sqrt(a[f"{col}_std"] ** 2 / a["n_seeds"] + b[f"{col}_std"] ** 2 / b["n_seeds"])
    noisy = abs(diff) <= NOISE_SE * se if (a["n_seeds"] > 1 and b["n_seeds"] > 1) else False
    return diff, se, diff >= 0, noisy


def _verdict(outcomes: Sequence[tuple[bool, bool]]) -> str:
    if not outcomes:
        return "not tested"
    if all(ok for ok, _ in outcomes):
        return "holds"
    if all(ok or noisy for ok, noisy in outcomes):
        return "inside seed noise"
    return "does not hold"


def _noise_note(noisy: bool, single: bool) -> str:
    if single:
        return " (one seed: no noise estimate)"
    return " — inside the seed noise" if noisy else ""


def check_claims(summary: Sequence[dict[str, Any]]) -> list[Claim]:
    """The paper's claims, each with the numbers that decide it."""
    by = _by_method(summary)
    msda = [m for m in by if m != "none"]
    single = any(s["n_seeds"] < 2 for s in summary)
    claims = []

    def beats_baseline(title: str, cols: Sequence[tuple[str, str]]) -> Claim:
        if "none" not in by or not msda:
            return Claim(
                title, "not tested", ["needs `none` and at least one mixing method in --methods"]
            )
        outcomes, details = [], []
        for col, better in cols:
            label = dict((c, lab) for c, lab, _ in METRICS)[col]
            for m in msda:
                diff, se, ok, noisy = _compare(by[m], by["none"], col, better)
                outcomes.append((ok, noisy))
                details.append(
                    f"{m}: {label} {fmt(by[m][col + '_mean'], col)} vs none {fmt(by['none'][col + '_mean'], col)} "
                    f"({'better' if ok else 'worse'} by {fmt(abs(diff), col)}{_noise_note(noisy, single)})"
                )
        return Claim(title, _verdict(outcomes), details)

    claims.append(
        beats_baseline("Every MSDA method beats no mixing on test error", [("top1_error", "low")])
    )
    claims.append(
        beats_baseline(
            "MSDA improves adversarial robustness over no mixing (FGSM and PGD)",
            [("fgsm_accuracy", "high"), ("pgd_accuracy", "high")],
        )
    )

    title = "HMix and GMix are at least as good as the better of Mixup and CutMix (test error)"
    prev = [m for m in ("mixup", "cutmix") if m in by]
    new = [m for m in ("hmix", "gmix") if m in by]
    if not prev or not new:
        claims.append(
            Claim(title, "not tested", ["needs hmix or gmix and mixup or cutmix in --methods"])
        )
    else:
        best = min(prev, key=lambda m: by[m]["top1_error_mean"])
        outcomes, details = [], []
        for m in new:
            diff, se, ok, noisy = _compare(by[m], by[best], "top1_error", "low")
            outcomes.append((ok, noisy))
            details.append(
                f"{m}: top-1 error {fmt(by[m]['top1_error_mean'])} vs {best} (the better earlier method) "
                f"{fmt(by[best]['top1_error_mean'])} ({'better or equal' if ok else 'worse'} by "
                f"{fmt(abs(diff))}{_noise_note(noisy, single)})"
            )
        claims.append(Claim(title, _verdict(outcomes), details))

    title = f"Mixing costs next to nothing (under {OVERHEAD_LIMIT_PCT:g}% of a training step)"
    if not msda:
        claims.append(Claim(title, "not tested", ["needs at least one mixing method"]))
    else:
        details, outcomes = [], []
        for m in msda:
            pct = by[m]["mix_overhead_pct_mean"]
            ok = not math.isnan(pct) and pct < OVERHEAD_LIMIT_PCT
            outcomes.append((ok, False))
            line = f"{m}: mixing takes {fmt(pct)}% of the training step"
            if "none" in by:
                line += (
                    f"; {fmt(by[m]['time_per_epoch_s_mean'])} s/epoch vs "
                    f"{fmt(by['none']['time_per_epoch_s_mean'])} s/epoch without mixing"
                )
            details.append(line)
        claims.append(Claim(title, _verdict(outcomes), details))
    return claims


# ---- documents ---------------------------------------------------------------------------------


def _summary_table(
    summary: Sequence[dict[str, Any]],
) -> tuple[list[str], list[list[str]], list[list[bool]]]:
    header = ["method", "seeds", *(label for _, label, _ in METRICS)]
    rows, bold = [], []
    best: dict[str, float] = {}
    for col, _, better in METRICS:
        values = [s[f"{col}_mean"] for s in summary if not math.isnan(s[f"{col}_mean"])]
        if values and len(summary) > 1:
            best[col] = min(values) if better == "low" else max(values)
    for s in summary:
        cells, marks = [s["method"], str(s["n_seeds"])], [False, False]
        for col, _, _ in METRICS:
            mean, std = s[f"{col}_mean"], s[f"{col}_std"]
            text = (
                fmt(mean, col)
                if s["n_seeds"] < 2 or math.isnan(mean)
                else f"{fmt(mean, col)} ± {fmt(std, col)}"
            )
            cells.append(text)
            marks.append(
                col in best and not math.isnan(mean) and fmt(mean, col) == fmt(best[col], col)
            )
        rows.append(cells)
        bold.append(marks)
    return header, rows, bold


def _results_table(rows: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    cols = [c for c, _, _ in METRICS]
    header = ["method", "seed", *(label for _, label, _ in METRICS)]
    body = [[r["method"], str(r["seed"]), *(fmt(float(r[c]), c) for c in cols)] for r in rows]
    return header, body


def _md_table(
    header: list[str], rows: list[list[str]], bold: list[list[bool]] | None = None
) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for i, row in enumerate(rows):
        cells = [f"**{c}**" if bold and bold[i][j] else c for j, c in enumerate(row)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _html_table(
    header: list[str], rows: list[list[str]], bold: list[list[bool]] | None = None
) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cells = "".join(
            f"<td><b>{html.escape(c)}</b></td>"
            if bold and bold[i][j]
            else f"<td>{html.escape(c)}</td>"
            for j, c in enumerate(row)
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


_VERDICT_MARK = {"holds": "✅", "does not hold": "❌", "inside seed noise": "≈", "not tested": "–"}


def _figures(cfg: Any, runs: Sequence[Any], out: Path) -> list[tuple[str, str]]:
    """Draw the plots; return (file relative to the report, caption)."""
    from unimix.evaluate import EvalResult
    from unimix.train import read_metrics
    from unimix.viz.curves import plot_training_curves
    from unimix.viz.reliability import plot_reliability
    from unimix.viz.robustness import plot_robustness

    fig_dir = out / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    figures = []
    histories: dict[str, list[Any]] = {}
    evals: dict[str, list[Any]] = {}
    for run in runs:
        histories.setdefault(run.method, []).append(read_metrics(run.run_dir))
        evals.setdefault(run.method, []).append(
            EvalResult.from_dict(json.loads(run.eval_path.read_text()))
        )
    plot_training_curves(histories, fig_dir / "curves.png")
    figures.append(
        (
            "figures/curves.png",
            "Test error and loss per epoch (mean over seeds; training loss is on mixed targets).",
        )
    )
    plot_robustness({m: _mean_result(v) for m, v in evals.items()}, fig_dir / "robustness.png")
    figures.append(
        (
            "figures/robustness.png",
            "Accuracy under FGSM and PGD against ε (pixel units; mean over seeds).",
        )
    )
    plot_reliability({m: v[0] for m, v in evals.items()}, fig_dir / "reliability.png")
    figures.append(
        (
            "figures/reliability.png",
            "Reliability diagrams (seed 0): confidence against accuracy, 15 bins.",
        )
    )
    from unimix import masks as _masks

    mask_methods = [m for m in cfg.methods if m in _masks.available() and m != "none"]
    if mask_methods:
        from unimix.viz.gallery import plot_mask_gallery

        plot_mask_gallery(fig_dir / "gallery.png", methods=mask_methods)
        figures.append(
            (
                "figures/gallery.png",
                "The studied methods' masks on two photographs (λ = 0.65, HMix r = 0.5).",
            )
        )
        size = runs[0].config.image_size or 32
        size = size[0] if isinstance(size, list) else size
        _profiles(mask_methods, size, fig_dir / "profiles.png", runs[0].config.method_params)
        figures.append(
            (
                "figures/profiles.png",
                f"The pixel-level regularisation each method induces: mean of A(p, q) = E[(1−M_p)(1−M_q)] "
                f"over pixel pairs at distance |p − q| on {size}×{size} images (unimix.theory).",
            )
        )
    return figures


def _profiles(methods: Sequence[str], size: int, path: Path, params: dict[str, Any]) -> None:
    from unimix.viz.profiles import write_profile_plot

    accepted = {"hmix": {k: v for k, v in params.items() if k == "r"}}
    write_profile_plot(methods, path, height=size, samples=1024, method_params=accepted)


def _mean_result(results: Sequence[Any]) -> dict[str, Any]:
    """The seeds' robustness curves averaged (same ε grid in every run)."""
    base = results[0].to_dict()
    for key in ("fgsm_accuracy", "pgd_accuracy"):
        base[key] = [
            statistics.fmean(r.to_dict()[key][i] for r in results) for i in range(len(base[key]))
        ]
    base["top1_error"] = statistics.fmean(r.top1_error for r in results)
    return base


def write_report(cfg: Any, runs: Sequence[Any], rows: Sequence[dict[str, Any]]) -> Path:
    """Write summary.csv, report.md, report.html and the figures; return report.md's path."""
    from unimix.study.runner import software_versions

    out = Path(cfg.out)
    summary = summarize(rows, cfg.methods)
    cols = ["method", "n_seeds"] + [f"{c}_{s}" for c, _, _ in METRICS for s in ("mean", "std")]
    lines = [",".join(cols)] + [
        ",".join(str(s[c]) if c in ("method", "n_seeds") else f"{s[c]:.6g}" for c in cols)
        for s in summary
    ]
    atomic_write_text(out / "summary.csv", "\n".join(lines) + "\n")
    claims = check_claims(summary)
    figures = _figures(cfg, runs, out)
    c0 = runs[0].config
    eps = rows[0]["attack_eps"] if rows else cfg.attack_eps
    setup = (
        f"Dataset **{c0.dataset}** (image size {c0.image_size or 'native'}), model **{c0.model}**, "
        f"{c0.epochs} epochs, batch {c0.batch_size}, SGD lr {c0.lr} ({c0.schedule}), "
        f"α = {c0.alpha}, mode {c0.mode}; {cfg.seeds} seed(s) per method. "
        f"Attacks: L∞ FGSM and PGD ({cfg.pgd_steps} steps) at ε = {eps * 255:.3g}/255 in the table."
    )
    versions = software_versions()
    s_head, s_rows, s_bold = _summary_table(summary)
    r_head, r_rows = _results_table(rows)

    md = [
        "# unimix study: mixed sample data augmentation compared",
        "",
        setup,
        "",
        "## Summary (mean ± std over seeds; best in bold)",
        "",
        _md_table(s_head, s_rows, s_bold),
        "",
        "## The paper's claims, checked",
        "",
    ]
    for claim in claims:
        md.append(f"- {_VERDICT_MARK[claim.verdict]} **{claim.title}**: {claim.verdict}.")
        md += [f"  - {d}" for d in claim.details]
    md += [
        "",
        f"Differences within {NOISE_SE:g} standard errors of the seed-to-seed variation are "
        "reported as inside the seed noise.",
        "",
        "## Figures",
        "",
    ]
    for file, caption in figures:
        md += [f"![{caption}]({file})", "", f"*{caption}*", ""]
    md += ["## Every run (results.csv)", "", _md_table(r_head, r_rows), "", "## Software", ""]
    md += [f"- {k}: {v}" for k, v in versions.items()]
    md_path = out / "report.md"
    atomic_write_text(md_path, "\n".join(md) + "\n")

    body = [
        "<h1>unimix study: mixed sample data augmentation compared</h1>",
        f"<p>{_md_inline(setup)}</p>",
        "<h2>Summary (mean ± std over seeds; best in bold)</h2>",
        _html_table(s_head, s_rows, s_bold),
        "<h2>The paper's claims, checked</h2><ul>",
    ]
    for claim in claims:
        items = "".join(f"<li>{html.escape(d)}</li>" for d in claim.details)
        body.append(
            f"<li>{_VERDICT_MARK[claim.verdict]} <b>{html.escape(claim.title)}</b>: "
            f"{html.escape(claim.verdict)}.<ul>{items}</ul></li>"
        )
    body.append("</ul><h2>Figures</h2>")
    for file, caption in figures:
        data = base64.b64encode((out / file).read_bytes()).decode("ascii")
        body.append(
            f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
    body += [
        "<h2>Every run (results.csv)</h2>",
        _html_table(r_head, r_rows),
        "<h2>Software</h2><ul>",
    ]
    body += [f"<li>{html.escape(k)}: {html.escape(v)}</li>" for k, v in versions.items()]
    body.append("</ul>")
    page = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>unimix study</title><style>"
        "body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;font-size:0.85em}td,th{border:1px solid #ccc;padding:3px 6px;"
        "text-align:right}td:first-child,th:first-child{text-align:left}img{max-width:100%}"
        "figcaption{font-style:italic;color:#555}</style></head><body>"
        + "\n".join(body)
        + "</body></html>\n"
    )
    atomic_write_text(out / "report.html", page)
    return md_path


def _md_inline(text: str) -> str:
    parts = html.escape(text).split("**")
    return "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))
