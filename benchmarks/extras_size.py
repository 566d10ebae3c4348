"""What each install costs: a fresh venv per set of extras, `pip install '.[EXTRAS]'` from this
checkout, its size on disk and the install's wall time (pip's cache warm or not, as it is on
this machine: run it twice to see a warm figure).

    python benchmarks/extras_size.py [--sets base,litert,train,...] [--out ...]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _report import print_table, write_report

from mnist_edge.edge import machine

ROOT = Path(__file__).resolve().parents[1]
SETS = {  # name -> extras
    "base (the edge install)": "",
    "base + litert": "litert",
    "train": "train",
    "train + executorch": "train,executorch",
    "train + litert-export": "train,litert-export",
    "train + dev + executorch + litert-export (make test)": "train,dev,executorch,litert-export",
    "train + dev (make test before issue 31)": "train,dev",
}


def size_mb(folder: Path) -> float:
    out = subprocess.run(["du", "-sm", str(folder)], capture_output=True, text=True, check=True)
    return float(out.stdout.split()[0])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="benchmarks/results/extras_size.json")
    a = p.parse_args()
    rows = []
    for name, extras in SETS.items():
        with tempfile.TemporaryDirectory() as tmp:
            venv = Path(tmp) / "venv"
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            py = venv / "bin" / "python"
            subprocess.run([py, "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True,
                           capture_output=True)  # fmt: skip
            empty = size_mb(venv)
            target = f"{ROOT}[{extras}]" if extras else str(ROOT)
            t0 = time.perf_counter()
            proc = subprocess.run([py, "-m", "pip", "install", "-q", target],
                                  capture_output=True, text=True)  # fmt: skip
            seconds = time.perf_counter() - t0
            row = {"set": name, "extras": extras, "ok": proc.returncode == 0,
                   "seconds": seconds, "mb": size_mb(venv) - empty}  # fmt: skip
            if not row["ok"]:
                row["error"] = proc.stderr.strip().splitlines()[-1:]
            rows.append(row)
            print(f"{name}: {row['mb']:,.0f} MB in {seconds:.0f} s", flush=True)
        shutil.rmtree(tmp, ignore_errors=True)
    write_report(a.out, {"command": "python " + " ".join(sys.argv),
                         "measured_on": machine.measured_on(), "rows": rows})  # fmt: skip
    print_table(
        ["install", "MB", "seconds"],
        [[r["set"], f"{r['mb']:,.0f}", f"{r['seconds']:.0f}"] for r in rows],
    )


if __name__ == "__main__":
    main()
