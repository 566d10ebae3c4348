"""Checkpoint -> ONNX / TorchScript / torch.export (.pt2) / ORT / ExecuTorch (.pte) / LiteRT
(.tflite) files, listed in the manifest; and the INT8 versions of the formats that have one
beside ONNX (write_int8: ExecuTorch through PT2E, LiteRT through ai-edge-quantizer).

Every artifact carries the preprocessing contract (spec.Contract) and its provenance in its own
metadata, is written atomically, and is registered in OUTPUT_DIR/manifest.json (manifest.py) with
its sha256. Checking and recording verdicts is workflow.py's job (export_and_verify). A format
whose converter is an extra of its own (executorch, litert-export) is refused before anything is
written when that extra is missing.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import __version__
from .checkpoint import Checkpoint
from .checkpoint import load as load_checkpoint
from .edge import layout, manifest, phases, spec
from .edge.errors import (
    ArtifactError,
    ConfigError,
    MnistEdgeError,
    interrupted,
    missing_dependency,
    reason,
)
from .edge.files import atomic_write, save_onnx
from .edge.layout import Layout
from .edge.manifest import Artifact
from .edge.metrics import TaskRule
from .edge.runners import EXTRA_FILE
from .quantize import convert_to_ort

# onnx, torchscript, pt2, ort ("ort" is converted from the ONNX file), executorch, litert
FORMATS = layout.EXPORTED
ORT_PLATFORMS = ("amd64", "arm")  # convert_onnx_models_to_ort --target_platform
EXAMPLE_BATCH = 4  # an example batch of 1 would silently fix the batch dimension at 1


@dataclass(frozen=True)
class ExportConfig:
    """What to export, from where, to where."""

    checkpoint: str = str(Layout().checkpoint)  # training checkpoint to export
    output_dir: str = "exports"  # artifacts and manifest.json go here
    formats: tuple[str, ...] = ("onnx",)  # any of FORMATS
    opset: int | None = None  # ONNX opset; None = torch.onnx's default
    ort_platform: str = "amd64"  # the CPU the .ort file's fixed optimisations are made for

    def __post_init__(self) -> None:
        unknown = [f for f in self.formats if f not in FORMATS]
        if unknown or not self.formats:
            raise ConfigError(
                f"unknown export format {', '.join(unknown) or '(none)'}; "
                f"choose from {', '.join(FORMATS)} or all"
            )
        if self.opset is not None and not 13 <= self.opset <= 25:
            raise ConfigError(f"opset {self.opset} is out of range; use 13..25 (default: torch's)")
        if self.ort_platform not in ORT_PLATFORMS:
            raise ConfigError(f"ORT platform must be one of {', '.join(ORT_PLATFORMS)}, got "
                              f"{self.ort_platform!r}")  # fmt: skip


def metadata(ckpt: Checkpoint, fmt: str, opset: int | None) -> dict[str, str]:
    """Contract + provenance as string key/values."""
    meta = spec.Contract().to_metadata()
    p = spec.METADATA_PREFIX
    meta.update(
        {
            p + "format": fmt,
            p + "opset": str(opset) if opset else "",
            p + "source_checkpoint_sha256": ckpt.sha256(),
            p + "test_accuracy": "" if ckpt.test_accuracy is None else f"{ckpt.test_accuracy:.4f}",
            p + "epochs_trained": str(ckpt.epoch),
            p + "version": __version__,
            p + "torch_version": str(torch.__version__),
        }
    )
    return meta


def _example() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(EXAMPLE_BATCH, *spec.INPUT_SHAPE)  # (4, 1, 28, 28)


def _dynamic_batch() -> dict[str, Any]:
    return {"x": {0: torch.export.Dim("batch", min=1, max=65536)}}  # keyed by forward's arg


def export_onnx(model: torch.nn.Module, meta: dict[str, str], dest: Path, opset: int | None) -> int:
    """Write one self-contained .onnx file; returns its opset."""
    import onnx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model,
            (_example(),),
            dynamo=True,
            input_names=[spec.INPUT_NAME],
            output_names=[spec.OUTPUT_NAME],
            dynamic_shapes=_dynamic_batch(),
            opset_version=opset,
            external_data=False,
            verbose=False,
        )
    proto = program.model_proto
    real_opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    meta = {**meta, spec.METADATA_PREFIX + "opset": str(real_opset)}
    del proto.metadata_props[:]
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=value)
    proto.doc_string = "MNIST CNN exported by mnist-edge; see metadata_props for preprocessing"
    # torch's own verify step does not run the checker: run it ourselves, fully.
    onnx.checker.check_model(proto, full_check=True)
    save_onnx(proto, dest)
    return real_opset


def export_torchscript(model: torch.nn.Module, meta: dict[str, str], dest: Path) -> None:
    """The eval-mode model traced, with the metadata as an extra file."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated upstream; still widely used
        traced = torch.jit.trace(model, _example())
        extra = {EXTRA_FILE: json.dumps(meta)}

        def write(tmp: Path) -> None:
            torch.jit.save(traced, str(tmp), _extra_files=extra)
            _drop_debug_records(tmp)

        atomic_write(dest, write)


def _drop_debug_records(archive: Path) -> None:
    """Rewrite a TorchScript archive without its `*.debug_pkl` records: they hold the Python
    stack of the trace, with absolute paths of the build machine; loading does not need them."""

    import hashlib
    import zipfile

    staged = archive.with_name(archive.name + ".part")
    with zipfile.ZipFile(archive) as src, zipfile.ZipFile(staged, "w") as dst:
        records = [
            (i, src.read(i)) for i in src.infolist() if not i.filename.endswith(".debug_pkl")
        ]
        # torch's serialization id hashes every record, the dropped ones too: hash what is kept
        digest = hashlib.sha256()
        for info, data in records:
            if not info.filename.endswith("serialization_id"):
                digest.update(info.filename.encode() + b"\0" + data)
        for info, data in records:
            if info.filename.endswith("serialization_id"):
                data = str(int(digest.hexdigest(), 16) % 10**40).zfill(40).encode()
            dst.writestr(info, data)  # same names, dates and (stored) method
    staged.replace(archive)


def export_pt2(model: torch.nn.Module, meta: dict[str, str], dest: Path) -> None:
    """A torch.export ExportedProgram (PyTorch's recommended format) with dynamic batch."""
    program = torch.export.export(model, (_example(),), dynamic_shapes=_dynamic_batch())
    for node in program.graph.nodes:  # the trace's Python stack: build-machine paths
        node.meta.pop("stack_trace", None)
    extra = {EXTRA_FILE: json.dumps(meta)}
    atomic_write(dest, lambda tmp: torch.export.save(program, str(tmp), extra_files=extra))


def require_converters(formats: tuple[str, ...] | list[str]) -> None:
    """A MissingDependency naming the extra, for the first format this install cannot write."""
    for fmt in formats:
        if not layout.converter_installed(fmt):
            converter = layout.get(fmt).converter or fmt
            raise missing_dependency(converter, f"exporting {fmt}")


def _writer(fmt: str):
    """The function that writes fp32 `fmt` (model, metadata, destination)."""
    if fmt == "executorch":
        from .executorch_export import export_executorch

        return export_executorch
    from .litert_export import export_litert

    return export_litert


def export(cfg: ExportConfig) -> list[Artifact]:
    """Write the requested formats and list them in the manifest (parity not yet run)."""
    require_converters(cfg.formats)
    ckpt = load_checkpoint(cfg.checkpoint)
    model = ckpt.build_model()
    out = Path(cfg.output_dir)
    folder = Layout(out)
    wanted = [f for f in FORMATS if f in cfg.formats]
    if "ort" in wanted and "onnx" not in wanted:
        wanted.insert(0, "onnx")  # the ORT file is converted from the ONNX file
    artifacts = []
    for fmt in wanted:
        phases.mark(f"export {fmt}")
        dest = folder.artifact(fmt)
        meta = metadata(ckpt, fmt, cfg.opset)
        opset, extra = None, None
        try:
            if fmt == "onnx":
                opset = export_onnx(model, meta, dest, cfg.opset)
            elif fmt == "torchscript":
                export_torchscript(model, meta, dest)
            elif fmt == "pt2":
                export_pt2(model, meta, dest)
            elif fmt in ("executorch", "litert"):
                _writer(fmt)(model, meta, dest)
            else:
                _, config = convert_to_ort(folder.onnx, out, cfg.ort_platform)
                opset, extra = artifacts[0].opset, {"required_operators_config": config.name,
                                                    "platform": cfg.ort_platform}  # fmt: skip
        except MnistEdgeError:
            raise
        except Exception as exc:  # exporter failures come in many types; say which format broke
            if interrupted(exc):  # Ctrl-C inside torch.onnx comes back wrapped
                raise KeyboardInterrupt from None
            raise ArtifactError(f"exporting {fmt} failed: {reason(exc)}") from exc
        artifacts.append(
            manifest.register(out, dest, fmt, cfg.checkpoint, opset=opset, extra=extra)
        )
    return artifacts


def write_int8(
    fmt: str, checkpoint: str | Path, output_dir: str | Path, calibration: np.ndarray,
    rule: TaskRule,
) -> tuple[Path, dict[str, object]]:  # fmt: skip
    """The INT8 version of `fmt` (executorch or litert) made from the checkpoint, calibrated on
    `calibration` (uint8 (N, 28, 28) training images), its file carrying the rule it is judged
    by; returns (its path, how it was made). The gate is the caller's (quantize.gate)."""
    int8 = layout.get(fmt).int8
    if fmt not in ("executorch", "litert") or int8 is None:
        raise ConfigError(f"no INT8 path for {fmt} here; INT8 is made for "
                          f"{', '.join(layout.QUANTIZABLE)}")  # fmt: skip
    require_converters([int8])
    if fmt == "executorch":
        from .executorch_export import int8_settings
        from .executorch_export import quantize_executorch as write
    else:
        from .litert_export import int8_settings
        from .litert_export import quantize_litert as write
    ckpt = load_checkpoint(checkpoint)
    settings = int8_settings(len(calibration))
    meta = metadata(ckpt, int8, None)
    meta.update({f"{spec.METADATA_PREFIX}int8.{k}": json.dumps(v) if isinstance(v, list) else str(v)
                 for k, v in settings.items()})  # fmt: skip
    meta.update(rule.to_metadata())
    dest = Layout(Path(output_dir)).artifact(int8)
    phases.mark(f"quantize {fmt}")
    try:
        write(ckpt.build_model(), meta, dest, calibration)
    except MnistEdgeError:
        raise
    except Exception as exc:  # the quantizers fail in many types; say which format broke
        if interrupted(exc):
            raise KeyboardInterrupt from None
        raise ArtifactError(f"quantizing {fmt} to INT8 failed: {reason(exc)}") from exc
    return dest, settings
