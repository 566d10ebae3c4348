"""Does each command read MNIST once? Wall time and MNIST file reads of `mnist-edge quantize`
(with its doctor) and `mnist-edge export --format all`, for this checkout and, in the same run,
for another one (`--before DIR`: a checkout of an earlier commit, e.g. made with
`git worktree add /tmp/before 1bc4eb3`), alternating, on one trained checkpoint.

Reads are counted by wrapping mnist_edge.edge.data.read_idx (each split is two reads, and every
read gunzips and hashes its file). Each command runs `--repeats` times per checkout; the median
wall time is reported.

    python benchmarks/data_once.py --checkpoint exports/mnist_cnn.pt --before /tmp/before
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _report import print_table, write_report

REPO = Path(__file__).resolve().parents[1]
# Runs the CLI with read_idx counted: one line per read in the file named by $READS.
COUNTED = """
import os, sys
import mnist_edge.edge.data as data
real = data.read_idx
def counted(folder, name):
    with open(os.environ["READS"], "a") as f:
        f.write(name + "\\n")
    return real(folder, name)
data.read_idx = counted
from mnist_edge.__main__ import run
sys.argv = ["mnist-edge", *sys.argv[1:]]
run()
"""


def timed(code_dir: Path, argv: list[str], work: Path) -> tuple[float, int]:
    reads = work / "reads.txt"
    reads.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": str(code_dir), "READS": str(reads)}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", COUNTED, *argv], cwd=work, env=env,
                          capture_output=True, text=True)  # fmt: skip
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed in {code_dir}: {proc.stderr[-800:]}")
    return seconds, len(reads.read_text().splitlines()) if reads.exists() else 0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--before", required=True, help="a checkout of the code to compare with")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default="benchmarks/results/data_once.json")
    a = p.parse_args()
    codes = {"before": Path(a.before).resolve(), "after": REPO}
    rows, report = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        ckpt = work / "mnist_cnn.pt"
        shutil.copy(a.checkpoint, ckpt)
        commands = {
            "export --format all": ["export", "--format", "all", "--checkpoint", str(ckpt),
                                    "--output-dir", str(work / "ex")],
            "quantize (doctor)": ["quantize", "--model", str(work / "ex" / "mnist_cnn.onnx"),
                                  "--checkpoint", str(ckpt)],
        }  # fmt: skip
        for name, argv in commands.items():
            runs: dict[str, list[tuple[float, int]]] = {k: [] for k in codes}
            for _ in range(a.repeats):
                for label, code in codes.items():  # alternating: drift hits both alike
                    runs[label].append(timed(code, argv, work))
            entry = {}
            for label in codes:
                seconds = [s for s, _ in runs[label]]
                entry[label] = {"median_s": statistics.median(seconds), "runs_s": seconds,
                                "mnist_file_reads": runs[label][0][1]}  # fmt: skip
            report[name] = entry
            b, after = entry["before"], entry["after"]
            rows.append([name, f"{b['median_s']:.1f}", str(b["mnist_file_reads"]),
                         f"{after['median_s']:.1f}", str(after["mnist_file_reads"])])  # fmt: skip
    print_table(["command", "before s", "before reads", "after s", "after reads"], rows)
    write_report(a.out, {"before": str(codes["before"]), "repeats": a.repeats,
                         "commands": report})  # fmt: skip


if __name__ == "__main__":
    main()
