"""Run the study: train and evaluate every regime × method × setting × seed on the same budget.

Each run lives in ``OUT/runs/<regime>/<method>[-<setting>]-rep<k>/`` (the trainer's run
directory, plus ``evaluation.json`` as ``unimix evaluate`` writes it and ``calibration.json``,
the temperature fitted on the validation split and the test NLL/ECE after scaling). A finished
run is skipped, an interrupted one resumed, so a study can be stopped and started again at any
point; ``results.csv`` is rebuilt from the run directories at the end.

A study directory records its configuration (``OUT/config.yaml``): a rerun whose runs would be
trained or evaluated differently is refused up front, naming the keys that differ, unless
``fresh=True`` (``--fresh``) clears the old runs first — a report never mixes configurations.
Adding methods, seeds, regimes or grid values to a study is not a difference: the new runs are
trained and the old ones kept.

Regimes come from the recipe's ``study:`` section::

    study:
      seeds: 5
      default_regimes: [low, full]
      regimes:
        low:  {train_per_class: 40, val_fraction: 0.5, batch_size: 32, epochs: 60}
        full: {val_fraction: 0.1}

Order of precedence for a run's configuration: recipe < regime < ``overrides`` (``--set``,
``--epochs``) < grid values < method and seed.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from unimix.study.studydir import (
    STUDY_LOCK,
    check_study_directory,
    claim_study_directory,
    clear_study,
)
from unimix.study.types import (
    MIXING_KEYS,
    PAPER_METHODS,
    RESULT_COLUMNS,
    TIMING_COLUMNS,
    StudyConfig,
    StudyRun,
    replicate_seeds,
    section_int,
    software_versions,
)
from unimix.train.fileio import atomic_write_text

__all__ = [
    "PAPER_METHODS",
    "RESULT_COLUMNS",
    "TIMING_COLUMNS",
    "StudyConfig",
    "StudyRun",
    "CheckedStudy",
    "check_same_start",
    "check_study",
    "load_study_section",
    "parse_grid",
    "plan_runs",
    "read_results",
    "run_study",
    "software_versions",
]

#: Keys of a study's recorded configuration whose change alters every evaluation.
_EVAL_KEYS = ("eps_list", "attack_eps", "pgd_steps", "occlusion_size", "attack_images")


#: Name of the single regime of a recipe without a ``study:`` section.
DEFAULT_REGIME = "full"


# ---- recipes, regimes and the grid -------------------------------------------------------------


def load_study_section(recipe: str) -> dict[str, Any]:
    """The ``study:`` mapping of a recipe (packaged name or YAML path); ``{}`` when it has none."""
    import yaml

    path = Path(recipe)
    if path.suffix in (".yaml", ".yml") or path.exists() or os.sep in str(recipe):
        text = path.read_text() if path.is_file() else ""
    else:
        entry = resources.files("unimix") / "recipes" / f"{recipe}.yaml"
        text = entry.read_text() if entry.is_file() else ""
    data = yaml.safe_load(text) if text else None
    section = data.get("study") if isinstance(data, dict) else None
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise ValueError(f"the study section of recipe {recipe!r} must be a mapping")
    return section


def _regimes(cfg: StudyConfig, section: dict[str, Any]) -> dict[str, dict[str, Any]]:
    defined = section.get("regimes") or {}
    if not isinstance(defined, dict):
        raise ValueError(f"study.regimes of recipe {cfg.recipe!r} must map names to keys")
    if not defined:
        defined = {DEFAULT_REGIME: {}}
    for name, keys in defined.items():
        if keys is not None and not isinstance(keys, dict):
            raise ValueError(
                f"study.regimes.{name} of recipe {cfg.recipe!r} must map training keys to "
                f"values, got {keys!r}"
            )
    default = section.get("default_regimes")
    if default is not None and not isinstance(default, list):
        raise ValueError(f"study.default_regimes must be a list of regime names, got {default!r}")
    names = cfg.regimes or list(default or defined)
    unknown = [n for n in names if n not in defined]
    if unknown:
        raise ValueError(
            f"unknown regime(s) {', '.join(map(repr, unknown))} in --regimes; recipe "
            f"{cfg.recipe!r} defines: {', '.join(defined)}"
        )
    return {n: dict(defined[n] or {}) for n in names}


def parse_grid(items: Sequence[str]) -> dict[str, list[Any]]:
    """``["alpha=0.2,1", "method_params.r=0.25,0.5"]`` → ``{"alpha": [0.2, 1.0], …}``.

    Values are read as YAML (numbers, booleans, strings). A key that is not a training key is a
    method parameter: ``r=0.25,0.5`` means ``method_params.r``.
    """
    import yaml

    from unimix.train import TrainConfig

    grid: dict[str, list[Any]] = {}
    keys = set(TrainConfig.keys())
    for item in items:
        if not isinstance(item, str) or "=" not in item:
            raise ValueError(f"--grid needs KEY=V1,V2,…, got {item!r}")
        key, _, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not key or not raw.strip():
            raise ValueError(f"--grid needs KEY=V1,V2,…, got {item!r}")
        if key.partition(".")[0] not in keys:
            key = f"method_params.{key}"
        if key.partition(".")[0] in ("methods", "seed"):
            raise ValueError(f"--grid {key}: use --methods and --seeds for these")
        values = [yaml.safe_load(v.strip()) for v in raw.split(",") if v.strip()]
        if len(set(map(repr, values))) != len(values):
            raise ValueError(f"--grid {key} lists a value twice: {raw}")
        if key in grid:
            raise ValueError(f"--grid {key} given twice; list all its values in one --grid")
        grid[key] = values
    return grid


def _short(key: str) -> str:
    return key.removeprefix("method_params.")


def _method_takes(method: str, key: str) -> bool:
    """Whether a grid key changes the runs of ``method``."""
    top, _, sub = key.partition(".")
    if method == "none":
        return top not in MIXING_KEYS
    if top == "method_params":
        return sub in _parameters(method)
    return True


def _parameters(method: str) -> set[str]:
    from unimix.registry import parameters

    try:
        return set(parameters(method))
    except (KeyError, ValueError):
        return set()


def _settings(method: str, grid: dict[str, list[Any]]) -> list[tuple[str, list[str], str]]:
    """(label, overrides, base label) of every grid combination that changes ``method``'s runs;
    the base label keeps the keys that also change a run without mixing."""
    keys = [k for k in grid if _method_takes(method, k)]
    combos = itertools.product(*(grid[k] for k in keys)) if keys else [()]
    out = []
    for values in combos:
        pairs = list(zip(keys, values, strict=True))
        label = ",".join(f"{_short(k)}={_text(v)}" for k, v in pairs)
        base = ",".join(f"{_short(k)}={_text(v)}" for k, v in pairs if _method_takes("none", k))
        overrides = [f"{k}={json.dumps(v)}" for k, v in pairs]
        out.append((label, overrides, base))
    return out


def _dial_settings(method: str) -> list[tuple[str, list[str], str]]:
    """The locality dial's settings of ``method`` (:data:`unimix.study.locality.DIAL`) in the
    form of :func:`_settings`; the grid is not used by a dial recipe."""
    from unimix.study.locality import DIAL

    if method == "none":
        return [("", [], "")]
    out = []
    for s in DIAL:
        if s.method != method:
            continue
        label = ",".join(f"{k}={_text(v)}" for k, v in s.params)
        overrides = [f"method_params.{k}={json.dumps(v)}" for k, v in s.params]
        out.append((label, overrides, ""))
    return out


def _text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _dirname(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=,+-]", "_", label)


def plan_runs(cfg: StudyConfig) -> list[StudyRun]:
    """Every regime × seed × method × setting with its resolved training configuration
    (regime-major, then seed, so that a partial study already compares every method)."""
    from unimix.train import TrainConfig, apply_overrides, load_recipe

    section = load_study_section(cfg.recipe)
    base = load_recipe(cfg.recipe)
    seeds = cfg.seeds if cfg.seeds is not None else section_int(section, "seeds", 3, low=1)
    cfg.resolve(section)
    runs = []
    dial = section.get("dial") == "locality"
    if dial:
        from unimix.study.locality import dial_methods

        cfg.methods = dial_methods()
        if cfg.grid:
            raise ValueError(
                f"recipe {cfg.recipe!r} sweeps its own dial of mask settings; drop --grid"
            )
    locality = section.get("locality")
    if locality is not None and not (
        isinstance(locality, dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in locality.items())
    ):
        raise ValueError(
            f"study.locality must map regime names to task names, e.g. {{local: digits_local}}, "
            f"got {locality!r}"
        )
    for key in cfg.grid:
        if not any(_method_takes(m, key) for m in cfg.methods):
            raise ValueError(
                f"--grid {_short(key)}: no method of this study ({', '.join(cfg.methods)}) takes "
                "it; give a training key or a parameter of one of the methods"
            )
    for regime, keys in _regimes(cfg, section).items():
        data = apply_overrides(base, keys)
        for replicate in range(seeds):
            split_seed, seed = replicate_seeds(cfg.base_seed, replicate)
            for method in cfg.methods:
                settings = _dial_settings(method) if dial else _settings(method, cfg.grid)
                for label, grid_overrides, base_label in settings:
                    overrides = [
                        *cfg.overrides,
                        *grid_overrides,
                        f"methods={method}",
                        f"seed={seed}",
                        f"split_seed={split_seed}",
                    ]
                    if cfg.device != "auto":
                        overrides.append(f"device={cfg.device}")
                    config = TrainConfig.from_dict(apply_overrides(data, overrides))
                    setting = f"-{_dirname(label)}" if label else ""
                    run_dir = cfg.out / "runs" / regime / f"{method}{setting}-rep{replicate}"
                    runs.append(
                        StudyRun(
                            method,
                            seed,
                            config,
                            run_dir,
                            regime,
                            label,
                            base_label,
                            replicate=replicate,
                            split_seed=split_seed,
                        )
                    )
    return runs


# ---- the study directory's record --------------------------------------------------------------


def _record(cfg: StudyConfig, runs: Sequence[StudyRun]) -> dict[str, Any]:
    from unimix.train import RESUME_MUTABLE

    return {
        "study": cfg.to_dict(),
        "runs": {
            r.name: {k: v for k, v in r.config.to_dict().items() if k not in RESUME_MUTABLE}
            for r in runs
        },
    }


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Human-readable differences that would make old and new runs disagree."""
    diffs = []
    old_study, new_study = old.get("study") or {}, new["study"]
    for key in _EVAL_KEYS:
        if key in old_study and old_study[key] != new_study[key]:
            diffs.append(f"{key} ({old_study[key]} → {new_study[key]})")
    changed: dict[str, tuple[Any, Any]] = {}
    for name, config in new["runs"].items():
        before = (old.get("runs") or {}).get(name)
        if before is None:
            continue
        for key in sorted(set(config) | set(before)):
            if config.get(key) != before.get(key):
                changed.setdefault(key, (before.get(key), config.get(key)))
    diffs += [f"{k} ({a} → {b})" for k, (a, b) in changed.items()]
    return diffs


def _prepare_directory(cfg: StudyConfig, record: dict[str, Any]) -> None:
    """Refuse a study directory whose finished runs were made with other settings (or clear it
    with ``cfg.fresh``). Called with the directory marked and locked
    (:func:`unimix.study.studydir.claim_study_directory`)."""
    import yaml

    out = cfg.out
    config_path = out / "config.yaml"
    if not config_path.is_file() and not (out / "runs").exists():
        return  # a new study
    old = None
    if config_path.is_file():
        try:
            old = yaml.safe_load(config_path.read_text())
        except yaml.YAMLError:
            old = None
    if isinstance(old, dict) and (old.get("study") or {}).get("quick") and not cfg.quick:
        clear_study(out)  # a smoke run never blocks the real study: it is replaced
        print(f"unimix study: replacing the --quick smoke run in {str(out)!r} with a full study")
        return
    if not isinstance(old, dict) or "study" not in old:
        diffs = ["its config.yaml is missing or unreadable"]
    else:
        diffs = [] if "runs" not in old else _differences(old, record)
        if "runs" not in old and (out / "runs").exists():
            diffs = ["the directory comes from an older unimix without a per-run record"]
    if not diffs and not cfg.fresh:
        return
    if cfg.fresh:
        clear_study(out)
        return
    raise ValueError(
        f"the study in {str(out)!r} was run with other settings: {'; '.join(diffs)}. Its runs "
        "would mix two configurations: rerun with --fresh to start afresh (deletes its runs), "
        "or choose another --out"
    )


def _added_replicates(cfg: StudyConfig, runs: Sequence[StudyRun]) -> list[dict[str, Any]]:
    """The record of replicates added to a finished study: the old list from ``config.yaml``,
    plus this call's addition when the study had a results.csv and this call has more
    replicates than it had."""
    import yaml

    path = cfg.out / "config.yaml"
    if not path.is_file():
        return []
    try:
        old = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError:
        return []
    history = list(old.get("replicates_added") or [])
    before: dict[str, set[str]] = {}
    for name in old.get("runs") or {}:
        before.setdefault(name.split("/")[0], set()).add(name.rsplit("-rep", 1)[-1])
    now: dict[str, set[str]] = {}
    for r in runs:
        now.setdefault(r.regime, set()).add(str(r.replicate))
    grown = {g: (len(before[g]), len(now[g])) for g in now if g in before and now[g] - before[g]}
    if (cfg.out / "results.csv").is_file() and grown:
        for regime, (a, b) in grown.items():
            entry = {"regime": regime, "before": a, "after": b}
            history.append(entry | {"time": time.strftime("%Y-%m-%d %H:%M")})
    return history


def _write_study_config(cfg: StudyConfig, runs: Sequence[StudyRun], record: dict[str, Any]) -> None:
    import yaml

    out = cfg.out / "config.yaml"
    old: dict[str, Any] = {}
    if out.is_file():
        try:
            loaded = yaml.safe_load(out.read_text())
            old = loaded if isinstance(loaded, dict) else {}
        except yaml.YAMLError:
            old = {}
    merged_runs = {**(old.get("runs") or {}), **record["runs"]}  # runs of earlier, wider calls
    added = _added_replicates(cfg, runs)
    cfg.sequential = bool(added)
    resolved = {
        "study": record["study"],
        "replicates_added": added,
        "train": runs[0].config.to_dict() | {"methods": "<per run>", "seed": "<per run>"},
        "runs": merged_runs,
        "software": software_versions(),
    }
    if record.get("predictions_sha256"):
        resolved["predictions_sha256"] = record["predictions_sha256"]
    atomic_write_text(out, yaml.safe_dump(resolved, sort_keys=False))


# ---- same start for every method ---------------------------------------------------------------


def check_same_start(runs: Sequence[StudyRun]) -> dict[str, Any]:
    """Check that every method of one regime × seed (and non-mixing setting) starts from the same
    initial weights and first training batch (:func:`unimix.train.start_fingerprint`).

    Returns ``{"ok": bool, "groups": n, "mismatches": [run names]}``.
    """
    from unimix.train import start_fingerprint

    groups: dict[tuple[str, int, str], list[StudyRun]] = {}
    for run in runs:
        groups.setdefault((run.regime, run.replicate, _base_setting(run)), []).append(run)
    mismatches = []
    for members in groups.values():
        prints = {r.name: start_fingerprint(r.config) for r in members}
        first = next(iter(prints.values()))
        mismatches += [n for n, p in prints.items() if p != first]
    return {"ok": not mismatches, "groups": len(groups), "mismatches": mismatches}


def _base_setting(run: StudyRun) -> str:
    """The part of a run's setting that is not about mixing (what ``none`` shares with it)."""
    return run.base_setting


# ---- time ---------------------------------------------------------------------------------------


def _eval_passes(cfg: StudyConfig, test_size: int) -> float:
    """Forward+backward-equivalents of one evaluation (attacks dominate)."""
    eps = len(cfg.eps_list or [])
    attacked = min(test_size, cfg.attack_images or test_size)
    return test_size * 2 / 3 + attacked * (1.0 + eps * (1.0 + cfg.pgd_steps))


def _run_cost(run: StudyRun, sizes: dict[str, int], cfg: StudyConfig) -> float:
    """Relative cost of a run in image passes (training, per-epoch tests, final evaluation)."""
    c = run.config
    train_passes = sizes["train"] * c.epochs
    tests = c.epochs // c.eval_every if c.eval_every else 1
    return (
        train_passes
        + sizes["test"] * tests / 3
        + _eval_passes(cfg, sizes["test"])
        + sizes["val"] / 3
    )


def _dataset(config: Any) -> Any:
    """The :class:`~unimix.data.DataSpec` of a run's configuration."""
    from unimix.data import build_dataset

    return build_dataset(
        config.dataset,
        config.data_dir,
        config.image_size,
        config.split_seed,
        train_per_class=config.train_per_class,
        train_fraction=config.train_fraction,
        val_fraction=config.val_fraction,
    )


def _sizes(config: Any) -> dict[str, int]:
    return _spec_sizes(_dataset(config))


def _spec_sizes(spec: Any) -> dict[str, int]:
    return {
        "train": len(spec.train),
        "test": len(spec.test),
        "val": 0 if spec.val is None else len(spec.val),
    }


def _probe_image_seconds(run: StudyRun, budget_s: float = 30.0) -> float:
    """Seconds per image of one real training step of ``run`` (forward, backward, update).

    Three steps at the run's batch size and image size (never bigger than one real step); the
    first warms up, the fastest of the others is taken; it stops early when a step takes longer
    than ``budget_s``.
    """
    from unimix.models import create_model

    c = run.config
    from unimix.data import build_dataset

    spec = build_dataset(
        c.dataset,
        c.data_dir,
        c.image_size,
        c.split_seed,
        train_per_class=c.train_per_class,
        train_fraction=c.train_fraction,
        val_fraction=c.val_fraction,
    )
    device = "cuda" if c.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu"
    model = create_model(
        c.model, spec.num_classes, spec.in_chans, spec.image_size, **c.model_kwargs
    )
    model.to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    batch = min(c.batch_size, len(spec.train))
    x = torch.randn(batch, spec.in_chans, *spec.image_size, device=device)
    y = torch.randint(0, spec.num_classes, (batch,), device=device)
    times = []
    for _ in range(3):
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        if device == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t
        times.append(seconds)
        if seconds > budget_s:
            break
    return min(times[1:] or times) / batch


def _estimate_seconds(
    runs: Sequence[StudyRun], cfg: StudyConfig, sizes: dict[str, dict[str, int]] | None = None
) -> float:
    """Seconds left: the measured seconds per unit of cost of finished runs, else a probe."""
    sizes = dict(sizes or {})
    for run in runs:
        if run.regime not in sizes:
            sizes[run.regime] = _sizes(run.config)
    spent, done_cost = 0.0, 0.0
    for run in runs:
        if run.done():
            info = json.loads(run.calibration_path.read_text())
            if info.get("study_s"):
                spent += float(info["study_s"])
                done_cost += _run_cost(run, sizes[run.regime], cfg)
    left = [r for r in runs if not r.done()]
    left_cost = sum(_run_cost(r, sizes[r.regime], cfg) for r in left)
    if done_cost > 0:
        return spent / done_cost * left_cost
    per_image = _probe_image_seconds(left[0]) if left else 0.0
    return per_image * left_cost * 1.1


def _row(run: StudyRun, cfg: StudyConfig) -> dict[str, Any]:
    from unimix.train import load_result

    ev = json.loads(run.eval_path.read_text())
    cal = json.loads(run.calibration_path.read_text())
    tr = load_result(run.run_dir)
    cost = cal.get("cost") or {}
    k = ev["eps"].index(min(ev["eps"], key=lambda e: abs(e - cfg.attack_eps)))
    occl = ev.get("occlusion_accuracy")
    clean = {k: ev[k] for k in ("top1_error", "top5_error", "nll", "ece")} | cal.get("test", {})
    return {
        "regime": run.regime,
        "train_size": cal["train_size"],
        "val_size": cal["val_size"],
        "test_size": cal["test_size"],
        "method": run.method,
        "setting": run.setting,
        "replicate": run.replicate,
        "split_seed": run.split_seed,
        "seed": run.seed,
        "top1_error": 100 * clean["top1_error"],
        "top5_error": 100 * clean["top5_error"],
        "nll": clean["nll"],
        "ece": 100 * clean["ece"],
        "temperature": cal["temperature"],
        "nll_ts": cal["nll_ts"],
        "ece_ts": 100 * cal["ece_ts"],
        "fgsm_accuracy": 100 * ev["fgsm_accuracy"][k],
        "pgd_accuracy": 100 * ev["pgd_accuracy"][k],
        "occlusion_accuracy": math.nan if occl is None else 100 * occl,
        "train_time_s": sum(float(r.get("train_s") or 0) for r in tr.history),
        "time_per_epoch_s": tr.time_per_epoch_s,
        "images_per_s": tr.images_per_s,
        "mix_overhead_pct": 0.0 if run.method == "none" else tr.mix_overhead_pct,
        "epochs": len(tr.history),
        "attack_eps": ev["eps"][k],
        "val_error": 100 * cal.get("val_error", math.nan),
        "val_nll": cal.get("val_nll", math.nan),
        "temperature_at_bound": int(bool(cal.get("temperature_at_bound", False))),
        "mix_ms_per_batch": cost.get("mix_ms", math.nan),
        "step_ms_per_batch": cost.get("step_ms", math.nan),
        "timm_mixup_ms_per_batch": cost.get("timm_mixup_ms", math.nan),
        "mix_share_pct": cost.get("mix_share_pct", math.nan),
    }


def _format(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.6g}"
    return str(value)


def write_results(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """Write ``results.csv`` atomically (6 significant digits)."""
    buf = [",".join(RESULT_COLUMNS)]
    for row in rows:
        cells = [_format(row[c]) for c in RESULT_COLUMNS]
        buf.append(",".join(f'"{c}"' if "," in c else c for c in cells))
    atomic_write_text(path, "\n".join(buf) + "\n")


_TEXT_COLUMNS = {"method", "regime", "setting"}
_INT_COLUMNS = {
    "seed",
    "replicate",
    "split_seed",
    "epochs",
    "train_size",
    "val_size",
    "test_size",
    "temperature_at_bound",
}


def read_results(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Rows of a ``results.csv`` with numbers parsed."""
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    out = []
    for row in rows:
        parsed: dict[str, Any] = {}
        for key, value in row.items():
            if key in _TEXT_COLUMNS:
                parsed[key] = value
            elif key in _INT_COLUMNS:
                parsed[key] = int(value)
            else:
                parsed[key] = float(value)
        out.append(parsed)
    return out


# ---- the study ---------------------------------------------------------------------------------


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

    log = log or tqdm.write  # above the progress bars

    from unimix.errors import removed_on_failure

    runs = plan_runs(cfg)  # every run's configuration, resolved and validated
    check_study_directory(cfg.out)  # a folder unimix did not mark is refused before the checks
    checked = check_study(cfg, runs)  # data, models, memory, workers: before anything is written
    threads = torch.get_num_threads()
    if cfg.threads is not None and cfg.device != "cuda":
        torch.set_num_threads(cfg.threads)
    try:
        # a study that fails before any run has a checkpoint leaves the folder as it found it
        with removed_on_failure(cfg.out, keep=("checkpoint.pt", STUDY_LOCK)):
            lock = claim_study_directory(cfg.out)  # refuses an unmarked or a busy folder
            try:
                return _run_study(cfg, runs, checked, log, after_run)
            finally:
                lock.release()
    finally:
        torch.set_num_threads(threads)


@dataclass
class CheckedStudy:
    """What :func:`check_study` found: the local workers and each regime's split sizes."""

    workers: int
    sizes: dict[str, dict[str, int]]


def check_study(cfg: StudyConfig, runs: Sequence[StudyRun]) -> CheckedStudy:
    """Check everything a study needs that its arguments decide, before it writes anything:
    every regime's data can be read, every distinct model builds with its ``model_kwargs``
    for that data, every run fits in its device's memory
    (:func:`unimix.train.memory.check_run_memory`) and the local workers fit together.

    Raises ValueError/TypeError naming the setting (the command line prints one line).
    """
    from unimix.models import create_model
    from unimix.train.memory import check_run_memory

    for run in runs:  # first: a size that cannot fit is refused before any data is made
        check_run_memory(run.config)
    specs: dict[str, Any] = {}
    built: set[tuple[str, str, str]] = set()
    for run in runs:
        c = run.config
        if run.regime not in specs:
            specs[run.regime] = _dataset(c)
        spec = specs[run.regime]
        key = (run.regime, c.model, repr(c.model_kwargs))
        if key in built:
            continue
        built.add(key)
        try:
            create_model(
                c.model, spec.num_classes, spec.in_chans, spec.image_size, **c.model_kwargs
            )
        except (TypeError, ValueError) as err:
            detail = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise ValueError(
                f"model {c.model!r} with model_kwargs {c.model_kwargs} cannot be built for "
                f"{c.dataset} ({spec.in_chans} channel(s), {spec.num_classes} classes): {detail}"
            ) from None
    sizes = {regime: _spec_sizes(spec) for regime, spec in specs.items()}
    left = [r for r in runs if not r.done()]
    return CheckedStudy(_workers(cfg, runs, left), sizes)


def _run_study(
    cfg: StudyConfig,
    runs: list[StudyRun],
    checked: CheckedStudy,
    log: Callable[[str], None],
    after_run: Callable[[StudyRun], None] | None,
) -> Path:
    from unimix.study.execute import execute_runs, retries
    from unimix.study.report import write_report

    record = _record(cfg, runs)
    _prepare_directory(cfg, record)
    cfg.out.mkdir(parents=True, exist_ok=True)
    locality = load_study_section(cfg.recipe).get("locality")
    if locality:
        from unimix.study.locality import predict_rows, write_predictions

        # the prediction is written, and its digest recorded, before the first run starts
        digest = write_predictions(predict_rows(), cfg.out / "predictions.csv")
        record["predictions_sha256"] = digest
        log(f"study: predictions.csv written before any run (sha256 {digest})")
    _write_study_config(cfg, runs, record)
    left = [r for r in runs if not r.done()]
    regimes = sorted({r.regime for r in runs}, key=[r.regime for r in runs].index)
    log(
        f"study: {len(regimes)} regime(s) ({', '.join(regimes)}) × "
        f"{len({r.variant for r in runs})} method settings × "
        f"{len({r.replicate for r in runs})} replicates = {len(runs)} runs "
        f"({len(runs) - len(left)} already done) → {cfg.out}"
    )
    estimate = None
    workers = checked.workers
    if left:
        parallel = min(workers, len(left)) if cfg.executor == "local" else 1
        estimate = _estimate_seconds(runs, cfg, checked.sizes) / parallel
        on = _device_name(cfg.device) if parallel == 1 else f"{parallel} workers"
        log(f"study: estimated time left {_hms(estimate)} (training and evaluation) on {on}")
    start = time.perf_counter()
    if left and (workers > 1 or cfg.executor != "local"):
        log(f"study: {len(left)} runs on {_executor_name(cfg, workers)}")
    progress = StudyProgress(runs, left, cfg, log)
    try:
        execute_runs(cfg, left, workers=workers, report=progress.event, after_run=after_run)
    except (KeyboardInterrupt, SystemExit):  # Ctrl-C, or SIGTERM (execute's handler)
        progress.close()
        again = "finished runs are kept"
        if cfg.executor == "slurm":
            again = "the SLURM jobs keep running; the same command picks them up"
        log(f"study: interrupted; run the same command again to continue ({again})")
        raise
    finally:
        progress.close()
    write_results([_row(run, cfg) for run in runs], cfg.out / "results.csv")
    rows = read_results(cfg.out / "results.csv")  # the report shows exactly these numbers
    same_start = check_same_start(runs)
    from unimix.study.claims import summarize
    from unimix.study.practice import theory_vs_practice

    theory = None
    lead: tuple[list[Any], list[Any]] = ([], [])
    if not locality:
        theory = theory_vs_practice(cfg, runs, rows, summarize(rows, cfg.methods))
    else:  # the dial's settings and their index are the lead section's subject
        from unimix.study.locality import locality_verdict

        lead = locality_verdict(cfg.out, rows, dict(locality), record["predictions_sha256"])
    report = write_report(
        cfg,
        runs,
        rows,
        same_start=same_start,
        retried=retries(runs),
        theory=theory,
        lead=lead[0],
        lead_lines=lead[1],
    )
    took = time.perf_counter() - start
    versus = f" (estimated {_hms(estimate)})" if estimate is not None else ""
    log(f"study: finished in {_hms(took)}{versus}; report: {report}")
    return report


def _workers(cfg: StudyConfig, runs: Sequence[StudyRun], left: Sequence[StudyRun]) -> int:
    """The number of local worker processes (``cfg.workers``, ``None``: one per core or GPU),
    checked against the machine's free memory."""
    from unimix.study.execute import check_workers_fit, default_workers

    workers = cfg.workers if cfg.workers is not None else default_workers(cfg)
    workers = max(1, min(workers, len(left) or 1)) if cfg.workers is None else workers
    check_workers_fit(cfg, runs, workers)
    return workers


def _executor_name(cfg: StudyConfig, workers: int) -> str:
    if cfg.executor == "ray":
        return f"Ray ({cfg.ray_address or 'a local cluster'})"
    if cfg.executor == "slurm":
        return f"SLURM through submitit ({cfg.slurm_cluster or 'slurm'})"
    threads = f", {cfg.threads} torch thread(s) each" if cfg.threads else ""
    return f"{workers} local worker processes{threads}"


class StudyProgress:
    """One progress display for the runs of a study, whoever executes them: finished / running /
    queued, the run of each worker and an ETA (a bar on a terminal; otherwise, and with
    ``--no-progress``, one line per finished run)."""

    def __init__(
        self,
        runs: Sequence[StudyRun],
        left: Sequence[StudyRun],
        cfg: StudyConfig,
        log: Callable[[str], None],
    ) -> None:
        from tqdm.auto import tqdm

        self.total, self.done = len(runs), len(runs) - len(left)
        self.queued = len(left)
        self.running: list[str] = []
        self.retried = 0
        self.log, self.cfg, self.start = log, cfg, time.perf_counter()
        self.done_here = 0
        self.bar = tqdm(
            total=len(runs),
            initial=self.done,
            desc="study",
            unit="run",
            disable=not cfg.progress,
            dynamic_ncols=True,
        )

    def _eta(self) -> str:
        from unimix.study.execute import eta_text

        if not self.done_here:
            return "?"
        elapsed = time.perf_counter() - self.start
        return eta_text(elapsed / self.done_here * (self.total - self.done))

    def _status(self) -> str:
        queued = max(0, self.total - self.done - len(self.running))
        return f"{self.done}/{self.total} finished, {len(self.running)} running, {queued} queued"

    def event(self, kind: str, name: str) -> None:
        """``start``/``queued``/``done``/``retry``/``failed`` of the run ``name``."""
        if kind == "start":
            self.running.append(name)
            if not self.cfg.progress:
                self.log(f"study: {name} ({self._status()}) …")
        elif kind == "done":
            if name in self.running:
                self.running.remove(name)
            self.done += 1
            self.done_here += 1
            self.bar.update(1)
            if not self.cfg.progress:
                self.log(f"study: {name} done ({self._status()}; about {self._eta()} left)")
        elif kind in ("retry", "failed"):
            if name in self.running:
                self.running.remove(name)
            self.retried += kind == "retry"
            self.log(
                f"study: {name} {'is started again (its worker died)' if kind == 'retry' else 'failed'}"
            )
        if self.cfg.progress:
            self.bar.set_postfix_str(f"{self._status()}; " + " | ".join(self.running))

    def close(self) -> None:
        self.bar.close()


def _device_name(device: str) -> str:
    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        return torch.cuda.get_device_name()
    return f"CPU ({torch.get_num_threads()} threads)"


def _hms(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def first_regime(recipe: str) -> list[str] | None:
    """The first of a recipe's default regimes (``--quick`` runs only that one)."""
    section = load_study_section(recipe)
    if section.get("quick_regimes"):
        return list(section["quick_regimes"])
    names = list(section.get("default_regimes") or (section.get("regimes") or {}))
    return names[:1] or None
