"""GRPO-style RL with the paper's DAPO settings: advantages, the clipped token-level loss, filters, a log-prob
parity monitor and the training loop (one process, or many under torchrun; the engine is embedded and synced
from the trainer each step).

    from seedcoder.posttrain.grpo import GRPOConfig, grpo_train
    from seedcoder.posttrain.rewards import make_unit_test_reward_fn
    grpo_train(model, tokenizer, problems, make_unit_test_reward_fn(), GRPOConfig(group_size=16, max_tokens=16384),
               log_path="runs/rl/metrics.jsonl")

One step: `prompts_per_step` prompts (only those the curriculum keeps) -> the engine, its weights copied from the
trainer's model, samples `group_size` completions of each at temperature `temperature`, top-p 1 and no repetition
penalty (so the sampling distribution is the model's and the importance ratio is exact) -> `reward_fn(problems,
texts)` -> group-normalised advantages -> filters -> the clipped token-level loss -> one AdamW step per
`ppo_epochs`. Every step logs one JSON line.

* Advantages (`group_advantages`): A = (r - mean(group)) / (std(group) + eps), std unbiased (torch.std, as verl);
  a group whose rewards are all equal gets A = 0 exactly.
* Loss (`grpo_token_loss`, DAPO): ratio = exp(logp - logp_old) per token; per-token loss
  max(-A * ratio, -A * clip(ratio, 1 - clip_low, 1 + clip_high)) with clip_low 0.2 and clip_high 0.28
  (asymmetric "clip-higher"); optional KL to a frozen reference, kl_coef * (exp(ref - logp) - (ref - logp) - 1)
  (the k3 estimator; off by default, kl_coef 0); the sum over every token of every sample divided by the number of
  tokens (token-level, not per-sample averaging).
* Overlong filtering (`overlong_keep`): samples cut by max_tokens (finish_reason "length") get no loss.
* Curriculum (`CurriculumFilter`): a prompt whose latest pass rate exceeds 0.875 is dropped from later steps, and
  a group whose samples all pass is dropped from this step's loss (`informative_groups`).
* Progressive length (`GRPOConfig.stages`, `[[grpo.stages]]` tables in TOML, parsed and checked like training's
  `[[stages]]`): from each stage's `start_step` on, its `max_tokens` and `group_size`, e.g. 16K tokens with 16
  samples, then 32K with 32.
* Rollouts from a server (`[rollout] backend = "server"`, seedcoder.posttrain.rollout_server): instead of the
  embedded engine, our OpenAI-compatible server samples; the trainer pushes its weights to it before every
  step's sampling, and each step's record names the served `weights_version` (checked against the pushed one).
* Parity (`ParityMonitor`): the trainer recomputes the log-probs of the engine's samples (the old-policy values
  of the ratio) and compares them with the engine's `model_logprobs`; when the mean absolute difference exceeds
  `tolerance` it warns (warnings.warn) and counts. Silent mismatches between sampler and trainer are the classic
  RL bug (a different kernel, stale weights, a tokenization slip).

Prompts: a problem's "prompt" is text, token ids, or a chat (a list of {"role", "content"} messages, rendered
with Seed-Coder's template and its generation prompt). Checkpoints: `checkpoint_dir` gets seedcoder.checkpoint
checkpoints (model, optimizer, step, curriculum, prompt order); a directory holding one is resumed from.

Command line (a TOML config with [model], [data], [grpo] = GRPOConfig fields with `[[grpo.stages]]` tables,
[output]; `--section.key=value` overrides; see configs/grpo_tiny_demo.toml, the toy task of
`seedcoder.posttrain.run_config.toy_problems` + `seedcoder.tokenizer.toy_tokenizer`):

    seedcoder train rl --config configs/grpo_tiny_demo.toml --output.dir=runs/grpo-tiny
    torchrun --nproc_per_node=4 -m seedcoder.posttrain.grpo --config configs/grpo_tiny_demo.toml   # 4 ranks, FSDP2

Many ranks (torchrun; seedcoder.posttrain.policy). The policy (and the KL reference, when kl_coef > 0) is
sharded with FSDP2. Every rank draws the same prompts for a step (same seeded shuffle and curriculum), and the
rollouts are split by whole groups: rank r samples, rewards and trains on prompts r, r + N, ... of the step, so a
group's advantages are computed where its samples are (no gather needed for them). Each rank's embedded engine
gets the whole weights, all-gathered from the shards before the step's sampling. A request's samples are seeded
by (step seed, sample index) alone, so the split draws the same samples as one process. The pass rates of every
group are all-gathered (every rank's curriculum sees the same rates; a checkpoint stores them once), the per-step
metrics are summed over ranks, and the token-level loss of each rank is its tokens' summed loss divided by the
GLOBAL token count (FSDP2 sums the gradients), as is the parity monitor's mean difference. A rank left without a
trainable sample still runs the forward and backward passes (one masked row), as FSDP2's collectives need.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import json
import math
import os
import random
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from seedcoder.checkpoint import save_checkpoint
from seedcoder.config import ConfigError, load_sections, parse_stages, sections_of, to_toml
from seedcoder.errors import exit_on_user_error
from seedcoder.fileio import atomic_write_text
from seedcoder.generate import Engine
from seedcoder.optim import DivergedError, OptimizerStep, build_optimizer
from seedcoder.posttrain.policy import (
    POSTTRAIN_BETAS,
    PolicySection,
    all_gather_objects,
    all_reduce_max,
    all_reduce_sum,
    data_parallel_rank,
    full_state_dict,
    global_step,
    prompt_token_ids,
    reshard,
    response_logprobs,
    resume_checkpoint,
    run_with_policy,
    sharded_copy,
    unsharded_copy,
)
from seedcoder.posttrain.rewards import make_unit_test_reward_fn, prefix_reward_fn
from seedcoder.posttrain.rollout_server import ServerRollouts
from seedcoder.posttrain.run_config import OutputSection, check_reward, read_input, read_problems, toy_problems
from seedcoder.processes import exit_process
from seedcoder.sampling import SamplingParams
from seedcoder.train_config import OptimizerSection
from seedcoder.vllm_engine import VLLMEngine


# ------------------------------------------------------------------------------------------ advantages
def group_advantages(rewards: torch.Tensor, *, eps: float = 1e-6) -> torch.Tensor:
    """rewards (P, G): G samples of each of P prompts -> (r - group mean) / (group std + eps), std unbiased; a
    group of equal rewards gets exactly 0 (also G = 1)."""
    if not isinstance(rewards, torch.Tensor) or rewards.dim() != 2 or rewards.numel() == 0:
        raise ValueError(f"rewards: expected a non-empty (prompts, group_size) tensor, got "
                         f"{tuple(rewards.shape) if isinstance(rewards, torch.Tensor) else type(rewards).__name__}")
    if not (isinstance(eps, (int, float)) and eps > 0):
        raise ValueError(f"eps: must be a positive number, got {eps!r}")
    rewards = rewards.double()
    mean = rewards.mean(dim=1, keepdim=True)
    std = rewards.std(dim=1, keepdim=True) if rewards.shape[1] > 1 else torch.zeros_like(mean)
    centered = rewards - mean
    equal = (rewards == rewards[:, :1]).all(dim=1, keepdim=True)
    return torch.where(equal, torch.zeros_like(centered), centered / (std + eps)).float()


# ------------------------------------------------------------------------------------------ loss
def grpo_token_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                    *, clip_low: float = 0.2, clip_high: float = 0.28, ref_logprobs: torch.Tensor | None = None,
                    kl_coef: float = 0.0, num_tokens: int | float | None = None) -> tuple[torch.Tensor, dict]:
    """The DAPO token-level clipped loss (module docstring). logprobs / old_logprobs / ref_logprobs / mask: (N, T)
    per response token; advantages: (N,) per sample (broadcast over its tokens). num_tokens: the divisor (default
    mask.sum(); pass the whole batch's count when a batch is split into micro-batches). Returns (loss, metrics)."""
    if logprobs.dim() != 2:
        raise ValueError(f"logprobs: expected (samples, tokens), got {tuple(logprobs.shape)}")
    for name, t in (("old_logprobs", old_logprobs), ("mask", mask)) + ((("ref_logprobs", ref_logprobs),) if ref_logprobs
                                                                         is not None else ()):
        if t.shape != logprobs.shape:
            raise ValueError(f"{name}: shape {tuple(t.shape)} != logprobs' {tuple(logprobs.shape)}")
    if advantages.shape != logprobs.shape[:1]:
        raise ValueError(f"advantages: expected shape ({logprobs.shape[0]},), got {tuple(advantages.shape)}")
    for name, value in (("clip_low", clip_low), ("clip_high", clip_high), ("kl_coef", kl_coef)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ValueError(f"{name}: must be a number >= 0, got {value!r}")
    if clip_low >= 1:
        raise ValueError(f"clip_low: must be < 1 (the ratio's lower bound is 1 - clip_low), got {clip_low!r}")
    if kl_coef > 0 and ref_logprobs is None:
        raise ValueError("ref_logprobs: needed when kl_coef > 0")
    mask = mask.to(logprobs.dtype)
    count = float(mask.sum()) if num_tokens is None else float(num_tokens)
    if count <= 0:
        raise ValueError("mask: no response tokens to average over")
    adv = advantages.to(logprobs.dtype)[:, None]
    ratio = torch.exp(logprobs - old_logprobs.detach())
    unclipped = -adv * ratio
    clipped = -adv * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    per_token = torch.maximum(unclipped, clipped)
    kl = None
    if kl_coef > 0:
        delta = ref_logprobs.detach() - logprobs
        kl = torch.exp(delta) - delta - 1.0
        per_token = per_token + kl_coef * kl
    loss = (per_token * mask).sum() / count
    with torch.no_grad():
        active = mask > 0
        n = max(int(active.sum()), 1)
        was_clipped = (clipped > unclipped) & active
        metrics = {
            "clip_fraction": int(was_clipped.sum()) / n,
            "clip_low_fraction": int((was_clipped & (ratio < 1 - clip_low)).sum()) / n,
            "clip_high_fraction": int((was_clipped & (ratio > 1 + clip_high)).sum()) / n,
            "ratio_mean": float((ratio * mask).sum()) / n,
            "kl": float((kl * mask).sum()) / n if kl is not None else 0.0,
        }
    return loss, metrics


# ------------------------------------------------------------------------------------------ filters
def overlong_keep(finish_reasons: Sequence[str]) -> list[bool]:
    """Overlong filtering: False for a sample cut by max tokens (finish_reason "length"), True otherwise."""
    keep = []
    for i, reason in enumerate(finish_reasons):
        if reason not in ("stop", "length"):
            raise ValueError(f"finish_reasons[{i}]: expected 'stop' or 'length', got {reason!r}")
        keep.append(reason != "length")
    return keep


def informative_groups(passed: torch.Tensor) -> torch.Tensor:
    """passed (P, G) bool -> (P,) bool: False for a group whose samples all pass (dropped from the step)."""
    if passed.dim() != 2:
        raise ValueError(f"passed: expected (prompts, group_size), got {tuple(passed.shape)}")
    return ~passed.bool().all(dim=1)


class CurriculumFilter:
    """Tracks each prompt's latest pass rate; `keep(id)` is False once it exceeds max_pass_rate (0.875)."""

    def __init__(self, max_pass_rate: float = 0.875):
        if not isinstance(max_pass_rate, (int, float)) or not 0 <= max_pass_rate <= 1:
            raise ValueError(f"max_pass_rate: must be in [0, 1], got {max_pass_rate!r}")
        self.max_pass_rate = float(max_pass_rate)
        self.pass_rates: dict[str, float] = {}

    def update(self, prompt_id: str, passed: Sequence[bool]) -> None:
        if len(passed) == 0:
            raise ValueError(f"passed: no samples for prompt {prompt_id!r}")
        self.pass_rates[prompt_id] = sum(bool(p) for p in passed) / len(passed)

    def keep(self, prompt_id: str) -> bool:
        return self.pass_rates.get(prompt_id, 0.0) <= self.max_pass_rate

    def active(self, prompt_ids: Sequence[str]) -> list[str]:
        return [p for p in prompt_ids if self.keep(p)]

    def state_dict(self) -> dict:
        return {"max_pass_rate": self.max_pass_rate, "pass_rates": dict(self.pass_rates)}

    def load_state_dict(self, state: dict) -> None:
        self.max_pass_rate = float(state["max_pass_rate"])
        self.pass_rates = {str(k): float(v) for k, v in state["pass_rates"].items()}


# ------------------------------------------------------------------------------------------ parity
def pad_logprobs(rows: Sequence[Sequence[float]], like: torch.Tensor) -> torch.Tensor:
    """Per-sample lists of log-probs -> a tensor shaped like `like` (N, T), zero-padded."""
    out = torch.zeros(like.shape, dtype=torch.float32)
    for i, row in enumerate(rows):
        if len(row) > like.shape[1]:
            raise ValueError(f"rows[{i}]: {len(row)} log-probs, more than {like.shape[1]} positions")
        out[i, : len(row)] = torch.tensor(list(row), dtype=torch.float32)
    return out.to(like.device)


class ParityMonitor:
    """Compares the trainer's log-probs of sampled tokens with the engine's; warns and counts on drift."""

    def __init__(self, tolerance: float = 1e-3):
        if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not tolerance > 0:
            raise ValueError(f"tolerance: must be a positive number, got {tolerance!r}")
        self.tolerance = float(tolerance)
        self.checks = 0
        self.warnings = 0
        self.last: dict[str, float] = {}

    def check(self, trainer_logprobs: torch.Tensor, engine_logprobs: torch.Tensor, mask: torch.Tensor, *,
              step: int | None = None) -> dict[str, float]:
        """Mean and max |trainer - engine| over the masked tokens (of every rank: collective on many ranks); warns
        when the mean exceeds the tolerance."""
        if trainer_logprobs.shape != engine_logprobs.shape or trainer_logprobs.shape != mask.shape:
            raise ValueError(f"engine_logprobs / mask: shapes {tuple(engine_logprobs.shape)} / {tuple(mask.shape)} must "
                             f"equal trainer_logprobs' {tuple(trainer_logprobs.shape)}")
        diff = (trainer_logprobs.detach().float() - engine_logprobs.float().to(trainer_logprobs.device)).abs()
        diff = diff[mask.bool()]
        total, count = all_reduce_sum([float(diff.double().sum()), diff.numel()])
        mean = total / count if count else 0.0
        self.checks += 1
        self.last = {"parity_mean_abs_diff": mean,
                     "parity_max_abs_diff": all_reduce_max(float(diff.max()) if diff.numel() else 0.0),
                     "parity_warnings": self.warnings}
        if mean > self.tolerance:
            self.warnings += 1
            self.last["parity_warnings"] = self.warnings
            where = f" at step {step}" if step is not None else ""
            warnings.warn(f"log-prob parity{where}: the trainer and the engine differ by {mean:.3g} nats per token on "
                          f"average (tolerance {self.tolerance:g}): stale weights or a numerics mismatch", RuntimeWarning,
                          stacklevel=2)
        return dict(self.last)


# ------------------------------------------------------------------------------------------ training
@dataclass
class GRPOStage:
    """One stage of progressive length: from step `start_step` (1-based) on, `max_tokens` and `group_size`."""

    start_step: int
    max_tokens: int
    group_size: int


@dataclass
class GRPOConfig:
    """The loop's settings (module docstring); paper-style defaults where the paper gives them."""

    steps: int = 100
    prompts_per_step: int = 8
    group_size: int = 16
    max_tokens: int = 16384
    temperature: float = 1.0
    lr: float = 1e-6
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    max_bad_steps: int = 5  # this many non-finite updates in a row stop training (with a checkpoint)
    ppo_epochs: int = 1
    clip_low: float = 0.2
    clip_high: float = 0.28
    kl_coef: float = 0.0
    adv_eps: float = 1e-6
    max_pass_rate: float = 0.875
    pass_reward: float = 1.0  # a sample "passes" (curriculum) when its reward is at least this
    filter_overlong: bool = True
    parity_tolerance: float = 1e-3
    fused_logprobs: bool = False  # response_logprobs(fused=True): no (B, S, V) logits on a GPU
    # the embedded engine's paged KV budget in positions (None: grows as needed): long rollouts then share a bounded
    # pool and the engine preempts and recomputes instead of holding every sample at the longest length
    kv_cache_tokens: int | None = None
    seed: int = 0
    # progressive length: GRPOStage tables (or dicts), sorted by start_step here; before the first stage (or with
    # none) max_tokens / group_size. The paper: 16K x 16 from step 1, then 32K x 32 from step 301.
    stages: list[GRPOStage] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.type == "str":
                if not isinstance(value, str):
                    raise ValueError(f"GRPOConfig.{f.name}: must be a string, got {value!r}")
                continue
            if f.type == "int" and (isinstance(value, bool) or not isinstance(value, int) or value < (0 if f.name == "seed"
                                                                                                       else 1)):
                raise ValueError(f"GRPOConfig.{f.name}: must be a positive integer, got {value!r}")
            if f.type == "float" and (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
                                      or value < 0):
                raise ValueError(f"GRPOConfig.{f.name}: must be a finite number >= 0, got {value!r}")
        if self.lr <= 0:
            raise ValueError(f"GRPOConfig.lr: must be > 0, got {self.lr!r}")
        if self.kv_cache_tokens is not None and (isinstance(self.kv_cache_tokens, bool)
                                                 or not isinstance(self.kv_cache_tokens, int) or self.kv_cache_tokens < 1):
            raise ValueError(f"GRPOConfig.kv_cache_tokens: must be a positive integer or None, got {self.kv_cache_tokens!r}")
        stages = self.stages
        if isinstance(stages, (list, tuple)):
            stages = [dataclasses.asdict(stage) if isinstance(stage, GRPOStage) else stage for stage in stages]
        stages = parse_stages(stages, GRPOStage)  # unknown keys, wrong types, missing keys: ConfigError naming them
        first_steps: dict[int, int] = {}
        for index, stage in enumerate(stages):
            for name, value in dataclasses.asdict(stage).items():
                if value < 1:
                    raise ConfigError(f"config key 'stages[{index}].{name}': must be an integer >= 1, got {value}")
            if stage.start_step in first_steps:
                raise ConfigError(f"config key 'stages[{index}].start_step': {stage.start_step} is also "
                                  f"stages[{first_steps[stage.start_step]}]'s start_step")
            first_steps[stage.start_step] = index
        self.stages = sorted(stages, key=lambda stage: stage.start_step)

    def stage(self, step: int) -> tuple[int, int]:
        """(max_tokens, group_size) at `step` (1-based)."""
        current = (self.max_tokens, self.group_size)
        for stage in self.stages:
            if step >= stage.start_step:
                current = (stage.max_tokens, stage.group_size)
        return current


@torch.no_grad()
def sync_weights(target: torch.nn.Module, source: torch.nn.Module) -> None:
    """Copy source's parameters and buffers into target in place (the engine's model from the trainer's); a
    sharded source is all-gathered first (collective)."""
    target_state = target.state_dict()
    source_state = full_state_dict(source)
    if target_state.keys() != source_state.keys():
        raise ValueError("source: its parameter names differ from the target model's")
    for name, tensor in source_state.items():
        target_state[name].copy_(tensor)


def grpo_train(model: torch.nn.Module, tokenizer: Any, problems: Sequence[dict], reward_fn, config: GRPOConfig | None = None,
               *, log_path: str | os.PathLike | None = None, engine: Any = None, ref_model: torch.nn.Module | None = None,
               checkpoint_dir: str | os.PathLike | None = None, checkpoint_every: int = 0, keep: int = 2) -> list[dict]:
    """Train `model` in place with GRPO (module docstring). problems: dicts with "prompt" (text or token ids) and
    "id" (default its index) plus what reward_fn reads; reward_fn(problems, texts) -> rewards per sample.
    engine: default an Engine on a copy of model (synced every step), or a ServerRollouts (weights pushed every
    step; seedcoder.posttrain.rollout_server). ref_model (KL only): default a frozen copy
    of `model` as passed in. Returns this call's per-step records, also appended to log_path as JSONL.

    checkpoint_dir: a checkpoint (seedcoder.checkpoint: model, optimizer, step, curriculum, prompt order) every
    `checkpoint_every` steps (0: only at the end), the newest `keep` kept; when the directory already holds one,
    training resumes from it (call again with the same model init, problems and config after a kill). Sampling
    is seeded per step, so a resumed run draws the same samples as an uninterrupted one.

    Collective when torch.distributed runs several ranks and `model` is FSDP2-sharded (module docstring): every
    rank passes the same problems and config and gets the same records; rank 0 alone writes log_path."""
    config = config or GRPOConfig()
    if not problems:
        raise ValueError("problems: nothing to train on")
    ids = []
    for i, problem in enumerate(problems):
        if not isinstance(problem, dict) or "prompt" not in problem:
            raise ValueError(f"problems[{i}]: expected a dict with 'prompt'")
        ids.append(str(problem.get("id", i)))
    if len(set(ids)) != len(ids):
        raise ValueError("problems: ids must be unique")
    rank, world = data_parallel_rank()
    if engine is None:
        widest = max([config.group_size] + [stage.group_size for stage in config.stages])
        engine_model = unsharded_copy(model) if world > 1 else copy.deepcopy(model)
        engine = Engine(engine_model, tokenizer, max_batch=max(1, min(64, -(-config.prompts_per_step // world) * widest)),
                        seed=config.seed, kv_cache_tokens=config.kv_cache_tokens)
    if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int) or checkpoint_every < 0:
        raise ValueError(f"checkpoint_every: must be an integer >= 0, got {checkpoint_every!r}")
    if config.kl_coef > 0 and ref_model is None:
        ref_model = sharded_copy(model)  # before any resume: the starting policy (sharded like it)
    if config.kl_coef == 0:
        ref_model = None
    prompt_ids = [prompt_token_ids(engine, p["prompt"], f"problems[{i}].prompt") for i, p in enumerate(problems)]
    by_id = dict(zip(ids, range(len(problems))))
    device = next(model.parameters()).device
    optimizer = build_optimizer(model, OptimizerSection(lr=config.lr, betas=list(POSTTRAIN_BETAS),
                                                        weight_decay=config.weight_decay), device)
    update = OptimizerStep(optimizer, model, grad_clip=config.max_grad_norm, max_bad_steps=config.max_bad_steps)
    curriculum = CurriculumFilter(config.max_pass_rate)
    monitor = ParityMonitor(config.parity_tolerance)
    rng = random.Random(config.seed)
    order: list[str] = []
    start = 1
    state = resume_checkpoint(checkpoint_dir, model, optimizer, rng, stage="grpo")
    if state is not None:
        start = int(state["step"]) + 1
        curriculum.load_state_dict(state["curriculum"])
        order = [str(i) for i in state["order"]]
        monitor.warnings = int(state["parity_warnings"])
        update.load_state_dict(state)
    records = []

    def save(step: int) -> None:
        save_checkpoint(checkpoint_dir, step, model=model, optimizer=optimizer, model_config=model.cfg.to_dict(),
                        train_state={"stage": "grpo", "curriculum": curriculum.state_dict(), "order": order,
                                     "rng": list(rng.getstate()), "parity_warnings": monitor.warnings,
                                     "config": dataclasses.asdict(config), **update.state_dict()}, keep=keep)

    log = open(log_path, "a", encoding="utf-8") if log_path is not None and rank == 0 else None
    try:
        for step in range(start, config.steps + 1):
            started = time.perf_counter()
            active = curriculum.active(ids)
            if not active:
                break  # every prompt is solved beyond the curriculum's threshold
            batch: list[str] = []
            while len(batch) < min(config.prompts_per_step, len(active)):
                if not order:
                    order = list(active)
                    rng.shuffle(order)
                candidate = order.pop()
                if curriculum.keep(candidate) and candidate not in batch:
                    batch.append(candidate)
            if isinstance(engine, ServerRollouts):
                weights_version = engine.push_weights(model)  # collective on many ranks; the server swaps them in
            elif isinstance(engine, VLLMEngine):  # vLLM's own weight loading (untested here: seedcoder.vllm_engine)
                engine.load_weights(full_state_dict(model))
            else:
                sync_weights(engine.model, model)  # collective on many ranks: every rank's engine gets whole weights
            max_tokens, group_size = config.stage(step)
            mine = batch[rank::world]  # this rank's groups (all of them in one process)
            index = [by_id[i] for i in mine]
            params = SamplingParams(n=group_size, temperature=config.temperature, top_p=1.0, repetition_penalty=1.0,
                                    max_tokens=max_tokens, seed=config.seed * 1_000_003 + step)
            outputs = engine.generate([prompt_ids[i] for i in index], params) if index else []
            texts = [[c.text for c in group] for group in outputs]
            rewards = (torch.tensor(reward_fn([problems[i] for i in index], texts), dtype=torch.float32) if index
                       else torch.zeros((0, group_size)))
            if rewards.shape != (len(index), group_size):
                raise ValueError(f"reward_fn: returned shape {tuple(rewards.shape)}, expected {(len(index), group_size)}")
            passed = rewards >= config.pass_reward
            # every group's pass rate, in the batch's order, on every rank: the curriculum stays the same everywhere
            for prompt_id, row in (pair for part in all_gather_objects(list(zip(mine, passed.tolist()))) for pair in part):
                curriculum.update(prompt_id, row)
            keep_group = informative_groups(passed) if index else torch.zeros(0, dtype=torch.bool)
            advantages = group_advantages(rewards, eps=config.adv_eps) if index else rewards
            samples = []  # (prompt ids, completion, advantage)
            overlong = 0
            for g, (i, group) in enumerate(zip(index, outputs)):
                fits = overlong_keep([c.finish_reason for c in group]) if config.filter_overlong else [True] * len(group)
                overlong += fits.count(False)
                if not keep_group[g]:
                    continue
                for s, completion in enumerate(group):
                    if fits[s] and completion.token_ids:
                        samples.append((prompt_ids[i], completion, float(advantages[g, s])))
            counts = all_reduce_sum([float(rewards.sum()), float(passed.sum()), float((~keep_group).sum()), overlong,
                                     len(samples), sum(len(c.token_ids) for g in outputs for c in g)])
            reward_sum, pass_sum, dropped, overlong_all, samples_all, response_tokens = counts
            rollouts = len(batch) * group_size
            record: dict[str, Any] = {
                "step": step, "prompts": len(batch), "reward_mean": reward_sum / rollouts,
                "pass_rate": pass_sum / rollouts, "dropped_all_correct_groups": int(dropped),
                "overlong_samples": int(overlong_all), "samples_trained": int(samples_all),
                "max_tokens": max_tokens, "group_size": group_size,
                "response_tokens_mean": response_tokens / rollouts,
                "active_prompts": len(active),
            }
            if isinstance(engine, ServerRollouts):
                record["weights_version"] = weights_version
            if samples_all:  # the same decision on every rank
                if samples:
                    prompts = [s[0] for s in samples]
                    responses = [list(s[1].token_ids) for s in samples]
                    adv = torch.tensor([s[2] for s in samples])
                    engine_rows = [s[1].model_logprobs or [] for s in samples]
                else:  # nothing of this rank's to learn from: one masked row keeps FSDP2's collectives in step
                    prompts, responses, adv, engine_rows = [prompt_ids[0]], [[0]], torch.zeros(1), [[0.0]]
                with torch.no_grad():
                    old_logprobs, mask = response_logprobs(model, prompts, responses, fused=config.fused_logprobs)
                    ref_logprobs = (response_logprobs(ref_model, prompts, responses, fused=config.fused_logprobs)[0]
                                    if ref_model is not None else None)
                if ref_model is not None:
                    reshard(ref_model)
                if not samples:
                    mask = torch.zeros_like(mask)
                engine_lp = pad_logprobs(engine_rows, old_logprobs)
                record.update(monitor.check(old_logprobs, engine_lp, mask, step=step))
                local_tokens = int(mask.sum())
                tokens = int(all_reduce_sum([local_tokens])[0])
                model.train()
                for _ in range(config.ppo_epochs):
                    logprobs, _ = response_logprobs(model, prompts, responses, fused=config.fused_logprobs)
                    loss, metrics = grpo_token_loss(logprobs, old_logprobs, adv.to(logprobs.device), mask,
                                                    clip_low=config.clip_low, clip_high=config.clip_high,
                                                    ref_logprobs=ref_logprobs, kl_coef=config.kl_coef, num_tokens=tokens)
                    loss.backward()
                    outcome = global_step(update, step, loss)
                if world > 1:  # per-token means of this rank's tokens -> of every rank's
                    metrics = dict(zip(metrics, (value / tokens for value in all_reduce_sum(
                        [value * local_tokens for value in metrics.values()]))))
                record.update({"loss": outcome.loss, **metrics, "grad_norm": outcome.grad_norm, "tokens": tokens,
                               **({} if outcome.applied else {"skipped_update": True})})
            else:
                record["skipped"] = True  # every group all-correct or every sample overlong: nothing to learn from
            record["seconds"] = time.perf_counter() - started
            records.append(record)
            if log is not None:
                log.write(json.dumps(record) + "\n")
                log.flush()
            if checkpoint_dir is not None and (step == config.steps or update.gave_up
                                               or (checkpoint_every and step % checkpoint_every == 0)):
                save(step)
            if update.gave_up:
                raise DivergedError(f"GRPO step {step}: {update.bad_steps_in_a_row} non-finite updates in a row "
                                    "(lower grpo.lr, check the rewards)")
    finally:
        if log is not None:
            log.close()
    return records


# ------------------------------------------------------------------------------------------ toy task + command line
@dataclass
class GRPODataSection:
    problems: str = ""  # JSONL problems ("": the toy task)
    reward: str = "unit_tests"  # "unit_tests" (the sandbox, plus a format reward) or "prefix" (the toy task)
    format_weight: float = 0.1  # unit_tests: weight of the format reward

    def __post_init__(self) -> None:
        check_reward(self.reward)


ROLLOUT_BACKENDS = ("engine", "server")


@dataclass
class RolloutSection:
    """[rollout]: where the samples come from: the embedded engine, or an OpenAI-compatible server of ours
    (seedcoder.posttrain.rollout_server) that the trainer pushes its weights to after every step."""

    backend: str = "engine"  # "engine" (in-process) or "server"
    base_url: str = ""  # server: http://host:port/v1 (`seedcoder serve` started on the policy's starting weights)
    model: str = ""  # server: the served model name ("": the first of /v1/models)
    weights_dir: str = ""  # server: where pushed weights are written, seen by the server ("": <output.dir>/rollout_weights)
    timeout: float = 600.0  # server: seconds per HTTP request

    def __post_init__(self) -> None:
        if self.backend not in ROLLOUT_BACKENDS:
            raise ValueError(f"backend: expected one of {', '.join(map(repr, ROLLOUT_BACKENDS))}, got {self.backend!r}")
        if self.backend == "server" and not self.base_url:
            raise ValueError("base_url: needed when backend is 'server' (http://host:port/v1)")
        if not self.timeout > 0:
            raise ValueError(f"timeout: must be > 0, got {self.timeout!r}")


@dataclass
class GRPORunConfig:
    """The GRPO command line's config: [model], [data], [grpo] (GRPOConfig, with [[grpo.stages]]), [rollout],
    [output]."""

    model: PolicySection = field(default_factory=PolicySection)
    data: GRPODataSection = field(default_factory=GRPODataSection)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    rollout: RolloutSection = field(default_factory=RolloutSection)
    output: OutputSection = field(default_factory=lambda: OutputSection(dir="runs/grpo"))


def main(argv: Sequence[str] | None = None) -> int:
    """seedcoder train rl --config configs/grpo_tiny_demo.toml [--section.key=value ...]: GRPO on
    [data] problems (JSONL; "" = the toy task) with [data] reward "unit_tests" (sandbox + format) or "prefix";
    <dir>/metrics.jsonl (one line per step) and <dir>/checkpoints (resumed from when present). Under torchrun
    (python -m torch.distributed.run --nproc_per_node=N -m seedcoder.posttrain.grpo ...) the policy is sharded over
    the N ranks (module docstring). Bad input (config, problems file, checkpoints) exits 2 with one line on
    stderr (seedcoder.errors)."""
    parser = argparse.ArgumentParser(prog="seedcoder train rl", description=main.__doc__)
    parser.add_argument("--config", help="TOML file (sections: " + ", ".join(sections_of(GRPORunConfig)) + ")")
    args, overrides = parser.parse_known_args(argv)
    return exit_on_user_error("seedcoder.posttrain.grpo", lambda: run_from_config(args.config, overrides))


def run_from_config(config_path: str | None, overrides: Sequence[str]) -> int:
    """`main` after the command line (raises ConfigError and other user errors)."""
    cfg = load_sections(GRPORunConfig, config_path, overrides)
    return run_with_policy(cfg.model, functools.partial(_run, cfg))


def _run(cfg: GRPORunConfig, model: torch.nn.Module, tokenizer: Any, *, main_rank: bool) -> int:
    out = cfg.output.dir
    os.makedirs(out, exist_ok=True)
    if main_rank:
        atomic_write_text(os.path.join(out, "config.toml"), to_toml(cfg))  # what this run was given, read back by --config
    problems = read_input("data.problems", cfg.data.problems, read_problems) if cfg.data.problems else toy_problems()
    reward_fn = (prefix_reward_fn if cfg.data.reward == "prefix"
                 else make_unit_test_reward_fn(format_weight=cfg.data.format_weight))
    engine = None
    if cfg.rollout.backend == "server":
        engine = ServerRollouts(cfg.rollout.base_url, tokenizer, model=cfg.rollout.model or None, timeout=cfg.rollout.timeout,
                                weights_dir=cfg.rollout.weights_dir or os.path.join(out, "rollout_weights"))
    records = grpo_train(model, tokenizer, problems, reward_fn, cfg.grpo, engine=engine,
                         log_path=os.path.join(out, "metrics.jsonl"),
                         checkpoint_dir=os.path.join(out, "checkpoints"), checkpoint_every=cfg.output.checkpoint_every)
    for record in records if main_rank else []:
        print(json.dumps({k: record[k] for k in ("step", "reward_mean", "pass_rate", "samples_trained") if k in record}),
              flush=True)
    return 0


__all__ = ["CurriculumFilter", "GRPOConfig", "GRPOStage", "ParityMonitor", "group_advantages", "grpo_token_loss", "grpo_train",
           "GRPODataSection", "GRPORunConfig", "ROLLOUT_BACKENDS", "RolloutSection",
           "informative_groups", "main", "overlong_keep", "pad_logprobs", "sync_weights"]




if __name__ == "__main__":  # torchrun -m seedcoder.posttrain.grpo
    exit_process(main())
