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
        [--rtp-port N] [--rtp-stop-after S] [--mute-after S]

Exit codes: 0 answered, 3 not answered (refused, cancelled or no answer; the
JSON is still written), 2 usage error, 1 internal error, 4 hard timeout.

Importable: ``run_call(...) -> dict`` takes the same parameters and runs the
call in the current thread of the current process (it creates and destroys
its own pjsua2 Endpoint, so only one call at a time per process; spawning the
CLI as a subprocess is the recommended way for tests).

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

For packets that are sent but never arrive, see ``faults.RtpBlock`` (nftables).

Everything binds to 127.0.0.1: no STUN, no ICE, no SRTP, one codec.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib
import json
import os
import random
import sys
import threading
import time
import wave
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

BIND_ADDR = "127.0.0.1"
CONF_CLOCK_RATE = 8000  # conference bridge / recording sample rate
SUPPORTED_CODECS = ("PCMU", "PCMA")
# Hard cap on the whole run in addition to answer timeout + duration.
HARD_TIMEOUT_SLACK_S = 20.0

EXIT_ANSWERED = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_NOT_ANSWERED = 3
EXIT_HARD_TIMEOUT = 4

_RUN_LOCK = threading.Lock()


def import_pjsua2() -> Any:
    """Import pjsua2 with a clear message when it is missing."""
    try:
        import pjsua2 as pj

        pj.Endpoint  # noqa: B018 - the package loads its bindings lazily
    except Exception as exc:  # ImportError, or a broken binary
        raise ImportError(
            f"pjsua2 is not importable ({exc}). Install it with "
            "`pip install -r tests/e2e/requirements.txt` "
            "(package pjsua2-python)."
        ) from exc
    return pj


def _now() -> dict[str, float]:
    return {"wall": time.time(), "mono": time.monotonic()}


@contextmanager
def _quiet_stdout() -> Iterator[None]:
    """Silence fd 1 while pjlib initialises (it logs at level 5 to stdout
    before the configured log level takes effect in libInit)."""
    try:
        sys.stdout.flush()
    except Exception:
        pass
    try:
        saved = os.dup(1)
    except OSError:
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


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


def wav_info(path: str) -> dict[str, Any]:
    """Sample rate / frame count of a PCM WAV (stdlib only)."""
    try:
        with wave.open(path, "rb") as w:
            rate, frames = w.getframerate(), w.getnframes()
            return {
                "sample_rate": rate,
                "channels": w.getnchannels(),
                "frames": frames,
                "duration_s": frames / float(rate) if rate else 0.0,
            }
    except Exception as exc:  # missing, or header not finalised
        return {"error": str(exc)}


class PjStack:
    """One pjsua2 Endpoint set up for loopback tests.

    threadCnt=0 + mainThreadOnly: no pjsip worker thread; every SIP callback
    runs inside ``poll()`` on the thread that created the stack, so Python
    callbacks never race and no other thread needs registering.  The null
    audio device clocks the conference bridge (its clock thread never calls
    into Python).
    """

    def __init__(
        self,
        *,
        codec: str = "PCMU",
        sip_port: int = 0,
        log_file: str | None = None,
        verbose: bool = False,
        user_agent: str = "e2e-sip-ua",
    ) -> None:
        pj = import_pjsua2()
        self.pj = pj
        codec = codec.upper()
        if codec not in SUPPORTED_CODECS:
            raise ValueError(f"codec must be one of {SUPPORTED_CODECS}")
        self.codec = codec
        self.ep = pj.Endpoint()
        with _quiet_stdout():
            self.ep.libCreate()
        self._destroyed = False
        try:
            # libCreate() (pj_init) registers the calling thread with pjlib;
            # libIsThreadRegistered() must not be called before libInit()
            # (it asserts on a NULL mutex), and no other thread touches pjsua.
            cfg = pj.EpConfig()
            cfg.uaConfig.threadCnt = 0
            cfg.uaConfig.mainThreadOnly = True
            cfg.uaConfig.userAgent = user_agent
            cfg.uaConfig.maxCalls = 8
            # no STUN / no nameserver: leave the vectors empty
            cfg.logConfig.msgLogging = 1 if (log_file or verbose) else 0
            cfg.logConfig.consoleLevel = 4 if verbose else 0
            if log_file:
                cfg.logConfig.filename = log_file
                cfg.logConfig.level = 5
            else:
                cfg.logConfig.level = 4 if verbose else 0
            cfg.medConfig.clockRate = CONF_CLOCK_RATE
            cfg.medConfig.sndClockRate = CONF_CLOCK_RATE
            cfg.medConfig.channelCount = 1
            cfg.medConfig.noVad = True
            cfg.medConfig.ecTailLen = 0
            cfg.medConfig.hasIoqueue = True
            cfg.medConfig.threadCnt = 1
            self.ep.libInit(cfg)

            tcfg = pj.TransportConfig()
            tcfg.port = int(sip_port)
            tcfg.boundAddress = BIND_ADDR
            tcfg.publicAddress = BIND_ADDR
            self.transport_id = self.ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, tcfg)
            self.ep.libStart()
            # No audio hardware: clock the bridge with the null device.
            self.ep.audDevManager().setNullDev()
            self._set_codecs()
            self.sip_port = int(
                self.ep.transportGetInfo(self.transport_id).localName.rsplit(":", 1)[1]
            )
        except BaseException:
            self.destroy()
            raise

    def _set_codecs(self) -> None:
        wanted = f"{self.codec}/"
        found = False
        for ci in self.ep.codecEnum2():
            cid = ci.codecId
            if cid.upper().startswith(wanted):
                self.ep.codecSetPriority(cid, 255)
                found = True
            else:
                self.ep.codecSetPriority(cid, 0)
        if not found:
            raise RuntimeError(f"codec {self.codec} not available in this pjsua2 build")

    def account_config(
        self, id_uri: str, auth: tuple[str, str] | None = None, rtp_port: int = 0
    ) -> Any:
        pj = self.pj
        acfg = pj.AccountConfig()
        acfg.idUri = id_uri
        acfg.regConfig.registrarUri = ""
        acfg.regConfig.registerOnAdd = False
        acfg.sipConfig.transportId = self.transport_id
        nat = acfg.natConfig
        nat.iceEnabled = False
        nat.turnEnabled = False
        nat.sipStunUse = pj.PJSUA_STUN_USE_DISABLED
        nat.mediaStunUse = pj.PJSUA_STUN_USE_DISABLED
        nat.contactRewriteUse = 0
        nat.viaRewriteUse = 0
        nat.sdpNatRewriteUse = 0
        nat.sipOutboundUse = 0
        med = acfg.mediaConfig
        med.srtpUse = pj.PJMEDIA_SRTP_DISABLED
        med.srtpSecureSignaling = 0
        med.transportConfig.boundAddress = BIND_ADDR
        med.transportConfig.publicAddress = BIND_ADDR
        if rtp_port:
            # exactly this port (RTP) and the next (RTCP): with a range of 2
            # pjsua retries the same pair and fails the call if it is taken
            med.transportConfig.port = int(rtp_port)
            med.transportConfig.portRange = 2
        else:
            # pjsua walks upwards from this port on bind failure; a random even
            # start keeps parallel UAs from colliding.
            # (the walk stays below 50000: livekit-server's ICE ports and
            # livekit-sip's RTP ports 51000-51100 are above)
            med.transportConfig.port = random.randrange(20000, 46000, 2)
            med.transportConfig.portRange = 4000
        acfg.videoConfig.autoShowIncoming = False
        acfg.videoConfig.autoTransmitOutgoing = False
        if auth:
            acfg.sipConfig.authCreds.append(pj.AuthCredInfo("digest", "*", auth[0], 0, auth[1]))
        return acfg

    def poll(self, msec: int = 10) -> None:
        self.ep.libHandleEvents(msec)

    def destroy(self) -> None:
        if self._destroyed:
            return
        self._destroyed = True
        try:
            self.ep.libDestroy()
        finally:
            del self.ep


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
) -> dict[str, Any]:
    """Place one call and return (and optionally write) the result dict.

    ``duration``: seconds after the answer before we hang up.
    ``hangup_after``: seconds after the INVITE was sent before we hang up
    (CANCEL while ringing, BYE once answered), whichever comes first.
    ``answer_timeout``: seconds to wait for a final response before CANCEL.
    ``rtp_port``: local RTP port (0 = random). ``rtp_stop_after`` /
    ``mute_after``: seconds after the answer to stop sending RTP / to send
    exact zeros (see the module docstring).
    Runs in the calling thread; one call per process at a time.
    """
    if not _RUN_LOCK.acquire(blocking=False):
        raise RuntimeError("run_call is already running in this process")
    try:
        return _run_call_locked(
            target=target,
            from_=from_,
            send_wav=send_wav,
            record=record,
            duration=duration,
            result=result,
            hangup_after=hangup_after,
            codec=codec,
            local_port=local_port,
            headers=headers,
            answer_timeout=answer_timeout,
            auth_user=auth_user,
            auth_password=auth_password,
            log_file=log_file,
            verbose=verbose,
            rtp_port=rtp_port,
            rtp_stop_after=rtp_stop_after,
            mute_after=mute_after,
        )
    finally:
        _RUN_LOCK.release()


def _write_json(path: str | None, data: dict[str, Any]) -> None:
    if not path:
        return
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
        fh.write("\n")
    os.replace(tmp, path)


def _run_call_locked(
    *,
    target: str,
    from_: str,
    send_wav: str,
    record: str,
    duration: float,
    result: str | None,
    hangup_after: float | None,
    codec: str,
    local_port: int,
    headers: Iterable[str | tuple[str, str]],
    answer_timeout: float,
    auth_user: str | None,
    auth_password: str | None,
    log_file: str | None,
    verbose: bool,
    rtp_port: int = 0,
    rtp_stop_after: float | None = None,
    mute_after: float | None = None,
) -> dict[str, Any]:
    if not os.path.isfile(send_wav):
        raise FileNotFoundError(f"--send-wav {send_wav} does not exist")
    hdrs = [h if isinstance(h, tuple) else parse_header(h) for h in headers]
    record = os.path.abspath(record)
    os.makedirs(os.path.dirname(record) or ".", exist_ok=True)
    if os.path.exists(record):
        os.unlink(record)  # never report a stale recording
    from_uri = sip_uri_for(from_)
    # The e2e log scan looks for every caller number used (harness/sip/dialled.py).
    from harness.sip.dialled import record as record_caller

    record_caller(from_)

    res: dict[str, Any] = {
        "target": target,
        "from": from_uri,
        "codec": codec.upper(),
        "headers": {k: v for k, v in hdrs},
        "answered": False,
        "status_code": None,
        "reason": None,
        "provisional": [],
        "events": {},
        "recording": {"path": record, "started": None, "offset_from_answer_s": None},
        "hangup_by": None,  # "local" (we hung up / cancelled) | "remote" (BYE or refusal)
        "local_hangup_cause": None,  # "duration" | "hangup_after" | "answer_timeout" | "error"
        "remote_hangup_reason": None,
        "errors": [],
        "pid": os.getpid(),
        "rtp_port": None,  # local RTP port actually bound (from the media transport)
        # tx/rx: RTP packets sent / received (pjmedia stream statistics, final
        # counts when the stream is destroyed); timeline: [mono, tx, rx] about
        # every 0.5 s while the call is up
        "rtp": {
            "requested_port": int(rtp_port) or None,
            "local": None,
            "remote": None,
            "tx_packets": None,
            "rx_packets": None,
            "timeline": [],
            "vad": False,
        },
    }
    ev = res["events"]

    def mark(name: str) -> dict[str, float]:
        if name not in ev:
            ev[name] = _now()
        stamp: dict[str, float] = ev[name]
        return stamp

    stack = PjStack(codec=codec, sip_port=local_port, log_file=log_file, verbose=verbose)
    pj = stack.pj
    res["local_sip_port"] = stack.sip_port
    state: dict[str, Any] = {
        "disconnected": False,
        "local_hangup_requested": False,
        "stream": None,  # MediaStream pointer of the audio stream (onStreamCreated)
        "media_idx": None,
    }
    objs: dict[str, Any] = {}

    class _Call(pj.Call):  # type: ignore[misc,name-defined]
        def onStreamCreated(self, prm: Any) -> None:
            state["stream"] = prm.stream
            if "rtp_stopped" in ev:  # a re-INVITE made a new stream: keep it quiet
                try:
                    _pause_stream_encoding(pj, prm.stream)
                except Exception as exc:
                    res["errors"].append(f"rtp stop (new stream): {exc!r}")

        def onStreamDestroyed(self, prm: Any) -> None:
            # the stream still exists here: the final RTP counts
            try:
                st = self.getStreamStat(prm.streamIdx)
                rtp = res["rtp"]
                rtp["tx_packets"] = int(st.rtcp.txStat.pkt)
                rtp["rx_packets"] = int(st.rtcp.rxStat.pkt)
                now = time.monotonic()
                rtp["timeline"].append([round(now, 3), rtp["tx_packets"], rtp["rx_packets"]])
            except Exception:
                pass
            state["stream"] = None

        def onCallState(self, prm: Any) -> None:
            try:
                ci = self.getInfo()
                st = ci.state
                e = prm.e
                msg = None
                try:
                    if (
                        e.type == pj.PJSIP_EVENT_TSX_STATE
                        and e.body.tsxState.type == pj.PJSIP_EVENT_RX_MSG
                    ):
                        msg = e.body.tsxState.src.rdata.wholeMsg
                except Exception:
                    msg = None
                if st == pj.PJSIP_INV_STATE_EARLY:
                    mark("early")
                    if ci.lastStatusCode and ci.lastStatusCode not in [
                        p["code"] for p in res["provisional"]
                    ]:
                        res["provisional"].append(
                            {"code": ci.lastStatusCode, "reason": ci.lastReason, **_now()}
                        )
                elif st == pj.PJSIP_INV_STATE_CONNECTING:
                    mark("answered")
                    res["answered"] = True
                    res["status_code"] = 200
                    res["reason"] = ci.lastReason
                elif st == pj.PJSIP_INV_STATE_CONFIRMED:
                    mark("answered")
                    mark("confirmed")
                    res["answered"] = True
                    res["status_code"] = res["status_code"] or 200
                    res["reason"] = res["reason"] or ci.lastReason
                    res["remote_contact"] = ci.remoteContact
                elif st == pj.PJSIP_INV_STATE_DISCONNECTED:
                    mark("disconnected")
                    state["disconnected"] = True
                    if not res["answered"]:
                        # refused by the far end, or cancelled by us
                        res["hangup_by"] = "local" if state["local_hangup_requested"] else "remote"
                        res["status_code"] = ci.lastStatusCode
                        res["reason"] = ci.lastReason
                        if msg:
                            res["final_response_line"] = _first_line(msg)
                    else:
                        if state["local_hangup_requested"]:
                            res["hangup_by"] = res["hangup_by"] or "local"
                        else:
                            res["hangup_by"] = "remote"
                            mark("hangup")
                            reason = {"code": ci.lastStatusCode, "text": ci.lastReason}
                            if msg:
                                reason["request_line"] = _first_line(msg)
                                reason["reason_header"] = _extract_reason_header(msg)
                            res["remote_hangup_reason"] = reason
                    res["connect_duration_s"] = (
                        ci.connectDuration.sec + ci.connectDuration.msec / 1000.0
                    )
            except Exception as exc:  # never let an exception cross into C++
                res["errors"].append(f"onCallState: {exc!r}")

        def onCallMediaState(self, prm: Any) -> None:
            try:
                ci = self.getInfo()
                for i, mi in enumerate(ci.media):
                    if mi.type != pj.PJMEDIA_TYPE_AUDIO or mi.status != pj.PJSUA_CALL_MEDIA_ACTIVE:
                        continue
                    first = "media_active" not in ev
                    mark("media_active")
                    state["media_idx"] = i
                    try:
                        mti = self.getMedTransportInfo(i)
                        rtp = res["rtp"]
                        rtp["local"] = mti.localRtpName
                        rtp["remote"] = mti.srcRtpName or None
                        res["rtp_port"] = int(mti.localRtpName.rsplit(":", 1)[1])
                        if rtp_port and res["rtp_port"] != int(rtp_port):
                            res["errors"].append(
                                f"RTP bound to {mti.localRtpName}, not port {rtp_port}"
                            )
                    except Exception as exc:
                        res["errors"].append(f"media transport info: {exc!r}")
                    am = self.getAudioMedia(i)
                    if "recorder" not in objs:
                        rec = pj.AudioMediaRecorder()
                        rec.createRecorder(record)
                        objs["recorder"] = rec
                    # connect (idempotent on re-INVITEs); recorder first so
                    # its sample 0 is as close to the timestamp as possible
                    am.startTransmit(objs["recorder"])
                    if first:
                        res["recording"]["started"] = mark("recorder_started")
                    if "player" not in objs:
                        ply = pj.AudioMediaPlayer()
                        ply.createPlayer(send_wav, 0)  # 0 = loop
                        objs["player"] = ply
                    if "muted" not in ev:  # a re-INVITE must not unmute
                        objs["player"].startTransmit(am)
                    if first:
                        mark("player_started")
                    break
            except Exception as exc:
                res["errors"].append(f"onCallMediaState: {exc!r}")

    exit_code = EXIT_INTERNAL
    try:
        # Keep pjsua2 objects only in ``objs`` (no locals): they must be
        # destroyed before libDestroy(), or their destructors assert.
        objs["account"] = pj.Account()
        auth = (auth_user, auth_password or "") if auth_user else None
        objs["account"].create(stack.account_config(from_uri, auth, rtp_port=rtp_port))
        objs["call"] = _Call(objs["account"])
        prm = pj.CallOpParam(True)
        prm.opt.audioCount = 1
        prm.opt.videoCount = 0
        for name, value in hdrs:
            h = pj.SipHeader()
            h.hName = name
            h.hValue = value
            prm.txOption.headers.append(h)
        mark("invite_sent")
        objs["call"].makeCall(target, prm)
        mark("invite_returned")

        t0 = ev["invite_sent"]["mono"]

        def sample_rtp(now: float) -> None:
            idx = state["media_idx"]
            if idx is None or state["disconnected"]:
                return
            try:
                st = objs["call"].getStreamStat(idx)
            except Exception:
                return  # no stream (yet / any more)
            rtp = res["rtp"]
            rtp["tx_packets"] = int(st.rtcp.txStat.pkt)
            rtp["rx_packets"] = int(st.rtcp.rxStat.pkt)
            rtp["timeline"].append([round(now, 3), rtp["tx_packets"], rtp["rx_packets"]])

        def hangup(cause: str) -> None:
            if state["local_hangup_requested"]:
                return
            state["local_hangup_requested"] = True
            res["local_hangup_cause"] = cause
            res["hangup_by"] = "local"
            sample_rtp(time.monotonic())  # last counts: hangup() tears the stream down
            mark("hangup")
            hp = pj.CallOpParam(True)
            # before the answer pjsua sends CANCEL and reports this code as
            # the call's last status (the far end answers the INVITE with 487)
            hp.statusCode = pj.PJSIP_SC_OK if res["answered"] else pj.PJSIP_SC_REQUEST_TERMINATED
            try:
                objs["call"].hangup(hp)
            except Exception as exc:
                res["errors"].append(f"hangup: {exc!r}")

        hard_deadline = t0 + answer_timeout + duration + HARD_TIMEOUT_SLACK_S
        hangup_deadline_mono = None
        next_stat = 0.0

        def apply_faults(now: float) -> None:
            if not res["answered"] or state["local_hangup_requested"]:
                return
            since_answer = now - ev["answered"]["mono"]
            if (
                rtp_stop_after is not None
                and "rtp_stopped" not in ev
                and since_answer >= rtp_stop_after
            ):
                if state["stream"] is None:
                    return  # retried on the next turn once the stream exists
                sample_rtp(now)
                mark("rtp_stopped")
                try:
                    _pause_stream_encoding(pj, state["stream"])
                except Exception as exc:
                    res["errors"].append(f"rtp stop: {exc!r}")
            if mute_after is not None and "muted" not in ev and since_answer >= mute_after:
                idx = state["media_idx"]
                if idx is None or "player" not in objs:
                    return
                mark("muted")
                try:
                    # the WAV player stops feeding the call; the bridge then
                    # sends zero frames (PCMU 0xFF / PCMA 0xD5), still every 20 ms.
                    # (adjustTxLevel(0) does not silence the call in pjsua2 2.15.)
                    objs["player"].stopTransmit(objs["call"].getAudioMedia(idx))
                except Exception as exc:
                    res["errors"].append(f"mute: {exc!r}")

        while not state["disconnected"]:
            stack.poll(5)
            now = time.monotonic()
            apply_faults(now)
            if now >= next_stat:
                sample_rtp(now)
                next_stat = now + 0.5
            if now > hard_deadline:
                res["errors"].append("call did not end before hard deadline")
                break
            if state["local_hangup_requested"]:
                # waiting for the BYE/CANCEL transaction to finish
                if hangup_deadline_mono and now > hangup_deadline_mono:
                    res["errors"].append("no DISCONNECTED within 5s of hangup")
                    break
                continue
            if hangup_after is not None and now - t0 >= hangup_after:
                hangup("hangup_after")
            elif res["answered"] and now - ev["answered"]["mono"] >= duration:
                hangup("duration")
            elif not res["answered"] and now - t0 >= answer_timeout:
                hangup("answer_timeout")
            if state["local_hangup_requested"]:
                hangup_deadline_mono = time.monotonic() + 5.0

        # Let the BYE's 200 / ACKs flow briefly, then tear down media first so
        # the WAV header is finalised.
        end = time.monotonic() + 0.2
        while time.monotonic() < end:
            stack.poll(5)
        exit_code = EXIT_ANSWERED if res["answered"] else EXIT_NOT_ANSWERED
    except Exception as exc:
        res["errors"].append(f"fatal: {exc!r}")
        exit_code = EXIT_INTERNAL
    finally:
        for key in ("player", "recorder", "call", "account"):
            obj = objs.pop(key, None)
            if key == "account" and obj is not None:
                try:
                    obj.shutdown()
                except Exception:
                    pass
            del obj  # last reference: the C++ destructor runs here
        try:
            stack.destroy()
        except Exception as exc:
            res["errors"].append(f"libDestroy: {exc!r}")

    rec = res["recording"]
    if rec["started"] is not None:
        rec.update(wav_info(record))
        if "answered" in ev:
            rec["offset_from_answer_s"] = rec["started"]["mono"] - ev["answered"]["mono"]
        end_ev = ev.get("hangup") or ev.get("disconnected")
        if end_ev:
            rec["expected_duration_s"] = end_ev["mono"] - rec["started"]["mono"]
    rec["exists"] = os.path.exists(record)
    res["exit_code"] = exit_code
    _write_json(result, res)
    return res


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
    for h in a.header:
        try:
            parse_header(h)
        except ValueError as exc:
            p.error(str(exc))


def start_watchdog(
    seconds: float, result_path: str | None, payload: dict[str, Any]
) -> threading.Timer:
    """Last resort: if pjsua wedges, write an error JSON and exit hard."""

    def fire() -> None:
        try:
            if result_path and not os.path.exists(result_path):
                _write_json(
                    result_path, {**payload, "errors": [f"hard timeout after {seconds:.1f}s"]}
                )
        finally:
            sys.stderr.write(f"sip UA: hard timeout after {seconds:.1f}s\n")
            sys.stderr.flush()
            os._exit(EXIT_HARD_TIMEOUT)

    t = threading.Timer(seconds, fire)
    t.daemon = True
    t.start()
    return t


def main(argv: Sequence[str] | None = None) -> int:
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
    )
    try:
        res = run_call(
            target=a.target,
            from_=a.from_,
            send_wav=a.send_wav,
            record=a.record,
            duration=a.duration,
            result=a.result,
            hangup_after=a.hangup_after,
            codec=a.codec,
            local_port=a.local_port,
            headers=a.header,
            answer_timeout=a.answer_timeout,
            auth_user=a.auth_user,
            auth_password=a.auth_password,
            log_file=a.log_file,
            verbose=a.verbose,
            rtp_port=a.rtp_port,
            rtp_stop_after=a.rtp_stop_after,
            mute_after=a.mute_after,
        )
    except ImportError as exc:
        sys.stderr.write(f"{exc}\n")
        _write_json(
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
