"""Cold start: from a new Python process to the first prediction, median of N whole-process runs.

Each run starts `PYTHON -c CODE` where CODE imports mnist-edge's Predictor, loads the packaged
model (or --model) and predicts one digit, then prints the wall-clock time at that moment; the
time counted is from just before the process is started to that print (interpreter start-up,
imports, session creation and the first call; not the interpreter's exit). Also: what the
imports alone cost (`-X importtime`, the ten largest). Give --python the edge install's python
(a venv with `pip install .`, no torch) to measure what a device gets.

    python benchmarks/cold_start.py --python .venv-edge/bin/python [--runs 10] [--model M]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from _report import print_table, write_report

CODE = """
import numpy as np
from mnist_edge.runtime import Predictor, pretrained_path
p = Predictor({model} or pretrained_path())
p.predict(np.zeros((28, 28), np.uint8))
import time, sys
print(repr(time.time()))
"""


def one_run(python: str, model: str | None) -> float:
    start = time.time()
    out = subprocess.run([python, "-c", CODE.format(model=repr(model))], capture_output=True,
                         text=True, check=True, timeout=120)  # fmt: skip
    return (float(out.stdout.strip().splitlines()[-1]) - start) * 1e3


def import_costs(python: str) -> list[tuple[str, int]]:
    """The largest cumulative import times (µs) of `from mnist_edge.runtime import Predictor`."""
    err = subprocess.run([python, "-X", "importtime", "-c",
                          "from mnist_edge.runtime import Predictor"],
                         capture_output=True, text=True, check=True).stderr  # fmt: skip
    rows = []
    for line in err.splitlines():
        if line.startswith("import time:") and "|" in line:
            _, cumulative, name = line.split("|")
            if cumulative.strip().isdigit():
                rows.append((name.rstrip(), int(cumulative)))
    return sorted(rows, key=lambda r: -r[1])[:10]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--python", default=sys.executable)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--model", default=None)
    p.add_argument("--out", default="benchmarks/results/cold_start.json")
    a = p.parse_args()
    one_run(a.python, a.model)  # the first run reads files from disk into the page cache
    times = [one_run(a.python, a.model) for _ in range(a.runs)]
    bare = [one_run_bare(a.python) for _ in range(a.runs)]
    imports = import_costs(a.python)
    median = statistics.median(times)
    print(f"cold start, new python -> first prediction: median {median:.0f} ms over {a.runs} "
          f"runs (min {min(times):.0f}, max {max(times):.0f}); a bare python start: "
          f"{statistics.median(bare):.0f} ms")  # fmt: skip
    print_table(
        ["import (cumulative)", "ms"], [[n.strip(), f"{us / 1e3:.1f}"] for n, us in imports]
    )
    write_report(a.out, {"python": a.python, "model": a.model, "runs_ms": times,
                         "median_ms": median, "bare_python_median_ms": statistics.median(bare),
                         "imports_us": imports})  # fmt: skip


def one_run_bare(python: str) -> float:
    start = time.time()
    out = subprocess.run([python, "-c", "import time; print(repr(time.time()))"],
                         capture_output=True, text=True, check=True)  # fmt: skip
    return (float(out.stdout.strip()) - start) * 1e3


if __name__ == "__main__":
    main()
