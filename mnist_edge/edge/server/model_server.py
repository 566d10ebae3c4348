"""The server's state, whatever the transport: the model repository, readiness, draining, the
metrics, and the protocol's operations on them (metadata, configuration, inference through the
batcher). REST (app.py) and gRPC (grpc_service.py) both call it; neither knows the other.

Readiness: the server is ready once every model it was started with is loaded and it is not
draining; a model is ready while it is loaded. On SIGTERM or Ctrl-C the server drains:
readiness turns false, every request that comes is still answered, and once none has been in
flight for DRAIN_QUIET_S (at most DRAIN_MAX_S after the signal) the host stops listening,
finishes what it holds, and exits 0.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ... import __version__
from .. import spec
from ..errors import InputError, MnistEdgeError
from ..images import prepare_image
from ..runtime import Predictor
from ..web import check_web_folder
from . import stats, tracing
from .batcher import Times
from .config import ServeConfig
from .metrics import ServerMetrics
from .models import Repository, Served
from .tensors import BYTES, FP32, IMAGE_INPUT, ProtocolError, Request

PLATFORM = "onnxruntime_onnx"
DRAIN_QUIET_S = 0.3  # draining ends once no request has been in flight this long
DRAIN_MAX_S = 10.0  # or after this long, whatever comes
EXTENSIONS = ["binary_tensor_data", "classification", "model_configuration", "model_repository",
              "statistics"]  # fmt: skip


@dataclass(frozen=True)
class ServedModel:
    """What the banner says of one model."""

    name: str
    version: str
    file: str
    case: str  # the catalogue's name of its runtime path ("onnxruntime", "litert-int8", ...)
    threads: int | None  # engine threads (None: the engine's default)


@dataclass(frozen=True)
class ServerInfo:
    """Where a server listens and what it serves: what the CLI prints (a worker sends it to
    the parent, so it is plain data)."""

    url: str
    grpc_address: str | None
    web: str | None
    models: tuple[ServedModel, ...]  # loaded ones (none while loading)
    names: tuple[str, ...]  # every model's name
    max_batch: int
    max_delay_us: int
    workers: int = 1


class ModelServer:
    """The protocol's state: the models (loaded in the background), their batchers, the
    metrics, readiness and draining."""

    def __init__(self, cfg: ServeConfig, predictor: Predictor | None = None) -> None:
        self.cfg = cfg
        self.web = None if cfg.web is None else check_web_folder(cfg.web)
        self.metrics = ServerMetrics()
        self.tracing = tracing.start(cfg.trace)  # None unless --trace (tracing.py)
        self.models = Repository(cfg, self.metrics, self.expected, self._refresh, predictor)
        self.loaded = False  # every model the server started with has had its first load
        self.load_error: MnistEdgeError | None = None
        self.draining = False
        self.drain_started = 0.0
        self.in_flight = 0
        self.open_connections: Callable[[], int] | None = None  # set by the host (uvicorn)
        self.serve_grpc = False  # the host turns it on: the gRPC service starts with the app
        self.reuse_port = False  # gRPC shares its port with other workers (workers.py)
        self.peers: Any = None  # the other workers (workers.Peers), told of repository calls
        self.grpc_callers: Callable[[], int] | None = None  # set by grpc_service.start
        self.grpc_address: str | None = None  # host:port, once it listens
        self.on_listen: Callable[[], None] | None = None  # once REST and gRPC both listen
        self.last_busy = time.monotonic()

    # --- state ----------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self.loaded and not self.draining and self.models.all_ready

    def model_ready(self, name: str) -> bool:
        return not self.draining and self.models.is_ready(name)

    def _refresh(self) -> None:
        """Readiness gauges, after a model's state or the server's changed."""
        for name in self.models.slots:
            self.metrics.ready.labels(name).set(float(self.model_ready(name)))

    def load(self) -> None:
        """Load every model (in the caller's thread); a failure is kept for the host (the CLI
        reports it and exits 2)."""
        self.load_error = self.models.load_all()
        self.loaded = self.load_error is None
        self._refresh()

    def drain(self) -> None:
        """Start draining (the first SIGTERM or Ctrl-C). Runs inside a signal handler, which
        may have interrupted the event loop's thread anywhere, a metric's write included:
        so it only sets flags here, and the readiness gauges are written on the loop's next
        turn (writing them here deadlocked a worker on prometheus-client's lock, taken by the
        write the signal interrupted)."""
        self.drain_started = self.last_busy = time.monotonic()
        self.draining = True
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not in a running loop's thread: no write to interrupt
            self._refresh()
        else:
            loop.call_soon_threadsafe(self._refresh)

    def expected(self) -> int:
        """Requests that may reach a batcher soon: those in the app, or, under uvicorn, the
        open connections (a request still unread in a socket is not in the app yet) and the
        gRPC clients calling lately (grpc_service.Service.callers)."""
        open_now = self.open_connections() if self.open_connections else 0
        callers = self.grpc_callers() if self.grpc_callers else 0
        return max(self.in_flight, open_now + callers)

    def close(self) -> None:
        self.models.close()
        if self.tracing is not None:
            self.tracing.close()

    def quiet(self) -> bool:
        """Time to stop: draining, and no request in flight for DRAIN_QUIET_S (or draining for
        DRAIN_MAX_S: a client that never pauses cannot hold the server up)."""
        if not self.draining:
            return False
        now = time.monotonic()
        if now - self.drain_started >= DRAIN_MAX_S:
            return True
        return not self.in_flight and now - self.last_busy >= DRAIN_QUIET_S

    def info(self, url: str) -> ServerInfo:
        loaded = [s.served for s in self.models.slots.values() if s.served is not None]
        models = tuple(ServedModel(m.name, m.version, str(m.file), m.predictor.runner.name,
                                   m.predictor.runner.threads) for m in loaded)  # fmt: skip
        return ServerInfo(url, self.grpc_address, None if self.web is None else str(self.web),
                          models, tuple(self.models.slots), self.cfg.batch.max_batch,
                          self.cfg.batch.max_delay_us)  # fmt: skip

    # --- the protocol ---------------------------------------------------------------------
    def server_metadata(self) -> dict[str, Any]:
        return {"name": "mnist-edge", "version": __version__, "extensions": EXTENSIONS}

    def _contract(self, name: str) -> tuple[spec.Contract, Served | None]:
        slot = self.models.slots.get(name)
        served = slot.served if slot else None
        return (served.predictor.contract if served else spec.Contract()), served

    def metadata(self, name: str) -> dict[str, Any]:
        contract, served = self._contract(name)
        side = contract.image_size
        runner = served.predictor.runner if served else None
        return {
            "name": name, "versions": [served.version] if served else [], "platform": PLATFORM,
            "inputs": [
                {"name": contract.input_name, "datatype": FP32,
                 "shape": [-1, spec.CHANNELS, side, side]},
                {"name": IMAGE_INPUT, "datatype": BYTES, "shape": [-1]},
            ],
            "outputs": [{"name": contract.output_name, "datatype": FP32,
                         "shape": [-1, spec.NUM_CLASSES]}],
            "parameters": {
                "mean": contract.mean, "std": contract.std, "pixel_scale": contract.pixel_scale,
                "labels": list(contract.class_labels),
                "inputs": f"send either {contract.input_name!r} (normalised pixels: "
                          "(pixel * pixel_scale - mean) / std) or "
                          f"{IMAGE_INPUT!r} (encoded image files)",
                "backend": runner.backend if runner else None,
                "precision": runner.precision if runner else None,
                "case": runner.name if runner else None,
                "sha256": served.sha256 if served else None,
            },
        }  # fmt: skip

    def config(self, name: str) -> dict[str, Any]:
        """Triton's model configuration for a model (what config.pbtxt says), as JSON."""
        contract, _ = self._contract(name)
        side = contract.image_size
        batch = self.cfg.batch
        out: dict[str, Any] = {
            "name": name, "platform": PLATFORM, "backend": "onnxruntime",
            "max_batch_size": batch.max_batch,
            "input": [{"name": contract.input_name, "data_type": "TYPE_FP32",
                       "dims": [spec.CHANNELS, side, side]}],
            "output": [{"name": contract.output_name, "data_type": "TYPE_FP32",
                        "dims": [spec.NUM_CLASSES]}],
            "instance_group": [{"count": 1, "kind": "KIND_CPU"}],
        }  # fmt: skip
        if batch.max_batch > 1:
            out["dynamic_batching"] = {"max_queue_delay_microseconds": batch.max_delay_us}
        return out

    def known(self, params: dict[str, str]) -> str | None:
        """An error message when the URL names a model or version not served here, else None."""
        return self.models.known(params.get("model", ""), params.get("version"))

    def _images(self, predictor: Predictor, files: list[bytes]) -> np.ndarray:
        """Encoded image files -> normalised (N, 1, 28, 28), the way `predict` prepares them."""
        import io

        digits = []
        for i, raw in enumerate(files):
            try:
                from PIL import Image, UnidentifiedImageError

                with Image.open(io.BytesIO(raw)) as im:
                    w, h = im.size
                    if w * h > self.cfg.max_image_pixels:
                        raise InputError(f"{w}x{h} = {w * h:,} pixels, over the limit of "
                                         f"{self.cfg.max_image_pixels:,}")  # fmt: skip
                    im.load()
                    digits.append(prepare_image(im, max_pixels=self.cfg.max_image_pixels))
            except InputError as exc:
                raise ProtocolError(f"image {i}: {exc}") from None
            except Exception as exc:  # a decoder's every failure is the file's
                # Pillow's decoders raise many kinds for a malformed file (OSError, ValueError,
                # SyntaxError, struct.error, EOFError, DecompressionBombError...): each is a
                # file the client sent, never the server's fault
                kind = (
                    "not an image file Pillow can read"
                    if isinstance(exc, UnidentifiedImageError)
                    else f"not a readable image ({type(exc).__name__}: {exc})"[:160]
                )
                raise ProtocolError(f"image {i}: {kind}") from None  # fmt: skip
        return predictor.preprocess(np.stack(digits))

    async def run(self, served: Served, req: Request, inline: bool = True,
                  times: Times | None = None) -> np.ndarray:  # fmt: skip
        """A parsed request's (N, 10) answer from the version it took: image files prepared as
        `predict` prepares them, then its batcher (Batcher.submit says what `inline` means);
        `times` hears where the time went. REST and gRPC both come here."""
        if req.kind == BYTES:
            t0 = time.perf_counter()
            x = await asyncio.to_thread(self._images, served.predictor, req.tensor)
            if times is not None:
                times.input_s += time.perf_counter() - t0
        else:
            x = req.tensor
        queue = self.metrics.queue.labels(served.name)
        queue.set(served.batcher.depth + len(x))
        try:
            return await served.batcher.submit(x, inline, times)
        finally:
            queue.set(served.batcher.depth)

    def statistics(self, name: str | None, version: str | None) -> dict[str, Any]:
        """The statistics extension's answer: one model (`version` of it, or all its versions)
        or, with no name, every model (stats.py)."""
        names = [name] if name else list(self.models.slots)
        return stats.report(self.metrics, names, version)

    def take(self, name: str, version: str | None) -> Served:
        """The version a request runs on, held (not retired by a reload) until `release`;
        ProtocolError 404 or 503 when there is none. Taken once per request, after its body
        is read: its whole answer comes from one version."""
        served = self.models.find(name, version)
        served.in_flight += 1
        return served

    def release(self, served: Served) -> None:
        served.in_flight -= 1

    async def change(self, action: str, name: str) -> None:
        """A repository call ("load" or "unload"), here and then in every other worker: its
        client hears the answer once every worker serves what it asked."""
        await getattr(self.models, action)(name)
        if self.peers is not None:
            await self.peers.tell(action, name)

    def enter(self) -> None:
        """A request is in the server (reading its body counts): draining waits for it."""
        self.in_flight += 1

    def leave(self) -> None:
        self.in_flight -= 1
        self.last_busy = time.monotonic()


__all__ = ["ModelServer", "ServerInfo", "ServedModel", "PLATFORM", "EXTENSIONS", "DRAIN_QUIET_S",
           "DRAIN_MAX_S"]  # fmt: skip
