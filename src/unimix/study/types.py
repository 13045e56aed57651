"""The study's shared types and constants: what the runner produces and the report reads.

Both :mod:`unimix.study.runner` and :mod:`unimix.study.report` import from here and never from
each other, so the study has no import cycle.
"""

from __future__ import annotations

import math
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "CLAIM_COLUMNS",
    "MIXING_KEYS",
    "PAPER_METHODS",
    "RESULT_COLUMNS",
    "TIMING_COLUMNS",
    "T_BOUNDS",
    "StudyConfig",
    "StudyRun",
    "replicate_seeds",
    "software_versions",
]

#: The methods of the paper's comparison, with no mixing as the baseline.
PAPER_METHODS: tuple[str, ...] = ("none", "mixup", "cutmix", "hmix", "gmix")

#: Columns of ``results.csv``: one row per regime × method × setting × seed. Errors, accuracies
#: and ECE are percentages; ``nll_ts``/``ece_ts`` are after temperature scaling (the temperature,
#: one scalar per model, fitted on the validation split).
RESULT_COLUMNS: tuple[str, ...] = (
    "regime",
    "train_size",
    "val_size",
    "test_size",
    "method",
    "setting",
    "replicate",
    "split_seed",
    "seed",
    "top1_error",
    "top5_error",
    "nll",
    "ece",
    "temperature",
    "nll_ts",
    "ece_ts",
    "fgsm_accuracy",
    "pgd_accuracy",
    "occlusion_accuracy",
    "train_time_s",
    "time_per_epoch_s",
    "images_per_s",
    "mix_overhead_pct",
    "epochs",
    "attack_eps",
    "val_error",
    "val_nll",
    "temperature_at_bound",
    "mix_ms_per_batch",
    "step_ms_per_batch",
    "timm_mixup_ms_per_batch",
    "mix_share_pct",
)

#: Columns that measure time: they differ from one machine (or session) to the next.
TIMING_COLUMNS: frozenset[str] = frozenset(
    {
        "train_time_s",
        "time_per_epoch_s",
        "images_per_s",
        "mix_overhead_pct",
        "mix_ms_per_batch",
        "step_ms_per_batch",
        "timm_mixup_ms_per_batch",
        "mix_share_pct",
    }
)

#: The study's temperature search interval. On a small validation split that the model classifies
#: (almost) perfectly the NLL keeps falling as T → 0, so an unbounded fit runs away and the
#: "T-scaled" test NLL explodes; the fit is confined to [0.2, 5] (models trained on mixed labels
#: are under-confident and want T near 0.5, so the lower end leaves them room) and a run whose T
#: lands on either end is flagged (``temperature_at_bound``) and counted in the report.
T_BOUNDS = (0.2, 5.0)
#: Columns of ``claims.csv`` (one row per claim line: a regime, a metric, a pair of methods).
CLAIM_COLUMNS: tuple[str, ...] = (
    "claim",
    "regime",
    "metric",
    "method_a",
    "method_b",
    "mean_diff",
    "ci_low",
    "ci_high",
    "seeds",
    "verdict",
    "p_value",
    "p_adjusted",
    "family",
)

#: Training keys that only change how images are mixed: a run without mixing ignores them, so a
#: grid over them trains ``none`` once.
MIXING_KEYS: frozenset[str] = frozenset(
    {
        "alpha",
        "mode",
        "mix_prob",
        "switch_prob",
        "partner",
        "method_params",
        "mix_where",
        "label_weight",
    }
)


@dataclass
class StudyConfig:
    """What the study compares and how.

    ``recipe`` is a packaged recipe name or a YAML file (the training budget and, under its
    ``study:`` key, the regimes); ``regimes`` picks some of them (``None``: the recipe's
    default list); ``overrides`` are ``key=value`` strings applied on top of every regime;
    ``grid`` maps a training key or method parameter to the values to sweep (every combination
    is trained for every method that takes the keys). ``attack_eps`` is the ε (pixel units) of
    the FGSM/PGD columns of ``results.csv``; ``eps_list`` the radii of the robustness curves.
    ``executor``, ``workers``, ``max_retries``, ``ray_address`` and the ``slurm_*``/``gpus_per_run``
    settings say where the runs execute (:mod:`unimix.study.execute`); they never change a result.
    ``workers=None`` means one per CPU core (CPU runs) or per visible GPU (CUDA runs).
    ``threads`` is the number of CPU threads of torch during the study (``None``: the recipe's,
    else torch's default). ``seeds``, ``pgd_steps``, ``eps_list``, ``attack_images`` and
    ``threads`` left ``None`` take the recipe's
    ``study:`` values (else 3 seeds, 10 PGD steps, ε ∈ {2, 4, 8, 16}/255, every test image). ``attack_images``: the attacks
    and occlusion run on the first that many test images (``None``: the recipe's ``study:
    attack_images``, else all); error, NLL and ECE always use the whole test set.
    """

    out: Path = Path("study")
    methods: list[str] = field(default_factory=lambda: list(PAPER_METHODS))
    seeds: int | None = None
    base_seed: int = 0
    recipe: str = "digits"
    overrides: list[str] = field(default_factory=list)
    regimes: list[str] | None = None
    grid: dict[str, list[Any]] = field(default_factory=dict)
    device: str = "auto"
    eps_list: list[float] | None = None
    attack_eps: float = 8 / 255
    pgd_steps: int | None = None
    occlusion_size: int | None = None
    attack_images: int | None = None
    threads: int | None = None
    progress: bool = True
    fresh: bool = False
    # How the runs execute (never part of the results: see unimix.study.execute).
    executor: str = "local"
    workers: int | None = 1
    max_retries: int = 2
    ray_address: str | None = None
    slurm_partition: str | None = None
    slurm_time: int = 240
    gpus_per_run: int | None = None
    slurm_options: dict[str, str] = field(default_factory=dict)
    slurm_cluster: str | None = None
    # The claims: the confirmatory family and predicted directions (None: the recipe's).
    confirmatory: list[str] | None = None
    predicted: dict[str, str] | None = None
    cost_threshold_pct: float = 5.0  # the cost claim's threshold (the recipe's, with its reason)
    quick: bool = False  # a smoke run: the report says so and names no best method
    sequential: bool = False  # replicates were added to a finished study (set by the runner)

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        if not self.methods:
            raise ValueError("methods must name at least one method, e.g. --methods none,mixup")
        if len(set(self.methods)) != len(self.methods):
            raise ValueError(f"methods lists a method twice: {self.methods}")
        from unimix.registry import lookup

        for name in self.methods:
            lookup(name)  # the registry's one wording of an unknown name, listing the known ones
        if self.seeds is not None and (
            isinstance(self.seeds, bool) or not isinstance(self.seeds, int) or self.seeds < 1
        ):
            raise ValueError(
                f"seeds must be a positive int (the number of seeds), got {self.seeds!r}"
            )
        if (
            isinstance(self.base_seed, bool)
            or not isinstance(self.base_seed, int)
            or (self.base_seed < 0)
        ):
            raise ValueError(f"base_seed must be an int >= 0 (--base-seed), got {self.base_seed!r}")
        if self.eps_list is not None and self.attack_eps not in self.eps_list:
            self.eps_list = sorted({*self.eps_list, self.attack_eps})
        if self.pgd_steps is not None and (
            isinstance(self.pgd_steps, bool)
            or not isinstance(self.pgd_steps, int)
            or (self.pgd_steps < 1)
        ):
            raise ValueError(f"pgd_steps must be an int >= 1, got {self.pgd_steps!r}")
        if self.attack_images is not None and (
            isinstance(self.attack_images, bool)
            or not isinstance(self.attack_images, int)
            or self.attack_images < 1
        ):
            raise ValueError(f"attack_images must be a positive int, got {self.attack_images!r}")
        if self.threads is not None and (
            isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 1
        ):
            raise ValueError(f"threads must be a positive int, got {self.threads!r}")
        if self.executor not in ("local", "ray", "slurm"):
            raise ValueError(
                f"executor must be local, ray or slurm, got {self.executor!r} (--executor)"
            )
        for name in ("workers", "slurm_time", "gpus_per_run"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool)
                or not isinstance(value, int)
                or value < (name != "gpus_per_run")
            ):
                flag = "--" + name.replace("_", "-")
                raise ValueError(f"{name} must be a positive int ({flag}), got {value!r}")
        if (
            isinstance(self.max_retries, bool)
            or not isinstance(self.max_retries, int)
            or (self.max_retries < 0)
        ):
            raise ValueError(f"max_retries must be an int >= 0, got {self.max_retries!r}")
        if self.slurm_cluster not in (None, "slurm", "local", "debug"):
            raise ValueError(
                f"slurm_cluster must be slurm, local or debug, got {self.slurm_cluster!r}"
            )
        if self.regimes is not None and not self.regimes:
            raise ValueError("regimes must name at least one regime, e.g. --regimes low")
        for key, values in self.grid.items():
            if not isinstance(values, list) or not values:
                raise ValueError(f"grid {key!r} needs at least one value, e.g. --grid {key}=A,B")

    def resolve(self, section: dict[str, Any]) -> None:
        """Fill the settings left ``None`` from a recipe's ``study:`` section, then defaults.

        Every value taken from the section is checked here, before any work: a bad one is a
        ValueError naming ``study.<key>`` and what it must be.
        """
        if self.pgd_steps is None:
            self.pgd_steps = section_int(section, "pgd_steps", 10, low=1)
        if self.eps_list is None:
            eps = section.get("eps_list")
            if eps is not None and not isinstance(eps, list):
                eps = [eps]
            self.eps_list = (
                [_section_eps(e) for e in eps] if eps else [2 / 255, 4 / 255, 8 / 255, 16 / 255]
            )
            if self.attack_eps not in self.eps_list:
                self.eps_list = sorted({*self.eps_list, self.attack_eps})
        if self.attack_images is None and section.get("attack_images") is not None:
            self.attack_images = section_int(section, "attack_images", None, low=1)
        if self.confirmatory is None:
            declared = section.get("confirmatory")
            if declared is not None and (
                not isinstance(declared, list) or not all(isinstance(c, str) for c in declared)
            ):
                raise ValueError(
                    f"study.confirmatory must be a list of claim names, got {declared!r}"
                )
            self.confirmatory = list(declared) if declared else None
        if self.predicted is None and section.get("predicted"):
            self.predicted = _section_predicted(section["predicted"])
        if section.get("cost_threshold_pct") is not None:
            value = section["cost_threshold_pct"]
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not (math.isfinite(value) and value > 0)
            ):
                raise ValueError(
                    f"study.cost_threshold_pct must be a number > 0 (a percentage), got {value!r}"
                )
            self.cost_threshold_pct = float(value)
        if self.threads is None and section.get("threads") is not None:
            self.threads = section_int(section, "threads", None, low=1)
        if self.threads is None and not self.device.startswith("cuda"):
            self.threads = (
                1  # one thread per run, on every executor: the same arithmetic everywhere
            )

    def to_dict(self) -> dict[str, Any]:
        """The settings that decide the results (``out``, ``progress``, ``fresh`` excluded)."""
        return {
            "methods": list(self.methods),
            "seeds": self.seeds,
            "base_seed": self.base_seed,
            "recipe": self.recipe,
            "overrides": list(self.overrides),
            "regimes": None if self.regimes is None else list(self.regimes),
            "grid": {k: list(v) for k, v in self.grid.items()},
            "device": self.device,
            "eps_list": list(self.eps_list or []),
            "attack_eps": self.attack_eps,
            "pgd_steps": self.pgd_steps,
            "occlusion_size": self.occlusion_size,
            "attack_images": self.attack_images,
            "quick": self.quick,
        }


def _eps(value: Any) -> float:
    """``8/255`` (a string in YAML) or a number."""
    if isinstance(value, str) and "/" in value:
        num, den = value.split("/", 1)
        return float(num) / float(den)
    return float(value)


def _section_eps(value: Any) -> float:
    """An attack radius of ``study.eps_list``: a finite number >= 0 or a fraction like 8/255."""
    try:
        eps = None if isinstance(value, bool) else _eps(value)
    except (TypeError, ValueError, ZeroDivisionError):
        eps = None
    if eps is None or not math.isfinite(eps) or eps < 0:
        raise ValueError(
            f"study.eps_list holds {value!r}; each radius must be a finite number >= 0 or a "
            "fraction such as 8/255"
        )
    return eps


def section_int(section: dict[str, Any], key: str, default: int | None, *, low: int) -> int:
    """``section[key]`` (``default`` when absent) as an int >= ``low``, else a ValueError
    naming ``study.<key>``."""
    value = section.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"study.{key} of the recipe must be an int >= {low}, got {value!r}")
    return value


def _section_predicted(value: Any) -> dict[str, str]:
    """``study.predicted``: claim → the method predicted better (only ``mixup_vs_cutmix``)."""
    if not isinstance(value, dict):
        raise ValueError(f"study.predicted must map a claim to a method, got {value!r}")
    out = {str(k): str(v) for k, v in value.items()}
    unknown = sorted(set(out) - {"mixup_vs_cutmix"})
    if unknown:
        raise ValueError(
            f"study.predicted names {', '.join(map(repr, unknown))}; only mixup_vs_cutmix takes "
            "a predicted winner"
        )
    if out.get("mixup_vs_cutmix", "mixup") not in ("mixup", "cutmix"):
        raise ValueError(
            "study.predicted.mixup_vs_cutmix must be mixup or cutmix, got "
            f"{out['mixup_vs_cutmix']!r}"
        )
    return out


@dataclass
class StudyRun:
    """One regime × method × setting × replicate: its training configuration and directory.

    A replicate redraws what varies in practice: the train/validation split (``split_seed``) and
    the initialisation and data order (``seed``), both derived from the study's base seed and the
    replicate's index (:func:`replicate_seeds`); every method of a replicate shares them."""

    method: str
    seed: int
    config: Any  # unimix.train.TrainConfig
    run_dir: Path
    regime: str = ""
    setting: str = ""
    base_setting: str = ""  # the part of ``setting`` that a run without mixing shares
    replicate: int = 0  # the replicate: its own train/validation draw and initialisation
    split_seed: int = 0

    @property
    def name(self) -> str:
        setting = f"-{self.setting}" if self.setting else ""
        regime = f"{self.regime}/" if self.regime else ""
        return f"{regime}{self.method}{setting}-rep{self.replicate}"

    @property
    def variant(self) -> str:
        """Method and setting, the unit that the claims compare (``hmix`` or ``hmix[alpha=0.2]``)."""
        return f"{self.method}[{self.setting}]" if self.setting else self.method

    @property
    def eval_path(self) -> Path:
        return self.run_dir / "evaluation.json"

    @property
    def calibration_path(self) -> Path:
        return self.run_dir / "calibration.json"

    def done(self) -> bool:
        return self.eval_path.exists() and self.calibration_path.exists()


def replicate_seeds(base_seed: int, replicate: int) -> tuple[int, int]:
    """``(split_seed, seed)`` of replicate ``replicate`` of a study with base seed ``base_seed``.

    Drawn from :class:`numpy.random.SeedSequence` keyed by ``(base_seed, replicate)``: independent
    for every pair, so another base seed moves every draw to an independent set.
    """
    import numpy as np

    split_seed, seed = np.random.SeedSequence([base_seed, replicate]).generate_state(2)
    return int(split_seed) % 2**31, int(seed) % 2**31


def software_versions() -> dict[str, str]:
    """Versions of Python, the platform and the packages the study used."""
    from importlib import metadata

    import torch

    versions = {"python": sys.version.split()[0], "platform": platform.platform()}
    for pkg in ("unimix", "torch", "numpy", "scikit-learn", "matplotlib", "torchvision", "timm"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    versions["torch_threads"] = str(torch.get_num_threads())
    versions["cuda"] = torch.version.cuda or "none"
    return versions
