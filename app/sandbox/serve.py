"""Serving the sandbox over HTTP: in a thread beside the gateway (demo mode), or on its own (CLI)."""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

import uvicorn


class SandboxServer:
    """The sandbox on its own uvicorn server in a daemon thread, with its own event loop.

    Demo mode runs it this way rather than mounting it inside the gateway: the gateway then talks to
    it over real HTTP exactly as it talks to Neuroon, and none of its routes shows up in the
    gateway's API or OpenAPI document. A thread (not a second server in the gateway's loop) because
    uvicorn installs signal handlers only in the main thread: Ctrl-C stops the gateway, and the
    gateway's shutdown stops this.
    """

    def __init__(self, app: Any, host: str, port: int) -> None:
        config = uvicorn.Config(
            app, host=host, port=port, log_config=None, access_log=False, lifespan="off", loop="asyncio"
        )
        self.server = uvicorn.Server(config)
        self.url = f"http://{host}:{port}"
        self._thread = threading.Thread(target=self._run, name="neuroon-sandbox", daemon=True)

    def _run(self) -> None:
        # uvicorn exits with SystemExit when it cannot bind; in a thread that would be an unhandled
        # exception. start() sees the thread end and reports the failure instead.
        with contextlib.suppress(SystemExit):
            self.server.run()

    def start(self, timeout: float = 10.0) -> str:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.server.started:
                return self.url
            if not self._thread.is_alive():
                break
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"the Neuroon sandbox could not listen on {self.url} (is the port in use?)")

    def stop(self) -> None:
        self.server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout=10)
