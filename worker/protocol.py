"""The contract with the store's web app, its backends and the guardian.

Everything another program reads from, or writes into, a call's room lives
here with one line on what it means: the hold worker's participant
attributes, the call states, the data messages, the room metadata, and the
attributes livekit-sip and the web app put on their participants. The README
documents each name (tests/unit/test_readme.py checks it). Pure: no livekit
import.
"""

from __future__ import annotations

from .lifecycle import State

# ---- attributes of the hold worker's participant (set by the worker) -------

ATTR_STATE = "hold.state"
"""The call's state, one of `STATES`; `done` is published before a clean exit."""
ATTR_SINCE = "hold.since"
"""Unix ms at which the caller's hold began (empty before the caller joined)."""
ATTR_CALLER = "hold.caller"
"""The caller's number, masked (`+***0123`)."""
ATTR_MEDIA_IN = "media.inbound"
"""The caller's audio reaching us: pending | ok | missing | stopped | silent."""
ATTR_MEDIA_OUT = "media.outbound"
"""Our audio reaching the caller: pending | ok | not_subscribed | unknown."""
ATTR_MEDIA_REASON = "media.reason"
"""The media verdict in words."""
ATTR_STORE_ID = "store.id"
"""The store the call is for (store map), once resolved."""
ATTR_STORE_NAME = "store.name"
"""That store's display name."""
ATTR_STORE_MATCH = "store.matched_by"
"""How the store was found: header | number | default."""

STATES: dict[str, str] = {
    State.WAITING: "in the room, hold track published, no caller yet",
    State.HOLDING: "the caller hears hold audio",
    State.HANDING_OFF: "a human agent's audio is live; hold audio fading out",
    State.SETTLING: (
        "faded out under the agent, track still published: hold back at once if they drop"
    ),
    State.MONITORING: "handed over; no track, no media; hold back if every agent leaves",
    State.ON_HOLD: (
        "an agent put the caller on hold: hold audio, every agent's audio cut from the caller"
    ),
    State.DONE: "the worker has left (or is leaving) the call",
}
"""Values of `hold.state`. Every one but `done` is unfinished: a hold worker
that leaves with one of them died, and the guardian acts."""
UNFINISHED = frozenset(s for s in STATES if s != State.DONE)

# ---- data messages (published by the worker, reliable) ---------------------

MEDIA_TOPIC = "hold.media"
"""Default topic (HOLD_MEDIA_TOPIC) of the one-way audio verdicts."""
MEDIA_MESSAGE_TYPE = "media"
"""`type` of a media verdict message: JSON with `room`, `at` (unix ms),
`media.verdict`, `media.inbound`, `media.outbound`, `media.reason`,
`packets_received`, `concealed_samples`, `rms_dbfs`."""
MEDIA_VERDICT = "media.verdict"
"""ok | pending | no_inbound_media | inbound_stopped | inbound_digital_silence
| outbound_not_subscribed."""

# ---- room metadata (JSON object; other keys are kept) ----------------------

ROOM_META_STORE = "store"
"""`{"id", "name", "matched_by"}` of the call's store."""

# ---- attributes the worker reads -------------------------------------------

SIP_PHONE_NUMBER = "sip.phoneNumber"
"""livekit-sip: the caller's number (never logged unmasked)."""
SIP_CALL_ID = "sip.callID"
"""livekit-sip: the call's id, on every log line of the call."""
SIP_CALL_STATUS = "sip.callStatus"
"""livekit-sip: `hangup` once the caller's leg has ended."""
SIP_TRUNK_PHONE_NUMBER = "sip.trunkPhoneNumber"
"""livekit-sip: the number the caller dialled (selects the store)."""
AGENT_NAME_ATTR = "lk.agent.name"
"""LiveKit: the agent name a worker participant was dispatched as."""
ROLE_ATTR = "role"
"""The web app: `role=agent` marks a human agent (HOLD_AGENT_ROLE_ATTRIBUTE)."""

# ---- dispatch ---------------------------------------------------------------

GUARDIAN_DISPATCH_METADATA = "hold-guardian"
"""Metadata of a dispatch the guardian made (after a worker died)."""

# ---- the call registry in Redis (HOLD_REDIS_URL; issue 14) -----------------
# Keys carry a call id (a hash of the room name, so no caller number sits in a
# key); the room name itself is a field of the record.

REGISTRY_CALL_KEY = "hold:call:{id}"
"""A hash per held call, written by its worker at least every 500 ms (at once
on a change) and gone when the call ends; it expires by itself
`REGISTRY_RECORD_TTL_MS` after its worker stops writing. Fields:
`REGISTRY_FIELDS`."""
REGISTRY_FIELDS: dict[str, str] = {
    "id": "the call id (the hash in the key)",
    "room": "the call's room name",
    "state": "hold.state (STATES)",
    "store": "the store id (`-` while unknown or without a store map)",
    "caller": "the caller's number, masked",
    "caller_number": (
        "the caller's full number: for the desk and callback features only, never logged"
    ),
    "hold_since": "unix ms at which the caller's hold began (0 before)",
    "media": "the latest media verdict (media.verdict)",
    "owner": (
        "the worker holding it (its participant identity), or `guardian:<old owner>` while "
        "a guardian hands it to another replica"
    ),
    "participant_sid": "the owner's participant sid in the room",
    "worker": "the worker process (host:pid)",
    "agent_name": "the agent name the worker was dispatched as (a takeover dispatches it again)",
    "heartbeat": "Redis server time (unix ms) of the owner's last write",
    "taken_by": (
        "the desk: the agent id that took the call (set once, atomically); a taken call "
        "never goes back into its store's waiting list"
    ),
    "taken_at": "the desk: Redis server time (unix ms) of the take",
    "ended_reason": "the desk: the reason an agent gave for hanging the call up",
    "ended_by": "the desk: the agent id that hung it up",
    "held": "the desk: `1` while it has the caller on hold (set by hold, cleared by resume)",
    "transferred": "the desk: `1` while the call waits again after a transfer",
    "transfer_note": "the desk: the note of the latest transfer",
    "transfer_store": (
        "the desk: the store whose line the call is in since a transfer (`store` stays the "
        "store that was called)"
    ),
    "transfer_from": "the desk: the agent who transferred it, until the next agent takes it",
    "offered_to": "the desk: the agent a transfer offered the call to first",
    "offer_until": "the desk: Redis time (unix ms) until which only `offered_to` may take it",
    "requeued": (
        "how often the call went back into line because the agent who took it left the room"
    ),
}
"""Fields of a `REGISTRY_CALL_KEY` record."""
REGISTRY_HEARTBEATS = "hold:heartbeats"
"""A sorted set: call id -> its last heartbeat (Redis server time, unix ms).
The guardian finds stale calls with one range query."""
REGISTRY_WAITING = "hold:waiting:{store}"
"""A sorted set per store: call id -> hold start (unix ms), for the calls
waiting for an agent (states waiting and holding). A caller's position in line
is their rank in it (one ZRANK)."""
REGISTRY_RECORD_TTL_MS = 10_000
"""A record its worker stopped writing expires after this long."""
GUARDIAN_OWNER_PREFIX = "guardian:"
"""`owner` of a record a guardian took over from a dead worker, until the
replica it dispatched writes its own."""

# ---- the desk: the agents' queue service (python -m worker desk; issue 16) ---

DESK_HISTORY_KEY = "hold:history:{id}"
"""A list per call: one JSON object per agent action (`agent`, `action`, `at`
unix ms Redis server time, `store`, and `reason` for a hang-up), oldest first;
kept HOLD_DESK_HISTORY_TTL_S after the call's end (and after its last action)."""
DESK_ACTION_TAKE = "take"
"""History `action`: the agent took the call (won the race for it)."""
DESK_ACTION_HANGUP = "hangup"
"""History `action`: the agent hung the caller up (with `reason`)."""
DESK_ACTION_HOLD = "hold"
"""History `action`: the agent put the caller on hold."""
DESK_ACTION_RESUME = "resume"
"""History `action`: the agent took the caller off hold."""
DESK_ACTION_TRANSFER = "transfer"
"""History `action`: the agent transferred the call (`to_store`, and `to_agent`,
`note` when given)."""
DESK_ACTION_REQUEUE = "requeue"
"""History `action`: the agent who took the call left the room; it went back
into line (written by the hold worker)."""
DESK_ACTION_END = "end"
"""History `action`, the last: the call ended (`reason`: the worker's end reason,
or `hung up by the agent`; `agent`: who had it; `waited_ms`: from hold start),
written by the hold worker when the call had a desk history."""
DESK_WAITS_KEY = "hold:waits:{store}"
"""A list per store, newest first, of its most recent waits (200, kept 7 days):
JSON `{"at", "wait_ms", "outcome"}`, `outcome` `taken` (from hold start to an
agent's take; transferred calls are not counted again) or `abandoned` (the
call ended before any agent took it)."""
DESK_CALLBACKS_KEY = "hold:callbacks:{store}"
"""A list per store, newest first, of its callers' callback requests (500,
kept 7 days): JSON `{"id", "store", "cid", "caller"` (masked), `"number"`
(the full number, only where the store's policy allows it: keypad
`callback_full_number`, default `show_caller_number`), `"waited_ms"`, `"at"`
(Redis server time, unix ms)`}`, written by the hold worker when a caller
confirms a callback on the keypad."""
DESK_CALLBACK_OUTBOX = "hold:callbacks:outbox"
"""A list: the same requests, waiting for the desk to send them to their
store's webhook (each popped by one desk replica)."""
DESK_AGENTS_KEY = "hold:agents:{store}"
"""A sorted set per store: agent id -> when the desk last saw them on its event
stream (Redis time, unix ms). Agents seen within HOLD_DESK_SIGNED_IN_S count as
signed in (the maximum wait without agents)."""
DESK_EVENT_CALLBACKS = "callbacks"
"""Server-Sent Event name on `GET /events`: data `{"store", "callbacks": [...]}`,
a store's newest callback requests as `GET /stores/{store}/callbacks` returns
them, sent (after `calls`) at the stream's start for a store that has any and
whenever a new one arrives."""
DESK_EVENT_CALLS = "calls"
"""Server-Sent Event name on `GET /events`: data `{"calls": [...]}`, the agent's
stores' waiting calls as `GET /calls` returns them, sent whenever they change."""

# ---- agents' controls (LiveKit RPC on the hold worker's participant) --------

RPC_HOLD = "hold.hold"
"""RPC method: put the caller on hold (called by a human agent in the room).
Hold audio is back at once and every agent's audio is cut from the caller;
the response is JSON `{"ok": true}` or `{"ok": false, "error": ...}`."""
RPC_RESUME = "hold.resume"
"""RPC method: take the caller off hold: the agents are heard again and the
hold audio fades out."""
CONTROL_TOPIC = "hold.control"
"""Data-message topic of the same controls from a backend (the desk, through
LiveKit's SendData to the worker's identity): JSON `{"action": "hold" |
"resume", "agent": "<identity>"}`; accepted from the server and from human
agents in the room only."""
