"""`python -m worker desk`: the agents' queue service over the call registry.

An HTTP service (aiohttp) that holds no state of its own: every answer comes
from the call registry in Redis (registry.py), so any number of replicas
behind a load balancer answer alike. Agents authenticate with a bearer JWT
(HS256, `HOLD_DESK_SECRET`) that the store's own backend signs: `sub` (the
agent id), `name`, `stores` (the stores the agent serves), `exp`. An agent
sees, takes and hangs up only calls of their stores.

    GET  /health                 no token
    GET  /calls                  the agent's stores' waiting calls, longest wait first
    GET  /events                 the same as Server-Sent Events, sent on every change
    POST /calls/{id}/take        atomic; the winner gets a LiveKit token for the room
    POST /calls/{id}/hold        the taker puts the caller on hold (hold audio, agents cut)
    POST /calls/{id}/resume      ... and takes them off hold
    POST /calls/{id}/transfer    {"store", "agent", "note"}: back into a line, on hold
    POST /calls/{id}/hangup      {"reason": "..."}: the caller is removed from the room
    GET  /calls/{id}/history     the agents' actions on the call
    GET  /stores/{store}/waits   recent and average waits, abandoned calls
    GET  /stores/{store}/callbacks  callers' callback requests (keypad), newest first
    GET  /openapi.json           this API as an OpenAPI 3 document
    GET  /                       the agents' console (console/, built by make setup),
                                 its files under /console/

Hold and resume reach the call's hold worker as a `hold.control` data message
(LiveKit SendData to its participant only). Errors are JSON `{"error": "<one
line>"}` with the status (400 bad body, 401 no or bad token, 403 another
store's call or another agent's, 404 unknown call or store, 409 taken, not
waiting, or not in a state for the action).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import jwt
from aiohttp import web
from redis.exceptions import RedisError

from .lifecycle import State
from .protocol import CONTROL_TOPIC, DESK_EVENT_CALLBACKS, DESK_EVENT_CALLS, GUARDIAN_OWNER_PREFIX
from .registry import Registry, call_key, waiting_key
from .settings import Settings
from .stores import STORE_KEY
from .waits import summarise
from .webhooks import Hook, WebhookSender

logger = logging.getLogger("hold-worker.desk")

AGENT_ID = re.compile(r"^[a-z0-9_-]{1,64}$")
CALL_ID = re.compile(r"^[0-9a-f]{24}$")
MIN_SECRET_BYTES = 32
POLL_S = 0.25  # each event stream reads the registry this often
KEEPALIVE_S = 15.0
SEEN_EVERY_S = 5.0  # an event stream marks its agent as signed in this often
CALLBACKS_SHOWN = 50
MAX_REASON = 200
TALKING = frozenset({State.HANDING_OFF, State.SETTLING, State.MONITORING})
LIVEKIT_ENV = ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET")


# ---- agents' tokens (pure) ---------------------------------------------------


class AuthError(Exception):
    """A token the desk does not accept: 401, one line."""


@dataclass(frozen=True)
class Agent:
    id: str
    name: str
    stores: tuple[str, ...]
    exp: int


def parse_claims(claims: Mapping[str, Any]) -> Agent:
    """The agent a verified token's claims describe; AuthError names what is wrong."""
    sub = claims.get("sub")
    if not isinstance(sub, str) or not AGENT_ID.match(sub):
        raise AuthError("token claim sub: must be an agent id of [a-z0-9_-], 1 to 64 characters")
    name = claims.get("name", sub)
    if not isinstance(name, str) or not 0 < len(name) <= 100:
        raise AuthError("token claim name: must be a string of 1 to 100 characters")
    stores = claims.get("stores")
    if (
        not isinstance(stores, list)
        or not stores
        or not all(isinstance(s, str) and STORE_KEY.match(s) for s in stores)
    ):
        raise AuthError("token claim stores: must be a non-empty list of store ids")
    exp = claims.get("exp")
    if not isinstance(exp, int):
        raise AuthError("token claim exp: required (unix seconds)")
    return Agent(sub, name, tuple(dict.fromkeys(stores)), exp)


def verify_token(token: str, secret: str) -> Agent:
    try:
        claims = jwt.decode(
            token, secret, algorithms=["HS256"], options={"require": ["exp", "sub"]}
        )
    except jwt.ExpiredSignatureError:
        raise AuthError("token expired") from None
    except jwt.InvalidSignatureError:
        raise AuthError("token signature does not verify") from None
    except jwt.InvalidTokenError as e:
        raise AuthError(f"invalid token: {str(e).splitlines()[0]}") from None
    return parse_claims(claims)


def mint_token(
    secret: str, agent: str, stores: Sequence[str], *, name: str = "", ttl_s: int = 3600
) -> str:
    """What the store's backend does: an agent's token (also `desk token`)."""
    now = int(time.time())
    claims = {"sub": agent, "name": name or agent, "stores": list(stores), "exp": now + ttl_s}
    parse_claims(claims)  # what we would refuse, we do not mint
    return jwt.encode({**claims, "iat": now}, secret, algorithm="HS256")


# ---- the service ----------------------------------------------------------------


class DeskError(Exception):
    def __init__(self, status: int, message: str, **extra: str) -> None:
        super().__init__(message)
        self.status, self.message, self.extra = status, message, extra


def _json(body: Any, status: int = 200) -> web.Response:
    return web.json_response(body, status=status, dumps=json.dumps)


@web.middleware
async def _json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except DeskError as e:
        return _json({"error": e.message, **e.extra}, e.status)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        return _json({"error": e.reason}, e.status)
    except RedisError as e:
        logger.warning(f"desk: call registry unavailable ({type(e).__name__})")
        return _json({"error": f"call registry unavailable ({type(e).__name__})"}, 503)
    except Exception as e:
        logger.exception("desk: request failed")
        return _json({"error": f"internal error ({type(e).__name__})"}, 500)


@dataclass(frozen=True)
class LiveKitAccess:
    url: str
    api_key: str
    api_secret: str


@dataclass
class Desk:
    registry: Registry
    _: KW_ONLY
    secret: str
    livekit: LiveKitAccess
    room_service: Any = None  # api.LiveKitAPI().room, or a fake; set at start if None
    token_ttl_s: int = 600
    show_caller_number: frozenset[str] = frozenset()  # stores whose agents see numbers
    stores: frozenset[str] = frozenset()  # the store map's ids (transfer targets); empty: any
    offer_s: int = 30  # a transfer to a named agent: only they may take it for this long
    identity_prefix: str = "agent-"
    role_attribute: str = "role=agent"
    poll_s: float = POLL_S
    keepalive_s: float = KEEPALIVE_S
    console: Path | None = None  # the built console (index.html and its files)
    hooks: Mapping[str, Hook] | None = None  # store -> its callback webhook

    def app(self) -> web.Application:
        app = web.Application(middlewares=[_json_errors, self._console_headers])
        app.add_routes(
            [
                web.get("/health", self.health),
                web.get("/openapi.json", self.openapi),
                web.get("/calls", self.calls),
                web.get("/events", self.events),
                web.post("/calls/{id}/take", self.take),
                web.post("/calls/{id}/hold", self.hold),
                web.post("/calls/{id}/resume", self.resume),
                web.post("/calls/{id}/transfer", self.transfer),
                web.post("/calls/{id}/hangup", self.hangup),
                web.get("/calls/{id}/history", self.history),
                web.get("/stores/{store}/waits", self.waits),
                web.get("/stores/{store}/callbacks", self.callbacks),
                web.get("/", self.console_page),
            ]
        )
        if self.console is not None and (self.console / "index.html").is_file():
            app.router.add_static(CONSOLE_PREFIX, self.console, append_version=False)
        return app

    # ---- the agents' console (static files) ------------------------------------

    async def console_page(self, _request: web.Request) -> web.StreamResponse:
        page = self.console / "index.html" if self.console is not None else None
        if page is None or not page.is_file():
            raise DeskError(404, f"the console is not built ({page}): run make setup")
        return web.FileResponse(page, headers={"Cache-Control": "no-cache"})

    @web.middleware
    async def _console_headers(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        """The console's page and files: nothing but this desk and the LiveKit
        server may be reached from them (Content-Security-Policy)."""
        resp = await handler(request)
        if request.path == "/" or request.path.startswith(CONSOLE_PREFIX + "/"):
            resp.headers.update(console_headers(self.livekit.url))
        return resp

    # ---- who asks -------------------------------------------------------------

    def agent(self, request: web.Request, *, query_token: bool = False) -> Agent:
        header = request.headers.get("Authorization", "")
        token = header[7:].strip() if header.lower().startswith("bearer ") else ""
        if not token and query_token:  # a browser's EventSource cannot send headers
            token = request.query.get("access_token", "")
        if not token:
            raise DeskError(401, "missing bearer token (Authorization: Bearer <jwt>)")
        try:
            return verify_token(token, self.secret)
        except AuthError as e:
            raise DeskError(401, str(e)) from None

    async def _call_of(self, request: web.Request, agent: Agent) -> tuple[str, dict[str, str]]:
        """The call named in the path and its record; 404 unknown, 403 another store's."""
        cid = request.match_info["id"]
        rec = await self.registry.record(cid) if CALL_ID.match(cid) else {}
        if not rec:
            raise DeskError(404, f"no call {cid[:32]!r} is held")
        self._may_see(agent, line_of(rec))
        return cid, rec

    @staticmethod
    def _may_see(agent: Agent, store: str) -> None:
        if store not in agent.stores:
            raise DeskError(403, "the call is not for one of your stores")

    # ---- the waiting calls ----------------------------------------------------

    async def waiting_calls(self, agent: Agent) -> list[dict[str, Any]]:
        """The agent's stores' waiting calls, longest wait first, with each
        one's position in its own store's line."""
        client = self.registry.client
        async with client.pipeline(transaction=False) as pipe:
            for store in agent.stores:
                pipe.zrange(waiting_key(store), 0, -1, withscores=True)
            ranges = await pipe.execute()
        lines: list[tuple[str, list[tuple[str, float]]]] = list(
            zip(agent.stores, ranges, strict=True)
        )
        ids = [(store, cid) for store, members in lines for cid, _score in members]
        if not ids:
            return []
        async with client.pipeline(transaction=False) as pipe:
            for _store, cid in ids:
                pipe.hgetall(call_key(cid))
            records = await pipe.execute()
        out: list[dict[str, Any]] = []
        position: dict[str, int] = {}
        for (store, cid), rec in zip(ids, records, strict=True):
            if not rec or rec.get("taken_by") or line_of(rec) != store:
                continue  # expired, taken meanwhile, or moved lines
            position[store] = position.get(store, 0) + 1
            out.append(self._call_json(cid, store, rec, position[store]))
        out.sort(key=lambda c: (c["waiting_since"], c["id"]))
        return out

    def _call_json(self, cid: str, store: str, rec: Mapping[str, str], pos: int) -> dict[str, Any]:
        call: dict[str, Any] = {
            "id": cid,
            "room": rec.get("room", ""),
            "store": store,
            "caller": rec.get("caller", ""),
            "waiting_since": int(rec.get("hold_since") or 0),
            "position": pos,
            "state": rec.get("state", ""),
            "media": rec.get("media", "pending"),
            "transferred": rec.get("transferred") == "1",
        }
        if call["transferred"]:
            call["transfer_note"] = rec.get("transfer_note", "")
            call["transferred_by"] = rec.get("transfer_from", "")
            if rec.get("offered_to") and int(rec.get("offer_until") or 0) > time.time() * 1000:
                call["offered_to"] = rec["offered_to"]
        if rec.get("requeued"):
            call["requeued"] = int(rec["requeued"])
        if store in self.show_caller_number and rec.get("caller_number"):
            call["caller_number"] = rec["caller_number"]
        return call

    async def calls(self, request: web.Request) -> web.Response:
        agent = self.agent(request)
        return _json({"agent": agent.id, "calls": await self.waiting_calls(agent)})

    async def events(self, request: web.Request) -> web.StreamResponse:
        """Server-Sent Events: `calls` with the list whenever it changes (read
        every POLL_S), a comment every KEEPALIVE_S; ends when the token expires."""
        agent = self.agent(request, query_token=True)
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await resp.prepare(request)
        last: str | None = None
        quiet_since = time.monotonic()
        seen_at = 0.0
        newest: dict[str, str] = {}  # store -> id of the newest callback request sent
        try:
            while time.time() < agent.exp:
                if request.transport is None or request.transport.is_closing():
                    return resp  # the agent closed the tab: stop reading for them
                body = json.dumps({"calls": await self.waiting_calls(agent)})
                now = time.monotonic()
                if now - seen_at >= SEEN_EVERY_S:
                    seen_at = now
                    await self._seen(agent)
                wrote = False
                if body != last:
                    await resp.write(f"event: {DESK_EVENT_CALLS}\ndata: {body}\n\n".encode())
                    last, wrote = body, True
                for event in await self._new_callbacks(agent, newest):
                    await resp.write(event.encode())
                    wrote = True
                if wrote:
                    quiet_since = now
                elif now - quiet_since >= self.keepalive_s:
                    await resp.write(b": keep-alive\n\n")
                    quiet_since = now
                await asyncio.sleep(self.poll_s)
            await resp.write(b"event: expired\ndata: {}\n\n")
        except ConnectionResetError:  # (aiohttp's ClientConnectionResetError too)
            pass  # closed between our check and the write: an ordinary end
        return resp

    async def _seen(self, agent: Agent) -> None:
        """An open event stream is an agent signed in (for the maximum wait
        without agents): marked in each of their stores."""
        for store in agent.stores:
            try:
                await self.registry.agent_seen(store, agent.id)
            except RedisError as e:
                logger.warning(f"could not mark agent {agent.id} as seen: {e}")
                return

    async def _new_callbacks(self, agent: Agent, newest: dict[str, str]) -> list[str]:
        """`callbacks` events (after `calls`) for the stores whose newest
        request changed: at the stream's start for a store that has any."""
        out = []
        for store in sorted(agent.stores):
            # every poll reads only the newest request; the list when it changed
            first = await self.registry.callbacks(store, 1)
            top = str(first[0].get("id", "")) if first else ""
            if newest.get(store, "") == top:
                continue
            newest[store] = top
            got = await self.registry.callbacks(store, CALLBACKS_SHOWN)
            body = json.dumps({"store": store, "callbacks": [_callback_json(c) for c in got]})
            out.append(f"event: {DESK_EVENT_CALLBACKS}\ndata: {body}\n\n")
        return out

    async def callbacks(self, request: web.Request) -> web.Response:
        agent = self.agent(request)
        store = request.match_info["store"]
        if not STORE_KEY.match(store):
            raise DeskError(404, "no such store")
        self._may_see(agent, store)
        got = await self.registry.callbacks(store, CALLBACKS_SHOWN)
        return _json({"store": store, "callbacks": [_callback_json(c) for c in got]})

    # ---- actions ----------------------------------------------------------------

    @staticmethod
    def _check(outcome: str, detail: str, *, taken_status: int = 409) -> None:
        """An action's outcome from the registry: nothing for "ok", else its
        refusal. `taken_status`: 409 for a take (a colleague was faster), 403
        for acting on a call another agent has."""
        if outcome == "ok":
            return
        if outcome == "missing":
            raise DeskError(404, "the call is no longer held")
        if outcome == "taken":
            raise DeskError(taken_status, f"the call is taken by {detail}", taken_by=detail)
        if outcome == "state":
            raise DeskError(409, f"the call is not waiting (state {detail})")
        if outcome == "offered":
            raise DeskError(409, f"the call is offered to {detail} for now", offered_to=detail)
        if outcome == "not_taken":
            raise DeskError(409, "nobody has taken the call: take it first")
        if outcome == "held":
            raise DeskError(409, "the caller is on hold already")
        if outcome == "not_held":
            raise DeskError(409, f"the caller is not on hold (state {detail})")
        raise DeskError(409, "the call moved to another store's line")

    async def take(self, request: web.Request) -> web.Response:
        agent = self.agent(request)
        cid, rec = await self._call_of(request, agent)
        line = line_of(rec)
        outcome, detail, transferred_by = await self.registry.take(cid, agent.id, line)
        self._check(outcome, detail)
        room = rec["room"]
        if transferred_by and transferred_by != agent.id:
            # the agent who transferred it leaves now; the worker holds meanwhile
            await self._remove(room, f"{self.identity_prefix}{transferred_by}")
        logger.info(f"desk: agent {agent.id} took call {cid} (store {line})")
        return _json(
            {
                "id": cid,
                "room": room,
                "store": line,
                "taken_at": int(detail),
                "url": self.livekit.url,
                "token": self.room_token(agent, room),
            }
        )

    def room_token(self, agent: Agent, room: str) -> str:
        """Join, publish and subscribe in this room only, for token_ttl_s."""
        from livekit import api

        tok = (
            api.AccessToken(self.livekit.api_key, self.livekit.api_secret)
            .with_identity(f"{self.identity_prefix}{agent.id}")
            .with_name(agent.name)
            .with_ttl(timedelta(seconds=self.token_ttl_s))
            .with_grants(
                api.VideoGrants(room_join=True, room=room, can_publish=True, can_subscribe=True)
            )
        )
        key, _, value = self.role_attribute.partition("=")
        if key:
            tok = tok.with_attributes({key: value})
        return tok.to_jwt()

    async def hangup(self, request: web.Request) -> web.Response:
        agent = self.agent(request)
        body = await _body(request, '{"reason": "..."}')
        reason = _field(body, "reason")
        if not reason:
            raise DeskError(400, f"reason: required, one line of at most {MAX_REASON} characters")
        cid, rec = await self._call_of(request, agent)
        outcome, detail = await self.registry.hang_up(cid, agent.id, line_of(rec), reason)
        self._check(outcome, detail, taken_status=403)
        removed = await self._remove_callers(rec["room"])
        logger.info(f"desk: agent {agent.id} hung up call {cid}: {reason}")
        return _json({"id": cid, "room": rec["room"], "reason": reason, "removed": removed})

    async def hold(self, request: web.Request) -> web.Response:
        return await self._control(request, hold=True)

    async def resume(self, request: web.Request) -> web.Response:
        return await self._control(request, hold=False)

    async def _control(self, request: web.Request, *, hold: bool) -> web.Response:
        """Hold or resume: the taker only, in a state that allows it; the
        worker is told through LiveKit (it does the rest, as for its RPC)."""
        agent = self.agent(request)
        cid, rec = await self._call_of(request, agent)
        state = rec.get("state", "")
        if hold and state not in TALKING and rec.get("taken_by") == agent.id:
            raise DeskError(409, f"the caller is not talking to an agent (state {state})")
        owner = self._owner(rec)
        outcome, detail = await self.registry.control(cid, agent.id, line_of(rec), hold=hold)
        self._check(outcome, detail, taken_status=403)
        action = "hold" if hold else "resume"
        await self._tell_worker(rec["room"], owner, action, agent)
        logger.info(f"desk: agent {agent.id}: {action} call {cid}")
        return _json({"id": cid, "action": action})

    async def transfer(self, request: web.Request) -> web.Response:
        """Back into a line (this store's or another's), marked transferred,
        offered first to one agent if named; the caller on hold meanwhile."""
        agent = self.agent(request)
        body = await _body(request, '{"store": "...", "agent": "...", "note": "..."}')
        cid, rec = await self._call_of(request, agent)
        to_store = _field(body, "store") or line_of(rec)
        to_agent = _field(body, "agent")
        note = _field(body, "note")
        if self.stores and to_store not in self.stores:
            raise DeskError(404, f"no store {to_store[:64]!r} in the store map")
        if to_agent and not AGENT_ID.match(to_agent):
            raise DeskError(400, "agent: an agent id (a-z, 0-9, _ and -, at most 64)")
        if to_agent == agent.id:
            raise DeskError(400, "agent: a transfer to yourself")
        owner = self._owner(rec)
        outcome, detail = await self.registry.transfer(
            cid,
            agent.id,
            line_of(rec),
            to_store=to_store,
            note=note,
            to_agent=to_agent,
            offer_ms=self.offer_s * 1000,
        )
        self._check(outcome, detail, taken_status=403)
        if rec.get("state") in TALKING:
            await self._tell_worker(rec["room"], owner, "hold", agent)
        logger.info(f"desk: agent {agent.id} transferred call {cid} to store {to_store}")
        out: dict[str, Any] = {"id": cid, "store": to_store, "note": note}
        if to_agent:
            out["offered_to"] = to_agent
        return _json(out)

    def _owner(self, rec: Mapping[str, str]) -> str:
        owner = rec.get("owner", "")
        if not owner or owner.startswith(GUARDIAN_OWNER_PREFIX):
            raise DeskError(409, "the call is moving to another hold worker: try again in 2 s")
        return owner

    async def _tell_worker(self, room: str, owner: str, action: str, agent: Agent) -> None:
        """A `hold.control` message to the call's hold worker only (reliable)."""
        from livekit import api

        payload = json.dumps({"action": action, "agent": f"{self.identity_prefix}{agent.id}"})
        try:
            await self.room_service.send_data(
                api.SendDataRequest(
                    room=room,
                    data=payload.encode(),
                    kind=api.DataPacket.Kind.RELIABLE,
                    destination_identities=[owner],
                    topic=CONTROL_TOPIC,
                )
            )
        except api.TwirpError as e:
            raise DeskError(502, f"LiveKit: {e.message}") from None

    async def _remove(self, room: str, identity: str) -> None:
        """A participant out of the room; gone already is fine."""
        from livekit import api

        try:
            await self.room_service.remove_participant(
                api.RoomParticipantIdentity(room=room, identity=identity)
            )
        except api.TwirpError as e:
            if e.code != api.TwirpErrorCode.NOT_FOUND:
                logger.warning(f"desk: could not remove {identity} from the room: {e.message}")

    async def waits(self, request: web.Request) -> web.Response:
        """The store's waits: how long callers waited for an agent (recent,
        average) and how many gave up first, from its last WAITS_KEPT calls."""
        agent = self.agent(request)
        store = request.match_info["store"]
        self._may_see(agent, store)
        w = summarise(await self.registry.waits(store))
        return _json(
            {
                "store": store,
                "calls": w.calls,
                "taken": w.taken,
                "abandoned": w.abandoned,
                "average_wait_s": w.average_wait_s,
                "recent_waits_s": w.recent_waits_s,
                "since": w.since,
            }
        )

    async def _remove_callers(self, room: str) -> int:
        """Remove the room's SIP participants (the caller); how many."""
        from livekit import api

        svc = self.room_service
        try:
            got = await svc.list_participants(api.ListParticipantsRequest(room=room))
        except api.TwirpError as e:
            if e.code == api.TwirpErrorCode.NOT_FOUND:
                return 0
            raise DeskError(502, f"LiveKit: {e.message}") from None
        removed = 0
        for p in got.participants:
            if p.kind == api.ParticipantInfo.Kind.SIP:
                await svc.remove_participant(
                    api.RoomParticipantIdentity(room=room, identity=p.identity)
                )
                removed += 1
        return removed

    async def history(self, request: web.Request) -> web.Response:
        agent = self.agent(request)
        cid = request.match_info["id"]
        entries = await self.registry.history(cid) if CALL_ID.match(cid) else []
        rec = await self.registry.record(cid) if CALL_ID.match(cid) else {}
        last = entries[-1] if entries else {}
        # the line the call is in (or was in last): where a transfer sent it
        store = line_of(rec) or str(last.get("to_store") or last.get("store") or "")
        if not store:
            raise DeskError(404, f"no call {cid[:32]!r} is held or has a history")
        self._may_see(agent, store)
        return _json({"id": cid, "store": store, "history": entries})

    async def health(self, _request: web.Request) -> web.Response:
        await self.registry.client.ping()
        return _json({"ok": True})

    async def openapi(self, _request: web.Request) -> web.Response:
        return _json(OPENAPI)


CONSOLE_PREFIX = "/console"


def console_headers(livekit_url: str) -> dict[str, str]:
    """Security headers of the console: its own scripts and styles only, and
    connections to this desk and to the LiveKit server (ws and http)."""
    ws = livekit_url.rstrip("/")
    http = re.sub(r"^ws", "http", ws)
    return {
        "Content-Security-Policy": (
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            f"media-src 'self' blob: mediastream:; connect-src 'self' {ws} {http}; "
            "base-uri 'none'; form-action 'none'"
        ),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }


# ---- the OpenAPI document ---------------------------------------------------------


def _callback_json(c: Mapping[str, Any]) -> dict[str, Any]:
    """A callback request as agents see it (the worker stored the full
    number only where the store's policy allows it)."""
    keys = ("id", "store", "cid", "caller", "number", "waited_ms", "at")
    return {k: c[k] for k in keys if k in c}


def line_of(rec: Mapping[str, str]) -> str:
    """The store whose line a call is in: where it was transferred, else its own."""
    return rec.get("transfer_store") or rec.get("store", "")


async def _body(request: web.Request, shape: str) -> dict[str, Any]:
    """The JSON object a POST carries ({} without a body), or 400."""
    try:
        body = await request.json() if request.can_read_body else {}
    except ValueError:
        raise DeskError(400, f"body must be JSON: {shape}") from None
    if not isinstance(body, dict):
        raise DeskError(400, f"body must be a JSON object: {shape}")
    return body


def _field(body: Mapping[str, Any], name: str) -> str:
    """An optional text field, made one line (whitespace collapsed), or 400."""
    value = body.get(name, "")
    if not isinstance(value, str) or len(value) > MAX_REASON:
        raise DeskError(400, f"{name}: one line of at most {MAX_REASON} characters")
    return " ".join(value.split())


def _err(text: str) -> dict[str, Any]:
    return {"description": text, "content": {"application/json": {"schema": _ref("Error")}}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _object(**props: str | dict[str, Any]) -> dict[str, Any]:
    """A schema object; a property given as a string is of that type."""
    return {
        "type": "object",
        "properties": {k: {"type": v} if isinstance(v, str) else v for k, v in props.items()},
    }


_ID = [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}]
_AUTH = {"401": _err("no token, an expired or forged one")}
_MINE = {**_AUTH, "403": _err("a call of a store not in the token"), "404": _err("unknown call")}
OPENAPI: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "hold desk: the agents' queue service", "version": "1"},
    "security": [{"bearer": []}],
    "paths": {
        "/health": {
            "get": {
                "security": [],
                "responses": {
                    "200": {"description": "Redis reachable"},
                    "503": _err("Redis unreachable"),
                },
            }
        },
        "/calls": {
            "get": {
                "summary": "the waiting calls of the agent's stores, longest wait first",
                "responses": {
                    "200": {
                        "description": "the calls",
                        "content": {"application/json": {"schema": _ref("CallList")}},
                    },
                    **_AUTH,
                },
            }
        },
        "/events": {
            "get": {
                "summary": "Server-Sent Events: `calls` (a CallList) on every change; "
                "the token may be given as ?access_token=",
                "responses": {
                    "200": {
                        "description": "text/event-stream",
                        "content": {"text/event-stream": {}},
                    },
                    **_AUTH,
                },
            }
        },
        "/calls/{id}/take": {
            "post": {
                "summary": "take the call (atomic: one of any number of agents wins)",
                "parameters": _ID,
                "responses": {
                    "200": {
                        "description": "yours: join the room with this token",
                        "content": {"application/json": {"schema": _ref("Taken")}},
                    },
                    "409": _err("taken by another agent (taken_by) or no longer waiting"),
                    **_MINE,
                },
            }
        },
        "/calls/{id}/hangup": {
            "post": {
                "summary": "hang the caller up, with a reason",
                "parameters": _ID,
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["reason"],
                                "properties": {"reason": {"type": "string", "maxLength": 200}},
                            }
                        }
                    },
                },
                "responses": {
                    "200": {"description": "the caller was removed"},
                    "400": _err("no reason"),
                    **_MINE,
                    "403": _err("another store's call, or taken by another agent"),
                },
            }
        },
        "/calls/{id}/hold": {
            "post": {
                "summary": "put the caller on hold: hold audio at once, every agent cut",
                "parameters": _ID,
                "responses": {
                    "200": {"description": "the hold worker was told"},
                    "409": _err("nobody took it, or the caller is not talking to an agent"),
                    **_MINE,
                    "403": _err("another store's call, or taken by another agent"),
                },
            }
        },
        "/calls/{id}/resume": {
            "post": {
                "summary": "take the caller off hold: the agents heard again",
                "parameters": _ID,
                "responses": {
                    "200": {"description": "the hold worker was told"},
                    "409": _err("nobody took it, or the caller is not on hold"),
                    **_MINE,
                    "403": _err("another store's call, or taken by another agent"),
                },
            }
        },
        "/calls/{id}/transfer": {
            "post": {
                "summary": "back into a line (this store's or `store`'s), on hold, marked "
                "transferred; offered first to `agent` if given; you leave the room when "
                "the next agent takes it",
                "parameters": _ID,
                "requestBody": {
                    "content": {
                        "application/json": {
                            "schema": _object(
                                store={"type": "string", "description": "default: this one"},
                                agent={"type": "string", "description": "offer it to"},
                                note={"type": "string", "maxLength": 200},
                            )
                        }
                    },
                },
                "responses": {
                    "200": {"description": "transferred"},
                    "400": _err("a bad body"),
                    "409": _err("nobody took it"),
                    **_MINE,
                    "403": _err("another store's call, or taken by another agent"),
                    "404": _err("unknown call, or no such store"),
                },
            }
        },
        "/stores/{store}/waits": {
            "get": {
                "summary": "the store's waits: recent and average time to an agent, "
                "abandoned calls (its last 200 calls)",
                "parameters": [
                    {"name": "store", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {
                    "200": {
                        "description": "the figures",
                        "content": {"application/json": {"schema": _ref("Waits")}},
                    },
                    **_AUTH,
                    "403": _err("a store not in the token"),
                },
            }
        },
        "/stores/{store}/callbacks": {
            "get": {
                "summary": "the store's callback requests (a caller's keypad), newest first: "
                "id, caller (masked), number (where the store allows it), waited_ms, at "
                "(unix ms); the `callbacks` event of /events sends the same",
                "parameters": [
                    {"name": "store", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {
                    "200": {
                        "description": "the requests",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                    **_AUTH,
                    "403": _err("a store not in the token"),
                },
            }
        },
        "/calls/{id}/history": {
            "get": {
                "summary": "the agents' actions on the call (kept after it ends)",
                "parameters": _ID,
                "responses": {"200": {"description": "agent, action, at (unix ms)"}, **_MINE},
            }
        },
        "/openapi.json": {"get": {"security": [], "responses": {"200": {"description": "this"}}}},
        "/": {
            "get": {
                "security": [],
                "summary": "the agents' console (a page; its files under /console/)",
                "responses": {
                    "200": {"description": "text/html"},
                    "404": _err("the console is not built"),
                },
            }
        },
    },
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        "schemas": {
            "Error": {
                **_object(error="string", taken_by="string", offered_to="string"),
                "required": ["error"],
            },
            "Call": _object(
                id="string",
                room="string",
                store="string",
                caller={"type": "string", "description": "masked"},
                caller_number={"type": "string", "description": "stores with show_caller_number"},
                waiting_since={"type": "integer", "description": "unix ms"},
                position={"type": "integer", "description": "1 = next in its store's line"},
                state="string",
                media={"type": "string", "description": "media.verdict"},
                transferred="boolean",
                transfer_note="string",
                transferred_by="string",
                offered_to={"type": "string", "description": "only they may take it, for now"},
                requeued={"type": "integer", "description": "back in line after its agent left"},
            ),
            "Waits": _object(
                store="string",
                calls="integer",
                taken="integer",
                abandoned="integer",
                average_wait_s={"type": "number", "nullable": True},
                recent_waits_s={"type": "array", "items": {"type": "number"}},
                since={"type": "integer", "nullable": True, "description": "unix ms"},
            ),
            "CallList": _object(agent="string", calls={"type": "array", "items": _ref("Call")}),
            "Taken": _object(
                id="string",
                room="string",
                store="string",
                taken_at="integer",
                url="string",
                token="string",
            ),
        },
    },
}


# ---- the command ----------------------------------------------------------------


class ConfigError(Exception):
    """One line for the operator."""


def _secret(settings: Settings) -> str:
    secret = str(settings.desk_secret.get_secret_value())
    if not secret:
        raise ConfigError("HOLD_DESK_SECRET is not set (the secret agents' tokens are signed with)")
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise ConfigError(f"HOLD_DESK_SECRET: must be at least {MIN_SECRET_BYTES} bytes")
    return secret


def _token_command(argv: list[str], settings: Settings) -> int:
    p = argparse.ArgumentParser(
        prog="python -m worker desk token", description="print an agent's token"
    )
    p.add_argument("--agent", required=True)
    p.add_argument("--store", action="append", required=True, dest="stores")
    p.add_argument("--name", default="")
    p.add_argument("--ttl", type=int, default=3600)
    a = p.parse_args(argv)
    try:
        print(mint_token(_secret(settings), a.agent, a.stores, name=a.name, ttl_s=a.ttl))
    except (ConfigError, AuthError) as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    return 0


def _stores(
    settings: Settings, env: Mapping[str, str] | None = None
) -> tuple[frozenset[str], frozenset[str], dict[str, Hook]]:
    """The store map's ids, those whose agents see full caller numbers, and
    the stores' callback webhooks with their secrets (read once, at start)."""
    if settings.stores is None:
        return frozenset(), frozenset(), {}
    from .settings import DEFAULT_ANNOUNCEMENT
    from .stores import StoreMapError, load_store_map

    try:
        m = load_store_map(settings.stores, default_announcement=DEFAULT_ANNOUNCEMENT)
    except StoreMapError as e:
        raise ConfigError(f"HOLD_STORES: {e}") from None
    stores = m.model.stores
    hooks: dict[str, Hook] = {}
    for key, st in stores.items():
        wh = st.keypad.webhook
        if wh is None:
            continue
        secret = (env or {}).get(wh.secret_env, "")
        if len(secret) < 16:
            raise ConfigError(
                f"stores.{key}.keypad.webhook.secret_env: {wh.secret_env} is not set "
                "(or shorter than 16 characters)"
            )
        hooks[key] = Hook(wh.url, secret)
    show = frozenset(k for k, v in stores.items() if v.show_caller_number)
    return frozenset(stores), show, hooks


def build(settings: Settings, env: Mapping[str, str]) -> Desk:
    """The desk from settings and the environment, or ConfigError."""
    secret = _secret(settings)
    if not settings.redis_url:
        raise ConfigError("HOLD_REDIS_URL is not set (the desk reads the call registry there)")
    for name in LIVEKIT_ENV:
        if not env.get(name):
            raise ConfigError(f"{name} is not set")
    from .registry import connect

    registry = Registry(
        connect(settings.redis_url), history_ttl_ms=settings.desk_history_ttl_s * 1000
    )
    stores, show, hooks = _stores(settings, env)
    desk = Desk(
        registry,
        secret=secret,
        livekit=LiveKitAccess(*(env[n] for n in LIVEKIT_ENV)),
        token_ttl_s=settings.desk_token_ttl_s,
        show_caller_number=show,
        stores=stores,
        offer_s=settings.desk_offer_s,
        identity_prefix=settings.agent_identity_prefix,
        role_attribute=settings.agent_role_attribute,
        console=settings.desk_console,
        hooks=hooks,
    )
    return desk


def _livekit_api(desk: Desk) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(_app: web.Application) -> AsyncIterator[None]:
        from livekit import api

        lk = api.LiveKitAPI(desk.livekit.url, desk.livekit.api_key, desk.livekit.api_secret)
        desk.room_service = lk.room
        sender = WebhookSender(desk.registry, desk.hooks or {})
        if desk.hooks:
            sender.start()
        yield
        await sender.aclose()
        await lk.aclose()
        await desk.registry.aclose()

    return ctx


def main(argv: list[str], s: Settings) -> int:
    """`python -m worker desk [token ...]`, with the settings __main__ loaded."""
    from . import logmask

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logmask.install()
    if argv[:1] == ["token"]:
        return _token_command(argv[1:], s)
    if argv:
        print(
            f"usage: python -m worker desk [token --agent A --store S] (got {argv[0]!r})",
            file=sys.stderr,
        )
        return 2
    try:
        desk = build(s, os.environ)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    app = desk.app()
    app.cleanup_ctx.append(_livekit_api(desk))
    shown = ", ".join(sorted(desk.show_caller_number)) or "none"
    if desk.console is None or not (desk.console / "index.html").is_file():
        logger.warning(f"desk: no console at {desk.console} (run make setup): / answers 404")
    print(
        f"hold desk: http://{s.desk_host}:{s.desk_port}/ over the call registry in Redis; "
        f"LiveKit {desk.livekit.url}; room tokens {s.desk_token_ttl_s} s; full caller "
        f"numbers shown to: {shown}",
        flush=True,
    )
    web.run_app(app, host=s.desk_host, port=s.desk_port, print=None, access_log=None)
    return 0
