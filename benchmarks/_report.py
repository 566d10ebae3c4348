"""What every benchmark script does at the end: write its JSON report, print a markdown table.
Importing it also puts tests/ on the path, for the development tools the benchmarks share with
the tests (tests/devtools: the browser driver, QEMU), which the installed package leaves out."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mnist_edge.edge.files import utc_now
from mnist_edge.edge.machine import environment

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def write_report(path: str | Path, body: dict[str, Any]) -> Path:
    """`body` plus the machine, versions and finishing time, as indented JSON."""
    report = {**body, "environment": environment(),
              "finished": utc_now()}  # fmt: skip
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    return path


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A markdown table (first column left-aligned, the rest right-aligned)."""
    print("| " + " | ".join(headers) + " |")
    print("| --- |" + " ---: |" * (len(headers) - 1))
    for row in rows:
        print("| " + " | ".join(row) + " |")
