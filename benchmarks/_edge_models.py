"""The packaged model in every runtime's format, for the runtime benchmarks: the packaged fp32
and INT8 ONNX files as they ship, and .pte / .tflite files (fp32 and INT8) exported from the
packaged fp32 weights with `export --format executorch,litert --quantize int8` (each INT8 file
gated by the INT8 rule on the whole test set). Made once per packaged model, kept under
~/.cache/mnist-edge/runtimes/<sha>/ (exports are byte-reproducible, so a cached folder is what
a new export would write)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from mnist_edge.edge.files import sha256
from mnist_edge.edge.layout import Layout
from mnist_edge.edge.runtime import pretrained_path

FORMATS = ("onnx", "onnx-int8", "executorch", "executorch-int8", "litert", "litert-int8")


def models_folder(cache: Path | None = None) -> Layout:
    """A folder with the six files (see the module's docstring); made if not cached."""
    fp32 = pretrained_path()
    root = cache or Path(os.environ.get("MNIST_EDGE_CACHE", Path.home() / ".cache" / "mnist-edge"))
    folder = Layout(root / "runtimes" / sha256(fp32)[:12])
    if all(folder.artifact(f).is_file() for f in FORMATS):
        return folder
    from mnist_edge.export import ExportConfig
    from mnist_edge.quantize import QuantConfig
    from mnist_edge.workflow import export_and_verify

    folder.root.mkdir(parents=True, exist_ok=True)
    run = export_and_verify(ExportConfig(str(fp32), str(folder.root), ("executorch", "litert")),
                            quant=QuantConfig(model=str(folder.onnx)))  # fmt: skip
    if run.problems():
        raise SystemExit("; ".join(run.problems()))
    shutil.copyfile(fp32, folder.onnx)
    shutil.copyfile(pretrained_path(int8=True), folder.int8)
    return folder
