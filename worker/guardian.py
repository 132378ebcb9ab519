"""python -m worker guardian: re-dispatch the hold agent when a worker dies mid-hold.

LiveKit dispatches a room's agent once. If the worker process holding a
call dies (OOM kill, node loss, SIGKILL), nothing starts another job for
that room and the caller waits in silence (measured: RELIABILITY.md). The
guardian receives LiveKit's webhooks; when a hold agent leaves a room while
its last published `hold.state` says the call was not finished (a clean exit
always publishes `done` first) and the caller is still there with no other
hold agent, it asks LiveKit to dispatch the agent to that room again, and
any live replica takes the call.

Webhooks are verified with the API key pair (livekit-api's WebhookReceiver),
so nobody else can make the guardian dispatch. Run one or two anywhere that
LiveKit can reach: `HOLD_GUARDIAN_PORT` (default 8090), webhook URL
`http://<host>:<port>/livekit/webhook`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from aiohttp import web
from livekit import api

from .masking import mask_number

logger = logging.getLogger("hold-worker.guardian")

UNFINISHED = frozenset({"waiting", "holding", "handing_off"})
AGENT = int(api.ParticipantInfo.Kind.AGENT)
SIP = int(api.ParticipantInfo.Kind.SIP)


@dataclass(frozen=True)
class Member:
    kind: int
    attributes: Mapping[str, str]
    disconnected: bool = False


def redispatch_reason(left: Member, remaining: Iterable[Member]) -> str | None:
    """Why the agent must be dispatched again after `left` left, or None. Pure."""
    state = left.attributes.get("hold.state", "")
    if left.kind != AGENT or state not in UNFINISHED:
        return None  # not ours, or it finished cleanly (it publishes "done" first)
    members = list(remaining)
    callers = [m for m in members if m.kind == SIP and not m.disconnected]
    if not callers or any(m.attributes.get("sip.callStatus") == "hangup" for m in callers):
        return None  # the caller is gone too
    if any(m.kind == AGENT and m.attributes.get("hold.state") for m in members):
        return None  # another hold worker is already there
    return f"hold agent left with hold.state={state} and the caller still in the room"


class Guardian:
    def __init__(self, url: str, key: str, secret: str, agent_name: str) -> None:
        self.url, self.key, self.secret, self.agent_name = url, key, secret, agent_name
        self.receiver = api.WebhookReceiver(api.TokenVerifier(key, secret))
        self.dispatched = 0

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.text()
        try:
            event = self.receiver.receive(body, request.headers.get("Authorization", ""))
        except Exception as e:  # unsigned, wrong key, tampered body
            logger.warning(f"webhook refused: {type(e).__name__}")
            return web.Response(status=401, text="invalid webhook signature")
        if event.event == "participant_left" and event.participant.kind == AGENT:
            try:
                await self._check(event)
            except Exception as e:  # LiveKit retries a webhook that fails
                logger.error(f"room {event.room.name}: re-dispatch failed: {e}")
                return web.Response(status=500, text="re-dispatch failed")
        return web.Response(text="ok")

    async def _check(self, event: api.WebhookEvent) -> None:
        room = event.room.name
        left = Member(int(event.participant.kind), dict(event.participant.attributes))
        if left.attributes.get("hold.state", "") not in UNFINISHED:
            return
        async with api.LiveKitAPI(self.url, self.key, self.secret) as lk:
            try:
                parts = (
                    await lk.room.list_participants(api.ListParticipantsRequest(room=room))
                ).participants
            except Exception as e:
                logger.warning(f"room {room}: cannot list participants: {e}")
                return
            members = [
                Member(
                    int(p.kind),
                    dict(p.attributes),
                    p.state == api.ParticipantInfo.State.DISCONNECTED,
                )
                for p in parts
                if p.identity != event.participant.identity
            ]
            reason = redispatch_reason(left, members)
            if reason is None:
                return
            caller = next((m for m in members if m.kind == SIP), None)
            # the agent name the dead worker was dispatched as (LiveKit sets it
            # on every agent participant); ours (HOLD_AGENT_NAME) otherwise
            agent_name = left.attributes.get("lk.agent.name") or self.agent_name
            await lk.agent_dispatch.create_dispatch(
                api.CreateAgentDispatchRequest(
                    agent_name=agent_name, room=room, metadata="hold-guardian"
                )
            )
            self.dispatched += 1
            logger.warning(
                f"re-dispatched the hold agent: {reason}",
                extra={
                    "room": room,
                    "agent_name": agent_name,
                    "caller": mask_number(caller.attributes.get("sip.phoneNumber"))
                    if caller
                    else "",
                },
            )


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
        env["LIVEKIT_URL"], env["LIVEKIT_API_KEY"], env["LIVEKIT_API_SECRET"], s.agent_name
    )
    app = web.Application()
    app.add_routes([web.post("/livekit/webhook", g.handle), web.get("/", _health)])
    print(
        f"hold guardian: agent {s.agent_name!r}, webhooks on "
        f"http://{s.guardian_host}:{s.guardian_port}/livekit/webhook",
        flush=True,
    )
    web.run_app(app, host=s.guardian_host, port=s.guardian_port, print=None, access_log=None)
    return 0
