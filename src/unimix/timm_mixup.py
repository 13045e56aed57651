"""timm's ``Mixup`` on unimix's engine (``TimmMixup``), and timm's target arithmetic
(``mixup_target``), plus the reference implementation's ``cutmix_mode="hmix"|"gmix"`` (Park, Yun
& Chun, NeurIPS 2022). Re-exported by :mod:`unimix.compat`, where users import it from.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from unimix.checks import (
    check_choice,
    check_interval,
    check_positive,
    check_positive_int,
    check_same_batch,
    check_tensor,
    check_unit,
)
from unimix.mix import Mixer
from unimix.targets import mix_targets, one_hot_targets

__all__ = ["TimmMixup", "mixup_target", "timm_targets"]

_CUT_METHODS = {"bbox": "cutmix", "hmix": "hmix", "gmix": "gmix"}


def mixup_target(
    target: Tensor,
    num_classes: int,
    lam: float | Tensor = 1.0,
    smoothing: float = 0.0,
    multi_label: bool = False,
) -> Tensor:
    """timm's mixed targets: ``ỹ_k = λ_k y_k + (1 − λ_k) y_{B−1−k}`` (the batch's flip is the partner).

    ``y`` is the one-hot target smoothed as timm does: ``ε/K`` off the class and ``1 − ε + ε/K`` on
    it; with ``multi_label=True`` the dense ``[B, K]`` targets are smoothed towards ½,
    ``y (1 − ε) + ε/2``. ``lam`` is a number (one λ for the batch) or ``[B]``/``[B, 1]`` (one per
    row). For the same arguments the result is bit-for-bit ``timm.data.mixup_target``'s, on
    ``target``'s device.
    """
    y = timm_targets(target, num_classes, smoothing, multi_label)
    lam = lam.to(y.device) if isinstance(lam, Tensor) else lam
    return mix_targets(y, _flip(y.shape[0], y.device), lam, dtype=_label_dtype(y, lam))


def timm_targets(target: Tensor, num_classes: int, smoothing: float, multi_label: bool) -> Tensor:
    """timm's smoothed targets ``[B, K]`` from ``target`` (:func:`unimix.targets.one_hot_targets`
    under timm's rule: class indices ``[B]``, or dense ``[B, K]`` only with ``multi_label``)."""
    check_tensor("target", target)
    if not multi_label and (target.dim() != 1 or target.is_floating_point()):
        raise ValueError(
            f"target must be [B] integer class indices, got {target.dtype} of shape "
            f"{tuple(target.shape)}; for dense [B, K] targets pass multi_label=True"
        )
    return one_hot_targets(
        target, num_classes, None, smoothing, multi_label=multi_label, name="target"
    )


def _flip(size: int, device: torch.device) -> Tensor:
    """timm's partner of row ``k``: row ``B − 1 − k``."""
    return torch.arange(size - 1, -1, -1, device=device)


def _label_dtype(y: Tensor, lam: float | Tensor) -> torch.dtype:
    """timm's targets' dtype: ``float32 × lam.dtype`` (a number leaves float32)."""
    return torch.promote_types(y.dtype, lam.dtype) if isinstance(lam, Tensor) else y.dtype


class TimmMixup:
    """``timm.data.Mixup`` on unimix's engine, plus HMix and GMix as CutMix modes.

    The arguments and ``x, target = mixup_fn(x, target)`` are timm's: ``x`` ``[B, C, H, W]`` is
    mixed **in place** and returned, ``target`` holds class indices ``[B]`` (or dense ``[B, K]``
    with ``multi_label=True``), and the targets are ``mixup_target``'s, row ``k`` partnered with row
    ``B−1−k``. Mixup draws ``λ ~ Beta(mixup_alpha, mixup_alpha)``; the cut method draws
    ``λ ~ Beta(cutmix_alpha, cutmix_alpha)`` and is, by ``cutmix_mode``:

    * ``"bbox"`` — CutMix (Yun et al., ICCV 2019): the partner pasted in a box of side ratio ``√(1−λ)``;
    * ``"hmix"`` — HMix(r = ``hmix_ratio``) (Park et al., NeurIPS 2022): a box of side ratio
      ``√(r(1−λ))``, Mixup outside it;
    * ``"gmix"`` — GMix (Park et al., NeurIPS 2022): a Gaussian patch of area ``min(λ, 1−λ)·HW``.

    With both alphas > 0 each batch (``mode="batch"``), pair of rows (``"pair"``) or row
    (``"elem"``) uses the cut method with probability ``switch_prob``; ``prob`` is the probability
    of mixing at all. Setting ``mixup_enabled = False`` turns mixing off (targets are then only
    smoothed), as timm's training script does at ``--mixup-off-epoch``.

    Differences from timm, all deliberate:

    * ``correct_lam=True`` (timm's default) labels each mix with the effective ``λ̄ = mean(M)`` of
      the mask applied, clipped boxes and GMix's truncated Gaussian included;
      ``correct_lam=False`` labels it with the drawn λ (``Mixer(label_weight="nominal")``), as
      timm does for clipped boxes (the paper's reference code labels GMix by the kernel's mean,
      the effective λ̄).
    * CutMix box sides are ``round(√(1−λ)·H)`` rather than timm's ``int(...)``: boxes differ by at
      most one pixel per side; their position rule (centre uniform over pixels, clipped) is timm's.
    * Odd batches work in ``"batch"`` and ``"elem"`` modes (the middle row is its own partner);
      ``"pair"`` still needs an even batch. ``uint8`` images are mixed too (rounded).
    * Randomness comes from ``generator`` (a :class:`torch.Generator`, or PyTorch's global RNG),
      not from NumPy's global RNG.
    * ``cutmix_minmax`` (timm's Darknet-style boxes whose sides are drawn uniformly, independently
      of λ) uses the ``cutmix_minmax`` sampler; as in timm it turns CutMix on.

    In ``"elem"``/``"pair"`` modes the targets' dtype is that of ``float32 × x.dtype`` and in
    ``"batch"`` mode float32, as in timm. The underlying engine is :attr:`mixer`.
    """

    _FIXED = frozenset(
        {
            "mixup_alpha", "cutmix_alpha", "cutmix_minmax", "mix_prob", "switch_prob", "mode",
            "correct_lam", "label_smoothing", "num_classes", "multi_label", "cutmix_mode",
            "hmix_ratio", "mixer",
        }
    )  # fmt: skip

    def __init__(
        self,
        mixup_alpha: float = 1.0,
        cutmix_alpha: float = 0.0,
        cutmix_minmax: Sequence[float] | None = None,
        prob: float = 1.0,
        switch_prob: float = 0.5,
        mode: str = "batch",
        correct_lam: bool = True,
        label_smoothing: float = 0.1,
        num_classes: int = 1000,
        multi_label: bool = False,
        *,
        cutmix_mode: str = "bbox",
        hmix_ratio: float = 0.5,
        generator: torch.Generator | None = None,
    ) -> None:
        # 0 turns a method off, so the alphas may be 0 here (the Mixer checks the ones it uses)
        check_positive("mixup_alpha", mixup_alpha, allow_zero=True)
        check_positive("cutmix_alpha", cutmix_alpha, allow_zero=True)
        check_choice("cutmix_mode", cutmix_mode, tuple(_CUT_METHODS))
        if cutmix_minmax is not None:
            check_interval("cutmix_minmax", cutmix_minmax, 0.0, 1.0)
            if cutmix_mode != "bbox":
                raise ValueError("cutmix_minmax draws plain CutMix boxes: use cutmix_mode='bbox'")
            cutmix_alpha = 1.0  # as timm: minmax turns CutMix on; its boxes ignore λ
        if mixup_alpha == 0 and cutmix_alpha == 0:
            raise ValueError("one of mixup_alpha and cutmix_alpha must be > 0 to mix anything")
        check_unit("hmix_ratio", hmix_ratio)
        check_unit("label_smoothing", label_smoothing)
        check_positive_int("num_classes", num_classes)
        cut = _CUT_METHODS[cutmix_mode] if cutmix_minmax is None else "cutmix_minmax"
        alphas = {"mixup": float(mixup_alpha), cut: float(cutmix_alpha)}
        methods = [m for m in ("mixup", cut) if alphas[m] > 0]
        self.mixer = Mixer(
            methods,
            alpha={m: alphas[m] for m in methods},
            mode=mode,  # type: ignore[arg-type]
            prob=prob,
            switch_prob=switch_prob if len(methods) == 2 else None,
            generator=generator,
            label_weight="effective" if correct_lam else "nominal",
            **({"r": float(hmix_ratio)} if cut == "hmix" and "hmix" in methods else {}),
            **({"minmax": tuple(cutmix_minmax)} if cutmix_minmax is not None else {}),
        )
        self.mixup_alpha = mixup_alpha
        self.cutmix_alpha = cutmix_alpha
        self.cutmix_minmax = cutmix_minmax
        self.mix_prob = prob
        self.switch_prob = switch_prob
        self.mode = mode
        self.correct_lam = correct_lam
        self.label_smoothing = label_smoothing
        self.num_classes = num_classes
        self.multi_label = multi_label
        self.cutmix_mode = cutmix_mode
        self.hmix_ratio = hmix_ratio
        self.mixup_enabled = True
        self._built = True

    def __setattr__(self, name: str, value: Any) -> None:
        # Settings are compiled into the Mixer: changing them afterwards would silently do nothing.
        if name in self._FIXED and getattr(self, "_built", False):
            raise AttributeError(
                f"TimmMixup.{name} is fixed at construction; build a new TimmMixup to change it "
                "(only mixup_enabled may change during training)"
            )
        super().__setattr__(name, value)

    def __call__(self, x: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """Mix ``x`` in place; return ``(x, mixed targets)`` as ``timm.data.Mixup`` does."""
        y1 = timm_targets(target, self.num_classes, self.label_smoothing, self.multi_label)
        if not isinstance(x, Tensor) or x.dim() != 4:
            raise ValueError(f"x must be a [B, C, H, W] tensor, got {getattr(x, 'shape', type(x))}")
        check_same_batch("x", x.shape[0], "target", y1.shape[0])
        if not self.mixup_enabled:
            return x, y1
        plan = self.mixer.sample(x.shape[0], x.shape[2], x.shape[3], device=x.device)
        _, measured = self.mixer.apply(x, plan, inplace=True)
        lam: float | Tensor = plan.lam if plan.label_weight == "nominal" else measured.lam_effective
        if self.mode == "batch":
            lam = float(lam[0])
        else:
            lam = lam.to(torch.promote_types(torch.float32, _float_or(x.dtype)))
        return x, mix_targets(y1, plan.partner, lam, dtype=_label_dtype(y1, lam))

    def __repr__(self) -> str:
        return (
            f"TimmMixup(mixup_alpha={self.mixup_alpha}, cutmix_alpha={self.cutmix_alpha}, "
            f"prob={self.mix_prob}, switch_prob={self.switch_prob}, mode={self.mode!r}, "
            f"label_smoothing={self.label_smoothing}, num_classes={self.num_classes}, "
            f"cutmix_mode={self.cutmix_mode!r}, hmix_ratio={self.hmix_ratio})"
        )


def _float_or(dtype: torch.dtype) -> torch.dtype:
    return dtype if dtype.is_floating_point else torch.float32
