"""Deployment profiles (deploy.json): what `mnist-edge tune` chose on one CPU, read back by
`Predictor.from_profile`, `predict --profile` and `serve --profile`. The file's keys are the
fields of `Profile`, spelled once, here.

A profile is refused on a CPU with other SIMD flags (the ranking and, for integer and bf16
kernels, the answers may differ there) and when its model file changed since it was tuned.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .. import __version__
from .errors import ArtifactError, ConfigError, reading
from .files import sha256, utc_now, write_json
from .machine import cpu_flags, isa_class, measured_on

NAME = "deploy.json"
KIND = "mnist-edge deployment profile"


@dataclass(frozen=True)
class Profile:
    """One deployment profile, as deploy.json holds it."""

    model: str  # the model file, relative to the profile's folder
    model_sha256: str
    backend: str
    format: str
    precision: str
    threads: int
    case: str = ""  # the catalogue's name for (backend, format, precision)
    objective: str = "latency"
    measured: dict[str, Any] = field(default_factory=dict)  # p50, images/s, load, RSS
    gate: dict[str, Any] = field(default_factory=dict)  # the rule's figures on test digits
    rule: dict[str, Any] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=measured_on)  # where it was tuned
    created: str = field(default_factory=utc_now)
    mnist_edge_version: str = __version__
    kind: str = KIND


@dataclass(frozen=True)
class Loaded:
    """A profile read back and checked, with its model's path resolved."""

    profile: Profile
    path: Path  # the deploy.json
    model_path: Path


def write(path: Path | str, profile: Profile) -> Path:
    """Write `profile` to `path` atomically."""
    path = Path(path)
    write_json(path, asdict(profile))
    return path


def relative_model(model: Path | str, profile_path: Path | str) -> str:
    """How a profile at `profile_path` names `model`: relative to the profile's folder."""
    return os.path.relpath(Path(model).resolve(), Path(profile_path).parent.resolve())


def read(path: Path | str) -> Loaded:
    """A deployment profile, checked to be one and to fit this CPU and its model file."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"no deployment profile at {path}; make one with `mnist-edge tune`")
    with reading(path, "a deployment profile (JSON)", ArtifactError):
        data = json.loads(path.read_text())
    names = {f.name for f in fields(Profile)}
    required = ("model", "model_sha256", "backend", "format", "precision", "threads", "machine")
    if (
        not isinstance(data, dict)
        or data.get("kind") != KIND
        or any(k not in data for k in required)
        or not isinstance(data["machine"], dict)
    ):
        raise ArtifactError(f"{path} is not a deployment profile made by `mnist-edge tune`")
    try:
        profile = Profile(**{k: v for k, v in data.items() if k in names})
    except TypeError as exc:
        raise ArtifactError(
            f"{path} is not a deployment profile made by `mnist-edge tune`"
        ) from exc
    theirs = profile.machine.get("cpu_flags")
    if theirs != cpu_flags():
        raise ConfigError(
            f"{path} was tuned on a CPU with other flags ({profile.machine.get('isa_class')}: "
            f"{' '.join(theirs or []) or 'none'}); this one is {isa_class()} "
            f"({' '.join(cpu_flags()) or 'none'}): run `mnist-edge tune` on this machine"
        )
    model = Path(os.path.normpath(path.parent / profile.model))
    if not model.is_file() or sha256(model) != profile.model_sha256:
        raise ArtifactError(f"{path} names {model}, which is missing or changed since it was "
                            "tuned: run `mnist-edge tune` again")  # fmt: skip
    return Loaded(profile, path, model)
