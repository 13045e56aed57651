"""The study: train and evaluate a classifier with each MSDA method, then compare them.

``unimix study`` runs it from the command line; :func:`run_study` from Python. Modules:
:mod:`unimix.study.types` (shared types and column names), :mod:`unimix.study.runner` (the runs,
resumable, the study directory's record), :mod:`unimix.study.stats` (paired statistics),
:mod:`unimix.study.report` (claims, tables, figures) and :mod:`unimix.study.document` (one
document rendered to Markdown and HTML). The runner and the report only share
:mod:`unimix.study.types`; neither imports the other at module level.
"""

from unimix.study.report import Claim, ClaimLine, check_claims, summarize, write_report
from unimix.study.runner import (
    check_same_start,
    parse_grid,
    plan_runs,
    read_results,
    run_study,
)
from unimix.study.stats import paired_difference, seeds_to_resolve, spearman
from unimix.study.types import (
    CLAIM_COLUMNS,
    PAPER_METHODS,
    RESULT_COLUMNS,
    TIMING_COLUMNS,
    StudyConfig,
    StudyRun,
    software_versions,
)

__all__ = [
    "CLAIM_COLUMNS",
    "PAPER_METHODS",
    "RESULT_COLUMNS",
    "TIMING_COLUMNS",
    "Claim",
    "ClaimLine",
    "StudyConfig",
    "StudyRun",
    "check_claims",
    "check_same_start",
    "paired_difference",
    "parse_grid",
    "plan_runs",
    "read_results",
    "run_study",
    "seeds_to_resolve",
    "software_versions",
    "spearman",
    "summarize",
    "write_report",
]
