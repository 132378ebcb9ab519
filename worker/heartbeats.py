"""The guardian's heartbeat watch: a held call whose worker stopped writing
its registry record is moved to another replica within seconds.

LiveKit's own signal that a worker died (its participant leaving, by webhook)
comes about 22 s after a SIGKILL (RELIABILITY.md). The registry (registry.py)
has a heartbeat per call, refreshed every 400 ms by the worker holding it.
Every `poll_s` the watch asks Redis for calls whose heartbeat is older than
`stale_after_s` (default 1.5 s) and, for each whose caller is still in the room
with no live human agent and no other hold worker:

1. takes the record over in Redis (compare-and-set on its owner: of two
   guardians, one wins; the dead worker, if it was only paused, finds the new
   owner on its next write and leaves without a sound);
2. claims the departure for the webhook path too, so LiveKit's later
   `participant_left` for the same worker does not dispatch a second time;
3. removes the old worker's participant from the room (nothing of it lingers
   or comes back);
4. dispatches the hold agent to the room again; one replica takes the call
   and writes the record as its own.

A call whose caller is gone is forgotten. A call with a live human agent (or
another hold worker) is looked at again later: nobody is left in silence there.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from livekit import api

from .guardian import (
    AGENT,
    ApiFactory,
    Claims,
    LocalClaims,
    Member,
    RetryPolicy,
    caller_present,
    claim_key,
    list_members,
    masked,
    member_of,
    redispatch_reason,
    retry,
)
from .protocol import (
    AGENT_NAME_ATTR,
    ATTR_STATE,
    GUARDIAN_DISPATCH_METADATA,
    GUARDIAN_OWNER_PREFIX,
)
from .registry import Registry
from .roles import AgentRule

logger = logging.getLogger("hold-worker.guardian")

POLL_S = 0.1
RECHECK_S = 2.0  # a stale call that needs no takeover now (a live agent): looked at again
# Fast retries: the caller is in silence while this runs.
FAST_RETRY = RetryPolicy(delays=(0.1, 0.25, 0.5, 1.0), attempt_timeout_s=2.0, budget_s=5.0)

T = TypeVar("T")


class HeartbeatWatch:
    def __init__(
        self,
        registry: Registry,
        api_factory: ApiFactory,
        agent_name: str,
        *,
        rule: AgentRule | None = None,
        claims: Claims | None = None,
        stale_after_s: float = 1.5,
        poll_s: float = POLL_S,
        retry_policy: RetryPolicy = FAST_RETRY,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry
        self.api_factory = api_factory
        self.agent_name = agent_name
        self.rule = rule or AgentRule()
        self.claims: Claims = claims if claims is not None else LocalClaims()
        self.stale_after_ms = int(stale_after_s * 1000)
        self.poll_s = poll_s
        self.retry_policy = retry_policy
        self.monotonic = monotonic
        self.taken_over = 0
        self._later: dict[str, float] = {}  # call id -> not before (monotonic)
        self._busy: set[str] = set()  # takeovers in flight
        self._failing = False

    async def run(self) -> None:
        while True:
            try:
                await self.scan_once()
                if self._failing:
                    logger.info("heartbeat watch: Redis reachable again")
                self._failing = False
            except Exception as e:  # Redis down: no recovery meanwhile, nothing else breaks
                if not self._failing:
                    logger.warning(
                        f"heartbeat watch: registry unavailable ({type(e).__name__}); "
                        "retrying (webhooks still recover dead workers, slower)"
                    )
                self._failing = True
            await asyncio.sleep(self.poll_s)

    async def scan_once(self) -> list[str]:
        """One look at the stale calls; returns what was done with each."""
        now_ms, ids = await self.registry.stale(self.stale_after_ms)
        mono = self.monotonic()
        jobs = []
        for cid in ids:
            if cid in self._busy or self._later.get(cid, 0.0) > mono:
                continue
            jobs.append(self._one(cid, now_ms))
        for cid in [c for c, t in self._later.items() if t <= mono]:
            del self._later[cid]
        return list(await asyncio.gather(*jobs))

    async def _one(self, cid: str, now_ms: int) -> str:
        self._busy.add(cid)
        try:
            return await self._take(cid, now_ms)
        except Exception as e:
            logger.error(f"heartbeat watch: call {cid}: {type(e).__name__}: {masked(str(e))}")
            self._later[cid] = self.monotonic() + RECHECK_S
            return "failed"
        finally:
            self._busy.discard(cid)

    async def _retry(self, what: str, op: Callable[[], Awaitable[T]]) -> T:
        return await retry(what, op, self.retry_policy)

    async def _take(self, cid: str, now_ms: int) -> str:
        rec = await self.registry.record(cid)
        room, owner = rec.get("room", ""), rec.get("owner", "")
        if not room or not owner:
            await self.registry.forget(cid)  # expired: nothing left to recover
            return "expired"
        if owner.startswith(GUARDIAN_OWNER_PREFIX):
            return "takeover in flight"  # the dispatched replica writes it, or it expires
        age_ms = now_ms - int(rec.get("heartbeat") or 0)
        async with self.api_factory() as lk:
            people = await list_members(lk, room, self._retry)
            if people is None:
                await self.registry.forget(cid, rec.get("store", ""))
                return "room gone"
            members = [member_of(p) for p in people if p.identity != owner]
            if not caller_present(members):
                await self.registry.forget(cid, rec.get("store", ""))
                return "caller gone"
            # the agent name the dead worker was dispatched as; ours otherwise
            agent_name = rec.get("agent_name") or self.agent_name
            dead = Member(
                AGENT,
                {ATTR_STATE: rec.get("state") or "holding", AGENT_NAME_ATTR: agent_name},
                identity=owner,
            )
            if redispatch_reason(dead, members, self.rule, agent_name) is None:
                self._later[cid] = self.monotonic() + RECHECK_S
                return "not needed"  # a live human agent or another hold worker is there
            if not await self.registry.takeover(cid, owner):
                return "taken elsewhere"
            # the webhook for this worker leaving (when it is removed, or its
            # connection times out) must not dispatch a second time
            key = claim_key(room, rec.get("participant_sid", ""))
            await self.claims.claim(key)
            # removal and dispatch at once: the old participant is gone within
            # tens of ms, long before the new worker has joined and published
            try:
                await asyncio.gather(
                    self._remove(lk, room, owner),
                    self._retry(
                        "create dispatch",
                        lambda: lk.agent_dispatch.create_dispatch(
                            api.CreateAgentDispatchRequest(
                                agent_name=agent_name,
                                room=room,
                                metadata=GUARDIAN_DISPATCH_METADATA,
                            )
                        ),
                    ),
                )
            except BaseException:
                await self.claims.release(key)  # the webhook path may still recover it
                raise
        self.taken_over += 1
        logger.warning(
            f"took over the call in room {masked(room)}: its worker's heartbeat was "
            f"{age_ms} ms old; hold agent dispatched again",
            extra={"room": masked(room), "heartbeat_age_ms": age_ms, "old_owner": owner},
        )
        return "taken over"

    async def _remove(self, lk: Any, room: str, identity: str) -> None:
        """The old worker out of the room; a failure here never stops the
        dispatch (the caller needs hold audio more than a tidy room)."""
        try:
            await self._retry(
                "remove participant",
                lambda: lk.room.remove_participant(
                    api.RoomParticipantIdentity(room=room, identity=identity)
                ),
            )
        except api.TwirpError as e:
            if e.code != api.TwirpErrorCode.NOT_FOUND:  # NOT_FOUND: gone already
                logger.warning(f"could not remove the old worker from {masked(room)}: {e.code}")
        except Exception as e:
            logger.warning(
                f"could not remove the old worker from {masked(room)}: {type(e).__name__}"
            )
