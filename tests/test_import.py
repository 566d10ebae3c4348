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
        "import mnist_edge, mnist_edge.spec, mnist_edge.errors, mnist_edge.machine; "
        "from mnist_edge.cli import app; "
        "from typer.testing import CliRunner; "
        "res = CliRunner().invoke(app, ['--help']); "
        "assert res.exit_code == 0, res.output; print('ok')"
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"
