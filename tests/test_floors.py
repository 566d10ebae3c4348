"""The floors of the package (edge/__init__.py's docstring) hold: read every module's imports
with ast (function-level ones too, which is where loops hide) and fail on a loop, on an import
from a higher floor, or on a function-level import of a sibling module that is neither heavy
(torch, onnx, OpenVINO at its top) nor made by the top floor (commands load what they run)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mnist_edge"

# Floor of every module, bottom up. A module imports only from its own floor's lower
# neighbours (no loop) and from the floors below.
FLOORS: dict[str, tuple[str, ...]] = {
    "base": ("mnist_edge", "mnist_edge.edge", "mnist_edge.edge.backends",
             "mnist_edge.edge.proto"),
    "core": tuple(f"mnist_edge.edge.{m}" for m in (
        "spec", "errors", "policy", "layout", "files", "machine", "threads", "phases", "timing",
        "metrics", "profile", "data", "manifest", "proto.grpc_service_pb2",
        "proto.model_config_pb2", "proto.regenerate")),
    "engines": ("mnist_edge.edge.backends.base", "mnist_edge.edge.backends.onnxruntime",
                "mnist_edge.edge.backends.openvino", "mnist_edge.edge.backends.executorch",
                "mnist_edge.edge.backends.litert", "mnist_edge.edge.runners"),
    "predictor": ("mnist_edge.edge.images", "mnist_edge.edge.runtime"),
    "tasks": tuple(f"mnist_edge.edge.{m}" for m in (
        "evaluate", "parity", "bench", "tune", "predict", "web", "triton",
        "server.auth", "server.tls", "server.tracing", "server.config", "server.tensors",
        "server.rest_codec", "server.grpc_codec", "server.batcher", "server.metrics",
        "server.stats", "server.models",
        "server.model_server", "server.grpc_service", "server.app", "server.http_limits",
        "server.host", "server.workers", "server", "cluster")),
    "training": tuple(f"mnist_edge.{m}" for m in (
        "model", "checkpoint", "distributed", "augment", "train", "executorch_export",
        "litert_export", "export", "quantize", "doctor", "layers", "torch_backend")),
    "top": tuple(f"mnist_edge.{m}" for m in (
        "render", "options", "workflow", "serve_command", "cli", "__main__", "runtime")),
}  # fmt: skip
LEVEL = {module: i for i, (_, mods) in enumerate(FLOORS.items()) for module in mods}
HEAVY_PACKAGES = {"torch", "torchvision", "onnx", "onnxscript", "openvino", "ray"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def _type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imports(path: Path, known: set[str]) -> list[tuple[str, bool, int]]:
    """(imported mnist_edge module, at function level?, line) for every runtime import."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text())
    found: list[tuple[str, bool, int]] = []

    def visit(node: ast.AST, nested: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if _type_checking(child):
                continue
            inner = nested or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")[: len(package.split(".")) - child.level + 1]
                    mod = ".".join([*base, *([child.module] if child.module else [])])
                else:
                    mod = child.module or ""
                for alias in child.names:
                    target = f"{mod}.{alias.name}" if f"{mod}.{alias.name}" in known else mod
                    if target in known and target != name:
                        found.append((target, inner, child.lineno))
            elif isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name in known and alias.name != name:
                        found.append((alias.name, inner, child.lineno))
            visit(child, inner)

    visit(tree, False)
    return found


def heavy(path: Path) -> bool:
    """Whether the module imports a heavy third-party package at its top level."""
    for node in ast.parse(path.read_text()).body:
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names = [node.module or ""]
        if any(n.split(".")[0] in HEAVY_PACKAGES for n in names):
            return True
    return False


def graph() -> dict[str, list[tuple[str, bool, int]]]:
    mods = modules()
    return {name: imports(path, set(mods)) for name, path in mods.items()}


def test_every_module_has_a_floor():
    assert sorted(set(modules()) - set(LEVEL)) == []


def test_no_import_loop():
    edges = {m: {t for t, _, _ in targets} for m, targets in graph().items()}
    state: dict[str, int] = {}
    loops = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                loops.append(path[path.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert loops == []


def test_no_import_from_a_higher_floor():
    upward = [f"{m} -> {t} (line {line})" for m, targets in graph().items()
              for t, _, line in targets if LEVEL[t] > LEVEL[m]]  # fmt: skip
    assert upward == []


def test_function_level_imports_are_only_for_heavy_modules_or_commands():
    mods = modules()
    top = set(FLOORS["top"])
    hidden = [f"{m} -> {t} (line {line})" for m, targets in graph().items()
              for t, nested, line in targets
              if nested and m not in top and not heavy(mods[t])]  # fmt: skip
    assert hidden == []


def test_the_edge_install_never_reaches_the_training_floors():
    """No edge module imports a training or top module (torch_backend is named by string in
    the catalogue, loaded only when a torch format is run)."""
    edge = {m for m in LEVEL if m.startswith("mnist_edge.edge")}
    above = set(FLOORS["training"]) | set(FLOORS["top"])
    reach = [f"{m} -> {t}" for m, targets in graph().items() if m in edge
             for t, _, _ in targets if t in above]  # fmt: skip
    assert reach == []


@pytest.mark.parametrize("fault", ["loop", "upward"])
def test_the_checks_catch_an_injected_fault(tmp_path, monkeypatch, fault):
    """A copy of the package with a loop (spec imports runtime) or an upward import (errors
    imports bench at function level) fails the checks above."""
    import shutil

    copy = tmp_path / "mnist_edge"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("models", "webapp"))
    target = copy / "edge" / ("spec.py" if fault == "loop" else "errors.py")
    line = ("from .runtime import Predictor\n" if fault == "loop"
            else "def f():\n    from .bench import bench\n")  # fmt: skip
    target.write_text(target.read_text() + "\n" + line)
    monkeypatch.setattr(f"{__name__}.PACKAGE", copy)
    with pytest.raises(AssertionError):
        test_no_import_from_a_higher_floor()
    if fault == "loop":
        with pytest.raises(AssertionError):
            test_no_import_loop()


def test_no_assert_in_the_package():
    """A check that decides behaviour raises; `assert` vanishes under python -O."""
    found = [f"{module_name(p)}:{n.lineno}" for p in PACKAGE.rglob("*.py")
             for n in ast.walk(ast.parse(p.read_text())) if isinstance(n, ast.Assert)]  # fmt: skip
    assert found == []
