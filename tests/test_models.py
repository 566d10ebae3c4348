"""Several models in one server, and a model replaced while clients keep calling: `--model
NAME=PATH` repeated, `--model-repository` (Triton's layout and model files), the repository
extension (index, load, unload) through tritonclient over REST and gRPC, reload by SIGHUP and by
the load call under `hey` at concurrency 64 (no request lost, no 5xx, every answer entirely from
the old model or entirely from the new), per-model readiness, metadata and metrics, and
`--workers 2` (both processes serving one port, /metrics added up, SIGTERM drains them all)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from test_serve import Server, _hey, _hey_body, curl, need_hey

from mnist_edge.edge import triton
from mnist_edge.edge.data import batches, load_split
from mnist_edge.edge.errors import ConfigError
from mnist_edge.edge.runtime import Predictor, pretrained_path
from mnist_edge.edge.server import ServeConfig
from mnist_edge.edge.server.models import model_name, scan, sources, warm_up

httpclient = pytest.importorskip("tritonclient.http", reason="tritonclient[http] (dev extra)")
grpcclient = pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] (dev extra)")
from tritonclient.utils import InferenceServerException  # noqa: E402

FP32, INT8 = pretrained_path(), pretrained_path(int8=True)
# ONNX Runtime's answer for one row moves with the batch it is in by far less than this (the
# parity tolerance is 1e-4 on these log-probabilities); fp32 and INT8 differ by more than
# GAP on the rows the swap test picks, so a row is told apart without doubt.
SAME, GAP = 1e-3, 2e-2


@pytest.fixture(scope="module")
def digits(mnist_dir):
    return load_split("test", mnist_dir, 300)


@pytest.fixture(scope="module")
def pair(digits):
    """16 normalised digits on which fp32 and INT8 answer far apart, and both answers."""
    x = np.concatenate(list(batches(digits.images, 300)))
    old, new = Predictor(FP32).run(x), Predictor(INT8).run(x)
    apart = np.nonzero(np.abs(old - new).max(1) > GAP)[0][:16]
    assert apart.size == 16, "fp32 and INT8 should differ on at least 16 of 300 digits"
    return x[apart], old[apart], new[apart]


def http(s: Server):
    return httpclient.InferenceServerClient(s.address, network_timeout=60)


def infer(c, x: np.ndarray, model: str, version: str = "") -> tuple[np.ndarray, str]:
    module = httpclient if isinstance(c, httpclient.InferenceServerClient) else grpcclient
    tensor = module.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    r = c.infer(model, [tensor], model_version=version,
                outputs=[module.InferRequestedOutput("log_probs")])  # fmt: skip
    version = r.get_response()["model_version"] if module is httpclient else (
        r.get_response().model_version)  # fmt: skip
    return r.as_numpy("log_probs"), version


def which(answer: np.ndarray, old: np.ndarray, new: np.ndarray) -> str:
    """ "old" or "new" when every row is that model's answer, else "mixed"."""
    if np.abs(answer - old).max() < SAME:
        return "old"
    if np.abs(answer - new).max() < SAME:
        return "new"
    return "mixed"


# --- sources, without a server -------------------------------------------------------------
def test_a_repository_folder_serves_triton_folders_and_model_files(tmp_path):
    repo = triton.write_repository(tmp_path, FP32, INT8).root
    shutil.copyfile(FP32, repo / "plain.onnx")
    shutil.copyfile(INT8, repo / "plain.int8.onnx")
    (repo / "notes.txt").write_text("not a model")
    found = {s.name: s for s in scan(repo)}
    assert sorted(found) == ["mnist", "mnist_int8", "plain", "plain_int8"]
    assert found["mnist"].resolve() == ("1", repo / "mnist" / "1" / "model.onnx")
    (repo / "mnist" / "3").mkdir()
    shutil.copyfile(INT8, repo / "mnist" / "3" / "model.onnx")
    assert found["mnist"].resolve() == ("3", repo / "mnist" / "3" / "model.onnx")  # the newest
    assert model_name(Path("x.int8.tflite")) == "x_int8" and model_name(Path("a.pt")) is None
    shutil.copyfile(FP32, repo / "plain.tflite")  # two files, one name: refused, both named
    with pytest.raises(ConfigError, match="plain.onnx and plain.tflite"):
        scan(repo)


def test_model_flags_name_the_models(tmp_path):
    cfg = ServeConfig(models=(str(FP32), f"small={INT8}"))
    assert [(s.name, s.path) for s in sources(cfg)] == [("mnist", FP32), ("small", INT8)]

    for bad in [dict(models=(f"a={FP32}", f"a={INT8}")), dict(models=(f"={FP32}",)),
                dict(models=(str(FP32),), repository=str(tmp_path)), dict(workers=0)]:  # fmt: skip
        with pytest.raises(ConfigError):
            ServeConfig(**bad)


# --- several models -------------------------------------------------------------------------
def test_two_models_side_by_side_over_rest_and_grpc(tmp_path, pair):
    x, old, new = pair
    s = Server("--model", f"fp32={FP32}", "--model", f"int8={INT8}", cwd=tmp_path)
    try:
        c, g = http(s), grpcclient.InferenceServerClient(s.grpc_address)
        for client in (c, g):
            assert which(infer(client, x, "fp32")[0], old, new) == "old"
            assert which(infer(client, x, "int8")[0], old, new) == "new"
        assert c.is_model_ready("fp32") and g.is_model_ready("int8")
        assert c.get_model_metadata("int8")["parameters"]["precision"] == "int8"
        index = {m["name"]: m for m in c.get_model_repository_index()}
        assert {k: v["state"] for k, v in index.items()} == {"fp32": "READY", "int8": "READY"}
        grpc_index = {m.name: m.state for m in g.get_model_repository_index().models}
        assert grpc_index == {"fp32": "READY", "int8": "READY"}
        status, body = curl(s.url + "v2/models/mnist")
        assert status == 404 and "'fp32', 'int8'" in body["error"]
        text = subprocess.run(["curl", "-s", s.url + "metrics"], capture_output=True, text=True,
                              timeout=30).stdout  # fmt: skip
        for name in ("fp32", "int8"):  # one 16-image request over REST and one over gRPC each
            images = re.search(rf'^mnist_edge_images_total\{{model="{name}"\}} (\S+)', text, re.M)
            assert images and float(images.group(1)) == 32, text[-2000:]
            assert f'mnist_edge_ready{{model="{name}"}} 1.0' in text
    finally:
        assert s.stop()[0] == 0


def test_load_unload_and_a_failed_reload(tmp_path, pair):
    x, old, new = pair
    model = tmp_path / "m.onnx"
    shutil.copyfile(FP32, model)
    s = Server("--model", f"m={model}", cwd=tmp_path)
    try:
        c, g = http(s), grpcclient.InferenceServerClient(s.grpc_address)
        c.unload_model("m")
        assert not c.is_model_ready("m") and not c.is_server_ready()
        with pytest.raises(InferenceServerException) as err:
            infer(c, x, "m")
        assert err.value.status() == "404" and "not loaded" in err.value.message()
        with pytest.raises(InferenceServerException) as err:
            infer(g, x, "m")
        assert err.value.status() == "StatusCode.NOT_FOUND"
        g.load_model("m")
        assert c.is_model_ready("m") and c.is_server_ready()
        assert which(infer(c, x, "m")[0], old, new) == "old"
        # a file that cannot be loaded: the load fails, the old version keeps serving
        model.write_bytes(b"\0not a model")
        with pytest.raises(InferenceServerException) as err:
            c.load_model("m")
        assert err.value.status() == "400" and "cannot load" in err.value.message()
        assert which(infer(c, x, "m")[0], old, new) == "old"
        (row,) = c.get_model_repository_index()
        assert row["state"] == "READY" and "reload failed" in row["reason"]
        with pytest.raises(InferenceServerException) as err:
            c.load_model("nope")
        assert err.value.status() == "404"
        with pytest.raises(InferenceServerException) as err:
            g.load_model("m", config='{"backend": "onnxruntime"}')
        assert err.value.status() == "StatusCode.INVALID_ARGUMENT"
    finally:
        assert s.stop()[0] == 0


def test_a_triton_repository_takes_a_new_version(tmp_path, pair):
    x, old, new = pair
    repo = triton.write_repository(tmp_path, FP32).root
    s = Server("--model-repository", repo, cwd=tmp_path)
    try:
        c = http(s)
        answer, version = infer(c, x, "mnist", "1")
        assert version == "1" and which(answer, old, new) == "old"
        (repo / "mnist" / "2").mkdir()
        shutil.copyfile(INT8, repo / "mnist" / "2" / "model.onnx")
        c.load_model("mnist")
        answer, version = infer(c, x, "mnist")
        assert version == "2" and which(answer, old, new) == "new"
        with pytest.raises(InferenceServerException) as err:
            infer(c, x, "mnist", "1")
        assert err.value.status() == "404"
        # a model added to the folder is loaded by name
        shutil.copyfile(FP32, repo / "late.onnx")
        c.load_model("late")
        assert which(infer(c, x, "late")[0], old, new) == "old"
    finally:
        assert s.stop()[0] == 0


# --- the swap under load --------------------------------------------------------------------
def _swap_under_load(tmp_path: Path, digits, pair, workers: int) -> None:
    need_hey()
    x, old, new = pair
    model = tmp_path / "live.onnx"
    shutil.copyfile(FP32, model)
    s = Server("--model", f"mnist={model}", "--workers", workers, cwd=tmp_path)
    body, headers = _hey_body(tmp_path, digits)
    report: list[str] = []
    seen: list[str] = []
    stop = threading.Event()

    def checker() -> None:  # a client that reads every answer, beside hey's load
        c = http(s)
        for _ in range(100_000):
            if stop.is_set():
                return
            seen.append(which(infer(c, x, "mnist")[0], old, new))

    load = threading.Thread(target=lambda: report.append(
        _hey(s.url + "v2/models/mnist/infer", 5, 64, body, headers)))  # fmt: skip
    check = threading.Thread(target=checker)
    try:
        load.start()
        check.start()
        time.sleep(1.2)
        os.replace(shutil.copyfile(INT8, tmp_path / "next.onnx"), model)
        s.proc.send_signal(signal.SIGHUP)  # every worker reloads
        time.sleep(1.5)
        os.replace(shutil.copyfile(FP32, tmp_path / "next.onnx"), model)
        if workers == 1:  # and back, by the repository call this time
            http(s).load_model("mnist")
        else:
            s.proc.send_signal(signal.SIGHUP)
        time.sleep(1.2)
    finally:
        load.join()
        stop.set()
        check.join()
        code, log = s.stop()
    assert code == 0, log
    statuses = {int(k): int(n) for k, n in re.findall(r"\[(\d+)\]\s+(\d+) responses", report[0])}
    errors = report[0].partition("Error distribution:")[2]
    kinds = {k: seen.count(k) for k in ("old", "new", "mixed")}
    print(f"swap with {workers} worker(s): hey {statuses}, checker {kinds}")
    assert set(statuses) == {200} and statuses[200] > 500 and not errors.strip(), report[0]
    assert kinds["mixed"] == 0 and kinds["new"] > 0 and seen[-1] == "old", kinds


def test_a_reload_under_load_loses_nothing_and_never_mixes(tmp_path, digits, pair):
    _swap_under_load(tmp_path, digits, pair, workers=1)


def test_two_workers_reload_and_drain_under_load(tmp_path, digits, pair):
    _swap_under_load(tmp_path, digits, pair, workers=2)


def test_two_workers_share_the_port_metrics_and_repository_calls(tmp_path, pair):
    x, old, _ = pair
    s = Server("--workers", 2, cwd=tmp_path)
    try:
        children = subprocess.run(["pgrep", "-P", str(s.proc.pid), "-f", "spawn_main"],
                                  capture_output=True, text=True).stdout.split()  # fmt: skip
        assert len(children) == 2, children
        clients = [http(s) for _ in range(8)]  # connections the kernel spreads over workers
        for c in clients:
            assert which(infer(c, x, "mnist")[0], old, old) == "old"
        text = ""
        for _ in range(4):  # whichever worker answers /metrics adds up both
            text = subprocess.run(["curl", "-s", s.url + "metrics"], capture_output=True,
                                  text=True, timeout=30).stdout  # fmt: skip
            images = re.search(r'^mnist_edge_images_total\{model="mnist"\} (\S+)', text, re.M)
            assert images and float(images.group(1)) == 8 * 16, text[-1500:]
        assert s.client.is_server_ready()
        # a repository call one worker takes is done by both before it is answered
        http(s).unload_model("mnist")
        for c in [http(s) for _ in range(8)]:
            with pytest.raises(InferenceServerException) as err:
                infer(c, x, "mnist")
            assert err.value.status() == "404"
        http(s).load_model("mnist")
        for c in [http(s) for _ in range(8)]:
            assert which(infer(c, x, "mnist")[0], old, old) == "old"
        # a worker that dies is replaced, and the port keeps answering meanwhile (once it is
        # gone: a connection the kernel queued at its socket as it died is reset, see the
        # serving guide)
        os.kill(int(children[0]), signal.SIGKILL)
        while children[0] in subprocess.run(["pgrep", "-P", str(s.proc.pid)], text=True,
                                            capture_output=True).stdout.split():  # fmt: skip
            time.sleep(0.05)
        for c in [http(s) for _ in range(8)]:
            assert which(infer(c, x, "mnist")[0], old, old) == "old"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            now = subprocess.run(["pgrep", "-P", str(s.proc.pid), "-f", "spawn_main"],
                                 capture_output=True, text=True).stdout.split()  # fmt: skip
            if len(now) == 2 and children[0] not in now:
                break
            time.sleep(0.2)
        else:
            raise AssertionError("the dead worker was not replaced")
    finally:
        assert s.stop()[0] == 0


def test_the_warm_up_answers_a_batch_of_one():
    """Before a version serves (and readiness says so), the engine has answered a batch."""
    seen = []
    warm_up(lambda x: seen.append(x.shape) or np.zeros((len(x), 10), np.float32), 28)
    assert seen == [(1, 1, 28, 28)]
