"""The study: train and evaluate a classifier with each MSDA method, then compare them.

``unimix study`` runs it from the command line; :func:`run_study` from Python. See
:mod:`unimix.study.runner` (the runs, resumable) and :mod:`unimix.study.report` (summary, the
paper's claims, plots, Markdown and HTML).
"""

from unimix.study.report import Claim, check_claims, summarize, write_report
from unimix.study.runner import (
    PAPER_METHODS,
    RESULT_COLUMNS,
    TIMING_COLUMNS,
    StudyConfig,
    StudyRun,
    plan_runs,
    read_results,
    run_study,
    software_versions,
)

__all__ = [
    "PAPER_METHODS",
    "RESULT_COLUMNS",
    "TIMING_COLUMNS",
    "Claim",
    "StudyConfig",
    "StudyRun",
    "check_claims",
    "plan_runs",
    "read_results",
    "run_study",
    "software_versions",
    "summarize",
    "write_report",
]
