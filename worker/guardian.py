"""python -m worker guardian: re-dispatch the hold agent when a worker dies mid-hold.

LiveKit dispatches a room's agent once. If the worker process holding a
call dies (OOM kill, node loss, SIGKILL), nothing starts another job for
that room and the caller waits in silence (measured: RELIABILITY.md). The
guardian receives LiveKit's webhooks; when a hold agent leaves a room while
its last published `hold.state` says the call was not finished (a clean exit
always publishes `done` first) and the caller is still there with neither
another hold agent nor a live human agent, it asks LiveKit to dispatch the
agent to that room again, and any live replica takes the call.

A hold worker that dies while a human agent talks to the caller is not
replaced then (the agent is live). So when a human agent leaves, the
guardian looks again: the caller still there, no hold agent present and no
other human agent live means nobody brings hold audio back, and it
dispatches the agent (`HOLD_AGENT_NAME`) the same way. A live hold worker
stays in the room after a handoff and is present then, so in normal
operation this never fires.

Hardening:
- LiveKit API requests (list participants, create dispatch) are retried with
  exponential backoff within a bounded time (`RetryPolicy`); if they still
  fail the webhook is answered 500, so LiveKit delivers it again.
- Deliveries are de-duplicated by the event's id; an event older than
  `max_age_s` (60 s) is ignored.
- One re-dispatch per departure across replicas: a claim `SET key NX EX 120`
  in Redis (`HOLD_REDIS_URL`), keyed by the room and the left participant's
  sid (the hold worker's or the human agent's).
  Without Redis, or when Redis fails, an in-process claim (one replica makes
  one dispatch; two replicas may make two).

Webhooks are verified with the API key pair (livekit-api's WebhookReceiver),
so nobody else can make the guardian dispatch. Run one or two anywhere that
LiveKit can reach: `HOLD_GUARDIAN_PORT` (default 8090), webhook URL
`http://<host>:<port>/livekit/webhook`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from aiohttp import web
from livekit import api

from .masking import mask_number
from .protocol import (
    AGENT_NAME_ATTR,
    ATTR_STATE,
    GUARDIAN_DISPATCH_METADATA,
    SIP_CALL_STATUS,
    SIP_PHONE_NUMBER,
    UNFINISHED,
)
from .roles import AgentRule, Role, classify

logger = logging.getLogger("hold-worker.guardian")

# Every state but DONE means the worker had not finished the call: it stays in
# the room after a handoff (SETTLING, MONITORING) until the call ends and
# always publishes `done` before a clean exit. No state at all: another agent.
AGENT = int(api.ParticipantInfo.Kind.AGENT)
SIP = int(api.ParticipantInfo.Kind.SIP)
STANDARD = int(api.ParticipantInfo.Kind.STANDARD)
AUDIO = int(api.TrackType.AUDIO)

CLAIM_TTL_S = 120
MAX_EVENT_AGE_S = 60.0

T = TypeVar("T")


@dataclass(frozen=True)
class Member:
    kind: int
    attributes: Mapping[str, str]
    disconnected: bool = False
    identity: str = ""
    audio_live: bool = False  # an unmuted audio track published


def _kind_name(kind: int) -> str:
    try:
        return str(api.ParticipantInfo.Kind.Name(kind)).lower()
    except ValueError:
        return "unknown"


def _is_live_human_agent(m: Member, rule: AgentRule) -> bool:
    if m.disconnected or not m.audio_live:
        return False
    return classify(_kind_name(m.kind), m.identity, m.attributes, rule) is Role.HUMAN_AGENT


def is_human_agent(m: Member, rule: AgentRule) -> bool:
    """A human agent (live or not): a standard participant the agent rule matches."""
    return (
        m.kind == STANDARD
        and classify(_kind_name(m.kind), m.identity, m.attributes, rule) is Role.HUMAN_AGENT
    )


def caller_present(members: Iterable[Member]) -> bool:
    """The caller's SIP participant is in the room and has not hung up."""
    callers = [m for m in members if m.kind == SIP and not m.disconnected]
    return bool(callers) and not any(m.attributes.get(SIP_CALL_STATUS) == "hangup" for m in callers)


async def list_members(
    lk: Any, room: str, retrying: Callable[[str, Callable[[], Awaitable[Any]]], Awaitable[Any]]
) -> list[api.ParticipantInfo] | None:
    """The room's participants (LiveKit API, retried); None if the room is gone."""
    try:
        resp = await retrying(
            "list participants",
            lambda: lk.room.list_participants(api.ListParticipantsRequest(room=room)),
        )
    except api.TwirpError as e:
        if e.code == api.TwirpErrorCode.NOT_FOUND:
            return None
        raise
    return list(resp.participants)


def redispatch_reason(
    left: Member,
    remaining: Iterable[Member],
    rule: AgentRule | None = None,
    agent_name: str = "",
) -> str | None:
    """Why the agent must be dispatched again after `left` left, or None. Pure.

    `left` is a hold agent whose call was unfinished, or a human agent (the
    hold worker may have died while they talked to the caller). An agent
    with a `hold.state`, or not yet published but dispatched under the left
    hold agent's name (for a human agent: `agent_name`, HOLD_AGENT_NAME),
    counts as a hold agent present."""
    rule = rule or AgentRule()
    if left.kind == AGENT:
        state = left.attributes.get(ATTR_STATE, "")
        if state not in UNFINISHED:
            return None  # not ours, or it finished cleanly (it publishes "done" first)
        names = {left.attributes.get(AGENT_NAME_ATTR, "")} - {""}
        why = f"hold agent left with hold.state={state} and the caller still in the room"
    elif is_human_agent(left, rule):
        names = {agent_name} - {""}
        why = "a human agent left the caller with no hold agent and no live human agent"
    else:
        return None
    members = [m for m in remaining if not m.disconnected]
    if not caller_present(members):
        return None  # the caller is gone too
    for m in members:
        if m.kind == AGENT and (
            m.attributes.get(ATTR_STATE) or m.attributes.get(AGENT_NAME_ATTR) in names
        ):
            return None  # a hold worker is already there (or joining)
    if any(_is_live_human_agent(m, rule) for m in members):
        return None  # a human agent is talking to the caller
    return why


def member_of(p: api.ParticipantInfo) -> Member:
    return Member(
        kind=int(p.kind),
        attributes=dict(p.attributes),
        disconnected=p.state == api.ParticipantInfo.State.DISCONNECTED,
        identity=p.identity,
        audio_live=any(int(t.type) == AUDIO and not t.muted for t in p.tracks),
    )


_DIGITS = re.compile(r"\+?\d{7,}")


def masked(text: str) -> str:
    """A room name or identity for the log: any caller number in it masked."""
    return _DIGITS.sub(lambda m: mask_number(m.group(0)), text)


# ---- retries ----------------------------------------------------------------


class GuardianError(Exception):
    """A LiveKit request still failed after the retries."""


@dataclass(frozen=True)
class RetryPolicy:
    # Waits between tries: 6 tries, 7.75 s of waiting at most ...
    delays: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)
    # ... each try cut off after this long ...
    attempt_timeout_s: float = 3.0
    # ... and no retry that would start after this much time in total.
    budget_s: float = 10.0


def _final(e: BaseException) -> bool:
    """An error that another try will not fix."""
    return isinstance(e, api.TwirpError) and e.code in (
        api.TwirpErrorCode.NOT_FOUND,
        api.TwirpErrorCode.INVALID_ARGUMENT,
    )


async def retry(
    what: str,
    op: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    monotonic: Callable[[], float] = time.monotonic,
) -> T:
    start = monotonic()
    tries = len(policy.delays) + 1
    for attempt in range(tries):
        left = policy.budget_s - (monotonic() - start)
        try:
            async with asyncio.timeout(max(0.001, min(policy.attempt_timeout_s, left))):
                return await op()
        except Exception as e:
            err = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            if _final(e):
                raise
            if attempt + 1 >= tries:
                raise GuardianError(f"{what} failed {tries} times: {err}") from e
            delay = policy.delays[attempt]
            if monotonic() - start + delay >= policy.budget_s:
                raise GuardianError(
                    f"{what} failed {attempt + 1} times in {policy.budget_s:g} s: {err}"
                ) from e
            logger.warning(f"{what} failed ({masked(err)}); retry {attempt + 1} in {delay:g} s")
            await sleep(delay)
    raise AssertionError("unreachable")


# ---- claims: one re-dispatch per call -----------------------------------------


class Claims(Protocol):
    async def claim(self, key: str) -> bool: ...

    async def release(self, key: str) -> None: ...


class LocalClaims:
    """In this process only: two guardian replicas may both dispatch."""

    def __init__(
        self, ttl_s: float = CLAIM_TTL_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl_s, self.clock = ttl_s, clock
        self._held: dict[str, float] = {}

    async def claim(self, key: str) -> bool:
        now = self.clock()
        for k in [k for k, until in self._held.items() if until <= now]:
            del self._held[k]
        if key in self._held:
            return False
        self._held[key] = now + self.ttl_s
        return True

    async def release(self, key: str) -> None:
        self._held.pop(key, None)


_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end"


class RedisClaims:
    """`SET key NX EX ttl` in Redis, shared by every replica; the local claim
    when Redis fails (a warning; a re-dispatch never waits on Redis)."""

    def __init__(self, client: Any, ttl_s: int = CLAIM_TTL_S, local: LocalClaims | None = None):
        self.client, self.ttl_s = client, ttl_s
        self.local = local or LocalClaims(ttl_s)
        self.token = secrets.token_hex(8)

    async def claim(self, key: str) -> bool:
        if not await self.local.claim(key):
            return False  # this replica has it already
        try:
            got = await self.client.set(key, self.token, nx=True, ex=self.ttl_s)
        except Exception as e:
            logger.warning(
                f"redis claim failed ({type(e).__name__}: {masked(str(e))}); "
                "using the local claim: another guardian may dispatch too"
            )
            return True
        if not got:
            await self.local.release(key)  # another replica has it
            return False
        return True

    async def release(self, key: str) -> None:
        await self.local.release(key)
        try:
            await self.client.eval(_RELEASE, 1, key, self.token)
        except Exception as e:
            logger.warning(f"redis release failed ({type(e).__name__}); the claim expires")


def claim_key(room: str, participant_sid: str) -> str:
    # Hashed: a room name carries the caller's number, which stays out of Redis.
    digest = hashlib.sha256(f"{room}\0{participant_sid}".encode()).hexdigest()[:32]
    return f"hold-guardian:claim:{digest}"


def make_claims(redis_url: str) -> Claims:
    """Redis when HOLD_REDIS_URL is set; otherwise local, said once here."""
    if not redis_url:
        logger.warning(
            "HOLD_REDIS_URL is not set: re-dispatch claims are per process, so two "
            "guardian replicas may both re-dispatch the same call"
        )
        return LocalClaims()
    from .registry import connect

    return RedisClaims(connect(redis_url, decode_responses=False))


# ---- the guardian ---------------------------------------------------------------

ApiFactory = Callable[[], AbstractAsyncContextManager[Any]]


class Guardian:
    def __init__(
        self,
        url: str,
        key: str,
        secret: str,
        agent_name: str,
        *,
        rule: AgentRule | None = None,
        claims: Claims | None = None,
        api_factory: ApiFactory | None = None,
        retry_policy: RetryPolicy | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        max_age_s: float = MAX_EVENT_AGE_S,
    ) -> None:
        self.url, self.key, self.secret, self.agent_name = url, key, secret, agent_name
        self.receiver = api.WebhookReceiver(api.TokenVerifier(key, secret))
        self.rule = rule or AgentRule()
        self.claims: Claims = claims if claims is not None else LocalClaims()
        self.api_factory: ApiFactory = api_factory or (lambda: api.LiveKitAPI(url, key, secret))
        self.retry_policy = retry_policy or RetryPolicy()
        self.clock, self.monotonic, self.sleep = clock, monotonic, sleep
        self.max_age_s = max_age_s
        self.dispatched = 0
        self._seen: dict[str, float] = {}  # event id -> when first received (clock)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.text()
        try:
            event = self.receiver.receive(body, request.headers.get("Authorization", ""))
        except Exception as e:  # unsigned, wrong key, tampered body
            logger.warning(f"webhook refused: {type(e).__name__}")
            return web.Response(status=401, text="invalid webhook signature")
        try:
            outcome = await self.process(event)
        except Exception as e:  # LiveKit delivers a webhook that failed again
            logger.error(f"room {masked(event.room.name)}: re-dispatch failed: {masked(str(e))}")
            return web.Response(status=500, text="re-dispatch failed")
        return web.Response(text=outcome)

    async def process(self, event: api.WebhookEvent) -> str:
        """Act on one verified event; returns what was done. Raises when LiveKit
        still fails after the retries (the delivery is then forgotten, so a
        redelivery is acted on)."""
        if event.event != "participant_left":
            return "ignored"
        if event.participant.kind == AGENT:
            if event.participant.attributes.get(ATTR_STATE, "") not in UNFINISHED:
                return "finished"
        elif not is_human_agent(_left_member(event), self.rule):
            return "ignored"  # the caller, an observer, a service participant
        now = self.clock()
        if event.created_at and now - event.created_at > self.max_age_s:
            logger.info(
                f"room {masked(event.room.name)}: ignoring a participant_left "
                f"{now - event.created_at:.0f} s old"
            )
            return "stale"
        for k in [k for k, t in self._seen.items() if now - t > 10 * self.max_age_s]:
            del self._seen[k]
        if event.id:
            if event.id in self._seen:
                return "duplicate"
            self._seen[event.id] = now
        try:
            return await self._check(event)
        except BaseException:
            self._seen.pop(event.id, None)
            raise

    async def _retry(self, what: str, op: Callable[[], Awaitable[T]]) -> T:
        return await retry(what, op, self.retry_policy, sleep=self.sleep, monotonic=self.monotonic)

    async def _check(self, event: api.WebhookEvent) -> str:
        room = event.room.name
        left = _left_member(event)
        async with self.api_factory() as lk:
            people = await list_members(lk, room, self._retry)
            if people is None:
                return "room gone"
            members = [member_of(p) for p in people if p.identity != event.participant.identity]
            reason = redispatch_reason(left, members, self.rule, self.agent_name)
            if reason is None:
                return "not needed"
            key = claim_key(room, event.participant.sid)
            if not await self.claims.claim(key):
                logger.info(f"room {masked(room)}: another guardian re-dispatches this call")
                return "claimed elsewhere"
            # the agent name the dead worker was dispatched as (LiveKit sets it
            # on every agent participant); ours (HOLD_AGENT_NAME) otherwise,
            # and always after a human agent left
            agent_name = (
                left.attributes.get(AGENT_NAME_ATTR) if left.kind == AGENT else ""
            ) or self.agent_name
            try:
                await self._retry(
                    "create dispatch",
                    lambda: lk.agent_dispatch.create_dispatch(
                        api.CreateAgentDispatchRequest(
                            agent_name=agent_name, room=room, metadata=GUARDIAN_DISPATCH_METADATA
                        )
                    ),
                )
            except api.TwirpError as e:
                await self.claims.release(key)
                if e.code == api.TwirpErrorCode.NOT_FOUND:
                    return "room gone"
                raise
            except BaseException:
                await self.claims.release(key)  # a redelivery may try again
                raise
        self.dispatched += 1
        caller = next((m for m in members if m.kind == SIP), None)
        logger.warning(
            f"re-dispatched the hold agent to room {masked(room)}: {reason}",
            extra={
                "room": masked(room),
                "agent_name": agent_name,
                "caller": mask_number(caller.attributes.get(SIP_PHONE_NUMBER)) if caller else "",
            },
        )
        return "dispatched"


def _left_member(event: api.WebhookEvent) -> Member:
    p = event.participant
    return Member(int(p.kind), dict(p.attributes), identity=p.identity)


def _heartbeat_watch(
    g: Guardian, redis_url: str, stale_after_s: float
) -> Callable[[web.Application], Any]:
    """The registry's heartbeat watch (heartbeats.py) beside the webhooks."""

    async def ctx(_app: web.Application) -> Any:
        from .heartbeats import HeartbeatWatch
        from .registry import Registry, connect

        registry = Registry(connect(redis_url))
        watch = HeartbeatWatch(
            registry,
            g.api_factory,
            g.agent_name,
            rule=g.rule,
            claims=g.claims,
            stale_after_s=stale_after_s,
        )
        task = asyncio.create_task(watch.run(), name="heartbeat-watch")
        yield
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await registry.aclose()

    return ctx


async def _health(_request: web.Request) -> web.Response:
    return web.Response(text="OK")


def main(argv: list[str]) -> int:
    from . import logmask
    from .settings import SettingsError, load_settings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logmask.install()
    try:
        s = load_settings()
    except SettingsError as e:
        print(f"config error: {e}", flush=True)
        return 2
    env = {
        n: os.environ.get(n, "") for n in ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET")
    }
    for name, value in env.items():
        if not value:
            print(f"config error: {name} is not set", flush=True)
            return 2
    g = Guardian(
        env["LIVEKIT_URL"],
        env["LIVEKIT_API_KEY"],
        env["LIVEKIT_API_SECRET"],
        s.agent_name,
        rule=s.agent_rule,
        claims=make_claims(s.redis_url),
    )
    app = web.Application()
    app.add_routes([web.post("/livekit/webhook", g.handle), web.get("/", _health)])
    if s.redis_url:
        app.cleanup_ctx.append(_heartbeat_watch(g, s.redis_url, s.stale_after_s))
    watch = f"on (stale after {s.stale_after_s:g} s)" if s.redis_url else "off (no HOLD_REDIS_URL)"
    print(
        f"hold guardian: agent {s.agent_name!r}, webhooks on "
        f"http://{s.guardian_host}:{s.guardian_port}/livekit/webhook, claims in "
        f"{'Redis' if s.redis_url else 'this process only'}; heartbeat watch "
        f"{watch}",
        flush=True,
    )
    web.run_app(app, host=s.guardian_host, port=s.guardian_port, print=None, access_log=None)
    return 0
