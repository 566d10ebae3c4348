"""Servers side by side, one load: KServe's own Python model server (the protocol's reference
server in Python) and Seldon MLServer, each around an ONNX Runtime session, a FastAPI +
onnxruntime server written the way tutorials write one, and `mnist-edge serve` (its default
workers, and one worker); the packaged fp32 model in each, Debian's `hey` on the same cores,
requests/s and p50/p99 at concurrency 1, 8 and 64.

The peers are installed in scratch venvs this script makes, never in the project's own
dependencies: `--venv` (default /tmp/mnist-edge-peers; kserve==0.21.0 fastapi uvicorn
onnxruntime numpy) and `--mlserver-venv` (default /tmp/mnist-edge-mlserver; mlserver==1.7.1
onnxruntime numpy: MLServer pins a starlette that KServe 0.21 refuses). All get the same request
bodies (Open Inference Protocol JSON: one digit, FP32 [1, 1, 28, 28]; and the binary tensor
extension for the servers that speak it), ONNX Runtime with as many intra-op threads as cores
(mnist-edge's workers divide them), KServe's latency log turned off (its access log stays, as
it ships), output to a file. MLServer runs with adaptive batching (64 requests, 500 us, as
mnist-edge's defaults) and `parallel_workers: 0` (inference in the server process: its worker
pool crashes at start on this Python, FIELD-NOTES), speaking JSON only (it has no binary
tensor extension).
Writes benchmarks/results/serve_peers.json.

    python benchmarks/serve_peers.py [--seconds 5] [--repeats 2]
"""

from __future__ import annotations

import argparse
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from _report import print_table, write_report
from serve import Server, bodies, hey, summary

from mnist_edge.edge import machine
from mnist_edge.edge.runtime import pretrained_path
from mnist_edge.edge.threads import cores

PEERS = ("kserve==0.21.0", "fastapi", "uvicorn", "onnxruntime", "numpy")
MLSERVER_PEERS = ("mlserver==1.7.1", "onnxruntime", "numpy")

KSERVE = """
import sys
import uuid
import numpy as np
import onnxruntime as ort
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer

class MNIST(Model):
    def __init__(self, name, path, threads):
        super().__init__(name)
        self.path, self.threads = path, threads
        self.load()

    def load(self):
        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        self.session = ort.InferenceSession(self.path, so, providers=["CPUExecutionProvider"])
        self.ready = True

    def predict(self, payload: InferRequest, headers=None):
        x = payload.inputs[0].as_numpy()
        y = self.session.run(None, {"input": x})[0]
        out = InferOutput(name="log_probs", shape=list(y.shape), datatype="FP32")
        out.set_data_from_numpy(y, binary_data=payload.use_binary_outputs)
        return InferResponse(model_name=self.name, infer_outputs=[out],
                             response_id=payload.id or uuid.uuid4().hex)

if __name__ == "__main__":
    path, port, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    server = ModelServer(http_port=port, enable_grpc=False, workers=1,
                         enable_latency_logging=False)  # no per-request log lines: as ours
    server.start([MNIST("mnist", path, threads)])
"""

# As tutorials write it: FastAPI, a pydantic body, the session at module level, a plain def
# route (FastAPI runs it in its thread pool), the answer as a list of lists.
FASTAPI = """
import sys
import numpy as np
import onnxruntime as ort
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel

path, port, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
so = ort.SessionOptions()
so.intra_op_num_threads = threads
session = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
app = FastAPI()

class Tensor(BaseModel):
    name: str
    datatype: str
    shape: list[int]
    data: list[float]

class Request(BaseModel):
    inputs: list[Tensor]

@app.get("/v2/health/ready")
def ready():
    return {"ready": True}

@app.post("/v2/models/mnist/infer")
def infer(req: Request):
    x = np.array(req.inputs[0].data, dtype=np.float32).reshape(req.inputs[0].shape)
    y = session.run(None, {"input": x})[0]
    return {"model_name": "mnist", "outputs": [{"name": "log_probs", "datatype": "FP32",
            "shape": list(y.shape), "data": y.ravel().tolist()}]}

uvicorn.run(app, host="127.0.0.1", port=port, log_level="error")
"""


# MLServer: a custom runtime (an MLModel), its model-settings.json and settings.json, written
# beside this launcher, which then runs `mlserver start`.
MLSERVER = """
import json, os, socket, sys

RUNTIME = '''
import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceResponse

class MNIST(MLModel):
    async def load(self):
        so = ort.SessionOptions()
        so.intra_op_num_threads = int(self.settings.parameters.extra["threads"])
        self.session = ort.InferenceSession(self.settings.parameters.uri, so,
                                            providers=["CPUExecutionProvider"])
        return True

    async def predict(self, payload):
        x = NumpyCodec.decode_input(payload.inputs[0]).astype(np.float32)
        y = self.session.run(None, {"input": x})[0]
        return InferenceResponse(model_name=self.name,
                                 outputs=[NumpyCodec.encode_output("log_probs", y)])
'''

def free():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

path, port, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mlserver_repo")
os.makedirs(os.path.join(root, "mnist"), exist_ok=True)
with open(os.path.join(root, "mnist", "runtime.py"), "w") as f:
    f.write(RUNTIME)
with open(os.path.join(root, "settings.json"), "w") as f:
    json.dump({"host": "127.0.0.1", "http_port": port, "grpc_port": free(),
               "metrics_port": free(), "parallel_workers": 0, "debug": False}, f)
with open(os.path.join(root, "mnist", "model-settings.json"), "w") as f:
    json.dump({"name": "mnist", "implementation": "runtime.MNIST", "max_batch_size": 64,
               "max_batch_time": 0.0005,
               "parameters": {"uri": path, "extra": {"threads": threads}}}, f)
os.chdir(os.path.join(root, "mnist"))
mlserver = os.path.join(os.path.dirname(sys.executable), "mlserver")
os.execv(mlserver, [mlserver, "start", root])
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def venv(folder: Path, packages: tuple[str, ...], probe: str) -> Path:
    python = folder / "bin" / "python"
    if not python.is_file():
        subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
    if subprocess.run([str(python), "-c", f"import {probe}"], capture_output=True).returncode:
        subprocess.run([str(python), "-m", "pip", "install", "-q", *packages], check=True)
    return python


class Peer:
    def __init__(self, python: Path, code: str, folder: Path, name: str) -> None:
        self.port = free_port()
        script = folder / f"{name}_server.py"
        script.write_text(code)
        self.log = open(folder / f"{name}.log", "w+")  # a file: a full pipe would stall it
        self.proc = subprocess.Popen([str(python), str(script), str(pretrained_path()),
                                      str(self.port), str(cores())], cwd=folder,
                                     stdout=self.log, stderr=self.log, text=True)  # fmt: skip
        self.url = f"http://127.0.0.1:{self.port}/"
        for _ in range(600):
            try:
                if urllib.request.urlopen(self.url + "v2/health/ready", timeout=1).status == 200:
                    return
            except OSError:
                time.sleep(0.1)
        self.proc.kill()
        self.log.seek(0)
        raise SystemExit(f"{name} did not start: {self.log.read()[-2000:]}")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--concurrency", default="1,8,64")
    p.add_argument("--venv", default="/tmp/mnist-edge-peers")
    p.add_argument("--mlserver-venv", default="/tmp/mnist-edge-mlserver")
    p.add_argument("--out", default="benchmarks/results/serve_peers.json")
    a = p.parse_args()
    levels = [int(c) for c in a.concurrency.split(",")]
    python = venv(Path(a.venv), PEERS, "kserve, fastapi, uvicorn, onnxruntime")
    ml_python = venv(Path(a.mlserver_venv), MLSERVER_PEERS, "mlserver, onnxruntime")
    cells, rows = [], []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        reqs = bodies(tmp)
        servers = {
            "kserve": lambda: Peer(python, KSERVE, tmp, "kserve"),
            "mlserver": lambda: Peer(ml_python, MLSERVER, tmp, "mlserver"),
            "fastapi": lambda: Peer(python, FASTAPI, tmp, "fastapi"),
            "mnist-edge": lambda: Server(["--model", str(pretrained_path())], tmp),
            "mnist-edge 1 worker": lambda: Server(["--model", str(pretrained_path()),
                                                   "--workers", "1"], tmp),
        }  # fmt: skip
        encodings = {"kserve": ("json", "binary"), "mlserver": ("json",), "fastapi": ("json",),
                     "mnist-edge": ("json", "binary"),
                     "mnist-edge 1 worker": ("json", "binary")}  # fmt: skip
        for name, start in servers.items():
            server = start()
            try:
                url = server.url + "v2/models/mnist/infer"
                for encoding in encodings[name]:
                    body, headers = reqs[encoding]
                    hey(url, body, headers, 8, 1.0)  # warm
                    for c in levels:
                        runs = [hey(url, body, headers, c, a.seconds) for _ in range(a.repeats)]
                        cell = {"server": name, "encoding": encoding, "concurrency": c,
                                **summary(runs)}  # fmt: skip
                        cells.append(cell)
                        rows.append([name, encoding, str(c), f"{cell['rps']:.0f}",
                                     f"{cell['p50_ms']:.2f}", f"{cell['p99_ms']:.2f}",
                                     str(cell["not_200"])])  # fmt: skip
            finally:
                server.stop()
    print_table(["server", "encoding", "concurrency", "requests/s", "p50 ms", "p99 ms",
                 "not 200"], rows)  # fmt: skip

    def get(server: str, encoding: str, c: int) -> dict | None:
        return next((x for x in cells if (x["server"], x["encoding"], x["concurrency"]) ==
                     (server, encoding, c)), None)  # fmt: skip

    ratios = {}
    top = max(levels)
    for encoding in ("json", "binary"):
        for peer in ("kserve", "mlserver"):
            ours, theirs = get("mnist-edge", encoding, top), get(peer, encoding, top)
            if ours and theirs:
                ratios[f"{encoding}_c{top}_vs_{peer}"] = ours["rps"] / theirs["rps"]
            one = get("mnist-edge 1 worker", encoding, top)
            if one and theirs:
                ratios[f"{encoding}_c{top}_1_worker_vs_{peer}"] = one["rps"] / theirs["rps"]
        ours1, theirs1 = get("mnist-edge", encoding, 1), get("kserve", encoding, 1)
        if ours1 and theirs1:
            ratios[f"{encoding}_c1_p99_ms"] = {
                "mnist-edge": ours1["p99_ms"],
                "kserve": theirs1["p99_ms"],
            }
    print(ratios)
    write_report(a.out, {"command": "python " + " ".join(sys.argv),
                         "measured_on": machine.measured_on(),
                         "seconds": a.seconds, "repeats": a.repeats,
                         "peers": list(PEERS) + list(MLSERVER_PEERS),
                         "cells": cells, "ratios": ratios})  # fmt: skip


if __name__ == "__main__":
    main()
