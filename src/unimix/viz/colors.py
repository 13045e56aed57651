"""One colour per method in every figure of unimix (curves, robustness, reliability, profiles)."""

from __future__ import annotations

import zlib

__all__ = ["METHOD_COLORS", "method_color"]

#: Fixed colours of the paper's methods; no mixing is dark grey.
METHOD_COLORS: dict[str, str] = {
    "none": "0.25",
    "mixup": "C0",
    "cutmix": "C1",
    "hmix": "C2",
    "gmix": "C3",
}
_OTHERS = ("C4", "C5", "C6", "C7", "C8", "C9")


def method_color(label: str) -> str:
    """The colour of a method label (``"hmix"``, ``"hmix[alpha=0.2]"`` and ``"hmix (r=0.5)"``
    share HMix's colour); other methods get a stable colour from their name."""
    name = label.split("[")[0].split("(")[0].strip().lower()
    if name in METHOD_COLORS:
        return METHOD_COLORS[name]
    return _OTHERS[zlib.crc32(name.encode()) % len(_OTHERS)]
