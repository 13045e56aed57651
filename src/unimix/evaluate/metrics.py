"""Classification metrics: top-k error, negative log-likelihood, expected calibration error.

Everything is computed from per-example quantities so that a test set can be streamed batch by
batch and the metrics computed once at the end without keeping the ``[N, K]`` logits:

- top-k correctness: label among the ``k`` largest logits;
- negative log-likelihood ``−log softmax(z)_y`` (the cross-entropy of the prediction);
- confidence ``max_k softmax(z)_k`` and correctness of the arg-max prediction, from which the
  reliability diagram and the expected calibration error are built.

Expected calibration error (Naeini, Cooper & Hauskrecht, AAAI 2015; Guo, Pleiss, Sun & Weinberger,
"On Calibration of Modern Neural Networks", ICML 2017) with ``B`` equal-width bins
``I_b = ((b−1)/B, b/B]``:

    ECE = Σ_b (|I_b| / N) · | acc(I_b) − conf(I_b) |

where ``acc`` and ``conf`` are the mean correctness and mean confidence of the examples whose
confidence falls in ``I_b``. The study uses ``B = 15`` as Guo et al. do.

Temperature scaling (Guo et al. 2017, section 4.2): one scalar ``T > 0`` per model, fitted on a
validation split by minimising its NLL, ``T* = argmin_T Σ −log softmax(z/T)_y``; the test logits
are then divided by ``T*`` (the arg-max, hence the error, is unchanged). Models trained on mixed
labels are often under-confident (``T* < 1``), so raw NLL and ECE partly measure this scale
rather than the ranking; :func:`fit_temperature` separates the two.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "ReliabilityDiagram",
    "topk_correct",
    "topk_error",
    "nll_per_example",
    "nll",
    "confidence_and_correct",
    "reliability_diagram",
    "expected_calibration_error",
    "fit_temperature",
]

DEFAULT_BINS = 15


def _check_logits_labels(logits: Tensor, labels: Tensor) -> None:
    if not isinstance(logits, Tensor) or not isinstance(labels, Tensor):
        raise TypeError("logits and labels must be torch.Tensor")
    if logits.dim() != 2:
        raise ValueError(f"logits must have shape [N, K], got {tuple(logits.shape)}")
    if labels.dim() != 1 or labels.shape[0] != logits.shape[0]:
        raise ValueError(
            f"labels must have shape [N] = [{logits.shape[0]}] (class indices), "
            f"got {tuple(labels.shape)}"
        )
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise TypeError(f"labels must be integer class indices, got dtype {labels.dtype}")
    if labels.numel() and (labels.min() < 0 or labels.max() >= logits.shape[1]):
        raise ValueError(
            f"labels must lie in [0, {logits.shape[1] - 1}] for {logits.shape[1]} classes, "
            f"got range [{int(labels.min())}, {int(labels.max())}]"
        )


def _at_least_float32(logits: Tensor) -> Tensor:
    return logits.to(torch.promote_types(logits.dtype, torch.float32))


def topk_correct(logits: Tensor, labels: Tensor, ks: Sequence[int] = (1, 5)) -> Tensor:
    """Whether each label is among the ``k`` highest logits, for each ``k`` in ``ks``.

    Returns a bool tensor ``[len(ks), N]``. A ``k`` at least the number of classes ``K`` counts
    every example as correct (all classes are in the top ``K``). Ties between logits are broken
    by :func:`torch.topk`.
    """
    _check_logits_labels(logits, labels)
    ks = tuple(ks)
    if not ks or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in ks):
        raise ValueError(f"ks must be a non-empty sequence of positive ints, got {ks!r}")
    num_classes = logits.shape[1]
    kmax = min(max(ks), num_classes)
    top = logits.topk(kmax, dim=1).indices  # [N, kmax], best first
    hit = top == labels[:, None]
    # hit has at most one True per row; its cumulative sum says "label within the first j".
    within = hit.cumsum(dim=1).bool()  # [N, kmax]
    cols = torch.tensor([min(k, kmax) - 1 for k in ks], device=logits.device)
    return within[:, cols].T.contiguous()


def topk_error(logits: Tensor, labels: Tensor, k: int = 1) -> float:
    """Top-``k`` error: the fraction of examples whose label is not among the ``k`` best logits."""
    correct = topk_correct(logits, labels, (k,))[0]
    if correct.numel() == 0:
        raise ValueError("topk_error needs at least one example")
    return 1.0 - correct.double().mean().item()


def nll_per_example(logits: Tensor, labels: Tensor) -> Tensor:
    """Per-example negative log-likelihood ``−log softmax(z)_y`` (``[N]``, float32 or float64).

    Computed with ``log_softmax`` in at least float32, so it is finite for any finite logits.
    """
    _check_logits_labels(logits, labels)
    logp = F.log_softmax(_at_least_float32(logits), dim=1)
    return -logp.gather(1, labels[:, None].long())[:, 0]


def nll(logits: Tensor, labels: Tensor) -> float:
    """Mean negative log-likelihood (cross-entropy) of the labels under ``softmax(logits)``."""
    values = nll_per_example(logits, labels)
    if values.numel() == 0:
        raise ValueError("nll needs at least one example")
    return values.double().mean().item()


def confidence_and_correct(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Confidence ``max_k softmax(z)_k`` (``[N]``, at least float32) and correctness of the arg-max."""
    _check_logits_labels(logits, labels)
    probs = F.softmax(_at_least_float32(logits), dim=1)
    conf, pred = probs.max(dim=1)
    return conf, pred == labels


@dataclass(frozen=True)
class ReliabilityDiagram:
    """Binned calibration data: what a reliability diagram draws and what the ECE sums.

    Attributes:
        bin_edges: ``B + 1`` edges ``0, 1/B, …, 1`` of the equal-width confidence bins.
        confidence: mean confidence in each bin (``nan`` for an empty bin).
        accuracy: mean correctness in each bin (``nan`` for an empty bin).
        count: number of examples in each bin.
        ece: expected calibration error ``Σ_b (count_b / N) |accuracy_b − confidence_b|``.
    """

    bin_edges: list[float]
    confidence: list[float]
    accuracy: list[float]
    count: list[int]
    ece: float

    @property
    def n_bins(self) -> int:
        return len(self.count)

    def to_dict(self) -> dict[str, object]:
        # JSON has no NaN: empty bins are written as null.
        def clean(values: list[float]) -> list[float | None]:
            return [None if v != v else v for v in values]

        return {
            "bin_edges": list(self.bin_edges),
            "confidence": clean(self.confidence),
            "accuracy": clean(self.accuracy),
            "count": list(self.count),
            "ece": self.ece,
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> ReliabilityDiagram:
        def restore(values: object) -> list[float]:
            return [float("nan") if v is None else float(v) for v in values]  # type: ignore[union-attr]

        return cls(
            bin_edges=[float(v) for v in data["bin_edges"]],  # type: ignore[union-attr]
            confidence=restore(data["confidence"]),
            accuracy=restore(data["accuracy"]),
            count=[int(v) for v in data["count"]],  # type: ignore[union-attr]
            ece=float(data["ece"]),  # type: ignore[arg-type]
        )


def reliability_diagram(
    confidence: Tensor, correct: Tensor, n_bins: int = DEFAULT_BINS
) -> ReliabilityDiagram:
    """Bin predictions by confidence into ``n_bins`` equal-width bins ``((b−1)/B, b/B]``.

    Args:
        confidence: ``[N]`` confidences in ``[0, 1]`` (e.g. the maximum softmax probability).
        correct: ``[N]`` bool or 0/1 correctness of the corresponding predictions.
        n_bins: number of bins ``B`` (15 in Guo et al., ICML 2017).

    A confidence of exactly 0 goes to the first bin. The sums run in float64.
    """
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive int, got {n_bins!r}")
    if not isinstance(confidence, Tensor) or not isinstance(correct, Tensor):
        raise TypeError("confidence and correct must be torch.Tensor")
    if confidence.dim() != 1 or correct.shape != confidence.shape:
        raise ValueError(
            f"confidence and correct must both have shape [N], got {tuple(confidence.shape)} "
            f"and {tuple(correct.shape)}"
        )
    if confidence.numel() == 0:
        raise ValueError("reliability_diagram needs at least one example")
    conf = confidence.detach().double()
    if torch.isnan(conf).any() or conf.min() < 0 or conf.max() > 1:
        raise ValueError("confidence must lie in [0, 1] (probabilities, not logits)")
    acc = correct.detach().double()
    edges = torch.linspace(0, 1, n_bins + 1, dtype=torch.float64, device=conf.device)
    # bucketize(right=False) gives i with edges[i-1] < x <= edges[i]: the bin ((i-1)/B, i/B].
    index = torch.bucketize(conf, edges[1:-1], right=False)
    count = torch.bincount(index, minlength=n_bins).double()
    conf_sum = torch.bincount(index, weights=conf, minlength=n_bins)
    acc_sum = torch.bincount(index, weights=acc, minlength=n_bins)
    nonempty = count > 0
    safe = count.clamp(min=1)
    mean_conf = torch.where(nonempty, conf_sum / safe, torch.full_like(count, float("nan")))
    mean_acc = torch.where(nonempty, acc_sum / safe, torch.full_like(count, float("nan")))
    ece = ((acc_sum - conf_sum).abs().sum() / count.sum()).item()
    return ReliabilityDiagram(
        bin_edges=edges.tolist(),
        confidence=mean_conf.tolist(),
        accuracy=mean_acc.tolist(),
        count=[int(c) for c in count.tolist()],
        ece=ece,
    )


def expected_calibration_error(logits: Tensor, labels: Tensor, n_bins: int = DEFAULT_BINS) -> float:
    """Expected calibration error of ``softmax(logits)`` with ``n_bins`` equal-width bins."""
    conf, correct = confidence_and_correct(logits, labels)
    return reliability_diagram(conf, correct, n_bins).ece


def fit_temperature(
    logits: Tensor, labels: Tensor, low: float = 0.05, high: float = 20.0, iters: int = 60
) -> float:
    """The temperature ``T`` minimising the mean NLL of ``softmax(logits / T)`` (Guo et al. 2017).

    A golden-section search over ``log T`` in ``[log low, log high]`` in float64: the NLL is
    convex in ``1/T``, hence unimodal in ``log T``, and the search is deterministic (no learning
    rate, no initial value). ``iters`` = 60 narrows the bracket by a factor ``0.618^60 ≈ 3e-13``.
    """
    _check_logits_labels(logits, labels)
    if labels.numel() == 0:
        raise ValueError("fit_temperature needs at least one example")
    if not 0 < low < high:
        raise ValueError(f"need 0 < low < high, got low={low}, high={high}")
    z = logits.detach().to(torch.float64)
    y = labels.long()

    def loss(log_t: float) -> float:
        return F.cross_entropy(z / math.exp(log_t), y).item()

    a, b = math.log(low), math.log(high)
    g = (math.sqrt(5) - 1) / 2
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = loss(c), loss(d)
    for _ in range(iters):
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = loss(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = loss(d)
    return math.exp((a + b) / 2)
