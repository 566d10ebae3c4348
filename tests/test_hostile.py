"""Every command against every kind of bad input: one `error:` line naming the file or flag,
exit 2, no traceback, and nothing new or changed left behind.

The matrix is built from (command, where the bad thing goes) x (kind of bad thing). Inputs a
user may reasonably give are not here: a folder for `predict` is valid (its images are read),
and a huge but finite --epochs is a long run, not an error.
"""

import json
import os
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_clean_error, cli

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def png_claiming(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))  # fmt: skip


@pytest.fixture(scope="module")
def bad(tmp_path_factory, trained, exported):
    """One file (or folder) of every hostile kind, made once."""
    import torch
    from PIL import Image

    d = tmp_path_factory.mktemp("hostile")
    files = {
        "missing": d / "absent.bin",
        "empty": d / "empty.bin",
        "random bytes": d / "random.bin",
        "truncated model": d / "truncated.onnx",
        "truncated checkpoint": d / "truncated.pt",
        "image": d / "image.png",
        "json": d / "config.json",
        "folder": d / "a_folder",
        "other-architecture checkpoint": d / "other.pt",
        "foreign onnx": d / "foreign.onnx",
        "bomb image": d / "bomb.png",
        "model as image": d / "model_as_image.png",
    }
    files["empty"].write_bytes(b"")
    files["random bytes"].write_bytes(np.random.default_rng(0).bytes(4096))
    onnx_bytes = (exported / "mnist_cnn.onnx").read_bytes()
    files["truncated model"].write_bytes(onnx_bytes[: len(onnx_bytes) // 2])
    ckpt = trained.read_bytes()
    files["truncated checkpoint"].write_bytes(ckpt[: len(ckpt) // 2])
    Image.new("L", (28, 28), 255).save(files["image"])
    files["json"].write_text(json.dumps({"model_state": {}}))
    files["folder"].mkdir()
    torch.save({"conv1.weight": torch.zeros(8, 1, 3, 3), "fc.weight": torch.zeros(10, 5)},
               files["other-architecture checkpoint"])  # fmt: skip
    from mnist_edge.model import MnistCNN

    torch.onnx.export(MnistCNN(image_size=32).eval(), (torch.zeros(2, 1, 32, 32),),
                      str(files["foreign onnx"]), dynamo=False)  # fmt: skip
    files["bomb image"].write_bytes(png_claiming(20_000, 20_000))
    files["model as image"].write_bytes(onnx_bytes)
    return files


MODEL_KINDS = ["missing", "empty", "random bytes", "truncated model", "image", "json", "folder",
               "foreign onnx"]  # fmt: skip
CHECKPOINT_KINDS = ["missing", "empty", "random bytes", "truncated checkpoint", "image", "json",
                    "folder", "other-architecture checkpoint"]  # fmt: skip
IMAGE_KINDS = ["missing", "empty", "random bytes", "json", "bomb image", "model as image"]

# (command line with {bad} where the hostile path goes, kinds that apply)
FILE_CASES = [
    (["evaluate", "--checkpoint", "{bad}"], CHECKPOINT_KINDS),
    (["evaluate", "--model", "{bad}"], MODEL_KINDS),
    (["export", "--checkpoint", "{bad}", "--output-dir", "{out}"], CHECKPOINT_KINDS),
    (["quantize", "--model", "{bad}", "--output", "{out}/q.onnx", "--checkpoint", "{ckpt}"],
     MODEL_KINDS),
    (["parity", "{bad}", "--checkpoint", "{ckpt}"], MODEL_KINDS),
    (["parity", "{onnx}", "--reference", "{bad}"], MODEL_KINDS),
    (["parity", "--layers", "{bad}", "--checkpoint", "{ckpt}"], MODEL_KINDS),
    (["predict", "{bad}", "--model", "{onnx}"], IMAGE_KINDS),
    (["predict", "{image}", "--model", "{bad}"], MODEL_KINDS),
    (["bench", "--model", "{bad}", "--backends", "onnxruntime"], MODEL_KINDS),
    (["bench", "--model", "{onnx}", "--compare", "{bad}"], ["missing", "empty", "random bytes",
                                                            "json", "folder", "image"]),
    (["train", "--data-dir", "{bad}", "--output-dir", "{out}"], ["missing", "empty", "folder",
                                                                 "image"]),
    (["serve", "{bad}"], ["missing", "empty", "random bytes", "image", "folder"]),
    (["export", "--format", "web", "--ort-web", "{bad}", "--web-dir", "{out}/web"],
     ["missing", "empty", "random bytes", "json", "folder"]),
]  # fmt: skip


def _cases():
    for args, kinds in FILE_CASES:
        for kind in kinds:
            yield pytest.param(args, kind, id=f"{' '.join(args[:2])}-{kind}")


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file below root, with its size and modification time."""
    return {
        str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()
    }


@pytest.mark.parametrize("args, kind", list(_cases()))
def test_bad_files(bad, trained, exported, mnist_dir, tmp_path, args, kind):
    out = tmp_path / "out"
    out.mkdir()
    values = {"bad": bad[kind], "out": out, "ckpt": trained, "onnx": exported / "mnist_cnn.onnx",
              "image": bad["image"]}  # fmt: skip
    argv = [a.format(**values) for a in args]
    if "--data-dir" not in argv and args[0] not in ("predict", "serve"):
        argv += ["--data-dir", str(mnist_dir)]
    before = snapshot(tmp_path), snapshot(bad["folder"].parent), snapshot(exported)
    result = cli(*argv, "--test-limit", "50") if args[0] in ("evaluate", "parity") else cli(*argv)
    name = Path(values["bad"]).name
    assert_clean_error(result, name if kind != "missing" else "absent")
    after = snapshot(tmp_path), snapshot(bad["folder"].parent), snapshot(exported)
    assert after == before  # nothing written, nothing changed


# (command, flag, bad values, what the error line must mention)
FLAG_CASES = [
    ("train", "--epochs", ["0", "-1"], "epochs"),
    ("train", "--batch-size", ["0", "-5"], "batch size"),
    ("train", "--learning-rate", ["0", "-1", "nan", "inf"], "learning rate"),
    ("train", "--weight-decay", ["-1", "nan", "inf"], "weight decay"),
    ("train", "--limit", ["0", "-3", "99999999"], "limit"),
    ("train", "--threads", ["0", "-1", "100000"], "threads"),
    ("train", "--recipe", ["fancy"], "recipe"),
    ("train", "--device", ["tpu"], "device"),
    ("evaluate", "--test-limit", ["0", "-1", "99999999"], "limit"),
    ("export", "--opset", ["0", "99", "-1"], "opset"),
    ("export", "--format", ["tflite", ","], "format"),
    ("quantize", "--calibration-size", ["0", "-1", "99999999"], "calibration size"),
    ("quantize", "--max-accuracy-drop", ["-1", "nan"], "drop"),
    ("quantize", "--min-agreement", ["101", "-1", "nan"], "agreement"),
    ("parity", "--atol", ["-1", "nan", "inf"], "atol"),
    ("parity", "--rtol", ["-1", "nan"], "rtol"),
    ("parity", "--layers --min-sqnr", ["nan"], "sqnr"),
    ("predict", "--top", ["0", "11", "-1"], "top"),
    ("predict", "--threads", ["0", "-2", "100000"], "threads"),
    ("bench", "--batch-sizes", ["0", "-1", "a,b", "1,,x"], "batch"),
    ("bench", "--threads", ["0", "x"], "thread"),
    ("bench", "--duration", ["0", "-1", "nan", "inf"], "duration"),
    ("bench", "--iterations", ["0", "-1"], "iterations"),
    ("bench", "--warmup", ["-1"], "warmup"),
    ("bench", "--qps", ["0", "nan", "inf"], "qps"),
    ("bench", "--latency-bound-ms", ["0", "nan"], "latency bound"),
    ("bench", "--scenario", ["nonsense"], "scenario"),
    ("bench", "--max-regression", ["-5", "nan"], "regression"),
    ("serve", "--port", ["-1", "65536", "x"], "port"),
]


def _flag_cases():
    for command, flag, values, words in FLAG_CASES:
        for v in values:
            yield pytest.param(command, flag, v, words, id=f"{command} {flag} {v}")


@pytest.mark.parametrize("command, flag, value, words", list(_flag_cases()))
def test_bad_numbers_and_choices(
    trained, exported, mnist_dir, tmp_path, command, flag, value, words
):
    base = {
        "train": ["--output-dir", tmp_path, "--limit", 64, "--epochs", 1],
        "evaluate": ["--checkpoint", trained],
        "export": ["--checkpoint", trained, "--output-dir", tmp_path],
        "quantize": ["--model", exported / "mnist_cnn.onnx", "--output", tmp_path / "q.onnx"],
        "parity": [exported / "mnist_cnn.onnx", "--checkpoint", trained, "--test-limit", 20],
        "predict": [tmp_path / "x.png", "--model", exported / "mnist_cnn.onnx"],
        "bench": ["--model", exported / "mnist_cnn.onnx", "--backends", "onnxruntime",
                  "--iterations", 1, "--json", tmp_path / "b.json"],
        "serve": [tmp_path / "web"],
    }[command]  # fmt: skip
    from PIL import Image

    Image.fromarray(np.eye(28, dtype=np.uint8) * 255).save(tmp_path / "x.png")
    base = [str(b) for b in base]
    if flag in base:  # the flag under test replaces the base's own value
        i = base.index(flag)
        del base[i : i + 2]
    if command == "serve":  # a web folder to serve, so that only the flag is wrong
        (tmp_path / "web").mkdir()
        (tmp_path / "web" / "index.html").write_text("<html></html>")
    before = snapshot(tmp_path)
    data = [] if command in ("predict", "serve") else ["--data-dir", mnist_dir]
    result = cli(command, *base, *flag.split(), value, *data)
    assert result.exit_code == 2, result.output
    assert_clean_error(result, "")
    assert words in result.stderr.lower() or flag in result.stderr, result.stderr
    assert snapshot(tmp_path) == before


def _mount_tmpfs(path: Path, size: str) -> subprocess.CompletedProcess:
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True)  # fmt: skip


@pytest.fixture(scope="session")
def can_mount(tmp_path_factory) -> str | None:
    """None when this process may mount a filesystem, else why not: not root, or root without
    the right to mount (a container without CAP_SYS_ADMIN). Probed once, by mounting."""
    if not IS_ROOT:
        return "not root"
    probe = tmp_path_factory.mktemp("mount-probe")
    r = _mount_tmpfs(probe, "64k")
    if r.returncode != 0:
        said = r.stderr.strip().splitlines() or [f"exit {r.returncode}"]
        return f"no right to mount here ({said[0]})"
    subprocess.run(["umount", str(probe)], check=True)
    return None


def _tmpfs(path: Path, size: str, can_mount: str | None) -> Path:
    """A fresh tmpfs of `size` mounted at `path`. Where this process may not mount one the
    test is skipped, saying why (the file-size-limit cases below still run there); where it
    may, a failed mount is a failure."""
    if can_mount is not None:
        pytest.skip(f"a full or read-only filesystem needs a tmpfs mount: {can_mount}")
    path.mkdir()
    r = _mount_tmpfs(path, size)
    assert r.returncode == 0, f"mount -t tmpfs failed although the probe mounted one: {r.stderr}"
    return path


@pytest.fixture
def full_disk(tmp_path, can_mount):
    """A small filesystem, filled to the last byte."""
    disk = _tmpfs(tmp_path / "full", "256k", can_mount)
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:  # ENOSPC: full
        pass
    finally:
        os.close(fd)
    yield disk
    _umount(disk)


@pytest.fixture
def read_only(tmp_path, can_mount):
    """A read-only filesystem (root ignores permission bits, so chmod would not do)."""
    folder = _tmpfs(tmp_path / "ro", "1m", can_mount)
    subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
    yield folder
    _umount(folder)


def _umount(path: Path) -> None:
    """Unmount; "busy" means the command left a file open there (a leaked handle): a failure."""
    r = subprocess.run(["umount", str(path)], capture_output=True, text=True)
    if r.returncode:
        subprocess.run(["umount", "-l", str(path)], check=False)
        pytest.fail(f"cannot unmount {path} ({r.stderr.strip()}): a file there is still open")


@pytest.mark.parametrize("where", ["full_disk", "read_only", "under_a_file"])
@pytest.mark.parametrize("command", ["train", "export", "quantize", "evaluate-json", "bench-json"])
def test_unwritable_outputs(request, trained, exported, mnist_dir, tmp_path, where, command):
    if where == "under_a_file":
        (tmp_path / "file").write_text("")
        target = tmp_path / "file" / "out"
    else:
        target = request.getfixturevalue(where) / "out"
    argv = {
        "train": ["train", "--epochs", 1, "--limit", 64, "--test-limit", 20, "--output-dir",
                  target],
        "export": ["export", "--checkpoint", trained, "--output-dir", target, "--no-parity"],
        "quantize": ["quantize", "--model", exported / "mnist_cnn.onnx", "--output",
                     target / "q.onnx", "--no-parity", "--test-limit", 50,
                     "--calibration-size", 32, "--max-accuracy-drop", 100, "--min-agreement", 0],
        "evaluate-json": ["evaluate", "--checkpoint", trained, "--test-limit", 20, "--json",
                          target / "e.json"],
        "bench-json": ["bench", "--model", exported / "mnist_cnn.onnx", "--backends",
                       "onnxruntime", "--batch-sizes", 1, "--threads", 1, "--iterations", 1,
                       "--json", target / "b.json"],
    }[command]  # fmt: skip
    before = snapshot(exported)
    result = cli(*argv, "--data-dir", mnist_dir)
    assert_clean_error(result, "out")
    assert snapshot(exported) == before
    leftovers = [p for p in tmp_path.rglob("*") if p.is_file() and p.name not in ("file", "filler")]
    assert leftovers == []


@pytest.mark.parametrize("mode", ["CMYK", "I;16", "P", "LA", "1", "F", "RGBA", "I"])
def test_unusual_image_modes_are_read(exported, mnist_dir, tmp_path, mode):
    from PIL import Image

    from mnist_edge.edge.data import load_split

    digit = 255 - load_split("test", mnist_dir, 1).images[0]  # dark ink on white
    im = Image.fromarray(digit).resize((56, 56))
    if mode == "I;16":
        im = Image.fromarray(np.asarray(im).astype(np.uint16) * 257)
    elif mode in ("F", "I"):
        im = Image.fromarray(np.asarray(im).astype(np.float32 if mode == "F" else np.int32))
    else:
        im = im.convert(mode)
    path = tmp_path / ("d.tiff" if mode in ("F", "I", "CMYK") else "d.png")
    im.save(path)
    result = cli("predict", path, "--model", exported / "mnist_cnn.onnx")
    assert result.exit_code == 0, result.output
    plain = tmp_path / "plain.png"
    Image.fromarray(digit).resize((56, 56)).save(plain)
    want = cli("predict", plain, "--model", exported / "mnist_cnn.onnx").stdout.split()[1]
    assert result.stdout.split()[1] == want


def _run_and_interrupt(
    argv: list[str], phase: str, cwd: Path, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Start `mnist-edge ARGV` and send it SIGINT as soon as it reports reaching `phase`
    (mnist_edge.edge.phases: marks on a pipe), whatever the speed of this CPU; the phases it
    reported come back with its result. A background job of a non-interactive shell starts with
    SIGINT ignored; the child gets the default back first. Its output goes to files, so that a
    full pipe never holds it back while the marks are read."""
    import signal
    import sys
    import tempfile

    read, write = os.pipe()
    env = {**(env or os.environ), "MNIST_EDGE_PHASE_FD": str(write)}
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mnist_edge", *argv], cwd=cwd, stdout=out, stderr=err,
            text=True, env=env, pass_fds=(write,),
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )  # fmt: skip
        os.close(write)
        seen = []
        with os.fdopen(read) as marks:
            for line in marks:  # until the process ends and the pipe closes
                seen.append(line.strip())
                if seen[-1] == phase and seen.count(phase) == 1:
                    proc.send_signal(signal.SIGINT)
        proc.wait(timeout=600)
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(argv, proc.returncode, out.read(), err.read()), seen


# Each command interrupted at phases it reports: early, in its main work, in its checks, and
# at the very end ("exit": the last moment before the process ends, where an interpreter's own
# shutdown once turned a Ctrl-C into death by signal or into exit 130 without its line).
CTRL_C_PHASES = [("train", p) for p in ("start", "epoch 1", "checkpoint", "done", "exit")] + [
    ("export", p) for p in ("start", "export onnx", "export pt2", "parity", "exit")] + [
    ("quantize", p) for p in ("data", "quantized", "parity", "exit")]  # fmt: skip


@pytest.mark.parametrize("command, phase", CTRL_C_PHASES)
def test_ctrl_c_exits_130_and_leaves_only_complete_files(
    trained, exported, mnist_dir, tmp_path, command, phase
):
    out = tmp_path / "out"
    argv = {
        "train": ["train", "--epochs", "2", "--limit", "2000", "--test-limit", "300"],
        "export": ["export", "--format", "all", "--checkpoint", str(trained),
                   "--test-limit", "500"],
        "quantize": ["quantize", "--model", str(exported / "mnist_cnn.onnx"), "--output",
                     str(out / "mnist_cnn.int8.onnx"), "--checkpoint", str(trained),
                     "--test-limit", "1000"],  # the synthetic stand-in has 1,000
    }[command]  # fmt: skip
    if command != "quantize":
        argv += ["--output-dir", str(out)]
    r, seen = _run_and_interrupt([*argv, "--data-dir", str(mnist_dir)], phase, tmp_path)
    assert phase in seen, f"{command} never reported {phase!r}; it reported {seen}"
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    if phase in ("done", "exit") and r.returncode == 0:  # the work was done: a success, whole
        assert lines[-1:] != ["error: interrupted"], r.stderr
    else:  # a Ctrl-C during the work is never swallowed
        assert r.returncode == 130, (r.returncode, r.stderr[-2000:])  # never -2
        assert lines and lines[-1] == "error: interrupted" and "Traceback" not in r.stderr
    files = [p for p in out.rglob("*") if p.is_file()] if out.exists() else []
    temp = [p for p in out.rglob("*") if p.name.startswith(".tmp-")] if out.exists() else []
    assert temp == []  # no half-written file, no temporary folder
    for p in files:  # whatever is there is complete, read by what reads its format
        _load_whole(p)


def _load_whole(p: Path) -> None:
    from mnist_edge.edge.layout import format_of

    if p.suffix == ".json":
        json.loads(p.read_text())
    elif p.suffix == ".config":  # the ORT operator list: text lines
        assert p.read_text().strip()
    elif p.suffix in (".pt", ".pt2", ".onnx", ".ort"):
        if format_of(p) == "checkpoint":
            from mnist_edge.checkpoint import load

            load(p)
        else:
            from mnist_edge.edge.runners import load_runner

            load_runner(p)(np.zeros((1, 1, 28, 28), np.float32))
    else:  # the web page's files, written into a folder renamed in whole
        assert p.stat().st_size > 0 or p.suffix == ".txt", p


def _file_size_limit(limit: int):
    """For the child process: writes past `limit` bytes fail with EFBIG (SIGXFSZ ignored)."""
    import resource
    import signal

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    return apply


@pytest.mark.parametrize("command", ["train", "export", "quantize"])
def test_a_write_cut_short_leaves_nothing(trained, exported, mnist_dir, tmp_path, command):
    """A write that fails half-way, on any machine and with no right to mount a filesystem: a
    file-size limit (ulimit -f 256 KiB) fails the write of every artifact as a full disk would,
    and the command says so in one line, exit 2, leaving no file behind."""
    import sys

    out = tmp_path / "out"
    argv = {
        "train": ["train", "--epochs", "1", "--limit", "64", "--test-limit", "20",
                  "--output-dir", str(out)],
        "export": ["export", "--checkpoint", str(trained), "--output-dir", str(out),
                   "--no-parity"],
        "quantize": ["quantize", "--model", str(exported / "mnist_cnn.onnx"), "--output",
                     str(out / "q.onnx"), "--no-parity", "--test-limit", "50",
                     "--calibration-size", "32", "--max-accuracy-drop", "100",
                     "--min-agreement", "0"],
    }[command]  # fmt: skip
    r = subprocess.run([sys.executable, "-m", "mnist_edge", *argv, "--data-dir", str(mnist_dir)],
                       capture_output=True, text=True, timeout=600, cwd=tmp_path,
                       preexec_fn=_file_size_limit(256 * 1024))  # fmt: skip
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert "Traceback" not in r.stderr and "too large" in lines[0].lower(), lines[0]
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_ctrl_c_during_a_pooled_folder_run_leaves_no_output_and_no_worker(exported, tmp_path):
    """predict on a folder with worker processes: Ctrl-C ends with one error line and exit 130,
    no output file (or temp file), and every worker gone."""
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    digit = Image.fromarray(255 - np.eye(28, dtype=np.uint8) * 255).resize((120, 120))
    for i in range(3000):
        digit.save(images / f"{i:05d}.png")
    out = tmp_path / "rows.csv"
    mark = f"MNIST_EDGE_TEST_RUN={tmp_path.name}-{os.getpid()}"  # inherited by the workers
    env = {**os.environ, mark.split("=")[0]: mark.split("=")[1]}
    argv = ["predict", str(images), "--model", str(exported / "mnist_cnn.onnx"), "--output",
            str(out), "--workers", "2"]  # fmt: skip
    r, seen = _run_and_interrupt(argv, "predicting", tmp_path, env)
    assert "predicting" in seen and r.returncode == 130, (seen, r.stderr[-2000:])
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert lines[-1] == "error: interrupted" and "Traceback" not in r.stderr
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]
    import time

    for _ in range(50):  # the workers end with their parent (at most a chunk later)
        if not _processes_with(mark):
            break
        time.sleep(0.1)
    assert _processes_with(mark) == []


def _processes_with(mark: str) -> list[str]:
    """Processes whose environment holds `mark`."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if mark.encode() in environ.read_bytes():
                found.append(environ.parent.name)
        except OSError:
            pass
    return found
