"""What an application ships per runtime: the model files (fp32, INT8) and the runtime's native
libraries, as loaded by a process that ran the model.

For each runtime a fresh Python loads the model with the bare loader (benchmarks/bare/), runs a
batch, and lists the shared libraries mapped into it (/proc/self/maps): those from the runtime's
own package, and everything else it pulled from site-packages (numpy; torch, for ExecuTorch's
Python runtime). Also each package's installed size (its RECORD). Minimal / selective builds are
noted, not measured: their builds fetch sources and submodules from GitHub, which this machine
cannot reach (docs/guides/backends.md).

    python benchmarks/runtime_sizes.py [--out benchmarks/results/runtime_sizes.json]
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import subprocess
import sys
from pathlib import Path

from _edge_models import models_folder
from _report import print_table, write_report

from mnist_edge.edge import machine

BARE = Path(__file__).resolve().parent / "bare"
RUNTIMES = {  # runtime -> (fp32 format, INT8 format, its package, its distributions)
    "onnxruntime": ("onnx", "onnx-int8", "onnxruntime", ("onnxruntime",)),
    "executorch": ("executorch", "executorch-int8", "executorch", ("executorch", "torch")),
    "litert": ("litert", "litert-int8", "ai_edge_litert", ("ai-edge-litert",)),
}
PROBE = """
import json, sys, numpy as np
sys.path.insert(0, {bare!r})
from {runtime}_bare import load
run = load({model!r}, 1)
run(np.zeros((1, 1, 28, 28), np.float32))
libs = set()
for line in open("/proc/self/maps"):
    parts = line.split()
    if len(parts) >= 6 and ".so" in parts[-1]:
        libs.add(parts[-1])
print(json.dumps(sorted(libs)))
"""


def mapped(runtime: str, model: Path) -> list[str]:
    code = PROBE.format(bare=str(BARE), runtime=runtime, model=str(model))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def installed_mb(dist: str) -> float:
    files = md.distribution(dist).files or []
    return sum(f.locate().stat().st_size for f in files if f.locate().is_file()) / 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="benchmarks/results/runtime_sizes.json")
    a = p.parse_args()
    folder = models_folder()
    site = Path(md.distribution("numpy").locate_file("")).resolve()
    rows = {}
    for runtime, (fp32, int8, package, dists) in RUNTIMES.items():
        libs = [Path(x) for x in mapped(runtime, folder.artifact(fp32))]
        inside = [x for x in libs if site in x.parents]
        own = [x for x in inside if x.relative_to(site).parts[0].startswith(package)]
        sizes = {str(x.relative_to(site)): x.stat().st_size for x in inside}
        rows[runtime] = {
            "model_bytes": {"fp32": folder.artifact(fp32).stat().st_size,
                            "int8": folder.artifact(int8).stat().st_size},
            "own_libraries_mb": sum(x.stat().st_size for x in own) / 1e6,
            "own_libraries": sorted(str(x.relative_to(site)) for x in own),
            "site_packages_libraries_mb": sum(sizes.values()) / 1e6,
            "libraries": sizes,
            "installed_mb": {d: installed_mb(d) for d in dists},
        }  # fmt: skip
        print(
            f"{runtime}: {rows[runtime]['own_libraries_mb']:.1f} MB of its own libraries, "
            f"{rows[runtime]['site_packages_libraries_mb']:.1f} MB from site-packages",
            flush=True,
        )
    write_report(a.out, {"command": "python " + " ".join(sys.argv),
                         "measured_on": machine.measured_on(), "runtimes": rows})  # fmt: skip
    print_table(["runtime", "fp32 model", "INT8 model", "its .so loaded", "all .so loaded from "
                 "site-packages", "installed"],
                [[k, f"{v['model_bytes']['fp32']:,} B", f"{v['model_bytes']['int8']:,} B",
                  f"{v['own_libraries_mb']:.1f} MB", f"{v['site_packages_libraries_mb']:.1f} MB",
                  ", ".join(f"{d} {m:.0f} MB" for d, m in v["installed_mb"].items())]
                 for k, v in rows.items()])  # fmt: skip


if __name__ == "__main__":
    main()
