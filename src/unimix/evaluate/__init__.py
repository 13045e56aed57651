"""Evaluation of trained classifiers: error, NLL, calibration, adversarial and occlusion robustness.

- :mod:`~unimix.evaluate.metrics`: top-k error, NLL, expected calibration error and reliability data;
- :mod:`~unimix.evaluate.attacks`: FGSM and L∞ PGD in pixel space for normalised-input models;
- :mod:`~unimix.evaluate.occlusion`: random CutOut-style occluding patches;
- :mod:`~unimix.evaluate.evaluate`: :func:`evaluate_model` -> :class:`EvalResult`, :func:`format_table`.
"""

from unimix.evaluate.attacks import fgsm, pgd
from unimix.evaluate.evaluate import (
    DEFAULT_EPS,
    EvalResult,
    as_result,
    evaluate_model,
    format_eps,
    format_table,
)
from unimix.evaluate.metrics import (
    ReliabilityDiagram,
    expected_calibration_error,
    nll,
    reliability_diagram,
    topk_correct,
    topk_error,
)
from unimix.evaluate.occlusion import random_occlusion
from unimix.evaluate.run import evaluate_run

__all__ = [
    "evaluate_run",
    "DEFAULT_EPS",
    "EvalResult",
    "ReliabilityDiagram",
    "as_result",
    "evaluate_model",
    "expected_calibration_error",
    "fgsm",
    "format_eps",
    "format_table",
    "nll",
    "pgd",
    "random_occlusion",
    "reliability_diagram",
    "topk_correct",
    "topk_error",
]
