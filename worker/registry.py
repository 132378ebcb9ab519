"""The call registry in Redis: which calls are held, where, since when, in what state.

Layout (protocol.py, README "The call registry"): a hash per call
(`hold:call:<id>`), a sorted set of heartbeats (`hold:heartbeats`) and a
sorted set of waiting calls per store (`hold:waiting:<store>`).

Every write is one Lua script, so a record, its heartbeat and its place in
line change together, and every write is fenced by the record's `owner`: a
worker that was only slow (a long pause) and comes back after a guardian took
its call over finds another owner, writes nothing, and leaves. Heartbeats are
Redis server time (`TIME`), so no two hosts' clocks are compared.

`Registry` is the thin client every side uses (the worker's `RegistrySink`,
the guardian's `HeartbeatWatch`, later the desk). `RegistrySink` is the
worker's side: a publisher sink (publisher.py) that writes the call's record
at once on a change and every `HEARTBEAT_S` in between.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import socket
from collections.abc import Callable, Mapping
from typing import Any

from .aio import Log, stop_task
from .lifecycle import State
from .protocol import (
    DESK_ACTION_HANGUP,
    DESK_ACTION_TAKE,
    DESK_HISTORY_KEY,
    GUARDIAN_OWNER_PREFIX,
    REGISTRY_CALL_KEY,
    REGISTRY_HEARTBEATS,
    REGISTRY_RECORD_TTL_MS,
    REGISTRY_WAITING,
)
from .publisher import CallView

logger = logging.getLogger("hold-worker.registry")

HEARTBEAT_S = 0.4  # the record is written at least this often (the contract says 500 ms)
NO_STORE = "-"
WAITING_STATES = frozenset({State.WAITING, State.HOLDING})

# Owner fencing, shared by the scripts: the caller may write when the record
# is new, its own, or held by a guardian for someone else (the replica the
# guardian dispatched takes it over; the worker it was taken from may not).
_MAY_WRITE = """
local owner = redis.call('HGET', KEYS[1], 'owner')
local me = ARGV[1]
local ok = (not owner) or owner == me
  or (string.sub(owner, 1, string.len(ARGV[2])) == ARGV[2] and owner ~= ARGV[2] .. me)
"""

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS: call, heartbeats, waiting (new store), waiting (previous store)
# ARGV: owner, guardian prefix, id, ttl_ms, waiting 0|1, hold_since, field, value, ...
# A call an agent took at the desk (`taken_by`) never goes back into line.
_WRITE = (
    _MAY_WRITE
    + _NOW
    + """
if not ok then return 0 end
if redis.call('HEXISTS', KEYS[1], 'taken_by') == 1 then ARGV[5] = '0' end
redis.call('HSET', KEYS[1], 'owner', me, 'heartbeat', now, unpack(ARGV, 7))
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('ZADD', KEYS[2], now, ARGV[3])
if KEYS[4] ~= KEYS[3] then redis.call('ZREM', KEYS[4], ARGV[3]) end
if ARGV[5] == '1' then redis.call('ZADD', KEYS[3], ARGV[6], ARGV[3])
else redis.call('ZREM', KEYS[3], ARGV[3]) end
return 1
"""
)

# KEYS: call, heartbeats, waiting, history; ARGV: owner, guardian prefix, id, mode,
# history ttl ms. mode "end": the call ended, the record goes (its desk history,
# if any, is kept for the history ttl from now); "orphan": the worker gives the
# call up alive (a failed job, the drain timeout): its heartbeat is made stale
# at once so a guardian takes it over without waiting.
_END = (
    _MAY_WRITE
    + """
if not ok then return 0 end
if ARGV[4] == 'orphan' then
  redis.call('ZADD', KEYS[2], 0, ARGV[3])
  redis.call('HSET', KEYS[1], 'heartbeat', 0)
  return 1
end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[3])
redis.call('ZREM', KEYS[3], ARGV[3])
if redis.call('EXISTS', KEYS[4]) == 1 then redis.call('PEXPIRE', KEYS[4], ARGV[5]) end
return 1
"""
)

# The desk's actions. Each checks the record and changes it, its place in line
# and its history in one script: of any number of agents racing, one wins.
# KEYS: call, waiting (the store the agent may act for), history
# ARGV: agent, store, id, history entry (JSON object), history ttl ms, reason
# Returns {outcome, detail}: {'ok', now} | {'missing', ''} | {'store', its store}
# | {'taken', by whom} | {'state', its state}.
_DESK_CHECK = (
    _NOW
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing', ''} end
local f = redis.call('HMGET', KEYS[1], 'store', 'state', 'taken_by')
if f[1] ~= ARGV[2] then return {'store', f[1] or ''} end
"""
)
_DESK_HISTORY = """
local entry = cjson.decode(ARGV[4])
entry['at'] = now
redis.call('RPUSH', KEYS[3], cjson.encode(entry))
redis.call('PEXPIRE', KEYS[3], ARGV[5])
return {'ok', tostring(now)}
"""
_TAKE = (
    _DESK_CHECK
    + f"""
if f[3] then return {{'taken', f[3]}} end
if f[2] ~= '{State.WAITING}' and f[2] ~= '{State.HOLDING}' then return {{'state', f[2] or ''}} end
redis.call('HSET', KEYS[1], 'taken_by', ARGV[1], 'taken_at', now)
redis.call('ZREM', KEYS[2], ARGV[3])
"""
    + _DESK_HISTORY
)
# Hang-up: by the agent who took the call, or any agent of its store if nobody has.
_HANGUP = (
    _DESK_CHECK
    + """
if f[3] and f[3] ~= ARGV[1] then return {'taken', f[3]} end
redis.call('HSET', KEYS[1], 'ended_reason', ARGV[6], 'ended_by', ARGV[1])
"""
    + _DESK_HISTORY
)

# KEYS: call, heartbeats; ARGV: expected owner, new owner, id
# The guardian's compare-and-set: of two guardians, one takes the call.
_TAKEOVER = (
    _NOW
    + """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'owner', ARGV[2], 'heartbeat', now)
redis.call('HINCRBY', KEYS[1], 'takeovers', 1)
redis.call('ZADD', KEYS[2], now, ARGV[3])
return 1
"""
)

# KEYS: heartbeats; ARGV: stale after (ms). Returns the ids, and the server time.
_STALE = (
    _NOW
    + """
return {now, redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now - tonumber(ARGV[1])))}
"""
)


def call_id(room: str) -> str:
    """The call's id in Redis keys: a hash of the room name (which carries the
    caller's number; that stays out of key names)."""
    return hashlib.sha256(room.encode()).hexdigest()[:24]


def call_key(cid: str) -> str:
    return REGISTRY_CALL_KEY.format(id=cid)


def waiting_key(store: str) -> str:
    return REGISTRY_WAITING.format(store=store or NO_STORE)


def history_key(cid: str) -> str:
    return DESK_HISTORY_KEY.format(id=cid)


DEFAULT_HISTORY_TTL_MS = 86_400_000  # HOLD_DESK_HISTORY_TTL_S


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def connect(url: str, *, decode_responses: bool = True) -> Any:
    """A redis.asyncio client: short timeouts so a dead Redis never stalls a
    call, and one quick retry on a dropped connection (after a Redis restart
    the pooled connection is dead; without the retry the first command after
    it fails, and a guardian's claim would fall back to a local one)."""
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import ConstantBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    return aioredis.from_url(
        url,
        socket_timeout=1.0,
        socket_connect_timeout=1.0,
        decode_responses=decode_responses,
        retry=Retry(ConstantBackoff(0.05), 1),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )


class Registry:
    def __init__(
        self,
        client: Any,
        *,
        record_ttl_ms: int = REGISTRY_RECORD_TTL_MS,
        history_ttl_ms: int = DEFAULT_HISTORY_TTL_MS,
    ) -> None:
        self.client = client
        self.record_ttl_ms = record_ttl_ms
        self.history_ttl_ms = history_ttl_ms
        self._write = client.register_script(_WRITE)
        self._end = client.register_script(_END)
        self._takeover = client.register_script(_TAKEOVER)
        self._stale = client.register_script(_STALE)
        self._take = client.register_script(_TAKE)
        self._hangup = client.register_script(_HANGUP)

    async def write(
        self,
        cid: str,
        owner: str,
        fields: Mapping[str, str],
        *,
        store: str,
        previous_store: str,
        waiting: bool,
        hold_since: int,
    ) -> bool:
        """Write a call's record and heartbeat; False: another owner has it."""
        flat = [x for kv in fields.items() for x in kv]
        got = await self._write(
            keys=[
                call_key(cid),
                REGISTRY_HEARTBEATS,
                waiting_key(store),
                waiting_key(previous_store),
            ],
            args=[
                owner,
                GUARDIAN_OWNER_PREFIX,
                cid,
                self.record_ttl_ms,
                "1" if waiting else "0",
                hold_since,
                *flat,
            ],
        )
        return bool(got)

    async def end(self, cid: str, owner: str, store: str, *, orphan: bool = False) -> bool:
        got = await self._end(
            keys=[call_key(cid), REGISTRY_HEARTBEATS, waiting_key(store), history_key(cid)],
            args=[
                owner,
                GUARDIAN_OWNER_PREFIX,
                cid,
                "orphan" if orphan else "end",
                self.history_ttl_ms,
            ],
        )
        return bool(got)

    async def stale(self, after_ms: int) -> tuple[int, list[str]]:
        """(Redis time in ms, the ids whose heartbeat is older than after_ms)."""
        now, ids = await self._stale(keys=[REGISTRY_HEARTBEATS], args=[after_ms])
        return int(now), list(ids)

    async def record(self, cid: str) -> dict[str, str]:
        return dict(await self.client.hgetall(call_key(cid)))

    async def takeover(self, cid: str, expected_owner: str) -> bool:
        got = await self._takeover(
            keys=[call_key(cid), REGISTRY_HEARTBEATS],
            args=[expected_owner, GUARDIAN_OWNER_PREFIX + expected_owner, cid],
        )
        return bool(got)

    async def forget(self, cid: str, store: str = "") -> None:
        """A record that is gone (expired) or whose call ended without its
        worker: out of every index."""
        await self.client.delete(call_key(cid))
        await self.client.zrem(REGISTRY_HEARTBEATS, cid)
        if store:
            await self.client.zrem(waiting_key(store), cid)

    async def waiting(self, store: str) -> list[str]:
        """The store's waiting calls, longest wait first."""
        return list(await self.client.zrange(waiting_key(store), 0, -1))

    async def position(self, store: str, cid: str) -> int | None:
        """1 for the call waiting longest; None if the call is not waiting."""
        rank = await self.client.zrank(waiting_key(store), cid)
        return None if rank is None else int(rank) + 1

    async def take(self, cid: str, agent: str, store: str) -> tuple[str, str]:
        """The desk: `agent` takes a waiting call of `store`, atomically (one
        of any number of racing agents wins). ("ok", Redis time ms) or why not:
        ("missing" | "store" | "taken" | "state", detail)."""
        return await self._desk(self._take, cid, agent, store, DESK_ACTION_TAKE, "")

    async def hang_up(self, cid: str, agent: str, store: str, reason: str) -> tuple[str, str]:
        """The desk: record `agent`'s hang-up and its reason on the call (the
        caller is removed through LiveKit by the desk); as `take` returns."""
        return await self._desk(self._hangup, cid, agent, store, DESK_ACTION_HANGUP, reason)

    async def _desk(
        self, script: Any, cid: str, agent: str, store: str, action: str, reason: str
    ) -> tuple[str, str]:
        entry: dict[str, str] = {"agent": agent, "action": action, "store": store}
        if reason:
            entry["reason"] = reason
        outcome, detail = await script(
            keys=[call_key(cid), waiting_key(store), history_key(cid)],
            args=[agent, store, cid, json.dumps(entry), self.history_ttl_ms, reason],
        )
        return str(outcome), str(detail)

    async def history(self, cid: str) -> list[dict[str, Any]]:
        """The desk's actions on a call, oldest first."""
        return [json.loads(x) for x in await self.client.lrange(history_key(cid), 0, -1)]

    async def aclose(self) -> None:
        await self.client.aclose()


class RegistrySink:
    """The worker's side: the call's record, kept fresh while the call lives."""

    def __init__(
        self,
        registry: Registry,
        room: Any,  # rtc.Room or the fake: name, local_participant.identity/sid
        *,
        on_taken_over: Callable[[], None],
        log: Log,
        agent_name: str = "",
        worker: str | None = None,
        heartbeat_s: float = HEARTBEAT_S,
    ) -> None:
        self.registry = registry
        self.agent_name = agent_name
        self.room = room
        self.cid = call_id(room.name)
        self._on_taken_over = on_taken_over
        self.log = log
        self.worker = worker or worker_name()
        self.heartbeat_s = heartbeat_s
        self._view: CallView | None = None
        self._store = NO_STORE  # the waiting list the call is in
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        self.taken_over = False
        self.writes = 0

    @property
    def owner(self) -> str:
        return str(self.room.local_participant.identity)

    def _fields(self, view: CallView) -> dict[str, str]:
        return {
            "id": self.cid,
            "room": self.room.name,
            "state": str(view.state),
            "store": self._store_of(view),
            "caller": view.caller_masked,
            "caller_number": view.caller_number,
            "hold_since": str(view.hold_since_ms),
            "media": view.media.name if view.media else "pending",
            "participant_sid": str(getattr(self.room.local_participant, "sid", "") or ""),
            "worker": self.worker,
            "agent_name": self.agent_name,
        }

    @staticmethod
    def _store_of(view: CallView) -> str:
        return (view.store.store_id if view.store is not None else "") or NO_STORE

    async def _write(self) -> None:
        view = self._view
        if view is None or self.taken_over:
            return
        store = self._store_of(view)
        try:
            ok = await self.registry.write(
                self.cid,
                self.owner,
                self._fields(view),
                store=store,
                previous_store=self._store,
                waiting=view.state in WAITING_STATES and view.hold_since_ms > 0,
                hold_since=view.hold_since_ms,
            )
        except Exception as e:  # Redis down or restarting: keep holding, say so once
            if not self._failing:
                self.log.warning(
                    f"call registry unavailable ({type(e).__name__}); the call goes on, "
                    "retrying every heartbeat"
                )
            self._failing = True
            return
        self.writes += 1
        self._store = store
        if self._failing:
            self._failing = False
            self.log.info("call registry reachable again; record rewritten")
        if not ok:
            self.taken_over = True
            self.log.warning("call taken over by another worker: leaving without a sound")
            self._on_taken_over()

    async def _beat(self) -> None:
        while not self.taken_over:
            await asyncio.sleep(self.heartbeat_s)
            await self._write()

    async def state(self, view: CallView) -> None:
        self._view = view
        await self._write()
        if self._task is None:
            self._task = asyncio.create_task(self._beat(), name="hold-registry")

    async def store(self, view: CallView) -> None:
        pass  # the publisher marks the view changed too: state() writes it once

    async def media(self, view: CallView, fields: Mapping[str, Any]) -> None:
        pass  # (as for store: one write per change, not two)

    async def ended(self, view: CallView) -> None:
        """The call's end: the record goes; or, given up alive (`orphaned`),
        its heartbeat is made stale for a guardian to take the call over."""
        if self._task is not None:
            await stop_task(self._task, self.log)
            self._task = None
        if self.taken_over:
            return
        try:
            await self.registry.end(self.cid, self.owner, self._store, orphan=view.orphaned)
        except Exception as e:
            self.log.warning(f"call registry: could not end the record ({type(e).__name__})")
        if view.orphaned:
            self.log.warning("call given up while held: marked for another worker to take over")
