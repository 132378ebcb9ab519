"""Callback requests over a real redis-server (issue 18 part 2): stored by the
worker's registry call, listed by the desk's GET /stores/{store}/callbacks and
pushed on its event stream (`callbacks`), only to the store's agents; sent to
the store's webhook by the desk's sender, signed (HMAC-SHA256 of the body),
retried after a first 500, and one desk replica per request. Agents seen on
the desk's stream count as signed in."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.integration.test_desk import bearer, make_desk, serving
from worker.registry import Registry
from worker.webhooks import DELIVERY_HEADER, SIGNATURE_HEADER, Hook, WebhookSender, verify

WEBHOOK_SECRET = "w" * 32


def request(store: str, n: int, number: bool = True) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "id": f"{n:016x}",
        "store": store,
        "cid": f"{n:024x}",
        "caller": "+***0123",
        "waited_ms": 42_000 + n,
    }
    if number:
        entry["number"] = "+15550100123"
    return entry


class Backend:
    """A store's backend: checks the signature, answers 500 to the first
    delivery of each request, 200 after."""

    def __init__(self) -> None:
        self.got: list[tuple[float, dict[str, Any], bool, str]] = []  # (at, body, valid, id)

    async def handle(self, r: web.Request) -> web.Response:
        body = await r.read()
        valid = verify(WEBHOOK_SECRET, body, r.headers.get(SIGNATURE_HEADER, ""))
        data = json.loads(body)
        first = not any(b["id"] == data["id"] for _t, b, _v, _i in self.got)
        self.got.append((time.monotonic(), data, valid, r.headers.get(DELIVERY_HEADER, "")))
        return web.Response(status=500 if first else 200)


@pytest.fixture
async def backend() -> AsyncIterator[tuple[Backend, str]]:
    b = Backend()
    app = web.Application()
    app.router.add_post("/hook", b.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield b, f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    finally:
        await runner.cleanup()


async def test_stored_listed_and_only_for_the_stores_agents(registry: Registry) -> None:
    got = await registry.request_callback(request("downtown", 1))
    await registry.request_callback(request("downtown", 2, number=False))
    await registry.request_callback(request("north", 3))
    assert got["at"] > 1_600_000_000_000  # Redis time, unix ms
    async with serving(make_desk(registry)) as url, aiohttp.ClientSession() as http:
        async with http.get(
            f"{url}/stores/downtown/callbacks", headers=bearer("ann", "downtown")
        ) as r:
            assert r.status == 200
            body = await r.json()
        assert [c["id"] for c in body["callbacks"]] == [f"{2:016x}", f"{1:016x}"]  # newest first
        assert body["callbacks"][1]["number"] == "+15550100123"
        assert "number" not in body["callbacks"][0]  # the store's policy: stored without it
        async with http.get(
            f"{url}/stores/north/callbacks", headers=bearer("ann", "downtown")
        ) as r:
            assert r.status == 403
            assert "error" in await r.json()


async def test_the_event_stream_pushes_new_requests_and_marks_agents_seen(
    registry: Registry,
) -> None:
    from tests.integration.test_desk import SECRET
    from worker.desk import mint_token

    desk = make_desk(registry, poll_s=0.05)
    async with serving(desk) as url, aiohttp.ClientSession() as http:
        token = mint_token(SECRET, "bea", ("downtown",))
        events: list[tuple[str, Any]] = []

        async def read() -> None:
            async with http.get(f"{url}/events", params={"access_token": token}) as r:
                name = ""
                async for raw in r.content:
                    line = raw.decode().strip()
                    if line.startswith("event:"):
                        name = line[6:].strip()
                    elif line.startswith("data:"):
                        events.append((name, json.loads(line[5:])))

        task = asyncio.create_task(read())
        try:
            await asyncio.sleep(0.3)
            assert await registry.agents_signed_in("downtown", 10_000) == 1
            assert await registry.agents_signed_in("north", 10_000) == 0
            await registry.request_callback(request("north", 9))  # not bea's store
            await registry.request_callback(request("downtown", 4))
            t0 = time.monotonic()
            while not any(n == "callbacks" and e["callbacks"] for n, e in events):
                assert time.monotonic() - t0 < 3.0, events
                await asyncio.sleep(0.02)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    pushed = [e for n, e in events if n == "callbacks" and e["callbacks"]]
    print(f"\ncallbacks event {time.monotonic() - t0:.2f} s after the request: {pushed[0]}")
    assert pushed[0]["store"] == "downtown"
    assert [c["id"] for c in pushed[0]["callbacks"]] == [f"{4:016x}"]
    assert all(e["store"] == "downtown" for n, e in events if n == "callbacks")


async def test_webhook_signed_retried_after_a_500_and_sent_once(
    registry: Registry, backend: tuple[Backend, str]
) -> None:
    b, url = backend
    hooks = {"downtown": Hook(url, WEBHOOK_SECRET)}
    # two desk replicas: each request reaches the backend through one of them
    senders = [WebhookSender(registry, hooks, delays=(0.2, 0.4)) for _ in range(2)]
    for s in senders:
        s.start()
    try:
        t0 = time.monotonic()
        await registry.request_callback(request("downtown", 5))
        await registry.request_callback(request("north", 6))  # no webhook: not sent
        while sum(1 for _t, _b, _v, _i in b.got) < 2:
            assert time.monotonic() - t0 < 5.0, b.got
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.8)  # nothing more arrives
    finally:
        for s in senders:
            await s.aclose()
    print(
        "\nwebhook deliveries: "
        + ", ".join(f"+{t - t0:.2f} s valid={v} id={i}" for t, _b, v, i in b.got)
    )
    assert len(b.got) == 2  # a 500, then the retry's 200; nothing from the other replica
    (t1, first, v1, i1), (t2, second, v2, i2) = b.got
    assert v1 and v2 and i1 == i2 == f"{5:016x}"
    assert first == second and first["number"] == "+15550100123" and first["at"] > 0
    assert t2 - t1 >= 0.18  # the backoff
    assert not verify("x" * 32, json.dumps(first).encode(), "sha256=00")


async def test_webhook_gives_up_after_its_tries(registry: Registry) -> None:
    async def down(_r: web.Request) -> web.Response:
        calls.append(time.monotonic())
        return web.Response(status=503)

    calls: list[float] = []
    app = web.Application()
    app.router.add_post("/hook", down)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    sender = WebhookSender(registry, {"downtown": Hook(url, WEBHOOK_SECRET)}, delays=(0.05, 0.05))
    sender.start()
    try:
        await registry.request_callback(request("downtown", 7))
        await asyncio.sleep(1.5)
    finally:
        await sender.aclose()
        await runner.cleanup()
    assert len(calls) == 3  # the first try and two retries
