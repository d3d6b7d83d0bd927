"""Training checkpoints with torch.distributed.checkpoint (DCP): sharded, atomic, resumable with any number of ranks.

Layout (the same as a converted Hugging Face model from `seedcoder.hf_convert`, with more keys):

    {root}/step-00001000/
        model_config.json          the ModelConfig (seedcoder.model) the weights belong to
        .metadata, __*_*.distcp    DCP state {"model": ..., "optimizer": ...}: each rank writes its own shards
        train_state.json           step, stage, data loader position, schedule, counters, the run's config
        rng/rank-00000.pt          each rank's torch RNG states (restored when the world size is the same)

A checkpoint is written into `step-N.tmp/` and renamed to `step-N/` by rank 0 only after every rank's shards,
the metadata and `train_state.json` are on disk (fsynced): a directory named `step-N` is always complete, and a
kill during a save leaves `step-N.tmp` (removed at the next start) and the previous checkpoint untouched. The
oldest complete checkpoints beyond `keep` are removed (renamed away first, so a half-deleted directory never
looks complete). For multi-node runs, `root` must be on a filesystem every node sees.

Resharding. Model and optimizer state are saved as DTensor shards with their global shapes (the state dict
API of torch.distributed.checkpoint.state_dict), so a checkpoint written by N ranks loads on M ranks, or into a
plain single-device model (`load_model_only`, used for model-only init and for sampling).

Fault injection for the crash tests: SEEDCODER_FAULT_INJECT="POINT@STEP[:raise]" makes the process kill itself
(SIGKILL, like an OOM killer or a preemption) or raise at POINT of step STEP; points: "checkpoint_publish"
(between writing a checkpoint and making it visible) and "after_step" (after the optimizer step).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import warnings
from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_state_dict,
)

from seedcoder.fileio import atomic_write_text, fsync_directory

MODEL_CONFIG_NAME = "model_config.json"
TRAIN_STATE_NAME = "train_state.json"
CHECKPOINT_FORMAT = "seedcoder-checkpoint"
CHECKPOINT_VERSION = 1
_STEP_DIR = re.compile(r"^step-(\d+)$")
FAULT_ENV = "SEEDCODER_FAULT_INJECT"


class CheckpointError(RuntimeError):
    """A checkpoint directory that is missing, incomplete or does not fit the model."""


def fault_point(point: str, step: int) -> None:
    """Crash here if SEEDCODER_FAULT_INJECT names this point and step (tests of crash safety; see the module doc)."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    target, _, action = spec.partition(":")
    name, _, at_step = target.partition("@")
    if name != point or not at_step or int(at_step) != step:
        return
    if action == "raise":
        raise RuntimeError(f"injected fault at {point}@{step}")
    os.kill(os.getpid(), signal.SIGKILL)


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def step_dir_name(step: int) -> str:
    return f"step-{step:08d}"


def list_checkpoints(root: str | os.PathLike) -> list[tuple[int, str]]:
    """[(step, path)] of the complete checkpoints under `root`, oldest first."""
    root = os.fspath(root)
    if not os.path.isdir(root):
        return []
    found = []
    for name in os.listdir(root):
        match = _STEP_DIR.match(name)
        path = os.path.join(root, name)
        if match and os.path.isfile(os.path.join(path, TRAIN_STATE_NAME)):
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(root: str | os.PathLike) -> str | None:
    """The path of the newest complete checkpoint under `root`, or None."""
    checkpoints = list_checkpoints(root)
    return checkpoints[-1][1] if checkpoints else None


def remove_incomplete(root: str | os.PathLike) -> list[str]:
    """Delete what interrupted saves and prunes left under `root` (`*.tmp`, `.*.deleting`); rank 0 only. Returns them."""
    root = os.fspath(root)
    if _rank() != 0 or not os.path.isdir(root):
        return []
    removed = []
    for name in sorted(os.listdir(root)):
        if name.endswith(".tmp") or name.endswith(".deleting"):
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)
            removed.append(name)
    return removed


def _write_json(path: str, value: Any) -> None:
    text = json.dumps(value, indent=1, sort_keys=False) + "\n"
    atomic_write_text(path, text)


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def save_checkpoint(
    root: str | os.PathLike,
    step: int,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    model_config: Mapping[str, Any],
    train_state: Mapping[str, Any],
    keep: int | None = None,
) -> str:
    """Write checkpoint `step` under `root` (collective: every rank calls it); returns the final path.

    `train_state` (JSON-serializable, the same on every rank) is written by rank 0. See the module docstring for
    the layout and the atomicity rule.
    """
    root = os.fspath(root)
    final = os.path.join(root, step_dir_name(step))
    temp = final + ".tmp"
    rank, world_size = _rank(), _world_size()
    if rank == 0:
        os.makedirs(root, exist_ok=True)
        if os.path.exists(temp):  # left by a save of this step that was killed
            shutil.rmtree(temp)
        os.makedirs(os.path.join(temp, "rng"))
    _barrier()

    if optimizer is not None:
        model_state, optimizer_state = get_state_dict(model, optimizer)
        state = {"model": model_state, "optimizer": optimizer_state}
    else:
        state = {"model": get_model_state_dict(model)}
    dcp.save(state, checkpoint_id=temp)
    torch.save(_rng_state(), os.path.join(temp, "rng", f"rank-{rank:05d}.pt"))
    _barrier()  # every rank's shards and RNG file are on disk

    if rank == 0:
        _write_json(os.path.join(temp, MODEL_CONFIG_NAME), dict(model_config))
        record = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "step": step, "world_size": world_size}
        _write_json(os.path.join(temp, TRAIN_STATE_NAME), {**record, **train_state})
        fsync_directory(temp)
        fault_point("checkpoint_publish", step)
        if os.path.exists(final):  # a checkpoint of the same step from an earlier attempt: replace it
            stale = os.path.join(root, f".{step_dir_name(step)}.deleting")
            os.rename(final, stale)
            shutil.rmtree(stale)
        os.rename(temp, final)
        fsync_directory(root)
        if keep is not None:
            prune_checkpoints(root, keep)
    _barrier()
    return final


def prune_checkpoints(root: str | os.PathLike, keep: int) -> list[str]:
    """Remove the oldest complete checkpoints so that `keep` remain; returns the removed paths."""
    removed = []
    checkpoints = list_checkpoints(root)
    for _, path in checkpoints[: max(0, len(checkpoints) - keep)]:
        doomed = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.deleting")
        os.rename(path, doomed)  # no longer named step-N: never mistaken for a complete checkpoint
        shutil.rmtree(doomed, ignore_errors=True)
        removed.append(path)
    return removed


def read_train_state(path: str | os.PathLike) -> dict[str, Any]:
    path = os.fspath(path)
    state_path = os.path.join(path, TRAIN_STATE_NAME)
    try:
        with open(state_path, encoding="utf-8") as file:
            state = json.load(file)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: not a complete checkpoint (no {TRAIN_STATE_NAME})") from None
    if state.get("format") != CHECKPOINT_FORMAT or state.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{state_path}: not a {CHECKPOINT_FORMAT} v{CHECKPOINT_VERSION} train state")
    return state


def read_model_config(path: str | os.PathLike) -> dict[str, Any]:
    config_path = os.path.join(os.fspath(path), MODEL_CONFIG_NAME)
    try:
        with open(config_path, encoding="utf-8") as file:
            return json.load(file)
    except FileNotFoundError:
        raise CheckpointError(f"{os.fspath(path)}: no {MODEL_CONFIG_NAME} (not a seedcoder checkpoint)") from None


def load_checkpoint(path: str | os.PathLike, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore model, optimizer and (same world size) RNG from checkpoint `path`; returns its train state.

    Collective. Works with any number of ranks: DCP reshards to the current model's layout.
    """
    path = os.fspath(path)
    train_state = read_train_state(path)
    model_state, optimizer_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optimizer": optimizer_state}
    dcp.load(state, checkpoint_id=path)
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
    rng_path = os.path.join(path, "rng", f"rank-{_rank():05d}.pt")
    if train_state.get("world_size") == _world_size() and os.path.exists(rng_path):
        rng = torch.load(rng_path, weights_only=True)
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["cuda"])
    return train_state


def load_model_only(path: str | os.PathLike, model: torch.nn.Module) -> None:
    """Load only the weights of checkpoint `path` (ours, or a converted HF model) into `model`.

    `model` may be sharded (FSDP2, collective then) or a plain module (no process group needed). Every
    parameter must be in the checkpoint with the same global shape, else CheckpointError names it.
    """
    path = os.fspath(path)
    if not os.path.isfile(os.path.join(path, ".metadata")):
        raise CheckpointError(f"{path}: no DCP .metadata (not a complete checkpoint)")
    full = not (dist.is_available() and dist.is_initialized())
    options = StateDictOptions(full_state_dict=False) if not full else StateDictOptions()
    model_state = get_model_state_dict(model, options=options)
    try:
        with warnings.catch_warnings():  # "assuming the intent is to load in a single process": it is
            warnings.simplefilter("ignore", UserWarning)
            dcp.load({"model": model_state}, checkpoint_id=path, no_dist=full)
    except CheckpointException as error:  # a BaseException wrapping each rank's error (missing keys, shapes)
        reasons = "; ".join(sorted({str(failure) for failure in error.failures.values()}))
        raise CheckpointError(f"{path}: cannot load the model weights: {reasons}") from None
    set_model_state_dict(model, model_state, options=options)


__all__ = [
    "CheckpointError",
    "MODEL_CONFIG_NAME",
    "TRAIN_STATE_NAME",
    "fault_point",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "load_model_only",
    "prune_checkpoints",
    "read_model_config",
    "read_train_state",
    "remove_incomplete",
    "save_checkpoint",
    "step_dir_name",
]
