"""Several processes (GPUs, nodes) through ``torchrun`` and DistributedDataParallel.

``torchrun --nproc_per_node N -m unimix.cli train ...`` starts ``N`` copies of the command with
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and ``MASTER_ADDR``/``MASTER_PORT`` set; :func:`setup`
reads them and joins the process group (``nccl`` on CUDA, ``gloo`` on CPU). Without those
variables it is one process and nothing distributed happens. A process group that the caller has
already initialised (e.g. with :func:`torch.multiprocessing.spawn`) is used as it is.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "DistInfo",
    "setup",
    "teardown",
    "all_reduce_sum",
    "all_gather_objects",
    "barrier",
    "any_rank",
    "max_over_ranks",
    "broadcast_buffers",
]


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: its rank among ``world_size`` and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that prints and writes files."""
        return self.rank == 0


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} must be an integer") from None


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    """``"auto"`` → this rank's GPU when CUDA is available, else the CPU; ``"cuda"`` → this
    rank's GPU; anything else as :class:`torch.device` reads it."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(
            f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}"
        ) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {device!r} was asked for but CUDA is not available; use device=cpu"
            )
        if dev.index is None:
            dev = torch.device("cuda", local_rank % torch.cuda.device_count())
    return dev


def setup(device: str = "auto") -> DistInfo:
    """Join the process group described by the environment (or an existing one).

    Returns the rank, world size and the device this rank trains on.
    """
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        local = _env_int("LOCAL_RANK")
        local = rank if local is None else local
        return DistInfo(rank, world, local, resolve_device(device, local), owns_group=False)
    world = _env_int("WORLD_SIZE")
    if world is None or world <= 1:
        return DistInfo(device=resolve_device(device, 0))
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed")
    rank = _env_int("RANK")
    local = _env_int("LOCAL_RANK")
    if rank is None:
        raise ValueError("WORLD_SIZE is set but RANK is not; launch with torchrun")
    local = rank if local is None else local
    dev = resolve_device(device, local)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    kwargs: dict[str, Any] = {"backend": backend, "rank": rank, "world_size": world}
    if dev.type == "cuda":
        kwargs["device_id"] = dev
    dist.init_process_group(**kwargs)
    return DistInfo(rank, world, local, dev, owns_group=True)


def teardown(info: DistInfo) -> None:
    """Leave the process group if :func:`setup` created it."""
    if info.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum ``values`` over ranks (in place on a copy); identity on one process."""
    if not info.enabled:
        return values
    out = values.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def any_rank(flag: bool, info: DistInfo) -> bool:
    """True on every rank if ``flag`` is true on any rank (used to stop together)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def all_gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(info: DistInfo) -> None:
    """Wait until every rank gets here (nothing to wait for in a single process)."""
    if info.enabled:
        dist.barrier()


def max_over_ranks(value: float, info: DistInfo) -> float:
    """The largest ``value`` over ranks, on every rank; ``value`` itself on one process."""
    if not info.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def broadcast_buffers(model: torch.nn.Module, info: DistInfo) -> None:
    """Give every rank rank 0's buffers (BatchNorm statistics): DDP broadcasts them before each
    forward, so after the last step of an epoch the ranks' copies differ by that step alone."""
    if not info.enabled:
        return
    for buffer in model.buffers():
        dist.broadcast(buffer, src=0)
