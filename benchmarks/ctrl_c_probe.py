"""Does Ctrl-C ever lose its line? SIGINT sent to `mnist-edge train` and `mnist-edge export` at
fixed steps after their start, `--sends` times each, covering the whole run and the moments
around its end, with the outcome of every send.

Each command is first run once unsignalled to learn its duration T. Each send then starts a
fresh process (`python -m mnist_edge ...`, SIGINT at its default) and signals it `offset + step
* k` seconds after the start (k = 1..sends), unless it has already ended; the offset puts the
last sends just past T, so the window always covers the end of the run. Outcomes:
  interrupted   exit 130 and `error: interrupted` as the last line of stderr (what must happen)
  finished      exit 0: the command was done (or the signal came once its work was done)
  silent        exit 130 without the line                      (the fault this probes for)
  killed        ended by the signal itself (status -2)          (the other fault)
  other         anything else (a traceback, another code)
  ended         the process had ended before the send time: no signal sent
Writes benchmarks/results/ctrl_c_probe.json.

    python benchmarks/ctrl_c_probe.py --checkpoint exports/mnist_cnn.pt [--sends 100]
        [--step 0.05]
"""

from __future__ import annotations

import argparse
import collections
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _report import print_table, write_report


def one(argv: list[str], after: float, cwd: Path) -> tuple[str, float, int, str]:
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mnist_edge", *argv], cwd=cwd, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    while time.perf_counter() - start < after and proc.poll() is None:
        time.sleep(0.002)
    sent = proc.poll() is None
    if sent:
        proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=600)
    took = time.perf_counter() - start
    lines = [line for line in err.splitlines() if line.strip()]
    last = lines[-1][:200] if lines else ""
    if not sent:
        outcome = "ended" if proc.returncode == 0 else "other"
    elif proc.returncode == 130:
        outcome = "interrupted" if lines[-1:] == ["error: interrupted"] else "silent"
    elif proc.returncode == -signal.SIGINT:
        outcome = "killed"
    else:
        outcome = "finished" if proc.returncode == 0 else "other"
    return outcome, took, proc.returncode, last


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--sends", type=int, default=100)
    p.add_argument("--step", type=float, default=0.05)
    p.add_argument("--out", default="benchmarks/results/ctrl_c_probe.json")
    a = p.parse_args()
    data = ["--data-dir", a.data_dir] if a.data_dir else []
    report, rows = {}, []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        commands = {
            "train": ["train", "--epochs", "1", "--limit", "1000", "--test-limit", "300",
                      "--output-dir", str(tmp / "t"), *data],
            "export": ["export", "--format", "onnx,torchscript", "--checkpoint", a.checkpoint,
                       "--output-dir", str(tmp / "e"), "--test-limit", "300", *data],
        }  # fmt: skip
        for name, argv in commands.items():
            one(argv, 1e9, tmp)  # warm: the first run reads everything from disk
            duration = sorted(one(argv, 1e9, tmp)[1] for _ in range(3))[1]  # unsignalled
            offset = max(0.0, duration + 0.3 - a.step * a.sends)
            outcomes = []
            for k in range(1, a.sends + 1):
                outcome, took, code, last = one(argv, offset + a.step * k, tmp)
                outcomes.append({"after_s": round(offset + a.step * k, 3), "outcome": outcome,
                                 "process_s": round(took, 3), "exit": code,
                                 "last_line": last})  # fmt: skip
            counts = collections.Counter(o["outcome"] for o in outcomes)
            report[name] = {"counts": dict(counts), "unsignalled_s": duration,
                            "window_s": [offset + a.step, offset + a.step * a.sends],
                            "sends": outcomes}  # fmt: skip
            rows.append([name, *(str(counts.get(k, 0)) for k in
                                 ("interrupted", "finished", "silent", "killed", "other",
                                  "ended"))])  # fmt: skip
            last = max((o["after_s"] for o in outcomes if o["outcome"] != "ended"), default=0)
            report[name]["last_signalled_s"] = last
    print_table(["command", "interrupted", "finished", "silent", "killed", "other", "ended"],
                rows)  # fmt: skip
    write_report(a.out, {"step_s": a.step, "sends": a.sends, "commands": report})


if __name__ == "__main__":
    main()
