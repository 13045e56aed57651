"""Hypothesis strategy for mixers of mask methods only: the plans the uint8 row kernels take
(``unimix.collate_kernels``, ``unimix.collate_fused``), shared by their tests."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

MASK_METHOD_LISTS = [
    ["mixup"],
    ["cutmix"],
    ["hmix"],
    ["gmix"],
    ["mixup", "cutmix"],
    ["hmix", "gmix", "mixup"],
    ["gridmix"],
    ["gridmix", "fmix"],
    ["fmix", "smoothmix"],
    ["cutmix_minmax", "none"],
    ["mixup", "none"],
]


def mask_mixers() -> st.SearchStrategy[dict[str, Any]]:
    """``Mixer`` arguments: mask methods, a mode, a partner rule and a mixing probability."""
    return st.fixed_dictionaries(
        {
            "methods": st.sampled_from(MASK_METHOD_LISTS),
            "mode": st.sampled_from(["batch", "pair", "elem"]),
            "partner": st.sampled_from(["flip", "random"]),
            "prob": st.sampled_from([1.0, 0.5]),
        }
    )
