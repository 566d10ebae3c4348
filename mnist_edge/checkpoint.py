"""Self-describing training checkpoints: save atomically, load safely, rebuild the model.

A checkpoint is a dict of plain tensors, numbers, strings, lists and dicts, so that
`torch.load(path, weights_only=True)` reads it and a stranger's file cannot run code.
It carries the model's config, so it rebuilds its model with no flags. A bare state_dict of this
architecture loads too, and so does an fp32 ONNX file that mnist-edge exported (its initializers
are the state_dict's tensors, by name): the packaged model can then be exported to the other
formats without its training checkpoint.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from . import __version__
from .edge import layout, spec
from .edge.errors import CheckpointError, missing_dependency, reading
from .edge.files import atomic_write, sha256
from .model import MnistCNN

FORMAT = "mnist-edge-checkpoint"
FORMAT_VERSION = 1
ARCHITECTURE = "mnist-cnn-3conv"
CHECKPOINT_NAME = layout.CHECKPOINT


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint (see `save` for the keys)."""

    path: Path
    model_state: dict[str, torch.Tensor]
    model_config: dict[str, Any]  # architecture, image_size, in_channels, num_classes
    train_config: dict[str, Any] = field(default_factory=dict)
    epoch: int = 0
    metrics: list[dict[str, Any]] = field(default_factory=list)  # one dict per epoch
    test_accuracy: float | None = None  # percent, after the last epoch
    data_sha256: dict[str, str] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    optimizer_state: dict[str, Any] | None = None
    test_images: int | None = None  # how many test images test_accuracy was measured on
    distributed: dict[str, Any] = field(default_factory=dict)  # world size, rank checksums

    # what save() writes besides the format header, in this order
    SAVED: ClassVar[tuple[str, ...]] = (
        "model_state", "model_config", "train_config", "epoch", "optimizer_state", "metrics",
        "test_accuracy", "test_images", "data_sha256", "versions", "distributed",
    )  # fmt: skip

    def build_model(self) -> MnistCNN:
        """The model with these weights, in eval mode, on the CPU."""
        kw = {k: self.model_config[k] for k in ("image_size", "in_channels", "num_classes")}
        model = MnistCNN(**kw)
        with reading(self.path, "a checkpoint of this architecture", CheckpointError):
            model.load_state_dict(self.model_state, strict=True)
        return model.eval()

    def sha256(self) -> str:
        return sha256(self.path)


def versions() -> dict[str, str]:
    """Plain-string versions (torch.__version__ is a class that weights_only refuses)."""
    import torchvision

    return {
        "mnist_edge": __version__,
        "torch": str(torch.__version__),
        "torchvision": str(torchvision.__version__),
        "python": platform.python_version(),
    }


def model_config() -> dict[str, Any]:
    return {
        "architecture": ARCHITECTURE,
        "image_size": spec.IMAGE_SIZE,
        "in_channels": spec.CHANNELS,
        "num_classes": spec.NUM_CLASSES,
    }


def save(ckpt: Checkpoint) -> None:
    """Write a checkpoint to ckpt.path atomically (temp file in the same folder, then rename)."""
    full = {"format": FORMAT, "format_version": FORMAT_VERSION}
    full.update({key: getattr(ckpt, key) for key in Checkpoint.SAVED})
    atomic_write(ckpt.path, lambda tmp: _save(full, tmp))


def _save(obj: dict, tmp: Path) -> None:
    # Through a file object we close: torch's own writer, given a name, keeps the file open for
    # as long as its exception lives (a full disk then cannot even be unmounted).
    with open(tmp, "wb") as f:
        torch.save(obj, f)


def _is_bare_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and "conv1.weight" in obj and "fc.weight" in obj


def from_onnx(path: Path) -> Checkpoint:
    """The weights of an fp32 ONNX file mnist-edge exported (initializers named as the model's
    state_dict), as a checkpoint with no training history."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise missing_dependency("onnx", "reading weights from an ONNX file") from None
    with reading(path, "a readable ONNX model", CheckpointError):
        weights = {i.name: i for i in onnx.load(str(path)).graph.initializer}
    want = MnistCNN().state_dict()
    if not set(want) <= set(weights):
        raise CheckpointError(f"{path} is not an fp32 ONNX export of this model by mnist-edge (its "
                              "weights are not named conv1.weight ... fc.bias)")  # fmt: skip
    state = {k: torch.from_numpy(numpy_helper.to_array(weights[k]).copy()) for k in want}
    return Checkpoint(path=path, model_state=state, model_config=model_config())


def load(path: Path | str) -> Checkpoint:
    """Load and validate a checkpoint (also a bare state_dict of this architecture, or the
    weights of an fp32 ONNX file mnist-edge exported)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}; train one with `mnist-edge train`")
    if path.name.endswith(".onnx") and not path.name.endswith(".int8.onnx"):
        return from_onnx(path)
    with reading(path, "a readable checkpoint", CheckpointError):
        obj = torch.load(path, map_location="cpu", weights_only=True)
    if _is_bare_state_dict(obj):  # e.g. torch.save(model.state_dict()) from the original script
        return Checkpoint(path=path, model_state=obj, model_config=model_config())
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an mnist-edge checkpoint")
    if obj.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{path} was written by a newer mnist-edge; upgrade to read it")
    cfg = obj.get("model_config", {})
    if cfg.get("architecture") != ARCHITECTURE:
        raise CheckpointError(
            f"{path} is a checkpoint of architecture {cfg.get('architecture')!r}, "
            f"not {ARCHITECTURE!r}"
        )
    return Checkpoint(
        path=path,
        model_state=obj["model_state"],
        model_config=cfg,
        train_config=obj.get("train_config", {}),
        epoch=int(obj.get("epoch", 0)),
        metrics=list(obj.get("metrics", [])),
        test_accuracy=obj.get("test_accuracy"),
        data_sha256=dict(obj.get("data_sha256", {})),
        versions=dict(obj.get("versions", {})),
        optimizer_state=obj.get("optimizer_state"),
        test_images=obj.get("test_images"),
        distributed=dict(obj.get("distributed") or {}),
    )


def load_model(path: Path | str) -> tuple[MnistCNN, Checkpoint]:
    """Load a checkpoint and rebuild its model (eval mode)."""
    ckpt = load(path)
    return ckpt.build_model(), ckpt
