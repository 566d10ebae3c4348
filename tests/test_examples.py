"""The code blocks of the documentation run: each page listed in PAGES has its ```bash and
```python blocks run in order, in a scratch folder of their own, as a reader would paste them.

What a reader's machine has and this one does not is given, not faked: `pip install` lines are
left out (the package is installed), `my_digit.jpg` is a real test digit written as a photo
would be (dark ink on light paper, JPEG), a server started in the background gets a free port
and is waited for before the next line calls it. Long jobs run on small data (SHRINK says how).
Output that depends on the machine is not compared, and timing verdicts are loosened (a
regression check on runs of 0.2 s is noise); each block must exit 0, and a block that prints
must print something. A line that asks for bf16 on a CPU without it must be refused as the
guide says: one line, exit 2. A block the page marks `<!-- not run here: why -->` is left out
(the README's two commands: CI runs them). Pages with blocks not yet run here are named by
test_every_page_with_code_is_run_or_marked, so that none is forgotten."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO
from PIL import Image

from mnist_edge.edge.web import ORT_WEB_ENV

BLOCK = re.compile(r"(?:<!-- not run here: ([^>]*) -->\n)?^```(bash|python)\n(.*?)^```",
                   re.S | re.M)  # fmt: skip
# pages whose blocks run here, each with the rewrites that make its long jobs short
# (training keeps the README's 10,000 images: on 1,000 the one-epoch model was too weak for the
# INT8 gate, which refused its INT8 file, rightly)
SHRINK = [
    (r"\bmnist-edge evaluate\b", "mnist-edge evaluate --test-limit 300"),
    (r"\bmnist-edge bench\b", "mnist-edge bench --duration 0.2 --batch-sizes 1 --threads 1"),
    (r"\bmnist-edge tune\b", "mnist-edge tune --duration 0.2 --test-limit 300 --threads 1"),
    (r"--duration [\d.]+", "--duration 0.2"),  # a page's own duration too
    (r"--scenario\b", "--queries 256 --idle-gap 0.2 --scenario"),
    (r"--max-regression \d+", "--max-regression 1000"),
    # bench's report, plot and scenarios: on ONNX Runtime alone, unless the line names backends
    # (a bare `bench` line, where a page has one, still measures every backend with a file)
    (
        r"(\bmnist-edge bench\b(?!.*--backends)(?=.*--(json|plot|scenario)\b))",
        r"\1 --backends onnxruntime",
    ),
]
# how many test digits export, quantize and parity judge, page by page: the guides that run them
# again and again, 1,000; the README's tour, whose one-epoch model's three INT8 files each pass
# the gate by a wide margin on 10,000 (agreement 99.8% for a 99% floor), 5,000
CHECKS_LIMIT = {"docs/guides/export.md": 1000, "docs/guides/int8.md": 1000,
                "docs/guides/ray-triton.md": 1000, "docs/guides/backends.md": 1000,
                "README.md": 5000}  # fmt: skip
TRAIN_SHRINK = "--epochs 1 --limit 500 --test-limit 100"  # for train lines naming no --limit
PAGES = ["README.md", "docs/guides/real-images.md", "docs/guides/export.md",
         "docs/guides/int8.md", "docs/guides/train.md", "docs/guides/serving.md",
         "docs/guides/browser.md", "docs/guides/ray-triton.md",
         "docs/guides/backends.md", "docs/guides/arm.md"]  # fmt: skip
SAME_AS = {"docs/start/tour.md": "README.md"}  # the same blocks (test_the_tour_is_the_readmes)


def blocks(page: str) -> list[tuple[str, str, str]]:
    """(language, code, why it is not run here, or "") of every block of the page."""
    return [(lang, code, why) for why, lang, code in BLOCK.findall((REPO / page).read_text())]


def free_port() -> int:
    """A free port whose next one is free too (a server's gRPC port, as 8000 and 8001)."""
    for _ in range(100):
        with socket.socket() as s, socket.socket() as t:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            try:
                t.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port
    raise RuntimeError("no two free ports in a row")


def rewrite(code: str, port: int, checks_limit: int | None = None, bf16: bool = True) -> str:
    """The block as it runs here: no pip installs, small data, a free port, a background
    server waited for (its pid kept, to stop it after the page). `checks_limit`: export,
    quantize and parity judge that many test digits, where the line names no limit. `bf16`:
    whether this CPU offers bf16; where it does not, a bf16 line must be refused in one line."""
    out = []
    for line in code.splitlines():
        if line.lstrip().startswith(("pip install", "make web-deps")):
            continue  # installs: the test environment has them (MNIST_EDGE_ORT_WEB: the npm one)
        serve = re.match(r"\s*mnist-edge serve\b(?!.*--port)", line)
        if serve:  # a server in the foreground (until Ctrl-C): in the background, on the port
            line = re.sub(r"^(\s*mnist-edge serve\b[^#]*?)\s*(#.*)?$", rf"\1 --port {port} &", line)
        line = line.replace("8000", str(port)).replace("8001", str(port + 1))
        for long, short in SHRINK:
            line = re.sub(long, short, line)
        checks = r"\bmnist-edge (export|quantize|parity)\b"
        if checks_limit and re.search(checks, line) and "--test-limit" not in line:
            line = re.sub(checks, rf"mnist-edge \1 --test-limit {checks_limit}", line)
        if "--limit" not in line:
            line = re.sub(
                r"(\bmnist-edge|-m mnist_edge) train\b", rf"\1 train {TRAIN_SHRINK}", line
            )
        if re.search(r"&\s*(#.*)?$", line):  # started in the background: wait until ready
            command = re.sub(r"&\s*(#.*)?$", "", line)
            line = (f"{command} > background.log 2>&1 & echo $! >> background.pids\n"
                    f"for _ in $(seq 600); do curl -sf localhost:{port}/v2/health/ready "
                    ">/dev/null && break; sleep 0.1; done")  # fmt: skip
        if not bf16 and "--precision bf16" in line:
            command = re.sub(r"\s*#.*$", "", line)
            line = (f"rc=0; {command} 2> refused.err || rc=$?\n"
                    'test "$rc" -eq 2 && test "$(wc -l < refused.err)" -eq 1')  # fmt: skip
        out.append(line)
    return "\n".join(out) + "\n"


def web_package() -> Path:
    """The onnxruntime-web package `make web-deps` installed beside the repository (or the one
    $MNIST_EDGE_ORT_WEB names): a failure under CI, which installs it, a skip elsewhere."""
    from mnist_edge.edge.errors import ConfigError
    from mnist_edge.edge.web import ORT_WEB_SEARCH, find_ort_web

    named = [Path(os.environ[ORT_WEB_ENV])] if os.environ.get(ORT_WEB_ENV) else []
    for folder in named + [REPO / rel for rel in ORT_WEB_SEARCH]:
        try:
            if folder.is_dir() and find_ort_web(folder):
                return folder
        except ConfigError:
            continue
    message = "onnxruntime-web is not installed (make web-deps)"
    if os.environ.get("CI"):
        pytest.fail(message + ": CI must run the browser guide")
    pytest.skip(message)


def photo(folder: Path) -> None:
    """my_digit.jpg: a test digit as a phone would see it, dark on light, JPEG."""
    from mnist_edge.edge.data import load_split

    digit = load_split("test", limit=1).images[0]  # a 7
    Image.fromarray(255 - digit).resize((112, 112)).save(folder / "my_digit.jpg", quality=90)
    Image.fromarray(255 - digit).resize((84, 84)).save(folder / "digit.png")


def real_images(folder: Path, exported: Path) -> None:
    """What the real-images guide's reader has: a few photos and scans (test digits, dark on
    light), and the models beside them: an exported model and its .ort, the packaged INT8."""
    import shutil

    from mnist_edge.edge.data import load_split
    from mnist_edge.edge.runtime import pretrained_path

    digits = load_split("test", limit=8).images
    files = ["digit.png", "another.jpg", "a.png", "b.png", "scans/1.png", "scans/2.png",
             "photos/1.jpg", "photos/2.jpg"]  # fmt: skip
    for digit, name in zip(digits, files, strict=True):
        (folder / name).parent.mkdir(exist_ok=True)
        Image.fromarray(255 - digit).resize((84, 84)).save(folder / name)
    for name in ("mnist_cnn.onnx", "mnist_cnn.ort"):
        shutil.copy(exported / name, folder / name)
    shutil.copy(pretrained_path(int8=True), folder / "mnist_cnn.int8.onnx")
    (folder / "exports").mkdir()
    shutil.copy(exported / "mnist_cnn.onnx", folder / "exports" / "mnist_cnn.onnx")


def backends_reader(folder: Path) -> None:
    """What the backends guide's reader has: a ten-epoch model exported in exports/ (its
    checkpoint, fp32 and INT8 ONNX files, as `make demo` leaves them), here the
    packaged model's, whose INT8 passes the gate (a one-epoch model is too unsure for it)."""
    import shutil
    from dataclasses import replace

    from mnist_edge.checkpoint import from_onnx, save
    from mnist_edge.edge.runtime import pretrained_path

    exports = folder / "exports"
    exports.mkdir()
    for int8 in (False, True):
        shutil.copy(pretrained_path(int8=int8), exports)
    save(replace(from_onnx(pretrained_path()), path=exports / "mnist_cnn.pt"))


def cpu_has_bf16() -> bool:
    from mnist_edge.edge.backends import openvino

    return "bf16" in openvino.precisions("onnx")


def trained_reader(folder: Path, trained: Path) -> None:
    """What a guide's reader has after `mnist-edge train`: exports/mnist_cnn.pt."""
    import shutil

    (folder / "exports").mkdir()
    shutil.copy(trained, folder / "exports" / "mnist_cnn.pt")


@pytest.mark.parametrize("page", PAGES)
def test_the_pages_code_blocks_run(page, tmp_path, mnist_dir, request):
    photo(tmp_path)
    if page == "docs/guides/real-images.md":
        real_images(tmp_path, request.getfixturevalue("exported"))
    if page in ("docs/guides/export.md", "docs/guides/int8.md", "docs/guides/ray-triton.md",
                "docs/guides/arm.md"):  # fmt: skip
        trained_reader(tmp_path, request.getfixturevalue("trained"))
    if page == "docs/guides/backends.md":
        backends_reader(tmp_path)
    env = {**os.environ, "MNIST_EDGE_DATA": str(mnist_dir), "PYTHONUNBUFFERED": "1",
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}  # fmt: skip
    if page == "docs/guides/browser.md":  # what `make web-deps` installed, found from the repo
        env[ORT_WEB_ENV] = str(web_package())
    port = free_port()
    bf16 = cpu_has_bf16()
    ran = 0
    try:
        for i, (lang, code, why) in enumerate(blocks(page)):
            if why:
                continue
            script = tmp_path / f"block{i}.{'sh' if lang == 'bash' else 'py'}"
            script.write_text(("set -euo pipefail\n" if lang == "bash" else "")
                              + rewrite(code, port, CHECKS_LIMIT.get(page), bf16))  # fmt: skip
            cmd = ["bash", str(script)] if lang == "bash" else [sys.executable, str(script)]
            r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                               timeout=900)  # fmt: skip
            assert r.returncode == 0, f"{page} block {i} ({lang}):\n{code}\n{r.stdout[-3000:]}" \
                                      f"\n{r.stderr[-3000:]}"  # fmt: skip
            if "print(" in code or "curl" in code:
                assert r.stdout.strip(), f"{page} block {i} printed nothing"
            ran += 1
        if page == "docs/guides/browser.md":  # the page and its model, from the server
            index = subprocess.run(["curl", "-sf", f"http://127.0.0.1:{port}/"],
                                   capture_output=True, text=True, timeout=60)  # fmt: skip
            assert index.returncode == 0 and "<html" in index.stdout.lower()
    finally:
        pids = tmp_path / "background.pids"
        for pid in pids.read_text().split() if pids.exists() else []:
            try:
                os.kill(int(pid), signal.SIGTERM)
            except ProcessLookupError:
                pass
    assert ran == sum(not why for _, _, why in blocks(page)) and ran > 0


def test_the_tour_is_the_readmes():
    """The README's tour and the site's are the same blocks (one is run above, both are)."""
    tour = [b for b in blocks("README.md") if not b[2]]
    assert [b[:2] for b in blocks("docs/start/tour.md")] == [b[:2] for b in tour]


def test_every_page_with_code_is_run_or_marked():
    """A block runs here, or its page says why not (and what runs it instead)."""
    docs = sorted((REPO / "docs").rglob("*.md"))
    pages = ["README.md", *(str(p.relative_to(REPO)) for p in docs)]
    runnable = {p for p in pages if any(not why for _, _, why in blocks(p))}
    known = set(PAGES) | set(SAME_AS)
    assert runnable == known, runnable ^ known


def test_the_rewrites_shrink_and_wait():
    code = "mnist-edge evaluate  # a\nmnist-edge serve --port 8000 &  # x\n"
    out = rewrite(code + "pip install mnist-edge\n", 1234)
    assert "mnist-edge evaluate --test-limit 300  # a" in out and "pip install" not in out
    assert re.search(r"--port 1234\s+> background.log", out) and "health/ready" in out
    web = rewrite("make web-deps   # once\nmnist-edge serve      # http://127.0.0.1:8000/\n", 1234)
    assert "make" not in web and re.search(r"mnist-edge serve --port 1234\s+> background.log", web)
    assert out.count("1234") >= 2
    train = rewrite("mnist-edge train\nmnist-edge train --limit 10000\n", 1234)
    assert f"mnist-edge train {TRAIN_SHRINK}" in train and "train --limit 10000" in train
    checks = "mnist-edge export --format onnx\nmnist-edge parity --test-limit 50\n"
    assert "--test-limit" not in rewrite(checks, 1234).splitlines()[0]
    shrunk = rewrite(checks, 1234, checks_limit=1000)
    assert "export --test-limit 1000 --format onnx" in shrunk and "--test-limit 50" in shrunk
    assert "--test-limit 1000" not in shrunk.splitlines()[1]  # a limit the page gives stays
    assert "8001" not in rewrite("client('127.0.0.1:8001')\n", 1234)  # gRPC: the next port
    bench = rewrite("mnist-edge bench --compare b.json --max-regression 20 --scenario all\n", 1)
    assert "--duration 5" not in rewrite("mnist-edge bench --duration 5\n", 1)
    assert "--backends onnxruntime" in rewrite("mnist-edge bench --plot p.png\n", 1)
    assert "--backends" not in rewrite("mnist-edge bench  # every backend\n", 1)
    assert rewrite("mnist-edge bench --json a --backends x\n", 1).count("--backends") == 1
    assert "--max-regression 1000" in bench and "--queries 256 --idle-gap 0.2 --scenario" in bench
    bf16 = "mnist-edge parity --precision bf16  # optional\n"
    assert rewrite(bf16, 1234) == bf16
    refused = rewrite(bf16, 1234, bf16=False)
    assert "|| rc=$?" in refused and '"$rc" -eq 2' in refused and "optional" not in refused


# every mnist-edge command line in every block, run here or not: `mnist-edge`, `python -m
# mnist_edge` and torchrun's `-m mnist_edge`, read as a shell reads it (quotes, comments,
# continuations, and the operators ; & | ( ) > < that end a command)


def documented_commands(page: str) -> list[list[str]]:
    """The argument lists of the page's mnist-edge command lines (shell blocks only)."""
    import shlex

    found = []
    for lang, code, _ in blocks(page):
        if lang != "bash":
            continue
        pending = ""
        for line in re.sub(r"\\\n", " ", code).splitlines():
            lexer = shlex.shlex(pending + line, posix=True, punctuation_chars=True)
            lexer.whitespace_split = True
            try:
                tokens, current, pending = list(lexer), None, ""
            except ValueError:  # a quote open across lines: read on
                pending += line + "\n"
                continue
            for i, token in enumerate(tokens):
                if current is not None and token and set(token) <= set(";&|()<>"):
                    found.append(current)
                    current = None
                elif current is not None:
                    current.append(token)
                elif (token == "mnist-edge" and (i == 0 or set(tokens[i - 1]) <= set(";&|("))
                      or (token == "mnist_edge" and tokens[i - 1] == "-m")):  # fmt: skip
                    current = []
            if current is not None:
                found.append(current)
    return found


def check_command(args: list[str]) -> str | None:
    """Why `mnist-edge ARGS` would be refused before it ran (a command, an option or a
    choice that does not exist, an option without its value), or None."""
    import click
    import typer

    from mnist_edge.cli import app

    group = typer.main.get_command(app)
    ctx = click.Context(group, info_name="mnist-edge")
    if not args or group.get_command(ctx, args[0]) is None:
        return f"no command {args[:1]}"
    command = group.get_command(ctx, args[0])
    options = {}
    for p in command.params:
        if p.param_type_name == "option":
            for opt in p.opts + p.secondary_opts:
                options[opt] = p
    rest = args[1:]
    while rest:
        token = rest.pop(0)
        if token.startswith("[") or token.endswith("]"):
            return f"{token!r}: brackets are not shell (a reader's shell takes them as a file)"
        if not token.startswith("-") or token == "-":
            continue  # an argument
        flag, _, inline = token.partition("=")
        p = options.get(flag)
        if p is None:
            return f"{args[0]}: no option {flag}"
        if p.is_flag or p.count:
            continue
        if not inline and not rest:
            return f"{args[0]} {flag}: its value is missing"
        value = inline or rest.pop(0)
        choices = getattr(p.type, "choices", None)
        if choices and value not in choices:
            return f"{args[0]} {flag}: {value!r} is not one of {list(choices)}"
    return None


ALL_PAGES = [
    "README.md",
    *(str(p.relative_to(REPO)) for p in sorted((REPO / "docs").rglob("*.md"))),
]


@pytest.mark.parametrize("page", [p for p in ALL_PAGES if documented_commands(p)])
def test_every_documented_command_line_is_one_the_cli_takes(page):
    """Blocks that cannot run here (a GPU, two machines, a cluster) are checked this far: each
    command, option and choice they name exists, so a renamed flag fails here, not on a reader."""
    problems = [f"mnist-edge {' '.join(a)}: {why}" for a in documented_commands(page)
                if (why := check_command(a))]  # fmt: skip
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("line, why", [
    ("mnist-edge trian", "no command"),
    ("mnist-edge train --epoch 3", "no option --epoch"),
    ("mnist-edge evaluate --checkpoint x.pt [--json eval.json]", "brackets"),
    ("mnist-edge export --format", "value is missing"),
])  # fmt: skip
def test_the_command_line_check_catches(line, why, tmp_path, monkeypatch):
    page = tmp_path / "page.md"
    page.write_text(f"```bash\n{line}   # a comment\n```\n")
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    (args,) = documented_commands("page.md")
    assert why in (check_command(args) or "")
