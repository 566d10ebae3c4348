"""Do the three INT8 models give the same answers? On all 10,000 test digits: each runtime's
INT8 file against its own fp32 file, and the three INT8 files against each other (ONNX Runtime's
packaged INT8 model; ExecuTorch's PT2E program; LiteRT's ai-edge-quantizer model, all from the
same weights and the same 512 calibration images: _edge_models.py).

    python benchmarks/int8_agreement.py [--out benchmarks/results/int8_agreement.json]
"""

from __future__ import annotations

import argparse
import itertools
import sys

from _edge_models import models_folder
from _report import print_table, write_report

from mnist_edge.edge import machine
from mnist_edge.edge.data import load_split
from mnist_edge.edge.files import sha256
from mnist_edge.edge.metrics import accuracy
from mnist_edge.edge.runners import load_runner, outputs

RUNTIMES = {"ONNX Runtime": "onnx", "ExecuTorch": "executorch", "LiteRT": "litert"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="benchmarks/results/int8_agreement.json")
    a = p.parse_args()
    folder = models_folder()
    test = load_split("test")
    answers, files = {}, {}
    for name, fmt in RUNTIMES.items():
        for precision, f in (
            ("fp32", fmt),
            ("int8", "onnx-int8" if fmt == "onnx" else f"{fmt}-int8"),
        ):
            path = folder.artifact(f)
            answers[(name, precision)] = outputs(load_runner(path, threads=2), test.images).argmax(
                1
            )
            files[f"{name} {precision}"] = {"file": path.name, "sha256": sha256(path)}
    acc = {f"{n} {p}": accuracy(v, test.labels) for (n, p), v in answers.items()}
    pairs = [{"a": f"{n} int8", "b": f"{n} fp32",
              "agreement": accuracy(answers[(n, "int8")], answers[(n, "fp32")])}
             for n in RUNTIMES]  # fmt: skip
    pairs += [{"a": f"{x} int8", "b": f"{y} int8",
               "agreement": accuracy(answers[(x, "int8")], answers[(y, "int8")])}
              for x, y in itertools.combinations(RUNTIMES, 2)]  # fmt: skip
    pairs += [{"a": f"{x} fp32", "b": f"{y} fp32",
               "agreement": accuracy(answers[(x, "fp32")], answers[(y, "fp32")])}
              for x, y in itertools.combinations(RUNTIMES, 2)]  # fmt: skip
    for row in pairs:
        na, nb = row["a"].rsplit(" ", 1), row["b"].rsplit(" ", 1)
        row["differing"] = int((answers[tuple(na)] != answers[tuple(nb)]).sum())
    write_report(a.out, {"command": "python " + " ".join(sys.argv),
                         "measured_on": machine.measured_on(), "images": len(test.labels),
                         "accuracy": acc, "pairs": pairs, "files": files})  # fmt: skip
    print_table(["model", "accuracy %"], [[k, f"{v:.2f}"] for k, v in acc.items()])
    print_table(
        ["a", "b", "same answer %", "digits differing"],
        [[r["a"], r["b"], f"{r['agreement']:.2f}", str(r["differing"])] for r in pairs],
    )


if __name__ == "__main__":
    main()
