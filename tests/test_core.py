"""The pure core on hand-written timelines: what a policy team would check by reading the policy."""

from __future__ import annotations

import dataclasses

import pytest

from livesafe.core.events import (
    Intervention,
    InterventionLifted,
    ReviewVerdict,
    Signal,
    from_dict,
    make_id,
    to_dict,
)
from livesafe.core.monitor import Monitor
from livesafe.core.policy import Policy, load_policy


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy()


def sig(
    ts: float, category: str = "threat", score: float = 0.9, stream: str = "s1", text: str = ""
) -> Signal:
    return Signal(stream, ts, category, score, "test", end_ts=ts + 1.0,
                  evidence={"text": text} if text else {})


def run(policy: Policy, signals: list[Signal]) -> list[Intervention]:
    monitor = Monitor(policy)
    return [iv for s in signals for iv in monitor.feed(s)]


def test_one_noisy_frame_does_not_cut(policy: Policy) -> None:
    out = run(policy, [sig(5.0, "nudity", 0.99)])
    assert all(iv.action == "observe" for iv in out)


def test_persistent_nudity_escalates_to_cut(policy: Policy) -> None:
    out = run(policy, [sig(float(t), "nudity", 0.97) for t in range(30)])
    actions = [iv.action for iv in out if iv.action != "escalate"]
    assert actions == ["observe", "warn", "restrict", "cut"]
    restrict = next(iv for iv in out if iv.action == "restrict")
    assert restrict.effects == ("blur", "age_gate")
    assert any(iv.action == "escalate" for iv in out)


def test_spoken_threats_escalate_with_explanation(policy: Policy) -> None:
    text = "I know where you live. I am going to find you and kill you."
    out = run(policy, [sig(12.0, text=text), sig(20.0), sig(30.0)])
    first = out[0]
    assert first.action == "warn" and first.media_ts == 12.0
    assert first.category == "threat" and first.excerpt == text
    assert first.rule["rule"] == "ladder.enter" and first.rule["enter"] == 0.5
    assert "threat risk" in first.reason and text[:20] in first.reason
    assert first.signal_ids == (sig(12.0).signal_id,)
    assert first.policy == "default" and first.policy_hash == policy.hash
    assert [iv.action for iv in out] == ["warn", "restrict", "escalate", "cut"]
    assert [iv.seq for iv in out] == [1, 2, 3, 4]
    assert len({iv.intervention_id for iv in out}) == 4


def test_below_floor_adds_no_evidence(policy: Policy) -> None:
    assert run(policy, [sig(float(t), "threat", 0.39) for t in range(100)]) == []


def test_unknown_category_is_ignored(policy: Policy) -> None:
    assert run(policy, [sig(1.0, "gambling", 1.0)]) == []


def test_max_tier_caps_a_category(policy: Policy) -> None:
    out = run(policy, [sig(float(t), "profanity", 1.0) for t in range(0, 200, 2)])
    assert max(iv.tier_level for iv in out) == policy.ladder.index("restrict")
    assert out[-1].effects == ("mute",)


def test_severe_category_skips_tiers(policy: Policy) -> None:
    out = run(policy, [sig(3.0, "self_harm", 0.9)])
    assert [iv.action for iv in out] == ["restrict", "escalate"]


def test_steps_down_after_decay_and_dwell_lifts_then_reentry_acts_again(policy: Policy) -> None:
    policy = dataclasses.replace(policy, ladder=dataclasses.replace(policy.ladder, cooldown_s=600.0))
    monitor = Monitor(policy)
    [warn] = monitor.feed(sig(10.0))
    assert warn.action == "warn" and monitor.active("s1") == (warn,)
    deadline = monitor.next_deadline("s1")
    assert deadline is not None and deadline > 10.0 + policy.ladder.min_dwell_s
    # Nothing changes just before the deadline, the tier drops at it and the warning is lifted.
    early = monitor.tick("s1", deadline - 0.01)
    assert early.tier_change is None and early.lifted == ()
    step = monitor.tick("s1", deadline)
    assert step.tier_change is not None and step.tier_change.before == 1 and step.tier_change.after < 1
    [lift] = step.lifted
    assert (lift.intervention_id, lift.reason, lift.seq, lift.media_ts) == (
        warn.intervention_id, "risk_fell", 2, deadline)
    assert lift.effects == warn.effects and monitor.active("s1") == ()
    # Back up to warn within the cooldown: the warning was lifted, so it is issued again.
    out = monitor.feed(sig(deadline + 1.0, score=0.45))
    assert monitor.tier("s1") == "warn"
    assert [(iv.action, iv.seq) for iv in out] == [("warn", 3)]


def test_cooldown_suppresses_a_tier_that_was_not_lifted(policy: Policy) -> None:
    policy = dataclasses.replace(policy, ladder=dataclasses.replace(policy.ladder, cooldown_s=600.0))
    monitor = Monitor(policy)
    assert [iv.action for iv in monitor.feed(sig(10.0, score=0.45))] == ["observe"]
    while (d := monitor.next_deadline("s1")) is not None:
        assert monitor.tick("s1", d).lifted == ()  # observe is board-only: nothing to lift
    assert monitor.tier("s1") == "none"
    assert monitor.feed(sig(100.0, score=0.45)) == []  # within the cooldown: entered, not issued
    assert monitor.tier("s1") == "observe"
    while (d := monitor.next_deadline("s1")) is not None:
        monitor.tick("s1", d)
    assert [iv.action for iv in monitor.feed(sig(10.0 + 600.0, score=0.45))] == ["observe"]


def test_restriction_expires_after_its_duration(policy: Policy) -> None:
    tiers = tuple(dataclasses.replace(t, duration_s=30.0) if t.kind == "restrict" else t
                  for t in policy.ladder.tiers)
    policy = dataclasses.replace(policy, ladder=dataclasses.replace(policy.ladder, tiers=tiers))
    monitor = Monitor(policy)
    restrict, escalate = monitor.feed(sig(3.0, "self_harm", 0.9))
    assert (restrict.action, escalate.action) == ("restrict", "escalate")
    assert restrict.expires_at == 33.0 and escalate.expires_at is None
    assert monitor.active("s1") == (restrict,)  # a review request is not an effect in force
    deadline = monitor.next_deadline("s1")
    assert deadline is not None and 33.0 <= deadline < 33.001
    assert monitor.tick("s1", 32.9).lifted == ()
    decision = monitor.tick("s1", deadline)
    [lift] = decision.lifted
    assert (lift.intervention_id, lift.reason, lift.seq) == (restrict.intervention_id, "expired", 3)
    assert decision.tier_change is None and monitor.tier("s1") == "restrict"
    assert monitor.active("s1") == ()


def test_cut_is_not_lifted_by_falling_risk_but_can_be_overturned(policy: Policy) -> None:
    monitor = Monitor(policy)
    out = [iv for s in (sig(12.0), sig(20.0), sig(30.0)) for iv in monitor.feed(s)]
    assert [iv.action for iv in out] == ["warn", "restrict", "escalate", "cut"]
    lifts: list[InterventionLifted] = []
    while (d := monitor.next_deadline("s1")) is not None:
        lifts.extend(monitor.tick("s1", d).lifted)
    assert monitor.tier("s1") == "none"
    warn, restrict, _, cut = out
    assert [(x.intervention_id, x.reason) for x in lifts] == [
        (restrict.intervention_id, "risk_fell"), (warn.intervention_id, "risk_fell")]
    assert monitor.active("s1") == (cut,)
    verdict = ReviewVerdict("s1", 0.0, cut.intervention_id, "overturn", reviewer="ana", note="a film quote")
    [lift] = monitor.review(verdict)
    assert (lift.reason, lift.reviewer, lift.note) == ("overturned", "ana", "a film quote")
    assert lift.action == "cut"
    assert lift.media_ts == monitor.clock("s1") and lift.seq == 7
    assert lift.lift_id == make_id("lf", cut.intervention_id)
    with pytest.raises(ValueError, match="already lifted"):
        monitor.review(verdict)
    assert monitor.review(dataclasses.replace(verdict, verdict="uphold")) == ()


@pytest.mark.parametrize(
    ("verdict", "reason"),
    [
        (ReviewVerdict("s1", 1.0, "iv_nope", "overturn"), "not in force"),
        (ReviewVerdict("s9", 1.0, "iv_nope", "overturn"), "no interventions in force"),
        (ReviewVerdict("s1", 1.0, "iv_nope", "shrug"), "unknown verdict"),
    ],
)
def test_bad_verdicts_are_refused(policy: Policy, verdict: ReviewVerdict, reason: str) -> None:
    monitor = Monitor(policy)
    monitor.feed(sig(1.0))
    with pytest.raises(ValueError, match=reason):
        monitor.review(verdict)


def test_streams_are_independent(policy: Policy) -> None:
    monitor = Monitor(policy)
    monitor.feed(sig(1.0, stream="a"))
    assert monitor.tier("a") == "warn" and monitor.tier("b") == "none"
    assert monitor.feed(sig(2.0, "threat", 0.1, stream="b")) == []


def test_out_of_order_signal_counts_decayed(policy: Policy) -> None:
    m1, m2 = Monitor(policy), Monitor(policy)
    m1.feed(sig(100.0, "hate", 0.1))
    m1.feed(sig(10.0, "threat", 0.9))
    m2.feed(sig(10.0, "threat", 0.9))
    assert m1.levels("s1")["threat"] < m2.levels("s1")["threat"]


def test_interventions_round_trip_through_json(policy: Policy) -> None:
    for iv in run(policy, [sig(1.0, text="kill"), sig(2.0), sig(3.0)]):
        back = from_dict(to_dict(iv))
        assert isinstance(back, Intervention)
        assert to_dict(back) == to_dict(iv)
        assert dataclasses.replace(back, rule=iv.rule) == iv


def test_lifts_round_trip_through_json(policy: Policy) -> None:
    monitor = Monitor(policy)
    [warn] = monitor.feed(sig(1.0))
    [lift] = monitor.review(ReviewVerdict("s1", 1.0, warn.intervention_id, "overturn", "ana"))
    back = from_dict(to_dict(lift))
    assert isinstance(back, InterventionLifted) and back == lift
    assert to_dict(lift)["type"] == "intervention.lifted"


def test_evidence_cites_a_frame_reference(policy: Policy) -> None:
    frame = Signal("s1", 4.0, "nudity", 0.99, "nsfw", evidence={"frame": 4})
    frames = [dataclasses.replace(frame, media_ts=float(t), evidence={"frame": t}) for t in range(9)]
    out = run(policy, frames)
    assert out and out[-1].thumbnail == "frame:8"
