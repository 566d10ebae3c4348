"""`mnist-edge serve` as its users reach it: Triton's own client (tritonclient.http, JSON and
binary tensors), curl and a load generator (hey), against a server the test starts on a free
port, loopback only. Answers, every error status, the limits, draining on SIGTERM under load
(none lost), memory over a soak, and a slow client that holds nothing."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_same_answers
from PIL import Image

from mnist_edge.edge.data import batches, load_split
from mnist_edge.edge.images import prepare_image
from mnist_edge.edge.runtime import Predictor, pretrained_path
from mnist_edge.edge.server import rest_codec, tensors

httpclient = pytest.importorskip("tritonclient.http", reason="tritonclient[http] (dev extra)")


class Server:
    """`python -m mnist_edge serve ARGS --port 0`, its URL read from its first line."""

    def __init__(self, *args: object, cwd: Path, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mnist_edge", "serve", "--port", "0", *map(str, args)],
            cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=env, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )  # fmt: skip
        line = self.proc.stdout.readline()
        match = re.search(r"http://(127\.0\.0\.1:\d+)/", line)
        assert match, line + self.proc.stderr.read()
        self.address = match.group(1)
        self.url = f"http://{self.address}/"
        grpc = re.search(r"gRPC at (127\.0\.0\.1:\d+)", line)
        self.grpc_address = grpc.group(1) if grpc else None
        self.client = httpclient.InferenceServerClient(self.address, network_timeout=60)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if self.client.is_server_ready():
                    return
            except Exception:
                pass
            time.sleep(0.05)
        raise AssertionError("the server never became ready: " + self.stop()[1])

    def stop(self, sig: int = signal.SIGTERM) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            out, err = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            # a server that does not stop: it and its workers are killed (a worker left
            # behind would hold the output pipes open, and the test would hang instead of
            # failing), and the return code says it was killed
            for pid in [*descendants(self.proc.pid), self.proc.pid]:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            out, err = self.proc.communicate(timeout=60)
        return self.proc.returncode, out + err


def descendants(pid: int) -> list[int]:
    """The processes below `pid` (Linux /proc), children first."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


class Running:
    """A server that is already up (MNIST_EDGE_SERVE_URL): test_ray.py runs the tests marked
    `oip` against Ray Serve this way, inside the network namespace of its cluster."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/") + "/"
        self.address = self.url.split("//", 1)[1].rstrip("/")
        self.client = httpclient.InferenceServerClient(self.address, network_timeout=60)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if os.environ.get("MNIST_EDGE_SERVE_URL"):
        yield Running(os.environ["MNIST_EDGE_SERVE_URL"])
        return
    s = Server(cwd=tmp_path_factory.mktemp("serve"))
    yield s
    code, output = s.stop()
    assert code == 0, output


@pytest.fixture(scope="module")
def digits(mnist_dir):
    return load_split("test", mnist_dir, 1000)


def infer(client, x: np.ndarray, binary: bool, name: str = "input") -> np.ndarray:
    tensor = httpclient.InferInput(name, list(x.shape), "FP32" if name == "input" else "BYTES")
    tensor.set_data_from_numpy(x, binary_data=binary)
    out = httpclient.InferRequestedOutput("log_probs", binary_data=binary)
    return client.infer("mnist", [tensor], outputs=[out]).as_numpy("log_probs")


def curl(*args: str) -> tuple[int, dict]:
    r = subprocess.run(["curl", "-s", "-o", "-", "-w", "\n%{http_code}", *args],
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    body, code = r.stdout.rsplit("\n", 1)
    return int(code), json.loads(body) if body.strip().startswith("{") else {"raw": body}


def png(digit: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(255 - digit).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.oip
def test_the_protocol_endpoints(server):
    c = server.client
    assert c.is_server_live() and c.is_server_ready() and c.is_model_ready("mnist")
    meta = c.get_server_metadata()
    assert meta["name"] == "mnist-edge" and "binary_tensor_data" in meta["extensions"]
    model = c.get_model_metadata("mnist")
    assert model["versions"] == ["1"] and model["outputs"][0]["shape"] == [-1, 10]
    assert {i["name"]: i["datatype"] for i in model["inputs"]} == {
        "input": "FP32",
        "image": "BYTES",
    }
    assert c.get_model_metadata("mnist", "1")["name"] == "mnist"  # the /versions/ form
    config = c.get_model_config("mnist")
    assert config["max_batch_size"] >= 1 and config["input"][0]["dims"] == [1, 28, 28]
    assert curl(server.url + "v2/models/mnist/versions/1/ready")[0] == 200
    assert curl(server.url + "v2/health/live")[0] == 200


@pytest.mark.oip
@pytest.mark.parametrize("binary", [False, True])
def test_answers_equal_the_predictor_on_1000_digits(server, digits, binary):
    """Binary tensors and JSON alike give the Predictor's log-probabilities, in requests of
    varied sizes that the batcher gathers and splits back."""
    predictor = Predictor(pretrained_path(), threads=1)
    x = np.concatenate(list(batches(digits.images, 128)))
    want = predictor.run(x)
    got, start = [], 0
    for size in (1, 7, 64, 100, 128, 200, 500):
        got.append(infer(server.client, x[start : start + size], binary))
        start += size
    got = np.concatenate(got)
    assert got.shape == want.shape == (1000, 10)
    assert_same_answers(want, got)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-3)  # the parity rule


@pytest.mark.oip
def test_image_files_go_through_predicts_pipeline(server, digits):
    files = [png(d) for d in digits.images[:20]]
    out = infer(server.client, np.array(files, dtype=np.object_), True, name="image")
    want = [int(Predictor.pretrained().predict(prepare_image(Image.open(io.BytesIO(f)))).labels[0])
            for f in files]  # fmt: skip
    assert out.argmax(1).tolist() == want


@pytest.mark.oip
def test_parallel_clients_get_their_own_rows(server, digits):
    """Requests gathered into one batch each get back exactly their own rows."""
    x = np.concatenate(list(batches(digits.images[:64], 64)))
    want = Predictor(pretrained_path(), threads=1).run(x)
    results: dict[int, np.ndarray] = {}

    def one(i: int) -> None:
        client = httpclient.InferenceServerClient(server.address)
        results[i] = infer(client, x[i : i + 1], True)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = np.concatenate([results[i] for i in range(64)])
    assert_same_answers(want, got)


def _post(url: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    args = [url + "v2/models/mnist/infer", "-X", "POST", "--data-binary", "@-"]
    for k, v in (headers or {}).items():
        args += ["-H", f"{k}: {v}"]
    r = subprocess.run(["curl", "-s", "-D", "-", *args], input=body, capture_output=True,
                       timeout=60)  # fmt: skip
    text = r.stdout.decode(errors="replace")
    head, _, payload = text.partition("\r\n\r\n")
    code = int(head.split()[1])
    return code, {"headers": head.lower(), **(json.loads(payload) if payload.startswith("{")
                                             else {})}  # fmt: skip


def _fp32(name="input", dtype="FP32", shape=(1, 1, 28, 28), data=None) -> bytes:
    n = int(np.prod(shape))
    return json.dumps(
        {
            "inputs": [
                {
                    "name": name,
                    "datatype": dtype,
                    "shape": list(shape),
                    "data": data if data is not None else [0.0] * n,
                }
            ]
        }
    ).encode()


_CUT = json.dumps(
    {
        "inputs": [
            {
                "name": "input",
                "datatype": "FP32",
                "shape": [1, 1, 28, 28],
                "parameters": {"binary_data_size": 3136},
            }
        ]
    }
).encode()


@pytest.mark.oip
@pytest.mark.parametrize("body, headers, status, words", [
    (_fp32(name="pixels"), {}, 400, "unknown input 'pixels'"),
    (_fp32(dtype="INT8"), {}, 400, "is FP32"),
    (_fp32(shape=(1, 28, 28)), {}, 400, "[N, 1, 28, 28]"),
    (_fp32(data=[0.0] * 10), {}, 400, "10 values for a shape of 784"),
    (b"not json", {}, 400, "not JSON"),
    # a number past float64 is refused as the JSON is read (orjson), by name
    (_fp32(data=[float("nan")] * 784).replace(b"NaN", b"1e999"), {}, 400, "infinity"),
    (_CUT + b"\0" * 10, {"Inference-Header-Content-Length": str(len(_CUT))}, 400,
     "binary_data_size is 3136 but the body holds 10 bytes"),
    (json.dumps({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                             "data": ["bm90IGFuIGltYWdl"]}]}).encode(), {}, 400, "image 0"),
    (_fp32(), {"Inference-Header-Content-Length": "99999"}, 400, "outside the body"),
])  # fmt: skip
def test_bad_requests_get_400_with_an_error_body(server, body, headers, status, words):
    code, answer = _post(server.url, body, headers)
    assert code == status and "error" in answer and words in answer["error"], answer


@pytest.mark.oip
@pytest.mark.parametrize(
    "path, words",
    [
        ("v2/models/other", "unknown model"),
        ("v2/models/mnist/versions/7", "unknown version"),
        ("v2/models/other/infer", "unknown model"),
    ],
)
def test_unknown_models_and_versions_are_404(server, path, words):
    method = ["-X", "POST", "-d", "{}"] if path.endswith("infer") else []
    code, answer = curl(server.url + path, *method)
    assert code == 404 and words in answer["error"]


def test_page_and_api_from_one_server(tmp_path):
    """With a web export, the same server answers the page (cross-origin isolated) and the API;
    what is not in the folder is a plain 404."""
    from mnist_edge.edge import web

    cfg, _ = web.config_for(tmp_path / "none", tmp_path / "web")
    web.export_web(cfg)
    s = Server(tmp_path / "web", cwd=tmp_path)
    try:
        r = subprocess.run(["curl", "-s", "-D", "-", "-o", "/dev/null", s.url + "index.html"],
                           capture_output=True, text=True, timeout=30)  # fmt: skip
        assert " 200" in r.stdout.splitlines()[0]
        assert "cross-origin-embedder-policy: require-corp" in r.stdout.lower()
        assert curl(s.url + "../etc/passwd")[0] == 404 and curl(s.url + ".hidden")[0] == 404
        assert s.client.is_model_ready("mnist")
    finally:
        assert s.stop()[0] == 0


def test_limits_body_queue_and_an_oversized_request(tmp_path, digits):
    """413 over --max-body; 503 with Retry-After when --max-queue images already wait; a
    request over --max-request-images is a 400 naming the limit."""
    s = Server("--max-body", 200000, "--max-queue", 8, "--max-batch", 8, "--max-delay", 100000,
               "--max-request-images", 32, cwd=tmp_path)  # fmt: skip
    try:
        code, answer = _post(s.url, _fp32(shape=(80, 1, 28, 28)))
        assert code == 413 and "--max-body" in answer["error"]
        x = np.concatenate(list(batches(digits.images[:8], 8)))
        codes: list[int] = []

        def one() -> None:
            body = json.dumps(
                {
                    "inputs": [
                        {
                            "name": "input",
                            "datatype": "FP32",
                            "shape": [8, 1, 28, 28],
                            "parameters": {"binary_data_size": x.nbytes},
                        }
                    ]
                }
            ).encode()
            c, answer = _post(s.url, body + x.tobytes(), {
                "Inference-Header-Content-Length": str(len(body))})  # fmt: skip
            codes.append(c)
            if c == 503:
                assert "retry-after: 1" in answer["headers"] and "busy" in answer["error"]

        threads = [threading.Thread(target=one) for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert set(codes) <= {200, 503} and 503 in codes and 200 in codes, codes
        big = np.zeros((33, 1, 28, 28), np.float32)
        body = json.dumps(
            {
                "inputs": [
                    {
                        "name": "input",
                        "datatype": "FP32",
                        "shape": list(big.shape),
                        "parameters": {"binary_data_size": big.nbytes},
                    }
                ]
            }
        ).encode()
        code, answer = _post(
            s.url, body + big.tobytes(), {"Inference-Header-Content-Length": str(len(body))}
        )
        assert code == 400 and "at most 32" in answer["error"]
    finally:
        assert s.stop()[0] == 0


@pytest.mark.oip
def test_a_slow_client_holds_nothing(server, digits):
    """A client that sends half its headers and waits does not stop others being answered."""
    host, port = server.address.split(":")
    slow = socket.create_connection((host, int(port)))
    slow.sendall(b"POST /v2/models/mnist/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 99999\r\n")
    try:
        x = np.concatenate(list(batches(digits.images[:4], 4)))
        t0 = time.monotonic()
        for _ in range(20):
            infer(server.client, x, True)
        assert time.monotonic() - t0 < 20
    finally:
        slow.close()


def _hey(url: str, seconds: float, concurrency: int, body: Path, headers: list[str]) -> str:
    cmd = ["hey", "-z", f"{seconds}s", "-c", str(concurrency), "-m", "POST", "-D", str(body),
           *sum((["-H", h] for h in headers), [])]  # fmt: skip
    return subprocess.run([*cmd, url], capture_output=True, text=True, timeout=seconds + 60).stdout


def _hey_body(tmp_path: Path, digits) -> tuple[Path, list[str]]:
    x = np.concatenate(list(batches(digits.images[:1], 1)))
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "datatype": "FP32",
                    "shape": [1, 1, 28, 28],
                    "parameters": {"binary_data_size": x.nbytes},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    path = tmp_path / "body.bin"
    path.write_bytes(head + x.tobytes())
    return path, [
        f"Inference-Header-Content-Length: {len(head)}",
        "Content-Type: application/octet-stream",
    ]


def need_hey() -> None:
    if shutil.which("hey") is None:
        message = "hey is not installed (apt-get install hey; make test installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.mark.parametrize("sig, workers", [(signal.SIGTERM, 1), (signal.SIGINT, 1),
                                          (signal.SIGTERM, 2), (signal.SIGINT, 2)])  # fmt: skip
def test_a_signal_under_load_drains_every_accepted_request(tmp_path, digits, sig, workers):
    """hey keeps 16 connections busy; the server is signalled mid-run. Every request hey sent
    on a connection the server accepted gets an answer (only new connections, once it stops
    listening, are refused), and the server exits 0. With two workers the parent passes the
    signal on and each worker drains."""
    need_hey()
    s = Server("--workers", workers, cwd=tmp_path)
    body, headers = _hey_body(tmp_path, digits)
    out: list[str] = []
    load = threading.Thread(target=lambda: out.append(
        _hey(s.url + "v2/models/mnist/infer", 4, 16, body, headers)))  # fmt: skip
    load.start()
    time.sleep(1.5)
    code, log = s.stop(sig)
    load.join()
    report = out[0]
    assert code == 0, log
    answered = sum(int(n) for n in re.findall(r"\[200\]\s+(\d+) responses", report))
    errors = re.findall(r"\[(\d+)\]\s+(.+)", report.split("Error distribution:")[-1]) if (
        "Error distribution:" in report) else []  # fmt: skip
    lost = [e for e in errors if "connection refused" not in e[1]]
    print(f"drain ({signal.Signals(sig).name}, {workers} workers): {answered} answered, "
          f"errors {errors}")  # fmt: skip
    assert answered > 100 and lost == [], report


def test_memory_stays_flat_over_a_soak(tmp_path, digits):
    """Resident memory after 20,000 requests is within a few MB of what it was after the
    first 2,000 (no leak per request)."""
    need_hey()
    s = Server("--workers", 1, cwd=tmp_path)  # the process whose memory is read serves
    body, headers = _hey_body(tmp_path, digits)
    url = s.url + "v2/models/mnist/infer"

    def rss() -> float:
        for line in Path(f"/proc/{s.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    try:
        subprocess.run(["hey", "-n", "2000", "-c", "8", "-m", "POST", "-D", str(body),
                        *sum((["-H", h] for h in headers), []), url], capture_output=True,
                       timeout=300, check=True)  # fmt: skip
        warm = rss()
        report = subprocess.run(["hey", "-n", "20000", "-c", "8", "-m", "POST", "-D", str(body),
                                 *sum((["-H", h] for h in headers), []), url],
                                capture_output=True, text=True, timeout=600).stdout  # fmt: skip
        after = rss()
    finally:
        assert s.stop()[0] == 0
    assert re.search(r"\[200\]\s+20000 responses", report), report
    print(f"RSS after 2,000 requests {warm:.1f} MB, after 20,000 more {after:.1f} MB")
    assert after - warm < 15, (warm, after)


def test_readiness_follows_loading_and_draining():
    """Not ready before the model is loaded, ready after, not ready while draining."""
    from mnist_edge.edge.server import ModelServer, ServeConfig

    s = ModelServer(ServeConfig())
    assert not s.ready
    s.load()
    try:
        assert s.ready and s.load_error is None
        s.draining = True
        assert not s.ready
    finally:
        s.close()


def test_a_model_that_cannot_load_ends_the_server_in_one_line(tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\0not a model")
    r = subprocess.run([sys.executable, "-m", "mnist_edge", "serve", "--port", "0", "--model",
                        str(junk)], capture_output=True, text=True, timeout=60)  # fmt: skip
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2 and lines[-1].startswith("error: ") and "junk.onnx" in lines[-1]
    assert "Traceback" not in r.stderr


def test_protocol_refuses_a_cut_bytes_element():
    body = json.dumps(
        {
            "inputs": [
                {
                    "name": "image",
                    "datatype": "BYTES",
                    "shape": [1],
                    "parameters": {"binary_data_size": 6},
                }
            ]
        }
    ).encode()
    with pytest.raises(tensors.ProtocolError, match="claims"):
        rest_codec.parse_request(body + b"\x09\0\0\0ab", str(len(body)))


DRAIN_INSIDE_A_WRITE = """
import asyncio, sys, threading
from prometheus_client import values
from mnist_edge.edge.server import ServeConfig
from mnist_edge.edge.server.model_server import ModelServer

# the lock every metric write of a worker takes (prometheus-client's multiprocess mode)
lock = next(c.cell_contents for c in values.ValueClass.set.__closure__
            if isinstance(c.cell_contents, type(threading.Lock())))
server = ModelServer(ServeConfig(grpc=False))
server.load()

async def main():
    with lock:  # a metric write in progress, as when SIGTERM lands in one
        server.drain()  # what the signal handler calls
    await asyncio.sleep(0.05)
    assert server.draining and server.metrics.ready.labels("mnist")._value.get() == 0.0

asyncio.run(main())
server.close()
print("drained")
"""


def test_a_signal_inside_a_metric_write_does_not_deadlock(tmp_path):
    """SIGTERM's handler runs between two bytecodes of whatever the event loop's thread was
    doing, a prometheus write included; draining wrote the readiness gauge at once, took the
    lock the interrupted write held, and hung the worker for good (seen in CI under load)."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    r = subprocess.run([sys.executable, "-c", DRAIN_INSIDE_A_WRITE], env=env, cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0 and "drained" in r.stdout, r.stderr[-2000:]
