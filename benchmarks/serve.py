"""`mnist-edge serve` under load: requests/s and p50/p99 latency at concurrency 1, 8 and 64,
batching on and off, fp32 and INT8, JSON and binary tensors over REST and gRPC, with Debian's
`hey` (REST) and `h2load` (gRPC: nghttp2's HTTP/2 load generator, sending a framed
ModelInferRequest) as the load generators on the same cores, against the bare engine in the
same run. h2load sees HTTP statuses only: a gRPC call's own status is counted from the
server's /metrics (grpc.ModelInfer OK) before and after each run.

Each request is one 28x28 test digit (FP32 [1, 1, 28, 28]). The server runs as `python -m
mnist_edge serve --port 0` on 127.0.0.1 with its defaults unless `--server-args` says otherwise
("batching off" is `--max-batch 1`). Bare figures, measured in this process in the same run, as
`mnist-edge tune` measures them: batch-1 p50 and batch-64 images/s on every core. Every cell is
the median of `--repeats` runs of `--seconds` each; non-200 answers are counted.
Writes benchmarks/results/serve.json.

    python benchmarks/serve.py [--seconds 5] [--repeats 2] [--concurrency 1,8,64]
                               [--encodings json,binary,grpc]
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import ssl
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from _report import print_table, write_report

from mnist_edge.edge import machine
from mnist_edge.edge.data import batches, load_split
from mnist_edge.edge.proto import grpc_service_pb2
from mnist_edge.edge.runtime import Predictor, pretrained_path
from mnist_edge.edge.threads import cores
from mnist_edge.edge.timing import time_calls


def bodies(folder: Path) -> dict[str, tuple[Path, list[str]]]:
    """The request bodies: one digit as JSON, as binary tensors (binary answers too), and as a
    gRPC ModelInferRequest (raw_input_contents) in gRPC's length-prefixed frame."""
    x = next(batches(load_split("test", limit=1).images, 1))
    req = grpc_service_pb2.ModelInferRequest(model_name="mnist")
    req.inputs.add(name="input", datatype="FP32", shape=[1, 1, 28, 28])
    req.raw_input_contents.append(x.astype("<f4").tobytes())
    message = req.SerializeToString()
    (folder / "grpc.bin").write_bytes(b"\0" + struct.pack(">I", len(message)) + message)
    head = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 28, 28],
                                   "parameters": {"binary_data_size": x.nbytes}}],
                       "parameters": {"binary_data_output": True}}).encode()  # fmt: skip
    (folder / "binary.bin").write_bytes(head + x.tobytes())
    text = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 28, 28],
                                   "data": x.ravel().tolist()}]}).encode()  # fmt: skip
    (folder / "json.json").write_bytes(text)
    return {"binary": (folder / "binary.bin", [f"Inference-Header-Content-Length: {len(head)}",
                                               "Content-Type: application/octet-stream"]),
            "json": (folder / "json.json", ["Content-Type: application/json"]),
            "grpc": (folder / "grpc.bin", ["content-type: application/grpc",
                                           "te: trailers"])}  # fmt: skip


def hey(url: str, body: Path, headers: list[str], concurrency: int, seconds: float,
        prefix: tuple[str, ...] = (), extra: tuple[str, ...] = ()) -> dict:  # fmt: skip
    """hey's numbers; `prefix` runs it inside something (benchmarks/ray.py: nsenter), `extra`
    are more of hey's flags."""
    cmd = [
        *prefix,
        "hey",
        "-z",
        f"{seconds}s",
        "-c",
        str(concurrency),
        "-m",
        "POST",
        "-D",
        str(body),
        *extra,
    ]
    for h in headers:
        cmd += ["-H", h]
    out = subprocess.run([*cmd, url], capture_output=True, text=True,
                         timeout=seconds + 120).stdout  # fmt: skip

    def number(pattern: str) -> float:
        m = re.search(pattern, out)
        return float(m.group(1)) if m else float("nan")

    ok = sum(int(n) for n in re.findall(r"\[200\]\s+(\d+) responses", out))
    total = sum(int(n) for n in re.findall(r"\[\d+\]\s+(\d+) responses", out))
    errors = sum(int(n) for n in re.findall(r"^\s+\[(\d+)\]\s+\w", out.split(
        "Error distribution:")[-1], re.M)) if "Error distribution:" in out else 0  # fmt: skip
    return {"rps": number(r"Requests/sec:\s+([\d.]+)"), "p50_ms": number(r"50%+ in ([\d.]+)")
            * 1e3, "p99_ms": number(r"99%+ in ([\d.]+)") * 1e3, "ok": ok,
            "not_200": total - ok + errors}  # fmt: skip


def grpc_calls(metrics_url: str) -> tuple[int, int]:
    """(ModelInfer calls answered OK, answered otherwise) so far, from the server's /metrics."""
    # the benchmark's own server: over TLS its self-signed certificate is taken as it is
    ctx = ssl._create_unverified_context() if metrics_url.startswith("https") else None
    text = urllib.request.urlopen(metrics_url, timeout=30, context=ctx).read().decode()
    ok = other = 0
    for status, n in re.findall(r'mnist_edge_requests_total\{endpoint="grpc.ModelInfer",'
                                r'model="[^"]*",status="(\w+)"\} (\S+)', text):  # fmt: skip
        if status == "OK":
            ok += int(float(n))
        else:
            other += int(float(n))
    return ok, other


def batches_so_far(metrics_url: str) -> tuple[float, float]:
    """(images, model calls) the server's batcher has run, from its /metrics."""
    # the benchmark's own server: over TLS its self-signed certificate is taken as it is
    ctx = ssl._create_unverified_context() if metrics_url.startswith("https") else None
    text = urllib.request.urlopen(metrics_url, timeout=30, context=ctx).read().decode()
    images = re.findall(r"^mnist_edge_batch_images_sum\{[^}]*\} (\S+)", text, re.M)
    calls = re.findall(r"^mnist_edge_batch_images_count\{[^}]*\} (\S+)", text, re.M)
    return sum(map(float, images)), sum(map(float, calls))


def h2load(address: str, body: Path, headers: list[str], concurrency: int, seconds: float,
           metrics_url: str, tls: bool = False) -> dict:  # fmt: skip
    """h2load's numbers for gRPC ModelInfer calls: `concurrency` connections of one stream
    each (as hey's connections), latency percentiles from its per-request log."""
    with tempfile.NamedTemporaryFile(suffix=".log") as log:
        before = grpc_calls(metrics_url)
        cmd = ["h2load", "-c", str(concurrency), "-m", "1", "-D", f"{seconds:g}", "-d", str(body),
               f"--log-file={log.name}"]  # fmt: skip
        for h in headers:
            cmd += ["-H", h]
        scheme = "https" if tls else "http"
        target = f"{scheme}://{address}/inference.GRPCInferenceService/ModelInfer"
        out = subprocess.run([*cmd, target], capture_output=True, text=True,
                             timeout=seconds + 120).stdout  # fmt: skip
        after = grpc_calls(metrics_url)
        ok, failed = after[0] - before[0], after[1] - before[1]
        lines = Path(log.name).read_text().splitlines()
        micros = sorted(int(line.split("\t")[2]) for line in lines if line.count("\t") >= 2)
    done = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded", out)
    rps = re.search(r"finished in [\d.]+s, ([\d.]+) req/s", out)

    def pct(q: float) -> float:
        return micros[min(len(micros) - 1, int(q * len(micros)))] / 1e3 if micros else float("nan")

    http_failed = len(micros) - (int(done.group(1)) if done else 0)  # streams that failed
    return {"rps": float(rps.group(1)) if rps else float("nan"), "p50_ms": pct(0.5),
            "p99_ms": pct(0.99), "ok": ok, "not_200": failed + max(0, http_failed)}  # fmt: skip


def drive(server: Server, encoding: str, body: Path, headers: list[str], concurrency: int,
          seconds: float, extra: tuple[str, ...] = ()) -> dict:  # fmt: skip
    """One load run against `server`: h2load for gRPC, hey for REST (`extra`: hey's flags)."""
    if encoding == "grpc":
        return h2load(server.grpc, body, headers, concurrency, seconds, server.url + "metrics",
                      tls=server.url.startswith("https"))  # fmt: skip
    return hey(server.url + "v2/models/mnist/infer", body, headers, concurrency, seconds,
               extra=extra)  # fmt: skip


def summary(runs: list[dict]) -> dict:
    """Repeated runs -> the runs, their answers other than 200, and medians of the figures."""
    medians = {k: statistics.median(r[k] for r in runs) for k in ("rps", "p50_ms", "p99_ms")}
    return {"runs": runs, "not_200": sum(r["not_200"] for r in runs), **medians}


class Server:
    def __init__(self, args: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "mnist_edge", "serve", "--port", "0",
                                      *args], cwd=cwd, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
        first = self.proc.stdout.readline()
        self.url = re.search(r"(https?://127\.0\.0\.1:\d+/)", first).group(1)
        grpc = re.search(r"gRPC at (127\.0\.0\.1:\d+)", first)
        self.grpc = grpc.group(1) if grpc else None
        ready = self.proc.stdout.readline()  # "ready: ..." once the model is loaded
        if not ready.startswith("ready"):
            raise SystemExit(f"server did not start: {ready}{self.proc.stderr.read()}")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.communicate(timeout=60)


def bare(model: Path) -> dict:
    """The engine alone, as tune measures it: batch-1 p50, batch-64 images/s, every core."""
    images = load_split("test", limit=64).images
    p = Predictor(model, threads=cores())
    one, many = next(batches(images[:1], 1)), next(batches(images, 64))
    t1 = time_calls(p.run, one, duration=2.0, warmup=20)
    t64 = time_calls(p.run, many, duration=2.0, warmup=5)
    return {"b1_p50_ms": t1.p50_ms, "b64_images_per_s": 64 / (t64.p50_ms / 1e3)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--concurrency", default="1,8,64")
    p.add_argument("--server-args", default="", help="extra flags for mnist-edge serve")
    p.add_argument("--encodings", default="json,binary,grpc")
    p.add_argument("--out", default="benchmarks/results/serve.json")
    a = p.parse_args()
    levels = [int(c) for c in a.concurrency.split(",")]
    extra = a.server_args.split()
    models = {"fp32": pretrained_path(), "int8": pretrained_path(int8=True)}
    rows, cells = [], []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        reqs = {k: v for k, v in bodies(tmp).items() if k in a.encodings.split(",")}
        engine = {name: bare(path) for name, path in models.items()}
        for name, path in models.items():
            for batching, flags in (("on", []), ("off", ["--max-batch", "1"])):
                server = Server(["--model", str(path), *flags, *extra], tmp)
                try:
                    for encoding, (body, headers) in reqs.items():
                        drive(server, encoding, body, headers, 8, 1.0)  # warm
                        for c in levels:
                            before = batches_so_far(server.url + "metrics")
                            runs = [drive(server, encoding, body, headers, c, a.seconds)
                                    for _ in range(a.repeats)]  # fmt: skip
                            after = batches_so_far(server.url + "metrics")
                            calls = after[1] - before[1]
                            cell = {"model": name, "batching": batching, "encoding": encoding,
                                    "concurrency": c,
                                    "mean_batch": (after[0] - before[0]) / calls if calls else 0,
                                    **summary(runs)}  # fmt: skip
                            cells.append(cell)
                            rows.append([name, batching, encoding, str(c), f"{cell['rps']:.0f}",
                                         f"{cell['p50_ms']:.2f}", f"{cell['p99_ms']:.2f}",
                                         f"{cell['mean_batch']:.1f}",
                                         str(cell["not_200"])])  # fmt: skip
                            time.sleep(0.5)
                finally:
                    server.stop()
    print_table(["model", "batching", "encoding", "concurrency", "requests/s", "p50 ms",
                 "p99 ms", "images per model call", "not 200"], rows)  # fmt: skip
    for name, e in engine.items():
        print(
            f"bare {name}: batch-1 p50 {e['b1_p50_ms']:.3f} ms, batch-64 "
            f"{e['b64_images_per_s']:.0f} images/s ({cores()} threads)"
        )

    def cell(model: str, batching: str, encoding: str, c: int) -> dict:
        return next(
            x
            for x in cells
            if (x["model"], x["batching"], x["encoding"], x["concurrency"])
            == (model, batching, encoding, c)
        )

    targets = {}
    if 64 in levels and 1 in levels:
        hi = cell("fp32", "on", "binary", 64)["rps"] / engine["fp32"]["b64_images_per_s"]
        c1 = cell("fp32", "on", "binary", 1)["p99_ms"] - engine["fp32"]["b1_p50_ms"]
        never_slower = {f"{m}/{e}/c{c}": cell(m, "on", e, c)["rps"] / cell(m, "off", e, c)["rps"]
                        for m in models for e in reqs for c in levels}  # fmt: skip
        grpc_over_binary = None
        if "grpc" in reqs and "binary" in reqs:
            grpc_over_binary = (cell("fp32", "on", "grpc", 64)["rps"]
                                / cell("fp32", "on", "binary", 64)["rps"])  # fmt: skip
        int8_over_fp32 = {e: cell("int8", "on", e, 64)["rps"] / cell("fp32", "on", e, 64)["rps"]
                          for e in reqs}  # fmt: skip
        targets = {"c64_binary_fp32_vs_bare_b64": hi, "c1_p99_minus_bare_b1_p50_ms": c1,
                   "batching_on_over_off": never_slower, "c64_grpc_over_binary": grpc_over_binary,
                   "c64_int8_over_fp32": int8_over_fp32}  # fmt: skip
        if grpc_over_binary is not None:
            print(f"concurrency 64, fp32: gRPC {grpc_over_binary:.2f}x REST binary (target >= 1)")
        print("concurrency 64, INT8 over fp32: " + ", ".join(
            f"{e} {v:.2f}x" for e, v in int8_over_fp32.items()) + " (target >= 1)")  # fmt: skip
        print(
            f"concurrency 64, fp32 binary: {hi:.0%} of bare batch-64 throughput (target 75%); "
            f"concurrency 1 p99 - bare b1 p50 = {c1:.2f} ms (target <= 1); batching on/off: "
            f"{min(never_slower.values()):.2f}..{max(never_slower.values()):.2f}x"
        )
    write_report(a.out, {"command": "python " + " ".join(sys.argv),
                         "measured_on": machine.measured_on(),
                         "seconds": a.seconds, "repeats": a.repeats, "server_args": extra,
                         "bare": engine, "cells": cells, "targets": targets})  # fmt: skip


if __name__ == "__main__":
    main()
