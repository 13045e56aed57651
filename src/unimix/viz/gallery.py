"""Mask gallery: two photographs mixed by every method, with the masks (the paper's Figure 1).

The photographs are the two that scikit-learn ships (``load_sample_images``: a Chinese temple and
a flower, 427×640, so the gallery also shows that nothing assumes square images).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from unimix import masks as _masks
from unimix.methods import requires_model
from unimix.mix import _METHODS, MixMethod, _build_method

__all__ = ["sample_photographs", "gallery_methods", "plot_mask_gallery"]


def sample_photographs(max_side: int | None = 320) -> Tensor:
    """scikit-learn's two sample photographs as a float ``[2, 3, H, W]`` batch in ``[0, 1]``."""
    from sklearn.datasets import load_sample_images

    images = np.stack(load_sample_images().images).astype(np.float32) / 255.0
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    if max_side is not None and max(x.shape[-2:]) > max_side:
        scale = max_side / max(x.shape[-2:])
        size = (round(x.shape[-2] * scale), round(x.shape[-1] * scale))
        x = torch.nn.functional.interpolate(
            x, size=size, mode="bilinear", antialias=True, align_corners=False
        )
    return x.clamp(0, 1)


def gallery_methods() -> list[str]:
    """Every registered method that mixes without a model: all mask samplers but ``none``."""
    names = [n for n in _masks.available() if n != "none"]
    core = ["mixup", "cutmix", "hmix", "gmix"]
    image = sorted(n for n in _METHODS if not requires_model(n))
    return [n for n in core if n in names] + [n for n in names if n not in core] + image


def _mix_one(
    name: str, x: Tensor, lam: float, r: float, g: torch.Generator
) -> tuple[Tensor, Tensor | None, float]:
    params = {"r": r} if name == "hmix" else {}
    method = _build_method(name, params)
    lam_t = torch.tensor([lam])
    if isinstance(method, _masks.MaskSampler):
        sample = method(lam_t, x.shape[-2], x.shape[-1], generator=g)
        m = sample.masks[0]
        return m * x[0] + (1 - m) * x[1], m[0], float(sample.lam[0])
    assert isinstance(method, MixMethod)
    mixed, lam_eff = method.mix(x[:1], x[1:], lam_t, generator=g, context={})
    return mixed[0], None, float(lam_eff[0])


def plot_mask_gallery(
    path: str | Path,
    methods: Sequence[str] | None = None,
    lam: float = 0.65,
    r: float = 0.5,
    seed: int = 0,
    images: Tensor | None = None,
    max_columns: int = 5,
) -> Path:
    """Write a PNG: the two source images, then per method the mixed image and its mask.

    ``lam`` is the mixing ratio (weight of the first image) and ``r`` HMix's box-area ratio, as in
    the paper's figure (λ = 0.65, r = 0.5). Methods that need a model (e.g. PuzzleMix) are skipped.
    The panels wrap after ``max_columns`` columns. ``λ̄`` is each method's effective ratio.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = sample_photographs() if images is None else images.float()
    names = list(methods) if methods is not None else gallery_methods()
    g = torch.Generator().manual_seed(seed)
    panels = []
    for name in names:
        try:
            panels.append((name, *_mix_one(name, x, lam, r, g)))
        except (KeyError, TypeError, ValueError, NotImplementedError) as err:
            if methods is not None:
                raise
            print(f"gallery: skipping {name}: {err}")
    slots = len(panels) + 1  # the source images take the first slot
    cols = min(max_columns, slots)
    blocks = -(-slots // cols)
    aspect = x.shape[-2] / x.shape[-1]
    fig, axes = plt.subplots(
        2 * blocks, cols, figsize=(2.8 * cols, 2 * blocks * 2.8 * aspect + 1.0)
    )
    axes = np.asarray(axes).reshape(2 * blocks, cols)
    for row in range(2):
        axes[row, 0].imshow(x[row].permute(1, 2, 0).numpy())
        axes[row, 0].set_title("image A" if row == 0 else "image B", fontsize=10)
    for slot, (name, mixed, mask, lam_eff) in enumerate(panels, start=1):
        top, col = 2 * (slot // cols), slot % cols
        axes[top, col].imshow(mixed.clamp(0, 1).permute(1, 2, 0).numpy())
        axes[top, col].set_title(f"{name}  λ̄ = {lam_eff:.2f}", fontsize=10)
        if mask is not None:
            axes[top + 1, col].imshow(mask.numpy(), cmap="gray", vmin=0, vmax=1)
            axes[top + 1, col].set_title("mask M (white = A)", fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
    fig.suptitle(f"Mixed sample data augmentation as masks: λ = {lam}, HMix r = {r}", fontsize=11)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
