"""Driving the web export's page in a real browser: Debian's Chromium, headless, through
Playwright (never a browser download). Development tooling for tests/ and benchmarks/, not part
of the installed package."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnist_edge.edge.errors import ConfigError, missing_dependency
from mnist_edge.edge.machine import has_module

CHROMIUM_ENV = "MNIST_EDGE_CHROMIUM"
CHROMIUM_PATHS = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")


def find_chromium() -> str | None:
    """A Chromium to drive: $MNIST_EDGE_CHROMIUM, else Debian's and other usual places."""
    if os.environ.get(CHROMIUM_ENV):
        return os.environ[CHROMIUM_ENV]
    found = [p for p in CHROMIUM_PATHS if Path(p).is_file()]
    return found[0] if found else shutil.which("chromium")


def has_playwright() -> bool:
    return has_module("playwright")


@dataclass
class PageRun:
    page: Any  # playwright's Page
    ready: bool
    messages: list[tuple[str, str]]  # (console type or "pageerror", text), growing
    loaded_with: int = 0  # how many messages there were when the page had loaded

    def errors(self) -> list[str]:
        """Every error the page logged so far."""
        return [text for kind, text in self.messages if kind in ("error", "pageerror")]

    def load_errors(self) -> list[str]:
        """The errors logged while the page loaded (not those of what was done with it)."""
        return [text for kind, text in self.messages[: self.loaded_with]
                if kind in ("error", "pageerror")]  # fmt: skip


# Chromium switches for the page's other paths: WebNN (the page probes navigator.ml) and WebGPU
# on SwiftShader, Chromium's software GPU (correct, not fast: for checking the WebGPU path)
WEBNN_ARGS = ("--enable-features=WebMachineLearningNeuralNetwork",)
SWIFTSHADER_WEBGPU_ARGS = ("--enable-unsafe-webgpu", "--enable-unsafe-swiftshader",
                           "--use-webgpu-adapter=swiftshader")  # fmt: skip


@contextmanager
def chromium(executable: str | None = None, args: tuple[str, ...] = ()) -> Iterator[Any]:
    """A headless Chromium driven by Playwright (a local browser: never a download)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise missing_dependency("playwright", "driving the page in a browser") from None
    exe = executable or find_chromium()
    if not exe:
        raise ConfigError(f"no Chromium found; install Debian's chromium or set ${CHROMIUM_ENV}")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe,
                                    args=["--no-sandbox", "--disable-gpu", *args])  # fmt: skip
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def open_page(
    url: str, browser: Any = None, timeout_s: float = 60, **context: Any
) -> Iterator[PageRun]:
    """Open the page (in `browser`, else a Chromium of its own; in a fresh browser context with
    Playwright's `context` options: viewport, has_touch, ...) and wait until it has loaded its
    model or failed."""
    if browser is None:
        with chromium() as own, open_page(url, own, timeout_s, **context) as run:
            yield run
        return
    page = browser.new_context(**context).new_page()
    try:
        page.set_default_timeout(timeout_s * 1000)
        messages: list[tuple[str, str]] = []
        page.on("console", lambda m: messages.append((m.type, m.text)))
        page.on("pageerror", lambda e: messages.append(("pageerror", str(e))))
        page.goto(url)
        page.wait_for_function("window.mnistEdge && window.mnistEdge.ready")
        ready = bool(page.evaluate("window.mnistEdge.ready"))
        yield PageRun(page, ready, messages, loaded_with=len(messages))
    finally:
        page.context.close()
