"""The documentation site builds strictly (a warning, a broken link or a missing reference fails
it), offline, and its reference is the code's: every command and option of the CLI, every
error class, every format and every REST route appear in the built pages. A broken link put
into a copy of the pages fails the build (the check can fail)."""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

pytest.importorskip("mkdocs", reason="mkdocs (the dev extra)")
pytest.importorskip("material", reason="mkdocs-material (the dev extra)")


def build(root: Path, out: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f",
                           str(root / "mkdocs.yml"), "-d", str(out)], capture_output=True,
                          text=True, timeout=300, env=env, cwd=root)  # fmt: skip


def text_of(page: Path) -> str:
    t = re.sub(r"<script.*?</script>", " ", page.read_text(), flags=re.S)
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", t)))


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    r = build(REPO, out)
    assert r.returncode == 0, r.stdout + r.stderr
    return out


def test_the_site_builds_strictly_and_offline(site):
    pages = list(site.rglob("*.html"))
    assert len(pages) >= 20
    for page in pages:  # nothing loaded from another host: no CDN script, style or font
        text = page.read_text()
        loaded = re.findall(r'<script[^>]+src="(https?://[^"]+)"', text) + re.findall(
            r'<link[^>]+href="(https?://[^"]+\.(?:css|woff2?|ttf)[^"]*)"', text)  # fmt: skip
        assert loaded == [], (page, loaded)
    assert (site / "search" / "search_index.js").is_file()  # the offline plugin's index


def test_navigation_and_search_work_offline_in_the_browser(site, tmp_path):
    """Chromium with the network off opens the built site from the file system: the navigation
    leads to the serving guide, and search finds it; no request leaves the machine."""
    pytest.importorskip("playwright", reason="playwright (the dev extra)")
    from devtools import browser as driver

    if not driver.find_chromium():
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (make browser): CI must run the browser tests")
        pytest.skip("chromium is not installed (make browser)")
    with driver.chromium() as chromium:
        context = chromium.new_context(offline=True, viewport={"width": 1280, "height": 900})
        page = context.new_page()
        problems: list[str] = []
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.on("request", lambda r: problems.append(r.url) if r.url.startswith("http") else None)
        page.goto((site / "index.html").as_uri())
        page.locator("nav.md-nav--primary a", has_text="Serve it to applications").first.click()
        page.wait_for_load_state()
        assert page.url.endswith("guides/serving.html"), page.url
        page.keyboard.press("/")
        page.keyboard.type("workers", delay=20)
        page.wait_for_selector(".md-search-result__item", timeout=30_000)
        hits = page.locator(".md-search-result__item a").evaluate_all("l => l.map(a => a.href)")
        assert any("guides/serving.html" in h for h in hits), hits
        page.screenshot(path=str(tmp_path / "site.png"))
        context.close()
    assert problems == []


def test_the_cli_reference_is_the_apps_every_command_and_option(site):
    import click
    import typer

    from mnist_edge.cli import app

    text = text_of(site / "reference" / "cli.html")
    group = typer.main.get_command(app)
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        assert f"mnist-edge {name}" in text, name
        for p in group.get_command(ctx, name).params:
            for opt in getattr(p, "opts", []):
                if opt.startswith("--") and opt != "--help":
                    assert opt in text, (name, opt)


def test_errors_formats_and_routes_come_from_the_code(site):
    from mnist_edge.edge import errors, layout

    text = text_of(site / "reference" / "errors.html")
    for name, cls in vars(errors).items():
        if isinstance(cls, type) and issubclass(cls, errors.MnistEdgeError):
            assert name in text, name
    formats = text_of(site / "reference" / "formats.html")
    assert all(f.filename in formats for f in layout.FORMATS.values())
    routes = text_of(site / "reference" / "endpoints.html")
    for path in ("/v2/repository/index", "/v2/models/{m}[/versions/{v}]/infer", "/metrics"):
        assert path in routes, path


def test_a_broken_link_fails_the_build(tmp_path):
    root = tmp_path / "repo"
    shutil.copytree(REPO / "docs", root / "docs", symlinks=True)
    shutil.copy(REPO / "mkdocs.yml", root / "mkdocs.yml")
    (root / "tests").mkdir()
    shutil.copy(REPO / "tests" / "test_floors.py", root / "tests" / "test_floors.py")
    (root / "benchmarks" / "results").mkdir(parents=True)
    shutil.copy(REPO / "benchmarks" / "results" / "web_page.png",
                root / "benchmarks" / "results" / "web_page.png")  # fmt: skip
    page = root / "docs" / "guides" / "serving.md"
    page.write_text(page.read_text() + "\nSee [nowhere](no-such-page.md).\n")
    r = build(root, tmp_path / "out")
    assert r.returncode != 0 and "no-such-page.md" in r.stdout + r.stderr
