"""timm's ``Mixup`` on unimix's engine (``TimmMixup``), and timm's target arithmetic
(``mixup_target``), plus the reference implementation's ``cutmix_mode="hmix"|"gmix"`` (Park, Yun
& Chun, NeurIPS 2022). Re-exported by :mod:`unimix.compat`, where users import it from.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from unimix.checks import check_choice, check_positive, check_positive_int, check_unit
from unimix.mix import Mixer

__all__ = ["TimmMixup", "mixup_target"]

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
    return mix_targets(smoothed_targets(target, num_classes, smoothing, multi_label), lam)


def smoothed_targets(
    target: Tensor, num_classes: int, smoothing: float, multi_label: bool
) -> Tensor:
    if not isinstance(target, Tensor):
        raise TypeError(f"target must be a torch.Tensor, got {type(target).__name__}")
    if multi_label:
        if target.dim() != 2 or target.shape[1] != num_classes:
            raise ValueError(
                f"multi_label=True expects dense targets [B, num_classes={num_classes}], "
                f"got shape {tuple(target.shape)}"
            )
        return target.float() * (1.0 - smoothing) + 0.5 * smoothing
    if target.dim() != 1 or target.is_floating_point():
        raise ValueError(
            f"target must be [B] integer class indices, got {target.dtype} of shape "
            f"{tuple(target.shape)}; for dense [B, K] targets pass multi_label=True"
        )
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= num_classes):
        raise ValueError(
            f"target must lie in [0, num_classes={num_classes}), got range "
            f"[{int(target.min())}, {int(target.max())}]; check num_classes"
        )
    off_value = smoothing / num_classes
    on_value = 1.0 - smoothing + off_value
    y1 = torch.full((target.shape[0], num_classes), off_value, device=target.device)
    return y1.scatter_(1, target.long().view(-1, 1), on_value)


def mix_targets(y1: Tensor, lam: float | Tensor, partner: Tensor | None = None) -> Tensor:
    """``λ y + (1 − λ) y[partner]`` (timm's order of operations; the flip when no partner)."""
    if isinstance(lam, Tensor):
        lam = lam.to(y1.device).reshape(-1, 1)
    other = y1.flip(0) if partner is None else y1.index_select(0, partner.to(y1.device))
    return y1 * lam + other * (1.0 - lam)


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
            if len(cutmix_minmax) != 2:
                raise ValueError(f"cutmix_minmax must be (min, max), got {cutmix_minmax!r}")
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
        y1 = smoothed_targets(target, self.num_classes, self.label_smoothing, self.multi_label)
        if not isinstance(x, Tensor) or x.dim() != 4:
            raise ValueError(f"x must be a [B, C, H, W] tensor, got {getattr(x, 'shape', type(x))}")
        if x.shape[0] != y1.shape[0]:
            raise ValueError(
                f"x has {x.shape[0]} rows but target has {y1.shape[0]}; pass one per image"
            )
        if not self.mixup_enabled:
            return x, mix_targets(y1, 1.0)
        plan = self.mixer.sample(x.shape[0], x.shape[2], x.shape[3], device=x.device)
        _, measured = self.mixer.apply(x, plan, inplace=True)
        lam: float | Tensor = plan.lam if plan.label_weight == "nominal" else measured.lam_effective
        if self.mode == "batch":
            lam = float(lam[0])
        else:
            lam = lam.to(torch.promote_types(torch.float32, _float_or(x.dtype)))
        return x, mix_targets(y1, lam, plan.partner)

    def __repr__(self) -> str:
        return (
            f"TimmMixup(mixup_alpha={self.mixup_alpha}, cutmix_alpha={self.cutmix_alpha}, "
            f"prob={self.mix_prob}, switch_prob={self.switch_prob}, mode={self.mode!r}, "
            f"label_smoothing={self.label_smoothing}, num_classes={self.num_classes}, "
            f"cutmix_mode={self.cutmix_mode!r}, hmix_ratio={self.hmix_ratio})"
        )


def _float_or(dtype: torch.dtype) -> torch.dtype:
    return dtype if dtype.is_floating_point else torch.float32
