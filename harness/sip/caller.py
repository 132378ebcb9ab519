"""A real SIP user agent (pjsua2) that stands in for the carrier in tests.

It places one call over UDP on loopback, plays a WAV file in a loop into the
call, records what it hears and writes a JSON result describing the call.

CLI (run from the repository root)::

    python -m harness.sip.caller \\
        --target sip:+15550100@127.0.0.1:5060 --from +15551230123 \\
        --send-wav in.wav --record out.wav --duration 8 --result result.json \\
        [--hangup-after S] [--answer-timeout S] [--codec PCMU|PCMA] \\
        [--local-port 0] [--header X-Store-Id:store-7 ...] \\
        [--auth-user U --auth-password P] [--log-file pj.log] [--verbose] \\
        [--rtp-port N] [--rtp-stop-after S] [--mute-after S] [--dtmf S:DIGITS ...]

Exit codes: 0 answered, 3 not answered (refused, cancelled or no answer; the
JSON is still written), 2 usage error, 1 internal error, 4 hard timeout.

Importable: ``run_call(...) -> dict`` takes the same parameters (and
``stop``, an event that hangs the call up when set: bench/caller.py sets it
on SIGUSR1) and runs the call in the current thread of the current process
(it creates and destroys its own pjsua2 Endpoint, so only one call at a time
per process; spawning the CLI as a subprocess is the recommended way for
tests). ``main(argv, stop=...)`` is the CLI with such an event.

Timing model (see ``result["events"]`` and ``result["recording"]``): every
event carries ``wall`` (time.time()) and ``mono`` (time.monotonic(), which on
Linux is CLOCK_MONOTONIC and therefore comparable across processes).  The
recorder is attached the moment media becomes active; sample 0 of the
recording corresponds to ``recording.started`` and
``recording.offset_from_answer_s`` is ``recording.started - events.answered``
(negative when media became active on early media before the 200 OK).  So the
time from the 200 OK to a sound at sample N is ``offset_from_answer_s +
N / sample_rate``.

RTP (see ``result["rtp"]``): voice activity detection / silence suppression
is off (``noVad``), so the call sends one RTP packet every 20 ms whatever the
WAV holds, all-zero samples included (``rtp.tx_packets`` ~ 50 per second of
media). ``--rtp-port N`` binds the call's RTP socket to exactly 127.0.0.1:N
(RTCP on N+1; the call fails if N is taken); by default pjsua picks a free
pair upwards from a random even port in 20000-45998 (below livekit-server's
50000-50100 and livekit-sip's 51000-51100). The port actually used is ``result["rtp_port"]``.

Faults (times in seconds after the 200 OK, like ``--duration``):

- ``--rtp-stop-after S``: stop sending RTP (the stream's encoder is paused
  with ``pjmedia_stream_pause(ENCODING)``; no re-INVITE, SIP stays up, the
  caller keeps receiving). Events ``rtp_stopped``; ``rtp.tx_packets`` stays flat
  from then on.
- ``--mute-after S``: keep sending RTP (every 20 ms) but with exact-zero
  samples: the WAV player stops transmitting into the call. Event ``muted``.

Keypad (``--dtmf S:DIGITS``, repeatable, seconds after the 200 OK): the
digits are sent as RFC 2833 telephone-events (pjsua2 ``Call.dialDtmf``, whose
default method is RFC 2833) in the RTP stream, one after another as pjmedia
paces them; ``result["dtmf"]`` lists each send (digits, wall, mono).

For packets that are sent but never arrive, see tests/e2e/support/faults.py
(``RtpBlock``, nftables).

Everything binds to 127.0.0.1 (harness/sip/ua.py).
"""

from __future__ import annotations

import argparse
import ctypes
import importlib
import os
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.sip import dialled
from harness.sip.ua import (
    BIND_ADDR,
    SUPPORTED_CODECS,
    PjStack,
    call_class,
    now,
    start_watchdog,
    wav_info,
    write_json,
)

# Hard cap on the whole run in addition to answer timeout + duration.
HARD_TIMEOUT_SLACK_S = 20.0
HANGUP_WAIT_S = 5.0  # for the DISCONNECTED after our BYE/CANCEL
RTP_SAMPLE_S = 0.5

EXIT_ANSWERED = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_NOT_ANSWERED = 3
EXIT_HARD_TIMEOUT = 4

_RUN_LOCK = threading.Lock()


def sip_uri_for(number_or_uri: str, host: str = BIND_ADDR) -> str:
    if number_or_uri.startswith(("sip:", "sips:", "tel:")):
        return number_or_uri
    if number_or_uri.startswith("<") or "<sip" in number_or_uri:
        return number_or_uri
    return f"sip:{number_or_uri}@{host}"


def parse_header(spec: str) -> tuple[str, str]:
    name, sep, value = spec.partition(":")
    name, value = name.strip(), value.strip()
    if not sep or not name or any(c.isspace() for c in name):
        raise ValueError(f"header must look like Name:value, got {spec!r}")
    return name, value


def _extract_reason_header(whole_msg: str) -> str | None:
    for line in whole_msg.splitlines():
        name, sep, value = line.partition(":")
        if sep and name.strip().lower() == "reason":
            return value.strip()
        if not line.strip():
            break
    return None


def _first_line(whole_msg: str) -> str:
    return whole_msg.split("\r\n", 1)[0].split("\n", 1)[0].strip()


_stream_pause: Any = None


def _pause_stream_encoding(pj: Any, stream: Any) -> None:
    """Stop one pjmedia stream from sending RTP (its decoder keeps running).

    pjsua2 has no call for this short of a re-INVITE (hold / media direction),
    so call the C function ``pjmedia_stream_pause(stream, PJMEDIA_DIR_ENCODING)``
    exported by the pjsua2 extension module. ``stream`` is the ``MediaStream``
    pointer given to ``Call.onStreamCreated``."""
    global _stream_pause
    if _stream_pause is None:
        ext = importlib.import_module(f"{pj.__name__}._pjsua2")
        lib = ctypes.CDLL(ext.__file__)  # already loaded: the same handle
        fn = lib.pjmedia_stream_pause
        fn.argtypes = [ctypes.c_void_p, ctypes.c_int]
        fn.restype = ctypes.c_int
        _stream_pause = fn
    status = _stream_pause(ctypes.c_void_p(int(stream)), int(pj.PJMEDIA_DIR_ENCODING))
    if status != 0:
        raise RuntimeError(f"pjmedia_stream_pause failed: status {status}")


@dataclass
class CallPlan:
    """What run_call was asked to do (see its docstring)."""

    target: str
    from_: str
    send_wav: str
    record: str
    duration: float
    result: str | None = None
    hangup_after: float | None = None
    codec: str = "PCMU"
    local_port: int = 0
    headers: list[tuple[str, str]] = field(default_factory=list)
    answer_timeout: float = 30.0
    auth_user: str | None = None
    auth_password: str | None = None
    log_file: str | None = None
    verbose: bool = False
    rtp_port: int = 0
    rtp_stop_after: float | None = None
    mute_after: float | None = None
    dtmf: list[tuple[float, str]] = field(default_factory=list)
    stop: threading.Event | None = None


DTMF_DIGITS = frozenset("0123456789*#ABCD")


def parse_dtmf(spec: str) -> tuple[float, str]:
    """``"3.5:12#"`` -> (3.5, "12#"): digits to send at 3.5 s after the answer."""
    at, sep, digits = spec.partition(":")
    try:
        t = float(at)
    except ValueError:
        t = -1.0
    if not sep or t < 0 or not digits or any(d not in DTMF_DIGITS for d in digits.upper()):
        raise ValueError(f"--dtmf {spec!r}: expected SECONDS:DIGITS, e.g. 3.5:1 (digits 0-9*#A-D)")
    return t, digits.upper()


@dataclass
class RtpCounts:
    """RTP packets sent / received (pjmedia stream statistics, final counts
    when the stream is destroyed); timeline: [mono, tx, rx] about every 0.5 s
    while the call is up."""

    requested_port: int | None
    local: str | None = None
    remote: str | None = None
    tx_packets: int | None = None
    rx_packets: int | None = None
    timeline: list[list[float]] = field(default_factory=list)
    vad: bool = False

    def count(self, stat: Any, at: float) -> None:
        self.tx_packets = int(stat.rtcp.txStat.pkt)
        self.rx_packets = int(stat.rtcp.rxStat.pkt)
        self.timeline.append([round(at, 3), self.tx_packets, self.rx_packets])


@dataclass
class Recording:
    """Sample 0 of the recording is ``started`` (module docstring)."""

    path: str
    started: dict[str, float] | None = None
    offset_from_answer_s: float | None = None
    expected_duration_s: float | None = None
    info: dict[str, Any] = field(default_factory=dict)  # wav_info() of the file

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "path": self.path,
            "started": self.started,
            "offset_from_answer_s": self.offset_from_answer_s,
            **self.info,
            "exists": os.path.exists(self.path),
        }
        if self.expected_duration_s is not None:
            out["expected_duration_s"] = self.expected_duration_s
        return out


# keys of the result that are only there once known
_OPTIONAL = ("remote_contact", "final_response_line", "connect_duration_s")


@dataclass
class CallResult:
    """The result JSON of one call (``to_json``)."""

    target: str
    from_: str
    codec: str
    headers: dict[str, str]
    recording: Recording
    rtp: RtpCounts
    answered: bool = False
    status_code: int | None = None
    reason: str | None = None
    provisional: list[dict[str, Any]] = field(default_factory=list)
    events: dict[str, dict[str, float]] = field(default_factory=dict)
    hangup_by: str | None = None  # "local" (we hung up / cancelled) | "remote" (BYE or refusal)
    # "duration" | "hangup_after" | "answer_timeout" | "stopped" (CallPlan.stop)
    local_hangup_cause: str | None = None
    remote_hangup_reason: dict[str, Any] | None = None
    errors: list[str] = field(default_factory=list)
    dtmf: list[dict[str, Any]] = field(default_factory=list)  # each send: digits, wall, mono
    # a REFER from the far end (a transfer): its target, and the new leg's
    # events (transfer_requested, transfer_confirmed, transfer_disconnected in `events`)
    transfer_to: str | None = None
    pid: int = field(default_factory=os.getpid)
    rtp_port: int | None = None  # local RTP port actually bound (from the media transport)
    local_sip_port: int | None = None
    remote_contact: str | None = None
    final_response_line: str | None = None
    connect_duration_s: float | None = None
    exit_code: int = EXIT_INTERNAL

    def mark(self, name: str) -> dict[str, float]:
        """The time of event `name`, stamped now if it had not happened yet."""
        return self.events.setdefault(name, now())

    def since(self, name: str, at: float) -> float:
        return at - self.events[name]["mono"]

    def to_json(self) -> dict[str, Any]:
        out = {k: v for k, v in vars(self).items() if k not in ("from_", "recording", "rtp")}
        for k in _OPTIONAL:
            if out[k] is None:
                del out[k]
        out["from"] = self.from_
        out["recording"] = self.recording.to_json()
        out["rtp"] = vars(self.rtp).copy()
        return out


class _TransferLeg:
    """The new leg a REFER made: only its state changes, into the result."""

    def __init__(self, pj: Any, res: CallResult) -> None:
        self.pj, self.res = pj, res

    def callback_failed(self, name: str, exc: Exception) -> None:
        self.res.errors.append(f"transfer leg {name}: {exc!r}")

    def on_call_state(self, call: Any, _prm: Any) -> None:
        state = call.getInfo().state
        if state == self.pj.PJSIP_INV_STATE_CONFIRMED:
            self.res.mark("transfer_confirmed")
        elif state == self.pj.PJSIP_INV_STATE_DISCONNECTED:
            self.res.mark("transfer_disconnected")


class OutgoingCall:
    """One call from INVITE to teardown: pjsua2's callbacks (through
    ua.call_class) and the poll loop's hangups and faults fill ``res``.

    The pjsua2 objects live only in attributes of this object and are
    released in ``release()`` before the Endpoint is destroyed (their C++
    destructors assert otherwise)."""

    def __init__(self, plan: CallPlan, stack: PjStack, res: CallResult) -> None:
        self.plan, self.stack, self.pj, self.res = plan, stack, stack.pj, res
        self.disconnected = False
        self.hangup_requested = False
        self.hangup_deadline: float | None = None
        self.stream: Any = None  # MediaStream pointer of the audio stream (onStreamCreated)
        self.media_idx: int | None = None
        self.account: Any = None
        self.call: Any = None
        self.recorder: Any = None
        self.player: Any = None
        self.transfer_leg: Any = None  # the call a REFER made us place

    # ---- pjsua2 callbacks --------------------------------------------------

    def on_call_transfer_request(self, _call: Any, prm: Any) -> None:
        """A REFER (the far end transfers us): accepted, as a carrier does;
        pjsua places the new call, whose states land in ``events``."""
        self.res.transfer_to = str(prm.dstUri)
        self.res.mark("transfer_requested")
        self.transfer_leg = call_class(self.pj)(self.account, _TransferLeg(self.pj, self.res))
        prm.newCall = self.transfer_leg

    def on_call_transfer_status(self, _call: Any, prm: Any) -> None:
        if int(prm.statusCode) // 100 == 2:
            self.res.mark("transfer_succeeded")

    def callback_failed(self, name: str, exc: Exception) -> None:
        self.res.errors.append(f"{name}: {exc!r}")

    def on_stream_created(self, _call: Any, prm: Any) -> None:
        self.stream = prm.stream
        if "rtp_stopped" in self.res.events:  # a re-INVITE made a new stream: keep it quiet
            try:
                _pause_stream_encoding(self.pj, prm.stream)
            except Exception as exc:
                self.res.errors.append(f"rtp stop (new stream): {exc!r}")

    def on_stream_destroyed(self, call: Any, prm: Any) -> None:
        # the stream still exists here: the final RTP counts
        try:
            self.res.rtp.count(call.getStreamStat(prm.streamIdx), time.monotonic())
        except Exception:
            pass
        self.stream = None

    def on_call_state(self, call: Any, prm: Any) -> None:
        pj, res = self.pj, self.res
        ci = call.getInfo()
        msg = _received_message(pj, prm)
        if ci.state == pj.PJSIP_INV_STATE_EARLY:
            res.mark("early")
            if ci.lastStatusCode and ci.lastStatusCode not in [p["code"] for p in res.provisional]:
                res.provisional.append(
                    {"code": ci.lastStatusCode, "reason": ci.lastReason, **now()}
                )
        elif ci.state == pj.PJSIP_INV_STATE_CONNECTING:
            res.mark("answered")
            res.answered, res.status_code, res.reason = True, 200, ci.lastReason
        elif ci.state == pj.PJSIP_INV_STATE_CONFIRMED:
            res.mark("answered")
            res.mark("confirmed")
            res.answered = True
            res.status_code = res.status_code or 200
            res.reason = res.reason or ci.lastReason
            res.remote_contact = ci.remoteContact
        elif ci.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            self._disconnected(ci, msg)

    def _disconnected(self, ci: Any, msg: str | None) -> None:
        res = self.res
        res.mark("disconnected")
        self.disconnected = True
        if not res.answered:  # refused by the far end, or cancelled by us
            res.hangup_by = "local" if self.hangup_requested else "remote"
            res.status_code, res.reason = ci.lastStatusCode, ci.lastReason
            if msg:
                res.final_response_line = _first_line(msg)
        elif self.hangup_requested:
            res.hangup_by = res.hangup_by or "local"
        else:
            res.hangup_by = "remote"
            res.mark("hangup")
            reason: dict[str, Any] = {"code": ci.lastStatusCode, "text": ci.lastReason}
            if msg:
                reason["request_line"] = _first_line(msg)
                reason["reason_header"] = _extract_reason_header(msg)
            res.remote_hangup_reason = reason
        res.connect_duration_s = ci.connectDuration.sec + ci.connectDuration.msec / 1000.0

    def on_call_media_state(self, call: Any, _prm: Any) -> None:
        pj = self.pj
        ci = call.getInfo()  # keep it: ci.media is a view into it
        for i, mi in enumerate(ci.media):
            if mi.type == pj.PJMEDIA_TYPE_AUDIO and mi.status == pj.PJSUA_CALL_MEDIA_ACTIVE:
                self._media_active(call, i)
                return

    def _media_active(self, call: Any, idx: int) -> None:
        res, pj = self.res, self.pj
        first = "media_active" not in res.events
        res.mark("media_active")
        self.media_idx = idx
        try:
            mti = call.getMedTransportInfo(idx)
            res.rtp.local, res.rtp.remote = mti.localRtpName, mti.srcRtpName or None
            res.rtp_port = int(mti.localRtpName.rsplit(":", 1)[1])
            if self.plan.rtp_port and res.rtp_port != int(self.plan.rtp_port):
                res.errors.append(f"RTP bound to {mti.localRtpName}, not port {self.plan.rtp_port}")
        except Exception as exc:
            res.errors.append(f"media transport info: {exc!r}")
        am = call.getAudioMedia(idx)
        if self.recorder is None:
            self.recorder = pj.AudioMediaRecorder()
            self.recorder.createRecorder(self.plan.record)
        # connect (idempotent on re-INVITEs); recorder first so
        # its sample 0 is as close to the timestamp as possible
        am.startTransmit(self.recorder)
        if first:
            res.recording.started = res.mark("recorder_started")
        if self.player is None:
            self.player = pj.AudioMediaPlayer()
            self.player.createPlayer(self.plan.send_wav, 0)  # 0 = loop
        if "muted" not in res.events:  # a re-INVITE must not unmute
            self.player.startTransmit(am)
        if first:
            res.mark("player_started")

    # ---- what the poll loop does -------------------------------------------

    def dial(self, from_uri: str) -> None:
        pj, plan = self.pj, self.plan
        self.account = pj.Account()
        auth = (plan.auth_user, plan.auth_password or "") if plan.auth_user else None
        self.account.create(self.stack.account_config(from_uri, auth, rtp_port=plan.rtp_port))
        self.call = call_class(pj)(self.account, self)
        prm = pj.CallOpParam(True)
        prm.opt.audioCount = 1
        prm.opt.videoCount = 0
        for name, value in plan.headers:
            h = pj.SipHeader()
            h.hName = name
            h.hValue = value
            prm.txOption.headers.append(h)
        self.res.mark("invite_sent")
        self.call.makeCall(plan.target, prm)
        self.res.mark("invite_returned")

    def sample_rtp(self, at: float) -> None:
        if self.media_idx is None or self.disconnected:
            return
        try:
            stat = self.call.getStreamStat(self.media_idx)
        except Exception:
            return  # no stream (yet / any more)
        self.res.rtp.count(stat, at)

    def hang_up(self, cause: str) -> None:
        if self.hangup_requested:
            return
        pj, res = self.pj, self.res
        self.hangup_requested = True
        res.local_hangup_cause, res.hangup_by = cause, "local"
        self.sample_rtp(time.monotonic())  # last counts: hangup() tears the stream down
        res.mark("hangup")
        prm = pj.CallOpParam(True)
        # before the answer pjsua sends CANCEL and reports this code as
        # the call's last status (the far end answers the INVITE with 487)
        prm.statusCode = pj.PJSIP_SC_OK if res.answered else pj.PJSIP_SC_REQUEST_TERMINATED
        try:
            self.call.hangup(prm)
        except Exception as exc:
            res.errors.append(f"hangup: {exc!r}")
        self.hangup_deadline = time.monotonic() + HANGUP_WAIT_S

    def hangup_due(self, at: float) -> str | None:
        """Why the call should be hung up now, if it should."""
        plan, res = self.plan, self.res
        if plan.stop is not None and plan.stop.is_set():
            return "stopped"
        if plan.hangup_after is not None and res.since("invite_sent", at) >= plan.hangup_after:
            return "hangup_after"
        if res.answered and res.since("answered", at) >= plan.duration:
            return "duration"
        if not res.answered and res.since("invite_sent", at) >= plan.answer_timeout:
            return "answer_timeout"
        return None

    def apply_faults(self, at: float) -> None:
        plan, res = self.plan, self.res
        if not res.answered or self.hangup_requested:
            return
        since_answer = res.since("answered", at)
        if (
            plan.rtp_stop_after is not None
            and "rtp_stopped" not in res.events
            and since_answer >= plan.rtp_stop_after
            and self.stream is not None  # else retried on the next turn
        ):
            self.sample_rtp(at)
            res.mark("rtp_stopped")
            try:
                _pause_stream_encoding(self.pj, self.stream)
            except Exception as exc:
                res.errors.append(f"rtp stop: {exc!r}")
        if (
            plan.mute_after is not None
            and "muted" not in res.events
            and since_answer >= plan.mute_after
            and self.media_idx is not None
            and self.player is not None
        ):
            res.mark("muted")
            try:
                # the WAV player stops feeding the call; the bridge then
                # sends zero frames (PCMU 0xFF / PCMA 0xD5), still every 20 ms.
                # (adjustTxLevel(0) does not silence the call in pjsua2 2.15.)
                self.player.stopTransmit(self.call.getAudioMedia(self.media_idx))
            except Exception as exc:
                res.errors.append(f"mute: {exc!r}")

    def send_dtmf(self, at: float) -> None:
        """Send the keypad digits that are due (RFC 2833, in the RTP stream)."""
        plan, res = self.plan, self.res
        if not res.answered or self.hangup_requested or self.media_idx is None:
            return
        since_answer = res.since("answered", at)
        while len(res.dtmf) < len(plan.dtmf) and since_answer >= plan.dtmf[len(res.dtmf)][0]:
            digits = plan.dtmf[len(res.dtmf)][1]
            res.dtmf.append({"digits": digits, **now()})
            try:
                self.call.dialDtmf(digits)
            except Exception as exc:
                res.errors.append(f"dtmf {digits}: {exc!r}")

    def run_until_disconnected(self) -> None:
        plan, res = self.plan, self.res
        hard_deadline = (
            res.events["invite_sent"]["mono"]
            + plan.answer_timeout
            + plan.duration
            + HARD_TIMEOUT_SLACK_S
        )
        next_sample = 0.0
        while not self.disconnected:
            self.stack.poll(5)
            at = time.monotonic()
            self.apply_faults(at)
            self.send_dtmf(at)
            if at >= next_sample:
                self.sample_rtp(at)
                next_sample = at + RTP_SAMPLE_S
            if at > hard_deadline:
                res.errors.append("call did not end before hard deadline")
                return
            if self.hangup_requested:  # waiting for the BYE/CANCEL transaction to finish
                if self.hangup_deadline is not None and at > self.hangup_deadline:
                    res.errors.append("no DISCONNECTED within 5s of hangup")
                    return
                continue
            cause = self.hangup_due(at)
            if cause is not None:
                self.hang_up(cause)

    def linger(self, seconds: float = 0.2) -> None:
        """Let the BYE's 200 / ACKs flow briefly."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.stack.poll(5)

    def end_transfer_leg(self) -> None:
        """Hang up the call a REFER made (if any) and wait for its end: a call
        still up at libDestroy brings the process down in pjsua's media teardown."""
        leg = self.transfer_leg
        if leg is None:
            return
        try:
            if leg.isActive():
                leg.hangup(self.pj.CallOpParam(True))
        except Exception as exc:
            self.res.errors.append(f"transfer leg hangup: {exc!r}")
            return
        end = time.monotonic() + HANGUP_WAIT_S
        while "transfer_disconnected" not in self.res.events and time.monotonic() < end:
            self.stack.poll(5)

    def release(self) -> None:
        """Media first (the WAV header is finalised), then call and account:
        each attribute held the last reference, so the C++ destructor runs here."""
        self.end_transfer_leg()
        self.player = None
        self.recorder = None
        self.call = None
        self.transfer_leg = None
        if self.account is not None:
            try:
                self.account.shutdown()
            except Exception:
                pass
        self.account = None


def _received_message(pj: Any, prm: Any) -> str | None:
    """The SIP message that caused a call-state change, if one was received."""
    try:
        e = prm.e
        if e.type == pj.PJSIP_EVENT_TSX_STATE and e.body.tsxState.type == pj.PJSIP_EVENT_RX_MSG:
            return str(e.body.tsxState.src.rdata.wholeMsg)
    except Exception:
        pass
    return None


def run_call(
    target: str,
    from_: str,
    send_wav: str,
    record: str,
    duration: float,
    result: str | None = None,
    hangup_after: float | None = None,
    codec: str = "PCMU",
    local_port: int = 0,
    headers: Iterable[str | tuple[str, str]] = (),
    answer_timeout: float = 30.0,
    auth_user: str | None = None,
    auth_password: str | None = None,
    log_file: str | None = None,
    verbose: bool = False,
    rtp_port: int = 0,
    rtp_stop_after: float | None = None,
    mute_after: float | None = None,
    dtmf: Iterable[str | tuple[float, str]] = (),
    stop: threading.Event | None = None,
) -> dict[str, Any]:
    """Place one call and return (and optionally write) the result dict.

    ``duration``: seconds after the answer before we hang up.
    ``hangup_after``: seconds after the INVITE was sent before we hang up
    (CANCEL while ringing, BYE once answered), whichever comes first.
    ``answer_timeout``: seconds to wait for a final response before CANCEL.
    ``rtp_port``: local RTP port (0 = random). ``rtp_stop_after`` /
    ``mute_after``: seconds after the answer to stop sending RTP / to send
    exact zeros (see the module docstring). ``stop``: hang up once it is set.
    Runs in the calling thread; one call per process at a time.
    """
    plan = CallPlan(
        target=target,
        from_=from_,
        send_wav=send_wav,
        record=os.path.abspath(record),
        duration=duration,
        result=result,
        hangup_after=hangup_after,
        codec=codec.upper(),
        local_port=local_port,
        headers=[h if isinstance(h, tuple) else parse_header(h) for h in headers],
        answer_timeout=answer_timeout,
        auth_user=auth_user,
        auth_password=auth_password,
        log_file=log_file,
        verbose=verbose,
        rtp_port=rtp_port,
        rtp_stop_after=rtp_stop_after,
        mute_after=mute_after,
        dtmf=sorted(d if isinstance(d, tuple) else parse_dtmf(d) for d in dtmf),
        stop=stop,
    )
    if not _RUN_LOCK.acquire(blocking=False):
        raise RuntimeError("run_call is already running in this process")
    try:
        return _run(plan)
    finally:
        _RUN_LOCK.release()


def _prepare(plan: CallPlan) -> None:
    if not os.path.isfile(plan.send_wav):
        raise FileNotFoundError(f"--send-wav {plan.send_wav} does not exist")
    os.makedirs(os.path.dirname(plan.record) or ".", exist_ok=True)
    if os.path.exists(plan.record):
        os.unlink(plan.record)  # never report a stale recording
    dialled.record(plan.from_)  # the e2e log scan looks for every caller number used


def _run(plan: CallPlan) -> dict[str, Any]:
    _prepare(plan)
    res = CallResult(
        target=plan.target,
        from_=sip_uri_for(plan.from_),
        codec=plan.codec,
        headers=dict(plan.headers),
        recording=Recording(plan.record),
        rtp=RtpCounts(requested_port=int(plan.rtp_port) or None),
    )
    stack = PjStack(
        codec=plan.codec, sip_port=plan.local_port, log_file=plan.log_file, verbose=plan.verbose
    )
    res.local_sip_port = stack.sip_port
    call = OutgoingCall(plan, stack, res)
    try:
        call.dial(res.from_)
        call.run_until_disconnected()
        call.linger()
        res.exit_code = EXIT_ANSWERED if res.answered else EXIT_NOT_ANSWERED
    except Exception as exc:
        res.errors.append(f"fatal: {exc!r}")
        res.exit_code = EXIT_INTERNAL
    finally:
        call.release()
        try:
            stack.destroy()
        except Exception as exc:
            res.errors.append(f"libDestroy: {exc!r}")
    _finish_recording(res)
    out = res.to_json()
    write_json(plan.result, out)
    return out


def _finish_recording(res: CallResult) -> None:
    rec = res.recording
    if rec.started is None:
        return
    rec.info = wav_info(rec.path)
    if "answered" in res.events:
        rec.offset_from_answer_s = rec.started["mono"] - res.events["answered"]["mono"]
    end = res.events.get("hangup") or res.events.get("disconnected")
    if end:
        rec.expected_duration_s = end["mono"] - rec.started["mono"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m harness.sip.caller",
        description="Place one SIP call over loopback with pjsua2 (carrier stand-in).",
    )
    p.add_argument("--target", required=True, help="request URI, e.g. sip:+15550100@127.0.0.1:5060")
    p.add_argument("--from", dest="from_", required=True, help="caller number or SIP URI")
    p.add_argument(
        "--send-wav", required=True, help="16-bit PCM WAV played in a loop into the call"
    )
    p.add_argument("--record", required=True, help="WAV file for the received audio")
    p.add_argument(
        "--duration", type=float, required=True, help="seconds after answer before hanging up"
    )
    p.add_argument("--result", required=True, help="JSON result file")
    p.add_argument(
        "--hangup-after", type=float, default=None, help="seconds after INVITE before hanging up"
    )
    p.add_argument(
        "--answer-timeout", type=float, default=30.0, help="seconds to wait for a final response"
    )
    p.add_argument("--codec", default="PCMU", type=str.upper, choices=SUPPORTED_CODECS)
    p.add_argument("--local-port", type=int, default=0, help="local SIP UDP port (0 = random)")
    p.add_argument(
        "--header",
        dest="headers",
        action="append",
        default=[],
        metavar="NAME:VALUE",
        help="extra INVITE header (repeatable)",
    )
    p.add_argument("--auth-user", default=None, help="digest username, if the far end challenges")
    p.add_argument("--auth-password", default=None)
    p.add_argument("--log-file", default=None, help="pjsua log (level 5, with SIP messages)")
    p.add_argument("--verbose", action="store_true", help="pjsua log to stdout")
    p.add_argument(
        "--rtp-port",
        type=int,
        default=0,
        help="local RTP port, even (RTCP = N+1); 0 = random (default)",
    )
    p.add_argument(
        "--rtp-stop-after",
        type=float,
        default=None,
        help="seconds after answer: stop sending RTP (no re-INVITE; the call stays up)",
    )
    p.add_argument(
        "--mute-after",
        type=float,
        default=None,
        help="seconds after answer: keep sending RTP, but exact-zero samples",
    )
    p.add_argument(
        "--dtmf",
        action="append",
        default=[],
        metavar="S:DIGITS",
        help="seconds after answer: send these keypad digits (RFC 2833); repeatable",
    )
    return p


def _validate(p: argparse.ArgumentParser, a: argparse.Namespace) -> None:
    if not a.target.startswith(("sip:", "sips:")):
        p.error("--target must be a sip: URI")
    if not os.path.isfile(a.send_wav):
        p.error(f"--send-wav {a.send_wav} does not exist")
    if a.duration <= 0:
        p.error("--duration must be > 0")
    if a.hangup_after is not None and a.hangup_after < 0:
        p.error("--hangup-after must be >= 0")
    if a.answer_timeout <= 0:
        p.error("--answer-timeout must be > 0")
    if not 0 <= a.local_port <= 65535:
        p.error("--local-port out of range")
    if a.rtp_port and not (1024 <= a.rtp_port <= 65534 and a.rtp_port % 2 == 0):
        p.error("--rtp-port must be an even port in 1024..65534 (or 0 = random)")
    for name in ("rtp_stop_after", "mute_after"):
        v = getattr(a, name)
        if v is not None and v < 0:
            p.error(f"--{name.replace('_', '-')} must be >= 0")
    for h in a.headers:
        try:
            parse_header(h)
        except ValueError as exc:
            p.error(str(exc))
    for d in a.dtmf:
        try:
            parse_dtmf(d)
        except ValueError as exc:
            p.error(str(exc))


def main(argv: Sequence[str] | None = None, stop: threading.Event | None = None) -> int:
    p = build_parser()
    a = p.parse_args(argv)  # exits 2 on usage errors
    _validate(p, a)
    hard = a.answer_timeout + a.duration + HARD_TIMEOUT_SLACK_S + 10.0
    if a.hangup_after is not None:
        hard = min(hard, a.hangup_after + HARD_TIMEOUT_SLACK_S + 10.0)
    wd = start_watchdog(
        hard,
        a.result,
        {
            "target": a.target,
            "answered": False,
            "status_code": None,
            "exit_code": EXIT_HARD_TIMEOUT,
        },
        EXIT_HARD_TIMEOUT,
    )
    try:
        res = run_call(**vars(a), stop=stop)  # the parser's dests are run_call's names
    except ImportError as exc:
        sys.stderr.write(f"{exc}\n")
        write_json(
            a.result, {"target": a.target, "answered": False, "errors": [str(exc)], "exit_code": 1}
        )
        return EXIT_INTERNAL
    finally:
        wd.cancel()
    errors = f" errors={res['errors']}" if res.get("errors") else ""
    sys.stderr.write(
        f"sip_caller: status={res.get('status_code')} {res.get('reason')}"
        f" answered={res.get('answered')} hangup_by={res.get('hangup_by')}"
        f" rtp_port={res.get('rtp_port')} tx={res.get('rtp', {}).get('tx_packets')}"
        f" exit={res.get('exit_code')}{errors}\n"
    )
    return int(res["exit_code"])


if __name__ == "__main__":
    sys.exit(main())
