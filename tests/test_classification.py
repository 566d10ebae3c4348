"""The protocol's classification extension: an output asked for with `classification: k` comes
back as the top k classes, BYTES "score:index:label" (N, k), best first, as Triton writes them;
tritonclient's `InferRequestedOutput(..., class_count=k)` reads it over HTTP (JSON and binary)
and gRPC. A k that is not an integer 1..10 is refused (400, INVALID_ARGUMENT)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from test_grpc import call, fp32_request
from test_serve import Server, curl
from tritonclient.grpc import service_pb2 as tpb

from mnist_edge.edge import spec
from mnist_edge.edge.data import batches, load_split
from mnist_edge.edge.server.tensors import ProtocolError, bytes_raw, check_classification, classify


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Server("--workers", 1, cwd=tmp_path_factory.mktemp("classification"))
    yield s
    assert s.stop()[0] == 0


@pytest.fixture(scope="module")
def x(mnist_dir):
    return next(batches(load_split("test", mnist_dir, 16).images, 16))


def parse(top: np.ndarray) -> list[list[tuple[float, int, str]]]:
    rows = []
    for row in top:
        cells = []
        for cell in row:
            score, index, label = (cell.decode() if isinstance(cell, bytes) else cell).split(":")
            cells.append((float(score), int(index), label))
        rows.append(cells)
    return rows


def check_top(rows, log_probs: np.ndarray, k: int) -> None:
    """Each row: k classes, best first, scores the log-probabilities to 6 decimals, labels the
    model's."""
    assert len(rows) == len(log_probs)
    for row, lp in zip(rows, log_probs, strict=True):
        assert len(row) == k
        assert [i for _, i, _ in row] == list(np.argsort(-lp, kind="stable")[:k])
        for score, i, label in row:
            assert abs(score - lp[i]) <= 5e-7 + 1e-6 * abs(lp[i]) and label == spec.CLASS_LABELS[i]


@pytest.mark.parametrize("binary", [False, True])
def test_tritonclient_http_class_count(server, x, binary):
    c = server.client
    tensor = httpclient.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=True)
    plain = c.infer("mnist", [tensor]).as_numpy("log_probs")
    out = httpclient.InferRequestedOutput("log_probs", binary_data=binary, class_count=3)
    top = c.infer("mnist", [tensor], outputs=[out]).as_numpy("log_probs")
    assert top.shape == (16, 3)
    check_top(parse(top), plain, 3)


def test_tritonclient_grpc_class_count(server, x):
    c = grpcclient.InferenceServerClient(server.grpc_address)
    tensor = grpcclient.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    plain = c.infer("mnist", [tensor]).as_numpy("log_probs")
    for k in (1, 10):
        out = grpcclient.InferRequestedOutput("log_probs", class_count=k)
        top = c.infer("mnist", [tensor], outputs=[out]).as_numpy("log_probs")
        assert top.shape == (16, k)
        check_top(parse(top), plain, k)


BAD_K = [0, -1, 11, 10**20, "3", 3.5, True, None]


@pytest.mark.parametrize("k", BAD_K)
def test_a_bad_k_over_rest_is_400(server, k):
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 28, 28],
                        "data": [0.0] * 784}],
            "outputs": [{"name": "log_probs", "parameters": {"classification": k}}]}  # fmt: skip
    code, answer = curl(server.url + "v2/models/mnist/infer", "-d", json.dumps(body))
    assert code == 400 and "classification" in answer["error"], (k, code, answer)


@pytest.mark.parametrize("k", [0, -1, 11, "three", True, 2.0])
def test_a_bad_k_over_grpc_is_invalid_argument(server, k):
    import grpc

    request = fp32_request(np.zeros((1, 1, 28, 28), np.float32), outputs=())
    out = request.outputs.add(name="log_probs")
    param = out.parameters["classification"]
    if isinstance(k, bool):
        param.bool_param = k
    elif isinstance(k, int):
        param.int64_param = k
    elif isinstance(k, float):
        param.double_param = k
    else:
        param.string_param = k
    code, details = call(server.grpc_address, "ModelInfer", request, tpb.ModelInferResponse())
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "classification" in details, (k, details)


def test_classify_and_its_bytes():
    lp = np.log(np.array([[0.1, 0.6, 0.3], [0.5, 0.25, 0.25]], np.float32))
    top = classify(lp, 2, ("a", "b", "c"))
    assert top == [f"{lp[0, 1]:f}:1:b".encode(), f"{lp[0, 2]:f}:2:c".encode(),
                   f"{lp[1, 0]:f}:0:a".encode(), f"{lp[1, 1]:f}:1:b".encode()]  # fmt: skip
    assert bytes_raw([b"ab", b""]) == b"\x02\x00\x00\x00ab\x00\x00\x00\x00"
    for bad in BAD_K:
        with pytest.raises(ProtocolError):
            check_classification(bad)
    assert check_classification(10) == 10
