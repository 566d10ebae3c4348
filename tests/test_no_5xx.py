"""No input a client controls gets a 5xx, a hang or a dropped connection from `mnist-edge serve`:
the request line and headers of any size, bodies of any length (complete or not, chunked or
not), JSON of any shape, every field of the protocol and the binary extension's header; over
gRPC, every field of ModelInferRequest. Cases written by hand, then property-based ones
(hypothesis): against the parsers, where thousands of examples are cheap, and against a live
server over raw sockets and a gRPC channel, where each example is a real request."""

from __future__ import annotations

import base64
import io
import json
import socket
import struct
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from test_serve import Server

from mnist_edge.edge.proto import grpc_service_pb2 as pb
from mnist_edge.edge.server import grpc_codec, rest_codec, tensors


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Server("--timeout", 3, cwd=tmp_path_factory.mktemp("no5xx"))
    yield s
    code, output = s.stop()
    assert code == 0, output
    assert "Traceback" not in output, output


def send(server, data: bytes, half_close: bool = True, timeout: float = 20) -> int:
    """Write `data` on a new connection (then close our side, unless told not to) and return
    the status of the answer; 0 when the connection closed without one."""
    host, port = server.address.split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        try:
            s.sendall(data)
            if half_close:
                s.shutdown(socket.SHUT_WR)
        except OSError:  # the server answered and closed while we were still sending
            pass
        out = b""
        try:
            while b"\r\n" not in out:
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
        except ConnectionResetError:
            pass
    line = out.split(b"\r\n", 1)[0].split()
    return int(line[1]) if len(line) >= 2 and line[1].isdigit() else 0


def post(server, body: bytes, headers: bytes = b"", **kw) -> int:
    head = b"POST /v2/models/mnist/infer HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n" % len(body)
    return send(server, head + headers + b"\r\n" + body, **kw)


def fp32(**change) -> bytes:
    tensor = {"name": "input", "datatype": "FP32", "shape": [1, 1, 28, 28], "data": [0.0] * 784}
    return json.dumps({"inputs": [tensor | change]}).encode()


def image(blob: bytes) -> bytes:
    tensor = {"name": "image", "datatype": "BYTES", "shape": [1],
              "data": [base64.b64encode(blob).decode()]}  # fmt: skip
    return json.dumps({"inputs": [tensor]}).encode()


def png_claiming(w: int, h: int) -> bytes:
    """A PNG whose header claims w x h pixels (a decompression bomb's shape)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\0" * (w + 1))) + chunk(b"IEND", b""))  # fmt: skip


def small_png() -> bytes:
    buf = io.BytesIO()
    Image.new("L", (28, 28), 255).save(buf, "PNG")
    return buf.getvalue()


HEAD = b"GET /v2 HTTP/1.1\r\nHost: x\r\n"
BY_HAND = {
    "a 200 kB header": (HEAD + b"X-Big: " + b"a" * 200_000 + b"\r\n\r\n", 431),
    "20,000 headers": (HEAD + b"".join(b"X-%d: y\r\n" % i for i in range(20_000)) + b"\r\n", 431),
    "a 200 kB target": (b"GET /v2/" + b"a" * 200_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    "a 9 kB target": (b"GET /v2/" + b"a" * 9_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    "a 7 kB target": (b"GET /v2/" + b"a" * 7_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 404),
    "a 20 kB header": (HEAD + b"X-Big: " + b"a" * 20_000 + b"\r\n\r\n", 200),
    "garbage": (b"GARBAGE\r\n\r\n", 400),
    "an unknown method": (b"FOO /v2 HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    "GET on infer": (b"GET /v2/models/mnist/infer HTTP/1.1\r\nHost: x\r\n\r\n", 405),
    "POST on metadata": (b"POST /v2 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 405),
    "a bad Content-Length": (b"POST /v2/models/mnist/infer HTTP/1.1\r\nHost: x\r\n"
                             b"Content-Length: abc\r\n\r\n{}", 400),
    "a negative Content-Length": (b"POST /v2/models/mnist/infer HTTP/1.1\r\nHost: x\r\n"
                                  b"Content-Length: -5\r\n\r\n{}", 400),
    "a 20-digit Content-Length": (b"POST /v2/models/mnist/infer HTTP/1.1\r\nHost: x\r\n"
                                  b"Content-Length: 99999999999999999999\r\n\r\n{}", 400),
    "a Content-Length over --max-body": (b"POST /v2/models/mnist/infer HTTP/1.1\r\nHost: x\r\n"
                                         b"Content-Length: 99999999\r\n\r\n{}", 413),
    "bad chunking": (b"POST /v2/models/mnist/infer HTTP/1.1\r\nHost: x\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n", 400),
    "a chunked request": (b"POST /v2/models/mnist/infer HTTP/1.1\r\nHost: x\r\n"
                          b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n" % len(fp32())
                          + fp32() + b"\r\n0\r\n\r\n", 200),
    "Content-Length and chunked": (b"POST /v2/models/mnist/infer HTTP/1.1\r\nHost: x\r\n"
                                   b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n"
                                   b"2\r\n{}\r\n0\r\n\r\n", 400),
}  # fmt: skip


def repository(path: bytes, body: bytes, length: int | None = None) -> bytes:
    size = len(body) if length is None else length
    return (b"POST /v2/repository/" + path + b" HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
            % size + body)  # fmt: skip


# the repository extension: none of these changes what is served (the body is refused first)
BY_HAND |= {
    "index: not JSON": (repository(b"index", b"{nope"), 400),
    "index: a list": (repository(b"index", b"[1, 2]"), 400),
    "index: nested 100,000 deep": (repository(b"index", b"[" * 100_000 + b"]" * 100_000), 400),
    "index: over --max-body": (repository(b"index", b"{}", 99_999_999), 413),
    "index: empty": (repository(b"index", b""), 200),
    "load: an unknown model": (repository(b"models/nope/load", b"{}"), 404),
    "load: a config parameter": (repository(b"models/mnist/load",
                                            b'{"parameters": {"config": "{}"}}'), 400),
    "load: parameters not an object": (repository(b"models/mnist/load",
                                                  b'{"parameters": [1]}'), 400),
    "unload: not JSON": (repository(b"models/mnist/unload", b"\xff\xfe"), 400),
    "GET on index": (b"GET /v2/repository/index HTTP/1.1\r\nHost: x\r\n\r\n", 405),
    "GET on load": (b"GET /v2/repository/models/mnist/load HTTP/1.1\r\nHost: x\r\n\r\n", 405),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BY_HAND))
def test_request_heads_and_framing_by_hand(server, case):
    data, status = BY_HAND[case]
    assert send(server, data) == status


BODIES = {
    "JSON nested 100,000 deep": (b"[" * 100_000 + b"]" * 100_000, 400),
    "an object nested 5,000 deep": (b'{"inputs": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400),
    "not UTF-8": (b'{"inputs": "\xff\xfe"}', 400),
    "null": (b"null", 400),
    "NaN": (fp32(data=[float("nan")] * 784), 400),
    "1e400": (fp32().replace(b"0.0", b"1e400"), 400),
    "5,000-digit integers": (fp32().replace(b"0.0", b"1" + b"0" * 5000), 400),
    "booleans": (fp32(data=[True] * 784), 400),
    "nested numbers": (fp32(data=[[[[0.0] * 28] * 28]]), 200),
    "a 10^40 batch": (fp32(shape=[10**40, 1, 28, 28], data=[]), 400),
    "a float shape": (fp32(shape=[1.5, 1, 28, 28]), 400),
    "a ragged nest": (fp32(data=[[0.0] * 28] * 27 + [[0.0] * 27]), 400),
    "strings as numbers": (fp32(data=["0"] * 784), 400),
    "a name that is an object": (fp32(name={"a": 1}), 400),
    "outputs as an object": (json.dumps({"inputs": [], "outputs": {"a": 1}}).encode(), 400),
    "a decompression bomb": (image(png_claiming(100_000, 100_000)), 400),
    "a cut PNG": (image(small_png()[:30]), 400),
    "a GIF header alone": (image(b"GIF89a" + b"\0" * 20), 400),
    "a blank image": (image(small_png()), 400),
}


@pytest.mark.parametrize("case", sorted(BODIES))
def test_bodies_by_hand(server, case):
    body, status = BODIES[case]
    assert post(server, body) == status


def test_binary_header_lengths_by_hand(server):
    body = fp32()
    for value in (b"abc", b"-1", b"99999999999999999999999", str(len(body) + 1).encode(), b""):
        assert post(server, body, b"Inference-Header-Content-Length: " + value + b"\r\n") == 400


@pytest.mark.parametrize("half_close", [False, True])
def test_a_body_that_never_ends_gets_408(server, half_close):
    """Content-Length promises more than comes: 408 after --timeout (3 s here), whether the
    client waits or closes its side (a half-closed client still reads its answer)."""
    head = b"POST /v2/models/mnist/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"
    assert send(server, head + b"{}", half_close=half_close) == 408


# --- property-based: the parsers ---------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner,
                                                                  max_size=5),
    max_leaves=30,
)  # fmt: skip
FIELD = st.sampled_from(["input", "image", "x", "", None, 1, ["input"]])
TENSOR = st.fixed_dictionaries({}, optional={
    "name": FIELD, "datatype": st.sampled_from(["FP32", "BYTES", "INT8", "", None, 3]) | JSON,
    "shape": st.lists(st.integers(-2, 3000), max_size=5) | JSON,
    "data": st.lists(st.floats(allow_nan=True) | st.text(max_size=6), max_size=900) | JSON,
    "parameters": st.fixed_dictionaries({}, optional={"binary_data_size": st.integers(-1, 5000)
                                                      | JSON}) | JSON,
})  # fmt: skip
REQUEST = st.fixed_dictionaries({}, optional={
    "inputs": st.lists(TENSOR, max_size=2) | JSON, "outputs": JSON | st.lists(
        st.fixed_dictionaries({"name": FIELD}, optional={"parameters": JSON}), max_size=2),
    "parameters": JSON, "id": JSON,
})  # fmt: skip


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request=REQUEST | JSON, tail=st.binary(max_size=64), header=st.none() | st.text(max_size=8))
def test_any_rest_body_parses_or_is_a_protocol_error(request, tail, header):
    try:
        body = json.dumps(request).encode()
    except (ValueError, RecursionError):
        return
    if header is None and tail:
        header = str(len(body))
    try:
        req = rest_codec.parse_request(body + tail, header, max_batch=8)
    except tensors.ProtocolError as exc:
        assert 400 <= exc.status < 500 and str(exc)
    else:
        assert req.kind in (tensors.FP32, tensors.BYTES) and 1 <= req.n <= 8


@settings(max_examples=500, deadline=None)
@given(raw=st.binary(max_size=4096), header=st.none() | st.integers(-5, 5000).map(str))
def test_any_bytes_parse_or_are_a_protocol_error(raw, header):
    try:
        rest_codec.parse_request(raw, header)
    except tensors.ProtocolError as exc:
        assert 400 <= exc.status < 500


INFER_TENSOR = st.builds(
    lambda name, datatype, shape, fp32, files: (name, datatype, shape, fp32, files),
    st.sampled_from(["input", "image", "x", ""]), st.sampled_from(["FP32", "BYTES", "INT64", ""]),
    st.lists(st.integers(-(2**40), 2**40) | st.integers(0, 3), max_size=5),
    st.lists(st.floats(allow_nan=True, width=32), max_size=800), st.lists(st.binary(max_size=40),
                                                                            max_size=3),
)  # fmt: skip


def infer_request(tensors, raws, outputs) -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name="mnist")
    for name, datatype, shape, values, files in tensors:
        t = req.inputs.add(name=name, datatype=datatype, shape=shape)
        t.contents.fp32_contents.extend(values)
        t.contents.bytes_contents.extend(files)
    req.raw_input_contents.extend(raws)
    for name in outputs:
        req.outputs.add(name=name)
    return req


GRPC_REQUEST = st.builds(
    infer_request, st.lists(INFER_TENSOR, max_size=2),
    st.lists(st.binary(max_size=64) | st.just(bytes(3136)), max_size=2),
    st.lists(st.sampled_from(["log_probs", "x"]), max_size=2),
)  # fmt: skip


@settings(max_examples=1500, deadline=None)
@given(request=GRPC_REQUEST)
def test_any_grpc_request_parses_or_is_a_protocol_error(request):
    try:
        req = grpc_codec.parse(request, input_name="input", max_batch=8)
    except tensors.ProtocolError as exc:
        assert 400 <= exc.status < 500
    else:
        assert 1 <= req.n <= 8


# --- property-based: a live server -----------------------------------------------------------

TOKEN = st.text(st.characters(min_codepoint=33, max_codepoint=126, exclude_characters=":"),
                min_size=1, max_size=20)  # fmt: skip
VALUE = st.binary(max_size=200).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    method=st.sampled_from([b"GET", b"POST", b"PUT", b"HEAD", b"DELETE", b"OPTIONS"]),
    path=st.sampled_from([b"/v2/models/mnist/infer", b"/v2/models/mnist/versions/1/infer",
                          b"/v2/models/other/infer", b"/v2", b"/metrics", b"/v2/models/mnist"])
    | st.binary(max_size=60).map(lambda b: b"/" + bytes(c for c in b if 32 < c < 127)),
    headers=st.lists(st.tuples(TOKEN, VALUE), max_size=6),
    body=REQUEST.map(lambda r: json.dumps(r).encode()) | st.binary(max_size=300),
    length=st.sampled_from(["right", "none", "short", "long"]),
)  # fmt: skip
def test_a_live_server_answers_any_request_below_500(server, method, path, headers, body, length):
    lines = [method + b" " + path + b" HTTP/1.1", b"Host: x"]
    lines += [name.encode() + b": " + value for name, value in headers
              if name.lower() not in ("content-length", "transfer-encoding", "host")]  # fmt: skip
    if length != "none":
        size = len(body) + {"right": 0, "short": -1, "long": 1}[length]
        lines.append(b"Content-Length: %d" % max(size, 0))
    status = send(server, b"\r\n".join(lines) + b"\r\n\r\n" + body)
    assert 200 <= status < 500, (status, lines, body[:100])


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(request=GRPC_REQUEST)
def test_a_live_server_answers_any_grpc_call_with_a_client_code(server, request):
    import grpc

    with grpc.insecure_channel(server.grpc_address) as channel:
        call = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            request_serializer=pb.ModelInferRequest.SerializeToString,
            response_deserializer=pb.ModelInferResponse.FromString)  # fmt: skip
        try:
            call(request, timeout=30)
            code = grpc.StatusCode.OK
        except grpc.RpcError as exc:
            code = exc.code()
    assert code in (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT,
                    grpc.StatusCode.NOT_FOUND), code  # fmt: skip
