"""The policy of post-training (DPO, GRPO): loading it from a [model] table (one process, or sharded with FSDP2
over the ranks of torchrun), the log-probs of responses under it, the token ids of its prompts, resuming its
checkpoints, and the few collectives the loops need to give every rank the result of one process.

`response_logprobs(model, prompts, responses)` gives per-token log-probs of each response given its prompt (token
ids; the rows are right-padded into one batch, so padding never affects a real token under causal attention): the
quantity DPO (summed, seedcoder.posttrain.dpo.sequence_logprobs) and GRPO (per token) both need. A policy starts from
any checkpoint `seedcoder.checkpoint.resolve_checkpoint` accepts (the same rule as every other stage), or fresh.

Many ranks (`torchrun --nproc_per_node=N -m seedcoder.posttrain.grpo ...`; `under_torchrun`): `init_data_parallel`
starts the process group and a 1-D data-parallel mesh (`seedcoder.train.init_distributed`), and
`load_sharded_policy` builds the model on the meta device, shards it per block with FSDP2
(`seedcoder.parallelize.parallelize`, fp32), materializes it and draws the same weights as one process
(`init_weights(seed)`) or loads them: our DCP checkpoints resharded onto the ranks (`load_model_only`), a
Hugging Face folder read by rank 0 alone and broadcast. Gradients are summed over ranks (no averaging), so a
loop divides its local loss by the GLOBAL count it averages over. `full_state_dict` all-gathers the shards
(an engine needs whole weights); `all_reduce_sum` / `all_gather_objects` / `global_step` are no-ops or the
single-process result in one process, so one code path serves both.
"""

from __future__ import annotations

import copy as copy_module
import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, set_model_state_dict
from torch.distributed.fsdp import FSDPModule

from seedcoder.chat_template import tokenize_chat
from seedcoder.checkpoint import (
    CheckpointError,
    load_model,
    load_model_only,
    load_tokenizer_for,
    read_model_config,
    remove_incomplete,
    resolve_checkpoint,
    resume_latest,
)
from seedcoder.config import ConfigError
from seedcoder.hf_format import read_hf_config, read_hf_weights
from seedcoder.model import PRESETS, ModelConfig, Transformer, model_config
from seedcoder.optim import OptimizerStep, StepOutcome
from seedcoder.parallelize import apply_fsdp, parallelize
from seedcoder.tokenizer import toy_tokenizer
from seedcoder.train import Distributed, init_distributed

# ------------------------------------------------------------------------------------------ loading
POSTTRAIN_BETAS = (0.9, 0.999)  # AdamW's usual betas for small-lr preference and RL fine-tuning (TRL's defaults)


@dataclass
class PolicySection:
    """[model] of DPO and GRPO: the policy to train."""

    init_from: str = ""  # a checkpoint (ours, a checkpoints folder, a run folder, Hugging Face); "": a fresh model
    tokenizer: str = ""  # default: the one found next to init_from (a fresh model: the toy word-level tokenizer)
    preset: str = "debug"  # a fresh model's preset (seedcoder.model.PRESETS)
    init_std: float = 0.02  # a fresh model's init
    seed: int = 0


def load_policy(section: PolicySection) -> tuple[torch.nn.Module, Any]:
    """(model in train mode, tokenizer) from a [model] table: init_from (a checkpoint: ours, a folder of step-N,
    or Hugging Face) + tokenizer (default: found next to it); init_from "" = a fresh `preset` model with the toy
    word-level tokenizer (seedcoder.tokenizer.toy_tokenizer), seeded by `seed`. A checkpoint that cannot be found
    or loaded is a ConfigError naming model.init_from."""
    torch.manual_seed(section.seed)
    if section.init_from:
        try:
            model, directory = load_model(section.init_from, device="cpu" if not torch.cuda.is_available() else None,
                                          dtype=torch.float32)
            tokenizer = load_tokenizer_for(directory, section.tokenizer or None)
        except CheckpointError as error:
            raise ConfigError(f"config key 'model.init_from': {error}") from None
    else:
        cfg, tokenizer = _fresh_preset(section)
        model = Transformer(cfg)
        model.init_weights(seed=section.seed)
    return model.train(), tokenizer


def _fresh_preset(section: PolicySection) -> tuple[ModelConfig, Any]:
    """init_from "": the `preset`'s config at the toy tokenizer's vocabulary, and that tokenizer."""
    if section.preset not in PRESETS:
        raise ConfigError(f"config key 'model.preset': unknown preset {section.preset!r} (presets: {', '.join(PRESETS)})")
    tokenizer = toy_tokenizer()
    return model_config(section.preset, vocab_size=tokenizer.get_vocab_size(), init_std=section.init_std), tokenizer


# ------------------------------------------------------------------------------------------ many ranks
def under_torchrun() -> bool:
    """True when this process is one of several ranks (torchrun's WORLD_SIZE > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_data_parallel() -> Distributed:
    """The process group (gloo on CPU, nccl on GPU) and a 1-D data-parallel mesh over every rank."""
    return init_distributed("auto", None)


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def data_parallel_rank() -> tuple[int, int]:
    """(rank, number of ranks): (0, 1) in one process."""
    return (dist.get_rank(), dist.get_world_size()) if is_distributed() else (0, 1)


def load_sharded_policy(section: PolicySection, dist_env: Distributed) -> tuple[torch.nn.Module, Any]:
    """`load_policy` for one rank of many (module docstring): (FSDP2-sharded model in train mode, tokenizer);
    every rank holds 1/N of each parameter and the weights are those `load_policy` gives one process."""
    torch.manual_seed(section.seed)
    hf_dir = None
    if section.init_from:
        try:
            directory, kind = resolve_checkpoint(section.init_from)
            if kind == "ours":
                cfg = read_model_config(directory)
            else:
                hf_dir, cfg = directory, read_hf_config(directory)[1]
            tokenizer = load_tokenizer_for(directory, section.tokenizer or None)
        except CheckpointError as error:
            raise ConfigError(f"config key 'model.init_from': {error}") from None
    else:
        cfg, tokenizer = _fresh_preset(section)
    with torch.device("meta"):  # no rank ever holds the whole model
        model = Transformer(cfg)
    parallelize(model, dist_env.mesh)  # fp32 parameters and gradient sums: the loops' numerics are one process's
    model.to_empty(device=dist_env.device)
    if not section.init_from:
        model.init_weights(seed=section.seed)  # every parameter drawn whole and sliced: the same for any world size
    elif hf_dir is None:
        try:
            load_model_only(directory, model)  # collective; DCP reshards onto this mesh
        except CheckpointError as error:
            raise ConfigError(f"config key 'model.init_from': {error}") from None
    else:  # safetensors: rank 0 reads them, the others receive their shards
        weights = read_hf_weights(hf_dir, cfg) if dist_env.rank == 0 else {}
        set_model_state_dict(model, weights, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
    return model.train(), tokenizer


def run_with_policy(section: PolicySection, run: Callable[..., int]) -> int:
    """run(model, tokenizer, main_rank=...) with the policy of `section`: loaded whole in one process, or sharded
    over torchrun's ranks (the process group made before and destroyed after); DPO's and GRPO's command lines."""
    if not under_torchrun():
        return run(*load_policy(section), main_rank=True)
    dist_env = init_data_parallel()
    try:
        return run(*load_sharded_policy(section, dist_env), main_rank=dist_env.is_main)
    finally:
        dist.destroy_process_group()


def reshard(model: torch.nn.Module) -> None:
    """Free the whole parameters that a forward pass without backward leaves gathered (FSDP2 keeps the root's and
    the last block's for the backward that never comes), so that `model.parameters()` are the shards again (an
    optimizer built now must see those); nothing for a plain module."""
    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.reshard()


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's whole weights on every rank: all-gathered from the FSDP shards (collective) or, for a plain
    module, its state dict."""
    if isinstance(model, FSDPModule):
        return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
    return model.state_dict()


def unsharded_copy(model: torch.nn.Module) -> Transformer:
    """A plain single-device Transformer with `model`'s current weights (collective when `model` is sharded): the
    embedded engine's model."""
    with torch.device("meta"):
        copy = Transformer(model.cfg)
    device = next(model.parameters()).device
    copy.to_empty(device=device)
    copy.load_state_dict(full_state_dict(model))
    return copy.eval()


def _collective_device() -> torch.device:
    """Where a collective's tensors must live: the current GPU under NCCL, the CPU under gloo."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def sharded_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A frozen copy of `model` with its current weights (KL's reference): sharded on the same mesh when `model`
    is FSDP2-sharded (collective), a deep copy otherwise; eval mode, no gradients."""
    if isinstance(model, FSDPModule):
        with torch.device("meta"):
            copy = Transformer(model.cfg)
        # the policy's FSDP mesh (its parameters' mesh), the policy's fp32 numerics
        apply_fsdp(copy, next(model.parameters()).device_mesh, param_dtype=torch.float32, reduce_dtype=torch.float32)
        copy.to_empty(device=next(model.parameters()).device)
        set_model_state_dict(copy, get_model_state_dict(model))  # shard to shard: no rank gathers the whole model
    else:
        copy = copy_module.deepcopy(model)
    for parameter in copy.parameters():
        parameter.requires_grad_(False)
    return copy.eval()


def all_reduce_sum(values: Sequence[float]) -> list[float]:
    """Elementwise sum over ranks of host numbers, in float64 (the values as given in one process)."""
    if not is_distributed():
        return [float(v) for v in values]
    box = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_collective_device())
    dist.all_reduce(box)
    return box.tolist()


def all_reduce_max(value: float) -> float:
    """The largest of the ranks' `value` (the value itself in one process)."""
    if not is_distributed():
        return float(value)
    box = torch.tensor([float(value)], dtype=torch.float64, device=_collective_device())
    dist.all_reduce(box, op=dist.ReduceOp.MAX)
    return float(box[0])


def all_gather_objects(value: Any) -> list[Any]:
    """[every rank's value] in rank order ([value] in one process); picklable values."""
    if not is_distributed():
        return [value]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def global_step(update: OptimizerStep, step: int, local_loss: torch.Tensor) -> StepOutcome:
    """`update(step, loss)` after `local_loss.backward()` on every rank, where `local_loss` is this rank's share of
    the global loss (its sum divided by the global count): the gradients are already summed over ranks (FSDP2),
    the loss value is summed here, so every rank decides the same (step or skip) as one process would."""
    grad_norm = update.clip()
    loss = local_loss.detach().float().reshape(1).to(grad_norm.device)
    if is_distributed():
        dist.all_reduce(loss)
    loss_value, norm_value = torch.cat([loss, grad_norm.float().reshape(1)]).tolist()
    return update.apply(step, loss_value, norm_value)


def resume_checkpoint(checkpoint_dir: str | None, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                      rng: random.Random, *, stage: str) -> dict[str, Any] | None:
    """Load the newest intact checkpoint of a post-training loop (DPO or GRPO; collective on many ranks) into model,
    optimizer and rng; its train state, or None when there is none (incomplete ones are removed first, damaged
    ones skipped with a warning: seedcoder.checkpoint.resume_latest)."""
    if checkpoint_dir is None:
        return None
    remove_incomplete(checkpoint_dir)
    resumed = resume_latest(checkpoint_dir, model=model, optimizer=optimizer, model_config=model.cfg.to_dict())
    if resumed is None:
        return None
    latest, state = resumed
    if state.get("stage") != stage:
        raise CheckpointError(f"checkpoint_dir: {latest} is not a {stage.upper()} checkpoint (stage {state.get('stage')!r})")
    version, internal, gauss = state["rng"]
    rng.setstate((version, tuple(internal), gauss))
    return state


# ------------------------------------------------------------------------------------------ log-probs
def _check_ids(name: str, rows: Sequence[Sequence[int]], allow_empty: bool) -> None:
    if isinstance(rows, (str, bytes)) or not isinstance(rows, Sequence):
        raise ValueError(f"{name}: expected a list of token-id lists, got {type(rows).__name__}")
    for i, row in enumerate(rows):
        if isinstance(row, (str, bytes)) or not isinstance(row, Sequence) or (not allow_empty and len(row) == 0):
            raise ValueError(f"{name}[{i}]: expected a non-empty list of token ids")
        if any(isinstance(t, bool) or not isinstance(t, int) or t < 0 for t in row):
            raise ValueError(f"{name}[{i}]: token ids must be integers >= 0")


def response_logprobs(model: torch.nn.Module, prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]],
                      *, pad_id: int = 0, fused: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-probs of each response given its prompt: (logprobs, mask), both (B, R) with R the longest
    response; logprobs[b, j] = log p(responses[b][j] | prompt + responses[b][:j]) in fp32, 0 where mask is False
    (padding). Differentiable (call under torch.no_grad() for reference / old-policy values).

    fused=False: the model's logits (B, S, V), as the engine computes them (log_softmax in fp32 of the head's
    output), so log-prob parity with the engine is exact up to kernel differences. fused=True: minus the model's
    per-token loss (`labels`, reduction "none": the fused linear cross-entropy, which on a GPU never materializes
    the logits; fp32 head) for long sequences and large vocabularies."""
    _check_ids("prompts", prompts, allow_empty=False)
    _check_ids("responses", responses, allow_empty=True)
    if len(prompts) != len(responses):
        raise ValueError(f"responses: got {len(responses)} for {len(prompts)} prompts")
    if not prompts:
        raise ValueError("prompts: empty batch")
    device = next(model.parameters()).device
    width = max(len(p) + len(r) for p, r in zip(prompts, responses))
    longest = max(len(r) for r in responses)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    targets = torch.zeros((len(prompts), max(longest, 1)), dtype=torch.long)
    mask = torch.zeros((len(prompts), max(longest, 1)), dtype=torch.bool)
    index = torch.zeros((len(prompts), max(longest, 1)), dtype=torch.long)  # logit position predicting each token
    for b, (p, r) in enumerate(zip(prompts, responses)):
        ids[b, : len(p) + len(r)] = torch.tensor(list(p) + list(r))
        if r:
            targets[b, : len(r)] = torch.tensor(list(r))
            mask[b, : len(r)] = True
            index[b, : len(r)] = torch.arange(len(p) - 1, len(p) + len(r) - 1)
    if fused:
        labels = torch.full((len(prompts), width), -100, dtype=torch.long)
        rows = torch.arange(len(prompts))[:, None].expand_as(index)
        labels[rows[mask], index[mask]] = targets[mask]
        nll = model(ids.to(device), labels=labels.to(device), loss_reduction="none")  # (B, S), 0 where ignored
        logprobs = -nll.float().gather(1, index.to(device))
        mask = mask.to(device)
        logprobs = torch.where(mask, logprobs, torch.zeros_like(logprobs))
        return logprobs[:, :longest], mask[:, :longest]
    # the logits at the positions that predict a response token (position len(prompt) - 1 + j predicts token j)
    logits = model(ids.to(device))  # (B, S, V)
    logits = logits.gather(1, index.to(device)[:, :, None].expand(-1, -1, logits.shape[-1]))
    logprobs = logits.float().log_softmax(-1).gather(-1, targets.to(device)[:, :, None])[:, :, 0]
    mask = mask.to(device)
    logprobs = torch.where(mask, logprobs, torch.zeros_like(logprobs))
    return logprobs[:, :longest], mask[:, :longest]


def prompt_token_ids(engine: Any, prompt: Any, where: str = "prompt") -> list[int]:
    """A prompt's token ids for `engine`: text (encoded by the engine), token ids, or a chat (a list of
    {"role", "content"} messages: Seed-Coder's template with the assistant generation prompt)."""
    if isinstance(prompt, list) and prompt and all(isinstance(m, dict) for m in prompt):
        return list(tokenize_chat(prompt, engine.tokenizer).input_ids)
    return list(engine.encode_prompt(prompt, where))


__all__ = ["POSTTRAIN_BETAS", "PolicySection", "all_gather_objects", "all_reduce_max", "all_reduce_sum", "data_parallel_rank",
           "full_state_dict", "global_step", "init_data_parallel", "is_distributed", "load_policy", "load_sharded_policy",
           "prompt_token_ids", "response_logprobs", "reshard", "resume_checkpoint", "sharded_copy",
           "under_torchrun", "unsharded_copy"]
