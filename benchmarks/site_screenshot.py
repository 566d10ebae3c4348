"""The documentation site's picture for the README: the site built into a scratch folder, opened
from the file system in Debian's chromium with the network off, the serving guide with a search
for "workers" open. Writes docs/assets/site.png.

    python benchmarks/site_screenshot.py [--out docs/assets/site.png]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import _report  # noqa: F401  (puts tests/ on the path, for the browser driver)
from devtools import browser as driver

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "docs" / "assets" / "site.png"))
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp) / "site"
        subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-f",
                        str(ROOT / "mkdocs.yml"), "-d", str(site)], check=True,
                       env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})  # fmt: skip
        with driver.chromium() as chromium:
            context = chromium.new_context(offline=True, viewport={"width": 1280, "height": 800})
            page = context.new_page()
            page.goto((site / "guides" / "serving.html").as_uri())
            page.keyboard.press("/")
            page.keyboard.type("workers", delay=20)
            page.wait_for_selector(".md-search-result__item", timeout=30_000)
            page.screenshot(path=a.out)
            context.close()
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
