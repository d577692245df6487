"""Invariants of the pure core, checked with Hypothesis on random signal timelines."""

from __future__ import annotations

from collections import defaultdict

from hypothesis import given, settings
from hypothesis import strategies as st

from livesafe.core import Monitor
from livesafe.events import Intervention, Signal, to_dict
from livesafe.policy import load_policy

POLICY = load_policy()
CATS = [*POLICY.categories, "unknown_category"]


@st.composite
def timelines(draw: st.DrawFn, streams: tuple[str, ...] = ("a", "b")) -> list[Signal]:
    n = draw(st.integers(0, 60))
    ts = 0.0
    out = []
    for _ in range(n):
        # Mostly forward in media time, sometimes a late signal (speech arrives after frames).
        ts += draw(st.floats(0.0, 40.0))
        late = draw(st.floats(0.0, 8.0)) if draw(st.booleans()) else 0.0
        out.append(Signal(
            stream_id=draw(st.sampled_from(streams)),
            media_ts=max(0.0, ts - late),
            category=draw(st.sampled_from(CATS)),
            score=draw(st.floats(0.0, 1.0)),
            analyzer="prop",
        ))
    return out


def feed_all(signals: list[Signal]) -> tuple[Monitor, list[Intervention]]:
    monitor = Monitor(POLICY)
    return monitor, [iv for s in signals for iv in monitor.feed(s)]


@given(timelines())
def test_same_input_same_output(signals: list[Signal]) -> None:
    _, a = feed_all(signals)
    _, b = feed_all(signals)
    assert [to_dict(i) for i in a] == [to_dict(i) for i in b]


@given(timelines())
def test_never_escalates_without_evidence(signals: list[Signal]) -> None:
    weak = [s for s in signals
            if (c := POLICY.category(s.category)) is None or s.score < c.floor]
    _, out = feed_all(weak)
    assert out == []


@given(timelines())
def test_cooldowns_hold(signals: list[Signal]) -> None:
    _, out = feed_all(signals)
    last: dict[tuple[str, str, str], float] = {}
    for iv in out:
        if iv.action == "escalate":
            key, gap = (iv.stream_id, "escalate", iv.category), POLICY.ladder.escalation.cooldown_s
        else:
            key, gap = (iv.stream_id, iv.tier, ""), POLICY.ladder.cooldown_s
        if key in last:
            assert iv.media_ts - last[key] >= gap
        last[key] = iv.media_ts


@given(timelines())
def test_every_intervention_is_justified(signals: list[Signal]) -> None:
    _, out = feed_all(signals)
    seqs: dict[str, list[int]] = defaultdict(list)
    for iv in out:
        seqs[iv.stream_id].append(iv.seq)
        assert iv.signal_ids, "an intervention must cite the signals it rests on"
        assert iv.policy_hash == POLICY.hash
        if iv.action != "escalate":
            assert iv.score >= POLICY.enter_threshold(iv.category, iv.tier_level) - 1e-6
            assert iv.tier_level <= POLICY.max_tier_index(iv.category)
        else:
            assert POLICY.categories[iv.category].escalate
    for numbers in seqs.values():
        assert numbers == list(range(1, len(numbers) + 1))


@given(timelines())
def test_streams_do_not_interfere(signals: list[Signal]) -> None:
    _, together = feed_all(signals)
    for stream in ("a", "b"):
        _, alone = feed_all([s for s in signals if s.stream_id == stream])
        assert [to_dict(i) for i in together if i.stream_id == stream] == [to_dict(i) for i in alone]


@given(timelines(streams=("a",)))
def test_steps_down_only_after_dwell_and_reaches_none_without_evidence(signals: list[Signal]) -> None:
    monitor = Monitor(POLICY)
    entered: float | None = None
    for s in signals:
        change = monitor.step(s).tier_change
        if change is not None:
            if change.after < change.before:
                assert entered is not None and change.media_ts - entered >= POLICY.ladder.min_dwell_s
            entered = change.media_ts
    # With no more signals, ticking at each deadline walks the ladder down to nothing.
    for _ in range(len(POLICY.ladder.tiers) + 1):
        deadline = monitor.next_deadline("a")
        if deadline is None:
            break
        before = monitor.tier("a")
        change = monitor.tick("a", deadline).tier_change
        assert change is not None and change.after < change.before, (before, deadline)
    assert monitor.next_deadline("a") is None and monitor.tier("a") == "none"


@settings(max_examples=50)
@given(timelines(streams=("a",)), st.floats(0.4, 1.0), st.sampled_from(sorted(POLICY.categories)))
def test_more_evidence_never_lowers_risk(signals: list[Signal], score: float, category: str) -> None:
    monitor = Monitor(POLICY)
    for s in signals:
        monitor.feed(s)
    clock = max((s.media_ts for s in signals), default=0.0)
    before = monitor.levels("a").get(category, 0.0)
    monitor.feed(Signal("a", clock, category, score, "prop"))
    after = monitor.levels("a")[category] if category in monitor.levels("a") else 0.0
    assert after >= before
    assert all(0.0 <= v < 1.0 for v in monitor.levels("a").values())
