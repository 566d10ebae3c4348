"""Where every file of a model lives: the one place artifact names are spelled (torch-free).

`Layout(folder)` names the checkpoint, each exported format, the ORT operator config and the
manifest inside one folder; `format_of(path)` tells an artifact's format from its name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import ArtifactError

CHECKPOINT = "mnist_cnn.pt"
MANIFEST = "manifest.json"
ORT_CONFIG = "mnist_cnn.required_operators.config"
FILENAMES = {
    "onnx": "mnist_cnn.onnx",
    "torchscript": "mnist_cnn.torchscript.pt",
    "pt2": "mnist_cnn.pt2",
    "ort": "mnist_cnn.ort",
    "onnx-int8": "mnist_cnn.int8.onnx",
}
ONNX_RUNTIME_FORMATS = ("onnx", "onnx-int8", "ort")  # what runs without torch
TORCH_FORMATS = ("checkpoint", "torchscript", "pt2")


@dataclass(frozen=True)
class Layout:
    """The files of one model folder (default: exports/)."""

    root: Path = Path("exports")

    @classmethod
    def beside(cls, path: Path | str) -> Layout:
        """The layout of the folder that holds `path`."""
        return cls(Path(path).parent)

    def artifact(self, fmt: str) -> Path:
        if fmt == "checkpoint":
            return self.checkpoint
        if fmt not in FILENAMES:
            raise ArtifactError(f"unknown format {fmt!r}; known: {', '.join(FILENAMES)}")
        return self.root / FILENAMES[fmt]

    @property
    def checkpoint(self) -> Path:
        return self.root / CHECKPOINT

    # the exported formats by name (Layout(d).onnx == Layout(d).artifact("onnx"), ...)
    onnx = property(lambda self: self.artifact("onnx"))
    int8 = property(lambda self: self.artifact("onnx-int8"))
    ort = property(lambda self: self.artifact("ort"))
    torchscript = property(lambda self: self.artifact("torchscript"))
    pt2 = property(lambda self: self.artifact("pt2"))

    @property
    def ort_config(self) -> Path:
        return self.root / ORT_CONFIG

    @property
    def manifest(self) -> Path:
        return self.root / MANIFEST


def format_of(path: Path | str) -> str:
    """An artifact's format from its file name (a checkpoint is "checkpoint")."""
    name = Path(path).name
    for suffix, fmt in (
        (".int8.onnx", "onnx-int8"),
        (".onnx", "onnx"),
        (".ort", "ort"),
        (".pt2", "pt2"),
        (".torchscript.pt", "torchscript"),
        (".jit.pt", "torchscript"),
        (".ts", "torchscript"),
        (".pt", "checkpoint"),
        (".pth", "checkpoint"),
    ):
        if name.endswith(suffix):
            return fmt
    raise ArtifactError(
        f"cannot tell the format of {path}; expected .onnx, .ort, .torchscript.pt, .pt2 "
        "or a .pt checkpoint"
    )
