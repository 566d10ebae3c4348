"""Cold start: from a new Python process to the first prediction, median of N whole-process runs.

Each run starts `PYTHON -c CODE` where CODE imports mnist-edge's Predictor, loads the packaged
model (or --model) and predicts one digit, then prints the wall-clock time at that moment; the
time counted is from just before the process is started to that print (interpreter start-up,
imports, session creation and the first call; not the interpreter's exit). In the same run,
alternating with it: the CLI, `PYTHON -m mnist_edge predict DIGIT.png` on one 28x28 test digit
saved as PNG, timed from start to the process's end (what a shell script calling it waits).
Also: what the imports alone cost (`-X importtime`, the ten largest). Give --python the edge
install's python (a venv with `pip install .`, no torch) to measure what a device gets.

    python benchmarks/cold_start.py --python .venv-edge/bin/python [--runs 10] [--model M]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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


def one_cli_run(python: str, image: Path, model: str | None) -> float:
    argv = [python, "-m", "mnist_edge", "predict", str(image)]
    argv += ["--model", model] if model else []
    start = time.perf_counter()
    subprocess.run(argv, capture_output=True, check=True, timeout=120)
    return (time.perf_counter() - start) * 1e3


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
    from PIL import Image

    from mnist_edge.edge.data import load_split

    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / "digit.png"
        Image.fromarray(255 - load_split("test", limit=1).images[0]).save(image)
        one_run(a.python, a.model)  # the first runs read files from disk into the page cache
        one_cli_run(a.python, image, a.model)
        times, cli = [], []
        for _ in range(a.runs):  # alternating: drift in the machine's load hits both alike
            times.append(one_run(a.python, a.model))
            cli.append(one_cli_run(a.python, image, a.model))
    bare = [one_run_bare(a.python) for _ in range(a.runs)]
    imports = import_costs(a.python)
    median, cli_median = statistics.median(times), statistics.median(cli)
    print(f"cold start, new python -> first prediction: median {median:.0f} ms over {a.runs} "
          f"runs (min {min(times):.0f}, max {max(times):.0f}); the CLI, `mnist-edge predict "
          f"one.png` start to end: median {cli_median:.0f} ms (min {min(cli):.0f}, max "
          f"{max(cli):.0f}); a bare python start: {statistics.median(bare):.0f} ms")  # fmt: skip
    print_table(
        ["import (cumulative)", "ms"], [[n.strip(), f"{us / 1e3:.1f}"] for n, us in imports]
    )
    write_report(a.out, {"python": a.python, "model": a.model, "runs_ms": times,
                         "median_ms": median, "cli_runs_ms": cli, "cli_median_ms": cli_median,
                         "bare_python_median_ms": statistics.median(bare),
                         "imports_us": imports})  # fmt: skip


def one_run_bare(python: str) -> float:
    start = time.time()
    out = subprocess.run([python, "-c", "import time; print(repr(time.time()))"],
                         capture_output=True, text=True, check=True)  # fmt: skip
    return (float(out.stdout.strip()) - start) * 1e3


if __name__ == "__main__":
    main()
