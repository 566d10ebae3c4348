"""TLS for REST and gRPC: the server's certificate and key (PEM), and optionally the CA whose
certificates clients must present (mutual TLS). Checked when the server is configured, so that
a file that is missing, not PEM, a key that is not the certificate's, or a certificate outside
its validity dates ends the command in one line instead of failing on the first client."""

from __future__ import annotations

import ssl
import time
from pathlib import Path
from typing import Any

from ..errors import ConfigError


def _validity(path: str) -> tuple[float, float] | None:
    """(notBefore, notAfter) of the first certificate in `path`, as seconds since the epoch;
    None when Python cannot say (its decoder is CPython's own, used by its tests)."""
    decode = getattr(getattr(ssl, "_ssl", None), "_test_decode_cert", None)
    if decode is None:
        return None
    try:
        cert = decode(path)
        return ssl.cert_time_to_seconds(cert["notBefore"]), ssl.cert_time_to_seconds(
            cert["notAfter"]
        )
    except (ssl.SSLError, KeyError, ValueError, OSError):
        return None


def check(cert: str | None, key: str | None, client_ca: str | None) -> None:
    """A ConfigError, in one line, unless the files make a working server context."""
    if (cert is None) != (key is None):
        raise ConfigError("give --tls-cert and --tls-key together (the certificate and its key)")
    if cert is None:
        if client_ca is not None:
            raise ConfigError("--tls-client-ca needs --tls-cert and --tls-key")
        return
    for flag, path in (("--tls-cert", cert), ("--tls-key", key), ("--tls-client-ca", client_ca)):
        if path is not None and not Path(path).is_file():
            raise ConfigError(f"{flag} {path}: no such file")
    context(cert, key, client_ca)  # type: ignore[arg-type]
    validity = _validity(cert)
    now = time.time()
    if validity is not None and not validity[0] <= now <= validity[1]:
        when = "expired" if now > validity[1] else "is not valid yet"
        raise ConfigError(f"--tls-cert {cert}: the certificate {when} (valid "
                          f"{time.strftime('%Y-%m-%d', time.gmtime(validity[0]))} to "
                          f"{time.strftime('%Y-%m-%d', time.gmtime(validity[1]))})")  # fmt: skip


def context(cert: str, key: str, client_ca: str | None) -> ssl.SSLContext:
    """The server's TLS context (TLS 1.2 at least; client certificates required with a CA)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        why = "the key is not the certificate's" if "MISMATCH" in str(exc) else "not PEM"
        raise ConfigError(f"--tls-cert {cert} / --tls-key {key}: cannot be used ({why}: "
                          f"{exc.reason or exc})") from None  # fmt: skip
    except OSError as exc:
        raise ConfigError(f"--tls-cert {cert} / --tls-key {key}: {exc.strerror or exc}") from None
    if client_ca is not None:
        try:
            ctx.load_verify_locations(cafile=client_ca)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(f"--tls-client-ca {client_ca}: not a PEM certificate "
                              f"({getattr(exc, 'reason', None) or exc})") from None  # fmt: skip
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def uvicorn_options(cert: str | None, key: str | None, client_ca: str | None) -> dict[str, Any]:
    """uvicorn.Config's TLS arguments (none without a certificate)."""
    if cert is None:
        return {}
    return {"ssl_certfile": cert, "ssl_keyfile": key, "ssl_ca_certs": client_ca,
            "ssl_cert_reqs": ssl.CERT_REQUIRED if client_ca else ssl.CERT_NONE}  # fmt: skip


def grpc_credentials(grpc: Any, cert: str, key: str, client_ca: str | None) -> Any:
    """gRPC's server credentials for the same files."""
    return grpc.ssl_server_credentials(
        [(Path(key).read_bytes(), Path(cert).read_bytes())],
        root_certificates=Path(client_ca).read_bytes() if client_ca else None,
        require_client_auth=client_ca is not None,
    )


__all__ = ["check", "context", "uvicorn_options", "grpc_credentials"]
