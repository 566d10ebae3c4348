"""The browser target: a static web export on onnxruntime-web, and a server for it (no torch).

`export_web` writes a self-contained folder: the page (mnist_edge/edge/webapp/), the ONNX model (and
its INT8 version when there is one), `model.json` with the model's own metadata (normalisation,
labels, accuracy, source checkpoint) and a few inputs with the outputs native ONNX Runtime gives
for them (the page checks each way it can run the model against those before using it), a
service worker that keeps the page working offline, and the WebAssembly build of a pinned
onnxruntime-web taken from an installed npm package (with its WebNN/WebGPU bundle when the
package has it). Without one, the page loads that same version from a public CDN.

`make_server` serves such a folder the way onnxruntime-web needs: cross-origin isolated (COOP +
COEP, so that WebAssembly threads work), `.wasm`/`.mjs` with their MIME types, 404 for anything
missing (never an HTML page in place of a wasm), nothing outside the folder, no listings.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import policy, spec
from .backends.onnxruntime import load_session, model_metadata
from .errors import ArtifactError, ConfigError, OutputError, reading, reason
from .files import sha256
from .layout import Layout
from .runtime import pretrained_path

ORT_WEB_VERSION = "1.30.0"  # the pinned onnxruntime-web (Makefile: `make web-deps`)
ORT_WEB_FILES = ("ort.wasm.min.js", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
# the bundle with the WebNN and WebGPU execution providers (and the JSEP build of the wasm they
# need): copied when the package has them, loaded by the page only where the browser offers
# WebNN or a hardware WebGPU adapter (its wasm path is slower than the plain bundle's)
ORT_WEB_ALL = (
    "ort.all.min.js",
    "ort-wasm-simd-threaded.jsep.mjs",
    "ort-wasm-simd-threaded.jsep.wasm",
)
CDN = f"https://cdn.jsdelivr.net/npm/onnxruntime-web@{ORT_WEB_VERSION}/dist/"
APP_DIR = Path(__file__).parent / "webapp"
APP_FILES = ("index.html", "app.js", "preprocess.js", "style.css", "sw.js")
ORT_WEB_ENV = "MNIST_EDGE_ORT_WEB"
# where `make web-deps` (npm install --prefix .web) and a plain `npm install` put the package
ORT_WEB_SEARCH = (Path(".web/node_modules/onnxruntime-web"), Path("node_modules/onnxruntime-web"))
MIME = {
    ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
    ".json": "application/json", ".wasm": "application/wasm",
    ".onnx": "application/octet-stream", ".ort": "application/octet-stream",
    ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".svg": "image/svg+xml",
    ".ico": "image/x-icon", ".txt": "text/plain; charset=utf-8", ".map": "application/json",
}  # fmt: skip
ISOLATION_HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


@dataclass(frozen=True)
class WebConfig:
    model: str  # the fp32 ONNX model
    output_dir: str = "exports/web"
    int8: str | None = None  # its INT8 version, offered on the page as a second model
    ort_web: str | None = None  # onnxruntime-web's package folder or its dist/ (None: search)


@dataclass(frozen=True)
class WebExport:
    folder: Path
    files: list[str]
    models: dict[str, str]  # name on the page -> file
    ort_version: str
    ort_source: str  # "local: DIR" or "cdn: URL"
    notes: list[str] = field(default_factory=list)

    @property
    def local(self) -> bool:
        return self.ort_source.startswith("local")

    def to_dict(self) -> dict[str, Any]:
        return {"folder": str(self.folder), "files": self.files, "models": self.models,
                "ort_version": self.ort_version, "ort_source": self.ort_source,
                "notes": self.notes}  # fmt: skip


def _dist(folder: Path) -> Path:
    return folder / "dist" if (folder / "dist" / ORT_WEB_FILES[0]).is_file() else folder


def find_ort_web(explicit: str | Path | None = None) -> tuple[Path, str] | None:
    """(dist folder, version) of an installed onnxruntime-web: `explicit` (an error when it is
    not one), else $MNIST_EDGE_ORT_WEB, else .web/node_modules or node_modules; None if absent."""
    candidates = [Path(explicit)] if explicit else []
    if not explicit and os.environ.get(ORT_WEB_ENV):
        candidates.append(Path(os.environ[ORT_WEB_ENV]))
    if not explicit:
        candidates += ORT_WEB_SEARCH
    for folder in candidates:
        dist = _dist(folder)
        missing = [f for f in ORT_WEB_FILES if not (dist / f).is_file()]
        if not missing:
            return dist, _version(dist)
        if explicit:
            raise ConfigError(
                f"--ort-web {explicit} is not an onnxruntime-web package: {dist} lacks "
                f"{', '.join(missing)} (install it with `make web-deps`)"
            )
    return None


def _version(dist: Path) -> str:
    for pkg in (dist.parent / "package.json", dist / "package.json"):
        try:
            return str(json.loads(pkg.read_text()).get("version", "unknown"))
        except (OSError, ValueError):
            continue
    return "unknown"


def model_card(model: Path) -> dict[str, Any]:
    """What the page needs to know about a model, from the model's own metadata."""
    meta = model_metadata(load_session(model, threads=1))
    with reading(model, "a model with readable mnist_edge metadata", ArtifactError):
        contract = spec.Contract.from_metadata(meta) or spec.Contract()  # the one parser
        accuracy = meta.get(spec.METADATA_PREFIX + "test_accuracy")
        accuracy = float(accuracy) if accuracy else None
    return {
        "mean": contract.mean, "std": contract.std, "pixel_scale": contract.pixel_scale,
        "image_size": contract.image_size, "labels": list(contract.class_labels),
        "input_name": contract.input_name, "output_name": contract.output_name,
        "test_accuracy": accuracy, "sha256": sha256(model),
        "source_checkpoint_sha256": meta.get(spec.METADATA_PREFIX + "source_checkpoint_sha256"),
        "format": meta.get(spec.METADATA_PREFIX + "format", "onnx"),
        "version": meta.get(spec.METADATA_PREFIX + "version"),
    }  # fmt: skip


def export_web(cfg: WebConfig) -> WebExport:
    """Write the web folder (to a temp folder beside it, then renamed into place)."""
    model = Path(cfg.model)
    models = {"fp32": model} | ({"int8": Path(cfg.int8)} if cfg.int8 else {})
    cards = {name: model_card(path) for name, path in models.items()}
    found = find_ort_web(cfg.ort_web)
    notes = []
    if found is None:
        ort_source, version = f"cdn: {CDN}", ORT_WEB_VERSION
        notes.append(
            f"onnxruntime-web is not installed here, so the page loads {ORT_WEB_VERSION} from "
            f"{CDN} (needs internet); `make web-deps` or --ort-web DIR puts it in the folder"
        )
    else:
        dist, version = found
        ort_source = f"local: {dist}"
        if version != ORT_WEB_VERSION:
            notes.append(
                f"onnxruntime-web {version} from {dist}; the pinned one is {ORT_WEB_VERSION}"
            )
    out = Path(cfg.output_dir)
    has_all = found is not None and all((found[0] / f).is_file() for f in ORT_WEB_ALL)
    where = "" if found else CDN
    config = {
        "models": {name: {"file": path.name, **cards[name]} for name, path in models.items()},
        "ort": {
            "version": version,
            "script": where + ORT_WEB_FILES[0],
            "all_script": where + ORT_WEB_ALL[0] if has_all or not found else None,
            "wasm_paths": None if found else CDN,
            "source": "local" if found else "cdn",
        },  # fmt: skip
        "check": check_vectors(models),
    }
    ort_files = [*ORT_WEB_FILES, *(ORT_WEB_ALL if has_all else ())] if found else []
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-web-", dir=out.parent))
    except OSError as exc:
        raise OutputError(f"cannot write to {out.parent}: {reason(exc)}") from exc
    try:
        for path in models.values():
            shutil.copyfile(path, tmp / path.name)
        for name in ort_files:
            shutil.copyfile(found[0] / name, tmp / name)
        (tmp / "model.json").write_text(json.dumps(config, indent=2) + "\n")
        # what the service worker keeps for offline use: the page, the models and the plain
        # wasm runtime (the bundle the page loads by default); its cache is named by their hash
        offline = ["./", *APP_FILES[:-1], "model.json", *(p.name for p in models.values()),
                   *(ORT_WEB_FILES if found else ())]  # fmt: skip
        for name in APP_FILES:
            text = (APP_DIR / name).read_text()
            if name == "sw.js":
                text = text.replace("{{PRECACHE}}", json.dumps(offline)).replace(
                    "{{CACHE}}", "mnist-edge-" + _digest(tmp, offline[1:])[:16]
                )
            (tmp / name).write_text(text)
        for p in tmp.iterdir():
            p.chmod(0o644)
        tmp.chmod(0o755)
        _replace_folder(tmp, out)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise OutputError(f"cannot write {out}: {reason(exc)}") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    files = sorted(p.name for p in out.iterdir())
    return WebExport(out, files, {k: v.name for k, v in models.items()}, version, ort_source, notes)


def check_vectors(models: dict[str, Path]) -> dict[str, Any]:
    """A few inputs and each model's outputs for them in native ONNX Runtime, for the page to
    check a way of running the model against before it uses it (the parity rule: an element
    passes within atol or rtol)."""
    side = spec.IMAGE_SIZE
    yy, xx = np.mgrid[:side, :side]
    ring = (np.abs(np.hypot(yy - 13.5, (xx - 13.5) * 1.4) - 8) < 1.6) * 1.0  # a "0"
    bar = ((np.abs(xx - 14) < 1.5) & (yy > 4) & (yy < 24)) * 1.0  # a "1"
    noise = np.random.default_rng(0).uniform(0, 1, (side, side))
    pixels = np.stack([np.zeros((side, side)), ring, bar, noise])  # 0..1, white ink on black
    contract = spec.Contract()
    x = ((pixels - contract.mean) / contract.std).astype(np.float32)[:, None]
    outputs = {}
    for name, path in models.items():
        session = load_session(path, threads=1)
        outputs[name] = session.run(None, {session.get_inputs()[0].name: x})[0].tolist()
    return {"inputs": x.reshape(len(x), -1).tolist(), "outputs": outputs,
            "atol": policy.ATOL, "rtol": policy.RTOL}  # fmt: skip


def _digest(folder: Path, names: list[str]) -> str:
    h = hashlib.sha256()
    for name in names:
        h.update(name.encode() + (folder / name).read_bytes())
    return h.hexdigest()


def _replace_folder(new: Path, out: Path) -> None:
    """Put `new` where `out` is: a reader sees the old folder or the new one, never a mix."""
    if out.is_file() or out.is_symlink():
        raise OutputError(f"{out} exists and is not a folder")
    if not out.exists():
        os.replace(new, out)
        return
    if not (out / "model.json").is_file() and any(out.iterdir()):
        raise OutputError(f"{out} is a folder that is not a web export; choose another --web-dir")
    old = Path(tempfile.mkdtemp(prefix=".old-web-", dir=out.parent))
    os.replace(out, old / "web")
    os.replace(new, out)
    shutil.rmtree(old, ignore_errors=True)


# --- the server ---------------------------------------------------------------------------------
def static_file(root: Path, raw: str) -> Path | None:
    """The file a URL path names inside `root` (resolved), or None: nothing outside root (`..`,
    symlinks out, encoded tricks), no hidden files, and a folder only as its index.html."""
    path = urllib.parse.unquote(urllib.parse.urlsplit(raw).path)
    if "\0" in path or "\\" in path:
        return None
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if any(p == ".." or p.startswith(".") for p in parts):
        return None
    try:
        target = root.joinpath(*parts).resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if target != root and root not in target.parents:
        return None
    if target.is_dir():
        target = target / "index.html"
    return target if target.is_file() else None


def check_web_folder(folder: Path | str) -> Path:
    """`folder` resolved, when it is a web export; a ConfigError saying what it is not."""
    root = Path(folder)
    if not root.is_dir():
        raise ConfigError(f"no folder at {root}; write one with `mnist-edge export --format web`")
    if not (root / "index.html").is_file():
        raise ConfigError(f"{root} has no index.html; is it a web export?")
    return root.resolve()


class _Handler(http.server.BaseHTTPRequestHandler):
    root: Path  # set on a subclass per server
    quiet: bool = True

    def version_string(self) -> str:
        return "mnist-edge"

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._serve(body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._serve(body=False)

    def _serve(self, body: bool) -> None:
        target = self._resolve(self.path)
        if target is None:
            self._send(404, b"404 not found\n", "text/plain; charset=utf-8", body)
            return
        try:
            data = target.read_bytes()
        except OSError:
            self._send(404, b"404 not found\n", "text/plain; charset=utf-8", body)
            return
        self._send(200, data, MIME.get(target.suffix.lower(), "application/octet-stream"), body)

    def _resolve(self, raw: str) -> Path | None:
        return static_file(self.root, raw)

    def _send(self, code: int, data: bytes, mime: str, body: bool) -> None:
        self.send_response(code)
        self.send_header("Content-Type", mime)
        self.send_header("Content-Length", str(len(data)))
        for k, v in ISOLATION_HEADERS.items():
            self.send_header(k, v)
        self.end_headers()
        if body:
            self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        if not self.quiet:
            super().log_message(format, *args)


class WebServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client that went away: fine
            super().handle_error(request, client_address)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"

    def start(self) -> WebServer:
        """Serve from a background thread (tests, benchmarks); stop with .stop()."""
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


def make_server(folder: Path | str, host: str = "127.0.0.1", port: int = 8000,
                quiet: bool = True) -> WebServer:  # fmt: skip
    """A server for a web export (port 0: any free port)."""
    root = check_web_folder(folder)
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port must be 0..65535, got {port}")
    handler = type("Handler", (_Handler,), {"root": root, "quiet": quiet})
    try:
        return WebServer((host, port), handler)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc


def config_for(output_dir: Path | str, web_dir: Path | str | None = None,
               ort_web: str | Path | None = None) -> tuple[WebConfig, str]:  # fmt: skip
    """The web export of a model folder: its ONNX (and INT8) when exported, else the packaged
    model; and where the model came from, in words."""
    layout = Layout(Path(output_dir))
    out = str(web_dir or layout.root / "web")
    opt = None if ort_web is None else str(ort_web)
    if layout.onnx.is_file():
        int8 = str(layout.int8) if layout.int8.is_file() else None
        return WebConfig(str(layout.onnx), out, int8, opt), f"exported model {layout.onnx}"
    fp32, int8 = pretrained_path(), pretrained_path(int8=True)
    return WebConfig(str(fp32), out, str(int8), opt), f"packaged model ({layout.onnx} not found)"


def serve(folder: Path | str, host: str = "127.0.0.1", port: int = 8000,
          on_start: Any = None, quiet: bool = True) -> None:  # fmt: skip
    """Serve a web export until Ctrl-C (or SIGTERM), then close the socket and return."""
    server = make_server(folder, host, port, quiet)
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _stop_on_signal)
    try:
        if on_start:
            on_start(server)
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _stop_on_signal(*_: Any) -> None:
    raise KeyboardInterrupt
