"""The measured tables of the README and the documentation site are made from
benchmarks/results/, never typed by hand: each block equals its rendering from the results
file, a changed figure is caught, and a results file that does not name its CPU is refused."""

from __future__ import annotations

import importlib.util
import json
import shutil

import pytest
from conftest import REPO


@pytest.fixture()
def tables(monkeypatch):
    path = REPO / "benchmarks" / "readme_tables.py"
    spec = importlib.util.spec_from_file_location("readme_tables", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_table_in_the_pages_is_its_results_file(tables):
    names = set()
    for page in tables.pages():
        text = page.read_text()
        names |= {m.group(2) for m in tables.BLOCK.finditer(text)}
        assert tables.render(text) == text, f"{page}: run benchmarks/readme_tables.py --write"
    assert names == set(tables.TABLES), "a table is on no page, or a page names an unknown one"
    assert "headline" in {m.group(2) for m in tables.BLOCK.finditer(tables.README.read_text())}


def test_a_figure_that_differs_from_its_results_file_is_caught(tables, tmp_path, monkeypatch):
    results = tmp_path / "results"
    shutil.copytree(REPO / "benchmarks" / "results", results)
    data = json.loads((results / "runtimes.json").read_text())
    data["rows"][0]["runner_p50_ms"] *= 2  # the README still shows the old figure
    (results / "runtimes.json").write_text(json.dumps(data))
    monkeypatch.setattr(tables, "RESULTS", results)
    text = (REPO / "docs" / "guides" / "backends.md").read_text()
    assert tables.render(text) != text


def test_a_results_file_without_its_cpu_is_refused(tables, tmp_path, monkeypatch):
    results = tmp_path / "results"
    shutil.copytree(REPO / "benchmarks" / "results", results)
    data = json.loads((results / "int8_agreement.json").read_text())
    del data["measured_on"]["cpu_flags"]
    (results / "int8_agreement.json").write_text(json.dumps(data))
    monkeypatch.setattr(tables, "RESULTS", results)
    with pytest.raises(ValueError, match="does not name its CPU"):
        tables.render((REPO / "docs" / "guides" / "backends.md").read_text())
