"""TLS (edge/server/tls.py) for REST and gRPC, with certificates made here by openssl: a client
that trusts the CA gets answers (curl, tritonclient's gRPC client), one that does not is
refused, plain HTTP to the TLS port gets no HTTP answer, and with --tls-client-ca a client
without a certificate from that CA is refused too. Files that cannot work (garbage, a key that
is not the certificate's, an expired certificate) end `serve` in one line before it listens."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from mnist_edge.edge.errors import ConfigError
from mnist_edge.edge.server import ServeConfig

INFER = '{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 28, 28], "data": %s}]}'


def openssl(*args: object, cwd: Path) -> None:
    subprocess.run(["openssl", *map(str, args)], cwd=cwd, check=True, capture_output=True,
                   timeout=60)  # fmt: skip


def issue(folder: Path, name: str, ca: str, days: int = 2, san: str = "IP:127.0.0.1") -> None:
    """name.key and name.pem, signed by the CA `ca` (ca.pem, ca.key)."""
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out",
            f"{name}.csr", "-subj", f"/CN={name}", cwd=folder)  # fmt: skip
    (folder / f"{name}.ext").write_text(f"subjectAltName={san}\n")
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-days", days, "-out", f"{name}.pem", "-extfile",
            f"{name}.ext", cwd=folder)  # fmt: skip


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    if shutil.which("openssl") is None:
        message = "openssl is not installed (apt-get install openssl): it makes the certificates"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI must run the TLS tests")
        pytest.skip(message)
    d = tmp_path_factory.mktemp("pki")
    for ca in ("ca", "other_ca"):
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{ca}.key",
                "-out", f"{ca}.pem", "-days", 2, "-subj", f"/CN={ca}", cwd=d)  # fmt: skip
    issue(d, "server", "ca", san="IP:127.0.0.1,DNS:localhost")
    issue(d, "client", "ca", san="DNS:client")
    issue(d, "stranger", "other_ca", san="DNS:stranger")
    issue(d, "expired", "ca", days=-1)
    (d / "garbage.pem").write_bytes(b"-----BEGIN CERTIFICATE-----\nnot base64 at all\n")
    return d


class TlsServer:
    def __init__(self, *args: object, cwd: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mnist_edge", "serve", "--port", "0", "--workers", "1",
             *map(str, args)], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)  # fmt: skip
        line = self.proc.stdout.readline()
        m = re.search(r"https://(127\.0\.0\.1:\d+)/.*gRPC at (127\.0\.0\.1:\d+)", line)
        assert m, line + self.proc.stderr.read()
        self.address, self.grpc_address = m.groups()
        self.url = f"https://{self.address}/"
        assert self.proc.stdout.readline().startswith("ready"), self.proc.stderr.read()

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.communicate(timeout=60)
        assert self.proc.returncode == 0


def curl(*args: object) -> tuple[int, str]:
    """(curl's exit code, the HTTP status or '')."""
    cmd = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "30"]
    r = subprocess.run([*cmd, *map(str, args)], capture_output=True, text=True, timeout=60)
    return r.returncode, r.stdout.strip()


@pytest.fixture(scope="module")
def tls_server(pki):
    s = TlsServer("--tls-cert", pki / "server.pem", "--tls-key", pki / "server.key", cwd=pki)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def mtls_server(pki):
    s = TlsServer("--tls-cert", pki / "server.pem", "--tls-key", pki / "server.key",
                  "--tls-client-ca", pki / "ca.pem", cwd=pki)  # fmt: skip
    yield s
    s.stop()


def grpc_infer(address: str, **ssl_args) -> np.ndarray:
    c = grpcclient.InferenceServerClient(address, ssl=bool(ssl_args), **ssl_args)
    x = np.zeros((2, 1, 28, 28), np.float32)
    tensor = grpcclient.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    return c.infer("mnist", [tensor], client_timeout=30).as_numpy("log_probs")


def test_a_client_that_trusts_the_ca_gets_answers(tls_server, pki):
    ca = pki / "ca.pem"
    assert curl("--cacert", ca, tls_server.url + "v2/health/ready") == (0, "200")
    body = INFER % str([0.0] * 784)
    assert curl("--cacert", ca, "-d", body, tls_server.url + "v2/models/mnist/infer") == (0, "200")
    out = grpc_infer(tls_server.grpc_address, root_certificates=str(ca))
    assert out.shape == (2, 10)


def test_a_client_that_does_not_trust_it_is_refused(tls_server, pki):
    code, status = curl(tls_server.url + "v2/health/ready")  # the system's CAs only
    assert code == 60 and status == "000"  # curl: the peer's certificate cannot be verified
    code, _ = curl("--cacert", pki / "other_ca.pem", tls_server.url + "v2/health/ready")
    assert code == 60
    with pytest.raises(InferenceServerException):
        grpc_infer(tls_server.grpc_address, root_certificates=str(pki / "other_ca.pem"))


def test_plain_http_to_the_tls_port_gets_no_answer(tls_server):
    host, port = tls_server.address.split(":")
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            reply = s.recv(65536)
        except ConnectionResetError:
            reply = b""
    assert not reply.startswith(b"HTTP/"), reply[:100]
    code, status = curl(tls_server.url.replace("https", "http") + "v2/health/ready")
    assert code != 0 and status in ("000", "")
    with pytest.raises(InferenceServerException):  # plaintext gRPC to the TLS port
        c = grpcclient.InferenceServerClient(tls_server.grpc_address)
        c.is_server_live(client_timeout=10)


def test_mutual_tls_needs_a_client_certificate_from_the_ca(mtls_server, pki):
    ca, url = pki / "ca.pem", mtls_server.url + "v2/health/ready"
    mine = ("--cert", pki / "client.pem", "--key", pki / "client.key")
    assert curl("--cacert", ca, *mine, url) == (0, "200")
    assert curl("--cacert", ca, url)[0] != 0  # no client certificate
    stranger = ("--cert", pki / "stranger.pem", "--key", pki / "stranger.key")
    assert curl("--cacert", ca, *stranger, url)[0] != 0  # one from another CA
    out = grpc_infer(mtls_server.grpc_address, root_certificates=str(ca),
                     private_key=str(pki / "client.key"),
                     certificate_chain=str(pki / "client.pem"))  # fmt: skip
    assert out.shape == (2, 10)
    with pytest.raises(InferenceServerException):
        grpc_infer(mtls_server.grpc_address, root_certificates=str(ca))


@pytest.mark.parametrize("files, why", [
    (("garbage.pem", "server.key"), "not PEM"),
    (("server.pem", "client.key"), "not the certificate's"),
    (("expired.pem", "expired.key"), "expired"),
    (("server.pem", None), "together"),
    (("missing.pem", "server.key"), "no such file"),
])  # fmt: skip
def test_unusable_certificates_are_refused_in_one_line(files, why, pki):
    cert, key = (str(pki / f) if f else None for f in files)
    with pytest.raises(ConfigError, match=why):
        ServeConfig(tls_cert=cert, tls_key=key)
    args = ["--tls-cert", cert] + (["--tls-key", key] if key else [])
    r = subprocess.run([sys.executable, "-m", "mnist_edge", "serve", "--port", "0", *args],
                       capture_output=True, text=True, timeout=60, cwd=pki)  # fmt: skip
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and why in r.stderr, r.stderr
    with pytest.raises(ConfigError, match="not a PEM"):
        ServeConfig(tls_cert=str(pki / "server.pem"), tls_key=str(pki / "server.key"),
                    tls_client_ca=str(pki / "garbage.pem"))  # fmt: skip
    with pytest.raises(ConfigError, match="needs --tls-cert"):
        ServeConfig(tls_client_ca=str(pki / "ca.pem"))
