"""Paired statistics of the study: per-seed differences, t-intervals, verdicts, rank agreement.

Every method of a study is trained with the same seeds, and a seed fixes the initial weights and
the data order for every method, so method A and method B are compared on the *paired*
differences ``d_s = m_A(s) − m_B(s)`` over seeds ``s = 1 … n``. With ``d̄`` their mean and ``s_d``
their sample standard deviation, the 95 % confidence interval of the mean difference is the
Student-t interval

    d̄ ± t_{0.975, n−1} · s_d / √n .

Verdict of a claim "A is better than B" (``better`` says which sign is better): ``holds`` when the
whole interval is on the better side of 0, ``reversed`` when it is wholly on the worse side,
``unresolved`` otherwise — and ``cannot be judged`` with one seed (no spread, no interval).
Across many lines, p-values are adjusted (:func:`holm` for the confirmatory family,
:func:`benjamini_hochberg` for the exploratory lines) and a line is decided on its adjusted
p-value (:func:`decide`), with the interval that agrees with it (:func:`adjusted_interval`). For
an unresolved line, :func:`minimum_detectable_effect` is the smallest true difference the design
as run would detect with 80 % power — not the number of seeds that would make the observed mean
significant, which treats a noisy estimate as the truth.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "CANNOT_JUDGE",
    "HOLDS",
    "REVERSED",
    "UNRESOLVED",
    "Paired",
    "adjusted_interval",
    "aggregate_verdict",
    "benjamini_hochberg",
    "decide",
    "holm",
    "minimum_detectable_effect",
    "paired_difference",
    "t_p_value",
    "welch_difference",
    "spearman",
    "t_quantile",
]

#: Verdict: the whole interval is on the better side of 0.
HOLDS = "holds"
#: Verdict: the whole interval is on the worse side of 0.
REVERSED = "reversed"
#: Verdict: the interval contains 0.
UNRESOLVED = "unresolved"
#: Verdict with one seed: no spread, no interval.
CANNOT_JUDGE = "cannot be judged"


def t_quantile(p: float, dof: int) -> float:
    """Quantile ``p`` of Student's t with ``dof`` degrees of freedom (``scipy.stats.t.ppf``)."""
    if dof < 1:
        raise ValueError(f"dof must be >= 1, got {dof}")
    from scipy.stats import t

    return float(t.ppf(p, dof))


@dataclass(frozen=True)
class Paired:
    """A paired comparison: mean difference ``a − b`` over ``n`` seeds with its 95 % interval."""

    mean: float
    sd: float
    n: int
    ci_low: float
    ci_high: float
    p_value: float = math.nan  # two-sided paired t-test of mean difference 0
    dof: float | None = None  # degrees of freedom of its t distribution (None: n − 1)

    def verdict(self, better: str) -> str:
        """``holds``/``reversed``/``unresolved`` for "a is better than b" (``better`` is
        ``"low"`` when a smaller value is better, as for errors, else ``"high"``)."""
        if better not in ("low", "high"):
            raise ValueError(f"better must be 'low' or 'high', got {better!r}")
        if self.n < 2 or math.isnan(self.ci_low):
            return CANNOT_JUDGE
        good_side = self.ci_high < 0 if better == "low" else self.ci_low > 0
        bad_side = self.ci_low > 0 if better == "low" else self.ci_high < 0
        return HOLDS if good_side else REVERSED if bad_side else UNRESOLVED


def paired_difference(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> Paired:
    """Mean of ``a[i] − b[i]`` (the same seed ``i``) with a Student-t confidence interval.

    With one pair the interval is NaN (one seed cannot be judged); with identical differences
    (zero spread) it collapses to the mean.
    """
    if len(a) != len(b):
        raise ValueError(f"a and b must be paired (same length), got {len(a)} and {len(b)}")
    if not a:
        raise ValueError("paired_difference needs at least one pair")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    diffs = [float(x) - float(y) for x, y in zip(a, b, strict=True)]
    n = len(diffs)
    mean = statistics.fmean(diffs)
    if n < 2:
        return Paired(mean, math.nan, n, math.nan, math.nan)
    sd = statistics.stdev(diffs)
    half = t_quantile(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n)
    return Paired(mean, sd, n, mean - half, mean + half, t_p_value(mean, sd, n))


def t_p_value(mean: float, sd: float, n: int) -> float:
    """Two-sided p-value of the one-sample t-test of ``mean = 0`` (``sd`` the sample sd)."""
    if n < 2 or math.isnan(sd):
        return math.nan
    if sd == 0:
        return 0.0 if mean != 0 else 1.0
    from scipy.stats import t

    return float(2 * t.sf(abs(mean) / (sd / math.sqrt(n)), n - 1))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error control; Holm 1979).

    Sorted ascending, ``p_(i)`` becomes ``max_{j ≤ i} min(1, (m − j + 1) · p_(j))``; NaN values
    are left NaN and do not count in ``m``.
    """
    idx = [i for i, p in enumerate(p_values) if not math.isnan(p)]
    order = sorted(idx, key=lambda i: p_values[i])
    m, out, running = len(order), [math.nan] * len(p_values), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        out[i] = running
    return out


def benjamini_hochberg(p_values: Sequence[float]) -> list[float]:
    """Benjamini–Hochberg adjusted p-values (false discovery rate; ``scipy.stats.
    false_discovery_control``); NaN values are left NaN and do not count."""
    idx = [i for i, p in enumerate(p_values) if not math.isnan(p)]
    out = [math.nan] * len(p_values)
    if idx:
        from scipy.stats import false_discovery_control

        adjusted = false_discovery_control([p_values[i] for i in idx], method="bh")
        for i, q in zip(idx, adjusted, strict=True):
            out[i] = float(q)
    return out


def adjusted_interval(
    paired: Paired, p_adjusted: float, alpha: float = 0.05
) -> tuple[float, float]:
    """The t-interval that agrees with an adjusted p-value: at confidence ``1 − α · p / p_adj``
    it excludes 0 exactly when ``p_adjusted < α`` (``p`` the raw p-value)."""
    p = paired.p_value
    if paired.n < 2 or math.isnan(p) or math.isnan(p_adjusted) or paired.sd == 0:
        return paired.ci_low, paired.ci_high
    gamma = alpha * (p / p_adjusted if p_adjusted > 0 else 1.0)
    from scipy.stats import t

    dof = paired.dof if paired.dof is not None else paired.n - 1
    half = float(t.ppf(1 - gamma / 2, dof)) * paired.sd / math.sqrt(paired.n)
    return paired.mean - half, paired.mean + half


def decide(paired: Paired, p_adjusted: float, better: str, alpha: float = 0.05) -> str:
    """``holds``/``reversed``/``unresolved`` on the adjusted p-value: significant (``p_adjusted <
    α``) on the better side holds, on the worse side is reversed."""
    if better not in ("low", "high"):
        raise ValueError(f"better must be 'low' or 'high', got {better!r}")
    if paired.n < 2 or math.isnan(p_adjusted):
        return CANNOT_JUDGE
    if p_adjusted >= alpha or paired.mean == 0:
        return UNRESOLVED
    good = paired.mean < 0 if better == "low" else paired.mean > 0
    return HOLDS if good else REVERSED


def minimum_detectable_effect(sd: float, n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest true mean difference a two-sided paired t-test at level ``α`` on ``n`` replicates
    detects with probability ``power``, at spread ``sd``: ``(t_{1−α/2} + t_{power}) · sd / √n``
    (``n − 1`` degrees of freedom)."""
    if n < 2 or math.isnan(sd):
        return math.nan
    return (t_quantile(1 - alpha / 2, n - 1) + t_quantile(power, n - 1)) * sd / math.sqrt(n)


def welch_difference(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> Paired:
    """Mean of ``a`` minus mean of ``b`` for independent samples: Welch's t-interval and p-value
    (a regime × method interaction: the same method's gains in two regimes, whose replicates are
    independent draws)."""
    from scipy.stats import ttest_ind

    if len(a) < 2 or len(b) < 2:
        mean = statistics.fmean(a) - statistics.fmean(b) if a and b else math.nan
        return Paired(mean, math.nan, min(len(a), len(b)), math.nan, math.nan)
    res = ttest_ind(list(a), list(b), equal_var=False)
    mean = statistics.fmean(a) - statistics.fmean(b)
    ci = res.confidence_interval(confidence)
    se = math.sqrt(statistics.variance(a) / len(a) + statistics.variance(b) / len(b))
    n = min(len(a), len(b))  # sd is scaled so that sd / √n is Welch's standard error
    return Paired(
        mean, se * math.sqrt(n), n, float(ci.low), float(ci.high), float(res.pvalue), float(res.df)
    )


def aggregate_verdict(parts: Sequence[str]) -> str:
    """The verdict of an "every …" claim from its lines' *corrected* verdicts: ``holds`` only when
    every line holds, ``reversed`` when any line is reversed, ``cannot be judged`` when any line
    cannot be, otherwise ``unresolved``. Because each line's verdict is already corrected for
    its whole family (Holm: the chance of any false "reversed" in the family is at most α), an
    aggregate reverses on chance with probability at most α too."""
    if not parts or any(p == CANNOT_JUDGE for p in parts):
        return CANNOT_JUDGE
    if any(p == REVERSED for p in parts):
        return REVERSED
    if all(p == HOLDS for p in parts):
        return HOLDS
    return UNRESOLVED


def _ranks(values: Sequence[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> tuple[float, float, float]:
    """Spearman's ρ of ``x`` and ``y`` with a 95 % interval (Fisher z, standard error
    ``√(1.06 / (n − 3))``, Fieller, Hartley & Pearson 1957); the interval is NaN for ``n ≤ 3``."""
    if len(x) != len(y):
        raise ValueError(f"x and y must have the same length, got {len(x)} and {len(y)}")
    n = len(x)
    if n < 2:
        return math.nan, math.nan, math.nan
    rx, ry = _ranks(x), _ranks(y)
    if len(set(rx)) == 1 or len(set(ry)) == 1:
        return math.nan, math.nan, math.nan
    rho = statistics.correlation(rx, ry)
    if n <= 3:
        return rho, math.nan, math.nan
    z = math.atanh(max(-0.999999, min(0.999999, rho)))
    half = 1.959964 * math.sqrt(1.06 / (n - 3))
    return rho, math.tanh(z - half), math.tanh(z + half)
