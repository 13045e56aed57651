"""Locality-controlled tasks built from the embedded digits (no download): where the label lives.

Both tasks place *native-resolution* 8×8 digits (no upsampling: masks and content keep their
scale) on a ``canvas``×``canvas`` black canvas (32 by default). The 1797 digits are first split,
stratified, into disjoint train / validation / test *digit pools* (``split_seed``: a replicate
redraws the pools and every composition), and each split's images are composed from its own
pool only, so no test digit is ever seen in training.

- ``digits_local`` — **a local cue.** One digit at a uniformly random position; three
  *distractor strokes* (a random half — top, bottom, left or right 4 pixels — of other digits of
  the same pool) at random positions that do not overlap the digit's box. Label: the digit.
  Everything the label depends on lies within an 8×8 box.
- ``digits_pair`` — **a long-range cue.** One digit cut in two: its top half (rows 0–3) within
  the top-left 12×12 corner, its bottom half within the bottom-right one (at 32×32 the halves
  are 16–32 pixels apart per axis). Label: the digit. Each half alone is ambiguous (the tops
  of 1/7, of 3/2/8, …): the label needs two regions far apart. (Relational rules over two
  whole digits — same digit or not, ``(a + b) mod 2``: ``pair_rule`` — stayed at chance for the
  small CNN in 8 epochs of 2000 images, so they are options, not the default.)

``digits`` (8×8 upsampled to the whole image) is the third, *global* cue.

Composition is one seeded :class:`torch.Generator` per split, so a dataset is a pure function of
``(task, split_seed, sizes)``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from unimix.data.base import DataSpec, TensorImageDataset
from unimix.data.digits import _split, carve_validation, load_digits_images
from unimix.data.transforms import RandomShiftFlip

__all__ = ["DIGIT_TASKS", "build_digit_task", "compose_local", "compose_pair"]

#: The locality-controlled tasks this module builds.
DIGIT_TASKS = ("digits_local", "digits_pair")
SIDE = 8
N_DISTRACTORS = 3


def _paste(canvas: Tensor, patch: Tensor, y: Tensor, x: Tensor) -> None:
    """Add ``patch [N, 8, 8]`` into ``canvas [N, H, W]`` at per-image offsets (max blend)."""
    n = canvas.shape[0]
    ar = torch.arange(SIDE)
    rows = (y[:, None] + ar[None, :])[:, :, None].expand(n, SIDE, SIDE)
    cols = (x[:, None] + ar[None, :])[:, None, :].expand(n, SIDE, SIDE)
    idx = torch.arange(n)[:, None, None].expand(n, SIDE, SIDE)
    canvas[idx, rows, cols] = torch.maximum(canvas[idx, rows, cols], patch)


def compose_local(
    pool_x: Tensor, pool_y: Tensor, n: int, canvas: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """``n`` ``digits_local`` images ``[n, 1, canvas, canvas]`` and labels from a digit pool."""
    g = generator
    k = pool_x.shape[0]
    pick = torch.randint(k, (n,), generator=g)
    span = canvas - SIDE + 1
    out = torch.zeros(n, canvas, canvas)
    y0 = torch.randint(span, (n,), generator=g)
    x0 = torch.randint(span, (n,), generator=g)
    _paste(out, pool_x[pick, 0], y0, x0)
    for _ in range(N_DISTRACTORS):
        other = pool_x[torch.randint(k, (n,), generator=g), 0].clone()
        half = torch.randint(4, (n,), generator=g)
        keep = torch.ones(n, SIDE, SIDE)
        keep[half == 0, SIDE // 2 :, :] = 0
        keep[half == 1, : SIDE // 2, :] = 0
        keep[half == 2, :, SIDE // 2 :] = 0
        keep[half == 3, :, : SIDE // 2] = 0
        # a position whose box does not overlap the digit's: redraw the clashing ones (vectorised)
        y = torch.randint(span, (n,), generator=g)
        x = torch.randint(span, (n,), generator=g)
        for _ in range(64):
            clash = ((y - y0).abs() < SIDE) & ((x - x0).abs() < SIDE)
            if not bool(clash.any()):
                break
            y = torch.where(clash, torch.randint(span, (n,), generator=g), y)
            x = torch.where(clash, torch.randint(span, (n,), generator=g), x)
        clash = ((y - y0).abs() < SIDE) & ((x - x0).abs() < SIDE)
        _paste(out, other * keep * (~clash)[:, None, None], y, x)
    return out.unsqueeze(1), pool_y[pick].clone()


def compose_pair(
    pool_x: Tensor,
    pool_y: Tensor,
    n: int,
    canvas: int,
    generator: torch.Generator,
    rule: str = "split",
) -> tuple[Tensor, Tensor]:
    """``n`` ``digits_pair`` images and labels by ``rule``: ``"split"`` — one digit cut in two, its
    top half in the top-left corner, its bottom half in the bottom-right one, label the digit;
    or two digits ``a`` (top-left) and ``b`` (bottom-right) with
    ``"same"`` — 1 when ``a`` and ``b`` are the same digit (drawn so half of the pairs are),
    ``"parity"`` — ``(a + b) mod 2``."""
    g = generator
    k = pool_x.shape[0]
    a = torch.randint(k, (n,), generator=g)
    b = torch.randint(k, (n,), generator=g)
    if rule == "split":
        # one digit cut in two: its top half in the top-left corner, its bottom half in the
        # bottom-right one (each half alone is ambiguous between digits)
        out = torch.zeros(n, canvas, canvas)
        top = pool_x[a, 0].clone()
        top[:, SIDE // 2 :, :] = 0
        bottom = pool_x[a, 0].clone()
        bottom[:, : SIDE // 2, :] = 0
        corner = max(1, canvas * 3 // 8 - SIDE + 1)
        _paste(out, top, torch.randint(corner, (n,), generator=g),
               torch.randint(corner, (n,), generator=g))  # fmt: skip
        far = canvas - SIDE - torch.randint(corner, (2, n), generator=g)
        _paste(out, bottom, far[0], far[1])
        return out.unsqueeze(1), pool_y[a].clone()
    if rule == "same":
        # half of the pairs: b redrawn among the pool images of a's class (one gather)
        same = torch.rand(n, generator=g) < 0.5
        order = torch.argsort(pool_y, stable=True)
        counts = torch.bincount(pool_y, minlength=10)
        starts = torch.cumsum(counts, 0) - counts
        cls = pool_y[a]
        pick = starts[cls] + (torch.rand(n, generator=g) * counts[cls]).long()
        b = torch.where(same, order[pick], b)
    corner = max(1, canvas * 3 // 8 - SIDE + 1)  # 12×12 corner at 32: offsets 0..4
    out = torch.zeros(n, canvas, canvas)
    _paste(out, pool_x[a, 0], torch.randint(corner, (n,), generator=g),
           torch.randint(corner, (n,), generator=g))  # fmt: skip
    far = canvas - SIDE - torch.randint(corner, (2, n), generator=g)
    _paste(out, pool_x[b, 0], far[0], far[1])
    if rule == "same":
        return out.unsqueeze(1), (pool_y[a] == pool_y[b]).long()
    if rule == "parity":
        return out.unsqueeze(1), (pool_y[a] + pool_y[b]) % 2
    raise ValueError(f"rule must be 'split', 'same' or 'parity', got {rule!r}")


def _canvas_side(task: str, image_size: int | tuple[int, int] | None) -> int:
    """The square canvas side of ``task`` (default 32, at least 24)."""
    side = 32 if image_size is None else image_size
    if isinstance(side, tuple):
        if side[0] != side[1]:
            raise ValueError(f"image_size of {task} must be square, got {side}")
        side = side[0]
    if isinstance(side, bool) or not isinstance(side, int) or side < 24:
        raise ValueError(f"image_size of {task} must be an int >= 24, got {side!r}")
    return side


def _composition(task: str, pair_rule: str) -> tuple[Any, int, tuple[str, ...]]:
    """``task``'s composer ``(pool images, pool labels, n, side, generator) → (x, y)``, its
    number of classes and their names."""
    if task == "digits_local":
        return compose_local, 10, tuple(str(d) for d in range(10))
    if pair_rule not in ("split", "same", "parity"):
        raise ValueError(f"pair_rule must be 'split', 'same' or 'parity', got {pair_rule!r}")

    def compose(px: Tensor, py: Tensor, n: int, c: int, g: torch.Generator) -> Any:
        return compose_pair(px, py, n, c, g, pair_rule)

    classes = {"split": tuple(str(d) for d in range(10)), "same": ("different", "same"),
               "parity": ("even", "odd")}[pair_rule]  # fmt: skip
    return compose, 10 if pair_rule == "split" else 2, classes


def build_digit_task(
    task: str,
    image_size: int | tuple[int, int] | None = None,
    split_seed: int = 0,
    train_augment: bool = True,
    n_train: int = 2000,
    n_test: int = 2000,
    val_fraction: float = 0.0,
    test_size: float = 0.3,
    pair_rule: str = "split",
) -> DataSpec:
    """The :class:`DataSpec` of ``digits_local`` or ``digits_pair`` (see the module docstring).

    Args:
        task: ``"digits_local"`` or ``"digits_pair"``.
        image_size: canvas side (square; default 32, at least 24).
        split_seed: seed of the digit pools and of every composition (a replicate's draw).
        train_augment: a random translation by up to 1 pixel (label-preserving for both tasks).
        n_train, n_test: composed training and test images; validation gets
            ``round(val_fraction · n_train)`` more, composed from its own digit pool.
        val_fraction: share of the training digit pool held out for validation (0: none).
        test_size: share of the 1797 digits in the test pool.
        pair_rule: ``digits_pair``'s label: ``"split"`` (one digit cut in two halves far apart),
            ``"same"`` (two digits, same or not) or ``"parity"`` (``(a + b) mod 2``).
    """
    if task not in DIGIT_TASKS:
        raise ValueError(f"task must be one of {DIGIT_TASKS}, got {task!r}")
    side = _canvas_side(task, image_size)
    for name, v in (("n_train", n_train), ("n_test", n_test)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 10:
            raise ValueError(f"{name} must be an int >= 10, got {v!r}")
    images, labels = load_digits_images()
    train_idx, test_idx = _split(labels, float(test_size), int(split_seed))
    train_idx, val_idx = carve_validation(labels, train_idx, val_fraction, int(split_seed))
    compose, num_classes, classes = _composition(task, pair_rule)

    def make(idx: list[int], n: int, salt: int) -> tuple[Tensor, Tensor]:
        g = torch.Generator().manual_seed(int(split_seed) * 1_000_003 + salt)
        sel = torch.as_tensor(idx, dtype=torch.long)
        return compose(images[sel], labels[sel], n, side, g)

    train_x, train_y = make(train_idx, n_train, 1)
    test_x, test_y = make(test_idx, n_test, 2)
    mean, std = train_x.mean().item(), train_x.std().item()
    augment = RandomShiftFlip(1, flip=False) if train_augment else None
    train = TensorImageDataset(train_x, train_y, (mean,), (std,), augment, None, classes)
    test = TensorImageDataset(test_x, test_y, (mean,), (std,), None, None, classes)
    val = None
    if val_idx:
        val_x, val_y = make(val_idx, max(10, round(val_fraction * n_train)), 3)
        val = TensorImageDataset(val_x, val_y, (mean,), (std,), None, None, classes)
    return DataSpec(
        train=train,
        test=test,
        num_classes=num_classes,
        in_chans=1,
        image_size=(side, side),
        mean=(mean,),
        std=(std,),
        name=task,
        classes=classes,
        root=None,
        info={
            "split_seed": int(split_seed),
            "n_train": n_train,
            "n_test": n_test,
            "val_fraction": float(val_fraction),
            "label_rule": "the digit" if task == "digits_local" else pair_rule,
        },
        val=val,
    )
