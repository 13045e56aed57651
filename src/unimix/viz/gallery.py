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

from unimix import registry
from unimix.train.fileio import atomic_save_figure

__all__ = [
    "sample_photographs",
    "gallery_methods",
    "plot_mask_gallery",
    "resolve_output",
    "source_mask",
]

DEFAULT_FILENAME = "gallery.png"


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
    """Every registered method that mixes without a model, but ``none``: the four of the paper
    first, then the other masks, then the image-dependent methods."""
    mask_names = [n for n in registry.available("mask") if n != "none"]
    core = ["mixup", "cutmix", "hmix", "gmix"]
    image = [n for n in registry.available("image") if not registry.requires_model(n)]
    return [n for n in core if n in mask_names] + [n for n in mask_names if n not in core] + image


def source_mask(mixed: Tensor, first: Tensor, partner: Tensor, tol: float = 1e-3) -> Tensor:
    """Where each pixel of ``mixed`` came from, as a mask ``M`` in ``[0, 1]`` (``[H, W]``).

    For images ``[C, H, W]``, ``M(p)`` is the least-squares blend weight of ``first`` in
    ``mixed(p) ≈ M(p)·first(p) + (1 − M(p))·partner(p)`` (clipped to ``[0, 1]``). A pixel that is
    no blend of the two at that position — e.g. ResizeMix's pasted, resized partner — came from
    the partner: ``M(p) = 0``. Where the two images agree (within ``tol``) the pixel counts as
    ``first``'s. For a mask method this recovers the mask wherever the images differ, so the
    gallery draws image-dependent methods (ResizeMix, SaliencyMix) like mask methods.
    """
    a, b, x = first.double(), partner.double(), mixed.double()
    diff = a - b
    norm = (diff * diff).sum(dim=0)
    same = norm <= tol * tol * a.shape[0]
    weight = ((x - b) * diff).sum(dim=0) / norm.clamp_min(1e-12)
    weight = weight.clamp(0, 1)
    residual = (x - (weight * a + (1 - weight) * b)).abs().amax(dim=0)
    from_first = (x - a).abs().amax(dim=0) <= tol
    mask = torch.where(residual > tol, torch.zeros_like(weight), weight)
    mask = torch.where(same, from_first.double(), mask)
    return mask.float()


def _mix_one(
    name: str, x: Tensor, lam: float, r: float, g: torch.Generator
) -> tuple[Tensor, Tensor, float, bool]:
    """Mix ``x[0]`` with ``x[1]`` at ``lam``: the mixed image, its mask (derived from the pixels
    for image-dependent methods: the last item is then True) and the effective λ."""
    from unimix.mix import Mixer

    mixer = Mixer(name, generator=g, **({"r": r} if name == "hmix" else {}))
    plan = mixer.sample(2, x.shape[-2], x.shape[-1], lam=lam)  # row 0 mixed with row 1
    mixed_rows, measured = mixer.apply(x[:2], plan)
    mixed = mixed_rows[0]
    lam_eff = float(measured.lam_effective[0])
    if plan.masks is not None:
        return mixed, plan.masks[0, 0], lam_eff, False
    return mixed, source_mask(mixed, x[0], x[1]), lam_eff, True


def resolve_output(path: str | Path) -> Path:
    """The file the gallery is written to: ``path`` itself, or ``path/gallery.png`` when ``path``
    is an existing directory or has no file extension (``--out DIR``)."""
    path = Path(path)
    if path.is_dir() or not path.suffix:
        return path / DEFAULT_FILENAME
    return path


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
    The panels wrap after ``max_columns`` columns. ``λ̄`` is each method's effective ratio. The
    mask row of an image-dependent method is :func:`source_mask` (where each pixel came from).
    ``path`` is a file, or a directory (existing, or a path without extension) that receives
    ``gallery.png``; the path actually written is returned.
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
    for slot, (name, mixed, mask, lam_eff, derived) in enumerate(panels, start=1):
        top, col = 2 * (slot // cols), slot % cols
        axes[top, col].imshow(mixed.clamp(0, 1).permute(1, 2, 0).numpy())
        axes[top, col].set_title(f"{name}  λ̄ = {lam_eff:.2f}", fontsize=10)
        axes[top + 1, col].imshow(mask.numpy(), cmap="gray", vmin=0, vmax=1)
        label = "mask M (white = A)" if derived is False else "pixel source (white = A)"
        axes[top + 1, col].set_title(label, fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():  # a thin frame, so white masks show their extent
            spine.set_visible(bool(ax.images))
            spine.set_color("0.75")
            spine.set_linewidth(0.6)
    fig.suptitle(f"Mixed sample data augmentation as masks: λ = {lam}, HMix r = {r}", fontsize=11)
    fig.tight_layout()
    path = resolve_output(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path
