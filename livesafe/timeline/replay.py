"""Replay a recorded session through a fresh core and compare its decisions with the recorded ones (pure).

The inputs of the core are the session's signals, ticks and reviewers' verdicts, in the order recorded;
its outputs are risk updates, interventions and lifts. Fed to a new :class:`~livesafe.core.monitor.Monitor`
under the recorded policy and session, the inputs give back every recorded output, byte for byte (exact
JSON: the timeline stores floats exactly), because the core takes time only from the inputs' media times.
A candidate policy replayed the same way answers "what would it have done?".
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from livesafe.core.events import (
    Event,
    Intervention,
    InterventionLifted,
    ReviewVerdict,
    RiskUpdate,
    Signal,
    Tick,
)
from livesafe.core.monitor import Monitor
from livesafe.core.policy import Policy
from livesafe.timeline.entries import DECISIONS, INPUTS, Record, SessionStart, dumps

Decision = RiskUpdate | Intervention | InterventionLifted


def replay(policy: Policy, stream_id: str, session: str, inputs: Iterable[Event]) -> list[Decision]:
    """Feed ``inputs`` (signals, ticks, verdicts; anything else is ignored) to a fresh core opened for the
    session; returns what it decided, in the order the live worker records it: after a signal its risk
    update, lifts and interventions; after a tick its lifts and interventions; after a verdict its lift."""
    monitor = Monitor(policy)
    monitor.open(stream_id, session)
    out: list[Decision] = []
    for event in inputs:
        if isinstance(event, Signal):
            decision = monitor.step(event)
            out += [decision.risk, *decision.lifted, *decision.interventions]
        elif isinstance(event, Tick):
            decision = monitor.tick(event.stream_id, event.media_ts)
            out += [*decision.lifted, *decision.interventions]
        elif isinstance(event, ReviewVerdict):
            out += monitor.review(event)
    return out


@dataclass(frozen=True, slots=True)
class Mismatch:
    """The first place where a replay and the record differ (index among decisions)."""

    index: int
    recorded: str
    replayed: str


@dataclass(frozen=True, slots=True)
class ReplayReport:
    """How a replay compares with the record."""

    inputs: int
    recorded: int
    replayed: int
    mismatches: tuple[Mismatch, ...] = field(default=())

    @property
    def exact(self) -> bool:
        return not self.mismatches and self.recorded == self.replayed

    def summary(self) -> str:
        if self.exact:
            return (f"exact: {self.inputs} recorded inputs replayed to the {self.recorded} recorded "
                    "decisions, byte for byte")
        first = self.mismatches[0] if self.mismatches else None
        where = (f"; first difference at decision {first.index}:\n  recorded {first.recorded}\n"
                 f"  replayed {first.replayed}") if first else ""
        return (f"DIFFERENT: {self.inputs} inputs, {self.recorded} decisions recorded, {self.replayed} "
                f"replayed, {len(self.mismatches)} differ{where}")


def verify(policy: Policy, records: Sequence[Record], *, max_mismatches: int = 20) -> ReplayReport:
    """Replay a session's records (from :meth:`TimelineStore.read_all`) under ``policy`` and compare each
    decision with the recorded one as exact JSON. The session is the one the records' start names."""
    start = next((r for r in records if isinstance(r, SessionStart)), None)
    if start is None:
        raise ValueError("the records hold no session.start: not a whole session")
    inputs = [r for r in records if r.type in INPUTS]
    recorded = [dumps(r) for r in records if r.type in DECISIONS]
    replayed = [dumps(d) for d in replay(policy, start.stream_id, start.session, inputs)]  # type: ignore[arg-type]
    mismatches = []
    for i in range(max(len(recorded), len(replayed))):
        a = recorded[i] if i < len(recorded) else "(nothing)"
        b = replayed[i] if i < len(replayed) else "(nothing)"
        if a != b:
            mismatches.append(Mismatch(i, a, b))
            if len(mismatches) >= max_mismatches:
                break
    return ReplayReport(len(inputs), len(recorded), len(replayed), tuple(mismatches))


def decisions_json(decisions: Iterable[Decision]) -> list[str]:
    """Decisions as exact JSON strings (for golden files and diffs)."""
    return [json.dumps(json.loads(dumps(d)), sort_keys=True) for d in decisions]
