"""The metrics listener: ``/metrics``, ``/livez`` and ``/readyz`` on an address of their own.

``/metrics`` names every shop and its order volumes, which is nobody's business on a public ingress.
With ``GATEWAY_METRICS_ADDRESS`` (e.g. ``127.0.0.1:9100`` or an internal interface) ``serve`` answers
``/metrics`` there only; ``worker`` has no API, so this listener is how it is scraped and probed.

It is a second uvicorn server in the process's event loop: the probes answer from the loop that does
the work (a loop that is stuck fails them), and the readiness check is app/health.py's, the same as
the API's ``/readyz``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app.health import readiness_response

log = logging.getLogger(__name__)

STOP_SECONDS = 5.0


class ListenerError(Exception):
    """The listener's address cannot be listened on (taken, not an address of this host …)."""


def listener_app(
    metrics: Callable[[], Awaitable[Response]], not_ready_reason: Callable[[], Awaitable[str | None]]
) -> Starlette:
    async def metrics_route(_: Request) -> Response:
        return await metrics()

    async def livez(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(_: Request) -> Response:
        return readiness_response(await not_ready_reason())

    async def not_found(_: Request, __: Exception) -> Response:
        return JSONResponse(
            {"error": "not_found", "detail": "this listener serves /metrics, /livez, /readyz"}, 404
        )

    return Starlette(
        routes=[
            Route("/metrics", metrics_route, methods=["GET"]),
            Route("/livez", livez, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
        ],
        exception_handlers={404: not_found, 405: not_found},
    )


class _InLoopServer(uvicorn.Server):
    """A uvicorn server that leaves signals alone (the process's main server or worker owns them)
    and says when it listens."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.listening.set()


def _bind(host: str, port: int, setting: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ListenerError(f"{setting}: cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.set_inheritable(True)
    return sock


@contextlib.asynccontextmanager
async def serving(app: Starlette, host: str, port: int, setting: str) -> AsyncIterator[None]:
    """Serve ``app`` on host:port for the duration of the block. Binding happens here, so a taken
    port fails start-up with ListenerError naming ``setting`` instead of uvicorn's exit from inside
    the loop."""
    sock = _bind(host, port, setting)
    server = _InLoopServer(
        uvicorn.Config(app, log_config=None, access_log=False, lifespan="off", timeout_keep_alive=5)
    )
    task = asyncio.create_task(server.serve(sockets=[sock]))
    listening = asyncio.create_task(server.listening.wait())
    await asyncio.wait({task, listening}, return_when=asyncio.FIRST_COMPLETED)
    listening.cancel()
    if task.done():
        sock.close()
        task.result()  # raises what stopped it
        raise ListenerError(f"the listener on {host}:{port} stopped at once")
    log.info("metrics_listener_started", extra={"address": f"{host}:{port}"})
    try:
        yield
    finally:
        server.should_exit = True
        try:
            await asyncio.wait_for(task, STOP_SECONDS)
        except TimeoutError:
            task.cancel()
        sock.close()
