"""The HTTP server of `serve`: uvicorn's httptools protocol with the connection limits it lacks.

uvicorn limits neither the size of a request's headers nor the time a client may take to send
them: an 8 MiB header was accepted (httptools buffers a header value whole), and slow
partial-header connections stayed open indefinitely (slowloris). Facing the internet, or behind a
proxy, the gateway needs:

- ``max_header_bytes``: the request line and headers together; more is refused with 431 and the
  connection closed, counted as the bytes arrive, so an endless header never sits in memory.
- ``header_timeout``: seconds from a connection's first byte (or a keep-alive request's first
  byte) to the end of its headers; past it the connection gets 408 and is closed.
- ``keep_alive_timeout``: seconds an idle keep-alive connection is kept (uvicorn's own timer).
- ``max_concurrency``: open connections plus requests in flight in this process; a request beyond
  it gets 503 with Retry-After at once instead of queueing (uvicorn's check, with our error shape).

Request bodies have their own limits where they are read (GATEWAY_WEBHOOK_MAX_BYTES, the
attribution body limit).
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app import metrics
from app.settings import Settings


def _error_body(code: str, detail: str) -> bytes:
    return orjson.dumps({"error": code, "detail": detail})


def _refusal(status: int, code: str, detail: str, extra: list[tuple[bytes, bytes]]) -> ASGIApp:
    """An ASGI app answering every request with one error and closing the connection."""
    body = _error_body(code, detail)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
        *extra,
    ]

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


def _raw_response(status_line: bytes, code: str, detail: str) -> bytes:
    """A whole response as bytes, for connections whose request never got as far as a scope."""
    body = _error_body(code, detail)
    return (
        status_line
        + b"\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )


class LimitedHttpProtocol(HttpToolsProtocol):
    """One connection; the class attributes are set per server by ``protocol_class``."""

    max_header_bytes = 32 * 1024
    header_timeout = 10.0
    max_concurrency = 2048

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # uvicorn's own concurrency check answers in plain text: ours (below) uses the error shape.
        self.limit_concurrency = None
        self._reading_headers = True
        self._received = 0  # bytes of the current request's headers received so far
        self._parsed = 0  # bytes of the current request's URL and headers, as parsed
        # The header clock: one timer per connection, not one per request. A keep-alive request
        # only moves the deadline; the timer, when it fires, waits on for a later deadline or does
        # nothing between requests (arming and cancelling a timer per request cost ~2.5 µs each).
        self._header_deadline = 0.0  # loop time by which the current request's headers must be in
        self._header_timer: asyncio.TimerHandle | None = None
        self._header_timer_at = 0.0  # the deadline the armed timer was set for

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_header_clock()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._reading_headers:
            super().data_received(data)
            return
        self._received += len(data)
        super().data_received(data)
        # Headers still incomplete after this chunk: all of it was header bytes.
        if self._reading_headers and self._received > self.max_header_bytes:
            self._refuse_raw(
                b"HTTP/1.1 431 Request Header Fields Too Large",
                "header_too_large",
                f"the request line and headers exceed {self.max_header_bytes} bytes",
            )

    def on_message_begin(self) -> None:
        super().on_message_begin()
        # The counters start at zero from the end of the previous request's headers: this is
        # called while the chunk that began the request, already counted, is parsed. A keep-alive
        # request starts its own header clock; the first one's started with the connection.
        if not self._reading_headers:
            self._reading_headers = True
            self._start_header_clock()

    def on_url(self, url: bytes) -> None:
        self._parsed += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._parsed += len(name) + len(value) + 4  # ": " and CRLF
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._reading_headers = False  # the header timer, if it fires now, does nothing
        parsed, self._received, self._parsed = self._parsed, 0, 0
        # Headers that completed within one large chunk are measured here, as parsed.
        if parsed > self.max_header_bytes:
            refusal = _too_large(self.max_header_bytes)
            metrics.connections_refused.labels("header_too_large").inc()
        elif len(self.connections) > self.max_concurrency or len(self.tasks) >= self.max_concurrency:
            refusal = _OVER_CAPACITY
            metrics.connections_refused.labels("over_capacity").inc()
        else:
            super().on_headers_complete()
            return
        real, self.app = self.app, refusal
        try:
            super().on_headers_complete()
        finally:
            self.app = real

    def _start_header_clock(self) -> None:
        self._header_deadline = self.loop.time() + self.header_timeout
        if self._header_timer is None:
            self._arm_header_timer()

    def _arm_header_timer(self) -> None:
        self._header_timer_at = self._header_deadline
        self._header_timer = self.loop.call_at(self._header_deadline, self._header_timer_fired)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timer_fired(self) -> None:
        self._header_timer = None
        if not self._reading_headers or self.transport.is_closing():
            return  # between requests: the next one arms it again
        if self._header_deadline > self._header_timer_at:
            self._arm_header_timer()  # a later request's headers: their own deadline
            return
        self._refuse_raw(
            b"HTTP/1.1 408 Request Timeout",
            "request_timeout",
            f"the request headers did not arrive within {self.header_timeout:g}s",
        )

    def _refuse_raw(self, status_line: bytes, code: str, detail: str) -> None:
        metrics.connections_refused.labels(code).inc()
        self._reading_headers = False
        self._disarm_header_timer()
        if not self.transport.is_closing():
            self.transport.write(_raw_response(status_line, code, detail))
            self.transport.close()


def _too_large(limit: int) -> ASGIApp:
    return _refusal(431, "header_too_large", f"the request line and headers exceed {limit} bytes", [])


_OVER_CAPACITY = _refusal(
    503, "over_capacity", "this instance is at its connection limit; retry shortly", [(b"retry-after", b"1")]
)


def protocol_class(settings: Settings) -> type[LimitedHttpProtocol]:
    """The protocol with this server's limits (a subclass: uvicorn builds one instance per connection)."""
    return type(
        "LimitedHttpProtocol",
        (LimitedHttpProtocol,),
        {
            "max_header_bytes": settings.gateway_max_header_bytes,
            "header_timeout": settings.gateway_header_timeout,
            "max_concurrency": settings.gateway_max_concurrency,
        },
    )


def server_config(app: ASGIApp, settings: Settings, host: str, port: int) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=protocol_class(settings),
        timeout_keep_alive=settings.gateway_keep_alive_timeout,
        log_config=None,
        access_log=False,
        proxy_headers=False,  # X-Forwarded-For is judged by GATEWAY_TRUSTED_PROXIES, not uvicorn
        timeout_graceful_shutdown=20,
    )
