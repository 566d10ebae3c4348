"""MkDocs hooks: the reference pages' tables, generated from the code when the site builds.

A page asks for one with `<!-- generated: NAME -->` on a line of its own:

    cli        every command and option of the typer app, with defaults and help
    errors     the error tree (classes and docstrings) and the exit codes
    grpc-codes the gRPC status each REST status becomes (grpc_service.http_to_code)
    formats    the Format table (layout.FORMATS) and the metadata keys of the contract
    endpoints  the server's routes, as the REST app's docstring lists them
    floors     the package's floors, from tests/test_floors.py (the test that guards them)

Measured tables (`<!-- table: NAME -->`) are rendered into the files by
benchmarks/readme_tables.py, whose --check the tests run; they are not touched here.
"""

from __future__ import annotations

import importlib.util
import inspect
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MARK = re.compile(r"^<!-- generated: ([\w-]+) -->$", re.M)


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ").strip()


def _table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
    return "\n".join(lines + ["| " + " | ".join(_cell(c) for c in r) + " |" for r in rows])


def cli() -> str:
    import click
    import typer

    from mnist_edge.cli import app

    group = typer.main.get_command(app)
    ctx = click.Context(group, info_name="mnist-edge")
    out = []
    for name in sorted(group.list_commands(ctx)):
        command = group.get_command(ctx, name)
        help_text = inspect.cleandoc(command.help or "").split("\n\n")[0].replace("\n", " ")
        rows = []
        for p in command.params:
            if p.name == "help":
                continue
            if isinstance(p, click.Argument):
                flag = p.human_readable_name
                default = "" if p.required else str(p.default)
                text = getattr(p, "help", "") or ""
            else:
                flag = " / ".join(p.opts + p.secondary_opts)
                default = "" if p.default is None or p.required else str(p.default)
                if p.multiple:
                    default = "" if not p.default else str(list(p.default))
                text = p.help or ""
            kind = p.type.name if not isinstance(p.type, click.Choice) else "|".join(p.type.choices)
            rows.append([f"`{flag}`", kind, f"`{default}`" if default else "", text])
        out.append(
            f"## `mnist-edge {name}`\n\n{help_text}\n\n"
            + _table(["argument or option", "type", "default", "what"], rows)
        )
    return "\n\n".join(out)


def errors() -> str:
    from mnist_edge import options
    from mnist_edge.edge import errors as tree

    classes = [
        c
        for _, c in inspect.getmembers(tree, inspect.isclass)
        if issubclass(c, tree.MnistEdgeError)
    ]
    classes.sort(key=lambda c: (c is not tree.MnistEdgeError, c.__name__))
    rows = [
        [f"`{c.__name__}`", ", ".join(b.__name__ for b in c.__bases__), inspect.getdoc(c) or ""]
        for c in classes
    ]
    codes = [
        ["0", "done"],
        [
            str(options.EXIT_FAILED),
            "a check ran and failed (parity, a gate, a regression, "
            "files that could not be read in `predict`)",
        ],
        [
            str(options.EXIT_ERROR),
            "a user error: one `error:` line on stderr names the file or flag (every class above)",
        ],
        [str(options.EXIT_INTERRUPTED), "interrupted (Ctrl-C, SIGINT)"],
    ]
    return (
        _table(["class", "is a", "what"], rows) + "\n\n" + _table(["exit code", "meaning"], codes)
    )


def grpc_codes() -> str:
    from mnist_edge.edge.server.grpc_service import http_to_code

    statuses = [400, 401, 403, 404, 413, 503, 504]
    return _table(
        ["REST status", "gRPC status code"],
        [[str(s), f"`{http_to_code(s).name}`"] for s in statuses],
    )


def formats() -> str:
    from mnist_edge.edge import layout, runners, spec

    rows = []
    for f in layout.FORMATS.values():
        engines = [b.name for b in runners.BACKENDS.values() if f.name in b.formats]
        rows.append(
            [
                f"`{f.name}`",
                f"`{f.filename}`",
                ", ".join(f"`{s}`" for s in f.suffixes),
                f.precision,
                ", ".join(engines),
                f.how,
            ]
        )
    keys = spec.Contract().to_metadata()
    meta = [[f"`{k}`", f"`{v}`"] for k, v in keys.items()]
    return (
        _table(["format", "file", "recognised by", "precision", "runs on", "how to make one"], rows)
        + "\n\nThe contract every exported model carries (its defaults shown), as metadata "
        "keys: ONNX `metadata_props`, the `.tflite` metadata entry "
        f"`{spec.TFLITE_METADATA}` and the `.pte` method `{spec.PTE_METADATA_METHOD}` hold "
        "the same keys.\n\n" + _table(["key", "default"], meta)
    )


def endpoints() -> str:
    from mnist_edge.edge.server import app

    doc = inspect.getdoc(app) or ""
    rows = []
    for line in doc.splitlines():
        m = re.match(r"^\s*(GET|POST)\s+(\S+)\s+(.*)$", line)
        if m:
            rows.append([m.group(1), f"`{m.group(2)}`", m.group(3)])
    return _table(["method", "path", "what"], rows)


def floors() -> str:
    spec = importlib.util.spec_from_file_location("floors", ROOT / "tests" / "test_floors.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    import textwrap

    blocks = []
    for floor, mods in reversed(list(module.FLOORS.items())):
        names = ", ".join(sorted(m.removeprefix("mnist_edge.") for m in mods))
        wrapped = textwrap.wrap(names, 84)
        blocks.append("\n".join(f"{floor if i == 0 else '':>10} | {line}"
                                for i, line in enumerate(wrapped)))  # fmt: skip
    body = ("\n" + " " * 11 + "+" + "-" * 86 + "\n").join(blocks)
    return (
        "```text\n" + body + "\n```\n\nTop to bottom, a module imports only from its own "
        "floor's lower neighbours and from the floors below it (`tests/test_floors.py` "
        "fails on an upward import or a loop)."
    )


GENERATORS = {
    "cli": cli,
    "errors": errors,
    "grpc-codes": grpc_codes,
    "formats": formats,
    "endpoints": endpoints,
    "floors": floors,
}


SHIM_CDN = "https://unpkg.com/iframe-worker/shim"
SHIM_LOCAL = "assets/javascripts/iframe-worker-shim.js"  # vendored: docs/assets/javascripts/


def on_post_build(config: Any) -> None:
    """Material's offline plugin loads its file:// worker shim from a CDN; every page of the
    site loads its own copy instead, so that nothing comes from the network (and search works
    with none)."""
    site = Path(config["site_dir"])
    for page in site.rglob("*.html"):
        text = page.read_text()
        if SHIM_CDN in text:
            depth = len(page.relative_to(site).parts) - 1
            page.write_text(text.replace(SHIM_CDN, "../" * depth + SHIM_LOCAL))


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    def one(m: re.Match) -> str:
        name = m.group(1)
        if name not in GENERATORS:
            raise ValueError(f"{page.file.src_path} asks for an unknown generated table {name!r}")
        return GENERATORS[name]()

    return MARK.sub(one, markdown)
