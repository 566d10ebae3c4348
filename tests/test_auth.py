"""Keys (edge/server/auth.py): the inference API and model management each behind their keys,
over REST (curl, tritonclient's HTTP client) and gRPC (tritonclient's gRPC client); health open;
401 for no key or an unknown one, 403 for a known key on the wrong scope; keys compared in
constant time and never logged; a server on a non-loopback address refuses to start without
an inference key."""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from test_serve import Server, curl
from tritonclient.utils import InferenceServerException

from mnist_edge.edge.errors import ConfigError
from mnist_edge.edge.server import ServeConfig, auth

INFER_KEY = "infer-key-0123456789abcdef"
ROTATED_KEY = "infer-key-rotated-0123456789"  # the second inference key, from a file
ADMIN_KEY = "admin-key-0123456789abcdef!"  # from the environment


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    folder = tmp_path_factory.mktemp("auth")
    (folder / "keys.txt").write_text(f"# rotation: the new key beside the old\n{ROTATED_KEY}\n")
    env = {**os.environ, auth.ENV_ADMIN_KEYS: ADMIN_KEY}
    s = Server("--api-key", INFER_KEY, "--api-key-file", folder / "keys.txt", "--workers", 2,
               "--verbose", cwd=folder, env=env)  # fmt: skip
    yield s
    code, output = s.stop()
    assert code == 0, output
    # no key is ever logged, whatever the requests carried (--verbose logs every request)
    assert not any(k in output for k in (INFER_KEY, ROTATED_KEY, ADMIN_KEY)), output[-2000:]


def bearer(key: str) -> str:
    return f"Authorization: Bearer {key}"


def test_rest_keys_and_scopes(guarded):
    url = guarded.url
    infer = [url + "v2/models/mnist/infer", "-H", "Content-Type: application/json", "-d",
             '{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 28, 28], '
             '"data": ' + str([0.0] * 784) + "}]}"]  # fmt: skip
    load = ["-X", "POST", url + "v2/repository/models/mnist/load"]
    # health and /metrics are open
    assert curl(url + "v2/health/ready")[0] == 200 and curl(url + "v2/health/live")[0] == 200
    assert curl(url + "metrics")[0] == 200
    # no key, an unknown key, another scheme, an empty one: 401, saying how to send one
    for header in (
        [],
        ["-H", bearer("not-a-key-0123456789")],
        ["-H", f"X-API-Key: {INFER_KEY}x"],
        ["-H", f"Authorization: Basic {INFER_KEY}"],
        ["-H", "Authorization: Bearer "],
    ):
        code, body = curl(*header, *infer)
        assert code == 401 and "Bearer" in body["error"], (header, code, body)
        assert INFER_KEY not in body["error"]
    assert curl(url + "v2")[0] == 401 and curl(url + "v2/models/mnist")[0] == 401
    assert curl(url + "v2/models/mnist/stats")[0] == 401
    assert curl("-H", bearer(INFER_KEY), url + "v2/models/mnist/stats")[0] == 200
    www = subprocess.run(["curl", "-s", "-D", "-", "-o", "/dev/null", url + "v2"],
                         capture_output=True, text=True, timeout=60).stdout.lower()  # fmt: skip
    assert "www-authenticate: bearer" in www
    # either key, either header: answers
    for header in (bearer(INFER_KEY), f"X-API-Key: {ROTATED_KEY}", bearer(ADMIN_KEY)):
        code, body = curl("-H", header, *infer)
        assert code == 200 and body["outputs"][0]["shape"] == [1, 10], (header, body)
        assert curl("-H", header, url + "v2/models/mnist")[0] == 200
    # model management: an inference key is known but not allowed (403), the admin key is
    code, body = curl("-H", bearer(INFER_KEY), *load)
    assert code == 403 and "admin" in body["error"]
    assert curl(*load)[0] == 401
    assert curl("-H", bearer(ADMIN_KEY), *load)[0] == 200
    # the refusals are counted
    metrics = subprocess.run(["curl", "-s", url + "metrics"], capture_output=True, text=True,
                             timeout=60).stdout  # fmt: skip
    assert 'endpoint="auth"' in metrics and 'status="401"' in metrics


def test_hostile_keys_get_a_4xx(guarded):
    host, port = guarded.address.split(":")
    cases = {
        "huge": f"Authorization: Bearer {'k' * 200_000}\r\n".encode(),
        "control characters": b"X-API-Key: infer-key-\x01\x02\x7f-0123456789\r\n",
        "not ascii": "X-API-Key: ключ-0123456789abcdef\r\n".encode(),
        "many headers": b"".join(b"X-API-Key: %d-0123456789abcdef\r\n" % i for i in range(50)),
    }
    for what, header in cases.items():
        with socket.create_connection((host, int(port)), timeout=30) as s:
            s.sendall(b"GET /v2 HTTP/1.1\r\nHost: x\r\n" + header + b"\r\n")
            status = s.recv(65536).split(b"\r\n", 1)[0]
        code = int(status.split()[1])
        assert 400 <= code < 500, (what, status)


def test_tritonclient_http_with_keys(guarded):
    c = httpclient.InferenceServerClient(guarded.address, network_timeout=60)
    x = np.zeros((2, 1, 28, 28), np.float32)
    tensor = httpclient.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=True)
    out = c.infer("mnist", [tensor], headers={"Authorization": f"Bearer {INFER_KEY}"})
    assert out.as_numpy("log_probs").shape == (2, 10)
    with pytest.raises(InferenceServerException, match="key"):
        c.infer("mnist", [tensor])
    assert c.is_server_ready()  # health needs no key


def test_tritonclient_grpc_with_keys(guarded):
    import grpc

    c = grpcclient.InferenceServerClient(guarded.grpc_address)
    x = np.zeros((3, 1, 28, 28), np.float32)
    tensor = grpcclient.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    assert c.is_server_live() and c.is_server_ready()  # open
    for headers in ({"authorization": f"Bearer {INFER_KEY}"}, {"x-api-key": ROTATED_KEY}):
        assert c.infer("mnist", [tensor], headers=headers).as_numpy("log_probs").shape == (3, 10)
    for headers, code in ((None, grpc.StatusCode.UNAUTHENTICATED),
                          ({"x-api-key": "wrong-key-0123456789abc"},
                           grpc.StatusCode.UNAUTHENTICATED)):  # fmt: skip
        with pytest.raises(InferenceServerException) as err:
            c.infer("mnist", [tensor], headers=headers)
        assert err.value.status() == str(code), err.value
        with pytest.raises(InferenceServerException):
            c.get_model_metadata("mnist", headers=headers)
    with pytest.raises(InferenceServerException) as err:
        c.load_model("mnist", headers={"authorization": f"Bearer {INFER_KEY}"})
    assert err.value.status() == str(grpc.StatusCode.PERMISSION_DENIED)
    c.load_model("mnist", headers={"authorization": f"Bearer {ADMIN_KEY}"})
    assert c.is_model_ready("mnist", headers={"x-api-key": ADMIN_KEY})


def test_the_scopes():
    keys = auth.Keys.of((INFER_KEY, ROTATED_KEY), (ADMIN_KEY,))
    assert keys.refusal(auth.OPEN, None) is None
    assert keys.refusal(auth.INFERENCE, None)[0] == 401
    assert keys.refusal(auth.INFERENCE, "x" * 20)[0] == 401
    assert keys.refusal(auth.INFERENCE, ROTATED_KEY) is None
    assert keys.refusal(auth.INFERENCE, ADMIN_KEY) is None  # admin covers inference
    assert keys.refusal(auth.ADMIN, INFER_KEY)[0] == 403
    assert keys.refusal(auth.ADMIN, ADMIN_KEY) is None
    no_admin = auth.Keys.of((INFER_KEY,), ())
    status, why = no_admin.refusal(auth.ADMIN, INFER_KEY)
    assert status == 403 and "--admin-key" in why  # management off over the network
    admin_only = auth.Keys.of((), (ADMIN_KEY,))
    assert admin_only.refusal(auth.INFERENCE, None) is None
    assert admin_only.refusal(auth.ADMIN, None)[0] == 401
    assert auth.Keys().refusal(auth.ADMIN, None) is None  # no keys: open (loopback only)
    assert auth.rest_scope("GET", "/v2/models/stats", keys) == auth.INFERENCE
    assert auth.grpc_scope("/inference.GRPCInferenceService/ModelStatistics") == auth.INFERENCE
    assert auth.rest_scope("GET", "/v2/health/ready", keys) == auth.OPEN
    assert auth.rest_scope("GET", "/metrics", keys) == auth.OPEN
    assert auth.rest_scope("GET", "/metrics", auth.Keys.of((INFER_KEY,), (), True)) == "inference"
    assert auth.rest_scope("POST", "/v2/repository/models/m/unload", keys) == auth.ADMIN
    assert auth.rest_scope("POST", "/v2/repository/index", keys) == auth.INFERENCE
    assert auth.grpc_scope("/inference.GRPCInferenceService/ServerLive") == auth.OPEN
    assert auth.grpc_scope("/inference.GRPCInferenceService/RepositoryModelLoad") == auth.ADMIN
    assert auth.grpc_scope("/inference.GRPCInferenceService/ModelInfer") == auth.INFERENCE


@pytest.mark.parametrize("key, why", [
    ("", "16-4096 characters"), ("short", "16-4096 characters"), ("k" * 5000, "16-4096"),
    ("key-with-\x01-control-chars", "visible ASCII"), ("key with spaces inside", "visible"),
    ("two,keys-0123456789", "visible ASCII"), ("ключ-0123456789abcdef", "visible ASCII"),
])  # fmt: skip
def test_bad_keys_are_refused_at_start(key, why, tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match=why) as err:
        ServeConfig(api_keys=(key,))
    assert key not in str(err.value) or not key  # the message never shows the key
    r = subprocess.run([sys.executable, "-m", "mnist_edge", "serve", "--port", "0",
                        "--admin-key", key], capture_output=True, text=True, timeout=60,
                       cwd=tmp_path)  # fmt: skip
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr


def test_keys_from_a_file_and_the_environment(tmp_path, monkeypatch):
    (tmp_path / "k").write_text(f"\n# old\n{INFER_KEY}\n  {ROTATED_KEY}  \n")
    monkeypatch.setenv(auth.ENV_API_KEYS, f"{ADMIN_KEY}, {INFER_KEY}\n")
    keys = auth.read_keys([ROTATED_KEY], str(tmp_path / "k"), auth.ENV_API_KEYS)
    assert keys == (ROTATED_KEY, INFER_KEY, ADMIN_KEY)  # in order, once each
    (tmp_path / "bad").write_bytes(b"\xff\xfe not text")
    with pytest.raises(ConfigError, match="cannot be read"):
        auth.read_keys((), str(tmp_path / "bad"))
    with pytest.raises(ConfigError, match="cannot be read"):
        auth.read_keys((), str(tmp_path / "missing"))


def test_a_reachable_address_needs_a_key(tmp_path):
    for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        assert ServeConfig(host=host).host == host
    for host in ("0.0.0.0", "::", "10.1.2.3", "example.com"):
        with pytest.raises(ConfigError, match="--insecure"):
            ServeConfig(host=host)
        assert ServeConfig(host=host, api_keys=(INFER_KEY,)).host == host
        assert ServeConfig(host=host, insecure=True).insecure
    with pytest.raises(ConfigError, match="needs a key"):
        ServeConfig(protect_metrics=True)
    # the CLI: one line, exit 2, and nothing bound (the check runs before any socket)
    r = subprocess.run([sys.executable, "-m", "mnist_edge", "serve", "--host", "0.0.0.0",
                        "--port", "0"], capture_output=True, text=True, timeout=60,
                       cwd=tmp_path)  # fmt: skip
    assert r.returncode == 2 and r.stderr.startswith("error: --host 0.0.0.0") and \
        r.stderr.count("\n") == 1, r.stderr  # fmt: skip
    assert "api_keys" not in repr(ServeConfig(api_keys=(INFER_KEY,)))
    assert INFER_KEY not in repr(ServeConfig(api_keys=(INFER_KEY,)))


def test_keys_are_compared_in_constant_time(monkeypatch):
    """Every configured digest is compared whatever the key (no early exit on a match, a
    length or an absent key), so the time says nothing about how close a guess was."""
    import hmac

    keys = auth.Keys.of((INFER_KEY, ROTATED_KEY), (ADMIN_KEY,))
    calls = []
    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: calls.append(len(a)) or real(a, b))
    for presented in (ADMIN_KEY, INFER_KEY, INFER_KEY[:-1] + "x", "x", "y" * 4000, None):
        calls.clear()
        keys.scope_of(presented)
        assert calls == [32, 32, 32], (presented, calls)  # 3 digests, each 32 bytes
    monkeypatch.undo()
    # and timed: right and wrong keys, interleaved, take the same time within the noise
    wrong = ["", "i", INFER_KEY[:-1] + "!", "z" * len(INFER_KEY), ADMIN_KEY[:5]]
    samples: dict[str, list[float]] = {"right": [], "wrong": []}
    for _ in range(200):
        for label, key in (("right", INFER_KEY), ("wrong", wrong[_ % len(wrong)])):
            t0 = time.perf_counter()
            for _i in range(50):
                keys.scope_of(key)
            samples[label].append(time.perf_counter() - t0)
    ratio = statistics.median(samples["wrong"]) / statistics.median(samples["right"])
    assert 0.5 < ratio < 2.0, ratio  # a short-cut would be orders of magnitude apart
