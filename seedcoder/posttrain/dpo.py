"""DPO: the preference losses, response log-probs under our model, sandbox-judged pair mining, and a training loop.

    from seedcoder.posttrain.dpo import dpo_loss, sequence_logprobs, mine_pairs, read_pairs, dpo_train
    # 1. pairs: K samples per prompt from the engine, each run against the prompt's tests in the sandbox
    pairs = mine_pairs(engine, [{"id": "p0", "prompt": "def add(a, b):", "tests": "assert add(1, 2) == 3"}],
                       "runs/dpo/pairs.jsonl", k=8, params=SamplingParams(n=8, temperature=0.8, max_tokens=256))
    # 2. training: reference log-probs computed once from the starting model, then `steps` optimizer steps
    dpo_train(model, read_pairs("runs/dpo/pairs.jsonl"), steps=100, beta=0.1, loss_type="sigmoid",
              log_path="runs/dpo/metrics.jsonl")

Losses (`dpo_loss`), from the policy's and the reference's summed response log-probs of the chosen (c) and
rejected (r) responses, with h = (log pi(c) - log ref(c)) - (log pi(r) - log ref(r)):

* "sigmoid" (DPO, Rafailov et al. 2023): -log sigmoid(beta * h)
* "ipo" (Azar et al. 2023): (h - 1 / (2 beta))^2
* "hinge" (SLiC, Zhao et al. 2023): max(0, 1 - beta * h)

averaged over pairs. The implicit rewards are beta * (log pi - log ref) of each response; `reward_accuracy` is the
fraction of pairs whose chosen reward is above the rejected one and `reward_margin` the mean difference.

`sequence_logprobs` sums the per-token log-probs of `seedcoder.posttrain.policy.response_logprobs` over the
response tokens only (prompt tokens excluded).

Pair mining writes one JSON object per line: {"id", "prompt", "prompt_ids", "chosen", "chosen_ids", "rejected",
"rejected_ids"} (token ids exactly as sampled, so training does not depend on re-tokenizing text), atomically
(seedcoder.fileio). Completions run only in seedcoder.sandbox (seedcoder.posttrain.rewards.unit_test_rewards).
A prompt is text, token ids, or a chat (a list of {"role", "content"} messages, rendered with Seed-Coder's template).

Checkpoints: `dpo_train(..., checkpoint_dir=...)` writes seedcoder.checkpoint checkpoints (model, optimizer, step,
shuffle state) and resumes from the newest one found there. Command line (a TOML config with [model], [data],
[mine], [dpo], [output] tables, `--section.key=value` overrides; configs/dpo_tiny_demo.toml is the toy task):

    seedcoder train dpo --config configs/dpo_tiny_demo.toml --output.dir=runs/dpo-tiny
    torchrun --nproc_per_node=4 -m seedcoder.posttrain.dpo --config configs/dpo_tiny_demo.toml   # 4 ranks, FSDP2

Many ranks (torchrun; seedcoder.posttrain.policy): the policy is sharded with FSDP2, and the frozen reference is
the same sharded policy before the first step (its log-probs computed once, each rank scoring every N-th pair,
then all-gathered). Every rank draws the same global minibatch (the shuffle is seeded alike) and scores pairs
rank, rank + N, ...; its loss is its pairs' summed loss divided by the GLOBAL number of pairs, and FSDP2 sums the
gradients, so the update is one process's (the metrics are summed over ranks the same way). A minibatch needs at
least N pairs. Mining runs on rank 0 (its engine gets the all-gathered weights); the others read pairs.jsonl.
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
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F

from seedcoder.checkpoint import save_checkpoint
from seedcoder.config import ConfigError, load_sections, sections_of, to_toml
from seedcoder.errors import exit_on_user_error
from seedcoder.fileio import atomic_write_text
from seedcoder.generate import Engine
from seedcoder.optim import DivergedError, OptimizerStep, build_optimizer
from seedcoder.posttrain.policy import (
    POSTTRAIN_BETAS,
    PolicySection,
    all_gather_objects,
    all_reduce_sum,
    data_parallel_rank,
    global_step,
    prompt_token_ids,
    reshard,
    response_logprobs,
    resume_checkpoint,
    run_with_policy,
    unsharded_copy,
)
from seedcoder.posttrain.rewards import prefix_reward_fn, unit_test_rewards
from seedcoder.posttrain.run_config import OutputSection, check_reward, read_input, read_problems, toy_problems
from seedcoder.processes import exit_process
from seedcoder.sampling import SamplingParams
from seedcoder.train_config import OptimizerSection

LOSS_TYPES = ("sigmoid", "ipo", "hinge")


# ------------------------------------------------------------------------------------------ losses
def check_dpo_settings(*, steps: int, batch_size: int, beta: float, loss_type: str) -> None:
    """ValueError naming the first bad training setting; `main` runs this before it loads or mines anything."""
    for name, value in (("steps", steps), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: must be a positive integer, got {value!r}")
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type: expected one of {LOSS_TYPES}, got {loss_type!r}")
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not math.isfinite(beta) or beta <= 0:
        raise ValueError(f"beta: must be a positive number, got {beta!r}")


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, *, beta: float = 0.1, loss_type: str = "sigmoid") -> tuple[torch.Tensor, dict]:
    """The mean preference loss over pairs (module docstring) and its metrics: a dict of floats with
    reward_accuracy, reward_margin, chosen_reward, rejected_reward (means over pairs). Inputs: (P,) summed
    response log-probs."""
    check_dpo_settings(steps=1, batch_size=1, beta=beta, loss_type=loss_type)
    shape = policy_chosen.shape
    for name, t in (("policy_rejected", policy_rejected), ("ref_chosen", ref_chosen), ("ref_rejected", ref_rejected)):
        if t.shape != shape:
            raise ValueError(f"{name}: shape {tuple(t.shape)} != policy_chosen's {tuple(shape)}")
    if policy_chosen.numel() == 0:
        raise ValueError("policy_chosen: no pairs")
    chosen_logratio = policy_chosen - ref_chosen
    rejected_logratio = policy_rejected - ref_rejected
    h = chosen_logratio - rejected_logratio
    if loss_type == "sigmoid":
        losses = -F.logsigmoid(beta * h)
    elif loss_type == "ipo":
        losses = (h - 1.0 / (2.0 * beta)) ** 2
    else:
        losses = torch.relu(1.0 - beta * h)
    chosen_reward = beta * chosen_logratio.detach()
    rejected_reward = beta * rejected_logratio.detach()
    metrics = {
        "reward_accuracy": (chosen_reward > rejected_reward).float().mean().item(),
        "reward_margin": (chosen_reward - rejected_reward).mean().item(),
        "chosen_reward": chosen_reward.mean().item(),
        "rejected_reward": rejected_reward.mean().item(),
    }
    return losses.mean(), metrics


# ------------------------------------------------------------------------------------------ log-probs
def sequence_logprobs(model: torch.nn.Module, prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]],
                      *, batch_size: int | None = None, pad_id: int = 0, fused: bool = False) -> torch.Tensor:
    """(B,) sum of the response tokens' log-probs (prompt tokens excluded); batch_size: rows per forward pass."""
    if batch_size is None:
        batch_size = max(1, len(prompts))
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: must be a positive integer, got {batch_size!r}")
    out = []
    for start in range(0, len(prompts), batch_size):
        lp, _ = response_logprobs(model, prompts[start:start + batch_size], responses[start:start + batch_size], pad_id=pad_id,
                                  fused=fused)
        out.append(lp.sum(-1))
    if not out:
        raise ValueError("prompts: empty batch")
    return torch.cat(out)


# ------------------------------------------------------------------------------------------ pairs
def _problem_field(problem: Any, index: int, key: str) -> Any:
    if not isinstance(problem, dict) or key not in problem:
        raise ValueError(f"problems[{index}]: expected a dict with {key!r}")
    return problem[key]


def form_pairs(passed: Sequence[bool], max_pairs: int | None = None) -> list[tuple[int, int]]:
    """(passing index, failing index) pairs from one prompt's sample outcomes: passing and failing samples are
    matched in order (each sample used at most once), so min(#pass, #fail) pairs, capped at max_pairs."""
    good = [i for i, ok in enumerate(passed) if ok]
    bad = [i for i, ok in enumerate(passed) if not ok]
    pairs = list(zip(good, bad))
    return pairs if max_pairs is None else pairs[:max_pairs]


def mine_pairs(engine: Any, problems: Sequence[dict], out_path: str | os.PathLike, *, k: int = 8, params: Any = None,
               language: str = "python", limits: Any = None, max_pairs_per_prompt: int | None = None,
               workers: int | None = None, reward_fn: Any = None, pass_reward: float = 1.0) -> list[dict]:
    """Sample k completions per problem ({"prompt": text, token ids or chat messages, "tests": code, optional "id"
    and "prefix"}),
    judge each in the sandbox (prefix + extracted code + tests, seedcoder.posttrain.rewards; or `reward_fn(problems,
    texts)` when given, a sample passing when its reward >= pass_reward), form (passing, failing) pairs and write
    them to out_path as JSONL (atomically). Returns the pairs; a prompt whose samples all pass or all fail
    contributes none. max_pairs_per_prompt caps the pairs of one prompt (form_pairs)."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise ValueError(f"k: must be an integer >= 2 (a pair needs two samples), got {k!r}")
    params = params or SamplingParams(n=k, temperature=0.8, top_p=0.95)
    if params.n != k:
        params = dataclasses.replace(params, n=k)
    prompts = [_problem_field(p, i, "prompt") for i, p in enumerate(problems)]
    if reward_fn is None:
        tests = [_problem_field(p, i, "tests") for i, p in enumerate(problems)]
    prompt_ids = [prompt_token_ids(engine, p, f"problems[{i}].prompt") for i, p in enumerate(prompts)]
    outputs = engine.generate(prompt_ids, params)
    texts = [[c.text for c in group] for group in outputs]
    if reward_fn is None:
        rewards = unit_test_rewards(texts, tests, prefixes=[str(p.get("prefix", "")) for p in problems], language=language,
                                    limits=limits, workers=workers)
    else:
        rewards = reward_fn(problems, texts)
    records = []
    for i, (problem, group, group_rewards) in enumerate(zip(problems, outputs, rewards)):
        for good, bad in form_pairs([r >= pass_reward for r in group_rewards], max_pairs_per_prompt):
            records.append({
                "id": problem.get("id", str(i)), "prompt": prompts[i] if isinstance(prompts[i], str) else None,
                "prompt_ids": prompt_ids[i], "chosen": group[good].text, "chosen_ids": list(group[good].token_ids),
                "rejected": group[bad].text, "rejected_ids": list(group[bad].token_ids),
            })
    atomic_write_text(out_path, "".join(json.dumps(r) + "\n" for r in records))
    return records


def read_pairs(path: str | os.PathLike) -> list[dict]:
    """The pairs of a JSONL file written by mine_pairs (each needs prompt_ids, chosen_ids and rejected_ids)."""
    pairs = []
    with open(path, encoding="utf-8") as file:
        for line_no, line in enumerate(file, 1):
            if not line.strip():
                continue
            record = json.loads(line)
            for key in ("prompt_ids", "chosen_ids", "rejected_ids"):
                if key not in record:
                    raise ValueError(f"{path}:{line_no}: pair without {key!r}")
            pairs.append(record)
    return pairs


# ------------------------------------------------------------------------------------------ training
@torch.no_grad()
def reference_logprobs(model: torch.nn.Module, pairs: Sequence[dict], *,
                       batch_size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen, rejected) summed response log-probs of every pair under `model` (the frozen reference), once. On
    many ranks (collective) each scores pairs rank, rank + N, ... and the results are all-gathered; every rank
    runs the same number of forward passes (a shorter share repeats its first pair), as FSDP2 needs."""
    if not pairs:
        raise ValueError("pairs: no preference pairs to score")
    rank, world = data_parallel_rank()
    share = list(range(rank, len(pairs), world))
    width = -(-len(pairs) // world)
    rows = [pairs[i] for i in share + [share[0] if share else 0] * (width - len(share))]
    was_training = model.training
    model.eval()
    try:
        prompts = [p["prompt_ids"] for p in rows]
        chosen = sequence_logprobs(model, prompts, [p["chosen_ids"] for p in rows], batch_size=batch_size)
        rejected = sequence_logprobs(model, prompts, [p["rejected_ids"] for p in rows], batch_size=batch_size)
    finally:
        model.train(was_training)
        reshard(model)
    if world == 1:
        return chosen, rejected
    out = torch.zeros((2, len(pairs)), dtype=chosen.dtype)
    for where, values in enumerate(all_gather_objects(torch.stack([chosen, rejected]).cpu())):
        index = list(range(where, len(pairs), world))
        out[:, index] = values[:, : len(index)]
    return out[0].to(chosen.device), out[1].to(chosen.device)


def dpo_train(model: torch.nn.Module, pairs: Sequence[dict], *, steps: int, batch_size: int = 8, beta: float = 0.1,
              loss_type: str = "sigmoid", lr: float = 5e-7, weight_decay: float = 0.0, max_grad_norm: float = 1.0,
              reference: tuple[torch.Tensor, torch.Tensor] | None = None, ref_model: torch.nn.Module | None = None,
              seed: int = 0, log_path: str | os.PathLike | None = None, checkpoint_dir: str | os.PathLike | None = None,
              checkpoint_every: int = 0, keep: int = 2, fused: bool = False, max_bad_steps: int = 5) -> list[dict]:
    """`steps` AdamW steps of the DPO loss on minibatches of `pairs` (shuffled, cycled). Reference log-probs:
    `reference` (chosen, rejected) when given, else computed once from `ref_model` (default: `model` as passed
    in, before any step or resume). Logs one JSON line per step to log_path (and returns this call's records):
    step, loss, reward_accuracy, reward_margin, chosen_reward, rejected_reward, grad_norm, seconds. fused: the
    policy's log-probs through the fused linear cross-entropy (response_logprobs).

    checkpoint_dir: a checkpoint (seedcoder.checkpoint: model, optimizer, step, shuffle state) every
    `checkpoint_every` steps (0: only at the end), the newest `keep` kept; a directory that already holds one
    is resumed from (call again with the same model init, pairs and settings). A step with a non-finite loss or
    gradient norm is skipped (seedcoder.optim); `max_bad_steps` in a row save a checkpoint and raise DivergedError.

    Collective when torch.distributed runs several ranks and `model` is FSDP2-sharded (module docstring): every
    rank passes the same pairs and settings and gets the same records; rank 0 alone writes log_path."""
    if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int) or checkpoint_every < 0:
        raise ValueError(f"checkpoint_every: must be an integer >= 0, got {checkpoint_every!r}")
    if not pairs:
        raise ValueError("pairs: no preference pairs to train on")
    check_dpo_settings(steps=steps, batch_size=batch_size, beta=beta, loss_type=loss_type)
    rank, world = data_parallel_rank()
    if min(batch_size, len(pairs)) < world:
        raise ValueError(f"batch_size: a minibatch of {min(batch_size, len(pairs))} pair(s) cannot feed {world} ranks "
                         "(each needs at least one pair)")
    if reference is None:
        reference = reference_logprobs(ref_model if ref_model is not None else model, pairs, batch_size=batch_size)
    ref_chosen, ref_rejected = reference
    if ref_chosen.shape != (len(pairs),) or ref_rejected.shape != (len(pairs),):
        raise ValueError(f"reference: expected two ({len(pairs)},) tensors")
    device = next(model.parameters()).device
    optimizer = build_optimizer(model, OptimizerSection(lr=lr, betas=list(POSTTRAIN_BETAS), weight_decay=weight_decay),
                                device)
    update = OptimizerStep(optimizer, model, grad_clip=max_grad_norm, max_bad_steps=max_bad_steps)
    rng = random.Random(seed)
    order: list[int] = []
    start = 1
    state = resume_checkpoint(checkpoint_dir, model, optimizer, rng, stage="dpo")
    if state is not None:
        start = int(state["step"]) + 1
        order = [int(i) for i in state["order"]]
        update.load_state_dict(state)
    records = []

    def save(step: int) -> None:
        save_checkpoint(checkpoint_dir, step, model=model, optimizer=optimizer, model_config=model.cfg.to_dict(),
                        train_state={"stage": "dpo", "order": order, "rng": list(rng.getstate()), "beta": beta,
                                     "loss_type": loss_type, **update.state_dict()}, keep=keep)

    log = open(log_path, "a", encoding="utf-8") if log_path is not None and rank == 0 else None
    model.train()
    try:
        for step in range(start, steps + 1):
            started = time.perf_counter()
            batch = []
            while len(batch) < min(batch_size, len(pairs)):
                if not order:
                    order = list(range(len(pairs)))
                    rng.shuffle(order)
                batch.append(order.pop())
            mine = batch[rank::world]  # this rank's pairs of the global minibatch
            chosen_rejected = [pairs[i]["chosen_ids"] for i in mine] + [pairs[i]["rejected_ids"] for i in mine]
            prompts = [pairs[i]["prompt_ids"] for i in mine] * 2
            lp = sequence_logprobs(model, prompts, chosen_rejected, fused=fused)
            index = torch.tensor(mine)
            device = lp.device
            loss, metrics = dpo_loss(lp[: len(mine)], lp[len(mine):], ref_chosen[index].to(device),
                                     ref_rejected[index].to(device), beta=beta, loss_type=loss_type)
            share = len(mine) / len(batch)  # this rank's part of the mean over the global minibatch
            (loss * share).backward()
            outcome = global_step(update, step, loss * share)
            if world > 1:
                metrics = dict(zip(metrics, all_reduce_sum([value * share for value in metrics.values()])))
            record = {"step": step, "loss": outcome.loss, **metrics, "grad_norm": outcome.grad_norm,
                      **({} if outcome.applied else {"skipped": True}), "seconds": time.perf_counter() - started}
            records.append(record)
            if log is not None:
                log.write(json.dumps(record) + "\n")
                log.flush()
            if checkpoint_dir is not None and (step == steps or update.gave_up
                                               or (checkpoint_every and step % checkpoint_every == 0)):
                save(step)
            if update.gave_up:
                raise DivergedError(f"DPO step {step}: {update.bad_steps_in_a_row} non-finite steps in a row "
                                    "(lower dpo.lr or beta, check the pairs)")
    finally:
        if log is not None:
            log.close()
    return records


# ------------------------------------------------------------------------------------------ command line
@dataclass
class DPODataSection:
    problems: str = ""  # JSONL problems to mine pairs from ("": the toy task)
    pairs: str = ""  # a pairs.jsonl to train on instead of mining
    reward: str = "unit_tests"  # how mined samples are judged: "unit_tests" (the sandbox) or "prefix" (the toy task)

    def __post_init__(self) -> None:
        check_reward(self.reward)


@dataclass
class MineSection:
    k: int = 8  # samples per prompt
    max_tokens: int = 256
    temperature: float = 0.8
    top_p: float = 0.95
    max_pairs_per_prompt: int = 4  # 0: every (passing, failing) pair


@dataclass
class DPOSection:
    steps: int = 100
    batch_size: int = 8
    beta: float = 0.1
    loss_type: str = "sigmoid"  # one of LOSS_TYPES
    lr: float = 5e-7
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    max_bad_steps: int = 5  # this many non-finite steps in a row stop training (with a checkpoint)
    fused: bool = False  # the policy's log-probs through the fused linear cross-entropy
    seed: int = 0

    def __post_init__(self) -> None:
        check_dpo_settings(steps=self.steps, batch_size=self.batch_size, beta=self.beta, loss_type=self.loss_type)


@dataclass
class DPORunConfig:
    """The DPO command line's config: [model], [data], [mine], [dpo], [output] (seedcoder.config.load_sections)."""

    model: PolicySection = field(default_factory=PolicySection)
    data: DPODataSection = field(default_factory=DPODataSection)
    mine: MineSection = field(default_factory=MineSection)
    dpo: DPOSection = field(default_factory=DPOSection)
    output: OutputSection = field(default_factory=lambda: OutputSection(dir="runs/dpo"))


def main(argv: Sequence[str] | None = None) -> int:
    """seedcoder train dpo --config configs/dpo_tiny_demo.toml [--section.key=value ...]: mine pairs
    (unless [data] pairs names a file) into <dir>/pairs.jsonl, then train; <dir>/metrics.jsonl, <dir>/checkpoints.
    Under torchrun (python -m torch.distributed.run --nproc_per_node=N -m seedcoder.posttrain.dpo ...) the policy
    is sharded over the N ranks (module docstring). Bad input (config, data files, checkpoints) exits 2 with one
    line on stderr (seedcoder.errors)."""
    parser = argparse.ArgumentParser(prog="seedcoder train dpo", description=main.__doc__)
    parser.add_argument("--config", help="TOML file (sections: " + ", ".join(sections_of(DPORunConfig)) + ")")
    args, overrides = parser.parse_known_args(argv)
    return exit_on_user_error("seedcoder.posttrain.dpo", lambda: run_from_config(args.config, overrides))


def run_from_config(config_path: str | None, overrides: Sequence[str]) -> int:
    """`main` after the command line: mine pairs if needed, then train (raises ConfigError and other user errors)."""
    cfg = load_sections(DPORunConfig, config_path, overrides)
    return run_with_policy(cfg.model, functools.partial(_run, cfg))


def _run(cfg: DPORunConfig, model: torch.nn.Module, tokenizer: Any, *, main_rank: bool) -> int:
    d, out = cfg.dpo, cfg.output.dir
    os.makedirs(out, exist_ok=True)
    if main_rank:
        atomic_write_text(os.path.join(out, "config.toml"), to_toml(cfg))  # what this run was given, read back by --config
    if cfg.data.pairs:
        pairs = read_input("data.pairs", cfg.data.pairs, read_pairs)
    else:
        problems = read_input("data.problems", cfg.data.problems, read_problems) if cfg.data.problems else toy_problems()
        m = cfg.mine
        pairs_path = os.path.join(out, "pairs.jsonl")
        engine_model = unsharded_copy(model) if dist.is_initialized() else copy.deepcopy(model)  # collective on many ranks
        if main_rank:  # one miner: the sandbox runs once, and the file is the one every rank trains on
            engine = Engine(engine_model, tokenizer, max_batch=64, seed=cfg.model.seed)
            params = SamplingParams(n=m.k, temperature=m.temperature, top_p=m.top_p, max_tokens=m.max_tokens,
                                    seed=cfg.model.seed)
            pairs = mine_pairs(engine, problems, pairs_path, k=m.k, params=params,
                               max_pairs_per_prompt=m.max_pairs_per_prompt or None,
                               reward_fn=prefix_reward_fn if cfg.data.reward == "prefix" else None)
            print(json.dumps({"mined_pairs": len(pairs), "problems": len(problems)}), flush=True)
        del engine_model
        if dist.is_initialized():
            dist.barrier()
            pairs = read_pairs(pairs_path)
        if not pairs:
            if main_rank:
                print("no (passing, failing) pair was found: nothing to train on", flush=True)
            return 1
    world = data_parallel_rank()[1]
    if min(d.batch_size, len(pairs)) < world:
        raise ConfigError(f"config key 'dpo.batch_size': a minibatch of {min(d.batch_size, len(pairs))} pair(s) cannot "
                          f"feed {world} ranks (each needs at least one pair)")
    records = dpo_train(model, pairs, steps=d.steps, batch_size=d.batch_size, beta=d.beta, loss_type=d.loss_type, lr=d.lr,
                        weight_decay=d.weight_decay, max_grad_norm=d.max_grad_norm, max_bad_steps=d.max_bad_steps,
                        seed=d.seed, fused=d.fused, log_path=os.path.join(out, "metrics.jsonl"),
                        checkpoint_dir=os.path.join(out, "checkpoints"), checkpoint_every=cfg.output.checkpoint_every)
    if records and main_rank:
        print(json.dumps(records[-1]), flush=True)
    return 0


__all__ = ["LOSS_TYPES", "DPODataSection", "DPORunConfig", "DPOSection", "MineSection", "dpo_loss", "dpo_train",
           "form_pairs", "main", "mine_pairs", "read_pairs", "reference_logprobs", "sequence_logprobs"]


if __name__ == "__main__":  # torchrun -m seedcoder.posttrain.dpo
    exit_process(main())
