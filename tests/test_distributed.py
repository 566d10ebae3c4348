"""Two-process training through torchrun (gloo on CPU)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mnist_edge import checkpoint as ckpt_io
from mnist_edge import distributed as dist
from mnist_edge.edge.data import load_split
from mnist_edge.edge.errors import ConfigError
from mnist_edge.edge.evaluate import evaluate
from mnist_edge.export import ExportConfig, export
from mnist_edge.train import TrainConfig

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
            "-m", "mnist_edge", "train"]  # fmt: skip


def torchrun(args, **kw) -> subprocess.Popen:
    env = {**os.environ, "MNIST_EDGE_DIST_TIMEOUT": "60"}
    return subprocess.Popen([*TORCHRUN, *map(str, args)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)  # fmt: skip


def test_device_resolution(monkeypatch):
    assert dist.resolve_device("cpu").type == "cpu"
    # auto follows what torch reports, in order: CUDA, then MPS, then the CPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert dist.resolve_device("auto").type == "cpu"
    with pytest.raises(ConfigError, match="no CUDA device"):
        dist.resolve_device("cuda")
    with pytest.raises(ConfigError, match="no MPS device"):
        dist.resolve_device("mps")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert dist.resolve_device("auto").type == "mps"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert dist.resolve_device("auto", local_rank=3) == torch.device("cuda", 1)
    with pytest.raises(ConfigError, match="device must be one of"):
        TrainConfig(device="tpu")


def test_to_cpu_moves_nested_tensors():
    weight = torch.ones(2, requires_grad=True) * 2  # part of a graph, as live weights are
    out = dist.to_cpu({"a": [weight], "b": (torch.zeros(1), 3)})
    assert out["a"][0].device.type == "cpu" and out["b"][1] == 3
    assert isinstance(out["b"], tuple) and isinstance(out["a"], list)
    assert not out["a"][0].requires_grad and out["a"][0].grad_fn is None  # detached
    assert weight.requires_grad  # the original is untouched


def test_two_processes_train_in_sync_and_the_checkpoint_works(mnist_dir, tmp_path):
    proc = torchrun(["--epochs", 1, "--limit", 1000, "--test-limit", 500, "--threads", 1,
                     "--data-dir", mnist_dir, "--output-dir", tmp_path])  # fmt: skip
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output
    assert output.count("checkpoint ") == 1  # only rank 0 reports
    ck = ckpt_io.load(tmp_path / "mnist_cnn.pt")
    sums = ck.distributed["rank_weight_checksums"]
    assert ck.distributed["world_size"] == 2 and len(sums) == 2
    assert sums[0] == sums[1]  # both replicas ended with identical weights
    r = evaluate(tmp_path / "mnist_cnn.pt", load_split("test", mnist_dir, 500))
    assert r.accuracy == pytest.approx(ck.test_accuracy)
    (art,) = export(
        ExportConfig(checkpoint=str(tmp_path / "mnist_cnn.pt"), output_dir=str(tmp_path))
    )
    assert art.bytes > 0
    # --resume accepts the distributed checkpoint, in one process
    again = subprocess.run(
        [sys.executable, "-m", "mnist_edge", "train", "--resume", "--epochs", "2",
         "--output-dir", str(tmp_path), "--data-dir", str(mnist_dir)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert ckpt_io.load(tmp_path / "mnist_cnn.pt").epoch == 2


def children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def test_a_dead_rank_does_not_leave_the_other_hanging(mnist_dir, tmp_path):
    proc = torchrun(["--epochs", 50, "--limit", 2000, "--test-limit", 100, "--threads", 1,
                     "--data-dir", mnist_dir, "--output-dir", tmp_path])  # fmt: skip
    deadline = time.time() + 120
    workers: list[int] = []
    while time.time() < deadline and len(workers) < 2:
        time.sleep(1)
        workers = children(proc.pid)
    assert len(workers) == 2, "torchrun did not start two workers"
    time.sleep(8)  # let them get into the training loop
    os.kill(workers[1], signal.SIGKILL)
    try:
        proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("the surviving rank hung after its peer died")
    assert proc.returncode != 0
    time.sleep(1)
    assert not any(Path(f"/proc/{w}").exists() for w in workers)
