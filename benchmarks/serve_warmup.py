"""What the server's warm-up saves: the first calls of a model against the ones after.

Engine: a fresh Predictor (the packaged fp32 and INT8 models, as `serve` makes them), its very
first call at batch 1 and at batch 64 (the batcher's largest), each against the median of the
calls after it; with no warm-up (a call of each shape straight after loading) and with the
server's warm-up (one batch of 1 before readiness) done first.
Server: `mnist-edge serve` started afresh --repeats times, the first request after readiness
against the median of the next 50, over one keep-alive connection.

    python benchmarks/serve_warmup.py [--repeats 5]

Writes benchmarks/results/serve_warmup.json.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _report import print_table, write_report
from serve import Server

from mnist_edge.edge import machine
from mnist_edge.edge.data import batches, load_split
from mnist_edge.edge.runtime import Predictor, pretrained_path
from mnist_edge.edge.server.models import warm_up


def engine(model: Path, warm: bool, repeats: int) -> dict[str, float]:
    """ms of the first call at batch 1 and 64 and of the median call after, over `repeats`
    fresh Predictors."""
    images = load_split("test", limit=64).images
    one, many = next(batches(images[:1], 1)), next(batches(images, 64))
    first1, first64, steady1, steady64 = [], [], [], []
    for _ in range(repeats):
        p = Predictor(model, threads=1)
        if warm:
            warm_up(p.runner.run, p.contract.image_size)
        for x, first, steady in ((one, first1, steady1), (many, first64, steady64)):
            t0 = time.perf_counter()
            p.runner.run(x)
            first.append((time.perf_counter() - t0) * 1e3)
            times = []
            for _ in range(20):
                t0 = time.perf_counter()
                p.runner.run(x)
                times.append((time.perf_counter() - t0) * 1e3)
            steady.append(statistics.median(times))
    med = statistics.median
    return {"first_b1_ms": med(first1), "steady_b1_ms": med(steady1),
            "first_b64_ms": med(first64), "steady_b64_ms": med(steady64)}  # fmt: skip


def server_first_request(model: Path, folder: Path, repeats: int) -> dict[str, float]:
    x = next(batches(load_split("test", limit=1).images, 1))
    tensor = {"name": "input", "datatype": "FP32", "shape": [1, 1, 28, 28],
              "parameters": {"binary_data_size": x.nbytes}}  # fmt: skip
    head = json.dumps({"inputs": [tensor]}).encode()
    body = head + x.astype("<f4").tobytes()
    headers = {"Inference-Header-Content-Length": str(len(head)),
               "Content-Type": "application/octet-stream"}  # fmt: skip
    firsts, steadies, seconds = [], [], []
    for _ in range(repeats):
        server = Server(["--model", str(model), "--workers", "1"], folder)
        try:
            host, port = server.url.split("//")[1].rstrip("/").split(":")
            conn = http.client.HTTPConnection(host, int(port), timeout=60)
            times = []
            for _ in range(51):
                t0 = time.perf_counter()
                conn.request("POST", "/v2/models/mnist/infer", body, headers)
                answer = conn.getresponse()
                answer.read()
                assert answer.status == 200, answer.status
                times.append((time.perf_counter() - t0) * 1e3)
            conn.close()
            # a second connection's first request: what a new connection costs a server
            # that has answered before (the rest of the first request's cost is the server
            # path's first run, not the connection's)
            conn = http.client.HTTPConnection(host, int(port), timeout=60)
            t0 = time.perf_counter()
            conn.request("POST", "/v2/models/mnist/infer", body, headers)
            conn.getresponse().read()
            seconds.append((time.perf_counter() - t0) * 1e3)
            conn.close()
        finally:
            server.stop()
        firsts.append(times[0])
        steadies.append(statistics.median(times[1:]))
    return {"first_request_ms": statistics.median(firsts),
            "second_connection_first_ms": statistics.median(seconds),
            "steady_request_ms": statistics.median(steadies),
            "first_requests_ms": firsts}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default="benchmarks/results/serve_warmup.json")
    a = p.parse_args()
    rows, cells = [], []
    for name, model in (("fp32", pretrained_path()), ("int8", pretrained_path(int8=True))):
        for warm in (False, True):
            e = engine(model, warm, a.repeats)
            cells.append({"model": name, "warm_up": warm, **e})
            rows.append([name, "yes" if warm else "no", f"{e['first_b1_ms']:.2f}",
                         f"{e['steady_b1_ms']:.2f}", f"{e['first_b64_ms']:.2f}",
                         f"{e['steady_b64_ms']:.2f}"])  # fmt: skip
    print_table(["model", "warm-up", "first b1 ms", "steady b1 ms", "first b64 ms",
                 "steady b64 ms"], rows)  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        served = server_first_request(pretrained_path(), Path(tmp), a.repeats)
    print(
        f"server: first request after readiness {served['first_request_ms']:.2f} ms, then "
        f"{served['steady_request_ms']:.2f} ms (medians of {a.repeats} fresh servers)"
    )
    write_report(a.out, {"command": "python " + " ".join(sys.argv),
                         "measured_on": machine.measured_on(), "repeats": a.repeats,
                         "engine": cells, "server": served})  # fmt: skip


if __name__ == "__main__":
    main()
