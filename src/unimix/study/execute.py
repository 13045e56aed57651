"""Execute a study's runs: in this process, in local worker processes, on Ray or on SLURM.

A study is many independent training runs. :func:`execute_runs` takes the runs that are left
(:class:`~unimix.study.types.StudyRun`, each a training configuration and a run directory) and
has every one of them trained and evaluated by :func:`run_one`, on one of three executors:

- ``local`` (default): ``workers`` processes of this machine (:mod:`concurrent.futures`, started
  with ``spawn``), each with ``threads`` torch threads and, for CUDA runs, a GPU of its own
  (``CUDA_VISIBLE_DEVICES``); ``workers=1`` runs in this process;
- ``ray``: each run a Ray task (``num_cpus``/``num_gpus`` per task) on the cluster at
  ``ray_address`` (``None``: a local one); the study folder must be visible to every node;
- ``slurm``: a submitit job array, one task per run; a study left while its jobs are queued is
  picked up by the same command later (the job ids are kept under ``OUT/slurm/``).

Results depend only on each run's configuration and seeds: every run trains with the same number
of torch threads wherever it runs, writes only its own directory and the rows of ``results.csv``
are read back from the directories in the study's fixed order, never in completion order.

Nothing is lost when a worker dies: every start of a run is appended to ``<run_dir>.attempts``
(one JSON line: host, pid, time); a run whose process, Ray worker or SLURM task died is started
again, resuming from its last checkpoint, at most ``max_retries`` times. The retries are counted
in the report (:func:`retries`). Ctrl-C stops every local worker; the same command continues.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import math
import multiprocessing
import os
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import torch

from unimix.study.types import StudyConfig, StudyRun
from unimix.train.fileio import atomic_write_text

__all__ = [
    "EXECUTORS",
    "check_workers_fit",
    "default_workers",
    "execute_runs",
    "retries",
    "run_one",
]

#: The executors of ``unimix study --executor``.
EXECUTORS: tuple[str, ...] = ("local", "ray", "slurm")
#: Memory a worker process needs besides its data and model (Python, torch, the evaluation).
_WORKER_BASE_BYTES = 600 * 2**20


# ---- one run, wherever it executes -------------------------------------------------------------


def attempts_path(run: StudyRun) -> Path:
    """``<run_dir>.attempts``: one JSON line per start of the run (beside, not inside, its dir)."""
    return run.run_dir.with_name(run.run_dir.name + ".attempts")


def run_one(run: StudyRun, cfg: StudyConfig, progress: bool = False) -> str:
    """Train (resuming from the run's checkpoint, if any) and evaluate one run; returns its name.

    The function every executor calls, in whatever process or node it lands; it sets torch's
    thread count to ``cfg.threads`` for CPU runs so that the arithmetic is the same everywhere.
    """
    from unimix.study.evaluation import evaluate_run_of_study
    from unimix.train import train

    if cfg.threads is not None and cfg.device != "cuda":
        torch.set_num_threads(cfg.threads)
    if run.done():
        return run.name
    run.run_dir.parent.mkdir(parents=True, exist_ok=True)
    line = {"host": socket.gethostname(), "pid": os.getpid(), "time": time.time()}
    with open(attempts_path(run), "a", encoding="utf-8") as fh:
        fh.write(json.dumps(line) + "\n")
    t0 = time.perf_counter()
    train(run.config, run.run_dir, resume=True, progress=progress)
    evaluate_run_of_study(run, cfg, time.perf_counter() - t0)
    return run.name


def retries(runs: Sequence[StudyRun]) -> dict[str, int]:
    """Runs that were started more than once (a worker died or the study was interrupted):
    name → number of extra starts."""
    out = {}
    for run in runs:
        path = attempts_path(run)
        if path.is_file():
            n = sum(1 for line in path.read_text().splitlines() if line.strip())
            if n > 1:
                out[run.name] = n - 1
    return out


def _starts(run: StudyRun) -> int:
    path = attempts_path(run)
    return sum(1 for ln in path.read_text().splitlines() if ln.strip()) if path.is_file() else 0


# ---- how many workers ----------------------------------------------------------------------------


def _cuda_runs(cfg: StudyConfig) -> bool:
    return cfg.device.startswith("cuda") or (cfg.device == "auto" and torch.cuda.is_available())


def default_workers(cfg: StudyConfig) -> int:
    """One worker per usable CPU core for CPU runs, one per visible GPU for CUDA runs."""
    if _cuda_runs(cfg):
        return max(1, torch.cuda.device_count())
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _worker_bytes(run: StudyRun) -> int:
    """A generous estimate of one worker's memory for ``run``: base + model and optimiser state
    + the data in memory (float copies of train/val/test at the run's image size)."""
    from unimix.models import create_model

    c = run.config
    side = c.image_size or 32
    h, w = (side, side) if isinstance(side, int) else tuple(side)
    try:
        model = create_model(c.model, 10, 3, (h, w), **c.model_kwargs)
        params = sum(p.numel() for p in model.parameters())
    except Exception:  # an unknown model is reported by training itself
        params = 0
    images = 2000 if c.dataset == "digits" else 60_000
    return _WORKER_BASE_BYTES + 16 * params + images * 3 * h * w * 4 * 2


def check_workers_fit(cfg: StudyConfig, runs: Sequence[StudyRun], workers: int) -> None:
    """Refuse ``workers`` processes whose estimated memory exceeds what the machine has free."""
    if workers <= 1 or not runs or cfg.executor != "local":
        return
    from unimix.train import memory

    free = memory.available_memory("cpu")
    if free is None:
        return
    need = max(_worker_bytes(r) for r in {r.config.model: r for r in runs}.values())
    if workers * need > free:
        fit = max(1, free // need)
        raise ValueError(
            f"--workers {workers} needs about {workers * need / 2**30:.1f} GiB but "
            f"{free / 2**30:.1f} GiB is free; use --workers {fit} or fewer"
        )


# ---- the executors ---------------------------------------------------------------------------------


Report = Callable[[str, str], None]  # (event, run name): "start" | "done" | "retry"


def execute_runs(
    cfg: StudyConfig,
    left: Sequence[StudyRun],
    *,
    workers: int,
    report: Report,
    after_run: Callable[[StudyRun], None] | None = None,
) -> None:
    """Train and evaluate every run of ``left`` on ``cfg.executor`` (see the module docstring)."""
    if not left:
        return
    if cfg.executor == "ray":
        _execute_ray(cfg, left, workers, report)
    elif cfg.executor == "slurm":
        _execute_slurm(cfg, left, report)
    elif workers <= 1:
        for run in left:
            report("start", run.name)
            run_one(run, cfg, progress=cfg.progress)
            report("done", run.name)
            if after_run is not None:
                after_run(run)
    else:
        _execute_local(cfg, left, workers, report, after_run)


def _check_attempts(run: StudyRun, cfg: StudyConfig) -> None:
    if _starts(run) > cfg.max_retries:
        raise RuntimeError(
            f"run {run.name} was started {_starts(run)} times and never finished (its worker "
            f"died each time; see {attempts_path(run)}); rerun to try again, or raise --max-retries"
        )


# local ------------------------------------------------------------------------------------------

_EVENTS: Any = None  # the worker's end of the event queue (set by _init_worker)


def _init_worker(events: Any, gpus: Any, threads: int | None, parent: int) -> None:
    global _EVENTS
    _EVENTS = events
    _exit_with_parent(parent)
    if gpus is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpus.get())
    if threads is not None:
        torch.set_num_threads(threads)


def _exit_with_parent(parent: int, every_s: float = 1.0) -> None:
    """Ends this worker when the study process that started it is gone (killed with SIGKILL,
    or any end that ran no clean-up): a worker never trains on as an orphan. A killed run
    resumes from its checkpoint the next time the study runs."""
    import threading

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every_s)
        os._exit(1)

    threading.Thread(target=watch, name="unimix-exit-with-parent", daemon=True).start()


@contextmanager
def _terminate_becomes_exit() -> Iterator[None]:
    """SIGTERM (a scheduler's time limit, ``kill``) ends the study like Ctrl-C: the workers are
    stopped and finished runs kept, instead of the process vanishing with its workers orphaned."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run_in_worker(run: StudyRun, cfg: StudyConfig) -> str:
    """:func:`run_one` in a local worker: its epoch lines go to ``<run_dir>.log``, not the
    terminal that shows the study's progress."""
    if _EVENTS is not None:
        _EVENTS.put(("start", run.name, os.getpid()))
    run.run_dir.parent.mkdir(parents=True, exist_ok=True)
    log = run.run_dir.with_name(run.run_dir.name + ".log")
    with open(log, "a", encoding="utf-8") as fh, redirect_stdout(fh), redirect_stderr(fh):
        return run_one(run, cfg)


@_terminate_becomes_exit()
def _execute_local(
    cfg: StudyConfig,
    left: Sequence[StudyRun],
    workers: int,
    report: Report,
    after_run: Callable[[StudyRun], None] | None,
) -> None:
    from multiprocessing.managers import SyncManager

    ctx = multiprocessing.get_context("spawn")
    manager = SyncManager(ctx=ctx)
    manager.start(_exit_with_parent, (os.getpid(),))  # no orphaned manager either
    events = manager.Queue()
    pending = list(left)
    try:
        while pending:
            gpus = None
            if _cuda_runs(cfg):
                gpus = manager.Queue()
                for i in range(workers):
                    gpus.put(i % max(1, torch.cuda.device_count()))
            pool = cf.ProcessPoolExecutor(
                max_workers=min(workers, len(pending)),
                mp_context=ctx,
                initializer=_init_worker,
                initargs=(events, gpus, cfg.threads if cfg.device != "cuda" else None, os.getpid()),
            )
            broken = stopping = False
            try:
                futures = {pool.submit(_run_in_worker, r, cfg): r for r in pending}
                not_done = set(futures)
                while not_done:
                    done, not_done = cf.wait(not_done, timeout=0.5, return_when=cf.FIRST_COMPLETED)
                    for fut in done:
                        run = futures[fut]
                        try:
                            fut.result()
                        except cf.process.BrokenProcessPool:
                            broken = True
                            continue
                        pending.remove(run)
                        report("done", run.name)
                        if after_run is not None:
                            after_run(run)
                    _drain(events, report)
            except BaseException:
                stopping = True  # interrupted: do not wait for the running runs to finish
                raise
            finally:
                pool.shutdown(wait=not (broken or stopping), cancel_futures=True)
            _drain(events, report)
            if broken:  # a worker died: start the unfinished runs again (they resume)
                for run in pending:
                    _check_attempts(run, cfg)
                    if _starts(run):
                        report("retry", run.name)
    except BaseException:
        for child in multiprocessing.active_children():
            child.terminate()
        raise
    finally:
        manager.shutdown()


def _drain(events: Any, report: Report) -> None:
    while True:
        try:
            event, name, _pid = events.get_nowait()
        except Exception:  # queue.Empty, or the manager already gone
            return
        report(event, name)


# ray --------------------------------------------------------------------------------------------


def _ray_run(run: StudyRun, cfg: StudyConfig, token: str) -> str:
    marker = cfg.out.resolve() / ".unimix-shared-check"
    if not marker.is_file() or marker.read_text() != token:
        raise RuntimeError(
            f"the study folder {str(cfg.out)!r} is not visible on node {socket.gethostname()}: "
            "--out must be on storage that every node of the Ray cluster sees"
        )
    return run_one(run, cfg)


def _execute_ray(cfg: StudyConfig, left: Sequence[StudyRun], workers: int, report: Report) -> None:
    try:
        import ray
    except ImportError as err:
        raise ValueError("--executor ray needs Ray: pip install 'unimix[ray]'") from err
    started_here = not ray.is_initialized()
    if started_here:
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if cfg.ray_address:
            kwargs["address"] = cfg.ray_address
        else:
            kwargs["num_cpus"] = workers * (cfg.threads or 1)
        ray.init(**kwargs)
    token = f"{os.getpid()}-{time.time()}"
    marker = cfg.out.resolve() / ".unimix-shared-check"
    marker.write_text(token)
    try:
        gpus = 1 if _cuda_runs(cfg) else 0
        task = ray.remote(_ray_run).options(
            num_cpus=cfg.threads or 1, num_gpus=gpus, max_retries=cfg.max_retries
        )
        refs = {task.remote(r, cfg, token): r for r in left}
        for r in left:
            report("queued", r.name)
        remaining = list(refs)
        while remaining:
            done, remaining = ray.wait(remaining, num_returns=1)
            for ref in done:
                ray.get(ref)  # raises the run's error (after Ray's retries)
                report("done", refs[ref].name)
    finally:
        marker.unlink(missing_ok=True)
        if started_here:
            ray.shutdown()


# slurm ------------------------------------------------------------------------------------------


def _execute_slurm(
    cfg: StudyConfig, left: Sequence[StudyRun], report: Report, round_: int = 0
) -> None:
    try:
        import submitit
    except ImportError as err:
        raise ValueError("--executor slurm needs submitit: pip install 'unimix[slurm]'") from err
    folder = cfg.out / "slurm"
    folder.mkdir(parents=True, exist_ok=True)
    jobs_file = folder / "jobs.json"
    known: dict[str, dict[str, str]] = (
        json.loads(jobs_file.read_text()) if jobs_file.is_file() else {}
    )
    cluster = cfg.slurm_cluster or "slurm"
    by_name = {r.name: r for r in left}
    jobs: dict[str, Any] = {}
    if cluster == "slurm":  # pick up the jobs of an earlier call that are still queued or running
        for name, entry in known.items():
            if name in by_name:
                job = submitit.SlurmJob(folder=entry["folder"], job_id=entry["job_id"])
                if job.state in ("PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING"):
                    jobs[name] = job
                    report("queued" if job.state == "PENDING" else "start", name)
    to_submit = [r for r in left if r.name not in jobs]
    for run in to_submit:
        _check_attempts(run, cfg)
    if to_submit:
        executor = submitit.AutoExecutor(folder=folder / "%j", cluster=cluster)
        params: dict[str, Any] = {
            "timeout_min": cfg.slurm_time,
            "gpus_per_node": cfg.gpus_per_run,
            "cpus_per_task": cfg.threads or 1,
            "tasks_per_node": 1,
            "nodes": 1,
        }
        if cluster == "slurm":
            params["slurm_partition"] = cfg.slurm_partition
            params["slurm_additional_parameters"] = dict(cfg.slurm_options)
        executor.update_parameters(**{k: v for k, v in params.items() if v is not None})
        submitted = executor.map_array(run_one, to_submit, [cfg] * len(to_submit))
        for run, job in zip(to_submit, submitted, strict=True):
            jobs[run.name] = job
            known[run.name] = {"job_id": str(job.job_id), "folder": str(folder / "%j")}
            report("queued", run.name)
        atomic_write_text(jobs_file, json.dumps(known, indent=1) + "\n")
    failed: list[str] = []
    while jobs:
        for name, job in list(jobs.items()):
            if not job.done():
                continue
            del jobs[name]
            try:
                job.result()
            except Exception as err:  # a failed task: retried below from its checkpoint
                report("failed", f"{name}: {str(err).splitlines()[-1] if str(err) else err}")
                failed.append(name)
                continue
            report("done", name)
        if jobs:
            time.sleep(1.0)
    if failed:
        if round_ >= cfg.max_retries:
            raise RuntimeError(
                f"{len(failed)} SLURM task(s) failed {round_ + 1} times: {', '.join(failed)}; "
                f"their logs are under {folder}"
            )
        again = [by_name[n] for n in failed]
        for run in again:
            report("retry", run.name)
        _execute_slurm(cfg, again, report, round_ + 1)


def eta_text(seconds: float) -> str:
    """``1:02:03`` (or ``?`` when unknown)."""
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
