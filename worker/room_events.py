"""RoomEvents: the room's events, translated into the lifecycle's events.

Who is who (the caller, the human agents, whose audio is live) is decided when
the room event arrives, not when the lifecycle gets to it, so no event is
judged against stale state. Every lifecycle event goes to `emit`; the caller's
arrival is also told to `on_caller`, which starts what depends on the caller
(the store lookup, the media monitor).

While `quiet` (handed over), a newly published audio track is not subscribed:
the worker decodes nothing it does not need to notice an agent leaving.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from typing import Any

from livekit import rtc
from livekit.rtc.room import EventTypes

from .aio import Log
from .lifecycle import (
    AgentAudio,
    AgentHold,
    AgentPresence,
    CallerJoined,
    CallerLeft,
    Event,
    RoomClosed,
)
from .masking import mask_number
from .protocol import CONTROL_TOPIC, RPC_HOLD, RPC_RESUME, SIP_CALL_ID, SIP_PHONE_NUMBER
from .roles import AgentRule, Role, classify, is_sip_hangup


def kind_name(p: rtc.Participant) -> str:
    """The participant kind as roles.classify expects it: "sip", "connector", ..."""
    try:
        return str(rtc.ParticipantKind.Name(p.kind)).removeprefix("PARTICIPANT_KIND_").lower()
    except ValueError:  # a kind newer than this SDK
        return f"kind{int(p.kind)}"


def audio_live(p: rtc.RemoteParticipant) -> bool:
    """An unmuted audio track published to the room (its media is flowing to
    the server; our subscription, if any, follows inside the fade)."""
    return any(
        pub.kind == rtc.TrackKind.KIND_AUDIO and not pub.muted
        for pub in p.track_publications.values()
    )


# Disconnects that end the room for us on purpose (deleted or closed by the
# server, our own leave, removed by the API, as a guardian's takeover does);
# any other reason (a network failure, a server shutdown) loses a call that
# may still have a caller.
_ROOM_GONE = frozenset(
    {
        rtc.DisconnectReason.ROOM_DELETED,
        rtc.DisconnectReason.ROOM_CLOSED,
        rtc.DisconnectReason.CLIENT_INITIATED,
        rtc.DisconnectReason.PARTICIPANT_REMOVED,
    }
)


def set_subscribed(pub: rtc.RemoteTrackPublication, on: bool, log: Log) -> None:
    try:
        pub.set_subscribed(on)
    except Exception as e:  # best effort: costs CPU, never the call
        log.warning(f"could not change a subscription: {e}")


class RoomEvents:
    def __init__(
        self,
        room: Any,  # rtc.Room, or the unit tests' fake
        agent_rule: AgentRule,
        log: Any,  # the call's CallLog: its `extra` gains the SIP call id
        *,
        emit: Callable[[Event], None],
        on_caller: Callable[[rtc.RemoteParticipant], None],
        on_audio_published: Callable[[rtc.RemoteTrackPublication, rtc.RemoteParticipant], None]
        | None = None,
        on_key: Callable[[str], None] | None = None,
    ) -> None:
        self.room = room
        self._agent_rule = agent_rule
        self.log = log
        self._emit = emit
        self._on_caller = on_caller
        self._on_audio_published = on_audio_published
        self._on_key = on_key
        self.stray_keys = 0  # DTMF from anyone but this call's caller (ignored)
        self.caller: str | None = None  # the caller's identity, once joined
        self.caller_masked = ""
        self.caller_number = ""  # the full number: for the registry only, never logged
        self.caller_gone = False  # the caller hung up or left
        self.room_lost = False  # our connection to the room ended unasked
        self.quiet = False  # handed over: new audio tracks are not subscribed
        self._seen: set[str] = set()  # participants already classified as joined
        self._agents: set[str] = set()  # human agents present
        self.agents_left: dict[str, int] = {}  # human agents who left: identity -> unix ms
        self._live: dict[str, bool] = {}  # human agent identity -> audio live
        self._bound: list[tuple[EventTypes, Callable[..., Any]]] = []

    def bind(self) -> None:
        handlers: list[tuple[EventTypes, Callable[..., Any]]] = [
            ("participant_connected", self.participant_connected),
            ("participant_disconnected", self._on_participant_disconnected),
            ("participant_attributes_changed", self._on_attributes_changed),
            ("track_published", self._on_track_published),
            ("track_subscribed", lambda _t, _pub, p: self._check_agent(p)),
            ("track_unsubscribed", lambda _t, _pub, p: self._check_agent(p)),
            ("track_muted", lambda p, _pub: self._check_agent(p)),
            ("track_unmuted", lambda p, _pub: self._check_agent(p)),
            ("track_unpublished", lambda _pub, p: self._check_agent(p)),
            ("disconnected", self._on_disconnected),
            ("data_received", self._on_data),
            ("sip_dtmf_received", self._on_dtmf),
        ]
        for name, handler in handlers:
            self.room.on(name, handler)
        self._bound = handlers

    def unbind(self) -> None:
        for name, handler in self._bound:
            with contextlib.suppress(Exception):
                self.room.off(name, handler)
        self._bound = []

    def register_controls(self) -> None:
        """The agents' RPC methods on our participant (after connecting)."""
        local = self.room.local_participant
        register = getattr(local, "register_rpc_method", None)
        if register is None:
            return  # a room without RPC (the unit tests' fake)
        register(RPC_HOLD, lambda data: self._rpc(data, hold=True))
        register(RPC_RESUME, lambda data: self._rpc(data, hold=False))

    def _rpc(self, data: rtc.RpcInvocationData, *, hold: bool) -> str:
        who = data.caller_identity
        if who not in self._agents:
            self.log.warning(f"{data.method} refused: {who!r} is not a human agent in the room")
            return json.dumps({"ok": False, "error": "only a human agent in the room may do this"})
        self.log.info(f"{data.method} by {who}")
        self._emit(AgentHold(who, hold=hold))
        return json.dumps({"ok": True})

    def _on_data(self, packet: rtc.DataPacket) -> None:
        """The same controls from a backend (LiveKit SendData) or an agent."""
        if packet.topic != CONTROL_TOPIC:
            return
        sender = packet.participant
        if sender is not None and sender.identity not in self._agents:
            self.log.warning("control message refused: not from a human agent or the server")
            return
        try:
            msg = json.loads(packet.data)
            action, agent = msg["action"], str(msg.get("agent") or "")
            if action not in ("hold", "resume"):
                raise ValueError(action)
        except (ValueError, KeyError, TypeError):
            self.log.warning("control message refused: not {action: hold|resume, agent}")
            return
        agent = sender.identity if sender is not None else agent
        self.log.info(f"control {action} for {agent or 'an agent'}")
        self._emit(AgentHold(agent, hold=action == "hold"))

    def _on_dtmf(self, dtmf: rtc.SipDTMF) -> None:
        """A keypad digit as livekit-sip delivers it (RFC 2833 or SIP INFO):
        only this call's caller's count; the digit itself is not logged here."""
        sender = dtmf.participant.identity if dtmf.participant is not None else None
        if self._on_key is None:
            return
        if sender is None or sender != self.caller:
            self.stray_keys += 1
            if self.stray_keys == 1:
                self.log.info("keypad digit from someone other than the caller ignored")
            return
        self._on_key(str(dtmf.digit))

    def catch_up(self) -> None:
        """Participants already in the room when we connected (those who joined
        since came through participant_connected: _seen skips them)."""
        for p in list(self.room.remote_participants.values()):
            self.participant_connected(p)

    def audio_publications(self, identity: str | None = None) -> list[rtc.RemoteTrackPublication]:
        """Remote audio publications: everyone's, or one participant's."""
        people = self.room.remote_participants
        who = (
            people.values()
            if identity is None
            else [people[identity]]
            if identity in people
            else []
        )
        return [
            pub
            for p in who
            for pub in p.track_publications.values()
            if pub.kind == rtc.TrackKind.KIND_AUDIO
        ]

    def _role(self, p: rtc.Participant) -> Role:
        if p is self.room.local_participant:
            return Role.UNKNOWN
        return classify(kind_name(p), p.identity, p.attributes, self._agent_rule)

    def participant_connected(self, p: rtc.RemoteParticipant) -> None:
        if p.identity in self._seen:
            return  # replayed after the publish, or a duplicate event
        self._seen.add(p.identity)
        if self._on_audio_published is not None:  # tracks it joined with
            for pub in p.track_publications.values():
                if pub.kind == rtc.TrackKind.KIND_AUDIO:
                    self._on_audio_published(pub, p)
        role = self._role(p)
        if role is Role.CALLER and self.caller is None:
            self.caller = p.identity
            self.caller_number = p.attributes.get(SIP_PHONE_NUMBER, "")
            self.caller_masked = mask_number(self.caller_number)
            call_id = p.attributes.get(SIP_CALL_ID, "")
            self.log.extra = {"room": self.room.name, SIP_CALL_ID: call_id}
            self.log.info("caller joined", extra={"caller": self.caller_masked})
            self._emit(CallerJoined(p.identity))
            self._on_caller(p)
            if is_sip_hangup(p.attributes):
                self.caller_gone = True
                self._emit(CallerLeft("caller hung up before we saw them"))
        elif role is Role.HUMAN_AGENT:
            self._check_agent(p)
        elif role is not Role.CALLER:
            self.log.info(
                "participant joined, not a caller or agent: ignored",
                extra={"participant_kind": kind_name(p), "role": str(role)},
            )

    def _on_participant_disconnected(self, p: rtc.RemoteParticipant) -> None:
        self._seen.discard(p.identity)
        if p.identity == self.caller:
            self.caller_gone = True
            self._emit(CallerLeft("caller hung up"))
        elif p.identity in self._agents:
            self._agents.discard(p.identity)
            self._live.pop(p.identity, None)
            self.agents_left[p.identity] = int(time.time() * 1000)
            self.log.info("human agent left", extra={"agent": p.identity})
            self._emit(AgentPresence(p.identity, present=False))

    def _on_attributes_changed(self, _changed: dict[str, str], p: rtc.Participant) -> None:
        if p.identity == self.caller and is_sip_hangup(p.attributes):
            self.caller_gone = True
            self._emit(CallerLeft("caller hung up (sip.callStatus=hangup)"))
        elif p is not self.room.local_participant:
            self._check_agent(p)  # type: ignore[arg-type]  # a role=agent attribute may just have arrived

    def _on_track_published(
        self, pub: rtc.RemoteTrackPublication, p: rtc.RemoteParticipant
    ) -> None:
        if self.quiet and pub.kind == rtc.TrackKind.KIND_AUDIO:
            set_subscribed(pub, False, self.log)  # handed over: decode nothing
        if self._on_audio_published is not None and pub.kind == rtc.TrackKind.KIND_AUDIO:
            self._on_audio_published(pub, p)
        self._check_agent(p)

    def _check_agent(self, p: rtc.RemoteParticipant) -> None:
        """A human agent: present (however recognised, whenever) and whether
        their audio is live. Both are events for the lifecycle."""
        if p.identity not in self._agents:
            if p.identity == self.caller or self._role(p) is not Role.HUMAN_AGENT:
                return
            if p.identity not in self.room.remote_participants:
                return  # an event for someone who has left already
            self._agents.add(p.identity)
            self._seen.add(p.identity)
            self.agents_left.pop(p.identity, None)
            self.log.info("human agent joined", extra={"agent": p.identity})
            self._emit(AgentPresence(p.identity, present=True))
        live = audio_live(p)
        if self._live.get(p.identity, False) != live:
            self._live[p.identity] = live
            self._emit(AgentAudio(p.identity, live=live))

    def _on_disconnected(self, reason: Any) -> None:
        self.room_lost = self.room_lost or reason not in _ROOM_GONE
        self._emit(RoomClosed(f"room disconnected ({reason})"))
