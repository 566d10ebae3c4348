"""The models a server serves, and how one is replaced while requests keep coming.

Where models come from (ServeConfig):
- `--model PATH` or repeated `--model NAME=PATH` (PATH alone is served as --name);
- `--model-repository DIR`: every Triton model folder in DIR (NAME/config.pbtxt, NAME/<version>/
  model.onnx, as `export --format triton` writes; its newest version is served), and every model
  file in DIR (NAME.onnx, NAME.int8.onnx, NAME.tflite...), served under its name without the
  format's suffix;
- nothing: exports/mnist_cnn.onnx when it exists, else the packaged model, as --name.

A model is (re)loaded by the repository extension's load call, or by SIGHUP (every model, and in
a repository folder any model added since). A load builds the new Predictor and batcher in a
thread, runs one warm-up batch on them, and only then swaps them in;
requests that began on the old version finish on it (each request takes its model once, so its
answer is all old or all new), and the old batcher closes when the last of them is answered. A
load that fails leaves the old version serving, and the repository index says why. A load of an
unchanged file (same version, same sha256) changes nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import layout, spec, triton
from .. import threads as pools
from ..errors import ArtifactError, ConfigError, MnistEdgeError
from ..predict import resolve_model
from ..runtime import Predictor
from .batcher import Batcher
from .config import ServeConfig, split_model
from .metrics import ModelStats, ServerMetrics
from .tensors import ProtocolError

READY, LOADING, UNLOADING, UNAVAILABLE = "READY", "LOADING", "UNLOADING", "UNAVAILABLE"


@dataclass(frozen=True)
class ModelSource:
    """Where a model's versions come from: a model file, a Triton model folder (its newest
    version), or a tune profile (which names its own file)."""

    name: str
    path: Path
    version: str = "1"  # of a file or a profile; a Triton folder names its own
    profile: bool = False

    def resolve(self) -> tuple[str, Path]:
        """(the version to serve, its file), read afresh at every load."""
        if self.profile:
            return self.version, self.path
        if self.path.is_dir():
            found = triton.read_model(self.path)
            if found is None:
                raise ArtifactError(f"{self.path} holds no numbered version folder with a "
                                    "model.onnx (Triton's layout)")  # fmt: skip
            return found[1], found[2]
        if not self.path.is_file():
            raise ArtifactError(f"no model file at {self.path}")
        return self.version, self.path


def model_name(path: Path) -> str | None:
    """A model file's name in a repository folder: its file name without the format's suffix,
    and "_int8" for a quantized one (as the Triton repository names it): mnist_cnn.onnx is
    mnist_cnn, mnist_cnn.int8.onnx mnist_cnn_int8. None for a file that is no model (or a
    training checkpoint)."""
    try:
        fmt = layout.format_of(path)
    except ArtifactError:
        return None
    if fmt == "checkpoint":
        return None
    f = layout.get(fmt)
    suffix = max((s for s in f.suffixes if path.name.endswith(s)), key=len)
    stem = path.name[: -len(suffix)]
    return (stem + ("_int8" if f.precision == "int8" else "")) if stem else None


def scan(folder: Path | str, version: str = "1") -> list[ModelSource]:
    """The models of a repository folder, by name."""
    root = Path(folder)
    if not root.is_dir():
        raise ConfigError(f"--model-repository {folder}: no such folder")
    found: dict[str, ModelSource] = {}
    for entry in sorted(root.iterdir()):
        source = None
        if entry.name.startswith("."):
            continue
        if entry.is_dir() and triton.is_model_folder(entry):
            source = ModelSource(entry.name, entry)
        elif entry.is_file() and (name := model_name(entry)) is not None:
            source = ModelSource(name, entry, version)
        if source is None:
            continue
        if source.name in found:
            first = found[source.name].path.name
            raise ConfigError(f"--model-repository {folder}: {first} and {entry.name} are both "
                              f"named {source.name!r}; rename one")  # fmt: skip
        found[source.name] = source
    return list(found.values())


def sources(cfg: ServeConfig) -> list[ModelSource]:
    """The models the config names, each with its name."""
    if cfg.profile is not None:
        return [ModelSource(cfg.name, Path(cfg.profile), cfg.version, profile=True)]
    if cfg.repository is not None:
        found = scan(cfg.repository, cfg.version)
        if not found:
            raise ConfigError(f"--model-repository {cfg.repository} holds no model (Triton "
                              "model folders, or .onnx/.tflite/... files)")  # fmt: skip
        return found
    if not cfg.models:
        return [ModelSource(cfg.name, resolve_model(None)[0], cfg.version)]
    return [ModelSource(name, Path(path), cfg.version)
            for name, path in (split_model(m, cfg.name) for m in cfg.models)]  # fmt: skip


def check(cfg: ServeConfig) -> None:
    """Every model the config names loads (one engine thread each): a mistake found before a
    cluster is started, in one line."""
    for source in sources(cfg):
        _, path = source.resolve()
        if source.profile:
            Predictor.from_profile(path, threads=1)
        else:
            Predictor(path, threads=1, backend=cfg.backend, precision=cfg.precision)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(eq=False)
class Served:
    """One loaded version of a model: its Predictor, its batcher, and the requests using it."""

    name: str
    version: str
    file: Path
    sha256: str
    predictor: Predictor
    batcher: Batcher
    stats: ModelStats  # what the statistics extension reports of this version
    in_flight: int = 0  # requests that took this version and are not answered yet
    loaded_at: float = field(default_factory=time.time)


@dataclass(eq=False)
class Slot:
    """A model's place in the repository: its source, its state, the version it serves."""

    source: ModelSource
    state: str = LOADING
    reason: str = ""
    served: Served | None = None
    lock: asyncio.Lock | None = None  # one load or unload of a model at a time


def warm_up(run: Callable[[np.ndarray], np.ndarray], side: int) -> None:
    """One call of a batch of 1 before a version is served, so that readiness means the
    engine has answered (benchmarks/serve_warmup.py measures what a first call costs; a batch
    of the largest size as well bought nothing measurable there: ONNX Runtime prepares most
    of its work when the session is made, and a later change of shape costs again anyway)."""
    run(np.zeros((1, spec.CHANNELS, side, side), np.float32))


class Repository:
    """The served models by name. `find` is what a request calls; `load`, `unload` and
    `reload` (coroutines, in the server's event loop) change what is served."""

    def __init__(self, cfg: ServeConfig, metrics: ServerMetrics, expected: Callable[[], int],
                 on_change: Callable[[], None] = lambda: None,
                 predictor: Predictor | None = None) -> None:  # fmt: skip
        self.cfg, self.metrics, self.expected, self.on_change = cfg, metrics, expected, on_change
        self.slots = {s.name: Slot(s) for s in sources(cfg)}
        self._given = predictor  # a Predictor made by the caller (tests, Ray) for the one model
        self._retiring: set[asyncio.Task] = set()

    # --- what requests see -----------------------------------------------------------------
    def find(self, name: str, version: str | None) -> Served:
        """The version a request runs on; a ProtocolError (404 unknown or unloaded, 503 still
        loading) when there is none."""
        slot = self.slots.get(name)
        if slot is None:
            served = ", ".join(map(repr, self.slots)) or "none"
            raise ProtocolError(f"unknown model {name!r}; this server serves {served}", 404)
        served = slot.served
        if served is None:
            if slot.state == LOADING:
                raise ProtocolError(f"not ready: the model {name!r} is loading", 503)
            raise ProtocolError(f"model {name!r} is not loaded ({slot.reason or slot.state}); "
                                f"load it with POST /v2/repository/models/{name}/load",
                                404)  # fmt: skip
        if version is not None and version != served.version:
            raise ProtocolError(f"unknown version {version!r} of {name!r}; it serves "
                                f"{served.version!r}", 404)  # fmt: skip
        return served

    def known(self, name: str, version: str | None = None) -> str | None:
        """An error message when the URL names a model or version not served here, else None
        (a model that is loading or unloaded is known: it is just not ready)."""
        slot = self.slots.get(name)
        if slot is None:
            served = ", ".join(map(repr, self.slots)) or "none"
            return f"unknown model {name!r}; this server serves {served}"
        if version is not None and slot.served is not None and version != slot.served.version:
            return (f"unknown version {version!r} of {name!r}; it serves "
                    f"{slot.served.version!r}")  # fmt: skip
        return None

    def is_ready(self, name: str) -> bool:
        slot = self.slots.get(name)
        return slot is not None and slot.state == READY

    @property
    def all_ready(self) -> bool:
        """Every model is READY, apart from those unloaded on purpose."""
        wanted = [s for s in self.slots.values() if s.reason != "unloaded"]
        return bool(wanted) and all(s.state == READY for s in wanted)

    @property
    def depth(self) -> int:
        return sum(s.served.batcher.depth for s in self.slots.values() if s.served)

    def index(self, ready_only: bool = False) -> list[dict[str, str]]:
        """The repository extension's index: name, version, state and reason of every model."""
        out = []
        for name, slot in sorted(self.slots.items()):
            if ready_only and slot.state != READY:
                continue
            row = {"name": name, "state": slot.state, "reason": slot.reason}
            if slot.served is not None:
                row["version"] = slot.served.version
            out.append(row)
        return out

    # --- loading ---------------------------------------------------------------------------
    def _build(self, source: ModelSource, old: Served | None) -> Served | None:
        """The new version, loaded and warmed up (in a thread); None when it is the same file
        as `old`."""
        version, path = source.resolve()
        digest = sha256(path)
        if old is not None and (old.version, old.sha256) == (version, digest):
            return None
        if self._given is not None and old is None:
            predictor, self._given = self._given, None
        elif source.profile:
            extra = {"threads": self.cfg.threads} if self.cfg.threads else {}
            predictor = Predictor.from_profile(path, **extra)
        else:
            plan = pools.for_server(self.cfg.threads)
            predictor = Predictor(path, threads=plan.intra_op, backend=self.cfg.backend,
                                  precision=self.cfg.precision, spin=plan.spin)  # fmt: skip
        warm_up(predictor.runner.run, predictor.contract.image_size)
        stats = self.metrics.model_stats(source.name, version)
        batcher = Batcher(predictor.runner.run, self.cfg.batch, stats.on_batch,
                          expected=self.expected)  # fmt: skip
        return Served(source.name, version, path, digest, predictor, batcher, stats)

    def _set(self, slot: Slot, state: str, reason: str = "") -> None:
        slot.state, slot.reason = state, reason
        self.on_change()

    def load_all(self) -> MnistEdgeError | None:
        """Load every model, at start, in the calling thread; the first failure is returned
        (the server then ends, in one line: a model that cannot load at start is a mistake in
        the command, as Triton's --exit-on-error says)."""
        for slot in self.slots.values():
            try:
                slot.served = self._build(slot.source, None)
            except MnistEdgeError as exc:
                self._set(slot, UNAVAILABLE, str(exc))
                return type(exc)(f"model {slot.source.name!r}: {exc}")
            self._set(slot, READY)
        return None

    async def load(self, name: str) -> None:
        """Load `name`, or reload it when it is served (a changed file, or in a Triton folder a
        newer version). ProtocolError 404 for a name the repository does not hold, 400 for a
        model that cannot be loaded (the old version, if any, keeps serving)."""
        slot = self.slots.get(name)
        if slot is None and self.cfg.repository is not None:  # a model added to the folder
            added = {s.name: s for s in scan(self.cfg.repository, self.cfg.version)}
            if name in added:
                slot = self.slots[name] = Slot(added[name], UNAVAILABLE, "not loaded yet")
        if slot is None:
            raise ProtocolError(f"no model {name!r} in the repository; it holds "
                                f"{', '.join(map(repr, self.slots)) or 'none'}", 404)  # fmt: skip
        slot.lock = slot.lock or asyncio.Lock()
        async with slot.lock:
            old = slot.served
            if old is None:
                self._set(slot, LOADING)
            try:
                new = await asyncio.to_thread(self._build, slot.source, old)
            except MnistEdgeError as exc:
                if old is None:
                    self._set(slot, UNAVAILABLE, f"load failed: {exc}")
                else:
                    self._set(slot, READY, f"reload failed, serving version {old.version}: {exc}")
                raise ProtocolError(f"cannot load model {name!r}: {exc}", 400) from None
            if new is None:  # the same file: nothing to do
                self._set(slot, READY)
                return
            slot.served = new  # from here on, requests take the new version
            self._set(slot, READY)
            if old is not None:
                self._retire(old)

    async def unload(self, name: str) -> None:
        """Stop serving `name`: new requests get 404, those in flight are answered."""
        slot = self.slots.get(name)
        if slot is None:
            raise ProtocolError(f"no model {name!r} in the repository", 404)
        slot.lock = slot.lock or asyncio.Lock()
        async with slot.lock:
            old, slot.served = slot.served, None
            self._set(slot, UNAVAILABLE, "unloaded")
            self.metrics.forget(name)
            if old is not None:
                self._retire(old)

    async def reload(self) -> list[str]:
        """Load every model again (SIGHUP): changed files are swapped in, models added to a
        repository folder are loaded. Returns the problems, one line each (logged by the
        caller: there is no client to tell)."""
        names = list(self.slots)
        if self.cfg.repository is not None:
            try:
                names += [s.name for s in scan(self.cfg.repository) if s.name not in self.slots]
            except ConfigError as exc:
                return [str(exc)]
        problems = []
        for name in names:
            if name in self.slots and self.slots[name].reason == "unloaded":
                continue  # unloaded on purpose: a load call brings it back
            try:
                await self.load(name)
            except ProtocolError as exc:
                problems.append(str(exc))
        return problems

    def _retire(self, old: Served) -> None:
        """Close `old`'s batcher once the requests that took it are answered."""

        async def wait_then_close() -> None:
            while old.in_flight:
                await asyncio.sleep(0.01)
            await asyncio.to_thread(old.batcher.close)

        task = asyncio.get_running_loop().create_task(wait_then_close())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    def close(self) -> None:
        for slot in self.slots.values():
            if slot.served is not None:
                slot.served.batcher.close()


__all__ = ["Repository", "ModelSource", "Served", "Slot", "scan", "sources", "model_name", "check",
           "READY", "LOADING", "UNLOADING", "UNAVAILABLE"]  # fmt: skip
