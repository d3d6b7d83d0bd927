"""Rewards for DPO pair mining and GRPO: unit tests run in the sandbox, a format reward, and their combination.

    from seedcoder.posttrain.rewards import extract_code, format_reward, unit_test_rewards, combined_rewards
    unit_test_rewards([["```python\\ndef f(): return 1\\n```"]], ["assert f() == 1"])      # [[1.0]]
    combined_rewards(texts, tests, format_weight=0.1)        # correctness + 0.1 * format, per sample

Unit-test reward: the code of a completion (`extract_code`: the LAST fenced code block ```lang ... ``` in the
text, i.e. the final answer after any reasoning; when there is no closed fence, the whole completion), after the
problem's optional "prefix" (completion-style prompts) and followed by its test program, runs in
seedcoder.sandbox (`run_tests`, a pool of sandboxed processes); 1.0 when it exits 0 within the limits, else 0.0.
Completions are untrusted code and run nowhere else.

Format reward: 1.0 when the completion contains at least one closed fenced code block (``` ... ```) and, if
`answer_tag` is given (e.g. "answer"), its final answer inside <answer>...</answer>; else 0.0.

Combined: correctness + format_weight * format (default weight 0.1, so a correct program always outranks a
well-formatted wrong one). Reward functions for GRPO have the signature
`reward_fn(problems: list[dict], texts: list[list[str]]) -> list[list[float]]` (one list per prompt, one value
per sample): `make_unit_test_reward_fn` builds one from problems' "tests"; `prefix_reward_fn` is the toy task's
(a completion earns 1.0 when it starts with the problem's "answer" string, after leading whitespace).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from seedcoder.sandbox import Limits, SandboxJob, run_tests

FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+#.-]*)[ \t]*\n(.*?)```", re.DOTALL)
DEFAULT_LIMITS = Limits(cpu_s=5.0, wall_s=10.0)

RewardFn = Callable[[Sequence[dict], Sequence[Sequence[str]]], list[list[float]]]


def extract_code(text: str) -> str | None:
    """The body of the last closed fenced code block of text, or None when there is none."""
    if not isinstance(text, str):
        raise ValueError(f"text: expected a str, got {type(text).__name__}")
    blocks = FENCE.findall(text)
    return blocks[-1][1] if blocks else None


def format_reward(text: str, *, answer_tag: str | None = None) -> float:
    """1.0 when text holds a closed fenced code block (and, with answer_tag, a <tag>...</tag> answer), else 0.0."""
    if extract_code(text) is None:
        return 0.0
    if answer_tag is not None:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", answer_tag):
            raise ValueError(f"answer_tag: expected a tag name like 'answer', got {answer_tag!r}")
        if not re.search(rf"<{answer_tag}>.*?</{answer_tag}>", text, re.DOTALL):
            return 0.0
    return 1.0


def _check_groups(texts: Sequence[Sequence[str]], tests: Sequence[str]) -> None:
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise ValueError("texts: expected one list of completions per problem")
    if isinstance(tests, str) or not isinstance(tests, Sequence) or len(tests) != len(texts):
        raise ValueError(f"tests: expected one test program per problem ({len(texts)}), got "
                         f"{len(tests) if isinstance(tests, Sequence) and not isinstance(tests, str) else tests!r}")
    for i, group in enumerate(texts):
        if isinstance(group, str) or not isinstance(group, Sequence) or not all(isinstance(t, str) for t in group):
            raise ValueError(f"texts[{i}]: expected a list of completion strings")
        if not isinstance(tests[i], str):
            raise ValueError(f"tests[{i}]: expected a test program (str), got {type(tests[i]).__name__}")


def unit_test_rewards(texts: Sequence[Sequence[str]], tests: Sequence[str], *, prefixes: Sequence[str] | None = None,
                      language: str = "python", limits: Limits | None = None, workers: int | None = None) -> list[list[float]]:
    """texts[i][j] (completion j of problem i) -> 1.0 when prefixes[i] + its code + tests[i] passes in the
    sandbox, else 0.0. prefixes: code before the completion (completion-style prompts: the prompt itself)."""
    _check_groups(texts, tests)
    if prefixes is None:
        prefixes = [""] * len(texts)
    if isinstance(prefixes, str) or len(prefixes) != len(texts) or not all(isinstance(p, str) for p in prefixes):
        raise ValueError(f"prefixes: expected one string per problem ({len(texts)})")
    jobs, where = [], []
    for i, group in enumerate(texts):
        for j, text in enumerate(group):
            code = extract_code(text)
            jobs.append(SandboxJob(language, prefixes[i] + (text if code is None else code), tests=tests[i],
                                   limits=limits or DEFAULT_LIMITS, name=f"{i}/{j}"))
            where.append((i, j))
    results = run_tests(jobs, workers=workers)
    rewards = [[0.0] * len(group) for group in texts]
    for (i, j), result in zip(where, results):
        rewards[i][j] = 1.0 if result.passed else 0.0
    return rewards


def combined_rewards(texts: Sequence[Sequence[str]], tests: Sequence[str], *, format_weight: float = 0.1,
                     answer_tag: str | None = None, **sandbox: Any) -> list[list[float]]:
    """unit_test_rewards + format_weight * format_reward, per sample (sandbox: language, limits, workers)."""
    if isinstance(format_weight, bool) or not isinstance(format_weight, (int, float)) or format_weight < 0:
        raise ValueError(f"format_weight: must be a number >= 0, got {format_weight!r}")
    correct = unit_test_rewards(texts, tests, **sandbox)
    return [[c + format_weight * format_reward(t, answer_tag=answer_tag) for c, t in zip(cs, ts)]
            for cs, ts in zip(correct, texts)]


def make_unit_test_reward_fn(*, format_weight: float = 0.1, answer_tag: str | None = None, **sandbox: Any) -> RewardFn:
    """A GRPO reward_fn: combined_rewards on each problem's "tests" (and optional "prefix")."""
    def reward_fn(problems: Sequence[dict], texts: Sequence[Sequence[str]]) -> list[list[float]]:
        tests = []
        for i, problem in enumerate(problems):
            if not isinstance(problem, dict) or "tests" not in problem:
                raise ValueError(f"problems[{i}]: expected a dict with 'tests'")
            tests.append(problem["tests"])
        prefixes = [str(p.get("prefix", "")) for p in problems]
        return combined_rewards(texts, tests, format_weight=format_weight, answer_tag=answer_tag, prefixes=prefixes,
                                **sandbox)

    return reward_fn


def prefix_reward_fn(problems: Sequence[dict], texts: Sequence[Sequence[str]]) -> list[list[float]]:
    """The toy verifiable task: 1.0 when a completion (leading whitespace stripped) starts with problem["answer"]."""
    rewards = []
    for i, (problem, group) in enumerate(zip(problems, texts)):
        if not isinstance(problem, dict) or not isinstance(problem.get("answer"), str) or not problem["answer"]:
            raise ValueError(f"problems[{i}]: expected a dict with a non-empty 'answer' string")
        rewards.append([1.0 if t.lstrip().startswith(problem["answer"]) else 0.0 for t in group])
    return rewards


__all__ = ["DEFAULT_LIMITS", "RewardFn", "combined_rewards", "extract_code", "format_reward", "make_unit_test_reward_fn",
           "prefix_reward_fn", "unit_test_rewards"]
