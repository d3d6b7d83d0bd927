"""What the post-training command lines (DPO, GRPO) share besides the policy: the [output] section, the reward
choice, their problem files, and the toy task used when no problems file is given. Their configs are dataclass
sections read by `seedcoder.config.load_sections` (TOML, `--section.key=value`), like every other stage's.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from seedcoder.config import ConfigError

REWARDS = ("unit_tests", "prefix")  # [data] reward: tests run in the sandbox, or the toy task's prefix match


def check_reward(reward: str) -> None:
    if reward not in REWARDS:
        raise ValueError(f"reward: expected one of {', '.join(map(repr, REWARDS))}, got {reward!r}")


@dataclass
class OutputSection:
    """[output] of DPO and GRPO."""

    dir: str = "runs/posttrain"  # metrics.jsonl, checkpoints/ (and DPO's pairs.jsonl)
    checkpoint_every: int = 0  # steps between checkpoints (0: only at the end); a rerun resumes from the newest

    def __post_init__(self) -> None:
        if not self.dir:
            raise ValueError("dir: must not be empty")
        if self.checkpoint_every < 0:
            raise ValueError(f"checkpoint_every: must be >= 0, got {self.checkpoint_every}")


def read_input(key: str, path: str, read: Callable[[str], Any]) -> Any:
    """`read(path)` for the file named by config key `key`; a missing or malformed file is a ConfigError naming both."""
    try:
        return read(path)
    except (OSError, ValueError) as error:  # ValueError: json.JSONDecodeError, or the reader's own checks
        raise ConfigError(f"config key {key!r} ({path}): {error}") from None


def read_problems(path: str) -> list[dict]:
    """Problems from a JSONL file: one {"id", "prompt", "tests" | "answer", optional "prefix"} object per line."""
    problems = []
    with open(path, encoding="utf-8") as file:
        for line_no, line in enumerate(file, 1):
            if line.strip():
                record = json.loads(line)
                if not isinstance(record, dict) or "prompt" not in record:
                    raise ValueError(f"{path}:{line_no}: expected an object with 'prompt'")
                problems.append(record)
    if not problems:
        raise ValueError(f"{path}: no problems")
    return problems


def toy_problems(digits: str = "0123456789") -> list[dict]:
    """The toy verifiable task: {"id": d, "prompt": "Write d", "answer": d}; rewards.prefix_reward_fn scores it."""
    return [{"id": d, "prompt": f"Write {d}", "answer": d} for d in digits]


__all__ = ["REWARDS", "OutputSection", "check_reward", "read_input", "read_problems", "toy_problems"]
