"""The conversion key space: order records, the delivery stream, delayed retries, dead letters,
paused shops and posted clicks. Every multi-key step is one Lua script over keys of one shop,
which share the ``{shopId}`` hash tag (so this works on Redis Cluster).

Per shop (``<p>`` = ``ngw:v1:conv:{shopId}``):

- ``<p>:order:<orderId>`` hash: the order's record (state, body, attempts, last error, times, the
  lines left out of the conversion, the duplicates seen, the id of the last outcome recorded).
  Its existence is the dedupe claim. No TTL while the order is pending or dead-lettered (it must
  not be lost); ``retention`` once delivered or dropped (then it only answers "duplicate").
- ``<p>:stream`` stream, consumer group ``workers``: orders ready for delivery. An entry is
  acknowledged *and deleted* when its order leaves it, so the stream holds only live work.
  No TTL: it is the queue.
- ``<p>:delayed`` sorted set orderId → due time (ms): orders waiting for a delayed retry. No TTL.
- ``<p>:pending`` sorted set orderId → accepted time (ms): every order not yet finished
  (queue depth and oldest pending age). No TTL.
- ``<p>:dead`` sorted set orderId → dead-lettered time (ms): the dead-letter list. No TTL:
  only an operator replays or drops a dead letter.
- ``<p>:paused`` hash {orderId, reason, since}: delivery for the shop is paused (Neuroon said
  401/403); orderId is the order a probe retries. No TTL: only a successful probe resumes.
- ``<p>:probe`` string: one worker at a time probes a paused shop. TTL: the probe interval.
- ``<p>:ignored:<orderId>`` string ``claim id \n time \n platform \n skipped lines (JSON)``: an order
  ignored for want of a sendable line, already counted (and what the admin API says of it). TTL: 7 days.
- ``ngw:v1:attr:{shopId}:<cartToken>`` hash productId → searchLogId, and
  ``ngw:v1:attrorder:{shopId}:<cartToken>`` sorted set productId → recency. TTL: 7 days.
- ``ngw:v1:attrcarts:{shopId}`` sorted set cartToken → last post (µs): the shop's stored carts, at
  most ``MAX_CARTS_PER_SHOP`` and ``MAX_CART_BYTES_PER_SHOP``; ``ngw:v1:attrsizes:{shopId}`` hash
  cartToken → its size in bytes, '' → their sum. TTL: 7 days from the last post.

An order is at any moment in exactly one of: the stream, the delayed set, the dead set, or
finished; every script that moves it keeps that true.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, ResponseError

from app.store import PREFIX
from app.store.durability import AckDurability, NotDurable
from app.store.topology import config_per_primary, info_per_primary, send_with_tail

GROUP = "workers"
# Workers subscribe here; a script that puts an order in a shop's stream publishes the stream's key,
# so that idle workers wake at once instead of polling every shop (classic PUBLISH: on a cluster
# it reaches every node, so a worker may subscribe on any of them).
WAKE_CHANNEL = f"{PREFIX}wake"
ATTRIBUTION_TTL_SECONDS = 7 * 86_400
# Clicks kept per cart. The widget's cookie is cut at 4096 bytes, which holds about 60-80 clicks of
# realistic ids: a real cart never comes near this, and a hostile one stops growing here.
MAX_CLICKS_PER_CART = 100
# Carts kept per shop: past either cap the carts posted to longest ago are deleted, so that no number
# of client addresses (a botnet, IPv6 /64s) can grow Redis without bound (a full Redis would refuse
# order claims too). Clicks are posted only where the order cannot carry them itself (not Shopify,
# whose widget writes them into cart attributes); a very busy such shop (5,000 orders a day, ~3 carts
# per order, every one with a search click) posts ~100,000 carts in the 7 days they are kept.
# Measured on Valkey (used_memory, tests/test_attribution_bound.py): ~0.6 KiB for a typical cart (3
# clicks, the index entries included), so such a shop holds ~60 MiB; but the largest cart allowed
# (100 clicks of the longest ids) takes ~224 KiB, so a count alone would allow ~22 GiB. The bytes cap
# (the carts' measured size) bounds that: 256 MiB is four times the busy shop's carts, and what a
# flood of maximal carts can hold (README "Running on the internet"). Not settings (interface.md §2
# has none): evicting a cart only loses the attribution of an order, never the order.
MAX_CARTS_PER_SHOP = 100_000
MAX_CART_BYTES_PER_SHOP = 256 * 1024 * 1024
# What a cart costs beyond its keys' MEMORY USAGE and its token: the keys' own entries (name, TTL)
# and its entries in the shop's index and sizes hash. Measured: a typical cart's keys report 400
# bytes, and used_memory grows ~670 bytes per cart; 400 + 200 + twice a 32-byte token matches it.
CART_OVERHEAD_BYTES = 200
# Carts evicted (or expired entries dropped from the index) per post, at most. One post adds at most
# one cart, but up to ~224 KiB (a 64 KiB cookie), while the least recent carts may be small: 128
# frees at least ~40 KiB even of the smallest carts (~350 bytes counted), so the bytes cap is
# overshot only while small carts make way for large ones (at most ~140 MiB, when 100,000 tiny carts
# give way to maximal ones), and each post stays cheap.
EVICTIONS_PER_POST = 128
IGNORED_TTL_SECONDS = 7 * 86_400


def conv_prefix(shop_id: str) -> str:
    return f"{PREFIX}conv:{{{shop_id}}}"


def order_key(shop_id: str, order_id: str) -> str:
    return f"{conv_prefix(shop_id)}:order:{order_id}"


def stream_key(shop_id: str) -> str:
    return f"{conv_prefix(shop_id)}:stream"


def delayed_key(shop_id: str) -> str:
    return f"{conv_prefix(shop_id)}:delayed"


def pending_key(shop_id: str) -> str:
    return f"{conv_prefix(shop_id)}:pending"


def dead_key(shop_id: str) -> str:
    return f"{conv_prefix(shop_id)}:dead"


def paused_key(shop_id: str) -> str:
    return f"{conv_prefix(shop_id)}:paused"


def probe_key(shop_id: str) -> str:
    return f"{conv_prefix(shop_id)}:probe"


def ignored_key(shop_id: str, order_id: str) -> str:
    return f"{conv_prefix(shop_id)}:ignored:{order_id}"


def attribution_key(shop_id: str, cart_token: str) -> str:
    return f"{PREFIX}attr:{{{shop_id}}}:{cart_token}"


def attribution_order_key(shop_id: str, cart_token: str) -> str:
    """The recency of each product in the cart's clicks (a sorted set), to keep the newest when full."""
    return f"{PREFIX}attrorder:{{{shop_id}}}:{cart_token}"


def attribution_carts_key(shop_id: str) -> str:
    """The shop's stored carts (a sorted set cartToken → last post, µs), to evict the oldest."""
    return f"{PREFIX}attrcarts:{{{shop_id}}}"


def attribution_sizes_key(shop_id: str) -> str:
    """The size of each of the shop's stored carts (a hash cartToken → bytes; '' → their sum)."""
    return f"{PREFIX}attrsizes:{{{shop_id}}}"


def _count_requests(argv: int, outcome: int | None = None) -> str:
    """After ``_UNFINISHED``: add ARGV[argv] requests sent to Neuroon to the order's ``attempts``
    (interface.md §3.4: every request, the client's immediate retries included). A late outcome of
    an order finished meanwhile changes nothing, as everywhere below. With ``outcome`` (the ARGV of
    the outcome id), a repeat of an outcome already recorded counts nothing again."""
    if outcome is None:
        return f"if unfinished then redis.call('HINCRBY', KEYS[1], 'attempts', ARGV[{argv}]) end\n"
    return (
        f"if unfinished and redis.call('HGET', KEYS[1], 'outcome') ~= ARGV[{outcome}] then\n"
        f"  redis.call('HINCRBY', KEYS[1], 'attempts', ARGV[{argv}])\n"
        f"  redis.call('HSET', KEYS[1], 'outcome', ARGV[{outcome}])\n"
        "end\n"
    )


_NOW_MS = "local t = redis.call('TIME') local now = t[1] * 1000 + math.floor(t[2] / 1000)\n"
# Wake the workers: the stream KEYS[2] has new work.
_WAKE = f"redis.call('PUBLISH', '{WAKE_CHANNEL}', KEYS[2])\n"
# Acknowledge the stream entry ARGV[1] (if any) and delete it: the stream keeps only live work.
_ACK_ENTRY = """
if ARGV[1] ~= '' then
  redis.call('XACK', KEYS[2], 'workers', ARGV[1])
  redis.call('XDEL', KEYS[2], ARGV[1])
end
"""

# Whether the order (KEYS[1]) still waits for an outcome. The steps below change only such an
# order: a late answer (a worker whose lease ran out, a slow pause probe) must never put back in the
# queue, or in the dead-letter list, an order that another worker has delivered meanwhile.
_UNFINISHED = """
local state = redis.call('HGET', KEYS[1], 'state')
local unfinished = state == 'accepted' or state == 'delivering'
"""

# KEYS: order, stream, pending, delayed, paused. ARGV: entry id (or ''), orderId. The order leaves
# the queue for good: off the pending and delayed sets, its stream entry acknowledged, and the pause
# lifted if it is the order the pause was holding.
_LEAVE_QUEUE = (
    """
redis.call('ZREM', KEYS[3], ARGV[2])
redis.call('ZREM', KEYS[4], ARGV[2])
"""
    + _ACK_ENTRY
    + """
if redis.call('HGET', KEYS[5], 'orderId') == ARGV[2] then redis.call('DEL', KEYS[5]) end
"""
)

# KEYS: order, stream, pending, ignored[, attribution]. ARGV: orderId, body, platform, ignored TTL,
# claim id, skipped lines (JSON, or ''), then the productIds the payload left unattributed. The
# dedupe claim and the enqueue are this one step: an order is queued at most once. Before queueing,
# clicks posted for the cart are looked up for the unattributed lines; when some are found nothing
# is written and they are returned, so that the caller completes the conversion and claims again
# (a second trip only in that case).
# The claim id makes the step safe to repeat: when a connection drops after Redis ran it, redis-py
# sends it again, and the same claim must answer as it did (accepted, first), not "duplicate".
# An answer about an order already claimed writes too (the repeat rewrites its claim id, a duplicate
# counts itself in ``duplicates``): WAIT covers only what its own connection wrote, and the claim it
# vouches for may have been written on another connection (or by another gateway) that a lagging
# replica has not received yet. A write there makes this connection's replication offset current, so
# the batch's WAIT covers the original claim and `duplicate` is answered only once a replica has it
# (else 503, and the platform retries). HINCRBY keeps the record's TTL (a delivered order's retention).
# The ignored branch needs none: an `ignored` answer vouches for nothing the gateway owes (no order is
# queued), and a lost ignored record only means a later repeat counts the order again.
_CLAIM = (
    _NOW_MS
    + """
local state = redis.call('HGET', KEYS[1], 'state')
if state then
  if redis.call('HGET', KEYS[1], 'claim') == ARGV[5] then
    redis.call('HSET', KEYS[1], 'claim', ARGV[5])
    return {1, 'accepted'}
  end
  redis.call('HINCRBY', KEYS[1], 'duplicates', 1)
  return {0, state}
end
if KEYS[5] and #ARGV > 6 then
  local found = {}
  local values = redis.call('HMGET', KEYS[5], unpack(ARGV, 7))
  for i, v in ipairs(values) do
    if v then
      table.insert(found, ARGV[6 + i])
      table.insert(found, v)
    end
  end
  if #found > 0 then return {2, found} end
end
if ARGV[2] == '' then
  local head = ARGV[5] .. '\\n'
  redis.call('SET', KEYS[4], head .. now .. '\\n' .. ARGV[3] .. '\\n' .. ARGV[6], 'NX', 'EX', ARGV[4])
  local seen = redis.call('GET', KEYS[4])
  if string.sub(seen, 1, #head) == head then return {3, 1} end
  return {3, 0}
end
redis.call('HSET', KEYS[1], 'state', 'accepted', 'body', ARGV[2], 'platform', ARGV[3],
  'acceptedAt', now, 'attempts', 0, 'round', 0, 'claim', ARGV[5])
if ARGV[6] ~= '' then redis.call('HSET', KEYS[1], 'skipped', ARGV[6]) end
redis.call('ZADD', KEYS[3], now, ARGV[1])
redis.call('XADD', KEYS[2], '*', 'o', ARGV[1])
"""
    + _WAKE
    + """
return {1, 'accepted'}
"""
)

# KEYS: order, stream. ARGV: entry id (or '' for a pause probe, whose order waits in the delayed set).
# Marks the start of a delivery round; returns the record. ``rounds`` (not ``attempts``, which counts
# requests and is added when the round's outcome is recorded) is what gives up on an order whose
# rounds keep crashing workers: a round that never records an outcome still counts here.
_BEGIN = (
    _NOW_MS
    + _UNFINISHED
    + """
if not unfinished then
"""
    + _ACK_ENTRY
    + """
  return false
end
redis.call('HSET', KEYS[1], 'state', 'delivering', 'lastAttemptAt', now)
redis.call('HINCRBY', KEYS[1], 'rounds', 1)
return redis.call('HGETALL', KEYS[1])
"""
)

# KEYS: order, stream, pending, delayed, paused, dead. ARGV: entry id (or ''), orderId, retention
# seconds, requests sent, the error of a request that failed before the 2xx ('' if none: the last
# error of earlier rounds stays, so an operator still sees it), outcome id. Neuroon's 2xx is the last
# word, even on an order another worker dead-lettered meanwhile (after its lease ran out): it leaves
# the dead-letter list, which would otherwise offer it for replay.
# The worker repeats this record until a replica has it: a repeat writes the outcome id again even
# when everything else was done, because WAIT covers only its own connection's writes, and the
# repeat's connection may not be the one that wrote the record first.
_DELIVERED = (
    _NOW_MS
    + """
if redis.call('EXISTS', KEYS[1]) == 1 then
  if redis.call('HGET', KEYS[1], 'outcome') ~= ARGV[6] then
    redis.call('HINCRBY', KEYS[1], 'attempts', ARGV[4])
    if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'lastError', ARGV[5]) end
    redis.call('HSET', KEYS[1], 'state', 'delivered', 'deliveredAt', now)
    redis.call('HDEL', KEYS[1], 'body', 'nextAttemptAt')
    redis.call('EXPIRE', KEYS[1], ARGV[3])
  end
  redis.call('HSET', KEYS[1], 'outcome', ARGV[6])
end
redis.call('ZREM', KEYS[6], ARGV[2])
"""
    + _LEAVE_QUEUE
    + """
return 1
"""
)

# KEYS: order, stream, delayed. ARGV: entry id (or ''), orderId, delay ms, round, error, requests sent,
# outcome id.
_RETRY_LATER = (
    _NOW_MS
    + _UNFINISHED
    + _count_requests(6, outcome=7)
    + """
if unfinished then
  local due = now + tonumber(ARGV[3])
  redis.call('HSET', KEYS[1], 'state', 'delivering', 'round', ARGV[4], 'lastError', ARGV[5],
    'nextAttemptAt', due)
  redis.call('ZADD', KEYS[3], due, ARGV[2])
end
"""
    + _ACK_ENTRY
    + """
return unfinished and 1 or 0
"""
)

# KEYS: order, stream, pending, delayed, paused, dead. ARGV: entry id (or ''), orderId, reason,
# requests sent, outcome id.
_DEAD_LETTER = (
    _NOW_MS
    + _UNFINISHED
    + _count_requests(4, outcome=5)
    + """
if unfinished then
  redis.call('HSET', KEYS[1], 'state', 'dead_lettered', 'lastError', ARGV[3], 'deadLetteredAt', now)
  redis.call('HDEL', KEYS[1], 'nextAttemptAt')
  redis.call('ZADD', KEYS[6], now, ARGV[2])
end
"""
    + _LEAVE_QUEUE
    + """
return 1
"""
)

# KEYS: order, stream, delayed, paused. ARGV: entry id (or ''), orderId, reason, requests sent,
# outcome id. The order waits in the delayed set (due at once) until a probe resumes the shop.
_PAUSE = (
    _NOW_MS
    + _UNFINISHED
    + _count_requests(4, outcome=5)
    + """
if unfinished then
  redis.call('HSET', KEYS[1], 'state', 'delivering', 'lastError', ARGV[3])
  redis.call('HDEL', KEYS[1], 'nextAttemptAt')
  redis.call('ZADD', KEYS[3], 0, ARGV[2])
end
"""
    + _ACK_ENTRY
    + """
if redis.call('EXISTS', KEYS[4]) == 0 then
  redis.call('HSET', KEYS[4], 'orderId', ARGV[2], 'reason', ARGV[3], 'since', now)
  return 1
end
return 0
"""
)

# KEYS: order. ARGV: error, requests sent. A pause probe that did not go through: the order stays
# where it waits (the delayed set, for the next probe) and only its record changes. Not once it is
# finished: a slow probe may overlap the next one, which could have delivered it meanwhile.
_PROBE_FAILED = (
    _UNFINISHED
    + _count_requests(2)
    + """
if not unfinished then return 0 end
redis.call('HSET', KEYS[1], 'lastError', ARGV[1])
return 1
"""
)

# KEYS: stream, delayed, paused. ARGV: consumer, count, reclaim idle ms (or ''), promote limit.
# A worker's whole look at one shop, in one command: nothing while the shop is paused ({1}); else due
# retries move into the stream, entries another worker took and stopped renewing (it died) are
# taken over when asked, and new entries are read, up to count in all ({0, entries}).
_POLL = (
    _NOW_MS
    + """
if redis.call('EXISTS', KEYS[3]) == 1 then return {1} end
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, tonumber(ARGV[4]))
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[2], id)
  redis.call('XADD', KEYS[1], '*', 'o', id)
end
local count = tonumber(ARGV[2])
local entries = {}
if ARGV[3] ~= '' then
  entries = redis.call('XAUTOCLAIM', KEYS[1], 'workers', ARGV[1], ARGV[3], '0-0', 'COUNT', count)[2]
end
if #entries < count then
  local read = redis.call('XREADGROUP', 'GROUP', 'workers', ARGV[1], 'COUNT', count - #entries,
    'STREAMS', KEYS[1], '>')
  if read then
    for _, entry in ipairs(read[1][2]) do table.insert(entries, entry) end
  end
end
return {0, entries}
"""
)

# KEYS: stream. ARGV: idle ms, a consumer to remove whatever its idle time (or ''). Removes the
# group's consumers that hold nothing (a worker that restarted leaves one behind each time). Atomic,
# so no read can slip between the check and the removal: a removed consumer owned no entry, and a
# live worker's consumer removed while idle comes back at its next read.
_PRUNE = """
local removed = 0
for _, consumer in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], 'workers')) do
  local f = {}
  for i = 1, #consumer, 2 do f[consumer[i]] = consumer[i + 1] end
  if f['pending'] == 0 and (f['idle'] >= tonumber(ARGV[1]) or f['name'] == ARGV[2]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], 'workers', f['name'])
    removed = removed + 1
  end
end
return removed
"""

# KEYS: order, stream, pending, dead. ARGV: orderId. A dead letter back into the stream. It starts
# afresh, rounds included: the worker gives up on an order past MAX_ROUNDS without sending it, and a
# replay after many rounds (a long pause probes with one order) must still send it. ``attempts`` (the
# requests sent) and ``lastError`` stay: they are the order's history.
_REPLAY = (
    _NOW_MS
    + """
if redis.call('ZREM', KEYS[4], ARGV[1]) == 0 then return 0 end
if redis.call('HEXISTS', KEYS[1], 'body') == 0 then return 0 end
redis.call('HSET', KEYS[1], 'state', 'accepted', 'round', 0, 'rounds', 0, 'replayedAt', now)
redis.call('HDEL', KEYS[1], 'deadLetteredAt', 'nextAttemptAt')
redis.call('ZADD', KEYS[3], redis.call('HGET', KEYS[1], 'acceptedAt') or now, ARGV[1])
redis.call('XADD', KEYS[2], '*', 'o', ARGV[1])
"""
    + _WAKE
    + """
return 1
"""
)

# KEYS: order, dead. ARGV: orderId, retention seconds. Dropped orders still answer "duplicate".
_DROP = (
    _NOW_MS
    + """
if redis.call('ZREM', KEYS[2], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'state', 'dropped', 'droppedAt', now)
redis.call('HDEL', KEYS[1], 'body')
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""
)

# KEYS: pending, paused, dead. Queue depth, oldest accepted time (ms, false when empty), paused,
# dead letters, and the server's TIME (seconds, microseconds).
_STATS = """
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local t = redis.call('TIME')
return {redis.call('ZCARD', KEYS[1]), oldest[2] or false, redis.call('EXISTS', KEYS[2]),
  redis.call('ZCARD', KEYS[3]), t[1], t[2]}
"""

# KEYS: attribution hash (productId -> searchLogId), its recency sorted set, the shop's carts index,
# the shop's cart sizes. ARGV: ttl, cap, cart token, carts cap, evictions per post, the shop's
# attribution key and recency key of an empty cart token (what a cart token is appended to), bytes
# cap, then productId/searchLogId pairs, oldest first. Each product posted becomes the newest (a
# counter, not the clock: no two products tie); past the cap the oldest products go, so a cart never
# holds more than ``cap`` clicks however often it is posted to. The caller sends at most ``cap`` pairs.
# The cart then becomes the shop's newest in the index (the server's clock in µs, kept strictly above
# the newest entry so that no two carts tie), and its size is recorded: its keys' MEMORY USAGE plus
# CART_OVERHEAD_BYTES for its entries in these two shop keys; the field '' (never a cart token) holds
# the sum. Index entries older than the TTL (their carts expired) are dropped, then while the shop
# has more carts or bytes than its caps the least recently posted carts are deleted, at most ARGV[5]
# entries in all per post. An evicted cart's keys are not in KEYS (they are only known here): they
# share the index's ``{shopId}`` hash tag, so on a cluster they are in this script's slot.
# Scores go through string.format: Lua would print a 16-digit number in %.14g, rounded.
_PUT_CLICKS = f"""
local last = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
local seq = tonumber(last[2] or 0)
for i = 9, #ARGV, 2 do
  seq = seq + 1
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  redis.call('ZADD', KEYS[2], seq, ARGV[i])
end
local extra = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[2])
if extra > 0 then
  redis.call('HDEL', KEYS[1], unpack(redis.call('ZRANGE', KEYS[2], 0, extra - 1)))
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, extra - 1)
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local newest = redis.call('ZRANGE', KEYS[3], -1, -1, 'WITHSCORES')[2]
if newest and tonumber(newest) >= now then now = tonumber(newest) + 1 end
redis.call('ZADD', KEYS[3], string.format('%.0f', now), ARGV[3])
local size = redis.call('MEMORY', 'USAGE', KEYS[1], 'SAMPLES', 0)
  + redis.call('MEMORY', 'USAGE', KEYS[2], 'SAMPLES', 0) + {CART_OVERHEAD_BYTES} + 2 * #ARGV[3]
local total = redis.call('HINCRBY', KEYS[4], '', size - tonumber(redis.call('HGET', KEYS[4], ARGV[3]) or 0))
redis.call('HSET', KEYS[4], ARGV[3], size)
redis.call('EXPIRE', KEYS[3], ARGV[1])
redis.call('EXPIRE', KEYS[4], ARGV[1])
local function forget(cart)
  total = redis.call('HINCRBY', KEYS[4], '', -tonumber(redis.call('HGET', KEYS[4], cart) or 0))
  redis.call('HDEL', KEYS[4], cart)
  redis.call('ZREM', KEYS[3], cart)
end
local budget = tonumber(ARGV[5])
local cutoff = string.format('(%.0f', now - tonumber(ARGV[1]) * 1000000)
for _, cart in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', cutoff, 'LIMIT', 0, budget)) do
  forget(cart)
  budget = budget - 1
end
if budget > 0 then
  for _, cart in ipairs(redis.call('ZRANGE', KEYS[3], 0, budget - 1)) do
    local over = redis.call('ZCARD', KEYS[3]) > tonumber(ARGV[4]) or total > tonumber(ARGV[8])
    if cart == ARGV[3] or not over then break end
    redis.call('DEL', ARGV[6] .. cart, ARGV[7] .. cart)
    forget(cart)
  end
end
return 1
"""


@dataclass(frozen=True, slots=True)
class Claim:
    outcome: Literal["accepted", "duplicate", "needs_clicks", "unattributed"]
    state: str | None = None  # duplicate: the order's state
    clicks: dict[str, str] | None = None  # needs_clicks: productId → searchLogId posted for the cart
    first: bool = False  # unattributed: the first time this order is seen so


@dataclass(frozen=True, slots=True)
class StreamEntry:
    shop_id: str
    entry_id: str
    order_id: str


@dataclass(frozen=True, slots=True)
class QueueStats:
    depth: int
    oldest_accepted_ms: int | None
    paused: bool
    dead_letters: int
    server_time_ms: int


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _outcome_id(given: str | None) -> str:
    """The id of an outcome record: the caller's when it writes the record again on purpose."""
    return given or secrets.token_hex(8)


def _record(flat: list[bytes]) -> dict[str, str]:
    return {_text(flat[i]): _text(flat[i + 1]) for i in range(0, len(flat), 2)}


class _GroupCommit:
    """Calls of one script issued in the same event-loop turn go to Redis in one pipeline (group commit).

    Each caller still awaits its own script's answer, so nothing about atomicity changes; under load,
    one round trip carries many webhooks, which is most of the intake's cost. With ``durability``, the
    batch is acknowledged only once its writes are on the replicas and the disk the deployment has
    (app/store/durability.py): one wait per batch, not per webhook. While a batch waits, the next one
    gathers and goes when the wait is over, so that one wait covers whatever arrived meanwhile (it would
    have waited for the same fsync or replica acknowledgement); without a wait to pay, batches go at once.
    """

    def __init__(
        self, client: aioredis.Redis, script: AsyncScript, durability: AckDurability | None = None
    ) -> None:
        self._client = client
        self._script = script
        self._durability = durability
        self._pending: list[tuple[list[str], list[Any], asyncio.Future[Any]]] = []
        self._running: set[asyncio.Task[None]] = set()
        self._waiting = False  # a batch is out waiting for durability: the next one gathers meanwhile

    async def call(self, keys: list[str], args: list[Any]) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._flush)
        self._pending.append((keys, args, future))
        return await future

    def _flush(self) -> None:
        if self._waiting or not self._pending:
            return  # the waiting batch's end flushes what gathered
        batch, self._pending = self._pending, []
        self._waiting = holds = self._durability is not None and self._durability.waits
        task = asyncio.create_task(self._run(batch, holds))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _execute(self, batch: list[tuple[list[str], list[Any], asyncio.Future[Any]]]) -> list[Any]:
        """The batch's results (an exception in place of a failed script's)."""
        plan = await self._durability.plan() if self._durability else None
        durability = self._durability if plan and plan.waits else None
        if len(batch) == 1 and durability is None:
            keys, args, _ = batch[0]
            return [await self._script(keys=keys, args=args)]
        # EVALSHA directly: a Script in a pipeline costs a SCRIPT EXISTS per execute. Each call's keys
        # share one shop's hash tag, so its first key names its slot (its node, on a cluster).
        sha = self._script.sha
        commands = [(keys[0], ("EVALSHA", sha, len(keys), *keys, *args)) for keys, args, _ in batch]
        # Then the wait, on each connection that took scripts: it covers its own connection's writes.
        wait = durability.wait_commands(plan) if durability and plan else []
        results: list[Any] = [None] * len(batch)
        for sent in await send_with_tail(self._client, commands, wait):
            shortfall: NotDurable | None = None
            if durability and plan and not all(isinstance(reply, Exception) for reply in sent.replies):
                try:
                    durability.check_wait(plan, sent.tail)
                except NotDurable as exc:
                    shortfall = exc
            for i, reply in zip(sent.positions, sent.replies, strict=True):
                # A script that ran is answered only once the wait covering it was met.
                results[i] = shortfall if shortfall and not isinstance(reply, Exception) else reply
        missing = [i for i, result in enumerate(results) if isinstance(result, NoScriptError)]
        if missing:  # Redis restarted or flushed its scripts: load it, run those again (and wait again)
            await self._client.script_load(self._script.script)
            again = await self._execute([batch[i] for i in missing])
            for i, result in zip(missing, again, strict=True):
                results[i] = result
        return results

    async def _run(self, batch: list[tuple[list[str], list[Any], asyncio.Future[Any]]], holds: bool) -> None:
        try:
            results = await self._execute(batch)
        except asyncio.CancelledError:
            for _, _, future in batch:
                future.cancel()
            raise
        except Exception as exc:
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        finally:
            if holds:
                self._waiting = False
                self._flush()
        for (_, _, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)


class ConversionStore:
    """Typed operations on the conversion key space."""

    def __init__(
        self,
        client: aioredis.Redis,
        durability: AckDurability | None = None,
        *,
        max_carts: int = MAX_CARTS_PER_SHOP,
        max_cart_bytes: int = MAX_CART_BYTES_PER_SHOP,
    ) -> None:
        """``durability``: what a write waits for before it counts as done (app/store/durability.py):
        a claim before the order is acknowledged to the platform, and the record of a delivery before
        the worker moves on (a record a failover erased would send the order again). The CLI's store
        has none. ``max_carts``, ``max_cart_bytes``: the carts of clicks kept per shop, and their
        measured size (tests lower them)."""
        self.redis = client
        self.durability = durability
        self.max_carts = max_carts
        self.max_cart_bytes = max_cart_bytes
        # The steps of every webhook and every delivery go through group commits.
        self._claim = _GroupCommit(client, client.register_script(_CLAIM), durability)
        # Not waited for: a round begun on the old primary only and erased by a failover is begun
        # again by whoever takes the entry over (README "Production": the window this leaves).
        self._begin = _GroupCommit(client, client.register_script(_BEGIN))
        self._delivered = _GroupCommit(client, client.register_script(_DELIVERED), durability)
        self._retry_later = client.register_script(_RETRY_LATER)
        self._dead_letter = client.register_script(_DEAD_LETTER)
        self._pause = client.register_script(_PAUSE)
        self._probe_failed = client.register_script(_PROBE_FAILED)
        self._poll = client.register_script(_POLL)
        self._prune = client.register_script(_PRUNE)
        self._replay = client.register_script(_REPLAY)
        self._drop = client.register_script(_DROP)
        self._put_clicks = client.register_script(_PUT_CLICKS)
        self._stats = client.register_script(_STATS)

    # --- intake ------------------------------------------------------------------------

    async def claim(
        self,
        shop_id: str,
        order_id: str,
        body: bytes,
        platform: str,
        *,
        cart_token: str | None = None,
        unattributed: Sequence[str] = (),
        claim_id: str | None = None,
        skipped: bytes = b"",
    ) -> Claim:
        """Claim the order and queue its conversion ``body``, atomically, unless it was claimed before.

        With a ``cart_token`` and ``unattributed`` productIds, clicks posted for the cart are looked
        up first: if any is found, nothing is written and they come back (``needs_clicks``). An empty
        ``body`` means nothing is attributable: the answer is ``unattributed``, ``first`` the first
        time for this order (so that it is counted once). ``skipped`` (JSON) lists the lines left out
        of the conversion, kept in the order's record.
        """
        keys = [
            order_key(shop_id, order_id),
            stream_key(shop_id),
            pending_key(shop_id),
            ignored_key(shop_id, order_id),
        ]
        # Names this claim: a repeat of it (redis-py's retry after a dropped connection) is answered
        # as the first time. Callers pass one only to repeat a claim on purpose.
        claim_id = claim_id or secrets.token_hex(8)
        args: list[str | bytes | int] = [order_id, body, platform, IGNORED_TTL_SECONDS, claim_id, skipped]
        if cart_token and unattributed:
            keys.append(attribution_key(shop_id, cart_token))
            args.extend(unattributed)
        code, value = await self._claim.call(keys, args)
        if code == 0:
            return Claim("duplicate", state=_text(value))
        if code == 1:
            return Claim("accepted", state="accepted")
        if code == 2:
            return Claim("needs_clicks", clicks=_record(value))
        return Claim("unattributed", first=bool(value))

    async def enqueue(self, shop_id: str, order_id: str, body: bytes, platform: str) -> bool:
        """Claim and queue a complete conversion; False when the order was claimed before."""
        return (await self.claim(shop_id, order_id, body, platform)).outcome == "accepted"

    async def put_clicks(
        self, shop_id: str, cart_token: str, clicks: Mapping[str, str], *, cap: int = MAX_CLICKS_PER_CART
    ) -> None:
        """Add a cart's clicks, in the mapping's order (oldest first); the newest ``cap`` products stay.
        The cart becomes the shop's most recently posted; past ``max_carts`` the least recent go."""
        args: list[str | int] = [
            ATTRIBUTION_TTL_SECONDS,
            cap,
            cart_token,
            self.max_carts,
            EVICTIONS_PER_POST,
            attribution_key(shop_id, ""),
            attribution_order_key(shop_id, ""),
            self.max_cart_bytes,
        ]
        for product_id, search_log_id in list(clicks.items())[-cap:]:
            args += [product_id, search_log_id]
        keys = [
            attribution_key(shop_id, cart_token),
            attribution_order_key(shop_id, cart_token),
            attribution_carts_key(shop_id),
            attribution_sizes_key(shop_id),
        ]
        await self._put_clicks(keys=keys, args=args)

    # --- delivery ----------------------------------------------------------------------

    async def ensure_group(self, shop_id: str) -> None:
        try:
            # From the start of the stream: entries added before the group existed are delivered too.
            await self.redis.xgroup_create(stream_key(shop_id), GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def poll(
        self, shop_id: str, consumer: str, count: int, *, reclaim_idle_ms: int | None = None
    ) -> list[StreamEntry] | None:
        """Work for ``consumer``: due retries promoted, then (with ``reclaim_idle_ms``) entries idle that
        long taken over, then new entries; at most ``count``. None while the shop is paused."""
        reply: Any = await self._poll(
            keys=[stream_key(shop_id), delayed_key(shop_id), paused_key(shop_id)],
            args=[consumer, count, "" if reclaim_idle_ms is None else reclaim_idle_ms, 500],
        )
        if reply[0] == 1:
            return None
        return self._entries(shop_id, reply[1])

    async def prune_consumers(self, shop_id: str, idle_ms: int, *, leaving: str = "") -> int:
        """Remove the consumers holding no entry and idle for ``idle_ms`` (and ``leaving``, if it holds
        none: a worker that stops); how many were removed."""
        return int(await self._prune(keys=[stream_key(shop_id)], args=[idle_ms, leaving]))

    async def renew(self, shop_id: str, consumer: str, entry_ids: Sequence[str]) -> None:
        """Reset the idle time of entries we are working on, so nobody reclaims them."""
        if entry_ids:
            await self.redis.xclaim(
                stream_key(shop_id),
                GROUP,
                consumer,
                min_idle_time=0,
                message_ids=list(entry_ids),
                justid=True,
            )

    @staticmethod
    def _entries(shop_id: str, raw: list[list[Any]]) -> list[StreamEntry]:
        """Entries as a script returns them: [id, [field, value, …]]; a deleted one has no fields."""
        entries = []
        for entry_id, fields in raw:
            order = _record(fields or []).get("o")
            if order is not None:
                entries.append(StreamEntry(shop_id, _text(entry_id), order))
        return entries

    async def begin_attempt(self, entry: StreamEntry) -> dict[str, str] | None:
        """Mark an attempt; the order's record, or None (acknowledged) when it is already finished."""
        flat = await self._begin.call(
            [order_key(entry.shop_id, entry.order_id), stream_key(entry.shop_id)], [entry.entry_id]
        )
        return _record(flat) if flat else None

    async def begin_probe(self, shop_id: str, order_id: str) -> dict[str, str] | None:
        """Mark a pause probe's attempt on an order waiting in the delayed set (it counts like any
        other attempt); the order's record, or None when the order is already finished."""
        flat = await self._begin.call([order_key(shop_id, order_id), stream_key(shop_id)], [""])
        return _record(flat) if flat else None

    async def probe_failed(self, shop_id: str, order_id: str, error: str, requests: int) -> None:
        await self._probe_failed(keys=[order_key(shop_id, order_id)], args=[error, requests])

    async def mark_delivered(
        self,
        shop_id: str,
        order_id: str,
        entry_id: str | None,
        retention_seconds: int,
        requests: int,
        error: str | None = None,
        *,
        outcome: str | None = None,
    ) -> None:
        """``requests`` sent in this round; ``error``: one of them failed before the 2xx. With a
        durability, returns once the record is where the deployment keeps copies (else NotDurable).
        ``outcome`` names this record: pass the same one to write it again safely (as for the other
        outcomes below)."""
        await self._delivered.call(
            [
                order_key(shop_id, order_id),
                stream_key(shop_id),
                pending_key(shop_id),
                delayed_key(shop_id),
                paused_key(shop_id),
                dead_key(shop_id),
            ],
            [entry_id or "", order_id, retention_seconds, requests, error or "", _outcome_id(outcome)],
        )

    async def retry_later(
        self,
        shop_id: str,
        order_id: str,
        entry_id: str | None,
        delay_ms: int,
        round_: int,
        error: str,
        requests: int,
        *,
        outcome: str | None = None,
    ) -> None:
        await self._retry_later(
            keys=[order_key(shop_id, order_id), stream_key(shop_id), delayed_key(shop_id)],
            args=[entry_id or "", order_id, delay_ms, round_, error, requests, _outcome_id(outcome)],
        )

    async def dead_letter(
        self,
        shop_id: str,
        order_id: str,
        entry_id: str | None,
        reason: str,
        requests: int = 0,
        *,
        outcome: str | None = None,
    ) -> None:
        await self._dead_letter(
            keys=[
                order_key(shop_id, order_id),
                stream_key(shop_id),
                pending_key(shop_id),
                delayed_key(shop_id),
                paused_key(shop_id),
                dead_key(shop_id),
            ],
            args=[entry_id or "", order_id, reason, requests, _outcome_id(outcome)],
        )

    async def pause(
        self,
        shop_id: str,
        order_id: str,
        entry_id: str | None,
        reason: str,
        requests: int,
        *,
        outcome: str | None = None,
    ) -> bool:
        """Pause the shop's delivery; True if it was not paused yet."""
        return bool(
            await self._pause(
                keys=[
                    order_key(shop_id, order_id),
                    stream_key(shop_id),
                    delayed_key(shop_id),
                    paused_key(shop_id),
                ],
                args=[entry_id or "", order_id, reason, requests, _outcome_id(outcome)],
            )
        )

    async def paused(self, shop_id: str) -> dict[str, str] | None:
        raw: Any = await self.redis.hgetall(paused_key(shop_id))
        return {_text(k): _text(v) for k, v in raw.items()} or None

    async def resume(self, shop_id: str) -> None:
        await self.redis.delete(paused_key(shop_id))

    async def acquire_probe(self, shop_id: str, owner: str, ttl_ms: int) -> bool:
        return bool(await self.redis.set(probe_key(shop_id), owner, nx=True, px=ttl_ms))

    async def next_delayed(self, shop_id: str) -> str | None:
        ids: Any = await self.redis.zrange(delayed_key(shop_id), 0, 0)
        return _text(ids[0]) if ids else None

    # --- inspection and dead letters ---------------------------------------------------

    async def ignored(self, shop_id: str, order_id: str) -> dict[str, str] | None:
        """An order ignored for want of a sendable line: {ignoredAt, platform, skipped}, or None."""
        raw: Any = await self.redis.get(ignored_key(shop_id, order_id))
        if raw is None:
            return None
        parts = _text(raw).split("\n", 3)
        if len(parts) < 4:  # written by an earlier version: the claim id alone
            return {}
        return {"ignoredAt": parts[1], "platform": parts[2], "skipped": parts[3]}

    async def order(self, shop_id: str, order_id: str) -> dict[str, str] | None:
        raw: Any = await self.redis.hgetall(order_key(shop_id, order_id))
        return {_text(k): _text(v) for k, v in raw.items()} or None

    async def stats(self, shop_id: str) -> QueueStats:
        # One script: the shop's keys and the clock of the node that owns them (on a cluster, a
        # pipeline cannot carry TIME, and another node's clock is not the one that stamped the orders).
        depth, oldest, paused, dead, seconds, micros = await self._stats(
            keys=[pending_key(shop_id), paused_key(shop_id), dead_key(shop_id)], args=[]
        )
        return QueueStats(
            depth=int(depth),
            oldest_accepted_ms=int(oldest) if oldest else None,
            paused=bool(paused),
            dead_letters=int(dead),
            server_time_ms=int(seconds) * 1000 + int(micros) // 1000,
        )

    async def dead_letters(self, shop_id: str, limit: int) -> list[tuple[str, int]]:
        rows: Any = await self.redis.zrange(dead_key(shop_id), 0, limit - 1, withscores=True)
        return [(_text(order_id), int(score)) for order_id, score in rows]

    async def replay(self, shop_id: str, order_id: str) -> bool:
        return bool(
            await self._replay(
                keys=[
                    order_key(shop_id, order_id),
                    stream_key(shop_id),
                    pending_key(shop_id),
                    dead_key(shop_id),
                ],
                args=[order_id],
            )
        )

    async def drop(self, shop_id: str, order_id: str, retention_seconds: int) -> bool:
        return bool(
            await self._drop(
                keys=[order_key(shop_id, order_id), dead_key(shop_id)], args=[order_id, retention_seconds]
            )
        )

    # --- durability --------------------------------------------------------------------

    async def durability_problems(self) -> list[str]:
        """Reasons the server could silently lose queued conversions (empty when it cannot tell).
        On a cluster every primary is asked, and a problem names the node it was found on."""
        problems = []
        memory = await info_per_primary(self.redis, "memory")
        persistence = await info_per_primary(self.redis, "persistence")
        for node, info in memory.items():
            where = "" if node == "primary" else f"{node}: "
            policy = _text(info.get("maxmemory_policy", "noeviction"))
            if policy != "noeviction":
                problems.append(
                    f"{where}maxmemory-policy is {policy}: queued conversions may be evicted (use noeviction)"
                )
            if not int(persistence.get(node, {}).get("aof_enabled", 0)):
                problems.append(
                    f"{where}appendonly is off: conversions queued since the last snapshot are lost if Redis "
                    "restarts (set appendonly yes)"
                )
                try:
                    save = (await config_per_primary(self.redis, "save")).get(node)
                except ResponseError:  # managed services often refuse CONFIG
                    save = None
                if save == "":
                    problems.append(
                        f"{where}no persistence at all: neither AOF nor RDB snapshots are configured"
                    )
        return problems
