"""The intervention ladder: turns a stream's risk into tiered interventions. Pure: no I/O, no clock.

Rules, all in media time:

* **Enter.** A category whose risk reaches a tier's ``enter`` threshold (possibly overridden per
  category, capped by the category's ``max_tier``) takes the stream up to that tier at once; severe
  categories may skip tiers.
* **Hysteresis and dwell.** The stream steps down only when no category holds the tier any more (risk
  below the tier's ``exit`` threshold) *and* it has been in the tier for ``min_dwell_s``.
* **Cooldown.** A tier is not issued to the same stream again within ``cooldown_s`` of its last issue,
  unless that issue was lifted meanwhile (the backend undid it, so re-entering must act again); the
  stream still moves into the tier, so the board shows it, but the backend is not spammed.
* **Escalation.** A category marked ``escalate`` that takes the stream to ``escalation.min_tier`` or
  above also asks for human review, at most once per ``escalation.cooldown_s`` per category.
* **Lifting.** A ``warn``, ``restrict`` or ``cut`` stays in force until it is lifted
  (:class:`~livesafe.core.events.InterventionLifted`): ``expired`` once its ``duration_s`` has run out,
  ``risk_fell`` when the stream steps down below its tier (not for ``cut``: a cut broadcast does not
  come back by itself), ``overturned`` by a reviewer. Each is lifted at most once; lifts take the next
  number of the stream's sequence, so interventions and lifts form one ordered sequence per stream.

Every intervention explains itself: the rule, the thresholds, the risk, and the signals it rests on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from livesafe.core.events import Intervention, InterventionLifted, make_id
from livesafe.core.policy import Policy
from livesafe.core.risk import StreamRisk


def intervention_id(stream_id: str, session: str, seq: int, policy_hash: str) -> str:
    """The idempotency key of a stream's ``seq``-th decision under a policy, in one session (broadcast) of
    the stream: a stream id that goes live again starts a new session, so its ids never repeat."""
    if not session:  # outside any session (``livesafe watch`` without one, unit tests)
        return make_id("iv", stream_id, str(seq), policy_hash)
    return make_id("iv", stream_id, session, str(seq), policy_hash)


#: Added to computed deadlines so that a tick at the deadline is past it despite float rounding.
DEADLINE_EPSILON = 1e-6


@dataclass(frozen=True, slots=True)
class TierChange:
    """The stream moved from one tier to another (-1 = below the lowest tier)."""

    stream_id: str
    media_ts: float
    before: int
    after: int
    category: str


class StreamLadder:
    """Ladder state of one stream."""

    def __init__(self, policy: Policy, stream_id: str, session: str = "") -> None:
        self.policy = policy
        self.stream_id = stream_id
        self.session = session
        self.tier = -1
        self.entered_at = 0.0
        self.seq = 0
        #: Interventions in force, by id, in issue order.
        self.active: dict[str, Intervention] = {}
        #: Per tier: when it was last issued and the id of that issue.
        self._last_issued: dict[int, tuple[float, str]] = {}
        self._last_escalated: dict[str, float] = {}
        self._lifted: set[str] = set()

    @property
    def tier_name(self) -> str:
        return self.policy.ladder.tiers[self.tier].name if self.tier >= 0 else "none"

    def target_for(self, category: str, level: float) -> int:
        """The highest tier this category's risk reaches on its own (-1 for none)."""
        top = self.policy.max_tier_index(category)
        for i in range(top, -1, -1):
            if level >= self.policy.enter_threshold(category, i):
                return i
        return -1

    def _holds(self, category: str, level: float) -> int:
        """The highest tier at or below the current one that this category still holds (exit threshold)."""
        top = min(self.tier, self.policy.max_tier_index(category))
        for i in range(top, -1, -1):
            if level >= self.policy.exit_threshold(category, i):
                return i
        return -1

    def update(
        self, risk: StreamRisk
    ) -> tuple[list[Intervention], TierChange | None, list[InterventionLifted]]:
        """Re-evaluate at ``risk.clock``: new interventions, the tier change if any, and lifts."""
        now = risk.clock
        lifted = [
            self._lift(iv, now, "expired", f"{iv.tier} ran its {iv.duration_s:g} s")
            for iv in list(self.active.values())
            if (end := iv.expires_at) is not None and now >= end
        ]
        levels = risk.levels()
        target, driver = -1, ""
        for category, level in levels.items():
            t = self.target_for(category, level)
            if t > target or (t == target and t >= 0 and level > levels.get(driver, -1.0)):
                target, driver = t, category
        out: list[Intervention] = []
        change: TierChange | None = None
        if target > self.tier:
            change = TierChange(self.stream_id, now, self.tier, target, driver)
            self.tier, self.entered_at = target, now
            last = self._last_issued.get(target)
            if last is None or now - last[0] >= self.policy.ladder.cooldown_s or last[1] in self._lifted:
                iv = self._intervention(risk, driver, levels[driver], target, escalate=False)
                self._last_issued[target] = (now, iv.intervention_id)
                out.append(iv)
                if iv.liftable:
                    self.active[iv.intervention_id] = iv
        elif target < self.tier and now - self.entered_at >= self.policy.ladder.min_dwell_s:
            hold = max((self._holds(c, lv) for c, lv in levels.items()), default=-1)
            new = max(hold, target)
            if new < self.tier:
                change = TierChange(self.stream_id, now, self.tier, new, driver)
                self.tier, self.entered_at = new, now
                below = self.policy.ladder.tiers[new].name if new >= 0 else "none"
                lifted.extend(
                    self._lift(iv, now, "risk_fell", f"risk fell: the stream stepped down to {below}")
                    for iv in reversed(list(self.active.values()))
                    if iv.tier_level > new and iv.action != "cut"
                )
        out.extend(self._escalations(risk, levels))
        return out, change, lifted

    def overturn(
        self, intervention_id: str, media_ts: float, reviewer: str = "", note: str = ""
    ) -> InterventionLifted:
        """A reviewer overturned an intervention in force: lift it. ValueError if it is not in force."""
        iv = self.active.get(intervention_id)
        if iv is None:
            lifted = intervention_id in self._lifted
            why = "was already lifted" if lifted else "is not in force on this stream"
            raise ValueError(f"intervention {intervention_id!r} {why}")
        detail = f"overturned by {reviewer or 'a reviewer'}" + (f": {note}" if note else "")
        return self._lift(iv, media_ts, "overturned", detail, reviewer=reviewer, note=note)

    def _lift(
        self, iv: Intervention, now: float, reason: str, detail: str, *, reviewer: str = "", note: str = ""
    ) -> InterventionLifted:
        del self.active[iv.intervention_id]
        self._lifted.add(iv.intervention_id)
        self.seq += 1
        return InterventionLifted(
            stream_id=self.stream_id,
            media_ts=now,
            lift_id=make_id("lf", iv.intervention_id),
            intervention_id=iv.intervention_id,
            seq=self.seq,
            reason=reason,
            action=iv.action,
            tier=iv.tier,
            category=iv.category,
            effects=iv.effects,
            policy=iv.policy,
            policy_hash=iv.policy_hash,
            detail=detail,
            reviewer=reviewer,
            note=note,
            session=self.session,
        )

    def _escalations(self, risk: StreamRisk, levels: dict[str, float]) -> list[Intervention]:
        esc = self.policy.ladder.escalation
        min_tier = self.policy.ladder.index(esc.min_tier)
        out = []
        for category, level in levels.items():
            cat = self.policy.categories[category]
            if not cat.escalate or self.target_for(category, level) < min_tier:
                continue
            last = self._last_escalated.get(category)
            if last is not None and risk.clock - last < esc.cooldown_s:
                continue
            self._last_escalated[category] = risk.clock
            out.append(self._intervention(risk, category, level, self.tier, escalate=True))
        return out

    def next_deadline(self, risk: StreamRisk) -> float | None:
        """The media time at which, with no new signals, the stream could step down or an intervention
        expire (None: nothing pending)."""
        expiries = [end for iv in self.active.values() if (end := iv.expires_at) is not None]
        expiry = min(expiries, default=math.inf)
        if self.tier < 0:
            return expiry + DEADLINE_EPSILON if math.isfinite(expiry) else None
        # Only categories that can hold the current tier block stepping down from it.
        below = max(
            (
                risk.time_below(c, self.policy.exit_threshold(c, self.tier))
                for c in risk.levels()
                if self.policy.max_tier_index(c) >= self.tier
            ),
            default=risk.clock,
        )
        deadline = min(max(below, self.entered_at + self.policy.ladder.min_dwell_s), expiry)
        return deadline + DEADLINE_EPSILON if math.isfinite(deadline) else None

    def _intervention(
        self, risk: StreamRisk, category: str, level: float, tier_index: int, *, escalate: bool
    ) -> Intervention:
        policy = self.policy
        tier = policy.ladder.tiers[tier_index]
        cat = policy.categories[category]
        refs = risk.recent(category)
        self.seq += 1
        enter = policy.enter_threshold(category, tier_index)
        rule: dict[str, object] = {
            "rule": "ladder.escalation" if escalate else "ladder.enter",
            "tier": tier.name,
            "category": category,
            "risk": round(level, 6),
            "enter": enter,
            "exit": policy.exit_threshold(category, tier_index),
            "weight": cat.weight,
            "half_life_s": cat.half_life_s,
            "floor": cat.floor,
            "cooldown_s": policy.ladder.escalation.cooldown_s if escalate else policy.ladder.cooldown_s,
            "min_dwell_s": policy.ladder.min_dwell_s,
        }
        start = min((r.media_ts for r in refs), default=risk.clock)
        end = max((r.end_ts for r in refs), default=risk.clock)
        excerpt = next((r.excerpt for r in reversed(refs) if r.excerpt), "")
        thumbnail = next((r.thumbnail for r in reversed(refs) if r.thumbnail), "")
        span = f"{len(refs)} signal(s) at {start:.1f}-{end:.1f}s"
        effects: tuple[str, ...]
        if escalate:
            action, tier_label, effects = "escalate", "escalate", ("human_review",)
            reason = (f"{category} risk {level:.2f} took the stream to {tier.name}; "
                      f"{category} requires human review ({span})")
        else:
            action, tier_label, effects = tier.kind, tier.name, policy.effects_for(category, tier_index)
            reason = f"{category} risk {level:.2f} >= {tier.name} threshold {enter:.2f} ({span})"
        if excerpt:
            reason += f': "{excerpt[:120]}"'
        return Intervention(
            stream_id=self.stream_id,
            media_ts=risk.clock,
            intervention_id=intervention_id(self.stream_id, self.session, self.seq, policy.hash),
            seq=self.seq,
            action=action,
            tier=tier_label,
            tier_level=tier_index,
            category=category,
            score=round(level, 6),
            effects=effects,
            reason=reason,
            policy=policy.name,
            policy_hash=policy.hash,
            rule=rule,
            signal_ids=tuple(r.signal_id for r in refs),
            evidence_start=start,
            evidence_end=end,
            excerpt=excerpt,
            message=tier.message if not escalate else "",
            duration_s=tier.duration_s if not escalate else 0.0,
            thumbnail=thumbnail,
            session=self.session,
        )
