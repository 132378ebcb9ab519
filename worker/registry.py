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
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .aio import Log, stop_task
from .lifecycle import State
from .protocol import (
    DESK_ACTION_END,
    DESK_ACTION_HANGUP,
    DESK_ACTION_HOLD,
    DESK_ACTION_REQUEUE,
    DESK_ACTION_RESUME,
    DESK_ACTION_TAKE,
    DESK_ACTION_TRANSFER,
    DESK_AGENTS_KEY,
    DESK_CALLBACK_OUTBOX,
    DESK_CALLBACKS_KEY,
    DESK_HISTORY_KEY,
    DESK_WAITS_KEY,
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

# KEYS: call, heartbeats, waiting (new store), waiting (previous store), history
# ARGV: owner, guardian prefix, id, ttl_ms, waiting 0|1, hold_since, agents gone
# (JSON {agent id: unix ms they left the room}), history ttl ms, waiting-key
# prefix, the history's requeue action, field, value, ...
# A call an agent took at the desk (`taken_by`) is not in line, unless that
# agent has left the room (a closed tab) and nobody hung it up at the desk:
# then it goes back into line (`requeued`). A transferred call waits in its
# `transfer_store`'s line (the desk put it there), whatever the worker's state.
_WRITE = (
    _MAY_WRITE
    + _NOW
    + """
if not ok then return 0 end
local taker, taken_at, hung_up = unpack(redis.call('HMGET', KEYS[1], 'taken_by', 'taken_at',
  'ended_by'))
local left = taker and not hung_up and cjson.decode(ARGV[7])[taker]
if left and left >= (tonumber(taken_at) or 0) then
  redis.call('HDEL', KEYS[1], 'taken_by', 'taken_at', 'held')
  redis.call('HINCRBY', KEYS[1], 'requeued', 1)
  redis.call('RPUSH', KEYS[5], cjson.encode({agent=taker, action=ARGV[10], at=now}))
  redis.call('PEXPIRE', KEYS[5], ARGV[8])
  taker = false
end
local waiting = ARGV[5]
local line = KEYS[3]
local moved = redis.call('HGET', KEYS[1], 'transfer_store')
if moved then
  line = ARGV[9] .. moved
  if redis.call('HGET', KEYS[1], 'transferred') == '1' then waiting = '1' end
end
if taker then waiting = '0' end
redis.call('HSET', KEYS[1], 'owner', me, 'heartbeat', now, unpack(ARGV, 11))
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('ZADD', KEYS[2], now, ARGV[3])
if KEYS[4] ~= line then redis.call('ZREM', KEYS[4], ARGV[3]) end
if KEYS[3] ~= line then redis.call('ZREM', KEYS[3], ARGV[3]) end
if waiting == '1' then redis.call('ZADD', line, ARGV[6], ARGV[3])
else redis.call('ZREM', line, ARGV[3]) end
return 1
"""
)

# KEYS: call, heartbeats, waiting, history; ARGV: owner, guardian prefix, id, mode,
# history ttl ms, waiting-key prefix, waits-key prefix, waits kept, waits ttl ms,
# the end's reason, the history's end action.
# mode "end": the call ended, the record goes (its desk history, if any, gets
# how it ended and is kept for the history ttl from now); a call no agent had
# taken is counted in its store's waits as abandoned. "orphan": the worker gives the call up alive
# (a failed job, the drain timeout): its heartbeat is made stale at once so a
# guardian takes it over without waiting.
_END = (
    _MAY_WRITE
    + _NOW
    + """
if not ok then return 0 end
if ARGV[4] == 'orphan' then
  redis.call('ZADD', KEYS[2], 0, ARGV[3])
  redis.call('HSET', KEYS[1], 'heartbeat', 0)
  return 1
end
local f = redis.call('HMGET', KEYS[1], 'store', 'transfer_store', 'taken_by', 'ended_by',
  'hold_since')
local line = f[2] or f[1]
if line then redis.call('ZREM', ARGV[6] .. line, ARGV[3]) end
local since = tonumber(f[5] or '0') or 0
if line and line ~= '-' and not f[3] and not f[4] and since > 0 then
  local waits = ARGV[7] .. line
  redis.call('LPUSH', waits, cjson.encode({at=now, wait_ms=now - since, outcome='abandoned'}))
  redis.call('LTRIM', waits, 0, tonumber(ARGV[8]) - 1)
  redis.call('PEXPIRE', waits, ARGV[9])
end
if redis.call('EXISTS', KEYS[4]) == 1 then
  local why = ARGV[10]
  if f[4] then why = 'hung up by the agent' end
  redis.call('RPUSH', KEYS[4], cjson.encode({action=ARGV[11], at=now, reason=why, store=line,
    agent=f[3] or f[4] or '', waited_ms=(since > 0 and now - since) or 0}))
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
# A call waits in the line of `transfer_store` once transferred, else `store`.
# KEYS: call, waiting (the line the agent may act for), history, and per action:
# take: the store's waits; transfer: the target line
# ARGV: agent, store (that line), id, history entry (JSON object), history ttl
# ms, reason, then per action: take: waits kept, waits ttl ms; transfer:
# target store, note, offered to, offer ms
# Returns {outcome, detail}: {'ok', now} | {'missing', ''} | {'store', its line}
# | {'taken', by whom} | {'state', its state} | {'offered', to whom} |
# {'not_taken', ''}.
_DESK_CHECK = (
    _NOW
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing', ''} end
local f = redis.call('HMGET', KEYS[1], 'store', 'state', 'taken_by', 'transfer_store',
  'transferred', 'offered_to', 'offer_until', 'transfer_from', 'hold_since', 'held')
if (f[4] or f[1]) ~= ARGV[2] then return {'store', f[4] or f[1] or ''} end
local entry = cjson.decode(ARGV[4])
"""
)
_DESK_HISTORY = """
entry['at'] = now
redis.call('RPUSH', KEYS[3], cjson.encode(entry))
redis.call('PEXPIRE', KEYS[3], ARGV[5])
"""
_TAKE = (
    _DESK_CHECK
    + f"""
if f[3] then return {{'taken', f[3]}} end
local moved = f[5] == '1'
if not moved and f[2] ~= '{State.WAITING}' and f[2] ~= '{State.HOLDING}' then
  return {{'state', f[2] or ''}}
end
if moved and f[6] and f[6] ~= ARGV[1] and now < tonumber(f[7] or '0') then
  return {{'offered', f[6]}}
end
redis.call('HSET', KEYS[1], 'taken_by', ARGV[1], 'taken_at', now)
redis.call('HDEL', KEYS[1], 'transferred', 'offered_to', 'offer_until', 'transfer_from', 'held')
redis.call('ZREM', KEYS[2], ARGV[3])
local since = tonumber(f[9] or '0') or 0
if since > 0 then entry['wait_ms'] = now - since end
if not moved and since > 0 then
  redis.call('LPUSH', KEYS[4], cjson.encode({{at=now, wait_ms=now - since, outcome='taken'}}))
  redis.call('LTRIM', KEYS[4], 0, tonumber(ARGV[7]) - 1)
  redis.call('PEXPIRE', KEYS[4], ARGV[8])
end
"""
    + _DESK_HISTORY
    + """
return {'ok', tostring(now), f[8] or ''}
"""
)
# Hang-up: by the agent who took the call, or any agent of its line if nobody has.
_HANGUP = (
    _DESK_CHECK
    + """
if f[3] and f[3] ~= ARGV[1] then return {'taken', f[3]} end
redis.call('HSET', KEYS[1], 'ended_reason', ARGV[6], 'ended_by', ARGV[1])
"""
    + _DESK_HISTORY
    + """
return {'ok', tostring(now)}
"""
)
# Hold and resume: by the agent who took the call. `held` is the desk's own
# mark (the worker's `state` follows a few ms later): a second hold is
# refused, and a resume right after a hold is not. ARGV[7]: hold | resume.
_CONTROL = (
    _DESK_CHECK
    + f"""
if not f[3] then return {{'not_taken', ''}} end
if f[3] ~= ARGV[1] then return {{'taken', f[3]}} end
if ARGV[7] == 'hold' then
  if f[10] == '1' then return {{'held', ''}} end
  redis.call('HSET', KEYS[1], 'held', '1')
else
  if f[10] ~= '1' and f[2] ~= '{State.ON_HOLD}' then return {{'not_held', f[2] or ''}} end
  redis.call('HDEL', KEYS[1], 'held')
end
"""
    + _DESK_HISTORY
    + """
return {'ok', tostring(now)}
"""
)
# Transfer: the taker gives the call back, to a line (the same store's or
# another's), offered first to one agent for a while if named. It waits there
# by its first hold start, marked transferred; the taker stays in the room
# (on hold, cut from the caller) until the next agent takes it.
_TRANSFER = (
    _DESK_CHECK
    + """
if not f[3] then return {'not_taken', ''} end
if f[3] ~= ARGV[1] then return {'taken', f[3]} end
redis.call('HDEL', KEYS[1], 'taken_by', 'taken_at', 'offered_to', 'offer_until', 'held')
redis.call('HSET', KEYS[1], 'transferred', '1', 'transfer_store', ARGV[7],
  'transfer_note', ARGV[8], 'transfer_from', ARGV[1])
if ARGV[9] ~= '' then
  redis.call('HSET', KEYS[1], 'offered_to', ARGV[9], 'offer_until', now + tonumber(ARGV[10]))
end
redis.call('ZREM', KEYS[2], ARGV[3])
local since = tonumber(f[9] or '0') or 0
if since <= 0 then since = now end
redis.call('ZADD', KEYS[4], since, ARGV[3])
"""
    + _DESK_HISTORY
    + """
return {'ok', tostring(now)}
"""
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

# KEYS: call; ARGV: waiting-key prefix, id. The line the call waits in (its
# `transfer_store` once transferred, else its `store`) and its 1-based place
# there, or nil when it is not waiting (taken, talking, not written yet).
_PLACE = """
local f = redis.call('HMGET', KEYS[1], 'store', 'transfer_store')
local line = f[2] or f[1]
if not line then return nil end
local rank = redis.call('ZRANK', ARGV[1] .. line, ARGV[2])
if not rank then return nil end
return {line, rank + 1}
"""

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


def waits_key(store: str) -> str:
    return DESK_WAITS_KEY.format(store=store)


WAITING_PREFIX = waiting_key("")[: -len(NO_STORE)]  # the scripts build a line's key
WAITS_PREFIX = waits_key("")
WAITS_KEPT = 200  # per store, the most recent waits (taken or abandoned)
WAITS_TTL_MS = 7 * 86_400_000


DEFAULT_HISTORY_TTL_MS = 86_400_000  # HOLD_DESK_HISTORY_TTL_S


CALLBACKS_KEPT = 500  # per store, the most recent callback requests
CALLBACKS_TTL_MS = 7 * 86_400_000
AGENTS_TTL_MS = 86_400_000

# KEYS: the store's callbacks, the outbox; ARGV: the request (JSON without
# `at`), kept, ttl ms. The request gets Redis server time as `at` (unix ms).
_CALLBACK = (
    _NOW
    + """
local entry = cjson.decode(ARGV[1])
entry['at'] = now
local text = cjson.encode(entry)
redis.call('LPUSH', KEYS[1], text)
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[2]) - 1)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('LPUSH', KEYS[2], text)
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return now
"""
)

# KEYS: the store's agents; ARGV: agent, ttl ms. Seen now (Redis time).
_AGENT_SEEN = (
    _NOW
    + """
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return now
"""
)

# KEYS: the store's agents; ARGV: within ms. How many were seen since then.
_AGENTS_SEEN = (
    _NOW
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[1]) * 10)
return redis.call('ZCOUNT', KEYS[1], now - tonumber(ARGV[1]), '+inf')
"""
)


def callbacks_key(store: str) -> str:
    return DESK_CALLBACKS_KEY.format(store=store)


def agents_key(store: str) -> str:
    return DESK_AGENTS_KEY.format(store=store)


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
        self._control = client.register_script(_CONTROL)
        self._transfer = client.register_script(_TRANSFER)
        self._place = client.register_script(_PLACE)
        self._callback = client.register_script(_CALLBACK)
        self._agent_seen = client.register_script(_AGENT_SEEN)
        self._agents_seen = client.register_script(_AGENTS_SEEN)

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
        gone: Mapping[str, int] | None = None,
    ) -> bool:
        """Write a call's record and heartbeat; False: another owner has it.
        `gone`: desk agents (id -> unix ms) who were in the room and left; if
        the one who took the call is among them, it goes back into line."""
        flat = [x for kv in fields.items() for x in kv]
        got = await self._write(
            keys=[
                call_key(cid),
                REGISTRY_HEARTBEATS,
                waiting_key(store),
                waiting_key(previous_store),
                history_key(cid),
            ],
            args=[
                owner,
                GUARDIAN_OWNER_PREFIX,
                cid,
                self.record_ttl_ms,
                "1" if waiting else "0",
                hold_since,
                json.dumps(dict(gone or {})),
                self.history_ttl_ms,
                WAITING_PREFIX,
                DESK_ACTION_REQUEUE,
                *flat,
            ],
        )
        return bool(got)

    async def end(
        self, cid: str, owner: str, store: str, *, orphan: bool = False, reason: str = ""
    ) -> bool:
        got = await self._end(
            keys=[call_key(cid), REGISTRY_HEARTBEATS, waiting_key(store), history_key(cid)],
            args=[
                owner,
                GUARDIAN_OWNER_PREFIX,
                cid,
                "orphan" if orphan else "end",
                self.history_ttl_ms,
                WAITING_PREFIX,
                WAITS_PREFIX,
                WAITS_KEPT,
                WAITS_TTL_MS,
                reason or "ended",
                DESK_ACTION_END,
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

    async def place_in_line(self, cid: str) -> tuple[str, int] | None:
        """(the store whose line the call waits in, its place there: 1 = next),
        read at once; None when it is not waiting for an agent. A transferred
        call is counted in its new store's line."""
        got = await self._place(keys=[call_key(cid)], args=[WAITING_PREFIX, cid])
        if not got:
            return None
        return str(got[0]), int(got[1])

    async def take(self, cid: str, agent: str, store: str) -> tuple[str, str, str]:
        """The desk: `agent` takes a waiting call of `store`'s line, atomically
        (one of any number of racing agents wins). ("ok", Redis time ms, the
        agent who transferred it or "") or why not: ("missing" | "store" |
        "taken" | "state" | "offered", detail, "")."""
        got = await self._desk(
            self._take,
            cid,
            agent,
            store,
            DESK_ACTION_TAKE,
            keys=[waits_key(store)],
            args=[WAITS_KEPT, WAITS_TTL_MS],
        )
        return got[0], got[1], got[2] if len(got) > 2 else ""

    async def hang_up(self, cid: str, agent: str, store: str, reason: str) -> tuple[str, str]:
        """The desk: record `agent`'s hang-up and its reason on the call (the
        caller is removed through LiveKit by the desk); as `take` returns."""
        got = await self._desk(self._hangup, cid, agent, store, DESK_ACTION_HANGUP, reason=reason)
        return got[0], got[1]

    async def control(self, cid: str, agent: str, store: str, *, hold: bool) -> tuple[str, str]:
        """The desk: the taker puts the caller on hold or resumes (recorded;
        the desk tells the worker). ("ok", time) or ("not_taken" | "taken" | ...)."""
        action = DESK_ACTION_HOLD if hold else DESK_ACTION_RESUME
        got = await self._desk(self._control, cid, agent, store, action, args=[action])
        return got[0], got[1]

    async def transfer(
        self,
        cid: str,
        agent: str,
        store: str,
        *,
        to_store: str,
        note: str,
        to_agent: str,
        offer_ms: int,
    ) -> tuple[str, str]:
        """The desk: the taker hands the call back to `to_store`'s line, marked
        transferred (with `note`), first offered to `to_agent` for `offer_ms`
        if one is named."""
        extra = {"to_store": to_store, **({"note": note} if note else {})}
        if to_agent:
            extra["to_agent"] = to_agent
        got = await self._desk(
            self._transfer,
            cid,
            agent,
            store,
            DESK_ACTION_TRANSFER,
            extra=extra,
            keys=[waiting_key(to_store)],
            args=[to_store, note, to_agent, offer_ms],
        )
        return got[0], got[1]

    async def _desk(
        self,
        script: Any,
        cid: str,
        agent: str,
        store: str,
        action: str,
        *,
        reason: str = "",
        extra: Mapping[str, str] | None = None,
        keys: Sequence[str] = (),
        args: Sequence[str | int] = (),
    ) -> list[str]:
        entry: dict[str, str] = {"agent": agent, "action": action, "store": store, **(extra or {})}
        if reason:
            entry["reason"] = reason
        got = await script(
            keys=[call_key(cid), waiting_key(store), history_key(cid), *keys],
            args=[agent, store, cid, json.dumps(entry), self.history_ttl_ms, reason, *args],
        )
        return [str(x) for x in got]

    async def waits(self, store: str, limit: int | None = None) -> list[dict[str, Any]]:
        """The store's recent waits, newest first: {at, wait_ms, outcome}
        (`taken` by an agent, or `abandoned`: ended before anyone took it);
        the newest `limit` only, if given."""
        end = -1 if limit is None else max(0, limit - 1)
        return [json.loads(x) for x in await self.client.lrange(waits_key(store), 0, end)]

    async def request_callback(self, entry: Mapping[str, Any]) -> dict[str, Any]:
        """Store a caller's callback request (`id`, `store`, `cid`, `caller`
        masked, `number` where the store keeps it, `waited_ms`) in its store's
        list, newest first, and in the outbox the desk's webhook sender reads;
        returns it with `at` (Redis server time, unix ms)."""
        at = await self._callback(
            keys=[callbacks_key(str(entry["store"])), DESK_CALLBACK_OUTBOX],
            args=[json.dumps(dict(entry)), CALLBACKS_KEPT, CALLBACKS_TTL_MS],
        )
        return {**entry, "at": int(at)}

    async def callbacks(self, store: str, limit: int = 50) -> list[dict[str, Any]]:
        """The store's callback requests, newest first."""
        raw = await self.client.lrange(callbacks_key(store), 0, max(0, limit - 1))
        return [json.loads(x) for x in raw]

    async def next_webhook(self, timeout_s: float) -> dict[str, Any] | None:
        """The oldest callback request not yet handed to a webhook sender
        (one replica gets each); None after `timeout_s`."""
        got = await self.client.brpop([DESK_CALLBACK_OUTBOX], timeout=timeout_s)
        return None if got is None else dict(json.loads(got[1]))

    async def agent_seen(self, store: str, agent: str) -> None:
        """The desk saw `agent` of `store` (on its event stream) just now."""
        await self._agent_seen(keys=[agents_key(store)], args=[agent, AGENTS_TTL_MS])

    async def agents_signed_in(self, store: str, within_ms: int) -> int:
        """How many of the store's agents the desk saw in the last `within_ms`."""
        return int(await self._agents_seen(keys=[agents_key(store)], args=[within_ms]))

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
        agent_prefix: str = "agent-",
        worker: str | None = None,
        heartbeat_s: float = HEARTBEAT_S,
    ) -> None:
        self.registry = registry
        self.agent_name = agent_name
        self.agent_prefix = agent_prefix  # the desk's agents join as <prefix><agent id>
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

    def _gone(self, view: CallView) -> dict[str, int]:
        """The desk agents (by id) who left the room, and when."""
        n = len(self.agent_prefix)
        return {
            who[n:]: at for who, at in view.agents_left if who.startswith(self.agent_prefix) and n
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
                gone=self._gone(view),
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
            await self.registry.end(
                self.cid, self.owner, self._store, orphan=view.orphaned, reason=view.end_reason
            )
        except Exception as e:
            self.log.warning(f"call registry: could not end the record ({type(e).__name__})")
        if view.orphaned:
            self.log.warning("call given up while held: marked for another worker to take over")
