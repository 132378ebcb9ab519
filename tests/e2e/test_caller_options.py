"""Issue 18 on the real stack: what a waiting caller hears and can do.

Position announcements: three pjsua2 callers of one store (its own id per
run, so its line and waits start empty) hear "you are caller number 1, 2, 3",
found in each caller's own recording by correlating the worker's cached prompt
files (worker/prompts.py, the same HOLD_PROMPTS_CACHE) against it; once the
first caller is taken at the desk (and its agent joins), the other two hear 1
and 2 at their next announcement. An unknown store language stops
`python -m worker start` with one line.

The store's hold audio is one tone, notched out of the recordings before the
prompts are looked for.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import pytest_asyncio
import soxr

from harness import stack as stackmod
from harness.analysis import (
    PROMPT_CORR,
    CallerAudio,
    best_prompt,
    find_prompt,
    notch,
    write_tone_wav,
)
from harness.scenario import PlacedCall, place_call
from harness.stack import REPO, DeskRun, start_desk
from tests.e2e.test_desk_stack import take_and_talk
from tests.e2e.test_registry_recovery import redis_url
from tests.e2e.test_stores import target
from worker.announce import CALLER_NUMBER
from worker.desk import mint_token
from worker.keypad import CALLBACK_CONFIRM, CALLBACK_DONE, CALLBACK_NUMBER
from worker.logmask import mask_text
from worker.prompts import WORD_GAP_S, PromptLibrary
from worker.webhooks import SIGNATURE_HEADER, verify

pytestmark = pytest.mark.e2e

TRUNK, RULE = "hold-e2e-options", "hold-e2e-options-calls"
RUN = secrets.token_hex(3)
STORE = f"line-{RUN}"
NUMBER = "+15550231"
HOLD_HZ = 440.0
AGENT_HZ = 1500.0
FIRST_S, EVERY_S = 4.0, 12.0
MAP = f"""\
default: {STORE}
stores:
  {STORE}:
    name: Line Store
    numbers: ["{NUMBER}"]
    hold_audio: hold.wav
    position_announcements:
      enabled: true
      first_after_s: {FIRST_S}
      every_s: {EVERY_S}
      min_gap_s: 5
      announce_wait: false
"""
# the keypad store: callback (1, confirm 1) and operator (0), a webhook
KEYS = f"keys-{RUN}"
KEYS_NUMBER = "+15550232"
WEBHOOK_ENV = "HOLD_E2E_WEBHOOK_SECRET"
CONFIRM_TIMEOUT_S = 4.0
KEYS_MAP = """\
  {store}:
    name: Keys Store
    numbers: ["{number}"]
    hold_audio: hold.wav
    transfer_target: sip:operator@127.0.0.1:{answerer_port}
    keypad:
      callback_key: "1"
      confirm_key: "1"
      confirm_timeout_s: {timeout}
      operator_key: "0"
      callback_full_number: true
      webhook:
        url: http://127.0.0.1:{webhook_port}/hook
        secret_env: {env}
"""


def caller_number(i: int) -> str:
    return f"+1555{int(RUN, 16) % 10_000:04d}{180 + i:03d}"


class Webhook:
    """The keys store's backend: records every POST (body, signature valid?)
    in a thread of its own (the stack fixture is synchronous)."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.got: list[tuple[float, dict[str, Any], bool]] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                valid = verify(hook.secret, body, self.headers.get(SIGNATURE_HEADER, ""))
                hook.got.append((time.time(), json.loads(body), valid))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_a: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class OptionsStack:
    run: DeskRun
    cache: Path
    lk_env: dict[str, str]
    webhook: Webhook
    answerer_port: int

    def token(self, agent: str, store: str = STORE) -> str:
        return mint_token(self.run.secret, agent, (store,), ttl_s=600)


@pytest.fixture(scope="module")
def options(
    lk_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OptionsStack]:
    d = tmp_path_factory.mktemp("options")
    write_tone_wav(str(d / "hold.wav"), HOLD_HZ, seconds=2.0, rate=16000)
    store_map = d / "stores.yaml"
    webhook = Webhook(secrets.token_hex(24))
    answerer_port = stackmod.free_port()
    store_map.write_text(
        MAP
        + KEYS_MAP.format(
            store=KEYS,
            number=KEYS_NUMBER,
            answerer_port=answerer_port,
            timeout=CONFIRM_TIMEOUT_S,
            webhook_port=webhook.port,
            env=WEBHOOK_ENV,
        )
    )
    cache = d / "prompts"
    p = stackmod.provision(lk_env, TRUNK, RULE, "--stores", str(store_map))
    assert p.returncode == 0, p.stderr
    env = {**lk_env, "HOLD_PROMPTS_CACHE": str(cache), WEBHOOK_ENV: webhook.secret}
    run = start_desk(env, d, store_map, redis_url())
    try:
        yield OptionsStack(run, cache, lk_env, webhook, answerer_port)
    finally:
        run.stop()
        webhook.close()
        print(f"\nworker log (tail):\n{run.worker.text()[-2000:]}")
        log = run.worker.text() + run.desk.text()
        assert webhook.secret not in log, "the webhook secret is in a log"


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def prompts_8k(cache: Path, which: str = "position") -> dict[str, np.ndarray]:
    """The store's position (or keypad) prompts as the worker made them (the
    same cached files, rendered by nobody here: the worker rendered them at
    start), at 8 kHz."""
    lib = PromptLibrary(cache, level_dbfs=-20.0)
    make = lib.prompt_set if which == "position" else lib.keypad_set
    ps = make("en", None, {})
    assert lib.rendered == 0, f"the worker's cache should already hold every {which} prompt"
    return {
        k: np.asarray(soxr.resample(v, 48_000, 8_000), dtype=np.float32)
        for k, v in ps.audio.items()
    }


def heard_positions(
    audio: CallerAudio, prompts: dict[str, np.ndarray]
) -> list[tuple[float, int, float, float]]:
    """(wall time, number, score of "caller number", score of the number) of
    every position announcement in the caller's recording."""
    rec = notch(audio.rec, audio.rate, [HOLD_HZ, 2 * HOLD_HZ])
    numbers = {
        k: v for k, v in prompts.items() if k in ("number_1", "number_2", "number_3", "number_4")
    }
    lead = prompts[CALLER_NUMBER]
    out = []
    for start, score in find_prompt(rec, audio.rate, lead):
        after = start + lead.shape[0] / audio.rate + WORD_GAP_S - 0.1
        key, n_score, _at = best_prompt(rec, audio.rate, numbers, after, 0.25)
        # 0: the number is not there (cut off by the hang-up)
        n = int(key.rsplit("_", 1)[1]) if key and n_score >= PROMPT_CORR else 0
        out.append((audio.t0 + start, n, score, n_score))
    return out


async def dial(
    s: OptionsStack,
    lkapi: Any,
    work: Path,
    number: str,
    duration: float,
    tag: str,
    *dtmf: str,
    to: str = NUMBER,
    log: Path | None = None,
) -> PlacedCall:
    """A pjsua2 caller to the store's number `to`, sending `dtmf` ("S:DIGITS":
    RFC 2833 digits S seconds after the answer); `log`: pjsua's log with the
    SIP messages."""
    extra = tuple(x for d in dtmf for x in ("--dtmf", d))
    if log is not None:
        extra += ("--log-file", str(log))
    return await place_call(
        s.lk_env,
        lkapi,
        work,
        number,
        freqs=[697.0],
        duration=duration,
        target=target(s.lk_env, to),
        tag=tag,
        extra=extra,
    )


async def test_three_callers_hear_their_place_then_move_up(options, lkapi, work_dir, http):
    prompts = prompts_8k(options.cache)
    # numbers of this run's own: a room of an earlier run may still list its caller
    numbers = [caller_number(i) for i in range(3)]
    callers: list[PlacedCall] = []
    agent = None
    try:
        for i, n in enumerate(numbers):
            callers.append(await dial(options, lkapi, work_dir, n, 30.0, f"pos{i + 1}"))
            await asyncio.sleep(1.0)  # a defined order of hold starts
        # every caller has heard their first announcement (FIRST_S into the hold)
        await asyncio.sleep(FIRST_S + 1.5)
        t_take = time.time()
        agent, _ = await take_and_talk(_Desk(options), http, callers[0].cid, "ada", STORE, AGENT_HZ)
        heard = [await c.done(60.0) for c in callers]
    finally:
        if agent is not None:
            await agent.leave()
        for c in callers:
            await c.stop()

    said = [heard_positions(a, prompts) for a in heard]
    print(f"\ncaller 1 taken at +{t_take - callers[0].answered_at():.1f} s of its call")
    for i, (c, s) in enumerate(zip(callers, said, strict=True)):
        t_ans = c.answered_at()
        print(
            f"caller {i + 1} ({c.number[-4:]}): "
            + ", ".join(
                f"'caller number {n or '(cut off)'}' at +{t - t_ans:.1f} s (corr {sc:.2f}/{ns:.2f})"
                for t, n, sc, ns in s
            )
        )
    before = [[n for t, n, _s, _ns in s if t < t_take] for s in said]
    after = [[n for t, n, _s, _ns in s if t > t_take + 0.5] for s in said]
    assert before == [[1], [2], [3]], said
    # taken: caller 1 hears no more announcements; 2 and 3 move up
    assert after[0] == [], said
    assert after[1][:1] == [1] and after[2][:1] == [2], said


class _Desk:
    """What take_and_talk needs of test_desk_stack's DeskStack."""

    def __init__(self, s: OptionsStack) -> None:
        self.url = s.run.url
        self._s = s

    def token(self, agent: str, *_stores: str) -> str:
        return self._s.token(agent)


def test_unknown_language_stops_the_worker_with_one_line(tmp_path: Path) -> None:
    write_tone_wav(str(tmp_path / "hold.wav"), HOLD_HZ, seconds=1.0, rate=16000)
    store_map = tmp_path / "stores.yaml"
    # a well-formed voice name espeak-ng does not have (announcements off: the
    # language is checked for every store, not only the announcing ones)
    store_map.write_text(
        MAP.replace(
            "    hold_audio: hold.wav\n", "    hold_audio: hold.wav\n    language: xx-nowhere\n"
        ).replace("enabled: true", "enabled: false")
    )
    env = {
        **os.environ,
        "HOLD_STORES": str(store_map),
        "HOLD_PROMPTS_CACHE": str(tmp_path / "cache"),
        "LIVEKIT_URL": "ws://127.0.0.1:1",
        "LIVEKIT_API_KEY": "k",
        "LIVEKIT_API_SECRET": "s" * 32,
    }
    t0 = time.monotonic()
    p = subprocess.run(
        [sys.executable, "-m", "worker", "start"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = [x for x in (p.stderr + p.stdout).splitlines() if x.strip()]
    print(f"\nexit {p.returncode} after {time.monotonic() - t0:.1f} s: {lines}")
    assert p.returncode != 0
    assert len(lines) == 1, lines
    assert f"stores.{STORE}.language" in lines[0], lines
    assert "'xx-nowhere' is not an espeak-ng voice" in lines[0], lines


# ---- keypad options (issue 18 part 2) ---------------------------------------------


def said(audio: CallerAudio, prompts: dict[str, np.ndarray], key: str) -> list[float]:
    """Wall times at which the prompt `key` starts in the caller's recording."""
    rec = notch(audio.rec, audio.rate, [HOLD_HZ, 2 * HOLD_HZ])
    return [audio.t0 + t for t, _s in find_prompt(rec, audio.rate, prompts[key])]


def read_back_digits(audio: CallerAudio, prompts: dict[str, np.ndarray], after: float) -> str:
    """The four digits read back after "... the number ending in"."""
    rec = notch(audio.rec, audio.rate, [HOLD_HZ, 2 * HOLD_HZ])
    digits = {k: v for k, v in prompts.items() if k.startswith("digit_")}
    lead = prompts[CALLBACK_NUMBER]
    pos = after - audio.t0 + lead.shape[0] / audio.rate
    out = ""
    for _ in range(4):
        key, score, at = best_prompt(rec, audio.rate, digits, pos, 0.35)
        if score < PROMPT_CORR:
            break
        out += key.rsplit("_", 1)[1]
        pos = at + digits[key].shape[0] / audio.rate
    return out


class CallbacksFeed:
    """An agent's `GET /events`: every `callbacks` event with its arrival."""

    def __init__(self, http: aiohttp.ClientSession, url: str, token: str) -> None:
        self.http, self.url, self.token = http, url, token
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async with self.http.get(
            f"{self.url}/events",
            params={"access_token": self.token},
            timeout=aiohttp.ClientTimeout(total=None, sock_read=None),
        ) as r:
            name = ""
            async for raw in r.content:
                line = raw.decode().strip()
                if line.startswith("event:"):
                    name = line[6:].strip()
                elif line.startswith("data:") and name == "callbacks":
                    self.events.append((time.time(), json.loads(line[5:])))

    def first_with(self, cid: str) -> tuple[float, dict[str, Any]] | None:
        for t, e in self.events:
            for c in e["callbacks"]:
                if c["cid"] == cid:
                    return t, c
        return None

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


def keys_caller(i: int) -> str:
    return f"+1555{int(RUN, 16) % 10_000:04d}{270 + i:03d}"


def sent_at(audio: CallerAudio) -> list[tuple[str, float]]:
    return [(d["digits"], float(d["wall"])) for d in audio.result.get("dtmf", [])]


async def test_callback_request_stored_streamed_webhooked_and_the_call_ends(
    options, lkapi, work_dir, http
):
    prompts = prompts_8k(options.cache, "keypad")
    number = keys_caller(0)
    feed = CallbacksFeed(http, options.run.url, options.token("cleo", KEYS))
    t_hooks = len(options.webhook.got)
    try:
        await asyncio.sleep(0.5)
        # 1 at 5 s; the read-back takes about 7 s; the confirmation after it
        c = await dial(options, lkapi, work_dir, number, 40.0, "cb", "5:1", "14:1", to=KEYS_NUMBER)
        audio = await c.done(60.0)
        deadline = time.monotonic() + 10.0
        while (feed.first_with(c.cid) is None or len(options.webhook.got) == t_hooks) and (
            time.monotonic() < deadline
        ):
            await asyncio.sleep(0.1)
    finally:
        await feed.close()
    from tests.e2e.test_registry_recovery import redis_url as _url
    from worker.registry import Registry, connect

    reg = Registry(connect(_url()))
    try:
        stored = [x for x in await reg.callbacks(KEYS, 20) if x["cid"] == c.cid]
    finally:
        await reg.aclose()
    (k1, t1), (k2, t2) = sent_at(audio)
    t_ans = c.answered_at()
    read = said(audio, prompts, CALLBACK_NUMBER)
    digits = read_back_digits(audio, prompts, read[0]) if read else ""
    done = said(audio, prompts, CALLBACK_DONE)
    ended = audio.ended_at
    pushed = feed.first_with(c.cid)
    hooks = [(t, b, v) for t, b, v in options.webhook.got[t_hooks:] if b.get("cid") == c.cid]
    print(
        f"\ncallback caller {number[-4:]}: key {k1} at +{t1 - t_ans:.1f} s; read-back at "
        f"+{(read[0] - t_ans) if read else float('nan'):.1f} s saying ...{digits}; key {k2} at "
        f"+{t2 - t_ans:.1f} s; 'we will call you back' at "
        f"+{(done[0] - t_ans) if done else float('nan'):.1f} s; hung up by "
        f"{audio.result.get('hangup_by')} at +{ended - t_ans:.1f} s "
        f"({ended - t2:.1f} s after the confirmation); desk event "
        f"{(pushed[0] - t2) if pushed else float('nan'):.2f} s after it; webhook "
        f"{(hooks[0][0] - t2) if hooks else float('nan'):.2f} s after it, signature valid: "
        f"{hooks[0][2] if hooks else None}"
    )
    assert read and read[0] > t1 and digits == number[-4:]
    assert len(stored) == 1 and stored[0]["number"] == number and stored[0]["store"] == KEYS
    assert stored[0]["waited_ms"] >= (t2 - t_ans - 2.0) * 1000
    assert pushed is not None and pushed[1]["id"] == stored[0]["id"]
    assert hooks and hooks[0][2] and hooks[0][1]["id"] == stored[0]["id"]
    assert done and done[0] > t2
    assert audio.result["hangup_by"] == "remote" and ended - t2 <= 8.0


async def test_operator_key_transfers_to_an_answerer(options, lkapi, work_dir):
    ans = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "harness.sip.answerer",
        "--port",
        str(options.answerer_port),
        "--result",
        str(work_dir / "operator.json"),
        "--timeout",
        "40",
        "--hangup-after",
        "3",
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert ans.stdout is not None
        line = (await asyncio.wait_for(ans.stdout.readline(), 15.0)).decode()
        assert line.startswith("READY"), line
        number = keys_caller(1)
        sip_log = REPO / ".devstack" / "run" / "livekit-sip.log"
        sip_from = sip_log.stat().st_size
        c = await dial(
            options, lkapi, work_dir, number, 25.0, "op", "4:0",
            to=KEYS_NUMBER, log=work_dir / "op-pj.log",
        )  # fmt: skip
        audio = await c.done(60.0)
        await asyncio.wait_for(ans.wait(), 30.0)
    finally:
        if ans.returncode is None:
            ans.kill()
        await ans.wait()
    got = json.loads((work_dir / "operator.json").read_text())
    calls = got.get("calls", [])
    (_k, t_key), *_ = sent_at(audio)
    t_ans = c.answered_at()
    inv = calls[0]["events"]["invite_received"]["wall"] if calls else float("nan")
    came_from = calls[0]["headers"].get("From", "?") if calls else "-"
    print(
        f"\noperator: key 0 at +{t_key - t_ans:.1f} s; the answerer's INVITE "
        f"{inv - t_key:.2f} s later (From {mask_text(came_from)}); "
        f"the caller's leg to the store ended by {audio.result.get('hangup_by')} at "
        f"+{audio.ended_at - t_ans:.1f} s; answerer calls: {len(calls)}, "
        f"errors {got.get('errors')}; "
        f"REFER to {audio.result.get('transfer_to')}, new leg events "
        f"{sorted(k for k in audio.result['events'] if k.startswith('transfer'))}"
    )
    assert "sip:operator@127.0.0.1" in audio.result.get("transfer_to", "")
    records = [r for r in options.run.worker.log_lines() if r.get("room") == mask_text(c.room)]
    said_worker = [r.get("message", "") for r in records]
    print(f"worker: {[m for m in said_worker if 'transfer' in m or 'operator' in m]}")
    assert any("transferring the caller: caller asked for the operator" in m for m in said_worker)
    failed = [m for m in said_worker if "transfer failed" in m]
    if failed:
        # livekit-sip v1.8.0 (the newest the module proxy here serves) can handle
        # the REFER's first NOTIFY, which pjsua sends right behind its 202, before
        # the 202, and then ends the REFER's wait with "transaction failed to
        # complete (0 intermediate responses)" though the transfer goes on to
        # its NOTIFY 200 (RELIABILITY.md). Accepted only when its log shows both.
        call_ids = {str(r["sip.callID"]) for r in records if r.get("sip.callID")}
        with sip_log.open("rb") as f:
            f.seek(sip_from)
            sip_lines = f.read().decode(errors="replace").splitlines()
        refer_200 = [
            ln
            for ln in sip_lines
            if any(f'"callID": "{i}"' in ln for i in call_ids)
            and '"method": "REFER", "status": 200' in ln
        ]
        print(f"livekit-sip reported the transfer failed; its REFER NOTIFY 200s: {len(refer_200)}")
        assert all("transaction failed to complete (0 intermediate responses)" in m for m in failed)
        assert refer_200, "LiveKit said the REFER failed, and no NOTIFY 200 came for it"
    assert len(calls) == 1 and "answer_sent" in calls[0]["events"]
    assert inv - t_key <= 5.0
    assert audio.result["hangup_by"] == "remote" and audio.ended_at - t_key <= 10.0


async def test_stray_keys_a_burst_and_a_key_during_a_prompt_change_nothing_else(
    options, lkapi, work_dir
):
    prompts = prompts_8k(options.cache, "keypad")
    t_hooks = len(options.webhook.got)
    # A: a stray key, a burst of unknown keys, then 1 (read-back) and 5 during it;
    # B: holds without a key
    a = await dial(
        options, lkapi, work_dir, keys_caller(2), 20.0, "stray-a", "3:7", "5:9#*5#", "8:1", "11:5",
        to=KEYS_NUMBER,
    )  # fmt: skip
    b = await dial(options, lkapi, work_dir, keys_caller(3), 20.0, "stray-b", to=KEYS_NUMBER)
    heard_a, heard_b = await a.done(60.0), await b.done(60.0)
    from tests.e2e.test_registry_recovery import redis_url as _url
    from worker.registry import Registry, connect

    reg = Registry(connect(_url()))
    try:
        stored = [x for x in await reg.callbacks(KEYS, 50) if x["cid"] in (a.cid, b.cid)]
    finally:
        await reg.aclose()
    sent = sent_at(heard_a)
    t_ans = a.answered_at()
    t_one = next(t for k, t in sent if k == "1")
    t_five = next(t for k, t in sent if k == "5")
    read_a = said(heard_a, prompts, CALLBACK_NUMBER)
    confirm_a = said(heard_a, prompts, CALLBACK_CONFIRM)
    keypad_b = [t for k in (CALLBACK_NUMBER, CALLBACK_CONFIRM) for t in said(heard_b, prompts, k)]
    hold_after = heard_a.heard(HOLD_HZ, t_five + 1.0, t_five + 6.0)
    hold_b = heard_b.heard(HOLD_HZ, b.answered_at() + 2.0, heard_b.ended_at - 1.0)
    print(
        f"\nstray keys: A sent {[(k, round(t - t_ans, 1)) for k, t in sent]} (s after answer); "
        f"read-back at {[round(t - t_ans, 1) for t in read_a]}, 'to confirm' at "
        f"{[round(t - t_ans, 1) for t in confirm_a]} (cut by 5 at +{t_five - t_ans:.1f} s); hold "
        f"tone in {hold_after:.0%} of A's 5 s after the cut; A hung up by "
        f"{heard_a.result.get('hangup_by')}, B by {heard_b.result.get('hangup_by')}; B heard "
        f"keypad prompts at {keypad_b}, hold tone {hold_b:.0%}; callbacks stored {len(stored)}"
    )
    assert len(read_a) == 1 and read_a[0] > t_one  # only the 1 did something
    assert confirm_a == []  # cut before "to confirm, press 1"
    assert hold_after >= 0.9
    assert heard_a.result["hangup_by"] == "local" and heard_b.result["hangup_by"] == "local"
    assert keypad_b == [] and hold_b >= 0.9
    assert stored == []
    assert [h for h in options.webhook.got[t_hooks:] if h[1].get("cid") in (a.cid, b.cid)] == []
