"""The study's claims: paired comparisons over replicates, their families and corrections.

A **line** compares two variants (a method with a grid setting) of one regime on one metric: the
paired differences over replicates (each replicate its own training split and initialisation,
shared by every method), their mean, a two-sided paired t-test and an interval
(:mod:`unimix.study.stats`). Lines belong to one of two **families**:

- ``confirmatory``: the short list of claims the recipe declares with their predicted direction
  (``study: confirmatory:``; for digits: every MSDA method vs no mixing, HMix and GMix vs the
  better of Mixup and CutMix chosen on the *validation* split, Mixup vs CutMix). Their p-values
  are adjusted together by Holm's method, so the chance of any false verdict in the family is at
  most α = 5 %;
- ``exploratory``: everything else (other metrics, all pairs, the grid, interactions, the cost
  line), adjusted together by Benjamini–Hochberg (false discovery rate 5 %) and labelled so.

A line **holds** when its adjusted p-value is below α with the mean on the predicted (better)
side, is **reversed** when below α on the other side, and is **unresolved** otherwise; the
interval written beside it is the t-interval at confidence ``1 − α·p/p_adjusted``, which excludes
0 exactly when the verdict is not unresolved. An aggregate claim ("every MSDA method …") holds
when each of its corrected lines holds and is reversed when one is: with the lines already
corrected for the whole family, an aggregate reverses on chance with probability at most α.
Every choice (the better of Mixup and CutMix, the best method) is made on validation error; the
test columns only measure.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unimix.study.stats import (
    CANNOT_JUDGE,
    HOLDS,
    REVERSED,
    UNRESOLVED,
    Paired,
    adjusted_interval,
    aggregate_verdict,
    benjamini_hochberg,
    decide,
    holm,
    minimum_detectable_effect,
    paired_difference,
    welch_difference,
)
from unimix.study.types import CLAIM_COLUMNS
from unimix.train.fileio import atomic_write_text

__all__ = [
    "DEFAULT_CONFIRMATORY",
    "METRICS",
    "OVERHEAD_LIMIT_PCT",
    "Claim",
    "ClaimLine",
    "aggregate",
    "all_pairs",
    "baseline_variant",
    "check_claims",
    "confidence_set_of_best",
    "correct",
    "fmt",
    "interactions",
    "paired_line",
    "regimes_of",
    "setting_lines",
    "shown_metrics",
    "summarize",
    "variant_of",
    "without_duplicates",
    "write_claims",
]

#: (column, label, which way is better) of the summary tables.
METRICS: tuple[tuple[str, str, str], ...] = (
    ("top1_error", "top-1 error %", "low"),
    ("top5_error", "top-5 error %", "low"),
    ("nll", "NLL", "low"),
    ("nll_ts", "NLL (T-scaled)", "low"),
    ("ece", "ECE %", "low"),
    ("ece_ts", "ECE % (T-scaled)", "low"),
    ("temperature", "T", "none"),
    ("val_error", "validation error %", "low"),
    ("fgsm_accuracy", "FGSM acc %", "high"),
    ("pgd_accuracy", "PGD acc %", "high"),
    ("occlusion_accuracy", "occlusion acc %", "high"),
    ("time_per_epoch_s", "s / epoch", "low"),
    ("images_per_s", "images/s", "high"),
    ("mix_overhead_pct", "mixing % of step", "low"),
    ("mix_share_pct", "mixing % of a mixed step", "low"),
)
LABELS = {c: lab for c, lab, _ in METRICS}
BETTER = {c: b for c, _, b in METRICS}

#: The paper's cost claim: mixing takes at most this share of a training step.
OVERHEAD_LIMIT_PCT = 5.0
#: Top-k columns are shown only when k is at most this fraction of the number of classes.
TOPK_MARGIN = 0.25

VERDICT_MARK = {HOLDS: "✅", REVERSED: "❌", UNRESOLVED: "≈", CANNOT_JUDGE: "–", "not tested": "–"}


def fmt(value: float | None, column: str = "") -> str:
    """The one rounding used everywhere in the report."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if column in ("nll", "nll_ts", "temperature"):
        return f"{value:.4f}" if column != "temperature" else f"{value:.3f}"
    if column == "images_per_s":
        return f"{value:.0f}"
    return f"{value:.2f}"


def shown_metrics(num_classes: int | None) -> list[tuple[str, str, str]]:
    """The metric columns of the tables: top-5 only where 5 ≤ ``TOPK_MARGIN`` × classes."""
    show_top5 = num_classes is None or 5 <= TOPK_MARGIN * num_classes
    return [m for m in METRICS if m[0] != "top5_error" or show_top5]


def variant_of(row: dict[str, Any]) -> str:
    """A row's variant: its method, with its grid setting in brackets when it has one."""
    return f"{row['method']}[{row['setting']}]" if row.get("setting") else row["method"]


def regimes_of(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The regimes of ``rows`` in their order of appearance."""
    seen: list[str] = []
    for r in rows:
        if r.get("regime", "") not in seen:
            seen.append(r.get("regime", ""))
    return seen


def summarize(rows: Sequence[dict[str, Any]], methods: Sequence[str]) -> list[dict[str, Any]]:
    """Per regime and variant: number of seeds, and mean and sample standard deviation of every
    metric (in the order of ``methods``)."""
    out = []
    for regime in regimes_of(rows):
        in_regime = [r for r in rows if r.get("regime", "") == regime]
        variants: list[str] = []
        for method in methods:
            for r in in_regime:
                if r["method"] == method and variant_of(r) not in variants:
                    variants.append(variant_of(r))
        for variant in variants:
            sel = [r for r in in_regime if variant_of(r) == variant]
            entry: dict[str, Any] = {
                "regime": regime,
                "variant": variant,
                "method": sel[0]["method"],
                "setting": sel[0].get("setting", ""),
                "n_seeds": len(sel),
            }
            for col, _, _ in METRICS:
                values = [float(r[col]) for r in sel if col in r and not math.isnan(float(r[col]))]
                entry[f"{col}_mean"] = statistics.fmean(values) if values else math.nan
                entry[f"{col}_std"] = (
                    statistics.stdev(values) if len(values) > 1 else 0.0 if values else math.nan
                )
            out.append(entry)
    return out


# ---- claims --------------------------------------------------------------------------------------


@dataclass
class ClaimLine:
    """One paired comparison: ``method_a`` against ``method_b`` on ``metric`` in ``regime``.

    ``better`` is the side of ``a − b`` that the claim predicts (``"low"``: a lower value of a);
    ``family`` and ``p_adjusted`` are set by :func:`correct`, which also decides ``verdict``.
    """

    claim: str
    regime: str
    metric: str
    method_a: str
    method_b: str
    paired: Paired
    verdict: str
    better: str = "low"
    family: str = "exploratory"
    p_adjusted: float = math.nan
    interval: tuple[float, float] | None = None  # the interval that agrees with p_adjusted
    note: str = ""

    @property
    def ci(self) -> tuple[float, float]:
        return self.interval or (self.paired.ci_low, self.paired.ci_high)

    def row(self) -> dict[str, Any]:
        p = self.paired
        low, high = self.ci
        return {
            "claim": self.claim,
            "regime": self.regime,
            "metric": self.metric,
            "method_a": self.method_a,
            "method_b": self.method_b,
            "mean_diff": p.mean,
            "ci_low": low,
            "ci_high": high,
            "seeds": p.n,
            "verdict": self.verdict,
            "p_value": p.p_value,
            "p_adjusted": self.p_adjusted,
            "family": self.family,
        }

    def text(self) -> str:
        p = self.paired
        low, high = self.ci
        vs = f" − {self.method_b}" if self.method_b else ""
        ci = (
            f" [{fmt(low, self.metric)}, {fmt(high, self.metric)}]"
            if p.n > 1
            else " (one replicate: no interval)"
        )
        words = f"{self.regime}: {self.method_a}{vs}, {LABELS.get(self.metric, self.metric)}: "
        words += f"{'+' if p.mean >= 0 else ''}{fmt(p.mean, self.metric)}{ci}, {p.n} replicates"
        if not math.isnan(self.p_adjusted):
            words += f", p = {self.p_adjusted:.2g} ({self.family}, adjusted)"
        words += f" → {self.verdict}"
        if self.verdict == UNRESOLVED:
            mde = minimum_detectable_effect(p.sd, p.n)
            if not math.isnan(mde):
                words += f" (minimum detectable effect at 80 % power: {fmt(mde, self.metric)})"
        if self.note:
            words += f"; {self.note}"
        return words


def correct(lines: Sequence[ClaimLine], confirmatory: Sequence[str], alpha: float = 0.05) -> None:
    """Put every line in its family and decide it on its adjusted p-value (in place): Holm over
    the lines whose claim is in ``confirmatory``, Benjamini–Hochberg over the others."""
    for family, adjust in (("confirmatory", holm), ("exploratory", benjamini_hochberg)):
        members = [ln for ln in lines if (ln.claim in confirmatory) == (family == "confirmatory")]
        adjusted = adjust([ln.paired.p_value for ln in members])
        for ln, q in zip(members, adjusted, strict=True):
            ln.family, ln.p_adjusted = family, q
            ln.interval = adjusted_interval(ln.paired, q, alpha)
            ln.verdict = decide(ln.paired, q, ln.better, alpha)


@dataclass
class Claim:
    """One claim of the paper, its verdict on this study, and the lines that decide it."""

    title: str
    verdict: str
    details: list[str]
    lines: list[ClaimLine] = field(default_factory=list)
    key: str = ""
    note: str = ""

    @property
    def family(self) -> str:
        return self.lines[0].family if self.lines else "exploratory"


def aggregate(lines: Sequence[ClaimLine]) -> str:
    """An "every …" claim's verdict from its lines (:func:`unimix.study.stats.aggregate_verdict`)."""
    return aggregate_verdict([ln.verdict for ln in lines]) if lines else "not tested"


def _per_seed(
    rows: Sequence[dict[str, Any]], regime: str, variant: str, col: str
) -> dict[int, float]:
    """``col`` of ``variant`` in ``regime`` per replicate (the pairing unit)."""
    return {
        int(r["replicate"] if "replicate" in r else r["seed"]): float(r[col])
        for r in rows
        if r.get("regime", "") == regime and variant_of(r) == variant and col in r
    }


def paired_line(
    rows: Sequence[dict[str, Any]],
    claim: str,
    regime: str,
    col: str,
    a: str,
    b: str | float,
    better: str | None = None,
) -> ClaimLine | None:
    """``a`` better than ``b`` (a variant, or a number for a one-sample claim) on ``col``;
    ``better`` is the predicted side of ``a − b`` (default: the metric's better side)."""
    va = _per_seed(rows, regime, a, col)
    if isinstance(b, str):
        vb = _per_seed(rows, regime, b, col)
        seeds = sorted(set(va) & set(vb))
        name_b = b
    else:
        vb = dict.fromkeys(va, float(b))
        seeds = sorted(va)
        name_b = ""
    seeds = [s for s in seeds if not (math.isnan(va[s]) or math.isnan(vb[s]))]
    if not seeds:
        return None
    paired = paired_difference([va[s] for s in seeds], [vb[s] for s in seeds])
    side = better or BETTER.get(col, "low")
    return ClaimLine(claim, regime, col, a, name_b, paired, paired.verdict(side), better=side)


def baseline_variant(
    summary: Sequence[dict[str, Any]], regime: str, setting_base: str
) -> str | None:
    """The variant of no mixing in ``regime`` with setting ``setting_base`` (``None`` if absent)."""
    for s in summary:
        if s["regime"] == regime and s["method"] == "none" and s["setting"] == setting_base:
            return s["variant"]
    return None


#: The claims against no mixing: (key, title, metric columns).
_VERSUS_NONE: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("msda_beats_none_error", "Every MSDA method beats no mixing on test error", ("top1_error",)),
    (
        "msda_beats_none_nll",
        "Every MSDA method beats no mixing on test NLL after temperature scaling",
        ("nll_ts",),
    ),
    (
        "msda_beats_none_raw_nll",
        "Every MSDA method beats no mixing on raw test NLL (no temperature scaling)",
        ("nll",),
    ),
    (
        "msda_robust",
        "MSDA improves adversarial robustness over no mixing (FGSM and PGD accuracy)",
        ("fgsm_accuracy", "pgd_accuracy"),
    ),
)


#: The confirmatory family when a recipe declares none: the paper's accuracy claims.
DEFAULT_CONFIRMATORY: tuple[str, ...] = (
    "msda_beats_none_error",
    "new_vs_best_earlier",
    "mixup_vs_cutmix",
)


def check_claims(
    summary: Sequence[dict[str, Any]],
    rows: Sequence[dict[str, Any]] | None = None,
    base_settings: dict[str, str] | None = None,
    *,
    confirmatory: Sequence[str] = DEFAULT_CONFIRMATORY,
    predicted: dict[str, str] | None = None,
    extra_lines: Sequence[ClaimLine] = (),
    cost_threshold_pct: float = OVERHEAD_LIMIT_PCT,
) -> list[Claim]:
    """The paper's claims, each judged on paired per-replicate differences in every regime, with
    every line (and ``extra_lines``: the grid, all pairs, interactions) corrected in its family
    (:func:`correct`): ``confirmatory`` names the claims of the confirmatory family.

    ``rows`` are the per-run results (``results.csv``); ``base_settings`` maps a variant to the
    setting of the run without mixing it is paired with (default: the plain ``none``);
    ``predicted`` maps ``"mixup_vs_cutmix"`` to the method predicted better (default ``mixup``).
    """
    rows = list(rows or [])
    base_settings = base_settings or {}
    predicted = predicted or {}
    regimes = list(dict.fromkeys(s["regime"] for s in summary))
    claims = [
        _versus_none(summary, rows, regimes, base_settings, key, title, cols)
        for key, title, cols in _VERSUS_NONE
    ]
    claims.append(_new_vs_best_earlier(summary, rows, regimes))
    claims.append(_mixup_vs_cutmix(summary, rows, regimes, predicted.get("mixup_vs_cutmix")))
    claims.append(_mixing_cost(summary, rows, regimes, cost_threshold_pct))
    correct([ln for c in claims for ln in c.lines] + list(extra_lines), confirmatory)
    for c in claims:
        if c.lines:
            fresh = _claim(c.key, c.title, c.lines, "", note=c.note)
            c.verdict, c.details = fresh.verdict, fresh.details
    return claims


def _mixup_vs_cutmix(
    summary: Sequence[dict[str, Any]],
    rows: Sequence[dict[str, Any]],
    regimes: Sequence[str],
    winner: str | None,
) -> Claim:
    """The paper's central contrast: Mixup − CutMix on test error in every regime and setting,
    judged against the direction the recipe predicts (``winner``, default Mixup)."""
    winner = winner or "mixup"
    if winner not in ("mixup", "cutmix"):
        raise ValueError(
            f"predicted winner of mixup_vs_cutmix must be mixup or cutmix, got {winner!r}"
        )
    lines = []
    for regime in regimes:
        for setting in dict.fromkeys(s["setting"] for s in summary if s["regime"] == regime):
            sel = {
                s["method"]: s for s in summary if s["regime"] == regime and s["setting"] == setting
            }
            if "mixup" in sel and "cutmix" in sel:
                line = paired_line(
                    rows,
                    "mixup_vs_cutmix",
                    regime,
                    "top1_error",
                    sel["mixup"]["variant"],
                    sel["cutmix"]["variant"],
                    better="low" if winner == "mixup" else "high",
                )
                if line is not None:
                    lines.append(line)
    return _claim(
        "mixup_vs_cutmix",
        f"{'Mixup' if winner == 'mixup' else 'CutMix'} beats "
        f"{'CutMix' if winner == 'mixup' else 'Mixup'} on test error (the predicted direction)",
        lines,
        "needs mixup and cutmix in --methods",
        note="mean_diff is mixup − cutmix; 'holds' means the predicted method is better.",
    )


def all_pairs(summary: Sequence[dict[str, Any]], rows: Sequence[dict[str, Any]]) -> list[ClaimLine]:
    """Every pair of variants in every regime on test error (exploratory lines ``pair``)."""
    out = []
    for regime in dict.fromkeys(s["regime"] for s in summary):
        variants = [s["variant"] for s in summary if s["regime"] == regime]
        for i, a in enumerate(variants):
            for b in variants[i + 1 :]:
                line = paired_line(rows, "pair", regime, "top1_error", a, b)
                if line is not None:
                    out.append(line)
    return out


def interactions(
    summary: Sequence[dict[str, Any]],
    rows: Sequence[dict[str, Any]],
    base_settings: dict[str, str] | None = None,
) -> list[ClaimLine]:
    """Regime × method interactions on test error: for each mixing variant and pair of regimes,
    the difference between the regimes of its paired difference to no mixing,
    ``mean_A(m − none) − mean_B(m − none)``, with Welch's interval (the regimes' replicates are
    independent draws). Negative: the method gains more over no mixing in the first regime."""
    base_settings = base_settings or {}
    regimes = list(dict.fromkeys(s["regime"] for s in summary))
    out = []
    for i, ra in enumerate(regimes):
        for rb in regimes[i + 1 :]:
            for s in summary:
                if s["regime"] != ra or s["method"] == "none":
                    continue
                diffs = []
                for regime in (ra, rb):
                    base = baseline_variant(summary, regime, base_settings.get(s["variant"], ""))
                    va = _per_seed(rows, regime, s["variant"], "top1_error")
                    vb = _per_seed(rows, regime, base, "top1_error") if base else {}
                    diffs.append([va[k] - vb[k] for k in sorted(set(va) & set(vb))])
                if min(len(d) for d in diffs) < 2:
                    continue
                paired = welch_difference(diffs[0], diffs[1])
                out.append(
                    ClaimLine(
                        "interaction",
                        f"{ra} vs {rb}",
                        "top1_error",
                        s["variant"],
                        "none",
                        paired,
                        paired.verdict("low"),
                        note=f"(m − none) in {ra} minus (m − none) in {rb}",
                    )
                )
    return out


def without_duplicates(lines: Sequence[ClaimLine], taken: Sequence[ClaimLine]) -> list[ClaimLine]:
    """``lines`` less those comparing the same two variants on the same metric and regime as a
    line of ``taken`` (in either order): every comparison is tested once."""
    seen = {(ln.regime, ln.metric, frozenset((ln.method_a, ln.method_b))) for ln in taken}
    out = []
    for ln in lines:
        key = (ln.regime, ln.metric, frozenset((ln.method_a, ln.method_b)))
        if key not in seen:
            seen.add(key)
            out.append(ln)
    return out


def confidence_set_of_best(
    summary: Sequence[dict[str, Any]], rows: Sequence[dict[str, Any]], alpha: float = 0.05
) -> list[dict[str, Any]]:
    """Per regime: the best variant chosen on **validation** error, and the set of variants that
    cannot be told from it on **test** error.

    A multiple comparison with the best: the best is chosen on the validation split (so the test
    set is untouched by the choice), then every other variant ``m`` is tested one-sidedly for
    ``test error(m) − test error(best) > 0`` on paired replicates, Holm-adjusted over the ``k − 1``
    comparisons. Variants not shown worse at level α stay in the set (with the best); the set
    holds the best variant with probability ≥ 1 − α given the choice.
    """
    out = []
    for regime in dict.fromkeys(s["regime"] for s in summary):
        sel = [s for s in summary if s["regime"] == regime]
        valid = [s for s in sel if not math.isnan(s.get("val_error_mean", math.nan))]
        if not valid:
            continue
        best = min(valid, key=lambda s: s["val_error_mean"])
        others, p_one_sided = [], []
        for s in sel:
            if s is best:
                continue
            line = paired_line(rows, "best", regime, "top1_error", s["variant"], best["variant"])
            if line is None or line.paired.n < 2:
                continue
            p = line.paired.p_value
            p_one_sided.append(p / 2 if line.paired.mean > 0 else 1 - p / 2)
            others.append((s, line))
        adjusted = holm(p_one_sided)
        members = [best["variant"]] + [
            s["variant"] for (s, _), q in zip(others, adjusted, strict=True) if not q < alpha
        ]
        out.append(
            {
                "regime": regime,
                "best": best,
                "members": members,
                "excluded": [
                    (s["variant"], ln, q)
                    for (s, ln), q in zip(others, adjusted, strict=True)
                    if q < alpha
                ],
            }
        )
    return out


def _versus_none(
    summary: Sequence[dict[str, Any]],
    rows: Sequence[dict[str, Any]],
    regimes: Sequence[str],
    base_settings: dict[str, str],
    key: str,
    title: str,
    cols: Sequence[str],
) -> Claim:
    """Every mixing variant against its run without mixing, on each of ``cols``."""
    lines: list[ClaimLine] = []
    for regime in regimes:
        for s in summary:
            if s["regime"] != regime or s["method"] == "none":
                continue
            base = baseline_variant(summary, regime, base_settings.get(s["variant"], ""))
            if base is None:
                continue
            for col in cols:
                line = paired_line(rows, key, regime, col, s["variant"], base)
                if line is not None:
                    lines.append(line)
    return _claim(key, title, lines, "needs `none` and a mixing method in --methods")


def _new_vs_best_earlier(
    summary: Sequence[dict[str, Any]], rows: Sequence[dict[str, Any]], regimes: Sequence[str]
) -> Claim:
    """HMix and GMix against the better of Mixup and CutMix, within each regime and setting."""
    lines = [
        line
        for regime in regimes
        # compared within one setting (a grid over label_weight compares like with like)
        for setting in dict.fromkeys(s["setting"] for s in summary if s["regime"] == regime)
        for line in _new_vs_best_lines(summary, rows, regime, setting)
    ]
    return _claim(
        "new_vs_best_earlier",
        "HMix and GMix are at least as good as the better of Mixup and CutMix (chosen on "
        "validation error; judged on test error)",
        lines,
        "needs hmix or gmix and mixup or cutmix in --methods",
        note=(
            "'At least as good' is refuted by a reversed line; an unresolved line is "
            "consistent with it but does not prove it."
        ),
    )


def _new_vs_best_lines(
    summary: Sequence[dict[str, Any]], rows: Sequence[dict[str, Any]], regime: str, setting: str
) -> list[ClaimLine]:
    sel = {s["method"]: s for s in summary if s["regime"] == regime and s["setting"] == setting}
    prev = [
        m
        for m in ("mixup", "cutmix")
        if m in sel and not math.isnan(sel[m].get("val_error_mean", math.nan))
    ]
    if not prev:
        return []
    best = min(prev, key=lambda m: sel[m]["val_error_mean"])  # chosen on validation, never test
    lines = []
    for m in ("hmix", "gmix"):
        if m in sel:
            line = paired_line(
                rows,
                "new_vs_best_earlier",
                regime,
                "top1_error",
                sel[m]["variant"],
                sel[best]["variant"],
            )
            if line is not None:
                lines.append(line)
    return lines


def _mixing_cost(
    summary: Sequence[dict[str, Any]],
    rows: Sequence[dict[str, Any]],
    regimes: Sequence[str],
    threshold: float = OVERHEAD_LIMIT_PCT,
) -> Claim:
    """Every mixing variant's share of a training step on mixed batches (``mix_share_pct``,
    :mod:`unimix.study.cost`) against ``threshold``, one-sided, over replicates; the ratio of the
    mixing call to timm's Mixup on the same batch is reported beside it."""
    col = "mix_share_pct" if any("mix_share_pct" in r for r in rows) else "mix_overhead_pct"
    lines = []
    for regime in regimes:
        for s in summary:
            if s["regime"] == regime and s["method"] != "none":
                line = paired_line(rows, "mixing_cost", regime, col, s["variant"], threshold)
                if line is not None:
                    ratios = [
                        r["mix_ms_per_batch"] / r["timm_mixup_ms_per_batch"]
                        for r in rows
                        if r.get("regime") == regime
                        and variant_of(r) == s["variant"]
                        and r.get("timm_mixup_ms_per_batch", 0) > 0
                    ]
                    if ratios:
                        line.note = (
                            f"mixing call / timm's Mixup on the same batch: median "
                            f"{statistics.median(ratios):.2f}×"
                        )
                    lines.append(line)
    return _claim(
        "mixing_cost",
        f"Mixing costs next to nothing (under {threshold:g}% of a training step on mixed batches)",
        lines,
        "needs at least one mixing method",
        note=(
            "Judged on the time of the mixing call on a mixed batch as a share of a whole "
            "training step with it (medians of interleaved rounds in one process, robust to "
            f"machine load); mean_diff is the share minus {threshold:g} points."
        ),
    )


def _claim(key: str, title: str, lines: list[ClaimLine], missing: str, note: str = "") -> Claim:
    verdict = aggregate(lines)
    if not lines:
        return Claim(title, "not tested", [missing], [], key)
    details = [ln.text() for ln in lines]
    held = [f"{ln.regime}/{ln.method_a}/{ln.metric}" for ln in lines if ln.verdict == HOLDS]
    against = [f"{ln.regime}/{ln.method_a}/{ln.metric}" for ln in lines if ln.verdict == REVERSED]
    summary = f"{len(held)} of {len(lines)} lines hold"
    if against:
        summary += f"; reversed: {', '.join(against)}"
    if note:
        summary += f". {note}"
    return Claim(title, verdict, [summary, *details], lines, key, note)


def setting_lines(
    rows: Sequence[dict[str, Any]], summary: Sequence[dict[str, Any]]
) -> list[ClaimLine]:
    """Grid comparisons: per regime and method, each setting against the method's first setting
    (top-1 error and T-scaled NLL), for settings that differ in one key."""
    out = []
    for regime in dict.fromkeys(s["regime"] for s in summary):
        by_method: dict[str, list[dict[str, Any]]] = {}
        for s in summary:
            if s["regime"] == regime and s["setting"]:
                by_method.setdefault(s["method"], []).append(s)
        for entries in by_method.values():
            first = entries[0]
            base_parts = dict(p.split("=", 1) for p in first["setting"].split(","))
            for other in entries[1:]:
                parts = dict(p.split("=", 1) for p in other["setting"].split(","))
                changed = [k for k in parts if parts[k] != base_parts.get(k)]
                if len(changed) != 1:
                    continue
                for col in ("top1_error", "nll_ts"):
                    line = paired_line(
                        rows,
                        f"setting:{changed[0]}",
                        regime,
                        col,
                        other["variant"],
                        first["variant"],
                    )
                    if line is not None:
                        out.append(line)
    return out


def write_claims(lines: Sequence[ClaimLine], path: Path) -> None:
    """``claims.csv`` with exactly :data:`~unimix.study.types.CLAIM_COLUMNS`."""
    import csv
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(CLAIM_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for ln in lines:
        row = ln.row()
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    atomic_write_text(path, buf.getvalue())
