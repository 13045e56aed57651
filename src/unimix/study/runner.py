"""Run the study: train and evaluate every method × seed on the same data and budget.

Each run lives in ``OUT/runs/<method>-seed<k>/`` (the trainer's run directory, plus
``evaluation.json``, as ``unimix evaluate`` writes it). A finished run is skipped, an interrupted one resumed, so a study can be stopped
and started again at any point; ``results.csv`` is rebuilt from the run directories at the end.
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from unimix.train.fileio import atomic_write_text

__all__ = [
    "PAPER_METHODS",
    "RESULT_COLUMNS",
    "TIMING_COLUMNS",
    "StudyConfig",
    "StudyRun",
    "plan_runs",
    "run_study",
    "read_results",
    "software_versions",
]

#: The methods of the paper's comparison, with no mixing as the baseline.
PAPER_METHODS: tuple[str, ...] = ("none", "mixup", "cutmix", "hmix", "gmix")

#: Columns of ``results.csv``: one row per method × seed. Errors and accuracies are percentages.
RESULT_COLUMNS: tuple[str, ...] = (
    "method",
    "seed",
    "top1_error",
    "top5_error",
    "nll",
    "ece",
    "fgsm_accuracy",
    "pgd_accuracy",
    "occlusion_accuracy",
    "train_time_s",
    "time_per_epoch_s",
    "images_per_s",
    "mix_overhead_pct",
    "epochs",
    "attack_eps",
)

#: Columns that measure time: they differ from one machine (or session) to the next.
TIMING_COLUMNS: frozenset[str] = frozenset(
    {"train_time_s", "time_per_epoch_s", "images_per_s", "mix_overhead_pct"}
)


@dataclass
class StudyConfig:
    """What the study compares and how.

    ``recipe`` is a packaged recipe name or a YAML file (the training budget); ``overrides`` are
    ``key=value`` strings applied on top of it for every run (``epochs``, ``dataset`` …).
    ``attack_eps`` is the ε (pixel units) of the FGSM/PGD columns of ``results.csv``;
    ``eps_list`` the radii of the robustness curves.
    """

    out: Path = Path("study")
    methods: list[str] = field(default_factory=lambda: list(PAPER_METHODS))
    seeds: int = 3
    recipe: str = "digits"
    overrides: list[str] = field(default_factory=list)
    device: str = "auto"
    eps_list: list[float] = field(
        default_factory=lambda: [1 / 255, 2 / 255, 4 / 255, 8 / 255, 16 / 255]
    )
    attack_eps: float = 8 / 255
    pgd_steps: int = 10
    occlusion_size: int | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        if not self.methods:
            raise ValueError("methods must name at least one method, e.g. --methods none,mixup")
        if len(set(self.methods)) != len(self.methods):
            raise ValueError(f"methods lists a method twice: {self.methods}")
        from unimix.mix import available_methods

        known = set(available_methods())
        for name in self.methods:
            if name not in known:
                raise ValueError(
                    f"unknown method {name!r} in methods; known methods: {', '.join(sorted(known))}"
                )
        if isinstance(self.seeds, bool) or not isinstance(self.seeds, int) or self.seeds < 1:
            raise ValueError(
                f"seeds must be a positive int (the number of seeds), got {self.seeds!r}"
            )
        if self.attack_eps not in self.eps_list:
            self.eps_list = sorted({*self.eps_list, self.attack_eps})
        if self.pgd_steps < 1:
            raise ValueError(f"pgd_steps must be >= 1, got {self.pgd_steps}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "methods": list(self.methods),
            "seeds": self.seeds,
            "recipe": self.recipe,
            "overrides": list(self.overrides),
            "device": self.device,
            "eps_list": list(self.eps_list),
            "attack_eps": self.attack_eps,
            "pgd_steps": self.pgd_steps,
            "occlusion_size": self.occlusion_size,
        }


@dataclass
class StudyRun:
    """One method × seed: its training configuration and directory."""

    method: str
    seed: int
    config: Any  # unimix.train.TrainConfig
    run_dir: Path

    @property
    def name(self) -> str:
        return f"{self.method}-seed{self.seed}"

    @property
    def eval_path(self) -> Path:
        return self.run_dir / "evaluation.json"

    def done(self) -> bool:
        return self.eval_path.exists()


def plan_runs(cfg: StudyConfig) -> list[StudyRun]:
    """Every method × seed with its resolved training configuration (seed-major order, so that a
    partial study already compares every method)."""
    from unimix.train import resolve_config

    runs = []
    for seed in range(cfg.seeds):
        for method in cfg.methods:
            overrides = [*cfg.overrides, f"methods={method}", f"seed={seed}"]
            if cfg.device != "auto":
                overrides.append(f"device={cfg.device}")
            config = resolve_config(cfg.recipe, overrides)
            runs.append(StudyRun(method, seed, config, cfg.out / "runs" / f"{method}-seed{seed}"))
    return runs


def software_versions() -> dict[str, str]:
    """Versions of Python, the platform and the packages the study used."""
    from importlib import metadata

    versions = {"python": sys.version.split()[0], "platform": platform.platform()}
    for pkg in ("unimix", "torch", "numpy", "scikit-learn", "matplotlib", "torchvision", "timm"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    versions["torch_threads"] = str(torch.get_num_threads())
    versions["cuda"] = torch.version.cuda or "none"
    return versions


def _estimate_seconds(runs: Sequence[StudyRun]) -> float | None:
    """Seconds left: measured time per epoch of finished runs, else a short timed probe."""
    from unimix.train import read_metrics

    per_epoch = []
    for run in runs:
        rows = read_metrics(run.run_dir)
        if rows:
            per_epoch += [float(r["epoch_s"]) for r in rows if r.get("epoch_s") not in (None, "")]
    if not per_epoch:
        return None
    mean = sum(per_epoch) / len(per_epoch)
    left_epochs = 0
    for run in runs:
        if run.done():
            continue
        done_epochs = len(read_metrics(run.run_dir))
        left_epochs += max(0, run.config.epochs - done_epochs)
    return mean * left_epochs * 1.15  # evaluation and attacks: about 15 % on top


def _probe_epoch_seconds(run: StudyRun, steps: int = 4) -> float:
    """Time a few training steps of ``run``'s model and data to estimate one epoch (seconds)."""
    from unimix.data import build_dataset
    from unimix.models import create_model

    c = run.config
    spec = build_dataset(c.dataset, c.data_dir, c.image_size, c.split_seed)
    device = "cuda" if c.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu"
    model = create_model(
        c.model, spec.num_classes, spec.in_chans, spec.image_size, **c.model_kwargs
    )
    model.to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    x = torch.randn(c.batch_size, spec.in_chans, *spec.image_size, device=device)
    y = torch.randint(0, spec.num_classes, (c.batch_size,), device=device)
    times = []
    for _ in range(steps + 1):
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    step_s = sorted(times[1:])[len(times[1:]) // 2]
    return step_s * math.ceil(len(spec.train) / c.batch_size)


def _evaluate(run: StudyRun, cfg: StudyConfig) -> dict[str, Any]:
    from unimix.evaluate import evaluate_run

    device = None if cfg.device == "auto" else cfg.device
    config = run.config
    size = config.image_size or 32
    result = evaluate_run(
        run.run_dir,
        device=device,
        seed=10_000 + run.seed,
        eps_list=cfg.eps_list,
        pgd_steps=cfg.pgd_steps,
        occlusion_size=cfg.occlusion_size or _default_occlusion(size),
    )
    atomic_write_text(run.eval_path, result.to_json() + "\n")
    return result.to_dict()


def _default_occlusion(image_size: int | Sequence[int]) -> int:
    """A quarter of the shorter side: 8 pixels at 32×32, 56 at 224×224."""
    sides = [image_size] if isinstance(image_size, int) else list(image_size)
    return max(1, min(sides) // 4)


def _row(run: StudyRun, cfg: StudyConfig) -> dict[str, Any]:
    from unimix.train import load_result

    ev = json.loads(run.eval_path.read_text())
    tr = load_result(run.run_dir)
    k = ev["eps"].index(min(ev["eps"], key=lambda e: abs(e - cfg.attack_eps)))
    occl = ev.get("occlusion_accuracy")
    return {
        "method": run.method,
        "seed": run.seed,
        "top1_error": 100 * ev["top1_error"],
        "top5_error": 100 * ev["top5_error"],
        "nll": ev["nll"],
        "ece": 100 * ev["ece"],
        "fgsm_accuracy": 100 * ev["fgsm_accuracy"][k],
        "pgd_accuracy": 100 * ev["pgd_accuracy"][k],
        "occlusion_accuracy": math.nan if occl is None else 100 * occl,
        "train_time_s": sum(float(r.get("train_s") or 0) for r in tr.history),
        "time_per_epoch_s": tr.time_per_epoch_s,
        "images_per_s": tr.images_per_s,
        "mix_overhead_pct": 0.0 if run.method == "none" else tr.mix_overhead_pct,
        "epochs": len(tr.history),
        "attack_eps": ev["eps"][k],
    }


def _format(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.6g}"
    return str(value)


def write_results(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """Write ``results.csv`` atomically (6 significant digits)."""
    lines = [",".join(RESULT_COLUMNS)]
    lines += [",".join(_format(row[c]) for c in RESULT_COLUMNS) for row in rows]
    atomic_write_text(path, "\n".join(lines) + "\n")


def read_results(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Rows of a ``results.csv`` with numbers parsed."""
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    out = []
    for row in rows:
        parsed: dict[str, Any] = {}
        for key, value in row.items():
            if key == "method":
                parsed[key] = value
            elif key in ("seed", "epochs"):
                parsed[key] = int(value)
            else:
                parsed[key] = float(value)
        out.append(parsed)
    return out


def run_study(
    cfg: StudyConfig,
    *,
    log: Callable[[str], None] | None = None,
    after_run: Callable[[StudyRun], None] | None = None,
) -> Path:
    """Train and evaluate every run of the study, then write the results and the report.

    Returns the path of ``report.md``. ``after_run`` is called after each run (tests use it to
    interrupt a study in the middle).
    """
    from tqdm.auto import tqdm

    from unimix.study.report import write_report
    from unimix.train import train

    log = log or tqdm.write  # above the progress bars

    cfg.out.mkdir(parents=True, exist_ok=True)
    runs = plan_runs(cfg)
    _write_study_config(cfg, runs)
    left = [r for r in runs if not r.done()]
    log(
        f"study: {len(cfg.methods)} methods × {cfg.seeds} seeds = {len(runs)} runs "
        f"({len(runs) - len(left)} already done) → {cfg.out}"
    )
    if left:
        estimate = _estimate_seconds(runs)
        if estimate is None:
            estimate = _probe_epoch_seconds(left[0]) * sum(r.config.epochs for r in left) * 1.15
        log(f"study: estimated time left {_hms(estimate)} on {_device_name(cfg.device)}")
    start = time.perf_counter()
    bar = tqdm(
        total=len(runs),
        initial=len(runs) - len(left),
        desc="study",
        unit="run",
        disable=not cfg.progress,
        dynamic_ncols=True,
    )
    finished = len(runs) - len(left)
    try:
        for run in left:
            bar.set_postfix_str(run.name)
            train(run.config, run.run_dir, resume=True, progress=cfg.progress)
            _evaluate(run, cfg)
            bar.update(1)
            finished += 1
            if not cfg.progress:
                log(f"study: {run.name} done ({finished}/{len(runs)})")
            if after_run is not None:
                after_run(run)
    except KeyboardInterrupt:
        bar.close()
        log("study: interrupted; run the same command again to continue (finished runs are kept)")
        raise
    finally:
        bar.close()
    rows = [_row(run, cfg) for run in runs]
    write_results(rows, cfg.out / "results.csv")
    report = write_report(cfg, runs, rows)
    log(f"study: finished in {_hms(time.perf_counter() - start)}; report: {report}")
    return report


def _write_study_config(cfg: StudyConfig, runs: Sequence[StudyRun]) -> None:
    import yaml

    resolved = {
        "study": cfg.to_dict(),
        "train": runs[0].config.to_dict() | {"methods": "<per run>", "seed": "<per run>"},
        "software": software_versions(),
    }
    atomic_write_text(cfg.out / "config.yaml", yaml.safe_dump(resolved, sort_keys=False))


def _device_name(device: str) -> str:
    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        return torch.cuda.get_device_name()
    return f"CPU ({torch.get_num_threads()} threads)"


def _hms(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
