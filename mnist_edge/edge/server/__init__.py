"""`mnist-edge serve`: models behind the Open Inference Protocol (KServe V2 / Triton), over REST
and gRPC, with dynamic batching, several models replaced without downtime, and a process per
core. The parts, bottom up:

    config.py         ServeConfig: what to serve, where, the limits
    tensors.py        the protocol's tensors and requests, as both codecs read them
    rest_codec.py     REST bodies: JSON and the binary tensor extension
    grpc_codec.py     gRPC messages (Triton's proto, ../proto/)
    batcher.py        requests gathered into model calls
    metrics.py        Prometheus metrics per model, added up over workers
    models.py         the model repository: sources, loading, reload without a lost request
    model_server.py   the server's state and the protocol's operations, whatever the transport
    grpc_service.py   inference.GRPCInferenceService on a ModelServer
    app.py            the REST routes (ASGI), and the lifespan that starts gRPC beside them
    http_limits.py    uvicorn's HTTP parser with limits on the request head
    host.py           one server process under uvicorn: listening, draining on a signal
    workers.py        --workers N: processes sharing the ports, supervised
"""

from __future__ import annotations

from .config import ServeConfig
from .host import default_web, listen, url_of
from .model_server import ModelServer, ServerInfo
from .workers import serve

__all__ = ["ServeConfig", "ModelServer", "ServerInfo", "serve", "listen", "url_of",
           "default_web"]  # fmt: skip
