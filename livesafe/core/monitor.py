"""The pure decision core: signals in, risk and interventions out. No I/O, no clock.

``Monitor.feed(signal)`` returns the interventions that signal causes; time comes only from the signal's
media timestamp. Feeding the same sequence of signals (and ticks, and reviewers' verdicts) to a monitor
with the same policy always gives the same interventions and lifts, byte for byte: live monitoring and
replay share this code.
"""

from __future__ import annotations

from dataclasses import dataclass

from livesafe.core.events import Intervention, InterventionLifted, ReviewVerdict, RiskUpdate, Signal
from livesafe.core.ladder import StreamLadder, TierChange
from livesafe.core.policy import Policy
from livesafe.core.risk import StreamRisk


@dataclass(frozen=True, slots=True)
class Decision:
    """What one signal (or tick) did: the risk afterwards, new interventions, any tier change, and the
    interventions whose effects ended (``lifted``, decided before the new interventions)."""

    risk: RiskUpdate
    interventions: tuple[Intervention, ...]
    tier_change: TierChange | None = None
    lifted: tuple[InterventionLifted, ...] = ()


class Monitor:
    """Risk engine and ladder for any number of streams under one policy."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self._streams: dict[str, tuple[StreamRisk, StreamLadder]] = {}

    def open(self, stream_id: str, session: str = "") -> None:
        """Start a session (one broadcast) of ``stream_id`` with fresh state: risk at zero, the ladder at no
        tier, the sequence at 0. Its interventions carry ``session`` and ids that depend on it, so a stream id
        that goes live again never repeats an earlier broadcast's ids. Any state of the stream is dropped."""
        self._streams[stream_id] = (
            StreamRisk(self.policy, stream_id), StreamLadder(self.policy, stream_id, session)
        )

    def session(self, stream_id: str) -> str:
        """The stream's current session ("" if none was opened)."""
        state = self._streams.get(stream_id)
        return state[1].session if state is not None else ""

    def _state(self, stream_id: str) -> tuple[StreamRisk, StreamLadder]:
        state = self._streams.get(stream_id)
        if state is None:  # a stream fed without open(): a session without a name
            self.open(stream_id)
            state = self._streams[stream_id]
        return state

    def step(self, signal: Signal) -> Decision:
        risk, ladder = self._state(signal.stream_id)
        risk.add(signal)
        interventions, change, lifted = ladder.update(risk)
        return Decision(
            self._risk_update(risk, ladder, signal.category), tuple(interventions), change, tuple(lifted)
        )

    def feed(self, signal: Signal) -> list[Intervention]:
        """Account for one signal; returns the interventions it causes (often none)."""
        return list(self.step(signal).interventions)

    def tick(self, stream_id: str, media_ts: float) -> Decision:
        """Advance a stream's media clock without a signal (lets decayed risk step the ladder down)."""
        risk, ladder = self._state(stream_id)
        risk.advance(media_ts)
        interventions, change, lifted = ladder.update(risk)
        category = change.category if change is not None else ""
        return Decision(
            self._risk_update(risk, ladder, category), tuple(interventions), change, tuple(lifted)
        )

    def review(self, verdict: ReviewVerdict) -> tuple[InterventionLifted, ...]:
        """A reviewer's verdict: ``overturn`` lifts the intervention (at the later of the verdict's media
        time and the stream's clock); ``uphold`` changes nothing. ValueError naming the problem when the
        verdict is unknown or the intervention is not in force on that stream."""
        if verdict.verdict == "uphold":
            return ()
        if verdict.verdict != "overturn":
            raise ValueError(f"unknown verdict {verdict.verdict!r}; expected 'uphold' or 'overturn'")
        state = self._streams.get(verdict.stream_id)
        if state is None:
            raise ValueError(f"stream {verdict.stream_id!r} has no interventions in force")
        risk, ladder = state
        at = max(risk.clock, verdict.media_ts)
        return (ladder.overturn(verdict.intervention_id, at, verdict.reviewer, verdict.note),)

    def active(self, stream_id: str) -> tuple[Intervention, ...]:
        """The stream's interventions in force (not yet expired or lifted), in issue order."""
        state = self._streams.get(stream_id)
        return tuple(state[1].active.values()) if state is not None else ()

    def clock(self, stream_id: str) -> float:
        """The stream's media clock: the latest media time fed to it (0 for an unknown stream)."""
        state = self._streams.get(stream_id)
        return state[0].clock if state is not None else 0.0

    def next_deadline(self, stream_id: str) -> float | None:
        """Media time at which :meth:`tick` could change this stream's tier or lift an intervention
        (None: nothing pending)."""
        state = self._streams.get(stream_id)
        return state[1].next_deadline(state[0]) if state is not None else None

    def tier(self, stream_id: str) -> str:
        state = self._streams.get(stream_id)
        return state[1].tier_name if state is not None else "none"

    def levels(self, stream_id: str) -> dict[str, float]:
        state = self._streams.get(stream_id)
        return state[0].levels() if state is not None else {}

    def forget(self, stream_id: str) -> None:
        """Drop a stream's state (it ended)."""
        self._streams.pop(stream_id, None)

    @staticmethod
    def _risk_update(risk: StreamRisk, ladder: StreamLadder, category: str) -> RiskUpdate:
        return RiskUpdate(
            stream_id=risk.stream_id,
            media_ts=risk.clock,
            category=category,
            level=round(risk.level(category), 6) if category else 0.0,
            overall=round(risk.overall(), 6),
            tier=ladder.tier_name,
        )
