"""The edge path must work where torch cannot be imported."""

import subprocess
import sys

BLOCK_TORCH = "import sys; sys.modules['torch'] = None; sys.modules['torchvision'] = None; "


def run_without_torch(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", BLOCK_TORCH + code], capture_output=True, text=True, timeout=120
    )


def test_blocking_works():
    r = run_without_torch("import torch")
    assert r.returncode != 0 and "ModuleNotFoundError" in r.stderr


def test_package_and_help_import_without_torch():
    r = run_without_torch(
        "import mnist_edge, mnist_edge.edge.spec, mnist_edge.edge.errors, mnist_edge.edge.machine; "
        "from mnist_edge.cli import app; "
        "from typer.testing import CliRunner; "
        "res = CliRunner().invoke(app, ['--help']); "
        "assert res.exit_code == 0, res.output; print('ok')"
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"


def test_the_edge_subpackage_never_imports_torch(mnist_dir, tmp_path):
    """With torch installed: import every module of mnist_edge.edge, then predict, evaluate,
    bench, parity and tune from it; torch, torchvision and onnx stay unimported."""
    code = f"""
import pkgutil, importlib, shutil, sys
import mnist_edge.edge as edge
for m in pkgutil.walk_packages(edge.__path__, "mnist_edge.edge."):
    importlib.import_module(m.name)
import numpy as np
from mnist_edge.edge import bench, evaluate, parity, tune
from mnist_edge.edge.data import load_split
from mnist_edge.edge.runtime import Predictor, pretrained_path
folder = {str(tmp_path)!r}
for int8 in (False, True):
    shutil.copy(pretrained_path(int8=int8), folder)
model, data = folder + "/mnist_cnn.onnx", {str(mnist_dir)!r}
Predictor(model).predict(np.zeros((2, 28, 28), np.uint8))
test = load_split("test", data, 50)
evaluate.evaluate(model, test)
bench.bench(bench.BenchConfig(backends=("onnxruntime",), batch_sizes=(1,), threads=(1,),
                              iterations=2, warmup=1, model=model), test)
parity.check_against(model, [folder + "/mnist_cnn.int8.onnx"], test)
tune.tune(tune.TuneConfig(model, threads=(1,), test_limit=50, duration=0.02,
                          backends=("onnxruntime",)), test)
loaded = sorted(m for m in ("torch", "torchvision", "onnx", "onnxscript") if m in sys.modules)
print("heavy:", loaded)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "heavy: []", r.stdout


def test_the_documented_import_still_works():
    from mnist_edge.edge.runtime import Predictor as inside
    from mnist_edge.runtime import Predictor, pretrained_path

    assert Predictor is inside and pretrained_path(int8=True).is_file()
