"""A Triton model repository, written from the exported models and read back (torch-free): the
hand-off to engines that this package does not run (Triton Inference Server, KServe on Triton),
and one of the layouts `mnist-edge serve --model-repository` serves. This module alone reads and
writes the layout.

    triton/
      mnist/config.pbtxt         onnxruntime backend, max_batch_size, dynamic batching, CPU
      mnist/labels.txt           the class names, for Triton's classification extension
      mnist/1/model.onnx         the fp32 ONNX file, byte for byte
      mnist_int8/config.pbtxt    the same for the INT8 model, when one was made (quantize)
      mnist_int8/1/model.onnx

With `max_batch_size` above 0 Triton makes the first dimension implicit: the dims in the config
are the ONNX file's own shapes without their batch dimension, read from the file (which must
have a dynamic batch). The batching defaults are the server's (policy.SERVE_*). The whole
repository is written beside the destination and renamed into place: a reader never sees half
of one.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from . import policy, spec
from .errors import ArtifactError, OutputError
from .files import atomic_write
from .runners import load_runner

REPOSITORY = "triton"  # the repository's folder inside the output folder
VERSION = "1"
LABELS = "labels.txt"  # one class name a line: Triton's classification extension reads it
DATA_TYPES = {"tensor(float)": "TYPE_FP32", "tensor(float16)": "TYPE_FP16",
              "tensor(int64)": "TYPE_INT64", "tensor(uint8)": "TYPE_UINT8"}  # fmt: skip


@dataclass(frozen=True)
class TritonConfig:
    """One model of the repository."""

    name: str = "mnist"
    max_batch_size: int = policy.SERVE_MAX_BATCH
    max_queue_delay_us: int = policy.SERVE_MAX_DELAY_US
    instances: int = 1  # CPU instances of the model
    intra_op_threads: int = 0  # ONNX Runtime's threads per instance (0: Triton's default)


DEFAULT = TritonConfig()


@dataclass(frozen=True)
class TritonModel:
    name: str
    config: Path
    model: Path
    inputs: dict[str, list[int]] = field(default_factory=dict)  # name -> dims without batch
    outputs: dict[str, list[int]] = field(default_factory=dict)


@dataclass(frozen=True)
class TritonRepository:
    root: Path
    models: list[TritonModel]
    skipped: list[str] = field(default_factory=list)  # what was left out, and why


def _tensors(values: list) -> dict[str, tuple[str, list[int]]]:
    out = {}
    for v in values:
        shape = list(v.shape)
        if not shape or isinstance(shape[0], int):
            raise ArtifactError(f"{v.name} has a fixed batch dimension {shape}: Triton's "
                                "dynamic batching needs a dynamic one (re-export)")  # fmt: skip
        if not all(isinstance(d, int) for d in shape[1:]):
            raise ArtifactError(f"{v.name} has a dynamic dimension past the batch: {shape}")
        if v.type not in DATA_TYPES:
            raise ArtifactError(f"{v.name} has type {v.type}, which this writer does not map")
        out[v.name] = (DATA_TYPES[v.type], shape[1:])
    return out


def shapes(model: Path) -> tuple[dict, dict]:
    """The model's inputs and outputs: name -> (Triton data type, dims without the batch), read
    through the catalogue's ONNX Runtime runner (which also checks it is an MNIST classifier)."""
    runner = load_runner(model, fmt="onnx", backend="onnxruntime", threads=1)
    session = runner.session
    return _tensors(session.get_inputs()), _tensors(session.get_outputs())


def read_model(folder: Path | str) -> tuple[str, str, Path] | None:
    """A model folder of a Triton repository -> (its name, its newest version, that version's
    model.onnx); None when the folder is not one (no numbered version with a model.onnx).
    Triton names a model by its folder and serves its newest version by default
    (version_policy latest 1), and so does `mnist-edge serve --model-repository`."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    versions = [d for d in folder.iterdir()
                if d.name.isdigit() and (d / "model.onnx").is_file()]  # fmt: skip
    if not versions:
        return None
    newest = max(versions, key=lambda d: int(d.name))
    return folder.name, newest.name, newest / "model.onnx"


def is_model_folder(folder: Path | str) -> bool:
    """Whether `folder` looks like a Triton model folder (a config.pbtxt or numbered versions)."""
    folder = Path(folder)
    return folder.is_dir() and ((folder / "config.pbtxt").is_file() or any(
        d.name.isdigit() and d.is_dir() for d in folder.iterdir()))  # fmt: skip


def config_text(cfg: TritonConfig, inputs: dict, outputs: dict) -> str:
    """config.pbtxt in protobuf text format (Triton's ModelConfig)."""

    def block(kind: str, tensors: dict) -> str:
        labelled = f'\n    label_filename: "{LABELS}"' if kind == "output" else ""
        rows = [f'  {{\n    name: "{name}"\n    data_type: {dtype}\n'
                f'    dims: [ {", ".join(map(str, dims))} ]{labelled}\n  }}'
                for name, (dtype, dims) in tensors.items()]  # fmt: skip
        return f"{kind} [\n" + ",\n".join(rows) + "\n]\n"

    preferred = sorted({b for b in (8, 16, 32, cfg.max_batch_size) if b <= cfg.max_batch_size})
    text = (
        f'name: "{cfg.name}"\nbackend: "onnxruntime"\nmax_batch_size: {cfg.max_batch_size}\n'
        + block("input", inputs) + block("output", outputs)
        + "dynamic_batching {\n"
        + f"  preferred_batch_size: [ {', '.join(map(str, preferred))} ]\n"
        + f"  max_queue_delay_microseconds: {cfg.max_queue_delay_us}\n}}\n"
        + f"instance_group [\n  {{\n    count: {cfg.instances}\n    kind: KIND_CPU\n  }}\n]\n"
        + "version_policy: { latest: { num_versions: 1 } }\n"
    )  # fmt: skip
    if cfg.intra_op_threads:
        text += ('parameters { key: "intra_op_thread_count" value: { string_value: "'
                 f'{cfg.intra_op_threads}" }} }}\n')  # fmt: skip
    return text


def write_repository(output_dir: Path | str, fp32: Path, int8: Path | None = None,
                     cfg: TritonConfig = DEFAULT) -> TritonRepository:  # fmt: skip
    """OUTPUT_DIR/triton with the fp32 model and, when given, the INT8 one (name + "_int8")."""
    root = Path(output_dir) / REPOSITORY
    staged = root.with_name(root.name + ".part")
    shutil.rmtree(staged, ignore_errors=True)
    models, skipped = [], []
    wanted = [(cfg, fp32)]
    if int8 is not None and Path(int8).is_file():
        wanted.append((TritonConfig(**{**cfg.__dict__, "name": cfg.name + "_int8"}), Path(int8)))
    else:
        skipped.append(f"{cfg.name}_int8: no INT8 model at {int8} (make one with "
                       "`mnist-edge quantize`, or export with --quantize int8)")  # fmt: skip
    try:
        for model_cfg, source in wanted:
            inputs, outputs = shapes(Path(source))
            folder = staged / model_cfg.name
            (folder / VERSION).mkdir(parents=True)
            shutil.copyfile(source, folder / VERSION / "model.onnx")
            (folder / LABELS).write_text("".join(f"{c}\n" for c in spec.CLASS_LABELS))
            text = config_text(model_cfg, inputs, outputs)
            atomic_write(folder / "config.pbtxt", lambda tmp, t=text: tmp.write_text(t))
            final = root / model_cfg.name
            models.append(TritonModel(model_cfg.name, final / "config.pbtxt",
                                      final / VERSION / "model.onnx",
                                      {k: d for k, (_, d) in inputs.items()},
                                      {k: d for k, (_, d) in outputs.items()}))  # fmt: skip
        old = root.with_name(root.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if root.exists():
            os.replace(root, old)
        os.replace(staged, root)
        shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        shutil.rmtree(staged, ignore_errors=True)
        raise OutputError(f"cannot write the Triton repository {root}: {exc.strerror or exc}"
                          ) from None  # fmt: skip
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    return TritonRepository(root, models, skipped)
