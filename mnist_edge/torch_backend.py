"""The torch backend of the catalogue (edge.runners.BACKENDS): a training checkpoint (PyTorch
eager), TorchScript and torch.export (.pt2) files, in fp32. The `train` extra brings torch."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch

from .edge import spec
from .edge.backends.base import Runner
from .edge.errors import ArtifactError, reading
from .edge.runners import EXTRA_FILE

WHY_NOT = {"bf16": "the torch backend runs fp32", "int8": "the torch backend runs fp32"}


def precisions(fmt: str) -> tuple[str, ...]:
    return ("fp32",)


def load(path: Path, fmt: str, precision: str, threads: int | None, spin: bool = True) -> Runner:
    if threads:
        torch.set_num_threads(threads)
    if fmt == "checkpoint":
        from .checkpoint import load_model

        model, ckpt = load_model(path)
        return _runner(path, fmt, model, {spec.METADATA_PREFIX + "source_checkpoint_sha256":
                                          ckpt.sha256()})  # fmt: skip
    extra = {EXTRA_FILE: ""}
    with reading(path, "a loadable PyTorch archive", ArtifactError):
        if fmt == "pt2":
            module = torch.export.load(str(path), extra_files=extra).module()
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch.jit's deprecation notice
                module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra).eval()
    try:
        meta = json.loads(extra[EXTRA_FILE] or "{}")
    except ValueError:
        meta = {}
    return _runner(path, fmt, module, meta)


def _runner(path: Path, fmt: str, module, meta: dict[str, str]) -> Runner:
    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out = module(torch.from_numpy(x))
        if tuple(out.shape) != (len(x), spec.NUM_CLASSES):
            raise ArtifactError(f"{path} gave output shape {tuple(out.shape)} for batch {len(x)}")
        return out.numpy()

    return Runner(path, fmt, run, metadata=meta, session=module)
