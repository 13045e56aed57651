"""GridMix: random grid patches from the partner.

Baek, Bang & Shim, "GridMix: Strong regularization through local context mapping" (Pattern
Recognition 110, 2021).
"""

from __future__ import annotations

import torch

from unimix.checks import check_int_range
from unimix.masks import MaskSample, MaskSampler
from unimix.registry import register

__all__ = ["GridMix"]


@register("gridmix")
class GridMix(MaskSampler):
    """GridMix (Baek et al., Pattern Recognition 2021): an ``N×N`` grid of cells, each cell taken
    whole from one of the two images.

    The image is cut into ``N`` rows and ``N`` columns of cells (cell ``j`` starts at row ``⌈jH/N⌉`` and column
    ``⌈jW/N⌉``, so any ``H×W`` works); each cell keeps the first image with probability ``λ`` and
    shows the partner otherwise, independently. The mask is binary and ``λ̄ = mean(M)`` is the
    fraction of pixels kept (``E[λ̄] = λ`` when ``N`` divides ``H`` and ``W``). ``grid`` is ``N``,
    or a range ``(N_min, N_max)`` from which ``N`` is drawn uniformly per mask. The default
    ``N = 4`` is the setting described for CIFAR in the paper as recalled here; check it against
    the paper before relying on it for a reproduction.

    Deviation: the paper trains with an extra *local context mapping* loss (a patch-level head
    predicting each cell's label); that needs a model head and is not part of this sampler. The
    masks it returns are what such a head would need.
    """

    def __init__(self, grid: int | tuple[int, int] = 4) -> None:
        lo, hi = check_int_range("grid", grid)
        self.grid = (lo, hi) if lo != hi else lo

    def sample(self, lam, height, width, device, generator):
        n = lam.shape[0]
        lo, hi = (self.grid, self.grid) if isinstance(self.grid, int) else self.grid
        cells = torch.randint(lo, hi + 1, (n,), generator=generator, device=lam.device)
        keep = torch.rand(n, hi, hi, generator=generator, device=lam.device) < lam[:, None, None]
        cells, keep = cells.to(device), keep.to(device)
        # cell of each row / column, per mask (N differs between masks)
        row_cell = (torch.arange(height, device=device) * cells[:, None]) // height
        col_cell = (torch.arange(width, device=device) * cells[:, None]) // width
        batch = torch.arange(n, device=device)[:, None, None]
        masks = keep[batch, row_cell[:, :, None], col_cell[:, None, :]].unsqueeze(1).float()
        return MaskSample(masks, masks.mean(dim=(1, 2, 3)), binary=True)
