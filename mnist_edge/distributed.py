"""Devices and multi-process training (torchrun + DistributedDataParallel).

`torchrun --nproc-per-node N -m mnist_edge train ...` sets RANK, WORLD_SIZE and LOCAL_RANK;
`setup` then joins the process group: gloo on CPU, nccl on CUDA. Without those variables
everything here is a no-op and training runs in one process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch

from .edge.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda", "mps")
TIMEOUT = timedelta(seconds=int(os.environ.get("MNIST_EDGE_DIST_TIMEOUT", "300")))


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """'auto' -> cuda when present, else mps, else cpu; checks that a named device exists."""
    if name not in DEVICES:
        raise ConfigError(f"unknown device {name!r}; choose from {', '.join(DEVICES)}")
    has_mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda asked for, but torch sees no CUDA device")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    if name == "mps" and not has_mps:
        raise ConfigError("--device mps asked for, but torch sees no MPS device")
    return torch.device(name)


def env_info() -> DistInfo:
    """RANK/WORLD_SIZE/LOCAL_RANK as torchrun sets them (defaults: a single process)."""
    try:
        return DistInfo(
            rank=int(os.environ.get("RANK", 0)),
            world_size=int(os.environ.get("WORLD_SIZE", 1)),
            local_rank=int(os.environ.get("LOCAL_RANK", 0)),
        )
    except ValueError as exc:
        raise ConfigError(f"RANK/WORLD_SIZE/LOCAL_RANK must be integers: {exc}") from exc


def setup(device: torch.device) -> DistInfo:
    """Join the process group when launched by torchrun; a no-op otherwise."""
    info = env_info()
    if info.enabled and not torch.distributed.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        torch.distributed.init_process_group(backend=backend, timeout=TIMEOUT)
    return info


def teardown() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        torch.distributed.barrier()


def wrap(model: torch.nn.Module, info: DistInfo, device: torch.device) -> torch.nn.Module:
    """DistributedDataParallel when distributed (averages gradients across ranks)."""
    if not info.enabled:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


def to_cpu(obj: Any) -> Any:
    """Tensors anywhere in nested dicts/lists moved to the CPU (device-independent checkpoints)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


def rank_checksums(model: torch.nn.Module, info: DistInfo) -> list[float]:
    """A float64 checksum of the weights from every rank (one value when not distributed).

    DDP keeps replicas identical; gathering the checksums proves it for each run.
    """
    flat = torch.cat([p.detach().reshape(-1).double().cpu() for p in model.parameters()])
    mine = (flat * torch.linspace(1, 2, len(flat), dtype=torch.float64)).sum().reshape(1)
    if not info.enabled:
        return [mine.item()]
    device = next(model.parameters()).device
    everyone = [torch.zeros(1, dtype=torch.float64, device=device) for _ in range(info.world_size)]
    torch.distributed.all_gather(everyone, mine.to(device))
    return [t.item() for t in everyone]
