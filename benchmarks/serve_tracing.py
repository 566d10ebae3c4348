"""What tracing costs `mnist-edge serve`: requests/s and p50/p99 at concurrency 1 and 64, REST
binary (hey) and gRPC (h2load), the same server without --trace and with it, exporting over
OTLP/HTTP to a collector that is up (a stand-in here that reads each export and answers 200),
one that refuses connections, and one that accepts them and never answers, and with one request
in ten sampled (parentbased_traceidratio 0.1); one after the other in one run. Each traced
request makes four spans (tracing.py).

    python benchmarks/serve_tracing.py [--seconds 5] [--repeats 2]

Writes benchmarks/results/serve_tracing.json.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from _report import print_table, write_report
from serve import Server, bodies, drive, summary

from mnist_edge.edge import machine
from mnist_edge.edge.runtime import pretrained_path


class Collector(BaseHTTPRequestHandler):
    """An OTLP/HTTP collector's answer to an export: the body read, 200 and an empty
    ExportTraceServiceResponse."""

    exports = 0

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        self.rfile.read(int(self.headers.get("content-length", 0)))
        Collector.exports += 1
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def collectors() -> dict[str, tuple[int, object]]:
    """mode -> (port, what to close): up, refusing, silent."""
    up = ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=up.serve_forever, daemon=True).start()
    silent = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(silent.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    refusing = socket.create_server(("127.0.0.1", 0))
    refused_port = refusing.getsockname()[1]
    refusing.close()
    return {"up": (up.server_address[1], up), "refusing": (refused_port, None),
            "silent": (silent.getsockname()[1], silent)}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", default="benchmarks/results/serve_tracing.json")
    a = p.parse_args()
    model = pretrained_path()
    cells, rows = [], []
    ports = collectors()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        reqs = {k: v for k, v in bodies(tmp).items() if k in ("binary", "grpc")}
        modes = [("off", [], None, {})] + [(f"on, collector {m}", ["--trace"], port, {})
                                           for m, (port, _) in ports.items()]  # fmt: skip
        modes.append(("on, 1 in 10 sampled, collector up", ["--trace"], ports["up"][0],
                      {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                       "OTEL_TRACES_SAMPLER_ARG": "0.1"}))  # fmt: skip
        for mode, flags, port, extra in modes:
            env = dict(os.environ, **extra)
            if port is not None:
                env.update(OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{port}",
                           OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf")  # fmt: skip
            server = Server(["--model", str(model), *flags], tmp, env=env)
            try:
                for encoding, (body, headers) in reqs.items():
                    for c in (1, 64):
                        drive(server, encoding, body, headers, c, 1.0)
                        runs = [drive(server, encoding, body, headers, c, a.seconds)
                                for _ in range(a.repeats)]  # fmt: skip
                        cell = {"mode": mode, "encoding": encoding, "concurrency": c,
                                **summary(runs)}  # fmt: skip
                        cells.append(cell)
                        rows.append([mode, encoding, str(c), f"{cell['rps']:.0f}",
                                     f"{cell['p50_ms']:.2f}", f"{cell['p99_ms']:.2f}",
                                     str(cell["not_200"])])  # fmt: skip
                        time.sleep(0.5)
            finally:
                t0 = time.perf_counter()
                server.stop()
                stop_s = time.perf_counter() - t0
            for cell in cells:
                if cell["mode"] == mode:
                    cell["stop_s"] = stop_s
    print_table(["tracing", "encoding", "concurrency", "requests/s", "p50 ms", "p99 ms",
                 "not 200"], rows)  # fmt: skip
    cost = {}
    for c in cells:
        if c["mode"] == "off":
            continue
        off = next(o for o in cells if o["mode"] == "off" and o["encoding"] == c["encoding"]
                   and o["concurrency"] == c["concurrency"])  # fmt: skip
        name = f"{c['mode']}: {c['encoding']} c{c['concurrency']}"
        cost[name] = {"rps_ratio": c["rps"] / off["rps"],
                      "p50_added_ms": c["p50_ms"] - off["p50_ms"]}  # fmt: skip
        print(f"{name}: {c['rps'] / off['rps']:.2f}x requests/s without tracing, p50 "
              f"{c['p50_ms'] - off['p50_ms']:+.2f} ms")  # fmt: skip
    write_report(a.out, {"command": "python " + " ".join(sys.argv),
                         "measured_on": machine.measured_on(), "seconds": a.seconds,
                         "repeats": a.repeats, "exports_received": Collector.exports,
                         "cells": cells, "cost": cost})  # fmt: skip


if __name__ == "__main__":
    main()
