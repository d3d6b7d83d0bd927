"""The policy of single-process post-training (DPO, GRPO): loading it from a [model] table, the log-probs of
responses under it, the token ids of its prompts, and resuming its checkpoints.

`response_logprobs(model, prompts, responses)` gives per-token log-probs of each response given its prompt (token
ids; the rows are right-padded into one batch, so padding never affects a real token under causal attention): the
quantity DPO (summed, seedcoder.posttrain.dpo.sequence_logprobs) and GRPO (per token) both need. A policy starts from
any checkpoint `seedcoder.checkpoint.resolve_checkpoint` accepts (the same rule as every other stage), or fresh.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from seedcoder.chat_template import tokenize_chat
from seedcoder.checkpoint import CheckpointError, load_model, load_tokenizer_for, remove_incomplete, resume_latest
from seedcoder.config import ConfigError
from seedcoder.model import PRESETS, Transformer, model_config
from seedcoder.tokenizer import toy_tokenizer

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
        if section.preset not in PRESETS:
            raise ConfigError(f"config key 'model.preset': unknown preset {section.preset!r} (presets: {', '.join(PRESETS)})")
        tokenizer = toy_tokenizer()
        model = Transformer(model_config(section.preset, vocab_size=tokenizer.get_vocab_size(), init_std=section.init_std))
        model.init_weights(seed=section.seed)
    return model.train(), tokenizer


def resume_checkpoint(checkpoint_dir: str | None, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                      rng: random.Random, *, stage: str) -> dict[str, Any] | None:
    """Load the newest intact checkpoint of a single-process post-training loop (DPO or GRPO) into model,
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


__all__ = ["POSTTRAIN_BETAS", "PolicySection", "load_policy", "prompt_token_ids", "response_logprobs", "resume_checkpoint"]
