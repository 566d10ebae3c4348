"""`predict --ray` and `serve --ray` on real Ray clusters on this machine, each inside a network
namespace that the test opens with loopback alone (Ray listens on every interface; see
tests/devtools/raycluster.py): a one-node cluster, a two-node cluster (a head and a worker
joined with `ray start --address`, 1 CPU each), and a local instance that `--ray` starts by
itself. Answers equal the local `predict` on 2,000 files, broken ones included; an actor killed
in the middle of a job still leaves every row exactly once; the OIP tests of test_serve.py pass
against Ray Serve; a replica killed under load is replaced, and requests after that are
answered; `ray stop` leaves no process behind.

Where Ray or `unshare -n` is not available the tests skip and say why; under CI=true they
fail instead (`make test` installs Ray)."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from devtools import raycluster
from PIL import Image

from mnist_edge.edge.data import load_split

REPO = Path(__file__).resolve().parents[1]
FILES = 2000
MARGIN = 1e-4  # top-1 minus top-2 below this: a near-tie that may go either way


def _need_ray() -> None:
    reason = raycluster.unavailable()
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"the Ray tests cannot run: {reason}")
    pytest.skip(reason)


@pytest.fixture
def ns():
    _need_ray()
    space = raycluster.Namespace()
    yield space
    left = space.processes()
    for pid in left:  # a failed test must not leave a cluster running for the next one
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    space.close()


@pytest.fixture(scope="module")
def folder(tmp_path_factory, mnist_dir) -> Path:
    """2,000 image files: test digits as PNGs, and a few that cannot be read."""
    root = tmp_path_factory.mktemp("files")
    digits = load_split("test", mnist_dir, FILES).images  # synthetic MNIST has 1,000
    good = FILES - 4
    for i in range(good):
        Image.fromarray(255 - digits[i % len(digits)]).save(root / f"{i:05d}.png")
    (root / "broken-text.png").write_bytes(b"not an image")
    (root / "broken-empty.png").write_bytes(b"")
    (root / "broken-truncated.png").write_bytes((root / "00000.png").read_bytes()[:60])
    (root / "sub").mkdir()
    (root / "sub" / "link.png").symlink_to(root / "missing.png")  # a broken link
    return root


def mnist_edge(*args: object) -> list[str]:
    return [sys.executable, "-m", "mnist_edge", *map(str, args)]


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def local_rows(folder, tmp_path_factory) -> list[dict[str, str]]:
    out = tmp_path_factory.mktemp("local") / "local.csv"
    r = subprocess.run(mnist_edge("predict", folder, "--top", 2, "--output", out),
                       capture_output=True, text=True, timeout=600)  # fmt: skip
    assert r.returncode == 1, r.stderr[-2000:]  # some files cannot be read
    return read_rows(out)


def assert_same_rows(local: list[dict], got: list[dict]) -> None:
    """Every file once, in the same order, with the same error or the same answer (labels
    where the answer is not a near-tie, probabilities to the parity rule's tolerance)."""
    assert [r["file"] for r in got] == [r["file"] for r in local]
    assert [r["error"] for r in got] == [r["error"] for r in local]
    assert sum(bool(r["error"]) for r in got) == 4
    for a, b in zip(local, got, strict=True):
        if a["error"]:
            assert b["label"] == ""
            continue
        p1, p2 = float(a["top1_probability"]), float(a["top2_probability"])
        if p1 - p2 > MARGIN:
            assert a["label"] == b["label"], (a, b)
        assert abs(float(b["confidence"]) - float(a["confidence"])) <= 1e-4 + 1e-3 * p1


def test_predict_on_a_one_node_cluster_equals_local(ns, folder, local_rows, tmp_path):
    cluster = raycluster.Cluster(ns, (2,))
    try:
        out = tmp_path / "ray.csv"
        r = ns.run(mnist_edge("predict", folder, "--top", 2, "--ray", "--output", out),
                   env=cluster.env, timeout=600)  # fmt: skip
        assert r.returncode == 1, r.stderr[-3000:]
        assert "Traceback" not in r.stderr
        assert_same_rows(local_rows, read_rows(out))
        assert f"ray: {FILES}/{FILES} files answered" in r.stderr  # progress, then the rows
        lines = [ln for ln in r.stdout.splitlines() if ln.strip()]
        assert len(lines) == FILES - 4 and lines[0].startswith(str(folder / "00000.png"))
    finally:
        assert cluster.stop() == {}


def test_an_actor_killed_mid_job_leaves_every_row_once(ns, folder, local_rows, tmp_path):
    """Two nodes of 1 CPU, an actor on each; one actor is killed once the first answers are
    back. Ray restarts it and retries its task; the driver keeps one row per file."""
    cluster = raycluster.Cluster(ns, (1, 1))
    try:
        out = tmp_path / "ray.csv"
        proc = ns.popen(mnist_edge("predict", folder, "--top", 2, "--ray-address",
                                   cluster.address, "--actors", 2, "--output", out),
                        env=cluster.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                        text=True)  # fmt: skip
        progress, killed = [], []
        for line in proc.stderr:
            match = re.match(r"ray: (\d+)/(\d+) files answered", line)
            if match:
                progress.append(int(match.group(1)))
                if not killed:
                    actors = cluster.pids("MapWorker")
                    assert actors, ns.processes()
                    os.kill(actors[0], signal.SIGKILL)
                    killed.append(progress[-1])
        assert proc.wait(timeout=600) == 1
        assert killed and killed[0] < FILES, progress  # the kill landed before the end
        assert progress[-1] == FILES
        assert_same_rows(local_rows, read_rows(out))
    finally:
        assert cluster.stop() == {}, "ray stop left processes behind"


def test_ray_alone_starts_and_stops_a_local_instance(ns, folder, local_rows, tmp_path):
    files = sorted(folder.glob("000[0-4]*.png"))[:50] + [folder / "broken-text.png"]
    out = tmp_path / "ray.jsonl"
    r = ns.run(mnist_edge("predict", *files, "--ray", "--output", out, "--top", 2),
               env=raycluster.ray_env(str(tmp_path)), timeout=600)  # fmt: skip
    assert r.returncode == 1, r.stderr[-3000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    want = {row["file"]: row for row in local_rows}
    assert [row["file"] for row in rows] == [str(f) for f in files]
    for row in rows:
        assert (row["label"] is None) == bool(want[row["file"]]["error"])
        if row["label"] is not None:
            assert str(row["label"]) == want[row["file"]]["label"]
    deadline = time.monotonic() + 30
    while ns.processes() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ns.processes() == {}  # the instance went with the command


def _hey_body(tmp_path: Path, digit: np.ndarray) -> Path:
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 28, 28],
                        "data": ((digit / 255.0 - 0.1307) / 0.3081).ravel().tolist()}]}  # fmt: skip
    path = tmp_path / "body.json"
    path.write_text(json.dumps(body))
    return path


def _statuses(hey_output: str) -> dict[str, int]:
    """hey's status code distribution, and its error count."""
    codes = {m.group(1): int(m.group(2))
             for m in re.finditer(r"\[(\d{3})\]\s+(\d+) responses", hey_output)}  # fmt: skip
    errors = re.search(r"Error distribution:(.*)", hey_output, re.S)
    codes["errors"] = (
        sum(int(n) for n in re.findall(r"\[(\d+)\]", errors.group(1))) if errors else 0
    )
    return codes


def test_serve_on_ray_passes_the_oip_tests_and_survives_a_killed_replica(ns, mnist_dir, tmp_path):
    if not subprocess.run(["sh", "-c", "command -v hey"], capture_output=True).stdout:
        if os.environ.get("CI"):
            pytest.fail("hey is not installed (make test installs it)")
        pytest.skip("hey is not installed (apt-get install hey)")
    cluster = raycluster.Cluster(ns, (2,))
    port = 8000
    url = f"http://127.0.0.1:{port}/"
    server = ns.popen(mnist_edge("serve", "--ray", "--replicas", 2, "--port", port),
                      env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                      text=True)  # fmt: skip
    try:
        for line in server.stdout:
            if "serving at" in line:
                break
        else:
            raise AssertionError("serve --ray ended: " + server.stderr.read()[-3000:])
        assert len(cluster.pids("ServeReplica")) == 2
        # the OIP tests of test_serve.py, as a user's clients send them, against Ray Serve
        tests = ns.run([sys.executable, "-m", "pytest", REPO / "tests" / "test_serve.py", "-m",
                        "oip", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
                        "--rootdir", REPO], cwd=tmp_path, timeout=600,
                       env={**cluster.env, "MNIST_EDGE_SERVE_URL": url,
                            "MNIST_EDGE_DATA": str(mnist_dir)})  # fmt: skip
        assert tests.returncode == 0, tests.stdout[-4000:]
        assert re.search(r"\b\d+ passed", tests.stdout) and "skipped" not in tests.stdout

        # a replica killed under load: Serve replaces it; requests after that are answered
        digit = load_split("test", mnist_dir, 1).images[0]
        body = _hey_body(tmp_path, digit)
        hey = ["hey", "-z", "8s", "-c", "8", "-t", "10", "-m", "POST", "-D", body,
               "-T", "application/json", url + "v2/models/mnist/infer"]  # fmt: skip
        load = ns.popen(hey, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(2)
        victim = cluster.pids("ServeReplica")[0]
        os.kill(victim, signal.SIGKILL)
        window = _statuses(load.communicate(timeout=120)[0])
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            alive = [p for p in cluster.pids("ServeReplica") if p != victim]
            if len(alive) == 2:
                break
            time.sleep(0.5)
        assert len(alive) == 2, "the killed replica was not replaced"
        time.sleep(5)  # the new replica passes its first health check
        after = ns.run(["hey", "-n", "400", "-c", "8", "-t", "10", "-m", "POST", "-D", body,
                        "-T", "application/json", url + "v2/models/mnist/infer"],
                       timeout=120).stdout  # fmt: skip
        codes = _statuses(after)
        assert codes.get("200") == 400 and codes["errors"] == 0, after
        print(f"replica killed under load: {window}")
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            code = server.wait(timeout=120)
        except subprocess.TimeoutExpired:
            server.kill()
            code = server.wait()
        left = cluster.stop()
    assert code == 0 and left == {}


@pytest.mark.parametrize("ci", ["", "true"])
def test_without_unshare_the_ray_tests_skip_and_under_ci_fail(monkeypatch, ci):
    monkeypatch.setattr(raycluster, "unavailable", lambda: "unshare -n is not permitted here")
    monkeypatch.setenv("CI", ci) if ci else monkeypatch.delenv("CI", raising=False)
    outcome = pytest.fail.Exception if ci else pytest.skip.Exception
    with pytest.raises(outcome, match="unshare -n is not permitted"):
        _need_ray()


def test_the_ray_extra_leaves_the_edge_and_train_installs_alone():
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert any(d.startswith("ray[") for d in extras["ray"])
    for deps in (project["dependencies"], extras["train"]):
        assert not [d for d in deps if d.split("[")[0].split(">")[0].strip() == "ray"]
