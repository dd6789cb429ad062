"""The Redis replay and budget store: every host of a deployment shares one Redis.

Each operation is one Lua script, run atomically by Redis in one round trip (EVALSHA, with
redis-py's fallback to loading the script when the server does not know it yet):

- ``reserve``: read the stored expiry, refuse if it is still live at the caller's ``now``
  (counting the presentation in the same value, for the replay observation), else ``SET``
  the new expiry, the first use and a count of 1 with ``PX``. A bare ``SET NX EXAT`` would
  make Redis' clock decide when a nonce may be reused; the script makes the caller's clock
  decide, as in the other backends, so the behaviour does not depend on which backend or
  which clock runs it. With an ``owner``, the same script keeps the owner's quota: a hash
  from quota bucket end to live slots (a few dozen fields at most, see
  :mod:`chio_middleware.core.replay`); it drops the buckets that ended, refuses when the
  live ones hold ``subject_quota`` slots, else counts the new slot, all in the one atomic
  call. The two keys must live on one server (no Redis Cluster across slots).
- ``consume``: a hash ``{count, expires_at}``; a new window starts when the stored one has
  ended at the caller's ``now``.
- ``take``: a hash ``{tokens, stamp}``, refilled with the same arithmetic, in the same order,
  as :class:`~chio_middleware.core.replay.MemoryReplayStore`.

Redis' own expiry is only a safety net that reclaims memory: it is set relative to the call
(``PX`` = the caller's ``expires_at - now``, or the time until a bucket is full again, plus
:data:`~chio_middleware.stores._common.EXPIRY_GRACE`), so neither Redis' clock nor a modest
skew between application hosts can drop an entry that a caller still considers live.

Keys are ``<key_prefix>replay:<key>``, ``<key_prefix>budget:<key>``,
``<key_prefix>bucket:<key>`` and ``<key_prefix>quota:<owner>``, and the epoch marker
``<key_prefix>epoch`` (a hash without expiry, always the last key of a call), which every
script reads in the same atomic step as its own work: when the marker is gone (a restart
without persistence, ``FLUSHALL``, eviction) or names another epoch than this process knew
(or is gone, and this process could not read it as it opened the store: it may have missed
an epoch), the script recreates it and stamps ``forgot_at`` with the later of the moment
it runs, by Redis' clock, and the app's clock as the call was made (see
:class:`~chio_middleware.stores._common.EpochWatch`); the middleware then refuses what may
have been forgotten. The logic is written once (:class:`_Scripts` builds each call: script,
keys, arguments, and the function that reads the result); :class:`RedisReplayStore` (sync,
for WSGI) and :class:`AsyncRedisReplayStore` (``redis.asyncio``, for ASGI) only differ in
how they send it.

Failure: sockets time out after ``timeout`` seconds (connect and each reply), redis-py's
retries are disabled, and the pool waits at most ``timeout`` for a free connection; any
``RedisError`` or ``OSError`` becomes :class:`~chio_middleware.core.errors.Unavailable` (503,
fail closed, never an allow). The async view also bounds each whole operation by ``timeout``.
A failed connection is dropped and the next call opens a new one, so the store recovers by
itself when Redis returns. Messages name the error class only: the URL may hold a password.

Limits: Redis replication is asynchronous, so a failover can forget the reservations and
counts of the last moments; without persistence (AOF) a restart forgets everything. The
epoch marker makes both visible (a replica that lost writes may still hold the marker; use
``appendonly yes`` with ``appendfsync always`` where no reservation may ever be lost). Run
Redis with ``maxmemory-policy noeviction``: an evicting policy would silently drop live
reservations, whereas ``noeviction`` makes writes fail, which this store turns into 503.
Redis 5.0 or later: a script reads ``TIME`` before it writes, which older servers refuse
unless the script asks for effects replication.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit

import redis
import redis.asyncio
import redis.asyncio.retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from ..core.errors import ReplayDetected, Unavailable
from ..core.replay import DEFAULT_SUBJECT_QUOTA, TokenBucket, quota_bucket_end, quota_exceeded
from ..logs import get_logger
from ._common import (
    EXPIRY_GRACE,
    EpochWatch,
    budget_exceeded,
    new_epoch,
    rate_limited,
    redact_url,
    stamp_floor,
)

__all__ = ["DEFAULT_MAX_CONNECTIONS", "AsyncRedisReplayStore", "RedisReplayStore"]

_log = get_logger()

#: Connections one pool (one process, or one event loop) opens at most.
DEFAULT_MAX_CONNECTIONS = 50

_GRACE_MS = round(EXPIRY_GRACE * 1000)
#: How far a noticing host's clock may stamp a loss past Redis' clock (see _EPOCH_LUA).
HOST_AHEAD_S = 300.0
_HOST_AHEAD = repr(HOST_AHEAD_S)
#: The longest safety-net expiry, in ms (about 115 days): PEXPIRE wants a plain integer.
_MAX_TTL_MS = 10**10

# Every script starts with this: the last key is the epoch marker, the last four ARGV are the
# epoch this process knows ('' for none yet, '?' for none by a process that could not read the
# marker when it opened the store: see EpochWatch.blind), a fresh epoch id, the floor of a
# loss's stamp (stamp_floor: the app's wall clock as the call was made) and HOST_AHEAD_S when
# the caller's clock is the wall clock ('0': a made-up clock, whose now is the stamp). Each
# reply starts with the marker's {epoch, forgot_at ('' when it never forgot)}. A loss is
# stamped with the later of the floor and the moment the script runs by Redis' clock, with no
# cap on the latter: a call can reach Redis long after it was made (a paused process, bytes
# held in the network after the client gave up), and the noticing host's clock can run
# behind, while other workers accepted proofs the loss erased; a stamp too early would accept
# them again, one too late (a Redis clock ahead) refuses fresh proofs for as long, and is
# logged (EpochWatch). The floor counts only up to HOST_AHEAD_S past Redis' clock: a host
# whose clock runs far ahead would otherwise refuse every host's fresh proofs for as long.
_EPOCH_LUA = """
local function stamp(floor, ahead)
  local most = tonumber(ahead)
  if most > 0 then
    local t = redis.call('TIME')
    local ran = tonumber(t[1]) + tonumber(t[2]) / 1000000
    return string.format('%.6f', math.max(ran, math.min(tonumber(floor), ran + most)))
  end
  return floor
end
local function epoch(key, known, fresh, floor, ahead)
  local state = redis.call('HMGET', key, 'id', 'forgot_at')
  if not state[1] then
    if known ~= '' then
      local at = stamp(floor, ahead)
      redis.call('HSET', key, 'id', fresh, 'forgot_at', at)
      return {fresh, at}
    end
    redis.call('HSET', key, 'id', fresh)
    return {fresh, ''}
  end
  if known ~= '' and known ~= '?' and state[1] ~= known and not state[2] then
    local at = stamp(floor, ahead)
    redis.call('HSET', key, 'forgot_at', at)
    return {state[1], at}
  end
  return {state[1], state[2] or ''}
end
local n = #ARGV
local e = epoch(KEYS[#KEYS], ARGV[n - 3], ARGV[n - 2], ARGV[n - 1], ARGV[n])
"""

# KEYS: the reservation, and the owner's quota hash when the call names an owner.
# ARGV: expires_at, now, ttl_ms, and with an owner: quota, bucket_end, grace_ms.
# The value is "expires_at first_used presented" (a bare expiry, as older versions wrote,
# has no observation). Returns {1} when reserved; {0, presentations before this one,
# first_used} when the key is live, counting this one in the same value (KEEPTTL: the
# reservation's lifetime is unchanged); {2, oldest bucket end} when the owner holds its
# quota of live slots (then nothing is written but the owner's ended buckets dropped).
# Each reply after the epoch marker's two fields.
_RESERVE_LUA = (
    _EPOCH_LUA
    + """
local now = tonumber(ARGV[2])
local stored = redis.call('GET', KEYS[1])
if stored then
  local expiry, first, presented = string.match(stored, '^(%S+) ?(%S*) ?(%S*)$')
  if tonumber(expiry) > now then
    if presented == '' then
      return {e[1], e[2], 0, -1, ''}
    end
    presented = tonumber(presented)
    redis.call('SET', KEYS[1], expiry .. ' ' .. first .. ' ' .. (presented + 1), 'KEEPTTL')
    return {e[1], e[2], 0, presented, first}
  end
end
if #KEYS == 3 then  -- the reservation, the owner's quota, the epoch marker
  local quota, bucket_end = tonumber(ARGV[4]), tonumber(ARGV[5])
  local fields = redis.call('HGETALL', KEYS[2])
  local held, oldest, latest = 0, math.huge, bucket_end
  for i = 1, #fields, 2 do
    local ends = tonumber(fields[i])
    if ends > now then
      held = held + tonumber(fields[i + 1])
      oldest = math.min(oldest, ends)
      latest = math.max(latest, ends)
    else
      redis.call('HDEL', KEYS[2], fields[i])
    end
  end
  if held >= quota then
    return {e[1], e[2], 2, oldest}
  end
  redis.call('HINCRBY', KEYS[2], ARGV[5], 1)
  redis.call('PEXPIRE', KEYS[2], math.max(0, math.ceil((latest - now) * 1000)) + ARGV[6])
end
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. ARGV[2] .. ' 1', 'PX', ARGV[3])
return {e[1], e[2], 1}
"""
)

# ARGV: limit, expires_at, now, ttl_ms.
# Returns {1, count} when counted, {0, expiry of the spent window} when refused.
_CONSUME_LUA = (
    _EPOCH_LUA
    + """
local state = redis.call('HMGET', KEYS[1], 'count', 'expires_at')
local count, expiry = 0, ARGV[2]
if state[1] and tonumber(state[2]) > tonumber(ARGV[3]) then
  count = tonumber(state[1])
  expiry = state[2]
end
if count >= tonumber(ARGV[1]) then
  return {e[1], e[2], 0, expiry}
end
if count == 0 then
  redis.call('HSET', KEYS[1], 'count', 1, 'expires_at', expiry)
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
else
  redis.call('HINCRBY', KEYS[1], 'count', 1)
end
return {e[1], e[2], 1, count + 1}
"""
)

# ARGV: rate, burst, now, grace_ms, max_ttl_ms.
# Returns {1} when a token was taken, {0, tokens left} when refused.
# The refill repeats refill() of _common.py operation for operation.
_TAKE_LUA = (
    _EPOCH_LUA
    + """
local rate, burst, now = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tokens, stamp = burst, now
local state = redis.call('HMGET', KEYS[1], 'tokens', 'stamp')
if state[1] then
  tokens, stamp = tonumber(state[1]), tonumber(state[2])
end
tokens = math.min(burst, tokens + math.max(0, now - stamp) * rate)
local taken = tokens >= 1
local left = tokens
if taken then
  left = tokens - 1
end
local ttl = tonumber(ARGV[5])
if left >= burst then
  ttl = 0
elseif rate > 0 then
  ttl = math.min(ttl, math.ceil((burst - left) / rate * 1000))
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', left), 'stamp', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ttl + tonumber(ARGV[4]))
if taken then
  return {e[1], e[2], 1}
end
return {e[1], e[2], 0, string.format('%.17g', tokens)}
"""
)

_T = TypeVar("_T")


@dataclass(frozen=True)
class _Call(Generic[_T]):
    """One script invocation, and how to turn its reply into the operation's outcome."""

    script: str
    keys: tuple[str, ...]
    args: tuple[str | int, ...]
    interpret: Callable[[Any], _T]


def _ttl_ms(seconds: float) -> int:
    """The safety-net expiry of an entry live for ``seconds`` more by the caller's clock."""
    return math.ceil(min(max(seconds, 0.0) * 1000, _MAX_TTL_MS)) + _GRACE_MS


# Only the epoch check: a process reads the marker when it opens the store, so that a
# worker which serves nothing before a restart still knows the epoch it must not forget.
_EPOCH_ONLY_LUA = _EPOCH_LUA + "return {e[1], e[2]}\n"


class _Scripts:
    """Key naming, argument building and reply reading: the logic both clients share."""

    sources = (_RESERVE_LUA, _CONSUME_LUA, _TAKE_LUA, _EPOCH_ONLY_LUA)

    def observe_epoch(self, now: float) -> _Call[None]:
        """The call that only reads (or creates) the epoch marker."""
        return self._call(_EPOCH_ONLY_LUA, (), (), now, lambda _rest: None)

    def __init__(self, key_prefix: str, subject_quota: int, watch: EpochWatch) -> None:
        self.key_prefix = key_prefix
        self.subject_quota = subject_quota
        self.watch = watch
        self.epoch_key = f"{key_prefix}epoch"

    def _call(
        self,
        script: str,
        keys: tuple[str, ...],
        args: tuple[str | int, ...],
        now: float,
        interpret: Callable[[Any], _T],
    ) -> _Call[_T]:
        """A call with the epoch check appended; its reply's marker goes to the watch."""

        def observe(reply: Any) -> _T:
            epoch, forgot, *rest = reply
            epoch = epoch.decode() if isinstance(epoch, bytes) else str(epoch)
            forgot = forgot.decode() if isinstance(forgot, bytes) else str(forgot or "")
            self.watch.observe(epoch, float(forgot) if forgot else None)
            return interpret(rest)

        known = self.watch.known or ("?" if self.watch.blind else "")
        floor, wall = stamp_floor(now)
        epoch_args = (known, new_epoch(), repr(floor), _HOST_AHEAD if wall else "0")
        return _Call(script, (*keys, self.epoch_key), (*args, *epoch_args), observe)

    def reserve(self, key: str, *, expires_at: float, now: float, owner: str | None) -> _Call[None]:
        """The call that reserves ``key`` until ``expires_at``, within ``owner``'s quota."""
        quota = self.subject_quota

        def interpret(reply: Any) -> None:
            outcome = int(reply[0])
            if outcome == 2:
                raise quota_exceeded(quota, float(reply[1]), now)
            if outcome != 1:
                presented, first = int(reply[1]), reply[2]
                known = presented >= 0
                raise ReplayDetected(
                    "this proof or nonce was already used",
                    prior_presentations=presented if known else None,
                    first_used_at=float(first) if known else None,
                )

        keys: tuple[str, ...] = (f"{self.key_prefix}replay:{key}",)
        args: tuple[str | int, ...] = (
            repr(float(expires_at)),
            repr(float(now)),
            _ttl_ms(expires_at - now),
        )
        if owner is not None:
            keys += (f"{self.key_prefix}quota:{owner}",)
            args += (quota, quota_bucket_end(expires_at), _GRACE_MS)
        return self._call(_RESERVE_LUA, keys, args, now, interpret)

    def consume(self, key: str, *, limit: int, expires_at: float, now: float) -> _Call[int]:
        """The call that counts one use of ``key`` against ``limit``."""

        def interpret(reply: Any) -> int:
            counted, value = reply
            if int(counted) != 1:
                raise budget_exceeded(limit, float(value), now)
            return int(value)

        args = (int(limit), repr(float(expires_at)), repr(float(now)), _ttl_ms(expires_at - now))
        return self._call(_CONSUME_LUA, (f"{self.key_prefix}budget:{key}",), args, now, interpret)

    def take(self, key: str, *, bucket: TokenBucket, now: float) -> _Call[None]:
        """The call that takes one token from ``key``'s bucket."""

        def interpret(reply: Any) -> None:
            if int(reply[0]) != 1:
                raise rate_limited(float(reply[1]), bucket)

        args = (
            repr(float(bucket.rate)),
            repr(float(bucket.burst)),
            repr(float(now)),
            _GRACE_MS,
            _MAX_TTL_MS,
        )
        return self._call(_TAKE_LUA, (f"{self.key_prefix}bucket:{key}",), args, now, interpret)


def _pool_options(timeout: float, max_connections: int) -> dict[str, Any]:
    """Connection-pool settings shared by the sync and async clients (retries added apart)."""
    return {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "timeout": timeout,  # BlockingConnectionPool: the wait for a free connection
        "max_connections": max_connections,
        "health_check_interval": 0,
        "protocol": 2,  # RESP2: the shortest handshake, understood by every Redis version
    }


def _unavailable(exc: BaseException) -> Unavailable:
    # The class name only: messages of connection errors can carry addresses, and the
    # error body reaches the client.
    return Unavailable(f"replay store unavailable: {type(exc).__name__}")


def _check_options(
    url: str, timeout: float, max_connections: int, subject_quota: int = DEFAULT_SUBJECT_QUOTA
) -> None:
    if not timeout > 0:
        raise ValueError("timeout must be a positive number of seconds")
    if subject_quota < 1:
        raise ValueError("subject_quota must be at least 1")
    if max_connections < 1:
        raise ValueError("max_connections must be at least 1")
    if not url.startswith(("redis://", "rediss://")):
        raise ValueError(f"not a redis:// or rediss:// URL: {redact_url(url)!r}")
    try:
        parts = urlsplit(url)
        database, _port = parts.path.strip("/"), parts.port  # a bad port raises ValueError
    except ValueError as exc:
        raise ValueError(f"invalid Redis URL {redact_url(url)!r}: {exc}") from None
    # redis-py quietly falls back to database 0 when the path is not a number.
    if database and not database.isdigit():
        raise ValueError(
            f"invalid Redis URL {redact_url(url)!r}: the path must be a database number"
        )


class RedisReplayStore:
    """A replay and budget store in Redis, shared by every host; the sync (WSGI) client."""

    def __init__(
        self,
        url: str,
        *,
        key_prefix: str = "chio:",
        timeout: float = 0.25,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        subject_quota: int = DEFAULT_SUBJECT_QUOTA,
    ) -> None:
        _check_options(url, timeout, max_connections, subject_quota)
        self.key_prefix = key_prefix
        self.timeout = timeout
        self.max_connections = max_connections
        self.subject_quota = subject_quota
        self._url = url
        self._watch = EpochWatch(redact_url(url))
        self._scripts = _Scripts(key_prefix, subject_quota, self._watch)
        try:
            pool = redis.BlockingConnectionPool.from_url(
                url, retry=Retry(NoBackoff(), 0), **_pool_options(timeout, max_connections)
            )
        except ValueError as exc:
            raise ValueError(f"invalid Redis URL {redact_url(url)!r}: {exc}") from None
        self._client = redis.Redis.from_pool(pool)
        self._registered = {
            source: self._client.register_script(source) for source in _Scripts.sources
        }
        self._view: AsyncRedisReplayStore | None = None
        self._view_lock = threading.Lock()
        # Learn the epoch now: a worker that first reached Redis only after a restart
        # without persistence would otherwise take the empty store for a new one and
        # accept a proof once more (seen with two uvicorn workers). Redis down: this process
        # is blind until its first operation, which takes a missing marker for a lost one.
        try:
            self._run(self._scripts.observe_epoch(time.time()))
        except Unavailable:
            self._watch.blind = True
            _log.warning(
                "chio_replay_store_unreachable_at_start",
                store=redact_url(url),
                message=(
                    "Redis could not be reached as this process started: until its first "
                    "operation it cannot tell a new Redis from an emptied one, so DPoP proofs, "
                    "execution nonces and max_invocations capabilities issued before then "
                    "are refused (chio_state_forgotten) unless Redis already has a marker"
                ),
            )

    def _run(self, call: _Call[_T]) -> _T:
        try:
            reply = self._registered[call.script](keys=list(call.keys), args=call.args)
        except (RedisError, OSError) as exc:
            raise _unavailable(exc) from None
        return call.interpret(reply)

    @property
    def forgotten_at(self) -> float | None:
        """When this store was seen to have lost its state (see ``EpochWatch``), or ``None``."""
        return self._watch.forgotten_at

    def reserve(self, key: str, *, expires_at: float, now: float, owner: str | None = None) -> None:
        """Record ``key`` until ``expires_at``; raise ``ReplayDetected`` if it is live, and
        ``ReservationQuotaExceeded`` if ``owner`` holds ``subject_quota`` live slots."""
        self._run(self._scripts.reserve(key, expires_at=expires_at, now=now, owner=owner))

    def consume(self, key: str, *, limit: int, expires_at: float, now: float) -> int:
        """Count one use of ``key`` until ``expires_at``; raise ``BudgetExceeded`` when spent."""
        return self._run(self._scripts.consume(key, limit=limit, expires_at=expires_at, now=now))

    def take(self, key: str, *, bucket: TokenBucket, now: float) -> None:
        """Take one token from ``key``'s bucket; raise ``RateLimited`` with the wait when empty."""
        self._run(self._scripts.take(key, bucket=bucket, now=now))

    def async_view(self) -> AsyncRedisReplayStore:
        """The ``redis.asyncio`` view of this store (same keys and scripts), made once."""
        with self._view_lock:
            if self._view is None:
                self._view = AsyncRedisReplayStore(
                    self._url,
                    key_prefix=self.key_prefix,
                    timeout=self.timeout,
                    max_connections=self.max_connections,
                    watch=self._watch,
                    subject_quota=self.subject_quota,
                )
            return self._view

    def close(self) -> None:
        """Close the sync pool and forget the async view's pools (``aclose`` them first)."""
        self._client.close()
        with self._view_lock:
            if self._view is not None:
                self._view.forget()


class _AsyncClient:
    """A ``redis.asyncio`` client and its registered scripts, for one event loop."""

    def __init__(self, url: str, timeout: float, max_connections: int) -> None:
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            url,
            retry=redis.asyncio.retry.Retry(NoBackoff(), 0),
            **_pool_options(timeout, max_connections),
        )
        self.client = redis.asyncio.Redis.from_pool(pool)
        self.registered = {
            source: self.client.register_script(source) for source in _Scripts.sources
        }


class AsyncRedisReplayStore:
    """The ``redis.asyncio`` (ASGI) client of a Redis store; same keys, scripts and outcomes.

    asyncio connections belong to the event loop that opened them, so each running loop gets
    its own pool (a test client that starts a loop per request keeps working); pools of
    loops that have closed are dropped. Call :meth:`aclose` on the loop before it ends.
    """

    def __init__(
        self,
        url: str,
        *,
        key_prefix: str = "chio:",
        timeout: float = 0.25,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        subject_quota: int = DEFAULT_SUBJECT_QUOTA,
        watch: EpochWatch | None = None,
    ) -> None:
        _check_options(url, timeout, max_connections, subject_quota)
        self.key_prefix = key_prefix
        self.timeout = timeout
        self.max_connections = max_connections
        self.subject_quota = subject_quota
        self._url = url
        # Built alone, it reads no marker as it opens (no event loop yet): blind, like a sync
        # store that found Redis down, so a missing marker is taken for a lost one.
        self._watch = watch if watch is not None else EpochWatch(redact_url(url), blind=True)
        self._scripts = _Scripts(key_prefix, subject_quota, self._watch)
        self._clients: dict[asyncio.AbstractEventLoop, _AsyncClient] = {}
        self._lock = threading.Lock()
        try:  # parse now, so a bad URL fails at start-up rather than at the first request
            redis.asyncio.ConnectionPool.from_url(url)
        except ValueError as exc:
            raise ValueError(f"invalid Redis URL {redact_url(url)!r}: {exc}") from None

    def _client(self) -> _AsyncClient:
        loop = asyncio.get_running_loop()
        with self._lock:
            client = self._clients.get(loop)
            if client is None:
                for closed in [other for other in self._clients if other.is_closed()]:
                    del self._clients[closed]
                client = _AsyncClient(self._url, self.timeout, self.max_connections)
                self._clients[loop] = client
            return client

    async def _run(self, call: _Call[_T]) -> _T:
        try:
            async with asyncio.timeout(self.timeout):
                reply = await self._client().registered[call.script](
                    keys=list(call.keys), args=call.args
                )
        except (RedisError, OSError) as exc:  # asyncio's TimeoutError is an OSError
            raise _unavailable(exc) from None
        return call.interpret(reply)

    @property
    def forgotten_at(self) -> float | None:
        """See :attr:`RedisReplayStore.forgotten_at` (the same knowledge)."""
        return self._watch.forgotten_at

    async def reserve(
        self, key: str, *, expires_at: float, now: float, owner: str | None = None
    ) -> None:
        """See :meth:`RedisReplayStore.reserve`."""
        call = self._scripts.reserve(key, expires_at=expires_at, now=now, owner=owner)
        await self._run(call)

    async def consume(self, key: str, *, limit: int, expires_at: float, now: float) -> int:
        """Count one use of ``key`` until ``expires_at``; raise ``BudgetExceeded`` when spent."""
        call = self._scripts.consume(key, limit=limit, expires_at=expires_at, now=now)
        return await self._run(call)

    async def take(self, key: str, *, bucket: TokenBucket, now: float) -> None:
        """Take one token from ``key``'s bucket; raise ``RateLimited`` with the wait when empty."""
        await self._run(self._scripts.take(key, bucket=bucket, now=now))

    async def aclose(self) -> None:
        """Close the running loop's pool (a later call opens a new one)."""
        with self._lock:
            client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.client.aclose()

    def forget(self) -> None:
        """Drop every pool without closing it (for a sync ``close``; prefer :meth:`aclose`)."""
        with self._lock:
            self._clients.clear()
