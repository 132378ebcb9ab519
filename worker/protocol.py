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
