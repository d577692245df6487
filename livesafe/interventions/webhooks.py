"""Signed webhooks: interventions POSTed to a backend that prefers HTTP to a websocket.

Signing follows the Standard Webhooks scheme (https://www.standardwebhooks.com), through its reference
library ``standardwebhooks`` (MIT): each request carries ``webhook-id`` (the intervention's idempotency
key, the same on every retry, so the receiver can drop a duplicate), ``webhook-timestamp`` (Unix seconds
when this attempt was sent) and ``webhook-signature`` (``v1,<base64 HMAC-SHA256 of "id.timestamp.body">``).
Receivers refuse timestamps more than five minutes away from their clock (the replay window), which
:func:`verify` does.

Rotation without downtime: an endpoint may hold several secrets. Each request is signed with all of them
(space-separated signatures, as the scheme allows), so a receiver that knows either the old or the new
secret accepts it; drop the old secret from the configuration once every receiver has the new one.

Delivery: a :class:`WebhookDispatcher` is one more consumer of the durable outbox (the same consumer
group as websocket connections, so each intervention goes to exactly one backend channel). It sends one
request at a time, in outbox order, and like a websocket connection only the head of a stream's queue: a
later intervention of a stream it claimed waits (held back, up to ``batch_size`` of them) until every
earlier one of that stream is acknowledged, by whichever channel held it, so interventions of a stream
arrive in order across channels too; other streams are not held up meanwhile. A 2xx response
acknowledges the intervention. A 4xx response other than 408, 409, 425 and 429 means the receiver refuses
it for good (a bad signature, say): it is acknowledged as rejected, logged with the status, and not sent
again. Anything else (a 5xx, a timeout, a refused connection) is retried with exponential backoff and
jitter, capped at ``max_backoff_s``, for as long as it takes: while the endpoint is down nothing is lost
and nothing of that stream overtakes it. Past the outbox's ``redeliver_after_s`` another consumer (a
websocket connection) may take it over, as from any consumer that does not answer in time; the dispatcher
then stops retrying it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
import redis
from standardwebhooks import Webhook, WebhookVerificationError

from livesafe.interventions.consumer import OutboxConsumer
from livesafe.interventions.outbox import Delivery, Outbox, reraise_swallowed_cancel
from livesafe.tasks import cancel_and_wait

log = logging.getLogger(__name__)

__all__ = ["WebhookDispatcher", "WebhookEndpoint", "WebhookRejectedError", "sign", "verify"]

#: Client errors that say "try again later" rather than "never".
RETRYABLE_4XX = frozenset({408, 409, 425, 429})


class WebhookRejectedError(ValueError):
    """A webhook request that does not verify; the message says why."""


def _secrets(secret: str | Sequence[str]) -> list[Webhook]:
    secrets = [secret] if isinstance(secret, str) else list(secret)
    if not secrets:
        raise ValueError("a webhook endpoint needs at least one secret")
    out: list[Webhook] = []
    for s in secrets:
        try:
            out.append(Webhook(s))
        except Exception as exc:  # the library raises bare Exceptions for empty or bad base64 secrets
            raise ValueError(f"invalid webhook secret ({exc}); expected 'whsec_' + base64") from exc
    return out


def sign(
    secret: str | Sequence[str], msg_id: str, body: str, *, now: datetime | None = None
) -> dict[str, str]:
    """The Standard Webhooks headers for ``body``, signed with every secret in ``secret``."""
    when = (now or datetime.now(UTC)).astimezone(UTC)
    signatures = " ".join(w.sign(msg_id, when, body) for w in _secrets(secret))
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": signatures,
        "content-type": "application/json",
    }


def verify(secret: str | Sequence[str], body: bytes | str, headers: Mapping[str, str]) -> dict[str, Any]:
    """The JSON payload of a webhook request, if it verifies against any of ``secret``.

    Raises :class:`WebhookRejectedError` naming the reason: missing headers, a timestamp outside the
    five-minute replay window, a signature that matches no secret, a malformed header, or a body that
    is not a JSON object.
    """
    reasons: list[str] = []
    for webhook in _secrets(secret):
        try:
            payload = webhook.verify(body, dict(headers))
        except WebhookVerificationError as exc:
            reasons.append(str(exc))
            continue
        except (ValueError, TypeError) as exc:  # malformed signature header or body
            raise WebhookRejectedError(f"malformed webhook request: {exc}") from exc
        if not isinstance(payload, dict):
            raise WebhookRejectedError(f"webhook body must be a JSON object, got {type(payload).__name__}")
        return payload
    raise WebhookRejectedError("; ".join(dict.fromkeys(reasons)))


@dataclass(frozen=True, slots=True)
class WebhookEndpoint:
    """Where and how to POST: the URL, its secrets (newest first), a per-request timeout."""

    url: str
    secrets: tuple[str, ...]
    timeout_s: float = 10.0
    name: str = "webhook"

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"webhook url must be http:// or https://, got {self.url!r}")
        _secrets(self.secrets)
        if self.timeout_s <= 0:
            raise ValueError(f"webhook timeout_s must be > 0, got {self.timeout_s}")


@dataclass(slots=True)
class WebhookStats:
    delivered: int = 0
    rejected: int = 0
    retries: int = 0
    last_error: str = ""
    statuses: dict[int, int] = field(default_factory=dict)


class WebhookDispatcher:
    """Delivers the outbox to one webhook endpoint (see the module docs). An async context manager."""

    def __init__(
        self,
        outbox: Outbox,
        endpoint: WebhookEndpoint,
        *,
        batch_size: int = 16,
        block_ms: int = 1000,
        poll_s: float = 0.05,
        initial_backoff_s: float = 0.5,
        max_backoff_s: float = 60.0,
        on_result: Callable[[Delivery, str, int | None], None] | None = None,
    ) -> None:
        self.outbox = outbox
        self.endpoint = endpoint
        self.consumer = f"webhook:{endpoint.name}"
        self.batch_size = batch_size
        self.block_ms = block_ms
        self.poll_s = poll_s
        self.initial_backoff_s = initial_backoff_s
        self.max_backoff_s = max_backoff_s
        self.stats = WebhookStats()
        self._on_result = on_result
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._rng = random.Random()
        #: The outbox consumer (shared with the websocket gateway): holds up to ``batch_size`` claimed
        #: deliveries, sends each as the head of its stream's queue, one at a time, in order.
        self.pump = OutboxConsumer(
            outbox, self.consumer, self._deliver, max_in_flight=batch_size, batch_size=batch_size,
            refill_at=1, block_ms=block_ms, poll_s=poll_s, reconcile_s=max(poll_s, 1.0),
            initial_backoff_s=initial_backoff_s, max_backoff_s=max_backoff_s,
        )

    async def __aenter__(self) -> WebhookDispatcher:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        if self._task is not None:
            return
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.endpoint.timeout_s))
        self._task = asyncio.create_task(self.pump.run(), name=f"webhook-{self.endpoint.name}")

    async def aclose(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)
        self.pump.clear()
        session, self._session = self._session, None
        if session is not None:
            await session.close()
        try:
            await self.outbox.release(self.consumer)  # unacked work goes back to the group at once
        except redis.RedisError as exc:
            log.warning("%s: could not release pending interventions (resent after timeout): %s",
                        self.consumer, exc)

    async def _deliver(self, delivery: Delivery) -> None:
        """POST one delivery until the endpoint takes or refuses it; then acknowledge it."""
        delay = self.initial_backoff_s
        attempt = delivery.attempt
        while True:
            outcome, status = await self._post(delivery, attempt)
            if outcome in ("delivered", "rejected"):
                await self._ack(delivery, outcome, status)
                self.pump.settle(delivery.entry_id, delivery.key)
                return
            self.stats.retries += 1
            attempt += 1
            await asyncio.sleep(delay * (0.5 + self._rng.random()))
            delay = min(delay * 2, self.max_backoff_s)
            if not await self._still_held(delivery):
                log.warning("%s: %s was taken over by another consumer after the ack timeout; "
                            "no longer retrying it", self.consumer, delivery.key)
                self.pump.forget(delivery.entry_id, delivery.key)
                return

    async def _still_held(self, delivery: Delivery) -> bool:
        """Whether this dispatcher still holds ``delivery`` (a retry now keeps the order); ``True`` if
        Redis cannot tell (at-least-once: a duplicate is better than a loss)."""
        try:
            [verdict] = await self.outbox.heads(self.consumer, [delivery], touch=False)
        except redis.RedisError:
            reraise_swallowed_cancel()
            return True
        reraise_swallowed_cancel()
        return verdict != "gone"

    async def _post(self, delivery: Delivery, attempt: int) -> tuple[str, int | None]:
        assert self._session is not None
        body = json.dumps(delivery.wire(attempt))
        headers = sign(self.endpoint.secrets, delivery.key, body)
        try:
            async with self._session.post(self.endpoint.url, data=body, headers=headers) as response:
                status = response.status
                await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.stats.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("%s: %s failed (attempt %d): %s", self.consumer, delivery.key, attempt,
                        self.stats.last_error)
            return "retry", None
        self.stats.statuses[status] = self.stats.statuses.get(status, 0) + 1
        if 200 <= status < 300:
            return "delivered", status
        if 400 <= status < 500 and status not in RETRYABLE_4XX:
            log.error("%s: endpoint refused %s with HTTP %d; not sending it again", self.consumer,
                      delivery.key, status)
            return "rejected", status
        self.stats.last_error = f"HTTP {status}"
        log.warning("%s: %s got HTTP %d (attempt %d); retrying", self.consumer, delivery.key,
                    status, attempt)
        return "retry", status

    async def _ack(self, delivery: Delivery, outcome: str, status: int | None) -> None:
        delay = self.initial_backoff_s
        while True:
            try:
                await self.outbox.ack(delivery.key)
                break
            except redis.RedisError as exc:  # the receiver has it; keep trying to record that
                reraise_swallowed_cancel()
                log.warning("%s: could not ack %s, retrying: %s", self.consumer,
                            delivery.key, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_backoff_s)
        if outcome == "delivered":
            self.stats.delivered += 1
        else:
            self.stats.rejected += 1
        if self._on_result is not None:
            self._on_result(delivery, outcome, status)
