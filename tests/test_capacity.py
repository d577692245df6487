"""Capacity planning from declared analyzer costs."""

from __future__ import annotations

import pytest

from livesafe.analyzers.capacity import estimate
from livesafe.analyzers.registry import Analyzers
from livesafe.analyzers.vision import NudityAnalyzer
from livesafe.core.policy import SamplingPolicy


@pytest.mark.models
def test_estimate_follows_declared_costs_and_rates() -> None:
    nudity = NudityAnalyzer()
    analyzers = Analyzers(vision=[nudity])
    sampling = SamplingPolicy(video_fps=1.0, active_fps=4.0)
    load = estimate(sampling, analyzers, cores=2, target_utilisation=0.5, decode_s_per_s=0.01)
    assert load.parts == {"decode": 0.01, nudity.name: pytest.approx(nudity.cost.per_call_s)}
    assert load.per_stream_s == pytest.approx(0.01 + nudity.cost.per_call_s)
    assert load.per_stream_active_s == pytest.approx(0.01 + 4 * nudity.cost.per_call_s)
    assert load.streams == pytest.approx(1.0 / load.per_stream_s)
    assert not load.over(int(load.streams))
    assert load.over(int(load.streams) + 1)
    assert load.as_dict()["cores"] == 2
    fixed = estimate(SamplingPolicy(video_fps=1.0, adaptive=False, active_fps=4.0), analyzers, cores=2)
    assert fixed.per_stream_active_s == pytest.approx(fixed.per_stream_s)


def test_estimate_refuses_nonsense_assumptions() -> None:
    with pytest.raises(ValueError, match="voiced_fraction"):
        estimate(SamplingPolicy(), Analyzers(), voiced_fraction=2.0)
    with pytest.raises(ValueError, match="target_utilisation"):
        estimate(SamplingPolicy(), Analyzers(), target_utilisation=0.0)


def test_decode_allowance_follows_the_sampling_mode() -> None:
    from livesafe.analyzers.capacity import KEYFRAME_DECODE_S, SAMPLED_DECODE_S

    assert estimate(SamplingPolicy(keyframes_only=True), Analyzers()).parts["decode"] == KEYFRAME_DECODE_S
    assert estimate(SamplingPolicy(keyframes_only=False), Analyzers()).parts["decode"] == SAMPLED_DECODE_S


@pytest.mark.models
def test_an_analyzer_with_its_own_feed_is_planned_at_its_rate() -> None:
    from livesafe.analyzers.motion import MotionViolenceAnalyzer

    motion = MotionViolenceAnalyzer()
    load = estimate(SamplingPolicy(video_fps=1.0, keyframes_only=True), Analyzers(vision=[motion]))
    assert load.parts[motion.name] == pytest.approx(motion.cost.per_call_s * 8 + motion.cost.per_media_s)
    from livesafe.analyzers.capacity import FULL_DECODE_S

    assert load.parts["decode"] == FULL_DECODE_S  # motion needs every frame decoded
