"""REDIS_URL, every shape of interface.md §2, parsed in one place.

- one server: ``redis://[[user]:password@]host:port[/db]``, ``rediss://…`` (TLS), ``unix://[[user]:password@]/path``
  (``?db=N``);
- Sentinel: ``redis+sentinel://[[user]:password@]host:port[,host:port…]/<service>[/db]``
  (``rediss+sentinel://``: TLS to the data nodes; the Sentinels are asked in plain text, as
  interface §2 has it: Sentinels that accept only TLS are not supported);
- Cluster: ``redis+cluster://[[user]:password@]host:port[,host:port…]`` (``rediss+cluster://``).

The URL may carry a password, so no message of this module ever quotes it or any part of it: a
malformed URL is described by what is wrong ("the port is not a number"), never by what was
written. Query options (``?ssl_cert_reqs=none``, ``?socket_keepalive=true``…) are redis-py's own
and are checked by redis-py's parser, whose errors are replaced by ours for the same reason.

TLS options are checked here rather than at the first connection, where a mistake would read as
an outage (``/readyz`` 503 forever) instead of a configuration error: they need a ``rediss…``
scheme (on ``redis://`` redis-py ignores them, and the operator would believe the traffic is
encrypted), may not be blank (redis-py drops a blank value, so ``ssl_ca_certs=`` meant the system's
CAs), and their files must be readable (the CA file must hold a certificate). No option may be
given twice (redis-py keeps the first, silently).
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote

from redis.asyncio.connection import URL_QUERY_ARGUMENT_PARSERS, parse_url

Shape = Literal["server", "sentinel", "cluster"]

_SCHEMES: dict[str, tuple[Shape, bool]] = {
    "redis": ("server", False),
    "rediss": ("server", True),
    "unix": ("server", False),
    "redis+sentinel": ("sentinel", False),
    "rediss+sentinel": ("sentinel", True),
    "redis+cluster": ("cluster", False),
    "rediss+cluster": ("cluster", True),
}
SCHEMES = tuple(f"{name}://" for name in _SCHEMES)
DEFAULT_PORT = {"server": 6379, "sentinel": 26379, "cluster": 6379}
# Query options redis-py understands; any other would fail later, at the first connection.
QUERY_OPTIONS = frozenset(URL_QUERY_ARGUMENT_PARSERS) | {
    "client_name", "ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_ciphers",
}  # fmt: skip
TLS_FILE_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
CERT_REQS = ("none", "optional", "required")  # redis-py's names for ssl.VerifyMode
# RedisCluster takes the options of its nodes' connections except these.
NOT_FOR_CLUSTER = frozenset({"retry_on_timeout", "timeout"})


class RedisUrlError(ValueError):
    """What is wrong with a REDIS_URL, in words that never quote it."""


@dataclass(frozen=True, slots=True)
class RedisTarget:
    shape: Shape
    tls: bool
    # server (TCP), the Sentinels, or the Cluster's seed nodes; empty for unix://.
    nodes: tuple[tuple[str, int], ...]
    service: str | None = None  # Sentinel's name for the primary
    db: int = 0
    # Keyword arguments for redis-py's connections: credentials, TLS and query options.
    options: dict[str, Any] = field(default_factory=dict, repr=False)
    url: str = field(default="", repr=False)  # for one server, what redis-py's from_url takes

    def __repr__(self) -> str:  # the options and the URL may carry the password
        shape = f"shape={self.shape!r}, tls={self.tls}"
        return f"RedisTarget({shape}, nodes={self.nodes!r}, service={self.service!r})"


def parse_redis_url(url: str) -> RedisTarget:
    """Parse and validate; raises RedisUrlError (a ValueError) saying what is wrong."""
    url = url.strip()
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in _SCHEMES:
        raise RedisUrlError(f"unknown scheme: use one of {', '.join(SCHEMES)}")
    shape, tls = _SCHEMES[scheme.lower()]
    rest, _, fragment = rest.partition("#")
    if fragment:
        raise RedisUrlError("a URL fragment (#…) is not allowed")
    rest, _, query = rest.partition("?")
    _check_query(query, tls)
    # The password may contain '@' or '/' only percent-encoded; the last '@' ends the credentials.
    userinfo, at, location = rest.rpartition("@")
    if not at:
        userinfo, location = "", rest
    username, password = _credentials(userinfo) if at else (None, None)
    if scheme.lower() == "unix":
        return _unix(url, location, query, username, password)
    hosts, _, path = location.partition("/")
    nodes = tuple(_node(part, DEFAULT_PORT[shape]) for part in hosts.split(","))
    segments = [unquote(s) for s in path.split("/")] if path else []
    service: str | None = None
    db_text: str | None = None
    if shape == "sentinel":
        if not segments or not segments[0]:
            raise RedisUrlError(
                "a Sentinel URL names the primary's service: redis+sentinel://host:port/<service>"
            )
        service, db_segments = segments[0], segments[1:]
        if len(db_segments) > 1:
            raise RedisUrlError("a Sentinel URL has the form redis+sentinel://hosts/<service>[/db]")
        db_text = db_segments[0] if db_segments else None
    elif shape == "cluster":
        if len(segments) > 1 or (segments and segments[0] not in ("", "0")):
            raise RedisUrlError("a Cluster has only database 0: redis+cluster://host:port[,host:port…]")
    else:
        if len(nodes) > 1:
            raise RedisUrlError("one server has one host: list several with redis+sentinel or redis+cluster")
        if len(segments) > 1:
            raise RedisUrlError("the path is the database number: redis://host:port[/db]")
        db_text = segments[0] if segments else None
    db = _db(db_text)
    options = _options(tls, nodes[0], db, query, username, password)
    if shape == "cluster" and options.get("db"):
        raise RedisUrlError("a Cluster has only database 0")
    if shape == "cluster" and NOT_FOR_CLUSTER & set(options):
        raise RedisUrlError(f"a Cluster URL takes no {' or '.join(sorted(NOT_FOR_CLUSTER))} option")
    single = url if shape == "server" else ""
    return RedisTarget(shape, tls, nodes, service, db, options, single)


def _check_query(query: str, tls: bool) -> None:
    pairs = parse_qsl(query, keep_blank_values=True)
    names = [name for name, _ in pairs]
    if any(name not in QUERY_OPTIONS for name in names):
        known = ", ".join(sorted(QUERY_OPTIONS))
        raise RedisUrlError(f"an unknown query option: redis-py understands {known}")
    if len(set(names)) < len(names):
        raise RedisUrlError("a query option is given twice")
    tls_options = {name: value for name, value in pairs if name.startswith("ssl_")}
    if tls_options and not tls:
        raise RedisUrlError(
            "ssl_… options need a TLS scheme (rediss://, rediss+sentinel://, rediss+cluster://): "
            "without one the connection is not encrypted"
        )
    for name, value in tls_options.items():
        if not value:
            raise RedisUrlError(f"{name} is blank")
    if tls_options.get("ssl_cert_reqs", "required") not in CERT_REQS:
        raise RedisUrlError(f"ssl_cert_reqs is one of {', '.join(CERT_REQS)}")
    for name in TLS_FILE_OPTIONS:
        path = tls_options.get(name)
        if path is not None and not (os.path.isfile(path) and os.access(path, os.R_OK)):
            raise RedisUrlError(f"{name} names no readable file")
    if "ssl_ca_certs" in tls_options:
        try:
            ssl.create_default_context().load_verify_locations(cafile=tls_options["ssl_ca_certs"])
        except (ssl.SSLError, OSError, ValueError):  # its message names the file: ours does not
            raise RedisUrlError("ssl_ca_certs names a file that holds no PEM certificate") from None


def _unix(url: str, location: str, query: str, username: str | None, password: str | None) -> RedisTarget:
    if not location.startswith("/") or location == "/":
        raise RedisUrlError("a unix:// URL names the socket's absolute path: unix:///run/redis.sock")
    db = dict(parse_qsl(query)).get("db")
    try:
        kwargs: dict[str, Any] = dict(parse_url(url))
    except Exception:  # redis-py's message quotes the URL
        raise RedisUrlError("the query options are not valid") from None
    kwargs.pop("path", None)
    return RedisTarget("server", False, (), None, _db(db), kwargs, url)


def _credentials(userinfo: str) -> tuple[str | None, str | None]:
    user, colon, password = userinfo.partition(":")
    if not colon:
        # redis://secret@host: redis-py (and most clients) read a lone value as the password.
        return None, unquote(user) or None
    return unquote(user) or None, unquote(password) or None


def _node(text: str, default_port: int) -> tuple[str, int]:
    if not text:
        raise RedisUrlError("a host is missing (empty entry in the host list?)")
    if text.startswith("["):  # IPv6: [::1]:6379
        host, bracket, port_text = text[1:].partition("]")
        if not bracket or not host or (port_text and not port_text.startswith(":")):
            raise RedisUrlError("an IPv6 host must be written [address]:port")
        port_text = port_text[1:]
    else:
        host, _, port_text = text.partition(":")
        if not host:
            raise RedisUrlError("a host is missing before a port")
    if any(c.isspace() or c in "@/?#[]" for c in host):
        raise RedisUrlError("a host name contains characters a host name cannot have")
    if not port_text:
        return host, default_port
    if not port_text.isascii() or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise RedisUrlError("a port is not a number from 1 to 65535")
    return host, int(port_text)


def _db(text: str | None) -> int:
    if text in (None, ""):
        return 0
    assert text is not None
    if not text.isascii() or not text.isdigit() or int(text) > 1_000_000:
        raise RedisUrlError("the database is not a number")
    return int(text)


def _options(
    tls: bool, node: tuple[str, int], db: int, query: str, username: str | None, password: str | None
) -> dict[str, Any]:
    """redis-py's connection keyword arguments for these credentials and query options."""
    host, port = node
    probe = f"{'rediss' if tls else 'redis'}://{'[' + host + ']' if ':' in host else host}:{port}/{db}"
    if query:
        probe += f"?{query}"
    try:
        kwargs: dict[str, Any] = dict(parse_url(probe))
    except Exception:  # its message quotes the URL: ours does not
        raise RedisUrlError("the query options are not valid") from None
    for key in ("host", "port"):
        kwargs.pop(key, None)
    kwargs.pop("connection_class", None)  # each shape has its own
    kwargs["ssl"] = tls
    if username:
        kwargs["username"] = username
    if password:
        kwargs["password"] = password
    return kwargs
