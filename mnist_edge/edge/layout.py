"""Every format a model comes in, and where its file lives: the one Format table (torch-free).

`FORMATS` is the table every other module reads (the catalogue, export, tune, parity, the
"missing file" errors): a format's file name in a model folder, the suffixes that tell it from a
name, the precision it computes at unless asked otherwise, whether `export` writes it, whether it
is a file an application deploys, and how to make it. `Layout(folder)` names the checkpoint,
each format's file, the ORT operator config and the manifest inside one folder;
`format_of(path)` tells an artifact's format from its name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import ArtifactError
from .machine import has_module


@dataclass(frozen=True)
class Format:
    """One file format of the model."""

    name: str  # "onnx", "onnx-int8", ...
    filename: str  # its file in a model folder
    suffixes: tuple[str, ...]  # what format_of recognises it by
    how: str  # how to make one (said when the file is missing)
    precision: str = "fp32"  # what it computes at unless asked otherwise
    exported: bool = False  # `mnist-edge export --format` writes it
    deployable: bool = False  # a file an application ships (tune tries it)
    int8: str | None = None  # the format of its INT8 sibling (`export --quantize int8`)
    converter: str | None = None  # the module that writes it, when not the train extra's
    extra: str | None = None  # the pip extra that brings the converter

    @property
    def task_judged(self) -> bool:
        """Judged on the task (accuracy, agreement), not element by element: quantized files."""
        return self.precision == "int8"


# In the order export writes them (the ORT file is converted from the ONNX one).
FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("checkpoint", "mnist_cnn.pt", (".pt", ".pth"),
           "train one with `mnist-edge train` or pass --checkpoint"),
    Format("onnx", "mnist_cnn.onnx", (".onnx",),
           "export one with `mnist-edge export --format onnx`", exported=True, deployable=True,
           int8="onnx-int8"),
    Format("torchscript", "mnist_cnn.torchscript.pt", (".torchscript.pt", ".jit.pt", ".ts"),
           "export one with `mnist-edge export --format torchscript`", exported=True,
           deployable=True),
    Format("pt2", "mnist_cnn.pt2", (".pt2",),
           "export one with `mnist-edge export --format pt2`", exported=True, deployable=True),
    Format("ort", "mnist_cnn.ort", (".ort",),
           "export one with `mnist-edge export --format ort`", exported=True, deployable=True),
    Format("onnx-int8", "mnist_cnn.int8.onnx", (".int8.onnx",),
           "make one with `mnist-edge quantize`", precision="int8", deployable=True),
    Format("executorch", "mnist_cnn.pte", (".pte",),
           "export one with `mnist-edge export --format executorch`", exported=True,
           deployable=True, int8="executorch-int8", converter="executorch", extra="executorch"),
    Format("executorch-int8", "mnist_cnn.int8.pte", (".int8.pte",),
           "make one with `mnist-edge export --format executorch --quantize int8`",
           precision="int8", deployable=True, converter="executorch", extra="executorch"),
    Format("litert", "mnist_cnn.tflite", (".tflite",),
           "export one with `mnist-edge export --format litert`", exported=True, deployable=True,
           int8="litert-int8", converter="litert_torch", extra="litert-export"),
    Format("litert-int8", "mnist_cnn.int8.tflite", (".int8.tflite",),
           "make one with `mnist-edge export --format litert --quantize int8`",
           precision="int8", deployable=True, converter="litert_torch", extra="litert-export"),
)}  # fmt: skip

EXPORTED = tuple(name for name, f in FORMATS.items() if f.exported)
QUANTIZABLE = tuple(name for name, f in FORMATS.items() if f.int8)  # export --quantize int8
DEPLOYABLE = tuple(name for name, f in FORMATS.items() if f.deployable)
# artifact file names by format (the checkpoint is not an artifact)
FILENAMES = {name: f.filename for name, f in FORMATS.items() if name != "checkpoint"}
CHECKPOINT = FORMATS["checkpoint"].filename
MANIFEST = "manifest.json"
ORT_CONFIG = "mnist_cnn.required_operators.config"
# longest suffix first: "x.int8.onnx" is onnx-int8, not onnx
_SUFFIXES = sorted(((s, f.name) for f in FORMATS.values() for s in f.suffixes),
                   key=lambda pair: -len(pair[0]))  # fmt: skip


def get(fmt: str) -> Format:
    if fmt not in FORMATS:
        raise ArtifactError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")
    return FORMATS[fmt]


def converter_installed(fmt: str) -> bool:
    """Whether this install can write `fmt` (its converter's package is importable; the train
    extra's formats are judged by the command that needs torch)."""
    converter = get(fmt).converter
    return converter is None or has_module(converter)


def exportable() -> tuple[str, ...]:
    """The exported formats this install can write: what `--format all` means here."""
    return tuple(f for f in EXPORTED if converter_installed(f))


def missing(path: Path | str, fmt: str) -> ArtifactError:
    """The error for a model file that is not there: where, and how to make one."""
    how = FORMATS[fmt].how if fmt in FORMATS else "export one with `mnist-edge export`"
    return ArtifactError(f"no model at {path} ({fmt}); {how}")


def require(path: Path | str, fmt: str) -> Path:
    """`path`, when it is a file; the `missing` error otherwise."""
    path = Path(path)
    if not path.is_file():
        raise missing(path, fmt)
    return path


@dataclass(frozen=True)
class Layout:
    """The files of one model folder (default: exports/)."""

    root: Path = Path("exports")

    @classmethod
    def beside(cls, path: Path | str) -> Layout:
        """The layout of the folder that holds `path`."""
        return cls(Path(path).parent)

    def artifact(self, fmt: str) -> Path:
        return self.root / get(fmt).filename

    @property
    def checkpoint(self) -> Path:
        return self.artifact("checkpoint")

    # the exported formats by name (Layout(d).onnx == Layout(d).artifact("onnx"), ...)
    onnx = property(lambda self: self.artifact("onnx"))
    int8 = property(lambda self: self.artifact("onnx-int8"))
    ort = property(lambda self: self.artifact("ort"))
    torchscript = property(lambda self: self.artifact("torchscript"))
    pt2 = property(lambda self: self.artifact("pt2"))
    pte = property(lambda self: self.artifact("executorch"))
    tflite = property(lambda self: self.artifact("litert"))

    @property
    def ort_config(self) -> Path:
        return self.root / ORT_CONFIG

    @property
    def manifest(self) -> Path:
        return self.root / MANIFEST


def format_of(path: Path | str) -> str:
    """An artifact's format from its file name (a checkpoint is "checkpoint")."""
    name = Path(path).name
    for suffix, fmt in _SUFFIXES:
        if name.endswith(suffix):
            return fmt
    raise ArtifactError(
        f"cannot tell the format of {path}; expected .onnx, .ort, .torchscript.pt, .pt2, .pte, "
        ".tflite or a .pt checkpoint"
    )
