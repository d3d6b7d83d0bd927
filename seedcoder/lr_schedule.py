"""Learning-rate schedules: linear warmup, then constant, cosine, WSD or step-wise.

    schedule = LRSchedule("step", lr=3e-4, total_steps=10_000, warmup_steps=500,
                          milestones=[0.8, 0.9], factors=[10 ** -0.5, 0.1])      # Seed-Coder: 3e-4 -> 3e-4/sqrt(10) -> 3e-5
    for step in range(1, total_steps + 1):
        set_lr(optimizer, schedule(step))

`schedule(step)` is the learning rate of optimizer step `step` (1-based: the first update is step 1). It is a
pure function of the step, so a resumed run needs nothing but the step to continue the same curve; the
checkpoint stores `state_dict()` (the schedule's settings and step) to record what ran.

Shapes after warmup (warmup: lr * step / warmup_steps, so the first update is not zero):
  constant  lr
  cosine    from lr down to lr * min_lr_ratio at total_steps (half a cosine)
  wsd       lr until the last decay_fraction of the steps, then linearly down to lr * min_lr_ratio
  step      lr * factors[i] from step milestones[i] * total_steps on (milestones are fractions of total_steps)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

KINDS = ("constant", "cosine", "wsd", "step")


class LRSchedule:
    def __init__(
        self,
        kind: str,
        *,
        lr: float,
        total_steps: int,
        warmup_steps: int = 0,
        min_lr_ratio: float = 0.1,
        decay_fraction: float = 0.2,
        milestones: Sequence[float] = (),
        factors: Sequence[float] = (),
    ):
        if kind not in KINDS:
            raise ValueError(f"schedule kind must be one of {', '.join(KINDS)}, got {kind!r}")
        if not lr > 0 or total_steps < 1 or warmup_steps < 0:
            raise ValueError(f"need lr > 0, total_steps >= 1, warmup_steps >= 0; got {lr}, {total_steps}, {warmup_steps}")
        if len(milestones) != len(factors):
            raise ValueError(f"{len(milestones)} milestones but {len(factors)} factors")
        if kind == "step" and not milestones:
            raise ValueError("a step schedule needs milestones and factors")
        self.kind, self.lr, self.total_steps, self.warmup_steps = kind, float(lr), int(total_steps), int(warmup_steps)
        self.min_lr_ratio, self.decay_fraction = float(min_lr_ratio), float(decay_fraction)
        self.milestones, self.factors = [float(m) for m in milestones], [float(f) for f in factors]
        # step schedules switch at whole steps: the first step at or after the fraction
        self.milestone_steps = [math.ceil(m * self.total_steps) for m in self.milestones]

    def __call__(self, step: int) -> float:
        if self.warmup_steps and step <= self.warmup_steps:
            return self.lr * step / self.warmup_steps
        min_lr = self.lr * self.min_lr_ratio
        if self.kind == "constant":
            return self.lr
        if self.kind == "cosine":
            span = max(1, self.total_steps - self.warmup_steps)
            progress = min(1.0, (step - self.warmup_steps) / span)
            return min_lr + 0.5 * (self.lr - min_lr) * (1.0 + math.cos(math.pi * progress))
        if self.kind == "wsd":
            decay_steps = max(1, round(self.decay_fraction * self.total_steps))
            decay_start = self.total_steps - decay_steps
            if step <= decay_start:
                return self.lr
            progress = min(1.0, (step - decay_start) / decay_steps)
            return self.lr + (min_lr - self.lr) * progress
        factor = 1.0
        for milestone, value in zip(self.milestone_steps, self.factors):
            if step >= milestone:
                factor = value
        return self.lr * factor

    def state_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "lr": self.lr,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "min_lr_ratio": self.min_lr_ratio,
            "decay_fraction": self.decay_fraction,
            "milestones": list(self.milestones),
            "factors": list(self.factors),
        }

    @classmethod
    def from_config(cls, schedule, *, lr: float, total_steps: int) -> LRSchedule:
        """From a `seedcoder.train_config.ScheduleSection`."""
        return cls(
            schedule.kind,
            lr=lr,
            total_steps=total_steps,
            warmup_steps=schedule.warmup_steps,
            min_lr_ratio=schedule.min_lr_ratio,
            decay_fraction=schedule.decay_fraction,
            milestones=schedule.milestones,
            factors=schedule.factors,
        )


__all__ = ["KINDS", "LRSchedule"]
