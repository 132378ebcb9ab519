"""Callback requests to the stores' backends: signed webhooks, retried.

The desk (`python -m worker desk`) runs one `WebhookSender`: it pops each
callback request from the registry's outbox (one desk replica gets each),
POSTs it as JSON to its store's `keypad.webhook.url`, signed:

    X-Hold-Signature: sha256=<hex HMAC-SHA256 of the body with the store's secret>
    X-Hold-Delivery: <the request id>   (the same on every retry: deduplicate by it)

and retries a failure (a connection error, a timeout, any status but 2xx) with
backoff (1, 2, 4, 8 s; five tries in all), each in its own task so one slow
backend delays no other. The call never waits for any of it: the worker
ended the call once the request was stored. Never logged: the secret, the
full number (the log names the store and the request id).

Why a loop and not a retry library: tenacity and backoff are not among the
project's dependencies, and what is needed (a fixed list of delays, a
bounded number of tries) is a few lines.

A request popped by a desk that dies before delivering it is not sent again
(at most once); it stays in the store's list, which agents see.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from .aio import stop_task

logger = logging.getLogger("hold-worker.webhooks")

RETRY_DELAYS_S = (1.0, 2.0, 4.0, 8.0)
TIMEOUT_S = 5.0
SIGNATURE_HEADER = "X-Hold-Signature"
DELIVERY_HEADER = "X-Hold-Delivery"
POP_TIMEOUT_S = 1.0


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, header: str) -> bool:
    """What a store's backend does with the header (constant-time compare)."""
    return hmac.compare_digest(sign(secret, body), header)


@dataclass(frozen=True)
class Hook:
    url: str
    secret: str


async def deliver(
    session: aiohttp.ClientSession,
    hook: Hook,
    request: Mapping[str, Any],
    *,
    delays: Sequence[float] = RETRY_DELAYS_S,
    log: logging.Logger | logging.LoggerAdapter = logger,  # type: ignore[type-arg]
) -> bool:
    """POST one request until a 2xx answers or the tries run out."""
    body = json.dumps(dict(request), separators=(",", ":"), sort_keys=True).encode()
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: sign(hook.secret, body),
        DELIVERY_HEADER: str(request.get("id", "")),
    }
    where = f"store {request.get('store')}, request {request.get('id')}"
    for attempt in range(len(delays) + 1):
        try:
            async with session.post(
                hook.url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=TIMEOUT_S)
            ) as r:
                if 200 <= r.status < 300:
                    log.info(f"callback webhook delivered ({where}, try {attempt + 1})")
                    return True
                why = f"status {r.status}"
        except (aiohttp.ClientError, TimeoutError) as e:
            why = type(e).__name__
        if attempt < len(delays):
            log.warning(
                f"callback webhook failed ({where}): {why}; retrying in {delays[attempt]:g} s"
            )
            await asyncio.sleep(delays[attempt])
        else:
            log.error(f"callback webhook gave up after {attempt + 1} tries ({where}): {why}")
    return False


class WebhookSender:
    """Pops callback requests from the registry and sends each to its store's hook."""

    def __init__(
        self,
        registry: Any,  # registry.Registry: next_webhook()
        hooks: Mapping[str, Hook],
        *,
        delays: Sequence[float] = RETRY_DELAYS_S,
    ) -> None:
        self.registry = registry
        self.hooks = dict(hooks)
        self.delays = tuple(delays)
        self._task: asyncio.Task[None] | None = None
        self._sends: set[asyncio.Task[bool]] = set()
        self._session: aiohttp.ClientSession | None = None

    def start(self) -> None:
        if self._task is None:
            self._session = aiohttp.ClientSession()
            self._task = asyncio.create_task(self._run(), name="desk-webhooks")

    async def _run(self) -> None:
        failing = False
        while True:
            try:
                request = await self.registry.next_webhook(POP_TIMEOUT_S)
                failing = False
            except Exception as e:  # Redis away: try again shortly
                if not failing:
                    logger.warning(f"callback webhooks: cannot read the registry: {e}")
                failing = True
                await asyncio.sleep(1.0)
                continue
            if request is None:
                continue
            hook = self.hooks.get(str(request.get("store")))
            if hook is None:
                continue  # the store has no webhook: agents see the request at the desk
            assert self._session is not None
            task = asyncio.create_task(
                deliver(self._session, hook, request, delays=self.delays), name="desk-webhook"
            )
            self._sends.add(task)
            task.add_done_callback(self._sends.discard)

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await stop_task(task, logger)
        for t in list(self._sends):
            await stop_task(t, logger)
        if self._session is not None:
            await self._session.close()
            self._session = None
