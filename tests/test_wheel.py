"""The wheel holds what users run: the package, its models and the web page; no test or
development tooling (the browser driver, QEMU), no tests/ or benchmarks/."""

import subprocess
import sys
import zipfile

import pytest
from conftest import REPO


@pytest.fixture(scope="module")
def wheel_files(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    build = tmp_path_factory.mktemp("build")
    r = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(out), str(REPO)],
        capture_output=True, text=True, timeout=600, cwd=build,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    (wheel,) = out.glob("mnist_edge-*.whl")
    return sorted(zipfile.ZipFile(wheel).namelist())


def test_the_wheel_holds_the_package_its_models_and_its_page(wheel_files):
    names = set(wheel_files)
    for needed in (
        "mnist_edge/__main__.py",
        "mnist_edge/edge/runtime.py",
        "mnist_edge/edge/backends/onnxruntime.py",
        "mnist_edge/edge/backends/litert.py",
        "mnist_edge/edge/backends/executorch.py",
        "mnist_edge/edge/models/mnist_cnn.onnx",
        "mnist_edge/edge/models/mnist_cnn.int8.onnx",
        "mnist_edge/edge/models/manifest.json",
        "mnist_edge/edge/webapp/index.html",
    ):
        assert needed in names, needed
    # the packaged models stay ONNX (docs/guides/backends.md: a .tflite pair would double them)
    assert not [n for n in names if n.endswith((".tflite", ".pte"))]


def test_the_wheel_leaves_out_development_tools(wheel_files):
    package = [n for n in wheel_files if not n.startswith("mnist_edge-")]
    assert all(n.startswith("mnist_edge/") for n in package), package
    for n in package:
        assert "emulate" not in n and "playwright" not in n.lower() and "/tests/" not in n, n
        assert "__pycache__" not in n and not n.endswith(".pyc"), n
    sources = [n for n in package if n.endswith(".py")]
    with_driver = [n for n in sources if n.endswith("browser.py")]
    assert with_driver == []
    print(f"{len(package)} files in the wheel's package")
