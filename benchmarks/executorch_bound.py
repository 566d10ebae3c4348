"""What the batch bound of a .pte costs: resident memory and speed, by bound.

ExecuTorch plans a program's input memory, and XNNPACK its workspace, for the largest batch the
program allows. For each bound the packaged weights are exported (fp32, like `export --format
executorch` with another MAX_BATCH) and a fresh Python loads the program, runs batch 1, then a
full batch of the bound; the peak RSS after each, and batch-64 images/s where the bound allows.

    python benchmarks/executorch_bound.py [--bounds 16,64,256,1024,65536]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from _report import print_table, write_report

from mnist_edge.edge import machine

PROBE = """
import json, resource, sys, time
import numpy as np
def rss(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
from mnist_edge.edge.runners import load_runner
row = {}
r = load_runner(sys.argv[1], threads=1)
row["loaded_mb"] = rss()
try:
    r(np.zeros((1, 1, 28, 28), np.float32))
except Exception as exc:
    print(json.dumps({**row, "batch1_error": str(exc).rsplit(": ", 1)[-1][:120]}))
    sys.exit(0)
row["batch1_mb"] = rss()
method = r.session.load_method("forward")
bound = int(sys.argv[2])
import torch
try:
    method.execute([torch.zeros(bound, 1, 28, 28)])
    row["full_batch_mb"] = rss()
except RuntimeError as exc:
    row["full_batch_error"] = str(exc).rsplit(": ", 1)[-1][:120]
x = np.zeros((64, 1, 28, 28), np.float32)
r(x)
t0, n = time.perf_counter(), 0
while time.perf_counter() - t0 < 2:
    r(x); n += 1
row["batch64_images_per_s"] = 64 * n / (time.perf_counter() - t0)
print(json.dumps(row))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bounds", default="16,64,256,1024,65536")
    p.add_argument("--out", default="benchmarks/results/executorch_bound.json")
    a = p.parse_args()
    from mnist_edge.checkpoint import load as load_checkpoint
    from mnist_edge.edge.runtime import pretrained_path
    from mnist_edge.executorch_export import export_executorch
    from mnist_edge.export import metadata

    ckpt = load_checkpoint(pretrained_path())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for bound in (int(b) for b in a.bounds.split(",")):
            path = Path(tmp) / f"b{bound}.pte"
            export_executorch(ckpt.build_model(), metadata(ckpt, "executorch", None), path, bound)
            out = subprocess.run([sys.executable, "-c", PROBE, str(path), str(bound)],
                                 capture_output=True, text=True)  # fmt: skip
            row = {"bound": bound, "bytes": path.stat().st_size}
            if out.returncode == 0:
                row |= json.loads(out.stdout.strip().splitlines()[-1])
            else:
                row["error"] = (out.stderr.strip().splitlines() or ["?"])[-1][:200]
            rows.append(row)
            print(row, flush=True)
    write_report(a.out, {"command": "python " + " ".join(sys.argv),
                         "measured_on": machine.measured_on(), "rows": rows})  # fmt: skip
    print_table(["bound", "RSS loaded MB", "after batch 1", "after a full batch", "b64 img/s"],
                [[str(r["bound"]), f"{r.get('loaded_mb', 0):.0f}", f"{r.get('batch1_mb', 0):.0f}",
                  f"{r['full_batch_mb']:.0f}" if "full_batch_mb" in r else
                  r.get("full_batch_error", r.get("error", "?"))[:40],
                  f"{r.get('batch64_images_per_s', 0):,.0f}"] for r in rows])  # fmt: skip


if __name__ == "__main__":
    main()
