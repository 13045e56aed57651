"""Evaluate a trained classifier: error, calibration, adversarial and occlusion robustness, speed.

One pass over a test set computes what the study compares between MSDA methods (Park, Yun & Chun,
NeurIPS 2022, Sec. 5: accuracy, calibration, robustness to FGSM/PGD):

- top-1 / top-5 error and negative log-likelihood (:mod:`unimix.evaluate.metrics`);
- expected calibration error with 15 equal-width bins and the reliability-diagram data;
- accuracy under FGSM and L∞ PGD for each ``ε`` (pixel units, :mod:`unimix.evaluate.attacks`);
- accuracy under random CutOut-style occlusion (:mod:`unimix.evaluate.occlusion`);
- clean evaluation throughput (images/s of the forward pass) and the total wall time.

The result is an :class:`EvalResult` with :meth:`~EvalResult.to_json` and
:meth:`~EvalResult.from_json`; :func:`format_table` prints one or several side by side.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal

import torch
from torch import Tensor, nn

from unimix.evaluate.attacks import channel_stats, default_step_size, fgsm, frozen_eval, pgd
from unimix.evaluate.metrics import (
    DEFAULT_BINS,
    ReliabilityDiagram,
    nll_per_example,
    reliability_diagram,
    topk_correct,
)
from unimix.evaluate.occlusion import random_occlusion

__all__ = ["EvalResult", "as_result", "evaluate_model", "format_table", "DEFAULT_EPS", "format_eps"]

#: The FGSM/PGD budgets ε evaluated by default, in pixel units of images in [0, 1].
DEFAULT_EPS: tuple[float, ...] = (1 / 255, 2 / 255, 4 / 255, 8 / 255)


@dataclass
class EvalResult:
    """Everything :func:`evaluate_model` measures on one model and test set.

    Errors and accuracies are fractions in ``[0, 1]``. ``fgsm_accuracy[i]``,
    ``pgd_accuracy[i]`` and ``pgd_step_size[i]`` belong to ``eps[i]`` (pixel units).
    ``occlusion_accuracy`` is ``None`` when occlusion was not evaluated.
    ``images_per_second`` is the clean forward throughput; ``total_seconds`` the whole evaluation.
    """

    n: int
    num_classes: int
    top1_error: float
    top5_error: float
    nll: float
    ece: float
    reliability: ReliabilityDiagram
    eps: list[float]
    fgsm_accuracy: list[float]
    pgd_accuracy: list[float]
    pgd_steps: int
    pgd_step_size: list[float]
    pgd_random_start: bool
    attack_loss: str
    occlusion_size: int | None
    occlusion_accuracy: float | None
    images_per_second: float
    total_seconds: float
    device: str
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def accuracy(self) -> float:
        """Clean top-1 accuracy ``1 − top1_error``."""
        return 1.0 - self.top1_error

    def robustness_curve(self) -> dict[str, list[float]]:
        """Accuracy against ``ε`` for plotting, with the clean accuracy at ``ε = 0`` prepended
        (unless ``eps`` already holds 0)."""
        eps, fg, pg = list(self.eps), list(self.fgsm_accuracy), list(self.pgd_accuracy)
        if 0.0 not in eps:
            eps, fg, pg = [0.0, *eps], [self.accuracy, *fg], [self.accuracy, *pg]
        order = sorted(range(len(eps)), key=eps.__getitem__)
        return {
            "eps": [eps[i] for i in order],
            "fgsm": [fg[i] for i in order],
            "pgd": [pg[i] for i in order],
        }

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (empty reliability bins as ``null``)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["reliability"] = self.reliability.to_dict()
        out["eps"] = list(self.eps)
        out["meta"] = dict(self.meta)
        return out

    def to_json(self, path: str | None = None, *, indent: int = 2) -> str:
        """JSON text of :meth:`to_dict`; also written to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=indent, allow_nan=False, default=str)
        if path is not None:  # atomically: a failed write keeps the previous file
            from unimix.train.fileio import atomic_write_text

            atomic_write_text(path, text + "\n")
        return text

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvalResult:
        """Inverse of :meth:`to_dict`."""
        names = {f.name for f in fields(cls)}
        optional = {"meta": {}, "attack_loss": "ce"}  # absent from older files
        missing = names - set(data) - set(optional)
        if missing:
            raise ValueError(f"not an EvalResult dict: missing keys {sorted(missing)}")
        kwargs = {**optional, **{k: data[k] for k in names if k in data}}
        kwargs["reliability"] = ReliabilityDiagram.from_dict(data["reliability"])
        for key in ("eps", "fgsm_accuracy", "pgd_accuracy", "pgd_step_size"):
            kwargs[key] = [float(v) for v in data[key]]
        kwargs["meta"] = dict(data.get("meta") or {})
        return cls(**kwargs)

    @classmethod
    def from_json(cls, text_or_path: str) -> EvalResult:
        """Read a result from JSON text or from a file holding it."""
        text = text_or_path
        if not text_or_path.lstrip().startswith("{"):
            with open(text_or_path, encoding="utf-8") as fh:
                text = fh.read()
        return cls.from_dict(json.loads(text))


def as_result(value: EvalResult | Mapping[str, Any]) -> EvalResult:
    """An :class:`EvalResult` from itself or from its :meth:`~EvalResult.to_dict` form."""
    if isinstance(value, EvalResult):
        return value
    if isinstance(value, Mapping):
        return EvalResult.from_dict(value)
    raise TypeError(f"expected an EvalResult or its dict form, got {type(value).__name__}")


def _batches(
    data: Iterable[Any] | tuple[Tensor, Tensor], batch_size: int
) -> Iterable[tuple[Tensor, Tensor]]:
    if (
        isinstance(data, (tuple, list))
        and len(data) == 2
        and all(isinstance(t, Tensor) for t in data)
    ):
        images, labels = data
        if images.shape[0] != labels.shape[0]:
            raise ValueError(
                f"images and labels differ in length: {images.shape[0]} vs {labels.shape[0]}"
            )
        for start in range(0, images.shape[0], batch_size):
            yield images[start : start + batch_size], labels[start : start + batch_size]
        return
    if not isinstance(data, Iterable):
        raise TypeError(
            "data must be an iterable of (images, labels) batches (e.g. a DataLoader) "
            f"or a tuple (images, labels) of tensors, got {type(data).__name__}"
        )
    for batch in data:
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise TypeError("each batch must be a pair (images, labels)")
        yield batch[0], batch[1]


def _count_images(data: Any, batch_size: int, max_batches: int | None) -> int | None:
    """How many images :func:`evaluate_model` will see, when that is known without iterating."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], Tensor):
        n = data[0].shape[0]
    else:
        try:
            n = len(data.dataset)  # a DataLoader
            batch_size = data.batch_size or batch_size
        except (AttributeError, TypeError):
            return None
    return n if max_batches is None else min(n, max_batches * batch_size)


def _model_device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _check_eps_list(eps_list: Sequence[float]) -> list[float]:
    if isinstance(eps_list, (int, float)):
        eps_list = [eps_list]
    out = []
    for eps in eps_list:
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 <= eps <= 1:
            raise ValueError(f"eps_list must hold numbers in [0, 1] (pixel units), got {eps!r}")
        out.append(float(eps))
    return out


def evaluate_model(
    model: nn.Module,
    data: Iterable[Any] | tuple[Tensor, Tensor],
    *,
    mean: float | Sequence[float] | Tensor,
    std: float | Sequence[float] | Tensor,
    device: torch.device | str | None = None,
    eps_list: Sequence[float] = DEFAULT_EPS,
    pgd_steps: int = 10,
    pgd_step_size: float | None = None,
    pgd_random_start: bool = True,
    attack_loss: Literal["ce", "margin"] = "ce",
    occlusion_size: int | None = 8,
    n_bins: int = DEFAULT_BINS,
    batch_size: int = 256,
    generator: torch.Generator | None = None,
    max_batches: int | None = None,
    progress: Callable[[int, int | None], None] | None = None,
) -> EvalResult:
    """Evaluate ``model`` on ``data``: error, NLL, ECE, FGSM/PGD and occlusion accuracy, speed.

    Args:
        model: classifier on normalised ``[B, C, H, W]`` images; run in eval mode, its training
            flag and ``requires_grad`` restored afterwards. Moved to ``device`` when one is given.
        data: an iterable of ``(images, labels)`` batches (e.g. a ``DataLoader``) or one tuple
            ``(images, labels)`` of tensors, split into batches of ``batch_size``. Images are
            normalised with ``mean``/``std`` from pixels in ``[0, 1]``; labels are class indices.
        mean, std: per-channel normalisation statistics (pixel units), used by the attacks.
        device: where to evaluate; ``None`` for the model's device.
        eps_list: L∞ radii in pixel units (``8/255`` …) for FGSM and PGD.
        pgd_steps: PGD iterations ``T``.
        pgd_step_size: PGD step ``α`` in pixel units for every ``ε``; ``None`` for ``2.5 ε / T``.
        pgd_random_start: start PGD at a uniform point of the ε-ball.
        attack_loss: loss FGSM and PGD ascend: ``"ce"`` (cross-entropy) or ``"margin"``
            (Carlini–Wagner margin, immune to softmax saturation of confident models).
        occlusion_size: side of the occluding square in pixels (filled with 0, the dataset mean
            after normalisation); ``None`` to skip.
        n_bins: equal-width bins of the ECE (15 as in Guo et al., ICML 2017).
        batch_size: batch size when ``data`` is a tuple of tensors.
        generator: random source of PGD starts and occlusion positions; ``None`` for a CPU
            generator seeded with 0, so evaluation is deterministic.
        max_batches: evaluate at most this many batches (a quick look at a large test set).
        progress: called after each batch with ``(images evaluated so far, total or None)``
            (``unimix evaluate`` draws its progress bar with it); ``None`` for silence.

    Returns:
        An :class:`EvalResult`.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    eps_values = _check_options(
        eps_list, pgd_steps, pgd_step_size, occlusion_size, attack_loss, batch_size, max_batches
    )
    if device is not None:
        model.to(device)
    dev = torch.device(device) if device is not None else _model_device(model)
    attacks = _Attacks(
        mean=mean,
        std=std,
        eps=eps_values,
        step_sizes=_step_sizes(eps_values, pgd_steps, pgd_step_size),
        pgd_steps=pgd_steps,
        pgd_random_start=bool(pgd_random_start),
        attack_loss=attack_loss,
        occlusion_size=occlusion_size,
        generator=generator if generator is not None else torch.Generator().manual_seed(0),
    )
    tally = _Tally(len(eps_values), dev, n_bins)
    total = _count_images(data, batch_size, max_batches) if progress is not None else None
    with frozen_eval(model):
        for index, (images, labels) in enumerate(_batches(data, batch_size)):
            if max_batches is not None and index >= max_batches:
                break
            _evaluate_batch(model, images, labels, attacks, tally, dev)
            if progress is not None:
                progress(tally.images, total)
    return tally.result(attacks, str(dev))


def _check_options(
    eps_list: Sequence[float],
    pgd_steps: Any,
    pgd_step_size: Any,
    occlusion_size: Any,
    attack_loss: Any,
    batch_size: Any,
    max_batches: Any,
) -> list[float]:
    """Validate :func:`evaluate_model`'s options; the radii as floats."""
    eps_values = _check_eps_list(eps_list)
    if isinstance(pgd_steps, bool) or not isinstance(pgd_steps, int) or pgd_steps < 0:
        raise ValueError(f"pgd_steps must be an int >= 0, got {pgd_steps!r}")
    if pgd_step_size is not None and not (
        isinstance(pgd_step_size, (int, float)) and 0 <= pgd_step_size < math.inf
    ):
        raise ValueError(
            f"pgd_step_size must be a number >= 0 (pixel units) or None, got {pgd_step_size!r}"
        )
    if occlusion_size is not None and (
        isinstance(occlusion_size, bool)
        or not isinstance(occlusion_size, int)
        or occlusion_size < 0
    ):
        raise ValueError(f"occlusion_size must be an int >= 0 or None, got {occlusion_size!r}")
    if attack_loss not in ("ce", "margin"):
        raise ValueError(f"attack_loss must be 'ce' or 'margin', got {attack_loss!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if max_batches is not None and (not isinstance(max_batches, int) or max_batches < 1):
        raise ValueError(f"max_batches must be a positive int or None, got {max_batches!r}")
    return eps_values


@dataclass
class _Attacks:
    """The attacks and occlusion of one evaluation (see :func:`evaluate_model`)."""

    mean: Any
    std: Any
    eps: list[float]
    step_sizes: list[float]
    pgd_steps: int
    pgd_random_start: bool
    attack_loss: Literal["ce", "margin"]
    occlusion_size: int | None
    generator: torch.Generator


class _Tally:
    """Running counts of one evaluation, on the device; :meth:`result` turns them into an
    :class:`EvalResult`."""

    def __init__(self, num_eps: int, device: torch.device, n_bins: int) -> None:
        self.n_bins = n_bins
        self.top_hits: list[Tensor] = []
        self.nlls: list[Tensor] = []
        self.confs: list[Tensor] = []
        self.corrects: list[Tensor] = []
        self.fgsm_hits = torch.zeros(num_eps, dtype=torch.long, device=device)
        self.pgd_hits = torch.zeros(num_eps, dtype=torch.long, device=device)
        self.occ_hits = torch.zeros((), dtype=torch.long, device=device)
        self.forward_seconds = 0.0
        self.num_classes = 0
        self.images = 0
        self.t_start = time.perf_counter()

    def add_clean(self, logits: Tensor, labels: Tensor) -> None:
        self.num_classes = logits.shape[1]
        self.top_hits.append(topk_correct(logits, labels, (1, 5)))
        self.nlls.append(nll_per_example(logits, labels))
        conf, pred = logits.float().softmax(dim=1).max(dim=1)
        self.confs.append(conf)
        self.corrects.append(pred == labels)
        self.images += labels.shape[0]

    def result(self, attacks: _Attacks, device: str) -> EvalResult:
        if not self.top_hits:
            raise ValueError("data yielded no batches: nothing to evaluate")
        hits = torch.cat(self.top_hits, dim=1).double()
        n = hits.shape[1]
        diagram = reliability_diagram(torch.cat(self.confs), torch.cat(self.corrects), self.n_bins)
        size = attacks.occlusion_size
        return EvalResult(
            n=n,
            num_classes=self.num_classes,
            top1_error=1.0 - hits[0].mean().item(),
            top5_error=1.0 - hits[1].mean().item(),
            nll=torch.cat(self.nlls).double().mean().item(),
            ece=diagram.ece,
            reliability=diagram,
            eps=attacks.eps,
            fgsm_accuracy=(self.fgsm_hits.double() / n).tolist(),
            pgd_accuracy=(self.pgd_hits.double() / n).tolist(),
            pgd_steps=attacks.pgd_steps,
            pgd_step_size=attacks.step_sizes,
            pgd_random_start=attacks.pgd_random_start,
            attack_loss=attacks.attack_loss,
            occlusion_size=size,
            occlusion_accuracy=None if size is None else self.occ_hits.item() / n,
            images_per_second=n / max(self.forward_seconds, 1e-9),
            total_seconds=time.perf_counter() - self.t_start,
            device=device,
        )


def _step_sizes(eps: list[float], steps: int, step_size: float | None) -> list[float]:
    """PGD's step per radius: ``step_size`` for all, or :func:`default_step_size` (``2.5 ε / T``)."""
    return [default_step_size(e, steps) if step_size is None else float(step_size) for e in eps]


def _evaluate_batch(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    attacks: _Attacks,
    tally: _Tally,
    device: torch.device,
) -> None:
    """Clean forward (timed), FGSM and PGD at every ε, and occlusion, on one batch."""
    if not isinstance(images, Tensor) or images.dim() != 4:
        raise ValueError("images must be [B, C, H, W] tensors")
    images = images.to(device, non_blocking=True).float()
    labels = labels.to(device, non_blocking=True).long()
    size = attacks.occlusion_size
    if size is not None and size > min(images.shape[-2:]):
        raise ValueError(
            f"occlusion_size={size} does not fit in {tuple(images.shape[-2:])} images; "
            "choose a smaller patch"
        )
    _sync(images.device)
    tic = time.perf_counter()
    with torch.no_grad():
        logits = model(images)
    _sync(images.device)
    tally.forward_seconds += time.perf_counter() - tic
    tally.add_clean(logits, labels)
    # Stats are built per batch, so the attacks check the pixel range once for each.
    mean_t = channel_stats(attacks.mean, "mean", images.shape[1], images)
    std_t = channel_stats(attacks.std, "std", images.shape[1], images)
    loss = attacks.attack_loss
    for i, (eps, alpha) in enumerate(zip(attacks.eps, attacks.step_sizes, strict=True)):
        adv = fgsm(model, images, labels, eps=eps, mean=mean_t, std=std_t, loss=loss)
        tally.fgsm_hits[i] += _count_correct(model, adv, labels)
        adv = pgd(
            model,
            images,
            labels,
            eps=eps,
            mean=mean_t,
            std=std_t,
            steps=attacks.pgd_steps,
            step_size=alpha,
            random_start=attacks.pgd_random_start,
            generator=attacks.generator,
            loss=loss,
        )
        tally.pgd_hits[i] += _count_correct(model, adv, labels)
    if size is not None:
        occluded = random_occlusion(images, size, fill=0.0, generator=attacks.generator)
        tally.occ_hits += _count_correct(model, occluded, labels)


def _count_correct(model: nn.Module, images: Tensor, labels: Tensor) -> Tensor:
    with torch.no_grad():
        return (model(images).argmax(dim=1) == labels).sum()


def format_eps(eps: float) -> str:
    """``ε`` as ``k/255`` when it is a whole number of 8-bit levels, else as a decimal."""
    levels = eps * 255
    if abs(levels - round(levels)) < 1e-6:
        return "0" if round(levels) == 0 else f"{round(levels)}/255"
    return f"{eps:.4g}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def format_table(results: EvalResult | Mapping[str, EvalResult | Mapping[str, Any]]) -> str:
    """Plain-text table of one result, or of several side by side (one column per name).

    Rows: examples, top-1/top-5 error, NLL, ECE, occlusion accuracy, FGSM and PGD accuracy for
    each ``ε``, images/s and total seconds.
    """
    if isinstance(results, EvalResult) or (
        isinstance(results, Mapping) and "top1_error" in results
    ):
        columns = {"value": as_result(results)}  # type: ignore[arg-type]
    elif isinstance(results, Mapping):
        if not results:
            raise ValueError("results is empty: nothing to tabulate")
        columns = {str(k): as_result(v) for k, v in results.items()}
    else:
        raise TypeError(
            f"results must be an EvalResult or a dict of them, got {type(results).__name__}"
        )

    first = next(iter(columns.values()))
    rows: list[tuple[str, list[str]]] = [
        ("examples", [str(r.n) for r in columns.values()]),
        ("top-1 error", [_pct(r.top1_error) for r in columns.values()]),
        ("top-5 error", [_pct(r.top5_error) for r in columns.values()]),
        ("NLL", [f"{r.nll:.4f}" for r in columns.values()]),
        (f"ECE ({first.reliability.n_bins} bins)", [_pct(r.ece) for r in columns.values()]),
    ]
    occ = [r.occlusion_size for r in columns.values()]
    occ_label = f"occlusion {occ[0]}px acc." if len(set(occ)) == 1 else "occlusion acc."
    rows.append((occ_label, [_pct(r.occlusion_accuracy) for r in columns.values()]))
    all_eps = sorted({e for r in columns.values() for e in r.eps})
    steps = {r.pgd_steps for r in columns.values()}
    pgd_name = f"PGD-{steps.pop()}" if len(steps) == 1 else "PGD"
    for attack in ("fgsm", "pgd"):
        for eps in all_eps:
            cells = []
            for r in columns.values():
                acc = getattr(r, f"{attack}_accuracy")
                cells.append(_pct(acc[r.eps.index(eps)]) if eps in r.eps else "-")
            name = "FGSM" if attack == "fgsm" else pgd_name
            rows.append((f"{name} acc. ε={format_eps(eps)}", cells))
    rows.append(("images/s", [f"{r.images_per_second:.1f}" for r in columns.values()]))
    rows.append(("total seconds", [f"{r.total_seconds:.2f}" for r in columns.values()]))

    header = ["metric", *columns]
    width0 = max(len(header[0]), *(len(name) for name, _ in rows))
    widths = [max(len(h), *(len(cells[j]) for _, cells in rows)) for j, h in enumerate(header[1:])]
    lines = [
        "  ".join(
            [
                header[0].ljust(width0),
                *(h.rjust(w) for h, w in zip(header[1:], widths, strict=True)),
            ]
        ),
        "  ".join(["-" * width0, *("-" * w for w in widths)]),
    ]
    for name, cells in rows:
        lines.append(
            "  ".join(
                [name.ljust(width0), *(c.rjust(w) for c, w in zip(cells, widths, strict=True))]
            )
        )
    return "\n".join(lines)
