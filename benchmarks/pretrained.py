"""Make the pretrained model shipped inside the package, from the full training run.

Takes the checkpoint of `python benchmarks/train_full.py` (10 epochs, the default recipe),
exports ONNX, quantizes it to INT8 with the gate, checks both against the PyTorch model on the
whole test set (parity), evaluates both in ONNX Runtime, and writes them with a manifest
(sha256, accuracy, parity verdicts, recipe, versions) into mnist_edge/models/.
Results also go to benchmarks/results/pretrained.json.

    python benchmarks/pretrained.py --checkpoint exports/train_full/mnist_cnn.pt
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

from _report import write_report

from mnist_edge import checkpoint as ckpt_io
from mnist_edge.evaluate import evaluate
from mnist_edge.export import ExportConfig
from mnist_edge.files import sha256, utc_now, write_json
from mnist_edge.layout import Layout
from mnist_edge.machine import versions
from mnist_edge.quantize import QuantConfig
from mnist_edge.runtime import PACKAGED
from mnist_edge.workflow import VerifyConfig, export_and_verify


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default="exports/train_full/mnist_cnn.pt")
    p.add_argument("--dest", default=str(PACKAGED))
    p.add_argument("--out", default="benchmarks/results/pretrained.json")
    a = p.parse_args()
    ckpt = ckpt_io.load(a.checkpoint)
    dest = Path(a.dest)
    with tempfile.TemporaryDirectory() as tmp:
        stage = Layout(Path(tmp))
        run = export_and_verify(
            ExportConfig(str(a.checkpoint), str(stage.root), ("onnx",)),
            quant=QuantConfig(model=str(stage.onnx), output=str(stage.int8)),
            check=VerifyConfig(),
        )
        if run.problems():
            raise SystemExit("; ".join(run.problems()))
        evals = {fmt: evaluate(stage.artifact(fmt)) for fmt in ("onnx", "onnx-int8")}
        dest.mkdir(parents=True, exist_ok=True)
        files = {}
        for art in run.artifacts:
            target = dest / art.file
            shutil.copyfile(stage.root / art.file, target)
            files[art.file] = {
                "format": art.format,
                "bytes": target.stat().st_size,
                "sha256": sha256(target),
                "test_accuracy": evals[art.format].accuracy,
                "test_loss": evals[art.format].loss,
                "parity": run.parity.verdicts()[str(stage.root / art.file)],
                "good": manifest_good(stage.root, art.file),
                **({"int8_gate": run.gate.to_dict()} if art.format == "onnx-int8" else {}),
            }
    manifest = {
        "created": utc_now(),
        "source_checkpoint_sha256": sha256(a.checkpoint),
        "training": {
            "recipe": ckpt.train_config,
            "epochs": ckpt.epoch,
            "metrics": ckpt.metrics,
            "checkpoint_test_accuracy": ckpt.test_accuracy,
            "data": ckpt.data_sha256,
            "versions": ckpt.versions,
        },  # fmt: skip
        "export_versions": versions(),
        "files": files,
    }
    write_json(dest / "manifest.json", manifest)
    write_report(a.out, {"checkpoint": a.checkpoint, **manifest,
                         "evaluations": {k: asdict(v) for k, v in evals.items()}})  # fmt: skip
    for name, f in files.items():
        print(f"{name}: {f['bytes']:,} bytes, test accuracy {f['test_accuracy']:.2f}%, "
              f"parity {'passed' if f['parity']['passed'] else 'FAILED'}")  # fmt: skip


def manifest_good(folder: Path, file: str) -> bool | None:
    from mnist_edge import manifest

    return next(a.good for a in manifest.artifacts(folder) if a.file == file)


if __name__ == "__main__":
    main()
