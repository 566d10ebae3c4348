"""What `mnist-edge serve` serves, where, and its limits: one frozen config, checked when it is
made (a bad value is a ConfigError naming the flag)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .. import policy
from ..errors import ConfigError
from ..images import MAX_IMAGE_PIXELS
from ..machine import check_threads
from . import auth, tls, tracing
from .batcher import BatchConfig

MAX_WORKERS = 64


def split_model(value: str, default_name: str) -> tuple[str, str]:
    """A --model value -> (name, path): NAME=PATH, or PATH alone (served as `default_name`). A
    path with '=' in it is given as NAME=PATH."""
    name, sep, path = value.partition("=")
    if not sep:
        return default_name, value
    if not name or "/" in name or not path:
        raise ConfigError(f"--model {value!r}: give NAME=PATH, with a name that is a non-empty "
                          "path part")  # fmt: skip
    return name, path


@dataclass(frozen=True)
class ServeConfig:
    """What to serve, where, and the limits."""

    models: tuple[str, ...] = ()  # --model values: PATH or NAME=PATH (none: the default model)
    repository: str | None = None  # a folder of models: Triton's layout or model files
    backend: str | None = None
    precision: str | None = None
    threads: int | None = None  # engine threads per worker (default: threads.for_server)
    profile: str | None = None  # a deploy.json from tune
    web: str | None = None  # a web export to serve beside the API
    name: str = "mnist"  # the name of a model given without one (PATH alone, or the default)
    version: str = "1"  # the version of a model given as a file
    host: str = "127.0.0.1"
    port: int = 8000  # 0: any free port
    grpc: bool = True  # the protocol's gRPC service beside REST
    grpc_port: int | None = None  # None: port + 1 (Triton's 8000/8001), any free one if port is 0
    workers: int = 1  # server processes on the same ports (workers.py)
    batch: BatchConfig = field(default_factory=BatchConfig)
    max_body: int = policy.SERVE_MAX_BODY  # bytes
    max_request_images: int = policy.SERVE_MAX_REQUEST_IMAGES
    max_connections: int = policy.SERVE_MAX_CONNECTIONS
    timeout_s: float = policy.SERVE_TIMEOUT_S
    max_image_pixels: int = MAX_IMAGE_PIXELS
    verbose: bool = False  # log every request
    api_keys: tuple[str, ...] = field(default=(), repr=False)  # open the inference API (auth.py)
    admin_keys: tuple[str, ...] = field(default=(), repr=False)  # open model management too
    protect_metrics: bool = False  # /metrics needs a key too
    insecure: bool = False  # serve an address other machines reach without an inference key
    tls_cert: str | None = None  # PEM: REST and gRPC over TLS (tls.py)
    tls_key: str | None = None
    tls_client_ca: str | None = None  # clients must present a certificate this CA signed
    trace: bool = False  # OpenTelemetry spans of each request (tracing.py; OTEL_* configure)

    def __post_init__(self) -> None:
        check_threads(self.threads)
        checks = [
            (0 <= self.port <= 65535, f"--port must be 0..65535, got {self.port}"),
            (self.grpc_port is None or 0 <= self.grpc_port <= 65535,
             f"--grpc-port must be 0..65535, got {self.grpc_port}"),
            (not (self.grpc and self.port == 65535 and self.grpc_port is None),
             "--port 65535 leaves no port + 1 for gRPC: give --grpc-port or --no-grpc"),
            (self.max_body >= 1024, f"--max-body must be at least 1024 bytes, got "
                                    f"{self.max_body}"),
            (self.max_request_images >= 1, "--max-request-images must be at least 1"),
            (self.max_connections >= 1, "--max-connections must be at least 1"),
            (0 < self.timeout_s <= 3600 and math.isfinite(self.timeout_s),
             f"--timeout must be 0..3600 s, got {self.timeout_s}"),
            (bool(self.name) and "/" not in self.name, "--name must be a non-empty path part"),
            (bool(self.version) and "/" not in self.version,
             "the version must be a non-empty path part"),
            (1 <= self.workers <= MAX_WORKERS,
             f"--workers must be 1..{MAX_WORKERS}, got {self.workers}"),
            (not (self.models and self.repository),
             "give --model or --model-repository, not both"),
        ]  # fmt: skip
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        for key in self.api_keys:
            auth.check_key(key, "--api-key")
        for key in self.admin_keys:
            auth.check_key(key, "--admin-key")
        if not self.api_keys and not self.insecure and not auth.is_loopback(self.host):
            raise ConfigError(
                f"--host {self.host} is reachable from other machines and no --api-key is set: "
                "anyone reaching the port could call the models; give --api-key (or "
                f"--api-key-file, or {auth.ENV_API_KEYS}), or --insecure to serve it open"
            )
        tls.check(self.tls_cert, self.tls_key, self.tls_client_ca)
        if self.trace and not tracing.disabled_by_env():
            tracing.check()
        if self.protect_metrics and not (self.api_keys or self.admin_keys):
            raise ConfigError("--protect-metrics needs a key: give --api-key or --admin-key")
        if self.grpc and self.port and self.grpc_target == self.port:
            raise ConfigError(f"--grpc-port {self.grpc_port} is the REST port too: give another")
        if self.profile is not None and (self.models or self.repository or self.backend
                                         or self.precision):  # fmt: skip
            raise ConfigError("--profile names the model, backend and precision: drop --model, "
                              "--model-repository, --backend and --precision")  # fmt: skip
        names = [split_model(m, self.name)[0] for m in self.models]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ConfigError(f"--model names {', '.join(map(repr, twice))} more than once: give "
                              "each model its own NAME=PATH")  # fmt: skip

    @property
    def scheme(self) -> str:
        return "https" if self.tls_cert else "http"

    @property
    def keys(self) -> auth.Keys:
        """The keys as the server checks them (digests)."""
        return auth.Keys.of(self.api_keys, self.admin_keys, self.protect_metrics)

    @property
    def grpc_target(self) -> int:
        """The port gRPC asks for (0: any free one)."""
        if self.grpc_port is not None:
            return self.grpc_port
        return self.port + 1 if self.port else 0


__all__ = ["ServeConfig", "split_model", "MAX_WORKERS"]
