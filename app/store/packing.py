"""Redis commands packed by hiredis's C packer on our asyncio connections.

redis-py's synchronous connections pack commands with ``hiredis.pack_command`` when hiredis is
installed; its asyncio connections still pack them in Python (redis/redis-py#4176, fix proposed in
redis/redis-py#4191). The webhook intake sends one EVALSHA of about a dozen arguments per order, and
packing it in Python was about 40% of the CPU the intake spends in the Redis client (make bench).

The bytes on the wire are the same: arguments still go through redis-py's own encoder (which
rejects bools and spells numbers with ``repr``); only the framing moves to C. Drop this module
once redis-py packs asyncio commands with hiredis itself.
"""

from __future__ import annotations

from typing import Any

import hiredis
from redis.asyncio.connection import (
    AbstractConnection,
    Connection,
    SSLConnection,
    UnixDomainSocketConnection,
)
from redis.asyncio.sentinel import SentinelManagedConnection, SentinelManagedSSLConnection
from redis.exceptions import DataError


class _HiredisPacking(AbstractConnection):
    def pack_command(self, *args: Any) -> list[bytes]:
        # hiredis takes bytes and str (as UTF-8, redis-py's default encoding) as they are; anything
        # else goes through redis-py's encoder first.
        utf8 = self.encoder.encoding == "utf-8"
        packed: list[str | bytes] = [
            arg if type(arg) is bytes or (utf8 and type(arg) is str) else self._encode(arg) for arg in args
        ]
        # As redis-py does: a command name with a space ("CONFIG GET") is several arguments.
        name = packed[0]
        if (" " in name) if isinstance(name, str) else (b" " in name):
            packed[:1] = name.split()
        command: Any = tuple(packed)  # hiredis's stub types this tuple as a 1-tuple
        try:
            return [hiredis.pack_command(command)]
        except (TypeError, UnicodeError) as exc:
            raise DataError(str(exc)) from None

    def _encode(self, arg: Any) -> bytes:
        encoded: bytes | bytearray | memoryview = self.encoder.encode(arg)  # type: ignore[no-untyped-call]
        return bytes(encoded)


class HiredisConnection(_HiredisPacking, Connection):
    pass


class HiredisSSLConnection(_HiredisPacking, SSLConnection):
    pass


class HiredisUnixDomainSocketConnection(_HiredisPacking, UnixDomainSocketConnection):
    pass


class HiredisSentinelConnection(_HiredisPacking, SentinelManagedConnection):
    pass


class HiredisSentinelSSLConnection(_HiredisPacking, SentinelManagedSSLConnection):
    pass


_PACKING_CLASS: dict[type[AbstractConnection], type[AbstractConnection]] = {
    Connection: HiredisConnection,
    SSLConnection: HiredisSSLConnection,
    UnixDomainSocketConnection: HiredisUnixDomainSocketConnection,
    SentinelManagedConnection: HiredisSentinelConnection,
    SentinelManagedSSLConnection: HiredisSentinelSSLConnection,
}


def with_hiredis_packing(connection_class: type[AbstractConnection]) -> type[AbstractConnection]:
    """The class with hiredis packing for the class redis-py chose for a URL (redis://, rediss://,
    unix://, a Sentinel's primary, a Cluster's nodes); any other class is kept as it is."""
    return _PACKING_CLASS.get(connection_class, connection_class)
