"""Ray against one machine, in one run, inside a network namespace with loopback alone (Ray
listens on every interface; tests/devtools/raycluster.py):

- batch: `mnist-edge predict FOLDER --output rows.csv` on `--files` PNGs (28x28 test digits),
  locally and with `--ray --actors 1` and `--actors 2` on a running one-node cluster of every
  core; wall time of the command, rows checked equal;
- serving: hey against `mnist-edge serve` and `serve --ray --replicas 1|2`, fp32, binary tensors
  and JSON, concurrency 1/8/64, `--seconds` each;
- cold start: `ray start`, `predict --ray` on one file (joining; and starting its own instance),
  `serve` and `serve --ray` to their first answer;
- memory: the cluster's processes at idle and with two replicas deployed (RSS summed);
- a replica killed under load (hey c8, two replicas): answers that were not 200, and how long
  until Serve had two replicas again.
Writes benchmarks/results/ray.json.

    python benchmarks/ray.py [--files 10000] [--seconds 5]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _report import print_table, write_report
from devtools import raycluster  # tests/ is on the path through _report
from PIL import Image
from serve import bodies, hey  # benchmarks/serve.py

from mnist_edge.edge.data import load_split
from mnist_edge.edge.threads import cores


def mnist_edge(*args: object) -> list[str]:
    return [sys.executable, "-m", "mnist_edge", *map(str, args)]


def rss_mb(pids) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def timed(ns, args, env, cwd) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    r = ns.run(args, env=env, cwd=cwd, timeout=1800)
    return time.perf_counter() - t0, r


def labels(path: Path) -> list[tuple[str, str, str]]:
    with open(path, newline="") as f:
        return [(r["file"], r["label"], r["error"]) for r in csv.DictReader(f)]


def wait_ready(ns, url: str, proc, timeout: float = 180) -> float:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        r = ns.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                    url + "v2/health/ready"], timeout=30)  # fmt: skip
        if r.stdout == "200":
            return time.perf_counter() - t0
        if proc.poll() is not None:
            raise SystemExit("server ended: " + proc.stderr.read()[-3000:])
        time.sleep(0.1)
    raise SystemExit("server never became ready")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--files", type=int, default=10000)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--concurrency", default="1,8,64")
    p.add_argument("--out", default="benchmarks/results/ray.json")
    a = p.parse_args()
    if (why := raycluster.unavailable()) is not None:
        raise SystemExit(f"cannot run Ray here: {why}")
    levels = [int(c) for c in a.concurrency.split(",")]
    n = cores()
    report: dict = {"files": a.files, "cores": n}
    ns = raycluster.Namespace()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder = tmp / "files"
        folder.mkdir()
        digits = load_split("test", limit=min(a.files, 10000)).images
        for i in range(a.files):
            Image.fromarray(255 - digits[i % len(digits)]).save(folder / f"{i:05d}.png")
        home = tmp / "home"
        home.mkdir()
        try:
            # --- cold start of a cluster, and its memory at idle -------------------------
            cluster = raycluster.Cluster(ns, (n,))
            time.sleep(5)
            idle = ns.processes()
            report["cold_start_s"] = {"ray_start": cluster.start_s}
            report["idle_memory"] = {"processes": len(idle), "rss_mb": rss_mb(idle)}

            # --- batch ---------------------------------------------------------------------
            batch = {}
            t, r = timed(ns, mnist_edge("predict", folder, "--output", tmp / "local.csv"),
                         raycluster.ray_env(str(home)), tmp)  # fmt: skip
            assert r.returncode == 0, r.stderr[-2000:]
            batch["local"] = t
            want = labels(tmp / "local.csv")
            for actors in (1, 2):
                out = tmp / f"ray{actors}.csv"
                t, r = timed(ns, mnist_edge("predict", folder, "--ray", "--actors", actors,
                                            "--output", out), cluster.env, tmp)  # fmt: skip
                assert r.returncode == 0, r.stderr[-2000:]
                assert labels(out) == want, "the Ray rows differ from the local ones"
                batch[f"ray_{actors}_actors"] = t
            one = folder / "00000.png"
            t, r = timed(ns, mnist_edge("predict", one, "--ray"), cluster.env, tmp)
            report["cold_start_s"]["predict_ray_join_one_file"] = t
            t, r = timed(ns, mnist_edge("predict", one), cluster.env, tmp)
            report["cold_start_s"]["predict_local_one_file"] = t
            report["batch_s"] = batch
            report["batch_images_per_s"] = {k: a.files / v for k, v in batch.items()}

            # --- serving -------------------------------------------------------------------
            reqs = bodies(tmp)
            cells = []
            servers = {"serve": (mnist_edge("serve", "--port", 8100), 8100),
                       "serve --ray x1": (mnist_edge("serve", "--ray", "--replicas", 1, "--port",
                                                     8101), 8101),
                       "serve --ray x2": (mnist_edge("serve", "--ray", "--replicas", 2, "--port",
                                                     8102), 8102)}  # fmt: skip
            for name, (cmd, port) in servers.items():
                url = f"http://127.0.0.1:{port}/"
                t0 = time.perf_counter()
                proc = ns.popen(cmd, env=cluster.env, cwd=tmp, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)  # fmt: skip
                wait_ready(ns, url, proc)
                report["cold_start_s"][f"{name} to first answer"] = time.perf_counter() - t0
                if name == "serve --ray x2":
                    report["memory_with_2_replicas"] = {"rss_mb": rss_mb(ns.processes())}
                infer = url + "v2/models/mnist/infer"
                for encoding, (body, headers) in reqs.items():
                    _ns_hey(ns, infer, body, headers, 8, 1.0)  # warm
                    for c in levels:
                        cell = _ns_hey(ns, infer, body, headers, c, a.seconds)
                        cells.append({"server": name, "encoding": encoding, "concurrency": c,
                                      **cell})  # fmt: skip
                if name == "serve --ray x2":
                    report["replica_killed"] = _kill_replica(ns, cluster, infer, reqs["json"])
                proc.send_signal(signal.SIGTERM)
                proc.communicate(timeout=120)
            report["serving"] = cells
            t0 = time.perf_counter()
            left = cluster.stop()
            report["ray_stop"] = {"s": time.perf_counter() - t0, "left": len(left)}
        finally:
            for pid in ns.processes():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            ns.close()

    print_table(
        ["command", "seconds", "images/s"],
        [[k, f"{v:.1f}", f"{a.files / v:.0f}"] for k, v in report["batch_s"].items()],
    )
    print()
    print_table(["server", "encoding", "concurrency", "requests/s", "p50 ms", "p99 ms",
                 "not 200"],
                [[c["server"], c["encoding"], str(c["concurrency"]), f"{c['rps']:.0f}",
                  f"{c['p50_ms']:.2f}", f"{c['p99_ms']:.2f}", str(c["not_200"])]
                 for c in report["serving"]])  # fmt: skip
    print()
    print_table(["cold start", "seconds"],
                [[k, f"{v:.1f}"] for k, v in report["cold_start_s"].items()])  # fmt: skip
    print(f"\nidle cluster: {report['idle_memory']['processes']} processes, "
          f"{report['idle_memory']['rss_mb']:.0f} MB RSS; with 2 replicas "
          f"{report['memory_with_2_replicas']['rss_mb']:.0f} MB")  # fmt: skip
    print(f"replica killed under load: {json.dumps(report['replica_killed'])}")
    print(f"ray stop: {report['ray_stop']}")
    write_report(a.out, report)


def _ns_hey(ns, url: str, body: Path, headers: list[str], c: int, seconds: float) -> dict:
    """benchmarks/serve.py's hey, run inside the namespace."""
    return hey(url, body, headers, c, seconds, prefix=tuple(ns.cmd([])))


def _kill_replica(ns, cluster, url: str, request: tuple[Path, list[str]]) -> dict:
    body, headers = request
    cmd = ["hey", "-z", "10s", "-c", "8", "-t", "10", "-m", "POST", "-D", str(body)]
    for h in headers:
        cmd += ["-H", h]
    load = ns.popen([*cmd, url], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(3)
    victim = cluster.pids("ServeReplica")[0]
    t0 = time.perf_counter()
    os.kill(victim, signal.SIGKILL)
    back = None
    while time.perf_counter() - t0 < 120:
        if len([p for p in cluster.pids("ServeReplica") if p != victim]) == 2 and back is None:
            back = time.perf_counter() - t0
            break
        time.sleep(0.2)
    out = load.communicate(timeout=120)[0]
    codes = {m.group(1): int(m.group(2)) for m in re.finditer(r"\[(\d{3})\]\s+(\d+) resp", out)}
    errors = out.split("Error distribution:")[-1] if "Error distribution:" in out else ""
    failed = sum(int(x) for x in re.findall(r"^\s+\[(\d+)\]", errors, re.M))
    return {"answers": codes, "transport_errors": failed, "replaced_after_s": back}


if __name__ == "__main__":
    main()
