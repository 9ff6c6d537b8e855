"""A TLS REDIS_URL's first connection, made at start-up by ``serve`` and ``worker``.

A Redis that is down or slow at start-up is an outage the process rides out (``/readyz`` says
so until it is back). A TLS handshake that fails is not: a certificate that the CA given by
``ssl_ca_certs`` (or the system's) did not sign, a host name that the certificate does not name,
or a port that does not speak TLS stays wrong until the configuration changes. So it stops
start-up like any other bad setting (exit 2, naming REDIS_URL): a crash loop is what an
orchestrator shows, where an unready pod would look like a Redis outage.

The reason given is the TLS library's verdict only: redis-py's own message names the host and
port, and nothing from the URL is ever quoted.
"""

from __future__ import annotations

import ssl

from redis.exceptions import RedisError

from app.store import connect
from app.store.redis_url import parse_redis_url


async def tls_refusal(url: str) -> str | None:
    """Why the TLS handshake with Redis failed, or None (it succeeded, the URL is not TLS, or the
    connection failed for a reason other than TLS)."""
    if not parse_redis_url(url).tls:
        return None
    client = connect(url)
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        return _tls_reason(exc)
    finally:
        await client.aclose()
    return None


def _tls_reason(exc: BaseException) -> str | None:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:  # redis-py chains or wraps the SSL error
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            return (
                f"the TLS certificate of a Redis node was not accepted ({current.verify_message}): "
                "give the CA that signed it with ?ssl_ca_certs=/path/to/ca.pem"
            )
        if isinstance(current, ssl.SSLError):
            return (
                f"the TLS handshake with a Redis node failed ({current.reason or 'no reason given'}): "
                "does it speak TLS on that port, and does it want a client certificate (ssl_certfile)?"
            )
        current = current.__cause__ or current.__context__
    return None
