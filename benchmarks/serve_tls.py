"""What TLS costs `mnist-edge serve`: requests/s and p50/p99 at concurrency 1 and 64, REST binary
(hey) and gRPC (h2load), the same server plain and with --tls-cert/--tls-key (a 2048-bit RSA
certificate made here with openssl), one after the other in one run; and REST with a new
connection per request (hey -disable-keepalive), where every request pays a handshake. hey and
h2load do not verify the certificate (they take what the server presents), which costs them
nothing the measurement would see.

    python benchmarks/serve_tls.py [--seconds 5] [--repeats 2]

Writes benchmarks/results/serve_tls.json.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _report import print_table, write_report
from serve import Server, bodies, drive, summary

from mnist_edge.edge import machine
from mnist_edge.edge.runtime import pretrained_path


def certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key."""
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    "tls.key", "-out", "tls.pem", "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], cwd=folder, check=True,
                   capture_output=True)  # fmt: skip
    return folder / "tls.pem", folder / "tls.key"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", default="benchmarks/results/serve_tls.json")
    a = p.parse_args()
    model = pretrained_path()
    cells, rows = [], []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        reqs = {k: v for k, v in bodies(tmp).items() if k in ("binary", "grpc")}
        cert, key = certificate(tmp)
        for mode, flags in (("plain", []), ("tls", ["--tls-cert", str(cert), "--tls-key",
                                                    str(key)])):  # fmt: skip
            server = Server(["--model", str(model), *flags], tmp)
            try:
                cases = [(e, c, True) for e in reqs for c in (1, 64)] + [("binary", 1, False)]
                for encoding, c, keepalive in cases:
                    body, headers = reqs[encoding]
                    extra = () if keepalive else ("-disable-keepalive",)
                    drive(server, encoding, body, headers, c, 1.0, extra)
                    runs = [drive(server, encoding, body, headers, c, a.seconds, extra)
                            for _ in range(a.repeats)]  # fmt: skip
                    cell = {"mode": mode, "encoding": encoding, "concurrency": c,
                            "keepalive": keepalive, **summary(runs)}  # fmt: skip
                    cells.append(cell)
                    rows.append([mode, encoding + ("" if keepalive else ", new connections"),
                                 str(c), f"{cell['rps']:.0f}", f"{cell['p50_ms']:.2f}",
                                 f"{cell['p99_ms']:.2f}", str(cell["not_200"])])  # fmt: skip
                    time.sleep(0.5)
            finally:
                server.stop()
    print_table(["mode", "encoding", "concurrency", "requests/s", "p50 ms", "p99 ms", "not 200"],
                rows)  # fmt: skip
    cost = {}
    for c in cells:
        if c["mode"] != "tls":
            continue
        plain = next(p for p in cells if p["mode"] == "plain" and all(
            p[k] == c[k] for k in ("encoding", "concurrency", "keepalive")))  # fmt: skip
        name = f"{c['encoding']} c{c['concurrency']}" + ("" if c["keepalive"] else " new conn")
        cost[name] = {"rps_ratio": c["rps"] / plain["rps"],
                      "p50_added_ms": c["p50_ms"] - plain["p50_ms"]}  # fmt: skip
        print(f"{name}: TLS {c['rps'] / plain['rps']:.2f}x plain requests/s, p50 "
              f"{c['p50_ms'] - plain['p50_ms']:+.2f} ms")  # fmt: skip
    write_report(a.out, {"command": "python " + " ".join(sys.argv),
                         "measured_on": machine.measured_on(), "seconds": a.seconds,
                         "repeats": a.repeats, "cells": cells, "cost": cost})  # fmt: skip


if __name__ == "__main__":
    main()
