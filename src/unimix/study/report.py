"""The study's report: which method for which regime, the paper's claims judged on paired seeds,
theory next to practice, and the plots.

Writes ``summary.csv``, ``claims.csv``, ``report.md`` and ``report.html`` and the figures under
``OUT/figures/``. The report is built once as a :class:`~unimix.study.document.Document` and
rendered twice, so both files carry the same numbers, all computed from the rows of
``results.csv``.

How a claim is judged (:mod:`unimix.study.stats`): on the per-seed differences between two
variants (a variant is a method with a grid setting) in one regime, with a 95 % t-interval;
``holds`` / ``reversed`` / ``unresolved``, and ``cannot be judged`` with one seed. An aggregate
claim ("every MSDA method …") holds when every line holds and is reversed when any line is
reversed (one counter-example refutes it); the report names the lines either way.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from unimix.study.document import (
    Bullets,
    Document,
    Figure,
    Heading,
    Paragraph,
    Table,
    to_html,
    to_markdown,
)
from unimix.study.types import T_BOUNDS, software_versions
from unimix.train.fileio import atomic_write_text

__all__ = [
    "METRICS",
    "Claim",
    "ClaimLine",
    "check_claims",
    "fmt",
    "shown_metrics",
    "summarize",
    "write_claims",
    "write_report",
]

from unimix.study.claims import (  # noqa: E402
    DEFAULT_CONFIRMATORY,
    METRICS,
    OVERHEAD_LIMIT_PCT,
    VERDICT_MARK,
    Claim,
    ClaimLine,
    all_pairs,
    check_claims,
    confidence_set_of_best,
    fmt,
    interactions,
    setting_lines,
    shown_metrics,
    summarize,
    without_duplicates,
    write_claims,
)

# ---- figures -------------------------------------------------------------------------------------


def _figures(cfg: Any, runs: Sequence[Any], out: Path) -> list[Figure]:
    """Draw the plots (one colour per method in every figure); return them as blocks."""
    from unimix.evaluate import EvalResult
    from unimix.train import read_metrics
    from unimix.viz.curves import plot_training_curves
    from unimix.viz.reliability import plot_reliability
    from unimix.viz.robustness import plot_robustness

    fig_dir = out / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    figures = []
    first = next(iter(dict.fromkeys(r.regime for r in runs)))
    shown = [r for r in runs if r.regime == first and not r.setting]
    histories: dict[str, list[Any]] = {}
    evals: dict[str, list[Any]] = {}
    for run in shown:
        histories.setdefault(run.method, []).append(read_metrics(run.run_dir))
        evals.setdefault(run.method, []).append(
            EvalResult.from_dict(json.loads(run.eval_path.read_text()))
        )
    where = f"regime {first}, " if first else ""
    plot_training_curves(histories, fig_dir / "curves.png")
    figures.append(
        Figure(
            "figures/curves.png",
            f"Test error and loss per epoch ({where}mean over seeds; training loss is on mixed targets).",
        )
    )
    plot_robustness({m: _mean_result(v) for m, v in evals.items()}, fig_dir / "robustness.png")
    figures.append(
        Figure(
            "figures/robustness.png",
            f"Accuracy under FGSM and PGD against ε ({where}pixel units; mean over seeds).",
        )
    )
    plot_reliability({m: v[0] for m, v in evals.items()}, fig_dir / "reliability.png")
    figures.append(
        Figure(
            "figures/reliability.png",
            f"Reliability diagrams ({where}seed 0, raw): confidence against accuracy, 15 bins.",
        )
    )
    from unimix import registry

    mask_methods = [m for m in cfg.methods if m in registry.available("mask") and m != "none"]
    if mask_methods:
        from unimix.viz.gallery import plot_mask_gallery

        r = float(runs[0].config.method_params.get("r", 0.5))
        plot_mask_gallery(fig_dir / "gallery.png", methods=mask_methods, r=r)
        figures.append(
            Figure(
                "figures/gallery.png",
                f"The studied methods' masks on two photographs (λ = 0.65, HMix r = {r:g}).",
            )
        )
        size = runs[0].config.image_size or 32
        size = size[0] if isinstance(size, list) else size
        _profiles(mask_methods, size, fig_dir / "profiles.png", runs[0].config.method_params)
        figures.append(
            Figure(
                "figures/profiles.png",
                "The pixel-level regularisation each method induces: mean of A(p, q) = "
                f"E[(1−M_p)(1−M_q)] over pixel pairs at distance |p − q| on {size}×{size} images "
                "(unimix.theory).",
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


# ---- the document ------------------------------------------------------------------------------


def _summary_table(
    entries: Sequence[dict[str, Any]], metrics: Sequence[tuple[str, str, str]]
) -> Table:
    header = ["method", "seeds", *(label for _, label, _ in metrics)]
    best: dict[str, float] = {}
    for col, _, better in metrics:
        values = [s[f"{col}_mean"] for s in entries if not math.isnan(s[f"{col}_mean"])]
        if values and len(entries) > 1 and better != "none":
            best[col] = min(values) if better == "low" else max(values)
    rows, bold = [], []
    for s in entries:
        cells, marks = [s["variant"], str(s["n_seeds"])], [False, False]
        for col, _, _ in metrics:
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
    return Table(header, rows, bold)


def _results_table(
    rows: Sequence[dict[str, Any]], metrics: Sequence[tuple[str, str, str]]
) -> Table:
    header = ["regime", "method", "setting", "seed", *(label for _, label, _ in metrics)]
    body = [
        [
            str(r.get("regime", "")),
            r["method"],
            r.get("setting", "") or "–",
            str(r["seed"]),
            *(fmt(float(r[c]), c) for c, _, _ in metrics),
        ]
        for r in rows
    ]
    return Table(header, body)


def _best_block(best: Sequence[dict[str, Any]], sizes: dict[str, tuple[int, int]]) -> list[Any]:
    header = [
        "regime",
        "train / test images",
        "chosen on validation (val / test error %)",
        "cannot be told from it on test (confidence set)",
        "shown worse on test",
    ]
    body = []
    for entry in best:
        b = entry["best"]
        tr, te = sizes.get(entry["regime"], (0, 0))
        worse = ", ".join(
            f"{v} (+{fmt(ln.paired.mean)}, p = {q:.2g})" for v, ln, q in entry["excluded"]
        )
        body.append(
            [
                entry["regime"],
                f"{tr} / {te}",
                f"{b['variant']} ({fmt(b['val_error_mean'])} / {fmt(b['top1_error_mean'])})",
                ", ".join(entry["members"]),
                worse or "–",
            ]
        )
    note = (
        "The best variant is chosen on mean validation error, so the test set plays no "
        "part in the choice. The confidence set is a multiple comparison with that best: "
        "each other variant is tested one-sidedly for a higher paired test error than the "
        "best, Holm-adjusted over the comparisons; those not shown worse at α = 5 % cannot "
        "be told from the best and stay in the set."
    )
    unchosen = [r for r in sizes if r not in {e["regime"] for e in best}]
    if unchosen:
        note += (
            f" No best is named for {', '.join(unchosen)}: without a validation split there "
            "is nothing to choose on but the test set, and the study does not choose there."
        )
    return [Heading("Best method and setting per regime"), Table(header, body, note=note)]


def _smoke_banner(runs: Sequence[Any], seeds: int) -> str:
    """What a ``--quick`` study trained, read from its runs (recipes shrink it differently)."""
    config = runs[0].config if runs else None
    epochs = getattr(config, "epochs", "?")
    size = getattr(config, "image_size", None)
    side = size if isinstance(size, list) else [size, size] if size else None
    images = f"{side[0]}×{side[-1]} images" if side else "images at the data's own size"
    return (
        f"**SMOKE RUN (--quick): {epochs} epochs on {images}, {seeds} replicates. These numbers "
        "mean nothing; they only show that every part of the study runs.**"
    )


def build_document(
    cfg: Any,
    runs: Sequence[Any],
    rows: Sequence[dict[str, Any]],
    *,
    same_start: dict[str, Any] | None = None,
    retried: dict[str, int] | None = None,
    figures: Sequence[Figure] = (),
    theory: Any = None,
    summary: Sequence[dict[str, Any]] | None = None,
    lead: Sequence[Any] = (),
    lead_lines: Sequence[ClaimLine] = (),
) -> tuple[Document, list[ClaimLine]]:
    """The report as a document, and every claim line (for ``claims.csv``).

    ``lead`` is a first section that a recipe's study adds (the locality study's prediction and
    verdict), ``lead_lines`` its claim lines, corrected in their own families by the caller."""
    summary = summary if summary is not None else summarize(rows, cfg.methods)
    base_settings = {r.variant: r.base_setting for r in runs}
    grid_lines = setting_lines(rows, summary)
    taken = list(grid_lines)
    claims = check_claims(summary, rows, base_settings)  # the lines the paired claims draw
    taken += [ln for c in claims for ln in c.lines]
    pairs = without_duplicates(all_pairs(summary, rows), taken)
    inter = interactions(summary, rows, base_settings)
    extra = grid_lines + pairs + inter
    confirmatory = getattr(cfg, "confirmatory", None) or DEFAULT_CONFIRMATORY
    claims = check_claims(
        summary,
        rows,
        base_settings,
        confirmatory=confirmatory,
        predicted=getattr(cfg, "predicted", None),
        extra_lines=extra,
        cost_threshold_pct=getattr(cfg, "cost_threshold_pct", OVERHEAD_LIMIT_PCT),
    )
    lines = [ln for c in claims for ln in c.lines] + extra + list(lead_lines)
    best = confidence_set_of_best(summary, rows)
    metrics = shown_metrics(_num_classes(runs))
    sizes = {r["regime"]: (int(r["train_size"]), int(r["test_size"])) for r in rows}
    seeds = max((s["n_seeds"] for s in summary), default=0)
    sequential = bool(getattr(cfg, "sequential", False))
    if sequential:
        for ln in lines:
            ln.family = "exploratory"
            ln.note = (ln.note + "; " if ln.note else "") + "sequential: replicates were added"

    doc = Document("unimix study: mixed sample data augmentation compared")
    if getattr(cfg, "quick", False):
        doc.blocks.append(Paragraph(_smoke_banner(runs, seeds)))
    doc.blocks += list(lead)
    doc.blocks.append(_testing_sentence(lines, sequential))
    if not getattr(cfg, "quick", False):
        doc.blocks += _best_block(best, sizes)
    doc.blocks += _verdict_blocks(claims, grid_lines, seeds, same_start)
    if pairs or inter:
        doc.blocks += _exploratory_blocks(pairs, inter)
    doc.blocks.append(_temperature_paragraph(rows))
    if retried is not None:
        doc.blocks.append(_retries_paragraph(retried))
    doc.blocks += _setup_blocks(cfg, runs, rows, seeds)
    doc.blocks += _summary_blocks(summary, metrics)
    if theory is not None:
        doc.blocks += _theory_blocks(theory)
    if figures:
        doc.blocks.append(Heading("Figures"))
        doc.blocks += list(figures)
    doc.blocks += [Heading("Every run (results.csv)"), _results_table(rows, metrics)]
    doc.blocks += [
        Heading("Software"),
        Bullets([(f"{k}: {v}", []) for k, v in software_versions().items()]),
    ]
    return doc, lines


def _testing_sentence(lines: Sequence[ClaimLine], sequential: bool) -> Paragraph:
    conf = sum(ln.family == "confirmatory" for ln in lines)
    expl = len(lines) - conf
    text = (
        f"**{len(lines)} comparisons were tested: {conf} confirmatory (declared in the recipe "
        f"before the runs, Holm-corrected together: family-wise error ≤ 5 %) and {expl} "
        "exploratory (Benjamini–Hochberg: false discovery rate ≤ 5 %); every verdict is decided "
        "on its adjusted p-value, and the interval beside it is the one that agrees with it.**"
    )
    if sequential:
        text += (
            " **Replicates were added to this study after it had finished (see config.yaml): "
            "every verdict is sequential and counts as exploratory.**"
        )
    return Paragraph(text)


def _exploratory_blocks(pairs: Sequence[ClaimLine], inter: Sequence[ClaimLine]) -> list[Any]:
    blocks: list[Any] = []
    if pairs:
        blocks += [
            Heading("All pairs (exploratory)"),
            Bullets([(ln.text(), []) for ln in pairs]),
        ]
    if inter:
        blocks += [
            Heading("Regime × method interactions (exploratory)"),
            Paragraph(
                "The difference between two regimes of a method's paired difference to no "
                "mixing (test error), with Welch's interval: negative means the method gains "
                "more over no mixing in the first regime."
            ),
            Bullets([(ln.text(), []) for ln in inter]),
        ]
    return blocks


def _temperature_paragraph(rows: Sequence[dict[str, Any]]) -> Paragraph:
    at_bound = [r for r in rows if int(r.get("temperature_at_bound", 0) or 0)]
    text = (
        f"Temperature scaling: T is fitted on the validation split within "
        f"[{T_BOUNDS[0]:g}, {T_BOUNDS[1]:g}]; "
        f"{len(at_bound)} of {len(rows)} runs ended at a bound"
    )
    if at_bound:
        text += (
            " (a validation split the model classifies almost perfectly says little about "
            "calibration): the T-scaled NLL/ECE claims rest partly on these runs — read them "
            "with care"
        )
    return Paragraph(text + ".")


def _verdict_blocks(
    claims: Sequence[Claim],
    grid_lines: Sequence[ClaimLine],
    seeds: int,
    same_start: dict[str, Any] | None,
) -> list[Any]:
    """The claims' verdicts, the grid comparisons, how a line is judged, the same-start check."""
    blocks: list[Any] = [Heading("Verdicts on the paper's claims")]
    if seeds < 2:
        blocks.append(
            Paragraph(
                "**One seed per method: no verdict can be judged** (a single run has no spread); "
                "run with --seeds 3 or more."
            )
        )
    blocks.append(
        Bullets(
            [
                (f"{VERDICT_MARK.get(c.verdict, '')} **{c.title}**: {c.verdict}.", c.details)
                for c in claims
            ]
        )
    )
    if grid_lines:
        blocks += [
            Heading("Settings compared (grid)"),
            Bullets([(ln.text(), []) for ln in grid_lines]),
        ]
    blocks.append(
        Paragraph(
            "Each line is a paired comparison over replicates (each its own training split and "
            "initialisation, shared by every method): the mean of the per-replicate differences "
            "(a − b), a two-sided paired t-test, and its p-value adjusted in its family; "
            "**holds** when the adjusted p-value is below 5 % on the predicted side, "
            "**reversed** when below 5 % on the other side, **unresolved** otherwise. The "
            "interval shown is the t-interval at confidence 1 − 0.05·p/p_adjusted, which "
            "excludes 0 exactly when the line is decided. An 'every method' claim holds when "
            "every corrected line holds and is reversed by a corrected reversed line; with the "
            "lines corrected together, it reverses on chance with probability at most 5 %. "
            "An unresolved line gives its minimum detectable effect at 80 % power."
        )
    )
    if same_start is not None:
        blocks.append(_same_start_paragraph(same_start))
    return blocks


def _retries_paragraph(retried: dict[str, int]) -> Paragraph:
    if not retried:
        return Paragraph("Execution: every run finished on its first start (no retries).")
    names = ", ".join(f"{name} ({n}×)" for name, n in sorted(retried.items()))
    return Paragraph(
        f"Execution: {len(retried)} run(s) were started again after their worker died or the "
        f"study was interrupted, {sum(retried.values())} retries in all, each resuming from its "
        f"last checkpoint: {names}."
    )


def _same_start_paragraph(same_start: dict[str, Any]) -> Paragraph:
    if same_start.get("ok"):
        return Paragraph(
            f"Same seed, same start: checked for all {same_start['groups']} regime × seed "
            "groups — every method started from bitwise the same initial weights and the same "
            "first training batch (data order and augmentation), so the differences are paired."
        )
    return Paragraph(
        "**Warning: the same-start check failed** for "
        f"{', '.join(same_start.get('mismatches', []))}: these runs did not start from the "
        "same weights and data as the other methods of their seed; their pairing is void."
    )


def _setup_blocks(
    cfg: Any, runs: Sequence[Any], rows: Sequence[dict[str, Any]], seeds: int
) -> list[Any]:
    """The training and attack settings, and per regime its split sizes and schedule."""
    c0 = runs[0].config
    eps = rows[0]["attack_eps"] if rows else cfg.attack_eps
    return [
        Heading("Setup"),
        Paragraph(
            f"Dataset **{c0.dataset}** (image size {c0.image_size or 'native'}), model "
            f"**{c0.model}**, SGD lr {c0.lr} ({c0.schedule}), α = {c0.alpha}, mode {c0.mode}; "
            f"{seeds} seed(s) per method. Attacks: L∞ FGSM and PGD ({cfg.pgd_steps} steps) at "
            f"ε = {eps * 255:.3g}/255 in the tables"
            + (
                f", on the first {cfg.attack_images} test images (error, NLL and ECE use all)"
                if getattr(cfg, "attack_images", None)
                else ""
            )
            + ". NLL and ECE are given raw and after "
            "temperature scaling (one temperature per model, fitted on the validation split)."
        ),
        _regime_table(runs, rows),
    ]


def _regime_table(runs: Sequence[Any], rows: Sequence[dict[str, Any]]) -> Table:
    body = []
    for regime in dict.fromkeys(r.regime for r in runs):
        rc = next(r.config for r in runs if r.regime == regime)
        r0 = next((r for r in rows if r["regime"] == regime), None)
        body.append(
            [
                regime,
                str(r0["train_size"]) if r0 else "–",
                str(r0["val_size"]) if r0 else "–",
                str(r0["test_size"]) if r0 else "–",
                str(rc.epochs),
                str(rc.batch_size),
                str(rc.mix_prob),
            ]
        )
    return Table(["regime", "train", "validation", "test", "epochs", "batch", "mix_prob"], body)


def _summary_blocks(
    summary: Sequence[dict[str, Any]], metrics: Sequence[tuple[str, str, str]]
) -> list[Any]:
    """One summary table per regime."""
    blocks: list[Any] = []
    for regime in dict.fromkeys(s["regime"] for s in summary):
        entries = [s for s in summary if s["regime"] == regime]
        blocks.append(
            Heading(
                f"Summary{f': regime {regime}' if regime else ''} "
                "(mean ± std over seeds; best in bold)"
            )
        )
        blocks.append(_summary_table(entries, metrics))
    return blocks


def _theory_blocks(result: Any) -> list[Any]:
    """:func:`unimix.study.practice.theory_vs_practice`'s result as a section, and why anything
    is missing."""
    blocks: list[Any] = []
    if result.table:
        blocks.append(Heading("Theory next to practice"))
        blocks.append(
            Paragraph(
                "Each method's regularisation strength from unimix.theory beside its measured "
                "gain over no mixing (none − method test error in points, paired over "
                "replicates; positive = mixing helped). **Locality index**: the label-weighted "
                "coefficient of far pixel pairs over that of a pixel with itself (1 for Mixup, "
                "lower as the regulariser ties only nearby pixels; border clipping, shown "
                "beside it, does not move it; docs/theory.md). **Second-order term**: "
                "½ E[δᵀ∇²ℓ δ] of the loss expansion on the regime's trained no-mixing model "
                "(64 validation images, 8 draws; its scale differs between regimes). This is a "
                "description, not a test: with four methods no correlation could be "
                "significant. Whether the theory predicts which masks help is tested by "
                "`unimix study --recipe locality` (ten mask settings on tasks whose cue is "
                'known, a prediction written before the runs; README, "Does the theory '
                'predict?").'
            )
        )
        blocks.append(_theory_table(result.table))
    if result.errors:
        blocks.append(Paragraph("Not computed: " + "; ".join(result.errors[:4])))
    return blocks


def _theory_table(table: Sequence[dict[str, Any]]) -> Table:
    def number(value: float, spec: str) -> str:
        return "–" if math.isnan(value) else format(value, spec)

    return Table(
        [
            "regime",
            "method",
            "locality index",
            "border clipping",
            "second-order term",
            "measured gain [95% CI]",
        ],
        [
            [
                t["regime"],
                t["method"],
                number(t["locality"], ".3f"),
                number(t["clipping"], "+.3f"),
                f"{t['second']:.4g} ± {t['second_se']:.2g}" if not math.isnan(t["second"]) else "–",
                f"{fmt(t['gain'])} [{fmt(t['gain_low'])}, {fmt(t['gain_high'])}]",
            ]
            for t in table
        ],
    )


def _num_classes(runs: Sequence[Any]) -> int | None:
    for run in runs:
        path = run.calibration_path
        if path.is_file():
            value = json.loads(path.read_text()).get("num_classes")
            if value:
                return int(value)
    return None


def write_report(
    cfg: Any,
    runs: Sequence[Any],
    rows: Sequence[dict[str, Any]],
    *,
    same_start: dict[str, Any] | None = None,
    retried: dict[str, int] | None = None,
    theory: Any = None,
    lead: Sequence[Any] = (),
    lead_lines: Sequence[ClaimLine] = (),
) -> Path:
    """Write summary.csv, claims.csv, report.md, report.html and the figures; return report.md.

    ``theory`` is :func:`unimix.study.practice.theory_vs_practice`'s result (computed by the
    runner), or ``None`` for no such section; ``lead`` and ``lead_lines`` as in
    :func:`build_document`."""
    out = Path(cfg.out)
    summary = summarize(rows, cfg.methods)
    cols = ["regime", "variant", "n_seeds"] + [
        f"{c}_{s}" for c, _, _ in METRICS for s in ("mean", "std")
    ]
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(cols)
    for s in summary:
        writer.writerow(
            [s[c] if c in ("regime", "variant", "n_seeds") else f"{s[c]:.6g}" for c in cols]
        )
    atomic_write_text(out / "summary.csv", buf.getvalue())
    figures = _figures(cfg, runs, out)
    doc, lines = build_document(
        cfg,
        runs,
        rows,
        same_start=same_start,
        retried=retried,
        figures=figures,
        theory=theory,
        summary=summary,
        lead=lead,
        lead_lines=lead_lines,
    )
    write_claims(lines, out / "claims.csv")
    md_path = out / "report.md"
    atomic_write_text(md_path, to_markdown(doc))
    atomic_write_text(out / "report.html", to_html(doc, out))
    return md_path
