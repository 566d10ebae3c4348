"""uvicorn's httptools protocol with the limits a client's request head needs: a target over
policy.SERVE_MAX_URL is answered 414 URI Too Long, a request line and headers over
policy.SERVE_MAX_HEAD 431 Request Header Fields Too Large (RFC 9110 15.5.15, RFC 6585 5), each
as soon as the limit is passed, before the rest arrives. httptools itself buffers a header of
any size (a 200 kB header was answered 200) and calls a long target a plain 400.

Counted per read: a head is refused once the bytes read since it began pass the limit, so what
a client can make the server hold is one limit plus one socket read."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from .. import policy


def protocol_class() -> type:
    """The HttpToolsProtocol subclass (uvicorn and httptools imported here, by `serve`)."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class LimitedHttpTools(HttpToolsProtocol):  # type: ignore[misc, valid-type]
        max_url = policy.SERVE_MAX_URL
        max_head = policy.SERVE_MAX_HEAD

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._in_head, self._head_bytes = True, 0
            self._refused: tuple[int, str] | None = None

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._in_head, self._head_bytes = True, 0

        def _over(self, url: int, head: int) -> tuple[int, str] | None:
            if url > self.max_url:
                return 414, f"the request target is over {self.max_url:,} bytes"
            if head > self.max_head:
                return 431, f"the request line and headers are over {self.max_head:,} bytes"
            return None

        def on_headers_complete(self) -> None:
            self._in_head = False
            size = len(self.url) + sum(len(n) + len(v) + 4 for n, v in self.headers)
            self._refused = self._over(len(self.url), size)
            if self._refused is None:  # else no app call: data_received answers
                super().on_headers_complete()

        def data_received(self, data: bytes) -> None:
            if self._in_head:  # a head still arriving: refused once it passes the limit
                self._head_bytes += len(data)
            if self._refused is None:
                super().data_received(data)
            if self._refused is None and self._in_head and self.parser is not None:
                self._refused = self._over(len(getattr(self, "url", b"")), self._head_bytes)
            if self._refused is not None and not self.transport.is_closing():
                self._refuse(*self._refused)

        def send_400_response(self, msg: str) -> None:
            if self._refused is not None:  # the parser stumbled on the refused request's rest
                self._refuse(*self._refused)
            else:
                super().send_400_response(msg)

        def eof_received(self) -> bool | None:
            """A client that closes its side once its request is sent (`shutdown(SHUT_WR)`)
            still reads the answer: keep the connection open for writing while a request is
            in progress (asyncio closes it on EOF otherwise, and the answer is lost)."""
            cycle = getattr(self, "cycle", None)
            return True if cycle is not None and not cycle.response_complete else None

        def _refuse(self, status: int, message: str) -> None:
            body = (message + "\n").encode()
            head = (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
                    "content-type: text/plain; charset=utf-8\r\n"
                    f"content-length: {len(body)}\r\n"
                    "connection: close\r\n\r\n").encode()  # fmt: skip
            self.transport.write(head + body)
            self.transport.close()

    return LimitedHttpTools


__all__ = ["protocol_class"]
