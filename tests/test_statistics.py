"""The protocol's statistics extension: `GET /v2/models[/{m}[/versions/{v}]]/stats` and gRPC
ModelStatistics report, per model and version, counts and cumulative times in Triton's shape,
which tritonclient's `get_inference_statistics` reads over HTTP and gRPC. The figures must add
up whatever the timing: every answered request counted once, its images counted, its parts
(queue, input, model, output) inside its whole, the batch table consistent with the totals, a
refused request counted as a failure of its model and of no other, and with two workers every
worker's requests in the answer of either."""

from __future__ import annotations

import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from test_serve import Server, curl
from tritonclient.utils import InferenceServerException

from mnist_edge.edge.runtime import pretrained_path
from mnist_edge.edge.server import stats
from mnist_edge.edge.server.batcher import Times
from mnist_edge.edge.server.metrics import ServerMetrics

FP32, INT8 = pretrained_path(), pretrained_path(int8=True)
PARTS = ("queue", "compute_input", "compute_infer", "compute_output")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Server("--model", f"mnist={FP32}", "--model", f"small={INT8}", "--workers", 1,
               cwd=tmp_path_factory.mktemp("statistics"))  # fmt: skip
    yield s
    assert s.stop()[0] == 0


def one(c, model: str, version: str = "") -> dict:
    """The single row of a model's statistics (HTTP JSON, or gRPC's message as JSON)."""
    if isinstance(c, httpclient.InferenceServerClient):
        found = c.get_inference_statistics(model, version)
    else:
        found = c.get_inference_statistics(model, version, as_json=True)
    (row,) = found["model_stats"]
    return row


def number(d: dict, key: str) -> int:
    return int(d.get(key, 0))  # protobuf's JSON leaves zeros out and writes uint64 as text


def infer(c, model: str, x: np.ndarray) -> np.ndarray:
    module = httpclient if isinstance(c, httpclient.InferenceServerClient) else grpcclient
    tensor = module.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    return c.infer(model, [tensor]).as_numpy("log_probs")


def check_consistent(row: dict) -> None:
    """What holds of any statistics, however busy the server was."""
    s = row["inference_stats"]
    ok = number(s["success"], "count")
    for part in PARTS:
        assert number(s[part], "count") == ok
    parts_ns = sum(number(s[p], "ns") for p in PARTS)
    assert parts_ns <= number(s["success"], "ns")  # disjoint parts of each request
    batches = row["batch_stats"]
    assert sum(number(b["compute_infer"], "count") for b in batches) == number(
        row, "execution_count"
    )
    # every image answered went through one model call (failed calls add to the batch table)
    assert sum(number(b, "batch_size") * number(b["compute_infer"], "count")
               for b in batches) >= number(row, "inference_count")  # fmt: skip
    assert number(s["cache_hit"], "count") == number(s["cache_miss"], "count") == 0


@pytest.mark.parametrize("client", ["http", "grpc"])
def test_requests_images_and_times_add_up(server, client):
    c = (httpclient.InferenceServerClient(server.address) if client == "http"
         else grpcclient.InferenceServerClient(server.grpc_address))  # fmt: skip
    before, other_before = one(c, "mnist"), one(c, "small")
    t_start = time.time() * 1000
    sizes = [1, 3, 7, 1, 2]
    for n in sizes:
        infer(c, "mnist", np.zeros((n, 1, 28, 28), np.float32))
    t_end = time.time() * 1000
    after = one(c, "mnist")
    s, s0 = after["inference_stats"], before["inference_stats"]
    assert after["name"] == "mnist" and after["version"] == "1"
    assert number(s["success"], "count") - number(s0["success"], "count") == len(sizes)
    assert number(after, "inference_count") - number(before, "inference_count") == sum(sizes)
    assert number(s["fail"], "count") == number(s0["fail"], "count")
    # one model call per request at least shared: never more calls than requests
    calls = number(after, "execution_count") - number(before, "execution_count")
    assert 1 <= calls <= len(sizes)
    assert number(s["compute_infer"], "ns") > number(s0["compute_infer"], "ns")
    assert t_start - 1 <= number(after, "last_inference") <= t_end + 1
    check_consistent(after)
    assert one(c, "small") == other_before  # another model's requests are not this one's


def test_a_refused_request_is_a_failure_of_its_model(server):
    c = httpclient.InferenceServerClient(server.address)
    before = one(c, "small")["inference_stats"]
    with pytest.raises(InferenceServerException):
        infer(c, "small", np.zeros((1, 1, 5, 5), np.float32))  # the wrong shape: 400
    status, _ = curl(server.url + "v2/models/small/infer", "-d", "{not json")
    assert status == 400
    after = one(c, "small")["inference_stats"]
    assert number(after["fail"], "count") - number(before["fail"], "count") == 2
    assert number(after["fail"], "ns") > number(before["fail"], "ns")
    assert number(after["success"], "count") == number(before["success"], "count")


def test_every_model_every_version_and_unknown_ones(server):
    status, body = curl(server.url + "v2/models/stats")
    assert status == 200
    names = [(r["name"], r["version"]) for r in body["model_stats"]]
    assert names == [("mnist", "1"), ("small", "1")]
    status, body = curl(server.url + "v2/models/mnist/versions/1/stats")
    assert status == 200 and [r["name"] for r in body["model_stats"]] == ["mnist"]
    for path in ("v2/models/nope/stats", "v2/models/mnist/versions/9/stats"):
        status, body = curl(server.url + path)
        assert status == 404 and "error" in body
    g = grpcclient.InferenceServerClient(server.grpc_address)
    assert len(g.get_inference_statistics(as_json=True)["model_stats"]) == 2
    with pytest.raises(InferenceServerException, match="StatusCode.NOT_FOUND|unknown model"):
        g.get_inference_statistics("nope")
    assert "statistics" in curl(server.url + "v2")[1]["extensions"]


def test_two_workers_report_every_workers_requests(tmp_path):
    s = Server("--workers", 2, cwd=tmp_path)
    try:
        x = np.zeros((2, 1, 28, 28), np.float32)
        for _ in range(24):  # a connection each: the kernel spreads them over both workers
            infer(httpclient.InferenceServerClient(s.address), "mnist", x)
        seen = set()
        for _ in range(8):  # and the statistics are asked of either worker
            row = one(httpclient.InferenceServerClient(s.address), "mnist")
            seen.add((number(row["inference_stats"]["success"], "count"),
                      number(row, "inference_count")))  # fmt: skip
            check_consistent(row)
        assert seen == {(24, 48)}
        text = curl(s.url + "metrics")[1]["raw"]
        assert 'mnist_edge_stat_requests_total{model="mnist",stat="success",version="1"} 24.0' \
            in text  # fmt: skip
    finally:
        assert s.stop()[0] == 0


def test_the_report_in_one_process():
    """stats.report on a registry of its own: the shape, zeros before anything, the sums."""
    m = ServerMetrics()
    a = m.model_stats("a", "1")
    assert stats.report(m, ["a"])["model_stats"][0]["inference_stats"]["success"] == {
        "count": 0, "ns": 0}  # fmt: skip
    a.on_batch(4, 0.001, 0.002, 0.0005)
    a.succeeded(Times(queue_s=0.25, input_s=0.5, infer_s=1.0, output_s=0.125), 2.0, 4)
    a.failed(0.75)
    m.model_stats("a", "2").succeeded(Times(), 1.0, 1)
    m.model_stats("b", "1")
    rows = stats.report(m, ["a"])["model_stats"]
    assert [(r["name"], r["version"]) for r in rows] == [("a", "1"), ("a", "2")]
    s = rows[0]["inference_stats"]
    assert s["success"] == {"count": 1, "ns": 2_000_000_000}
    assert s["queue"] == {"count": 1, "ns": 250_000_000}
    assert s["compute_output"] == {"count": 1, "ns": 125_000_000}
    assert s["fail"] == {"count": 1, "ns": 750_000_000}
    assert rows[0]["batch_stats"] == [{
        "batch_size": 4, "compute_input": {"count": 1, "ns": 1_000_000},
        "compute_infer": {"count": 1, "ns": 2_000_000},
        "compute_output": {"count": 1, "ns": 500_000}}]  # fmt: skip
    assert rows[0]["inference_count"] == 4 and rows[0]["execution_count"] == 1
    assert stats.report(m, ["a"], "2")["model_stats"][0]["version"] == "2"
    assert [r["name"] for r in stats.report(m, ["a", "b"])["model_stats"]] == ["a", "a", "b"]
