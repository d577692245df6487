"""Invariants of the pure core, checked with Hypothesis on random signal timelines."""

from __future__ import annotations

from collections import defaultdict

from hypothesis import given, settings
from hypothesis import strategies as st

from livesafe.core.events import Intervention, InterventionLifted, ReviewVerdict, Signal, to_dict
from livesafe.core.monitor import Monitor
from livesafe.core.policy import load_policy

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


Output = list[Intervention | InterventionLifted]


def drive(signals: list[Signal], overturn_every: int = 0) -> Output:
    """As a live worker drives the core: ticks at every deadline before each signal and after the last,
    and (every ``overturn_every``-th signal) a reviewer overturning the oldest intervention in force."""
    monitor = Monitor(POLICY)
    out: Output = []

    def tick_until(stream: str, until: float) -> None:
        while (d := monitor.next_deadline(stream)) is not None and d <= until:
            decision = monitor.tick(stream, d)
            out.extend([*decision.lifted, *decision.interventions])

    for n, s in enumerate(signals, 1):
        tick_until(s.stream_id, s.media_ts)
        decision = monitor.step(s)
        out.extend([*decision.lifted, *decision.interventions])
        if overturn_every and n % overturn_every == 0 and (active := monitor.active(s.stream_id)):
            verdict = ReviewVerdict(s.stream_id, s.media_ts, active[0].intervention_id, "overturn", "rev")
            out.extend(monitor.review(verdict))
    for stream in {s.stream_id for s in signals}:
        tick_until(stream, float("inf"))
    return out


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
    last: dict[tuple[str, str, str], Intervention] = {}
    lifted: set[str] = set()
    for x in drive(signals):
        if isinstance(x, InterventionLifted):
            lifted.add(x.intervention_id)
            continue
        if x.action == "escalate":
            key, gap = (x.stream_id, "escalate", x.category), POLICY.ladder.escalation.cooldown_s
        else:
            key, gap = (x.stream_id, x.tier, ""), POLICY.ladder.cooldown_s
        if key in last and last[key].intervention_id not in lifted:
            assert x.media_ts - last[key].media_ts >= gap
        last[key] = x


@given(timelines(), st.integers(0, 5))
def test_every_intervention_is_justified(signals: list[Signal], overturn_every: int) -> None:
    seqs: dict[str, list[int]] = defaultdict(list)
    for iv in drive(signals, overturn_every):
        seqs[iv.stream_id].append(iv.seq)  # interventions and lifts share one sequence per stream
        if isinstance(iv, InterventionLifted):
            continue
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
    # With no more signals, ticking at each deadline walks the ladder down to nothing (or lifts an
    # intervention whose duration ran out), and only a cut stays in force.
    for _ in range(len(POLICY.ladder.tiers) + len(monitor.active("a")) + 1):
        deadline = monitor.next_deadline("a")
        if deadline is None:
            break
        before = monitor.tier("a")
        decision = monitor.tick("a", deadline)
        change = decision.tier_change
        stepped = change is not None and change.after < change.before
        assert stepped or decision.lifted, (before, deadline)
    assert monitor.next_deadline("a") is None and monitor.tier("a") == "none"
    assert {iv.action for iv in monitor.active("a")} <= {"cut"}


@given(timelines(), st.integers(0, 5))
def test_lifts_refer_to_earlier_interventions_of_their_stream_once(
    signals: list[Signal], overturn_every: int
) -> None:
    out = drive(signals, overturn_every)
    issued: dict[str, Intervention] = {}
    lifted: set[str] = set()
    for x in out:
        if isinstance(x, Intervention):
            issued[x.intervention_id] = x
            continue
        iv = issued.get(x.intervention_id)
        assert iv is not None, "a lift must follow the intervention it lifts"
        assert iv.stream_id == x.stream_id and iv.liftable
        assert x.intervention_id not in lifted, "lifted twice"
        lifted.add(x.intervention_id)
        assert x.media_ts >= iv.media_ts and x.seq > iv.seq
        assert (x.action, x.tier, x.category, x.effects) == (iv.action, iv.tier, iv.category, iv.effects)
        if x.reason == "expired":
            assert iv.expires_at is not None and x.media_ts >= iv.expires_at
        elif x.reason == "risk_fell":
            assert iv.action != "cut"
        else:
            assert x.reason == "overturned" and overturn_every


@given(timelines(), st.integers(0, 5))
def test_replay_equals_live_with_lifts(signals: list[Signal], overturn_every: int) -> None:
    assert [to_dict(x) for x in drive(signals, overturn_every)] == [
        to_dict(x) for x in drive(signals, overturn_every)
    ]


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
