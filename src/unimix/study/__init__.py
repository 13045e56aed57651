"""The study: train and evaluate a classifier with each MSDA method, then compare them.

``unimix study`` runs it from the command line; :func:`run_study` from Python. Modules:
:mod:`unimix.study.types` (shared types and column names), :mod:`unimix.study.runner` (the runs,
resumable, the study directory's record), :mod:`unimix.study.stats` (paired statistics),
:mod:`unimix.study.claims` (the claims, their families and corrections),
:mod:`unimix.study.execute` (local workers, Ray, SLURM), :mod:`unimix.study.report` (tables,
figures) and :mod:`unimix.study.document` (one
document rendered to Markdown and HTML). The runner and the report only share
:mod:`unimix.study.types`; neither imports the other at module level.
"""

from typing import TYPE_CHECKING

from unimix._lazy import lazy_getattr

if TYPE_CHECKING:  # imported on first use: `--help` needs no extra (the parts need yaml, tqdm …)
    from unimix.study.claims import Claim, ClaimLine, check_claims, summarize
    from unimix.study.execute import EXECUTORS, execute_runs
    from unimix.study.report import write_report
    from unimix.study.runner import (
        check_same_start,
        parse_grid,
        plan_runs,
        read_results,
        run_study,
    )
    from unimix.study.stats import (
        benjamini_hochberg,
        holm,
        minimum_detectable_effect,
        paired_difference,
        spearman,
    )
    from unimix.study.types import (
        CLAIM_COLUMNS,
        PAPER_METHODS,
        RESULT_COLUMNS,
        TIMING_COLUMNS,
        StudyConfig,
        StudyRun,
        replicate_seeds,
        software_versions,
    )

_LAZY = {
    "Claim": "unimix.study.claims",
    "ClaimLine": "unimix.study.claims",
    "check_claims": "unimix.study.claims",
    "summarize": "unimix.study.claims",
    "EXECUTORS": "unimix.study.execute",
    "execute_runs": "unimix.study.execute",
    "write_report": "unimix.study.report",
    "check_same_start": "unimix.study.runner",
    "parse_grid": "unimix.study.runner",
    "plan_runs": "unimix.study.runner",
    "read_results": "unimix.study.runner",
    "run_study": "unimix.study.runner",
    "benjamini_hochberg": "unimix.study.stats",
    "holm": "unimix.study.stats",
    "minimum_detectable_effect": "unimix.study.stats",
    "paired_difference": "unimix.study.stats",
    "spearman": "unimix.study.stats",
    "CLAIM_COLUMNS": "unimix.study.types",
    "PAPER_METHODS": "unimix.study.types",
    "RESULT_COLUMNS": "unimix.study.types",
    "TIMING_COLUMNS": "unimix.study.types",
    "StudyConfig": "unimix.study.types",
    "StudyRun": "unimix.study.types",
    "replicate_seeds": "unimix.study.types",
    "software_versions": "unimix.study.types",
}


__getattr__ = lazy_getattr(__name__, _LAZY)


__all__ = [
    "CLAIM_COLUMNS",
    "Claim",
    "ClaimLine",
    "EXECUTORS",
    "PAPER_METHODS",
    "RESULT_COLUMNS",
    "StudyConfig",
    "StudyRun",
    "TIMING_COLUMNS",
    "benjamini_hochberg",
    "check_claims",
    "check_same_start",
    "execute_runs",
    "holm",
    "minimum_detectable_effect",
    "paired_difference",
    "parse_grid",
    "plan_runs",
    "read_results",
    "replicate_seeds",
    "run_study",
    "software_versions",
    "spearman",
    "summarize",
    "write_report",
]
