"""A tiny pjsua2 answering UA for loopback self-tests of ``harness.sip.caller``.

    python -m harness.sip.answerer --port 0 \\
        [--answer-delay 0.5] [--play tone.wav] [--record heard.wav] \\
        [--reject 486] [--max-calls 1] [--timeout 30] [--result ans.json] \\
        [--codec PCMU|PCMA] [--hangup-after S] [--log-file pj.log]

Listens on UDP 127.0.0.1:<port> (0 = random), prints ``READY <port>`` on
stdout once it accepts calls, sends 180 at once and then, after
``--answer-delay`` seconds, either 200 OK (playing ``--play`` in a loop and
recording what it hears, from media-active on) or the ``--reject`` code.
With ``--hangup-after`` it hangs up that many seconds after answering.
Exits after ``--max-calls`` calls have ended, or after ``--timeout``.
The result JSON lists, per call: the received INVITE's headers, event times
(wall + mono, like sip_caller) and the recording's path.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from harness.sip.ua import SUPPORTED_CODECS, PjStack, now, start_watchdog, wav_info, write_json


def _parse_headers(whole_msg: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in whole_msg.replace("\r\n", "\n").split("\n")[1:]:
        if not line.strip():
            break
        name, sep, value = line.partition(":")
        if sep:
            out[name.strip()] = value.strip()
    return out


def serve(
    port: int = 0,
    answer_delay: float = 0.0,
    play: str | None = None,
    record: str | None = None,
    reject: int | None = None,
    max_calls: int = 1,
    timeout: float = 30.0,
    result: str | None = None,
    codec: str = "PCMU",
    hangup_after: float | None = None,
    log_file: str | None = None,
    ready_cb: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    stack = PjStack(codec=codec, sip_port=port, log_file=log_file)
    pj = stack.pj
    res: dict[str, Any] = {"port": stack.sip_port, "codec": codec, "calls": [], "errors": []}
    calls: list[dict[str, Any]] = []  # {"call": Call, "rec": dict, "objs": {}}
    keep: dict[str, Any] = {}

    def make_call_class(entry: dict[str, Any]) -> Any:
        class _Call(pj.Call):  # type: ignore[misc,name-defined]
            def onCallState(self, prm: Any) -> None:
                try:
                    ci = self.getInfo()
                    r = entry["rec"]
                    if ci.state == pj.PJSIP_INV_STATE_CONFIRMED:
                        r["events"].setdefault("confirmed", now())
                    elif ci.state == pj.PJSIP_INV_STATE_DISCONNECTED:
                        r["events"].setdefault("disconnected", now())
                        r["final_status"] = ci.lastStatusCode
                        r["final_reason"] = ci.lastReason
                        entry["done"] = True
                except Exception as exc:
                    res["errors"].append(f"onCallState: {exc!r}")

            def onCallMediaState(self, prm: Any) -> None:
                try:
                    ci = self.getInfo()
                    r, objs = entry["rec"], entry["objs"]
                    for i, mi in enumerate(ci.media):
                        if (
                            mi.type != pj.PJMEDIA_TYPE_AUDIO
                            or mi.status != pj.PJSUA_CALL_MEDIA_ACTIVE
                        ):
                            continue
                        am = self.getAudioMedia(i)
                        if record:
                            if "recorder" not in objs:
                                objs["recorder"] = pj.AudioMediaRecorder()
                                path = record if len(calls) == 1 else f"{record}.{len(calls)}.wav"
                                objs["recorder"].createRecorder(path)
                                r["recording"] = {"path": os.path.abspath(path)}
                            am.startTransmit(objs["recorder"])
                            r["recording"].setdefault("started", now())
                        if play:
                            if "player" not in objs:
                                objs["player"] = pj.AudioMediaPlayer()
                                objs["player"].createPlayer(play, 0)
                            objs["player"].startTransmit(am)
                        r["events"].setdefault("media_active", now())
                        break
                except Exception as exc:
                    res["errors"].append(f"onCallMediaState: {exc!r}")

        return _Call

    class _Account(pj.Account):  # type: ignore[misc,name-defined]
        def onIncomingCall(self, iprm: Any) -> None:
            try:
                t = now()
                msg = iprm.rdata.wholeMsg
                entry: dict[str, Any] = {
                    "rec": {
                        "events": {"invite_received": t},
                        "headers": _parse_headers(msg),
                        "request_line": msg.split("\n", 1)[0].strip(),
                        "source": iprm.rdata.srcAddress,
                    },
                    "objs": {},
                    "done": False,
                    "answer_at": t["mono"] + answer_delay,
                    "answered": False,
                }
                calls.append(entry)
                entry["call"] = make_call_class(entry)(self, iprm.callId)
                p = pj.CallOpParam()
                p.statusCode = 180
                entry["call"].answer(p)
                entry["rec"]["events"]["ringing_sent"] = now()
            except Exception as exc:
                res["errors"].append(f"onIncomingCall: {exc!r}")

    try:
        # pjsua2 objects live only in containers (no locals) so that they can
        # all be released before libDestroy().
        keep["acc"] = _Account()
        keep["acc"].create(stack.account_config(f"sip:answerer@127.0.0.1:{stack.sip_port}"))
        if ready_cb:
            ready_cb(stack.sip_port)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            stack.poll(5)
            at = time.monotonic()
            for e in calls:
                if e["done"] or e["answered"]:
                    if (
                        e["answered"]
                        and not e["done"]
                        and hangup_after is not None
                        and not e.get("hung_up")
                        and at - e["rec"]["events"]["answer_sent"]["mono"] >= hangup_after
                    ):
                        e["hung_up"] = True
                        e["rec"]["events"]["hangup"] = now()
                        e["call"].hangup(pj.CallOpParam(True))
                    continue
                if at >= e["answer_at"]:
                    e["answered"] = True
                    p = pj.CallOpParam()
                    p.statusCode = reject if reject else 200
                    e["rec"]["events"]["answer_sent" if not reject else "reject_sent"] = now()
                    e["call"].answer(p)
            if len(calls) >= max_calls and all(e["done"] for e in calls):
                break
        else:
            res["errors"].append(f"timeout after {timeout:.1f}s")
        end = time.monotonic() + 0.2
        while time.monotonic() < end:
            stack.poll(5)
    except Exception as exc:
        res["errors"].append(f"fatal: {exc!r}")
    finally:
        for e in calls:
            for k in ("player", "recorder"):
                e["objs"].pop(k, None)
            if not e["done"]:
                try:
                    e["call"].hangup(pj.CallOpParam(True))
                except Exception:
                    pass
            e.pop("call", None)
            res["calls"].append(e["rec"])
        acc = keep.pop("acc", None)
        if acc is not None:
            try:
                acc.shutdown()
            except Exception:
                pass
        del acc
        stack.destroy()
    for r in res["calls"]:
        if r.get("recording"):
            r["recording"].update(wav_info(r["recording"]["path"]))
    write_json(result, res)
    return res


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m harness.sip.answerer")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--answer-delay", type=float, default=0.0)
    p.add_argument("--play", default=None)
    p.add_argument("--record", default=None)
    p.add_argument("--reject", type=int, default=None, help="final code to reject with, e.g. 486")
    p.add_argument("--max-calls", type=int, default=1)
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--result", default=None)
    p.add_argument("--codec", default="PCMU", type=str.upper, choices=SUPPORTED_CODECS)
    p.add_argument("--hangup-after", type=float, default=None, help="seconds after answering")
    p.add_argument("--log-file", default=None)
    a = p.parse_args(argv)
    if a.reject is not None and not 300 <= a.reject <= 699:
        p.error("--reject must be a final non-2xx code (300-699)")
    if a.play and not os.path.isfile(a.play):
        p.error(f"--play {a.play} does not exist")
    wd = start_watchdog(a.timeout + 15.0, a.result, {"port": a.port, "errors": []}, 4)

    def ready(port: int) -> None:
        sys.stdout.write(f"READY {port}\n")
        sys.stdout.flush()

    try:
        res = serve(**vars(a), ready_cb=ready)  # the parser's dests are serve's names
    finally:
        wd.cancel()
    return 1 if res["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
