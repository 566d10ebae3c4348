"""mnist-edge on an emulated ARM CPU (`make check-arm`): the edge install's commands under
qemu-aarch64-static -cpu neoverse-n1, their answers against this x86 machine's.

`.ci/arm-root` builds (or reuses, under ~/.cache/mnist-edge/arm64) a Debian arm64 root and the
edge install's aarch64 wheels; this script then runs, under emulation, each step below, times it,
and compares with the same step run natively:

- predict: two files, a folder (to a CSV), and the packaged model (no --model);
- evaluate --model: the fp32 model, its INT8 version, an .ort converted for ARM
  (`--target_platform arm`), and LiteRT's .tflite and INT8 .tflite made from the same weights
  (`export --format litert --quantize int8`; the litert extra runs them);
- the raw outputs of those on the first --limit test digits: fp32, .ort and .tflite against the
  same model run natively by the parity rule (argmax on decisive rows), INT8 files against
  themselves run natively (argmax agreement, max |difference|). ExecuTorch is not run: its
  Python runtime imports torch, and PyPI's torch for aarch64 is the CUDA build (docs/guides/arm.md);
- parity --reference fp32 against INT8 and .ort.

It exits 1 when a comparison fails. `--quick` (what CI runs) keeps predict on two files and the
two INT8 comparisons (ONNX Runtime, LiteRT). Results: benchmarks/results/arm.json.

    python benchmarks/arm.py [--limit 500] [--quick] [--out FILE]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _report import print_table, write_report
from devtools import emulate
from PIL import Image

from mnist_edge.edge import parity
from mnist_edge.edge.data import batches, load_split
from mnist_edge.edge.runtime import pretrained_path


def native(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mnist_edge", *argv], capture_output=True,
                          text=True, check=True, cwd=cwd)  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--limit", type=int, default=500, help="test digits compared")
    p.add_argument("--quick", action="store_true", help="two predictions and the INT8 check")
    p.add_argument("--out", default="benchmarks/results/arm.json")
    a = p.parse_args()
    arm = emulate.Arm.from_cache()
    tmp = Path(tempfile.mkdtemp(prefix="arm-"))
    models = {"fp32": tmp / "mnist_cnn.onnx", "int8": tmp / "mnist_cnn.int8.onnx",
              "ort": tmp / "mnist_cnn.ort", "tflite": tmp / "mnist_cnn.tflite",
              "tflite-int8": tmp / "mnist_cnn.int8.tflite"}  # fmt: skip
    shutil.copy(pretrained_path(), models["fp32"])
    shutil.copy(pretrained_path(int8=True), models["int8"])
    litert_files(tmp)
    if not a.quick:
        from mnist_edge.quantize import convert_to_ort

        convert_to_ort(models["fp32"], tmp, "arm")
    test = load_split("test", limit=a.limit)
    images = tmp / "images"
    images.mkdir()
    for i, d in enumerate(test.images[:20]):
        Image.fromarray(255 - d).save(images / f"{i:02d}.png")
    steps, checks = [], []

    def step(name: str, argv: list[str], compare=None) -> None:
        t0 = time.perf_counter()
        there = emulate.run(["-m", "mnist_edge", *argv], arm=arm, cwd=tmp)
        seconds = time.perf_counter() - t0
        ok = True
        if compare is not None:
            ok = compare(there, native(argv, tmp))
            checks.append((name, ok))
        steps.append({"step": name, "seconds": seconds, "ok": ok})
        print(f"{name}: {seconds:.1f} s {'ok' if ok else 'DIFFERS'}", flush=True)

    def same_stdout(a_, b_) -> bool:
        return a_.stdout == b_.stdout

    files = [str(images / "00.png"), str(images / "01.png")]
    step("predict 2 files", ["predict", *files, "--model", str(models["fp32"]), "--top", "3"],
         same_stdout)  # fmt: skip
    if not a.quick:
        step("predict a folder (20 files) to CSV",
             ["predict", str(images), "--model", str(models["fp32"]), "--output", "rows.csv"],
             lambda *_: True)  # fmt: skip
        rows_arm = (tmp / "rows.csv").read_text()
        native(["predict", str(images), "--model", str(models["fp32"]), "--output", "rows.csv"],
               tmp)  # fmt: skip
        checks.append(("folder CSV identical", rows_arm == (tmp / "rows.csv").read_text()))
        step("predict with the packaged model", ["predict", *files],
             lambda t, n: "(packaged" in t.stderr and t.stdout == n.stdout)  # fmt: skip
    x = np.concatenate(list(batches(test.images, 500)))
    outputs = {}
    for name in ("int8", "tflite-int8") if a.quick else tuple(models):
        step(f"evaluate --model {models[name].name} ({a.limit} digits)",
             ["evaluate", "--model", str(models[name]), "--test-limit", str(a.limit)],
             lambda t, n: _accuracy_line(t.stdout) == _accuracy_line(n.stdout))  # fmt: skip
        t0 = time.perf_counter()
        outputs[name] = emulate.run_emulated(models[name], x, arm=arm)
        steps.append({"step": f"raw outputs of {models[name].name}",
                      "seconds": time.perf_counter() - t0, "ok": True})  # fmt: skip
    native_file = {"fp32": "fp32", "ort": "fp32"}  # an .ort is judged against its ONNX
    here = {n: emulate.run_model(models[native_file.get(n, n)], x) for n in outputs}
    comparisons = {}
    for name, there in outputs.items():
        d, mine = np.abs(there - here[name]), here[name].argmax(1)
        row = {"images": len(x), "max_abs_diff": float(d.max()),
               "argmax_agreement": float((there.argmax(1) == mine).mean() * 100),
               "accuracy_arm": float((there.argmax(1) == test.labels).mean() * 100),
               "accuracy_x86": float((mine == test.labels).mean() * 100)}  # fmt: skip
        if name.endswith("int8"):
            ok = row["argmax_agreement"] >= 99.9
        else:
            result = parity.compare(name, here[name], there)
            row |= {"parity_passed": bool(result), "decisive_agreement": result.decisive_agreement}
            ok = bool(result) and result.decisive_agreement == 100
        row["ok"] = ok
        comparisons[name] = row
        checks.append((f"{name} outputs against x86", ok))
    if not a.quick:
        step(f"parity --reference fp32: INT8 and .ort ({min(a.limit, 100)} digits)",
             ["parity", "--reference", str(models["fp32"]), str(models["int8"]),
              str(models["ort"]), "--test-limit", str(min(a.limit, 100))],
             lambda t, n: True)  # fmt: skip
    shutil.rmtree(tmp, ignore_errors=True)
    print_table(
        ["step (emulated neoverse-n1)", "seconds", "ok"],
        [[s["step"], f"{s['seconds']:.1f}", "yes" if s["ok"] else "NO"] for s in steps],
    )
    print_table(["outputs", "vs x86", "argmax agree %", "max |d|", "acc ARM %", "acc x86 %"],
                [[n, "native " + ("fp32 ONNX" if n in native_file else n),
                  f"{r['argmax_agreement']:.2f}", f"{r['max_abs_diff']:.3g}",
                  f"{r['accuracy_arm']:.2f}", f"{r['accuracy_x86']:.2f}"]
                 for n, r in comparisons.items()])  # fmt: skip
    write_report(a.out, {"cpu": emulate.ARM_CPU, "limit": a.limit, "quick": a.quick,
                         "steps": steps, "comparisons": comparisons,
                         "checks": dict(checks)})  # fmt: skip
    failed = [name for name, ok in checks if not ok]
    if failed:
        raise SystemExit(f"on ARM, these differ from x86: {', '.join(failed)}")
    print(f"ARM (emulated {emulate.ARM_CPU}): every check passed; {a.out}")


def litert_files(folder: Path) -> None:
    """mnist_cnn.tflite and its INT8 version from the packaged weights (the litert-export
    extra, on this machine), calibrated on the usual 512 training images."""
    from mnist_edge.export import ExportConfig, export, write_int8
    from mnist_edge.quantize import QuantConfig, calibration_images

    packaged = pretrained_path()
    export(ExportConfig(str(packaged), str(folder), ("litert",)))
    calibration = calibration_images(QuantConfig(), load_split("train"))
    write_int8("litert", packaged, folder, calibration, QuantConfig().rule)


def _accuracy_line(text: str) -> str:
    return next((line for line in text.splitlines() if "accuracy" in line), "")


if __name__ == "__main__":
    main()
