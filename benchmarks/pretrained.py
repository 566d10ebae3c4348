"""Make the pretrained model shipped inside the package, from the full training run.

Takes the checkpoint of `python benchmarks/train_full.py` (10 epochs, the default recipe),
exports ONNX, quantizes it to INT8 with the gate, checks both against the PyTorch model on the
whole test set (parity), evaluates both in ONNX Runtime, and writes them with a manifest
(sha256, accuracy, parity verdicts, recipe, versions, the CPU each figure was measured on) into
mnist_edge/edge/models/. Results also go to benchmarks/results/pretrained.json.

    python benchmarks/pretrained.py --checkpoint exports/train_full/mnist_cnn.pt

`--from-packaged` re-makes the pair from the packaged fp32 ONNX instead (no checkpoint): the fp32
file is re-written without build-machine paths (its outputs are checked bit-identical to the old
file's on the whole test set, so its parity verdict against PyTorch still holds and is kept), and
the INT8 file is quantized again with today's defaults and judged against the fp32 ONNX.
`--consistency FILE` adds the cross-CPU table of benchmarks/int8_consistency.py to the manifest.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from _report import write_report

from mnist_edge.edge.data import load_split
from mnist_edge.edge.evaluate import evaluate
from mnist_edge.edge.files import sha256, utc_now, write_json
from mnist_edge.edge.layout import Layout
from mnist_edge.edge.machine import measured_on, versions
from mnist_edge.edge.runtime import PACKAGED
from mnist_edge.quantize import QuantConfig
from mnist_edge.workflow import VerifyConfig, export_and_verify, quantize_and_verify


def path_free(obj: Any) -> Any:
    """The manifest without absolute paths of the machine that made it (file names stay)."""
    if isinstance(obj, dict):
        return {k: path_free(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [path_free(v) for v in obj]
    if isinstance(obj, str) and obj.startswith("/") and "\n" not in obj:
        return Path(obj).name
    return obj


def from_checkpoint(checkpoint: str, stage: Layout) -> tuple[Any, dict[str, Any]]:
    from mnist_edge import checkpoint as ckpt_io
    from mnist_edge.export import ExportConfig

    ckpt = ckpt_io.load(checkpoint)
    run = export_and_verify(
        ExportConfig(checkpoint, str(stage.root), ("onnx",)),
        quant=QuantConfig(model=str(stage.onnx), output=str(stage.int8)),
        check=VerifyConfig(),
    )
    training = {
        "recipe": ckpt.train_config,
        "epochs": ckpt.epoch,
        "metrics": ckpt.metrics,
        "checkpoint_test_accuracy": ckpt.test_accuracy,
        "data": ckpt.data_sha256,
        "versions": ckpt.versions,
    }
    return run, {"source_checkpoint_sha256": sha256(checkpoint), "training": training,
                 "parity": {}, "reference": {}}  # fmt: skip


def from_packaged(stage: Layout) -> tuple[Any, dict[str, Any]]:
    import onnx

    from mnist_edge.edge.files import save_onnx
    from mnist_edge.edge.runners import load_runner, outputs

    old = json.loads((PACKAGED / "manifest.json").read_text())
    save_onnx(onnx.load(str(PACKAGED / "mnist_cnn.onnx")), stage.onnx)
    images = load_split("test").images
    before = outputs(load_runner(PACKAGED / "mnist_cnn.onnx"), images)
    after = outputs(load_runner(stage.onnx), images)
    if not np.array_equal(before, after):
        raise SystemExit("the cleaned fp32 model computes something else: not writing it")
    run = quantize_and_verify(
        QuantConfig(model=str(stage.onnx), output=str(stage.int8)),
        checkpoint=str(stage.onnx),  # the source: the fp32 model (no checkpoint here)
        check=VerifyConfig(reference=str(stage.onnx)),
    )
    fp32 = old["files"]["mnist_cnn.onnx"]
    carried = {**fp32["parity"], "carried_over": (
        "measured against the PyTorch checkpoint when this model was exported; the file was "
        "re-written without build-machine paths and gives bit-identical outputs on all "
        f"{len(images):,} test images")}  # fmt: skip
    keep = {k: old[k] for k in ("source_checkpoint_sha256", "training")}
    return run, {**keep, "parity": {"mnist_cnn.onnx": carried},
                 "reference": {"mnist_cnn.int8.onnx": "mnist_cnn.onnx"}}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default="exports/train_full/mnist_cnn.pt")
    p.add_argument("--from-packaged", action="store_true")
    p.add_argument("--consistency", help="JSON of benchmarks/int8_consistency.py to record")
    p.add_argument("--dest", default=str(PACKAGED))
    p.add_argument("--out", default="benchmarks/results/pretrained.json")
    a = p.parse_args()
    dest = Path(a.dest)
    with tempfile.TemporaryDirectory() as tmp:
        stage = Layout(Path(tmp))
        run, made = from_packaged(stage) if a.from_packaged else from_checkpoint(a.checkpoint,
                                                                                 stage)  # fmt: skip
        if run.problems():
            raise SystemExit("; ".join(run.problems()))
        test = load_split("test")
        evals = {fmt: evaluate(stage.artifact(fmt), test) for fmt in ("onnx", "onnx-int8")}
        verdicts = {Path(k).name: v for k, v in run.parity.verdicts().items()}
        files = {}
        for fmt in ("onnx", "onnx-int8"):
            source = stage.artifact(fmt)
            files[source.name] = {
                "format": fmt,
                "bytes": source.stat().st_size,
                "sha256": sha256(source),
                "test_accuracy": evals[fmt].accuracy,
                "test_loss": evals[fmt].loss,
                "measured_on": measured_on(),
                "parity": made["parity"].get(source.name) or verdicts[source.name],
                "parity_reference": made["reference"].get(source.name, "the PyTorch checkpoint"),
                "good": True,
                **({"int8_gate": run.gate.to_dict()} if fmt == "onnx-int8" else {}),
            }
        if a.consistency:  # checked before anything is copied: no half-made package
            table = json.loads(Path(a.consistency).read_text())
            if table["int8_sha256"] != files["mnist_cnn.int8.onnx"]["sha256"]:
                raise SystemExit(f"{a.consistency} measured another INT8 file")
            files["mnist_cnn.int8.onnx"]["consistency"] = {
                k: table[k] for k in ("images", "emulated_images", "measured_on", "runs", "pairs")
            }
        dest.mkdir(parents=True, exist_ok=True)
        for name in files:
            shutil.copyfile(stage.root / name, dest / name)
    manifest = path_free({
        "created": utc_now(),
        "source_checkpoint_sha256": made["source_checkpoint_sha256"],
        "training": made["training"],
        "export_versions": versions(),
        "files": files,
    })  # fmt: skip
    write_json(dest / "manifest.json", manifest)
    write_report(a.out, {**manifest, "evaluations": {k: asdict(v) for k, v in evals.items()}})
    for name, f in files.items():
        print(
            f"{name}: {f['bytes']:,} bytes, sha256 {f['sha256'][:12]}, test accuracy "
            f"{f['test_accuracy']:.2f}%, parity {'passed' if f['parity']['passed'] else 'FAILED'}"
        )


if __name__ == "__main__":
    main()
