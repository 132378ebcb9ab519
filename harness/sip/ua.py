"""What the pjsua2 caller and answerer share: one Endpoint set up for
loopback (``PjStack``), time stamps, result files, the watchdog, and the
``pj.Call`` subclass that hands pjsua2's callbacks to a plain Python object.

Everything binds to 127.0.0.1: no STUN, no ICE, no SRTP, one codec.
"""

from __future__ import annotations

import functools
import json
import os
import random
import sys
import threading
import time
import wave
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

BIND_ADDR = "127.0.0.1"
CONF_CLOCK_RATE = 8000  # conference bridge / recording sample rate
SUPPORTED_CODECS = ("PCMU", "PCMA")


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


def now() -> dict[str, float]:
    """A time stamp as the results carry it: wall (time.time()) and mono
    (time.monotonic(), comparable across processes on Linux)."""
    return {"wall": time.time(), "mono": time.monotonic()}


@contextmanager
def quiet_stdout() -> Iterator[None]:
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
        with quiet_stdout():
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


def write_json(path: str | None, data: dict[str, Any]) -> None:
    """Write a result file atomically (nothing with no path)."""
    if not path:
        return
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
        fh.write("\n")
    os.replace(tmp, path)


def start_watchdog(
    seconds: float, result_path: str | None, payload: dict[str, Any], exit_code: int
) -> threading.Timer:
    """Last resort: if pjsua wedges, write an error JSON and exit hard."""

    def fire() -> None:
        try:
            if result_path and not os.path.exists(result_path):
                write_json(
                    result_path, {**payload, "errors": [f"hard timeout after {seconds:.1f}s"]}
                )
        finally:
            sys.stderr.write(f"sip UA: hard timeout after {seconds:.1f}s\n")
            sys.stderr.flush()
            os._exit(exit_code)

    t = threading.Timer(seconds, fire)
    t.daemon = True
    t.start()
    return t


class Callbacks(Protocol):
    """Where a ``call_class`` object sends pjsua2's callbacks:
    a method named as the callback in snake case (``on_call_state`` for
    ``onCallState``), called with the pjsua2 object and the callback's
    parameter, if the handler has it. An exception goes to
    ``callback_failed`` with the pjsua2 name: none may cross into C++."""

    def callback_failed(self, name: str, exc: Exception) -> None: ...


def _forward(obj: Any, handler: Callbacks, name: str, method: str, prm: Any) -> None:
    fn = getattr(handler, method, None)
    if fn is None:
        return
    try:
        fn(obj, prm)
    except Exception as exc:
        handler.callback_failed(name, exc)


@functools.cache
def call_class(pj: Any) -> Any:
    """A ``pj.Call`` whose callbacks go to a handler: ``cls(account, handler)``
    for an outgoing call, ``cls(account, handler, call_id)`` for an incoming one."""

    class ForwardingCall(pj.Call):  # type: ignore[misc]
        def __init__(
            self, account: Any, handler: Callbacks, call_id: int = pj.PJSUA_INVALID_ID
        ) -> None:
            super().__init__(account, call_id)
            self.handler = handler

        def onCallState(self, prm: Any) -> None:
            _forward(self, self.handler, "onCallState", "on_call_state", prm)

        def onCallMediaState(self, prm: Any) -> None:
            _forward(self, self.handler, "onCallMediaState", "on_call_media_state", prm)

        def onStreamCreated(self, prm: Any) -> None:
            _forward(self, self.handler, "onStreamCreated", "on_stream_created", prm)

        def onStreamDestroyed(self, prm: Any) -> None:
            _forward(self, self.handler, "onStreamDestroyed", "on_stream_destroyed", prm)

        def onCallTransferRequest(self, prm: Any) -> None:
            _forward(self, self.handler, "onCallTransferRequest", "on_call_transfer_request", prm)

        def onCallTransferStatus(self, prm: Any) -> None:
            _forward(self, self.handler, "onCallTransferStatus", "on_call_transfer_status", prm)

    return ForwardingCall
