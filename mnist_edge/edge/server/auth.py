"""Keys: who may call what. An inference key opens the inference API (metadata, readiness of a
model, configuration, the repository index, infer); an admin key opens that and model
management too (load, unload: a reload changes what everyone is answered). Health (live and
ready) stays open, for load balancers and orchestrators that probe without credentials, and so
does /metrics unless --protect-metrics (Prometheus scrapers are usually configured without a
key, and the figures name no input).

A key comes as `Authorization: Bearer KEY` or `X-API-Key: KEY` over REST, and as the same
metadata over gRPC. A missing or unknown key is 401 (gRPC UNAUTHENTICATED); a known key on the
wrong scope is 403 (PERMISSION_DENIED). Keys are compared as SHA-256 digests with
hmac.compare_digest, against every configured key whatever matched, so the time taken does not
depend on how much of a key was right or on its length; they are never logged or echoed.

With no key configured the server is open, which is safe only on loopback: config.py refuses
to bind any other address without an inference key unless --insecure says so.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError

ENV_API_KEYS = "MNIST_EDGE_API_KEYS"  # keys separated by commas or new lines
ENV_ADMIN_KEYS = "MNIST_EDGE_ADMIN_KEYS"
MIN_KEY, MAX_KEY = 16, 4096  # characters: shorter is guessable, longer is not a key
OPEN, INFERENCE, ADMIN = "open", "inference", "admin"

# gRPC methods by the scope they need (anything else: INFERENCE)
GRPC_SCOPES = {"ServerLive": OPEN, "ServerReady": OPEN,
               "RepositoryModelLoad": ADMIN, "RepositoryModelUnload": ADMIN}  # fmt: skip


def check_key(key: str, flag: str) -> str:
    """`key` if it can be a key: 16-4096 visible ASCII characters, no comma (the environment
    variables separate keys with commas); else a ConfigError naming `flag`, never the key."""
    if not MIN_KEY <= len(key) <= MAX_KEY:
        raise ConfigError(f"{flag}: a key must be {MIN_KEY}-{MAX_KEY} characters long, got one "
                          f"of {len(key)}")  # fmt: skip
    if not all(33 <= ord(c) <= 126 and c != "," for c in key):
        raise ConfigError(f"{flag}: a key may hold only visible ASCII characters other than "
                          "',' (no spaces, control characters or other alphabets)")  # fmt: skip
    return key


def read_keys(values: tuple[str, ...] | list[str] = (), file: str | None = None,
              env: str | None = None, flag: str = "--api-key") -> tuple[str, ...]:  # fmt: skip
    """The keys given as values, one a line in `file` (blank lines and # comments skipped), and
    in the environment variable `env`, each checked. Several keys: rotation (the old and the
    new one both open the server until the old one is dropped)."""
    keys = [*values]
    if file is not None:
        try:
            text = Path(file).read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            why = getattr(exc, "strerror", None) or type(exc).__name__
            raise ConfigError(f"{flag}-file {file}: cannot be read as ASCII text ({why})") from None
        keys += [line.strip() for line in text.splitlines()
                 if line.strip() and not line.lstrip().startswith("#")]  # fmt: skip
    if env is not None and os.environ.get(env):
        keys += [k.strip() for k in os.environ[env].replace("\n", ",").split(",") if k.strip()]
    return tuple(dict.fromkeys(check_key(k, flag) for k in keys))


def is_loopback(host: str) -> bool:
    """Whether `host` is reachable only from this machine (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _digest(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()


@dataclass(frozen=True)
class Keys:
    """The configured keys as digests, and whether /metrics needs one."""

    inference: tuple[bytes, ...] = field(default=(), repr=False)
    admin: tuple[bytes, ...] = field(default=(), repr=False)
    protect_metrics: bool = False

    @classmethod
    def of(cls, inference: tuple[str, ...], admin: tuple[str, ...],
           protect_metrics: bool = False) -> Keys:  # fmt: skip
        return cls(tuple(_digest(k.encode()) for k in inference),
                   tuple(_digest(k.encode()) for k in admin), protect_metrics)  # fmt: skip

    @property
    def enabled(self) -> bool:
        return bool(self.inference or self.admin)

    def scope_of(self, presented: str | None) -> str | None:
        """ADMIN, INFERENCE or None (no key, or an unknown one), in constant time: every
        configured digest is compared, whatever matched before."""
        digest = _digest((presented or "").encode("latin-1", "replace"))
        admin = inference = False
        for known in self.admin:
            admin |= hmac.compare_digest(digest, known)
        for known in self.inference:
            inference |= hmac.compare_digest(digest, known)
        if presented is None:
            return None
        return ADMIN if admin else INFERENCE if inference else None

    def refusal(self, needed: str, presented: str | None) -> tuple[int, str] | None:
        """None when a call needing `needed` may go on with the key `presented`; else (401 or
        403, why). Open when no key is configured at all."""
        if not self.enabled or needed == OPEN:
            return None
        if needed == INFERENCE and not self.inference:  # only an admin key was given
            return None
        scope = self.scope_of(presented)
        if scope is None:
            what = "a valid key" if presented is None else "a valid key (this one is not known)"
            return 401, (f"{what} is required: send Authorization: Bearer KEY or X-API-Key: KEY")
        if needed == ADMIN and scope != ADMIN:
            if not self.admin:
                return 403, ("model management is off over the network: the server was started "
                             "without --admin-key (SIGHUP still reloads)")  # fmt: skip
            return 403, "this key may call the inference API, not manage models: use an admin key"
        return None


def presented_key(header: object) -> str | None:
    """The key a request carries: `header(name)` gives a header's value (REST) or a metadata
    entry (gRPC), None when absent. Authorization: Bearer first, then X-API-Key."""
    auth = header("authorization")  # type: ignore[operator]
    if auth:
        scheme, _, token = auth.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    key = header("x-api-key")  # type: ignore[operator]
    return key.strip() if key else None


def rest_scope(method: str, path: str, keys: Keys) -> str:
    """The scope a REST request needs."""
    if path in ("/v2/health/live", "/v2/health/ready"):
        return OPEN
    if path == "/metrics":
        return INFERENCE if keys.protect_metrics else OPEN
    if path.startswith("/v2/repository/models/") and path.endswith(("/load", "/unload")):
        return ADMIN
    if path == "/v2" or path.startswith("/v2/"):
        return INFERENCE
    return OPEN  # the web export's static files (its calls to infer need a key)


def grpc_scope(method: str) -> str:
    """The scope a gRPC method (`/inference.GRPCInferenceService/NAME`) needs."""
    return GRPC_SCOPES.get(method.rsplit("/", 1)[-1], INFERENCE)


__all__ = [
    "Keys",
    "read_keys",
    "check_key",
    "is_loopback",
    "presented_key",
    "rest_scope",
    "grpc_scope",
    "ENV_API_KEYS",
    "ENV_ADMIN_KEYS",
    "OPEN",
    "INFERENCE",
    "ADMIN",
]
