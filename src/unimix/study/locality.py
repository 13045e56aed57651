"""The locality study: a dial of mask settings, a prediction written before training, and the
estimator that can prove it wrong.

**Dial** (:data:`DIAL`): mask settings of :mod:`unimix.masks` that span the locality index of
:func:`unimix.theory.locality_index`, from Mixup (1) to the binary masks (≈ 0.45).

**Prediction** (:func:`predict_rows`, docs/theory.md "Which tasks want local masks"): the mixed
loss's second-order term penalises the model's coupling of the pixel pair ``(p, q)`` with weight
``A(p, q)``. Relative to its own scale ``a(0)``, a setting ``s`` penalises a set ``D`` of
pair offsets by ``ρ_s(D) = mean_{Δ∈D} a_s(Δ) / a_s(0)`` (pair-weighted, label-weighted,
wrapped). A task needs the couplings of its *cue* pairs ``C`` and none of the others ``N``; a
regulariser helps to the extent that it damps what the task does not need more than what it
needs. The theory's predicted effect of ``s`` on task ``t`` is therefore the selectivity

    e(t, s) = ρ_s(N_t) − ρ_s(C_t) ,

0 for Mixup (every pair alike), negative where ``s`` penalises the cue pairs most. Cue pairs:
``digits_local`` — within one native digit, ``|Δ| < 8`` (the distractors lie further);
``digits_pair`` — within a digit *and* across the two digits, ``|Δ| < 8`` or ``|Δ| ≥ 16``;
``digits`` — the upsampled digit spans the image: every pair is a cue pair, ``e = 0``. The
predicted slope of the gain over no mixing against the locality index is the least-squares
slope of ``e`` against ``L`` over the dial; the pre-registered claim is its sign for the
**interaction** ``slope(digits_local) − slope(digits_pair)``.

**Test** (:func:`locality_slopes`): per replicate (its own training draw), the gain of each
setting over no mixing (``none − setting`` test error, points), the least-squares slope of the
gains on the index per task, and the interaction as the difference of two tasks' slopes in the
same replicate; means over replicates with Student-t intervals (:mod:`unimix.study.stats`).
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unimix.study.stats import Paired, paired_difference

__all__ = [
    "DIAL",
    "LOCAL_TASK",
    "LONG_TASK",
    "PREDICTION_COLUMNS",
    "RULE",
    "TASKS",
    "DialSetting",
    "Slopes",
    "dial_indices",
    "file_sha256",
    "locality_slopes",
    "locality_verdict",
    "predict_rows",
    "write_predictions",
]

#: The local-cue task.
LOCAL_TASK = "digits_local"
#: The long-range-cue task.
LONG_TASK = "digits_pair"
GLOBAL_TASK = "digits"
#: The three tasks of the locality study: local, long-range and global cue.
TASKS: tuple[str, ...] = (LOCAL_TASK, LONG_TASK, GLOBAL_TASK)
#: The columns of ``predictions.csv``.
PREDICTION_COLUMNS = (
    "task", "setting", "method", "params", "locality_index", "border_clipping",
    "predicted_effect", "predicted_sign", "rule",
)  # fmt: skip
#: The rule that produced each prediction, as written in ``predictions.csv``.
RULE = (
    "e = rho(non-cue pairs) - rho(cue pairs), rho(D) = mean of the label-weighted A over pair "
    "offsets D / a(0) (docs/theory.md)"
)


@dataclass(frozen=True)
class DialSetting:
    """One mask setting of the dial: a name for tables, the mask method and its parameters."""

    name: str
    method: str
    params: tuple[tuple[str, Any], ...] = ()

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.params)


#: The dial, from flat (Mixup) to local (binary masks); CutMix clipped and wrapped both.
DIAL: tuple[DialSetting, ...] = (
    DialSetting("mixup", "mixup"),
    DialSetting("hmix_r0.25", "hmix", (("r", 0.25), ("boundary", "wrap"))),
    DialSetting("hmix_r0.5", "hmix", (("r", 0.5), ("boundary", "wrap"))),
    DialSetting("gmix", "gmix", (("boundary", "wrap"),)),
    DialSetting("hmix_r0.75", "hmix", (("r", 0.75), ("boundary", "wrap"))),
    DialSetting("fmix_d1", "fmix", (("decay_power", 1.0),)),
    DialSetting("cutmix_wrap", "cutmix", (("boundary", "wrap"),)),
    DialSetting("cutmix_clip", "cutmix", (("boundary", "clip"),)),
    DialSetting("fmix_d3", "fmix", (("decay_power", 3.0),)),
    DialSetting("gridmix", "gridmix", (("grid", 4),)),
)

#: Cue pair offsets per task: a predicate on the pair distance |Δ| in pixels at 32×32.
_NATIVE = 8.0


def _cue(task: str, distance: Any, side: int) -> Any:
    scale = side / 32.0
    near = distance < _NATIVE * scale
    if task == LOCAL_TASK:
        return near
    if task == LONG_TASK:
        return near | (distance >= 16 * scale)
    return distance >= 0  # global: every pair


def dial_indices(
    height: int = 32, width: int = 32, dial: Sequence[DialSetting] = DIAL
) -> dict[str, tuple[float, float]]:
    """``{setting: (locality_index, border_clipping)}`` for the dial at ``height × width``."""
    from unimix.theory.locality import border_clipping, locality_index

    return {
        s.name: (
            locality_index(s.method, height, width, **s.kwargs),
            border_clipping(s.method, height, width, **s.kwargs),
        )
        for s in dial
    }


def _selectivity(setting: DialSetting, task: str, height: int, width: int) -> float:
    import torch

    from unimix.theory.locality import locality_profile

    params = {k: v for k, v in setting.kwargs.items() if k != "boundary"}
    prof = locality_profile(setting.method, height, width, wrap=True, **params)
    a = prof.offsets
    a0 = float(prof.at(0, 0))
    dy = torch.arange(-height + 1, height, dtype=a.dtype)[:, None]
    dx = torch.arange(-width + 1, width, dtype=a.dtype)[None, :]
    dist = (dy**2 + dx**2).sqrt()
    cue = _cue(task, dist, min(height, width))
    w = prof.pairs.to(a.dtype)

    def rho(sel: Any) -> float:
        ws = w * sel.to(a.dtype)
        return float((a * ws).sum() / ws.sum()) / a0 if float(ws.sum()) > 0 else math.nan

    non_cue = ~cue
    if not bool(non_cue.any()):
        return 0.0
    return rho(non_cue) - rho(cue)


def _ols_slope(x: Sequence[float], y: Sequence[float]) -> float:
    mx, my = statistics.fmean(x), statistics.fmean(y)
    sxx = sum((a - mx) ** 2 for a in x)
    return sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True)) / sxx if sxx else math.nan


def predict_rows(
    tasks: Sequence[str] = TASKS,
    dial: Sequence[DialSetting] = DIAL,
    height: int = 32,
    width: int = 32,
) -> list[dict[str, Any]]:
    """The rows of ``predictions.csv``, from the theory alone (no result is read).

    One row per (task, setting) with ``predicted_effect = e(t, s)`` (module docstring) and its
    sign, plus one row per task with ``setting = "slope"`` (the predicted sign of the slope of
    the gain against the locality index) and one ``task = "interaction"`` row
    (``slope(digits_local) − slope(digits_pair)``): the pre-registered claim.
    """
    indices = dial_indices(height, width, dial)
    rows: list[dict[str, Any]] = []
    slopes: dict[str, float] = {}
    for task in tasks:
        effects = []
        for s in dial:
            e = _selectivity(s, task, height, width)
            e = 0.0 if abs(e) < 1e-12 else e
            effects.append(e)
            rows.append(
                {
                    "task": task,
                    "setting": s.name,
                    "method": s.method,
                    "params": ";".join(f"{k}={v}" for k, v in s.params),
                    "locality_index": indices[s.name][0],
                    "border_clipping": indices[s.name][1],
                    "predicted_effect": e,
                    "predicted_sign": _sign(e),
                    "rule": RULE,
                }
            )
        slope = _ols_slope([indices[s.name][0] for s in dial], effects)
        slopes[task] = slope
        rows.append(_summary_row(task, "slope", slope, "least-squares slope of e on the index"))
    if LOCAL_TASK in slopes and LONG_TASK in slopes:
        diff = slopes[LOCAL_TASK] - slopes[LONG_TASK]
        rows.append(
            _summary_row(
                "interaction",
                "slope_local_minus_pair",
                diff,
                f"slope({LOCAL_TASK}) - slope({LONG_TASK}) of e on the index: confirmatory",
            )  # fmt: skip
        )
    return rows


def _sign(value: float) -> str:
    if math.isnan(value) or abs(value) < 1e-9:
        return "0"
    return "+" if value > 0 else "-"


def _summary_row(task: str, setting: str, value: float, rule: str) -> dict[str, Any]:
    return {
        "task": task, "setting": setting, "method": "", "params": "", "locality_index": "",
        "border_clipping": "", "predicted_effect": value, "predicted_sign": _sign(value),
        "rule": rule,
    }  # fmt: skip


def write_predictions(rows: Sequence[dict[str, Any]], path: str | Path) -> str:
    """Write ``predictions.csv`` atomically; return its SHA-256 (hex)."""
    from unimix.train.fileio import atomic_write_text

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(PREDICTION_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    atomic_write_text(Path(path), buf.getvalue())
    return file_sha256(path)


def file_sha256(path: str | Path) -> str:
    """The SHA-256 (hex) of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@dataclass
class Slopes:
    """Per task: the slope of the gain (points) on the locality index, over replicates; and the
    interaction ``slope(local) − slope(long)`` paired by replicate."""

    per_task: dict[str, Paired]
    per_replicate: dict[str, dict[int, float]]
    interaction: Paired | None


def locality_slopes(
    rows: Sequence[dict[str, Any]],
    index: dict[str, float],
    metric: str = "top1_error",
    local: str = LOCAL_TASK,
    long: str = LONG_TASK,
) -> Slopes:
    """The slope/interaction estimator on a results table.

    Args:
        rows: one dict per run with ``task``, ``setting`` (``"none"`` for no mixing),
            ``replicate`` and ``metric`` (an error in %: the gain is ``none − setting``).
        index: ``{setting: locality index}`` of every mixing setting.

    Returns:
        :class:`Slopes`; a task needs ≥ 2 settings with distinct indices and its ``none`` run in
        a replicate for that replicate to count.
    """
    table: dict[tuple[str, int], dict[str, float]] = {}
    for r in rows:
        key = (str(r["task"]), int(r["replicate"]))
        table.setdefault(key, {})[str(r["setting"])] = float(r[metric])
    per_rep: dict[str, dict[int, float]] = {}
    for (task, rep), values in sorted(table.items()):
        if "none" not in values:
            continue
        pts = [(index[s], values["none"] - v) for s, v in values.items() if s in index]
        if len({x for x, _ in pts}) < 2:
            continue
        per_rep.setdefault(task, {})[rep] = _ols_slope([x for x, _ in pts], [y for _, y in pts])
    per_task = {t: paired_difference(list(v.values()), [0.0] * len(v)) for t, v in per_rep.items()}
    inter = None
    if local in per_rep and long in per_rep:
        reps = sorted(set(per_rep[local]) & set(per_rep[long]))
        if reps:
            inter = paired_difference(
                [per_rep[local][i] for i in reps], [per_rep[long][i] for i in reps]
            )
    return Slopes(per_task, per_rep, inter)


def locality_claim_lines(slopes: Slopes, predicted_sign: str, alpha: float = 0.05) -> list[Any]:
    """Claim lines for ``claims.csv``: the interaction (claim ``locality_interaction``, to be put
    in the confirmatory family) with the predicted side, and one exploratory line per task's
    slope (``locality_slope``, predicted side: positive). ``mean_diff`` is in points of top-1
    error gain per unit of locality index. Pass them to :func:`unimix.study.claims.check_claims`
    as ``extra_lines`` with ``"locality_interaction"`` in ``confirmatory``."""
    from unimix.study.claims import ClaimLine
    from unimix.study.stats import UNRESOLVED

    better = "high" if predicted_sign == "+" else "low"
    lines = []
    if slopes.interaction is not None:
        lines.append(
            ClaimLine(
                "locality_interaction",
                "interaction",
                "gain_slope",
                LOCAL_TASK,
                LONG_TASK,
                slopes.interaction,
                UNRESOLVED,
                better=better,
                note="slope of the gain over no mixing on the locality index, local − long-range",
            )  # fmt: skip
        )
    for task, paired in slopes.per_task.items():
        lines.append(
            ClaimLine(
                "locality_slope", task, "gain_slope", task, "", paired, UNRESOLVED, better="high"
            )  # fmt: skip
        )
    return lines


def rows_from_results(
    results: Sequence[dict[str, Any]],
    task_of_regime: dict[str, str],
    dial: Sequence[DialSetting] = DIAL,
) -> list[dict[str, Any]]:
    """Map ``results.csv`` rows (``regime``, ``method``, ``setting``, ``replicate``,
    ``top1_error``) onto the estimator's rows (``task``, ``setting`` = dial name or ``none``)."""
    out = []
    for r in results:
        task = task_of_regime.get(str(r["regime"]))
        if task is None:
            continue
        name = "none" if r["method"] == "none" else _dial_name(r, dial)
        if name is not None:
            out.append({"task": task, "setting": name, "replicate": r["replicate"],
                        "top1_error": r["top1_error"]})  # fmt: skip
    return out


def _dial_name(row: dict[str, Any], dial: Sequence[DialSetting]) -> str | None:
    setting = str(row.get("setting") or "")
    params = dict(p.split("=", 1) for p in setting.split(",") if "=" in p)
    for s in dial:
        if s.method != row["method"]:
            continue
        if all(str(params.get(k, v)) == str(v) for k, v in s.params if k in params) and (
            set(params) <= {k for k, _ in s.params}
        ):
            return s.name
    return None


def dial_methods(dial: Sequence[DialSetting] = DIAL) -> list[str]:
    """``none`` and the dial's mask methods, in dial order (the methods of a dial study)."""
    return ["none", *dict.fromkeys(s.method for s in dial)]


def locality_verdict(
    out: Path, results: Sequence[dict[str, Any]], task_of_regime: dict[str, str], digest: str
) -> tuple[list[Any], list[Any]]:
    """After a dial study: the prediction and its verdict as the report's first section
    (document blocks, with the picture of the tasks' samples) and the claim lines for
    ``claims.csv`` — the interaction alone in its confirmatory family, the per-task slopes
    exploratory, each family adjusted on its own. The prediction is read back from
    ``predictions.csv`` (written before the first run)."""
    from unimix.study.claims import correct

    pred = {}
    with open(Path(out) / "predictions.csv", newline="") as fh:
        for r in csv.DictReader(fh):
            pred[(r["task"], r["setting"])] = r
    index = {s.name: float(pred[(LOCAL_TASK, s.name)]["locality_index"]) for s in DIAL
             if (LOCAL_TASK, s.name) in pred}  # fmt: skip
    sign = pred.get(("interaction", "slope_local_minus_pair"), {}).get("predicted_sign", "+")
    slopes = locality_slopes(rows_from_results(results, task_of_regime), index)
    lines = locality_claim_lines(slopes, sign)
    correct(lines, ["locality_interaction"])
    span = (min(index.values()), max(index.values())) if index else (math.nan, math.nan)
    return _verdict_blocks(lines, sign, digest, span) + _samples_figure(Path(out)), lines


def _verdict_blocks(
    lines: Sequence[Any], sign: str, digest: str, span: tuple[float, float]
) -> list[Any]:
    """The report's first section. ``span`` is the dial's lowest and highest index: a slope
    times the span is the difference in gain, in points, between the dial's two ends."""
    from unimix.study.document import Bullets, Heading, Paragraph

    inter = [ln for ln in lines if ln.claim == "locality_interaction"]
    blocks: list[Any] = [
        Heading("The prediction and its verdict"),
        Paragraph(
            f"Written before the first run: `predictions.csv`, SHA-256 `{digest}` (also in "
            '`config.yaml`). The theory (docs/theory.md, "Which tasks want local masks") '
            f"predicts the task × locality interaction — slope of the gain over no mixing "
            f"(points of top-1 error) on the locality index, {LOCAL_TASK} minus {LONG_TASK} — "
            f"to be {sign}."
        ),
    ]
    items: list[tuple[str, list[str]]] = []
    if inter:
        ln = inter[0]
        low, high = ln.ci
        items.append(
            (
                f"**interaction: {ln.paired.mean:+.2f} points per unit of index, 95 % interval "
                f"[{low:+.2f}, {high:+.2f}], {ln.paired.n} replicates → {ln.verdict}** "
                f"(confirmatory; minimum detectable interaction at 80 % power: "
                f"{_mde(ln.paired):.2f})",
                [
                    f"across the dial (index {span[0]:.2f} to {span[1]:.2f}, × "
                    f"{span[1] - span[0]:.2f}): {ln.paired.mean * (span[1] - span[0]):+.2f} "
                    f"points of top-1 error, 95 % interval [{low * (span[1] - span[0]):+.2f}, "
                    f"{high * (span[1] - span[0]):+.2f}], minimum detectable "
                    f"{_mde(ln.paired) * (span[1] - span[0]):.2f} — the difference between the "
                    f"two tasks of how much more Mixup's end of the dial gains than the most "
                    f"local setting's"
                ],
            )
        )
    else:
        items.append(("interaction: not computed (a task or its no-mixing runs are missing)", []))
    for ln in lines:
        if ln.claim == "locality_slope":
            low, high = ln.ci
            items.append(
                (
                    f"slope on {ln.regime}: {ln.paired.mean:+.2f} [{low:+.2f}, {high:+.2f}] "
                    f"(exploratory, {ln.verdict} for a positive slope)",
                    [],
                )
            )
    blocks.append(Bullets(items))
    return blocks


def _samples_figure(out: Path) -> list[Any]:
    """``figures/locality_tasks.png``: 12 training images of each task (split seed 0), one row a
    task (local, long-range, global), as a report figure."""
    import torch
    from torchvision.utils import save_image

    from unimix.data import build_dataset
    from unimix.study.document import Figure

    pictures = []
    for task in TASKS:
        spec = build_dataset(task, split_seed=0, train_augment=False)
        pictures.append(spec.train.images[:12].float())
    (out / "figures").mkdir(parents=True, exist_ok=True)
    save_image(torch.cat(pictures), out / "figures" / "locality_tasks.png", nrow=12, padding=2,
               pad_value=0.5)  # fmt: skip
    return [
        Figure(
            "figures/locality_tasks.png",
            "Samples of the three tasks. Rows: digits_local (a local cue), digits_pair (one "
            "digit in two far halves: a long-range cue), digits (global).",
        )
    ]


def _mde(paired: Paired) -> float:
    from unimix.study.stats import minimum_detectable_effect

    return minimum_detectable_effect(paired.sd, paired.n)
