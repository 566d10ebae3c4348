"""The edge install: every inference command runs where torch, torchvision and onnx cannot be
imported, and every command that needs them says what to install, in one line, exit 2."""

import json
import subprocess
import sys

import pytest
from conftest import shrunk_ink

from mnist_edge.edge.layout import Layout

# What the edge install (`pip install mnist-edge`) lacks: the train and openvino extras' packages.
BLOCK = (
    "import sys\n"
    "for name in ('torch', 'torchvision', 'onnx', 'onnxscript', 'openvino'):\n"
    "    sys.modules[name] = None\n"
)


def edge(*args: object, timeout: int = 300) -> subprocess.CompletedProcess:
    """`mnist-edge ARGS` in a fresh interpreter where the train extra cannot be imported."""
    code = BLOCK + (
        "from mnist_edge.cli import main\n"
        f"sys.argv = ['mnist-edge', *{[str(a) for a in args]!r}]\n"
        "main()\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout
    )


def one_error_line(r: subprocess.CompletedProcess) -> str:
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    return lines[0]


def test_blocking_works():
    r = subprocess.run([sys.executable, "-c", BLOCK + "import torch"], capture_output=True)
    assert r.returncode != 0 and b"ModuleNotFoundError" in r.stderr


@pytest.fixture(scope="module")
def folder(exported, tmp_path_factory):
    """A copy of the ONNX Runtime artifacts alone (as a device would hold them)."""
    out = tmp_path_factory.mktemp("device")
    for fmt in ("onnx", "ort"):
        src = Layout(exported).artifact(fmt)
        (out / src.name).write_bytes(src.read_bytes())
    return out


def test_evaluate_an_artifact_without_torch(folder, mnist_dir, tmp_path):
    n = 500
    for model in (Layout(folder).onnx, Layout(folder).ort):
        out = tmp_path / f"{model.name}.json"
        r = edge("evaluate", "--model", model, "--data-dir", mnist_dir, "--test-limit", n,
                 "--json", out)  # fmt: skip
        assert r.returncode == 0, r.stderr
        report = json.loads(out.read_text())
        assert report["n"] == n and sum(map(sum, report["confusion"])) == n
        assert f"accuracy {report['accuracy']:.2f}%" in r.stdout


def test_parity_between_artifacts_without_torch(folder, mnist_dir, tmp_path):
    layout = Layout(folder)
    r = edge("parity", "--reference", layout.onnx, layout.ort, "--data-dir", mnist_dir,
             "--test-limit", 300, "--json", tmp_path / "p.json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "p.json").read_text())
    assert report["passed"] and report["reference"] == str(layout.onnx)
    assert report["artifacts"][0]["groups"][0]["decisive_agreement"] == 100.0


def test_bench_without_torch_takes_what_exists(folder, mnist_dir, tmp_path):
    out = tmp_path / "b.json"
    r = edge("bench", "--model", Layout(folder).onnx, "--data-dir", mnist_dir, "--batch-sizes",
             1, "--threads", 1, "--iterations", 3, "--warmup", 1, "--json", out)  # fmt: skip
    assert r.returncode == 0, r.stderr
    report = json.loads(out.read_text())
    assert {c["backend"] for c in report["cases"]} == {"onnxruntime", "onnxruntime-ort"}
    assert report["matmul_gflops"]["1"] > 0  # the roofline needs no torch
    assert report["environment"]["torch_threads_default"] is None


def test_predict_files_and_a_folder_without_torch(folder, mnist_dir, tmp_path):
    from PIL import Image

    from mnist_edge.edge.data import load_split

    images = tmp_path / "images"
    images.mkdir()
    digits = load_split("test", mnist_dir, 6)
    for i, d in enumerate(digits.images):
        Image.fromarray(255 - d).save(images / f"{i}.png")
    out = tmp_path / "rows.jsonl"
    r = edge("predict", images, "--model", Layout(folder).onnx, "--output", out)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["file"] for row in rows] == [str(images / f"{i}.png") for i in range(6)]


def test_a_pixelated_digit_reads_as_its_small_self_without_torch(folder, mnist_dir, tmp_path):
    """Step 2b in the edge install: a digit 8 px tall and the same file enlarged 5x with
    nearest-neighbour give the same 28x28 input, so the same label and confidence."""
    from PIL import Image

    from mnist_edge.edge.data import load_split

    d = load_split("test", mnist_dir, 1).images[0]
    small = shrunk_ink(d, 8)
    paper = Image.new("L", (small.width + 2, 10), 255)
    paper.paste(small, (1, 1))
    paper.save(tmp_path / "small.png")
    paper.resize((paper.width * 5, 50), Image.NEAREST).save(tmp_path / "pixelated.png")
    out = tmp_path / "rows.jsonl"
    files = [tmp_path / "small.png", tmp_path / "pixelated.png"]
    r = edge("predict", *files, "--model", Layout(folder).onnx, "--output", out)
    assert r.returncode == 0, r.stderr
    a, b = (json.loads(line) for line in out.read_text().splitlines())
    assert (a["label"], a["confidence"]) == (b["label"], b["confidence"])


def test_web_export_and_serve_without_torch(folder, tmp_path):
    """The browser target is edge work too: a device-side install writes and serves the page."""
    r = edge("export", "--format", "web", "--output-dir", folder, "--web-dir", tmp_path / "web")
    assert r.returncode == 0, r.stderr
    assert "from the exported model" in r.stdout
    config = json.loads((tmp_path / "web" / "model.json").read_text())
    assert config["models"]["fp32"]["file"] == "mnist_cnn.onnx"
    r = edge("serve", tmp_path / "web", "--port", "99999")
    assert "--port" in one_error_line(r)


def test_a_ray_actor_answers_without_torch(mnist_dir, tmp_path):
    """What each Ray Data actor runs (edge/cluster.py's _PredictActor), called here without Ray
    where torch cannot be imported: the edge install with the ray extra runs batch jobs."""
    from PIL import Image

    from mnist_edge.edge.data import load_split

    digits = load_split("test", mnist_dir, 4)
    for i, d in enumerate(digits.images):
        Image.fromarray(255 - d).save(tmp_path / f"{i}.png")
    (tmp_path / "bad.png").write_bytes(b"no")
    code = BLOCK + (
        "import json, numpy as np\n"
        "from mnist_edge.edge.cluster import _PredictActor\n"
        "from mnist_edge.edge.predict import PredictConfig\n"
        f"actor = _PredictActor(PredictConfig(top=2), 1, 2, {str(tmp_path)!r})\n"
        "files = ['0.png', '1.png', 'bad.png', '2.png', '3.png']\n"
        "out = actor({'index': np.arange(5), 'path': np.array(files, dtype=object)})\n"
        "print(json.dumps({'labels': out['labels'][:, 0].tolist(),\n"
        "                  'errors': [str(e) for e in out['error']],\n"
        "                  'torch': sys.modules.get('torch') is not None}))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout.splitlines()[-1])
    from mnist_edge.edge.runtime import Predictor

    want = Predictor.pretrained().predict(digits.images).labels.tolist()
    assert got["labels"][:2] + got["labels"][3:] == want and got["labels"][2] == -1
    assert "bad.png" in got["errors"][2] and not any(got["errors"][i] for i in (0, 1, 3, 4))
    assert got["torch"] is False


def test_a_triton_repository_is_written_without_torch_or_onnx(tmp_path):
    """The Triton writer reads shapes with ONNX Runtime: a device-side install can hand the
    packaged models to Triton (export --format triton itself needs torch for the export)."""
    code = BLOCK + (
        "from mnist_edge.edge.runtime import pretrained_path\n"
        "from mnist_edge.edge.triton import write_repository\n"
        f"repo = write_repository({str(tmp_path)!r}, pretrained_path(),"
        " pretrained_path(int8=True))\n"
        "print([m.name for m in repo.models], repo.models[0].inputs, repo.models[0].outputs)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "['mnist', 'mnist_int8'] {'input': [1, 28, 28]} {'log_probs': [10]}" in r.stdout
    assert (tmp_path / "triton" / "mnist_int8" / "1" / "model.onnx").is_file()


def test_ray_without_the_ray_extra_says_what_to_install(tmp_path):
    from PIL import Image

    Image.new("L", (28, 28), 255).save(tmp_path / "0.png")  # a file: a job to hand out
    code = BLOCK.replace("'openvino')", "'openvino', 'ray')") + (
        "from mnist_edge.cli import main\n"
        f"sys.argv = ['mnist-edge', 'predict', {str(tmp_path)!r}, '--ray']\n"
        "main()\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2
    assert "pip install 'mnist-edge[ray]'" in one_error_line(r)


@pytest.mark.parametrize(
    "args",
    [
        ("train", "--epochs", "1"),
        ("export", "--format", "onnx", "--checkpoint", "{ckpt}"),
        ("evaluate", "--checkpoint", "{ckpt}"),
        ("parity", "{onnx}", "--checkpoint", "{ckpt}"),
        ("quantize", "--model", "{onnx}", "--output", "{tmp}/q.onnx"),
        ("bench", "--backends", "pytorch", "--model", "{onnx}", "--checkpoint", "{ckpt}"),
    ],
)
def test_commands_that_need_torch_say_what_to_install(trained, exported, mnist_dir, args, tmp_path):
    # real files, so that the missing package, not a missing file, is what stops each command
    real = {"ckpt": trained, "onnx": Layout(exported).onnx, "tmp": tmp_path}
    r = edge(*(a.format(**real) for a in args), "--data-dir", mnist_dir)
    assert r.returncode == 2, r.stdout + r.stderr
    line = one_error_line(r)
    assert "pip install 'mnist-edge[train]'" in line, line
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_litert_runs_without_torch(exported, mnist_dir, tmp_path):
    """The litert extra is edge work: evaluate, predict, parity, bench and tune on a .tflite
    beside the ONNX file, where torch, onnx and the converters cannot be imported."""
    from PIL import Image

    from mnist_edge.edge.data import load_split

    device = tmp_path / "device"
    device.mkdir()
    for fmt in ("onnx", "litert"):
        src = Layout(exported).artifact(fmt)
        (device / src.name).write_bytes(src.read_bytes())
    tflite, onnx_file = Layout(device).tflite, Layout(device).onnx
    r = edge("evaluate", "--model", tflite, "--data-dir", mnist_dir, "--test-limit", 300)
    assert r.returncode == 0 and "accuracy" in r.stdout, r.stderr
    assert r.stderr == "", r.stderr  # LiteRT's own notices stay off the command's stderr
    digit = load_split("test", mnist_dir, 1)
    Image.fromarray(255 - digit.images[0]).save(tmp_path / "d.png")
    r = edge("predict", tmp_path / "d.png", "--model", tflite, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)[0]["label"] == int(digit.labels[0])
    r = edge("parity", "--reference", onnx_file, tflite, "--data-dir", mnist_dir,
             "--test-limit", 300, "--json", tmp_path / "p.json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "p.json").read_text())["artifacts"][0]["backend"] == "litert"
    r = edge("bench", "--model", onnx_file, "--backends", "litert,onnxruntime", "--batch-sizes",
             1, "--threads", 1, "--iterations", 3, "--warmup", 1, "--data-dir", mnist_dir,
             "--json", tmp_path / "b.json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    cases = json.loads((tmp_path / "b.json").read_text())["cases"]
    assert {c["backend"] for c in cases} == {"litert", "onnxruntime"}
    r = edge("tune", "--model", onnx_file, "--threads", 1, "--backends", "litert,onnxruntime",
             "--test-limit", 200, "--duration", 0.05, "--data-dir", mnist_dir,
             "--json", tmp_path / "t.json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    tried = {t["name"] for t in json.loads((tmp_path / "t.json").read_text())["ranked"]}
    assert tried == {"litert", "onnxruntime"}


def test_executorch_without_torch_says_what_to_install(exported, mnist_dir):
    """ExecuTorch's Python runtime is built on torch: without it, one line naming the extra
    (a device runs .pte files in ExecuTorch's C++ runtime)."""
    r = edge("evaluate", "--model", Layout(exported).pte, "--data-dir", mnist_dir,
             "--test-limit", 10)  # fmt: skip
    assert r.returncode == 2
    line = one_error_line(r)
    assert "pip install 'mnist-edge[executorch]'" in line and "C++ runtime" in line
