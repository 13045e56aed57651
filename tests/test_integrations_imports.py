"""The integrations load their library only when imported, and name the extra when it is missing."""

from __future__ import annotations

import json
import subprocess
import sys

CHECK = r"""
import importlib, json, sys
import unimix, unimix.compat, unimix.integrations
heavy = ["timm", "torchvision", "lightning", "pytorch_lightning", "transformers"]
report = {"loaded": [m for m in heavy if m in sys.modules]}
cases = {
    "unimix.integrations.timm": (["timm"], "vision"),
    "unimix.integrations.torchvision": (["torchvision"], "vision"),
    "unimix.integrations.lightning": (["lightning", "pytorch_lightning"], "lightning"),
    "unimix.integrations.hf": (["transformers"], "hf"),
}
for module, (blocked, extra) in cases.items():
    for name in blocked:
        sys.modules[name] = None  # as if not installed
    try:
        importlib.import_module(module)
        report[module] = None
    except ImportError as error:
        report[module] = [str(error), extra]
    for name in blocked:
        del sys.modules[name]
sys.modules["timm"] = None
try:
    from unimix.compat import FastCollateMixup
    report["compat"] = None
except ImportError as error:
    report["compat"] = [str(error), "vision"]
print(json.dumps(report))
"""


def test_import_unimix_loads_no_integration_library_and_missing_extras_are_named():
    result = subprocess.run(
        [sys.executable, "-c", CHECK], capture_output=True, text=True, check=True, timeout=300
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report.pop("loaded") == []
    for module, outcome in report.items():
        assert outcome is not None, f"{module} imported without its library"
        message, extra = outcome
        assert f"pip install 'unimix[{extra}]'" in message, (module, message)
