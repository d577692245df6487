"""An example streaming backend: receives livesafe's interventions, applies them, undoes them when lifted.

A real backend would call its player, CDN and recommendation services where this one records and
prints what it would do. It shows the parts every backend needs:

* connect with :class:`livesafe.client.BackendClient` (it reconnects with backoff by itself);
* apply each intervention's effects (notice, age_gate, remove_from_recommendations, blur, mute, cut,
  human_review; observe does nothing) and report them with ``applied``, which also acknowledges;
* undo them on ``intervention.lifted`` (an effect stays on while another intervention in force on the
  stream still needs it) and report that with ``applied`` too;
* deduplicate by the idempotency key (``intervention_id`` / ``lift_id``): delivery is at-least-once, so a
  resend (``attempt`` > 1, or after a reconnect) is acknowledged again but not applied twice.

Run it against a running livesafe (``livesafe run --token acme=TOKEN``)::

    python examples/backend.py ws://127.0.0.1:8765/v1/backend --token TOKEN \\
        --stream s1=rtmp://media.example/live/s1
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TextIO

from livesafe.client import AuthenticationError, BackendClient, Received
from livesafe.core.events import Intervention, InterventionLifted

#: What the backend does for each effect, and how it undoes it.
EFFECTS: dict[str, tuple[str, str]] = {
    "observe": ("nothing (board only)", "nothing"),
    "notice": ("show the streamer an on-screen notice", "remove the notice"),
    "age_gate": ("age-gate the stream", "lift the age gate"),
    "remove_from_recommendations": ("remove the stream from recommendations", "recommend it again"),
    "blur": ("blur the video for viewers", "unblur the video"),
    "mute": ("mute the audio for viewers", "unmute the audio"),
    "cut": ("cut the broadcast", "allow the stream back on air"),
    "human_review": ("open a case for human review", "close the review case"),
}


@dataclass
class StreamControls:
    """What is switched on for one stream, and which interventions hold each effect on."""

    held: dict[str, set[str]] = field(default_factory=dict)  # effect -> intervention ids
    notices: dict[str, str] = field(default_factory=dict)  # intervention id -> notice text

    @property
    def active(self) -> list[str]:
        return sorted(effect for effect, holders in self.held.items() if holders)


class ExampleBackend:
    """Applies what ``client`` receives; ``actions`` records every change it made, in order."""

    def __init__(self, client: BackendClient, out: TextIO = sys.stdout, remember: int = 100_000) -> None:
        self.client = client
        self.out = out
        self.remember = remember
        self.streams: dict[str, StreamControls] = {}
        self.actions: list[tuple[str, str, str]] = []  # (stream_id, effect, "on" | "off")
        self.duplicates = 0
        self._seen: OrderedDict[str, None] = OrderedDict()  # keys handled, oldest first (bounded)

    def _say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    async def handle(self, received: Received) -> bool:
        """Apply (or undo) one delivery and report it; False for a duplicate (acked, not reapplied)."""
        key = received.key
        if key in self._seen:
            self.duplicates += 1
            self._say(f"duplicate {key} (attempt {received.attempt}): already applied, acking again")
            await self.client.ack(received)
            return False
        if received.lifted is not None:
            effects, detail = self._undo(received.lifted)
        else:
            effects, detail = self._apply(received.intervention)
        # Record before reporting: if the report is lost, the resend is recognised as a duplicate.
        self._seen[key] = None
        while len(self._seen) > self.remember:
            self._seen.popitem(last=False)
        await self.client.applied(received, received.message.stream_id, effects, detail)
        return True

    def _apply(self, iv: Intervention) -> tuple[tuple[str, ...], str]:
        controls = self.streams.setdefault(iv.stream_id, StreamControls())
        self._say(f"[{iv.stream_id} t={iv.media_ts:.1f}s] {iv.action.upper()} {iv.category} "
                  f"({iv.intervention_id}, policy {iv.policy}): {iv.reason}")
        done: list[str] = []
        for effect in iv.effects:
            holders = controls.held.setdefault(effect, set())
            if effect == "notice":
                controls.notices[iv.intervention_id] = iv.message
            if effect != "observe" and not holders:
                self.actions.append((iv.stream_id, effect, "on"))
                self._say(f"  -> {EFFECTS.get(effect, (effect, ''))[0]}"
                          + (f": {iv.message!r}" if effect == "notice" and iv.message else ""))
            holders.add(iv.intervention_id)
            done.append(effect)
        if iv.expires_at is not None:
            self._say(f"  (until media time {iv.expires_at:.1f}s unless lifted earlier)")
        return tuple(done), f"applied {', '.join(done) or 'nothing'}"

    def _undo(self, lift: InterventionLifted) -> tuple[tuple[str, ...], str]:
        controls = self.streams.setdefault(lift.stream_id, StreamControls())
        who = f" by {lift.reviewer}" if lift.reviewer else ""
        self._say(f"[{lift.stream_id} t={lift.media_ts:.1f}s] LIFT {lift.intervention_id} "
                  f"({lift.reason}{who}): {lift.detail}")
        removed: list[str] = []
        for effect in lift.effects:
            holders = controls.held.get(effect, set())
            holders.discard(lift.intervention_id)
            if effect == "notice":
                controls.notices.pop(lift.intervention_id, None)
            if effect != "observe" and not holders:
                self.actions.append((lift.stream_id, effect, "off"))
                self._say(f"  -> {EFFECTS.get(effect, ('', effect))[1]}")
            elif holders:
                self._say(f"  -> {effect} stays on: {len(holders)} other intervention(s) need it")
            removed.append(effect)
        return tuple(removed), f"removed {', '.join(removed) or 'nothing'}"

    async def run(self, max_messages: int | None = None) -> None:
        """Handle deliveries until the client ends (or after ``max_messages`` new ones)."""
        handled = 0
        async for received in self.client:
            if await self.handle(received):
                handled += 1
            if max_messages is not None and handled >= max_messages:
                await self.client.ping()  # everything reported has been recorded
                return


async def main_async(url: str, token: str, streams: list[str], max_messages: int | None) -> int:
    async with BackendClient(url, token) as client:
        try:
            await client.wait_connected()
        except AuthenticationError as exc:
            print(f"backend: {exc}", file=sys.stderr)
            return 1
        name = client.hello.get("backend") if client.hello else None
        print(f"connected to {url} as backend {name!r}", flush=True)
        for spec in streams:
            stream_id, _, source = spec.partition("=")
            reply = await client.send_control({"type": "stream.started", "stream_id": stream_id,
                                               "source": source})
            print(f"stream.started {stream_id}: {reply['type']}", flush=True)
        backend = ExampleBackend(client)
        try:
            await backend.run(max_messages)
        except AuthenticationError as exc:  # e.g. our token was revoked: reconnecting cannot help
            print(f"backend: {exc}", file=sys.stderr)
            return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="An example backend that applies livesafe interventions")
    parser.add_argument("url", help="gateway endpoint, e.g. ws://127.0.0.1:8765/v1/backend")
    parser.add_argument("--token", default=os.environ.get("LIVESAFE_TOKEN"),
                        help="this backend's token (default: $LIVESAFE_TOKEN)")
    parser.add_argument("--stream", action="append", default=[], metavar="ID=SOURCE",
                        help="announce a stream to monitor (repeatable)")
    parser.add_argument("--max-messages", type=int, default=None,
                        help="exit after handling this many new deliveries (for demos and tests)")
    args = parser.parse_args(argv)
    if not args.token:
        parser.error("--token (or LIVESAFE_TOKEN) is required")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(main_async(args.url, args.token, args.stream, args.max_messages))
    return 130


if __name__ == "__main__":
    raise SystemExit(main())
