"""Issue 17 in a real browser: the agents' console (console/, served by the
desk) in Debian's Chromium, headless, driven by Playwright, on the real stack.

The agent's microphone is Chromium's fake capture device playing a tone file
(`--use-file-for-fake-audio-capture`), so the caller's own recording (a
pjsua2 caller through livekit-sip) says whose audio it heard: the store's
hold audio is one tone, each browser's microphone another. The browser goes
through everything a real agent's does: the desk's page and its
Content-Security-Policy, the event stream, the take, livekit-client's
signalling, ICE and DTLS, Chromium's audio capture and its Opus, the
LiveKit server. One hold worker and one desk serve the whole module.

Times are wall-clock on this one machine: the page's Date.now() (recorded by
a small observer the tests add to the page), the caller's recording and the
test's own clock agree.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from livekit import api

from harness import stack as stackmod
from harness.analysis import WINDOW_S, CallerAudio, write_tone_wav
from harness.rooms import participants
from harness.scenario import PlacedCall as Caller
from harness.scenario import place_call
from harness.stack import REPO, WorkerProcess, start_desk
from tests.e2e.support.ci import unavailable
from tests.e2e.support.faults import RtpBlock, free_rtp_port, nft_available
from tests.e2e.test_agent_controls import wait_state
from tests.e2e.test_desk_stack import longest_gap
from tests.e2e.test_registry_recovery import redis_url
from tests.e2e.test_stores import target
from worker.desk import mint_token

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

CHROMIUM = Path("/usr/bin/chromium")
CONSOLE = REPO / "console" / "dist"
TRUNK, RULE = "hold-e2e-console", "hold-e2e-console-calls"
STORE, NUMBER = "main", "+15550241"
HOLD_HZ = 620.0  # the store's hold audio: one tone
A_HZ, B_HZ = 1500.0, 2100.0  # the two browsers' microphones
CALLER_HZ = 697.0
# callers' numbers of this run: a room of an earlier run's caller may linger
_RUN = f"+1555{secrets.randbelow(900) + 100}"


def number(n: int) -> str:
    return f"{_RUN}{n:04d}"


MAP = f"""\
default: {STORE}
stores:
  {STORE}:
    name: Main Street
    numbers: ["{NUMBER}"]
    hold_audio: hold.wav
"""
# Added to every page: when each call first appeared in the list and each
# state of the call panel, in the page's own clock (Date.now(), unix ms).
OBSERVER = """
window.__seen = {}; window.__states = [];
new MutationObserver(() => {
  for (const li of document.querySelectorAll('#calls li[data-call-id]')) {
    if (!(li.dataset.callId in window.__seen)) window.__seen[li.dataset.callId] = Date.now();
  }
  const call = document.getElementById('call');
  const s = call && !call.hidden ? call.dataset.state : '';
  const last = window.__states.length ? window.__states[window.__states.length - 1][1] : null;
  if (s !== last) window.__states.push([Date.now(), s]);
}).observe(document, {subtree: true, childList: true, attributes: true});
"""
ARTIFACTS: list[str] = []
PAGE_ERRORS: dict[int, list[str]] = {}  # id(page) -> uncaught errors in the page


# ---- the module's worker, desk and browsers ----------------------------------------------


@dataclass
class ConsoleStack:
    url: str
    secret: str = field(repr=False)
    worker: WorkerProcess
    desk: WorkerProcess
    work: Path

    def token(self, agent: str, name: str = "") -> str:
        return mint_token(self.secret, agent, [STORE], name=name or agent.title(), ttl_s=900)


@pytest.fixture(scope="module")
def console(
    lk_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ConsoleStack]:
    if not CHROMIUM.exists():
        unavailable(f"{CHROMIUM} missing: run devstack/install.sh (Debian package chromium)")
    if not (CONSOLE / "index.html").is_file():
        unavailable(f"the console is not built ({CONSOLE}): run make setup (make console)")
    d = tmp_path_factory.mktemp("console")
    write_tone_wav(str(d / "hold.wav"), HOLD_HZ, seconds=2.0, rate=16000)
    (d / "stores.yaml").write_text(MAP)
    p = stackmod.provision(lk_env, TRUNK, RULE, "--stores", str(d / "stores.yaml"))
    assert p.returncode == 0, p.stderr
    run = start_desk(lk_env, d, d / "stores.yaml", redis_url(), HOLD_DESK_CONSOLE=str(CONSOLE))
    try:
        yield ConsoleStack(run.url, run.secret, run.worker, run.desk, d)
    finally:
        run.stop()
        print(f"\nconsole tests: artifacts {ARTIFACTS}")


@asynccontextmanager
async def chromium(work: Path, mic_hz: float) -> AsyncIterator[Any]:
    """Debian's Chromium, headless, whose microphone plays a tone of `mic_hz`."""
    from playwright.async_api import async_playwright

    wav = write_tone_wav(str(work / f"mic-{mic_hz:g}.wav"), mic_hz, seconds=2.0, rate=48000)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=[
                "--use-fake-ui-for-media-stream",  # the microphone permission: granted
                "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={wav}",
            ],
        )
        try:
            yield browser
        finally:
            await browser.close()


async def open_console(browser: Any, stack: ConsoleStack, agent: str, width: int = 720) -> Any:
    """A console signed in as `agent` (the token handed over in the fragment),
    with the page's noise suppression off, as an agent can turn it off: Chromium's
    noise suppressor takes a steady tone for noise and removes it after some
    seconds (measured: the caller heard silence from about 11 s into the tone,
    3 s after a resume); a voice is not steady."""
    page = await (await browser.new_context(viewport={"width": width, "height": 560})).new_page()
    errors = PAGE_ERRORS.setdefault(id(page), [])
    page.on("pageerror", lambda e: errors.append(str(e)))
    await page.add_init_script(OBSERVER)
    await page.goto(f"{stack.url}/#token={stack.token(agent)}")
    await page.wait_for_selector("#queue:not([hidden])", timeout=10_000)
    assert "#token=" not in page.url  # the token is taken out of the URL at once
    await page.uncheck("#noise-suppression")
    return page


async def seen_at(page: Any, cid: str, timeout: float = 10.0) -> float:
    """Wall time (s) at which the call first appeared in the page's list."""
    try:
        await page.wait_for_selector(f'#calls li[data-call-id="{cid}"]', timeout=timeout * 1000)
    except Exception as e:
        listed = await page.eval_on_selector_all(
            "#calls li", "els => els.map(e => [e.dataset.callId, e.textContent])"
        )
        raise AssertionError(
            f"call {cid} not in the console's list in {timeout} s: listed {listed}, error line "
            f"{await error_line(page)!r}, notice {await page.text_content('#notice')!r}"
        ) from e
    return float(await page.evaluate(f"window.__seen[{json.dumps(cid)}]")) / 1000


async def state_at(page: Any, state: str, timeout: float = 10.0, after: float = 0.0) -> float:
    """Wall time (s) at which the call panel first showed `state` (after `after`)."""
    deadline = time.monotonic() + timeout
    while True:
        states = await page.evaluate("window.__states")
        at = [float(t) / 1000 for t, s in states if s == state and float(t) / 1000 >= after]
        if at:
            return at[0]
        if time.monotonic() > deadline:
            raise AssertionError(
                f"the call panel never showed {state!r} in {timeout} s: {states}, error line "
                f"{await error_line(page)!r}"
            )
        await asyncio.sleep(0.02)


async def answer(page: Any, cid: str) -> float:
    t = time.time()
    await page.click(f'#calls li[data-call-id="{cid}"] button.answer')
    return t


async def error_line(page: Any) -> str:
    err = page.locator("#error")
    return "" if await err.is_hidden() else str(await err.text_content())


async def level(page: Any) -> float | None:
    v = await page.get_attribute("#level", "data-dbfs")
    return None if v is None else float(v)


async def dial(
    lk_env: dict[str, str],
    lkapi: api.LiveKitAPI,
    work: Path,
    number: str,
    duration: float,
    extra: tuple[str, ...] = (),
) -> Caller:
    return await place_call(
        lk_env,
        lkapi,
        work,
        number,
        freqs=[CALLER_HZ],
        duration=duration,
        target=target(lk_env, NUMBER),
        tag=f"console-{number[-4:]}",
        extra=extra,
    )


def first_clean(a: CallerAudio, hz: float, not_hz: float, after: float) -> float | None:
    """Wall time of the first window after `after` in which the caller heard
    tone `hz` and not tone `not_hz`."""
    want, other = a.share(hz), a.share(not_hz)
    i0 = max(0, int((after - a.t0) / WINDOW_S))
    idx = np.flatnonzero((want[i0:] >= 0.5) & (other[i0:] < 0.1))
    return None if idx.size == 0 else a.t0 + (i0 + int(idx[0])) * WINDOW_S


async def history(stack: ConsoleStack, cid: str, agent: str) -> list[tuple[str, str]]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"{stack.url}/calls/{cid}/history",
            headers={"Authorization": f"Bearer {stack.token(agent)}"},
        ) as r,
    ):
        body = await r.json()
    return [(str(e["action"]), str(e["agent"])) for e in body.get("history", [])]


async def desk_post(
    stack: ConsoleStack, path: str, agent: str, body: dict[str, str]
) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{stack.url}{path}",
            json=body,
            headers={"Authorization": f"Bearer {stack.token(agent)}"},
        ) as r,
    ):
        return r.status, await r.json()


async def shoot(page: Any, path: str) -> None:
    """A screenshot of the page down to its footer (the header, the call, the queue)."""
    box = await page.locator("footer").bounding_box()
    width = page.viewport_size["width"]
    await page.screenshot(path=path, clip={"x": 0, "y": 0, "width": width, "height": box["y"]})


def keep(stack: ConsoleStack, name: str) -> str:
    """Where a test artifact goes: pytest's base temp (kept for the last three runs)."""
    path = str(stack.work / name)
    ARTIFACTS.append(path)
    return path


def r3(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


# ---- 1. a call in the list, answered, held, resumed, hung up -----------------------------


async def test_answer_hold_resume_in_the_browser(console, lk_env, lkapi, work_dir):
    c: Caller | None = None
    async with chromium(work_dir, A_HZ) as browser:
        page = await open_console(browser, console, "alice")
        try:
            c = await dial(lk_env, lkapi, work_dir, number(1), duration=60.0)
            shown = await seen_at(page, c.cid)
            row = page.locator(f'#calls li[data-call-id="{c.cid}"]')
            caller_shown = await row.locator(".caller").text_content()
            first_badge = await row.locator(".badge").text_content()
            wait_1_at = time.time()
            wait_1 = await row.locator(".wait").text_content()
            await row.locator(".badge.ok").wait_for(timeout=6000)  # the media verdict: ok
            t_ok = time.time()
            await asyncio.sleep(max(0.0, wait_1_at + 2.1 - time.time()))
            wait_2 = await row.locator(".wait").text_content()
            badge = await row.locator(".badge").text_content()
            shot = keep(console, "console-waiting.png")
            await shoot(page, shot)

            t_click = await answer(page, c.cid)
            t_talking = await state_at(page, "talking")
            await wait_state(lkapi, c.room, "monitoring")
            levels = []
            for _ in range(20):
                levels.append(await level(page))
                await asyncio.sleep(0.1)
            await shoot(page, keep(console, "console-in-call.png"))
            await asyncio.sleep(1.0)

            t_hold = time.time()
            await page.click("#hold")
            await state_at(page, "on_hold")
            await asyncio.sleep(3.0)
            t_resume = time.time()
            await page.click("#resume")
            await state_at(page, "talking", timeout=5.0, after=t_resume)
            await asyncio.sleep(6.0)
            await page.fill("#hangup-reason", "served in the browser")
            t_hangup = time.time()
            await page.click("#hangup")
            await page.wait_for_selector("#call", state="hidden", timeout=5000)
            a = await c.done(15.0)
            t_gone = a.ended_at
            hist = await history(console, c.cid, "alice")
            errors = list(PAGE_ERRORS[id(page)])
        finally:
            if c is not None:
                await c.stop()

    t_answered = c.answered_at()
    heard = keep(console, "console-call-heard.wav")
    shutil.copy(a.result["recording"]["path"], heard)
    tone_at = a.first_heard(A_HZ, t_click)
    clean_at = first_clean(a, A_HZ, HOLD_HZ, t_click)
    hold_back = a.first_heard(HOLD_HZ, t_hold)
    on_hold_hold = a.heard(HOLD_HZ, t_hold + 1.0, t_resume)
    on_hold_tone = a.heard(A_HZ, t_hold + 1.0, t_resume)
    tone_back = a.first_heard(A_HZ, t_resume)
    after_tone = a.heard(A_HZ, t_resume + 1.5, t_resume + 3.5)
    after_hold = a.heard(HOLD_HZ, t_resume + 1.5, t_resume + 3.5)
    before_tone = a.heard(A_HZ, t_hold - 1.0, t_hold)
    waiting_tone = a.heard(A_HZ, t_answered + 0.5, t_click)
    heard_levels = [x for x in levels if x is not None]
    print(
        f"\nconsole, one call: in the list {shown - t_answered:.3f} s after the caller's "
        f"200 OK (shown {caller_shown!r}, badge {first_badge!r}, then {badge!r} "
        f"{t_ok - t_answered:.1f} s after the 200 OK; waiting {wait_1} then {wait_2}); "
        f"Answer clicked -> page talking {t_talking - t_click:.3f} s, the browser's tone at "
        f"the caller {r3(tone_at and tone_at - t_click)} s, tone without hold "
        f"{r3(clean_at and clean_at - t_click)} s after the click "
        f"({r3(clean_at and clean_at - t_talking)} s after the microphone was published); "
        f"the page's caller level {heard_levels[:5]}... dBFS; hold: hold audio "
        f"{r3(hold_back and hold_back - t_hold)} s after the click, on hold hold "
        f"{on_hold_hold:.0%} / tone {on_hold_tone:.0%} (tone before {before_tone:.0%}); resume: "
        f"tone back {r3(tone_back and tone_back - t_resume)} s, then tone {after_tone:.0%} / "
        f"hold {after_hold:.0%}; hung up from the page, caller gone "
        f"{t_gone - t_hangup:.2f} s later; history {hist}; screenshot {shot}, the caller's "
        f"recording {heard} (t_resume {t_resume:.3f}, recording from {a.t0:.3f})"
    )
    assert a.result.get("answered"), a.result
    assert caller_shown == "+***0001", caller_shown  # masked: number(1)
    assert wait_1 != wait_2  # the waiting time ticks
    assert first_badge == "checking audio" and badge == "audio ok"
    assert shown - t_answered <= 1.0
    assert waiting_tone < 0.05  # nothing of the browser before the answer
    assert tone_at is not None and clean_at is not None
    assert clean_at - t_talking <= 0.7
    assert clean_at - t_click <= 2.5
    assert len(heard_levels) >= 10 and min(heard_levels) > -40.0, levels
    assert hold_back is not None and hold_back - t_hold <= 0.5
    assert on_hold_hold > 0.9 and on_hold_tone < 0.05
    assert before_tone > 0.9
    assert tone_back is not None and tone_back - t_resume <= 1.0
    assert after_tone > 0.9 and after_hold < 0.05
    assert 0 < t_gone - t_hangup <= 3.0
    assert [x for x in hist if x[0] != "end"] == [  # the worker's "end" may follow
        ("take", "alice"),
        ("hold", "alice"),
        ("resume", "alice"),
        ("hangup", "alice"),
    ]
    assert errors == []


# ---- 2. two consoles race for one call -----------------------------------------------------


async def test_two_consoles_race_one_answers(console, lk_env, lkapi, work_dir):
    c: Caller | None = None
    async with chromium(work_dir, A_HZ) as browser:
        pages = {agent: await open_console(browser, console, agent) for agent in ("carol", "dave")}
        try:
            c = await dial(lk_env, lkapi, work_dir, number(2), duration=40.0)
            for page in pages.values():
                await seen_at(page, c.cid)
            t_race = time.time()
            await asyncio.gather(*(answer(p, c.cid) for p in pages.values()))
            outcome: dict[str, str] = {}
            deadline = time.monotonic() + 10.0
            while len(outcome) < 2 and time.monotonic() < deadline:
                for agent, page in pages.items():
                    if agent in outcome:
                        continue
                    if await page.locator('#call[data-state="talking"]').count():
                        outcome[agent] = "talking"
                    elif err := await error_line(page):
                        outcome[agent] = err
                await asyncio.sleep(0.05)
            t_settled = time.time()
            winner = next((a for a, o in outcome.items() if o == "talking"), "")
            if winner:
                await pages[winner].click("#hangup")
            a = await c.done(15.0)
            hist = await history(console, c.cid, "carol")
        finally:
            if c is not None:
                await c.stop()
    loser = next((x for x in pages if x != winner), "")
    print(
        f"\nconsole race: {outcome} ({t_settled - t_race:.2f} s after both clicked); history {hist}"
    )
    assert a.result.get("answered")
    assert winner in pages and loser in pages, outcome
    assert outcome[loser].startswith(f"Taken by {winner}:"), outcome
    assert [x for x in hist if x[0] == "take"] == [("take", winner)]


# ---- 3. a transfer from one console to another ---------------------------------------------


async def test_transfer_between_consoles_never_silent(console, lk_env, lkapi, work_dir):
    c: Caller | None = None
    note = "wants the blue one in size 9"
    async with chromium(work_dir, A_HZ) as browser_a, chromium(work_dir, B_HZ) as browser_b:
        anna = await open_console(browser_a, console, "anna")
        bert = await open_console(browser_b, console, "bert")
        try:
            c = await dial(lk_env, lkapi, work_dir, number(3), duration=60.0)
            await seen_at(anna, c.cid)
            await answer(anna, c.cid)
            await state_at(anna, "talking")
            await wait_state(lkapi, c.room, "monitoring")
            await asyncio.sleep(1.5)
            await anna.fill("#transfer-agent", "bert")
            await anna.fill("#transfer-note", note)
            t_transfer = time.time()
            await anna.click("#transfer-form button[type=submit]")
            await state_at(anna, "transferred")
            row = bert.locator(f'#calls li[data-call-id="{c.cid}"]')
            await row.wait_for(timeout=5000)
            t_offered = time.time()
            note_shown = await row.locator(".note").text_content()
            await asyncio.sleep(2.0)  # the caller on hold, waiting for bert
            t_b = await answer(bert, c.cid)
            await state_at(bert, "talking")
            await anna.wait_for_selector("#call", state="hidden", timeout=5000)
            t_a_out = time.time()
            a_notice = await anna.locator("#notice").text_content()
            await asyncio.sleep(4.0)
            await bert.click("#hangup")
            a = await c.done(15.0)
            hist = await history(console, c.cid, "bert")
            in_room = [p.identity for p in await participants(lkapi, c.room)]
        finally:
            if c is not None:
                await c.stop()
    hold_back = a.first_heard(HOLD_HZ, t_transfer)
    anna_on_hold = a.heard(A_HZ, t_transfer + 1.0, t_b)
    hold_waiting = a.heard(HOLD_HZ, t_transfer + 1.0, t_b)
    b_heard = a.first_heard(B_HZ, t_b)
    gap = longest_gap(a, [HOLD_HZ, A_HZ, B_HZ], t_transfer - 1.0, (b_heard or t_b) + 3.0)
    b_after = a.heard(B_HZ, (b_heard or t_b) + 1.0, (b_heard or t_b) + 3.5)
    hold_after = a.heard(HOLD_HZ, (b_heard or t_b) + 1.0, (b_heard or t_b) + 3.5)
    print(
        f"\nconsole transfer anna -> bert: hold audio {r3(hold_back and hold_back - t_transfer)} s "
        f"after anna's click; in bert's list {t_offered - t_transfer:.2f} s after it "
        f"({note_shown!r}); while waiting anna {anna_on_hold:.0%}, hold {hold_waiting:.0%}; "
        f"bert heard {r3(b_heard and b_heard - t_b)} s after bert's Answer; anna's console "
        f"closed the call {t_a_out - t_b:.2f} s after it ({a_notice!r}); longest gap with "
        f"neither hold nor an agent {gap:.1f} s; after: bert {b_after:.0%}, hold "
        f"{hold_after:.0%}; history {hist}"
    )
    assert note_shown == f"Transferred by anna: {note} (offered to bert)"
    assert hold_back is not None and hold_back - t_transfer <= 0.5
    assert anna_on_hold < 0.05 and hold_waiting > 0.9
    assert t_offered - t_transfer <= 1.0
    assert b_heard is not None and b_heard - t_b <= 2.5
    assert gap <= 0.5  # silence: more than 0.5 s with neither (as in test_desk_stack.py)
    assert b_after > 0.9 and hold_after < 0.05
    assert t_a_out - t_b <= 3.0
    assert hist[:3] == [("take", "anna"), ("transfer", "anna"), ("take", "bert")], hist
    assert "agent-anna" not in in_room


# ---- 4. the tab closed mid-call ---------------------------------------------------------------


async def test_tab_closed_mid_call_hold_back(console, lk_env, lkapi, work_dir):
    c: Caller | None = None
    async with chromium(work_dir, A_HZ) as browser:
        erin = await open_console(browser, console, "erin")
        watcher = await open_console(browser, console, "fred")
        try:
            c = await dial(lk_env, lkapi, work_dir, number(4), duration=40.0)
            await seen_at(erin, c.cid)
            await answer(erin, c.cid)
            await state_at(erin, "talking")
            await wait_state(lkapi, c.room, "monitoring")
            await asyncio.sleep(2.0)
            t_close = time.time()
            await erin.close(run_before_unload=True)  # as a person closes the tab
            row = watcher.locator(f'#calls li[data-call-id="{c.cid}"]')
            await row.wait_for(timeout=5000)
            t_back_in_line = time.time()
            requeued = await row.locator(".note").all_text_contents()
            await asyncio.sleep(3.0)
            hung = await desk_post(console, f"/calls/{c.cid}/hangup", "fred", {"reason": "test"})
            a = await c.done(15.0)
        finally:
            if c is not None:
                await c.stop()
    hold_back = a.first_heard(HOLD_HZ, t_close)
    tone_before = a.heard(A_HZ, t_close - 1.5, t_close)
    hold_after = a.heard(HOLD_HZ, t_close + 2.0, t_close + 3.0)
    print(
        f"\nconsole tab closed mid-call: hold audio back at the caller "
        f"{r3(hold_back and hold_back - t_close)} s after the close (tone before "
        f"{tone_before:.0%}, hold after {hold_after:.0%}); back in another console's list "
        f"{t_back_in_line - t_close:.2f} s after it ({requeued})"
    )
    assert hung[0] == 200, hung
    assert tone_before > 0.9
    assert hold_back is not None and hold_back - t_close <= 2.0
    assert hold_after > 0.9
    assert t_back_in_line - t_close <= 3.0


# ---- 5. one-way audio: the badge turns red while the call waits -------------------------------


async def test_one_way_audio_turns_the_badge_red(console, lk_env, lkapi, work_dir):
    if why := nft_available():
        unavailable(f"no nftables here for the RTP fault: {why}")
    port = free_rtp_port()
    c: Caller | None = None
    async with chromium(work_dir, A_HZ) as browser:
        page = await open_console(browser, console, "gina")
        with RtpBlock(src_port=port) as block:
            try:
                c = await dial(
                    lk_env,
                    lkapi,
                    work_dir,
                    number(5),
                    duration=14.0,
                    extra=("--rtp-port", str(port)),
                )
                await seen_at(page, c.cid)
                badge = page.locator(f'#calls li[data-call-id="{c.cid}"] .badge.bad')
                await badge.wait_for(timeout=12_000)
                t_red = time.time()
                text = await badge.text_content()
                media = await badge.get_attribute("data-media")
                still_waiting = await page.locator(
                    f'#calls li[data-call-id="{c.cid}"] button.answer'
                ).is_enabled()
                shot = keep(console, "console-one-way.png")
                await shoot(page, shot)
                dropped = block.dropped()
                a = await c.done(30.0)
            finally:
                if c is not None:
                    await c.stop()
    t_answered = c.answered_at()
    print(
        f"\nconsole one-way audio ({dropped} RTP packets dropped): badge red "
        f"{t_red - t_answered:.2f} s after the caller's 200 OK ({media}: {text!r}), the call "
        f"still waiting: {still_waiting}; screenshot {shot}"
    )
    assert a.result.get("answered") and dropped > 0
    assert media not in ("ok", "pending")
    assert still_waiting
    assert t_red - t_answered <= 8.0
