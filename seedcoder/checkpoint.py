"""Checkpoints with torch.distributed.checkpoint (DCP): sharded, atomic, resumable with any number of ranks; and
the one place that finds and loads a checkpoint (ours or a Hugging Face folder) and its tokenizer.

Layout (a model-only checkpoint, `save_model_only` or a model converted by `seedcoder.hf_convert`, has the first
two entries):

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

Damage. A complete checkpoint can still be damaged later (a truncated copy, a full disk, a lost file).
`resume_latest` checks the newest one's files against its DCP metadata (`checkpoint_damage`: every shard file
present and as long as the metadata says; the JSON files and RNG files readable) and then loads it; a damaged
one (or one DCP cannot read) is skipped with one warning line naming it and the problem, and moved aside to
`step-N.damaged/` once an older one has loaded, so that later saves and pruning never mistake it for the newest.
When every checkpoint is damaged it raises CheckpointError and moves nothing.

Resharding. Model and optimizer state are saved as DTensor shards with their global shapes (the state dict
API of torch.distributed.checkpoint.state_dict), so a checkpoint written by N ranks loads on M ranks, or into a
plain single-device model (`load_model_only`, used for model-only init and for sampling; it checks the stored
config's shape fields against the model first).

Finding and loading (the one rule for every stage, the engine, the scorer and the CLI). `resolve_checkpoint(path)`
accepts, in this order: a checkpoint folder of ours (`model_config.json`: a trainer step or a converted model), a
Hugging Face folder (`config.json`, its weights in `*.safetensors`), a checkpoints root (its newest complete `step-N`), or a run
folder whose `checkpoints/` is such a root; anything else is a CheckpointError naming the path and what it lacks.
`resolve_dcp_checkpoint` is the same for readers of DCP shards only (training's `checkpoint.init_from`, the
scorer): a Hugging Face folder is refused with the command that converts it. `find_tokenizer` knows where a
checkpoint keeps its tokenizer; `load_model` and `load_tokenizer_for` load both for inference and post-training.
They live here, beside the format they read, so that no stage has a copy with rules of its own; reading a
tokenizer.json itself is `seedcoder.tokenizer.load_tokenizer` (no torch needed, for data builds and curation), and
the Hugging Face format itself (tensor names, config.json, safetensors) is `seedcoder.hf_format`.

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
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_state_dict,
)

from seedcoder.errors import UserError
from seedcoder.fileio import atomic_write_text, fsync_directory
from seedcoder.hf_format import ConvertError, read_hf_config, read_hf_weights
from seedcoder.model import ModelConfig, Transformer
from seedcoder.tokenizer import TOKENIZER_FILE, TokenizerError, load_tokenizer

MODEL_CONFIG_NAME = "model_config.json"
TRAIN_STATE_NAME = "train_state.json"
DCP_METADATA_NAME = ".metadata"
# ModelConfig fields that fix the tensors' shapes: they must match to load weights; rope_theta, max_seq_len, norm_eps
# and init_std may differ (continued pretraining changes RoPE theta and the context length)
MODEL_SHAPE_FIELDS = ("vocab_size", "dim", "n_layers", "n_heads", "n_kv_heads", "ffn_dim")
CHECKPOINTS_DIR = "checkpoints"  # a run folder's checkpoints root
HF_FILES_DIR = "hf"  # in a converted checkpoint: the source folder's config.json and tokenizer / generation files
CHECKPOINT_FORMAT = "seedcoder-checkpoint"
CHECKPOINT_VERSION = 1
_STEP_DIR = re.compile(r"^step-(\d+)$")
DAMAGED_SUFFIX = ".damaged"
FAULT_ENV = "SEEDCODER_FAULT_INJECT"


class CheckpointError(UserError, RuntimeError):
    """A checkpoint directory that is missing, incomplete, damaged or does not fit the model."""


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


def _from_rank0(value: Any) -> Any:
    """Rank 0's `value` on every rank (collective when a process group of several ranks exists)."""
    if _world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _within(message: str, path: str) -> str:
    """An error message about checkpoint `path` without its leading path (the caller names the checkpoint)."""
    for prefix in (path + os.sep, path + ": "):
        message = message.removeprefix(prefix)
    return message


def _failure_reasons(error: CheckpointException) -> str:
    """The distinct errors of the ranks a DCP CheckpointException wraps, as one line."""
    reasons = set()
    for failure in error.failures.values():
        exc = failure[0] if isinstance(failure, tuple) else failure
        reasons.add(" ".join(f"{type(exc).__name__}: {exc}".split()))
    return "; ".join(sorted(reasons))


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
    except (OSError, ValueError) as error:  # ValueError: not JSON (truncated) or not UTF-8
        raise CheckpointError(f"{state_path}: unreadable ({error})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT or state.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{state_path}: not a {CHECKPOINT_FORMAT} v{CHECKPOINT_VERSION} train state")
    return state


def read_model_config(path: str | os.PathLike) -> ModelConfig:
    """The ModelConfig in checkpoint `path`'s model_config.json; CheckpointError naming the file otherwise."""
    config_path = os.path.join(os.fspath(path), MODEL_CONFIG_NAME)
    try:
        with open(config_path, encoding="utf-8") as file:
            config = json.load(file)
    except FileNotFoundError:
        raise CheckpointError(f"{os.fspath(path)}: no {MODEL_CONFIG_NAME} (not a seedcoder checkpoint)") from None
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{config_path}: unreadable ({error})") from None
    try:
        return ModelConfig.from_dict(config)
    except (TypeError, ValueError) as error:  # not a JSON object, unknown or missing keys, a bad value
        raise CheckpointError(f"{config_path}: {error}") from None


def _require_dcp(path: str) -> None:
    if not os.path.isfile(os.path.join(path, DCP_METADATA_NAME)):
        raise CheckpointError(f"{path}: no DCP {DCP_METADATA_NAME} (not a complete checkpoint)")


_WRAPPER_PARTS = re.compile(r"(_checkpoint_wrapped_module|_orig_mod|_fsdp_wrapped_module)\.")  # activation
# checkpointing, torch.compile and FSDP1 wrappers, in case a checkpoint was saved from a wrapped model's state_dict()


def model_tensor_metadata(path: str | os.PathLike) -> dict[str, tuple[str, Any]]:
    """{our parameter name: (stored key, DCP tensor metadata: size, dtype)} of the "model" entries of checkpoint
    `path`, read from its DCP metadata alone (no tensor data)."""
    path = os.fspath(path)
    _require_dcp(path)
    metadata = dcp.FileSystemReader(path).read_metadata()
    return {_WRAPPER_PARTS.sub("", key[len("model."):]): (key, meta)
            for key, meta in metadata.state_dict_metadata.items() if key.startswith("model.")}


def load_checkpoint(path: str | os.PathLike, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore model, optimizer and (same world size) RNG from checkpoint `path`; returns its train state.

    Collective. Works with any number of ranks: DCP reshards to the current model's layout.
    """
    path = os.fspath(path)
    train_state = read_train_state(path)
    model_state, optimizer_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optimizer": optimizer_state}
    try:
        dcp.load(state, checkpoint_id=path)
    except CheckpointException as error:  # raised on every rank alike (DCP gathers the ranks' errors)
        raise CheckpointError(f"{path}: cannot load the model and optimizer state: {_failure_reasons(error)}") from None
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
    rng_path = os.path.join(path, "rng", f"rank-{_rank():05d}.pt")
    if train_state.get("world_size") == _world_size() and os.path.exists(rng_path):
        rng = torch.load(rng_path, weights_only=True)
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["cuda"])
    return train_state


def checkpoint_damage(path: str | os.PathLike) -> str | None:
    """What is wrong with the files of complete checkpoint `path`, as "<file>: <problem>", or None when they look
    intact: the JSON files (model_config.json a valid ModelConfig) and `.metadata` readable, every shard file DCP's
    metadata names present and at least as long as the metadata says, the RNG files readable. Reads no tensor data
    (DCP keeps no checksums)."""
    path = os.fspath(path)
    try:
        read_train_state(path)
        read_model_config(path)
    except CheckpointError as error:
        return _within(str(error), path)
    try:
        metadata = dcp.FileSystemReader(path).read_metadata()
    except Exception as error:  # missing, truncated (EOFError) or garbage (UnpicklingError, ...)
        return f".metadata: unreadable ({type(error).__name__}: {error})"
    needed: dict[str, int] = {}
    for info in metadata.storage_data.values():
        needed[info.relative_path] = max(needed.get(info.relative_path, 0), info.offset + info.length)
    for name, length in sorted(needed.items()):
        try:
            size = os.path.getsize(os.path.join(path, name))
        except OSError:
            return f"{name}: missing"
        if size < length:
            return f"{name}: truncated ({size:,} bytes, the metadata needs {length:,})"
    rng_dir = os.path.join(path, "rng")
    for name in sorted(os.listdir(rng_dir)) if os.path.isdir(rng_dir) else []:
        try:
            torch.load(os.path.join(rng_dir, name), weights_only=True)
        except Exception as error:
            return f"rng/{name}: unreadable ({type(error).__name__}: {error})"
    return None


def resume_latest(root: str | os.PathLike, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                  model_config: Mapping[str, Any] | None = None) -> tuple[str, dict[str, Any]] | None:
    """Restore the newest intact checkpoint under `root` (collective); returns (its path, its train state), or None
    when `root` holds no complete checkpoint.

    A damaged checkpoint (`checkpoint_damage`, or one DCP fails to read) is skipped: once an older one has loaded,
    rank 0 prints one warning line per skipped checkpoint, naming it and the problem, and moves it aside to
    `step-N.damaged`. CheckpointError when every checkpoint is damaged (nothing moved), or when the newest intact
    one was written for another model than `model_config` (a config change, not damage: nothing is skipped).
    """
    root = os.fspath(root)
    found = [path for _, path in reversed(list_checkpoints(root))] if _rank() == 0 else None
    found = _from_rank0(found)
    damaged: list[tuple[str, str]] = []
    for path in found:
        problem = _from_rank0(checkpoint_damage(path) if _rank() == 0 else None)
        if problem is None and model_config is not None:
            saved, current = read_model_config(path).to_dict(), dict(model_config)
            if saved != current:
                changed = sorted(key for key in set(saved) | set(current) if saved.get(key) != current.get(key))
                raise CheckpointError(f"{path}: written for another model: the model config differs in {', '.join(changed)}")
        if problem is None:
            try:
                state = load_checkpoint(path, model=model, optimizer=optimizer)
            except CheckpointError as error:  # the same on every rank; the next load overwrites every tensor again
                problem = _within(str(error), path)
        if problem is not None:
            damaged.append((path, problem))
            continue
        if _rank() == 0:
            for bad, why in damaged:
                aside = bad + DAMAGED_SUFFIX
                shutil.rmtree(aside, ignore_errors=True)  # an older copy of the same damaged step
                os.rename(bad, aside)
                print(f"WARNING: checkpoint {bad} is damaged ({why}); moved it to {aside} and resumed from an older one",
                      flush=True)
        _barrier()
        return path, state
    if damaged:
        listing = "; ".join(f"{os.path.basename(path)}: {problem}" for path, problem in damaged)
        raise CheckpointError(f"{root}: every checkpoint is damaged ({listing}); move them away to start from step 0")
    return None


def load_model_only(path: str | os.PathLike, model: torch.nn.Module) -> None:
    """Load only the "model" entries of checkpoint `path` (a trainer step, a converted or a model-only checkpoint)
    into `model` (whose `cfg` is its ModelConfig), in place, cast to the model's dtypes; optimizer and other
    entries are not read.

    `model` may be sharded (FSDP2, collective then) or a plain module (no process group needed). The stored
    config's MODEL_SHAPE_FIELDS must match `model.cfg`, and every parameter must be in the checkpoint with the
    same global shape, else CheckpointError names what differs.
    """
    path = os.fspath(path)
    stored = read_model_config(path)
    different = [f"{field}: checkpoint {getattr(stored, field)} vs model {getattr(model.cfg, field)}"
                 for field in MODEL_SHAPE_FIELDS if getattr(stored, field) != getattr(model.cfg, field)]
    if different:
        raise CheckpointError(f"{os.path.join(path, MODEL_CONFIG_NAME)}: does not match the model "
                              f"({'; '.join(different)})")
    _require_dcp(path)
    single_process = not (dist.is_available() and dist.is_initialized())
    model_state = get_model_state_dict(model)
    try:
        with warnings.catch_warnings():  # "assuming the intent is to load in a single process": it is
            warnings.simplefilter("ignore", UserWarning)
            dcp.load({"model": model_state}, checkpoint_id=path, no_dist=single_process)
    except CheckpointException as error:  # a BaseException wrapping each rank's error (missing keys, shapes)
        raise CheckpointError(f"{path}: cannot load the model weights: {_failure_reasons(error)}") from None
    set_model_state_dict(model, model_state)


def save_model_only(model: torch.nn.Module, path: str | os.PathLike) -> None:
    """Write a model-only checkpoint of `model` (whose `cfg` is its ModelConfig) to `path`, replacing one there:
    model_config.json + the DCP {"model": state}, no train state (so not a step of a checkpoints root).

    Collective when torch.distributed is initialized (every rank calls it; a sharded model saves its shards).
    The directory appears complete or not at all: ranks write into `<path>.partial`, rank 0 renames it.
    """
    path = os.fspath(path)
    partial = path + ".partial"
    single_process = not (dist.is_available() and dist.is_initialized())
    if _rank() == 0:
        shutil.rmtree(partial, ignore_errors=True)
        os.makedirs(partial)
    _barrier()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.save({"model": get_model_state_dict(model)}, checkpoint_id=partial, no_dist=single_process)
    if _rank() == 0:
        _write_json(os.path.join(partial, MODEL_CONFIG_NAME), model.cfg.to_dict())
        if os.path.exists(path):
            old = path + ".old"
            shutil.rmtree(old, ignore_errors=True)
            os.rename(path, old)
            os.rename(partial, path)
            shutil.rmtree(old)
        else:
            os.rename(partial, path)
    _barrier()



# ------------------------------------------------------------------------------------------ finding and loading
def resolve_checkpoint(path: str | os.PathLike) -> tuple[str, str]:
    """(directory, kind) of the checkpoint `path` names, kind "ours" or "hf", by the one rule of the module doc."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: checkpoint directory not found")
    if not os.path.isdir(path):
        raise CheckpointError(f"{path}: not a checkpoint (a file, not a directory)")
    if os.path.isfile(os.path.join(path, MODEL_CONFIG_NAME)):
        return path, "ours"
    if os.path.isfile(os.path.join(path, "config.json")):
        return path, "hf"
    for root in (path, os.path.join(path, CHECKPOINTS_DIR)):
        newest = latest_checkpoint(root)
        if newest is not None:
            return newest, "ours"
    raise CheckpointError(f"{path}: not a checkpoint (expected {MODEL_CONFIG_NAME} + DCP shards, a folder of complete "
                          f"step-N checkpoints or a run folder with one in {CHECKPOINTS_DIR}/, or a Hugging Face folder "
                          "with config.json)")


def resolve_dcp_checkpoint(path: str | os.PathLike) -> str:
    """The directory of our (DCP) checkpoint `path` names (`resolve_checkpoint`); a Hugging Face folder is refused
    with the command that converts it."""
    directory, kind = resolve_checkpoint(path)
    if kind == "hf":
        raise CheckpointError(f"{directory}: a Hugging Face folder; convert it first: seedcoder convert --from-hf "
                              f"{directory} --out CKPT_DIR")
    return directory


def find_tokenizer(checkpoint_dir: str | os.PathLike) -> str:
    """The tokenizer.json of a resolved checkpoint: in it, in its hf/ folder (a converted model), in its parent (a
    checkpoints root beside its data), or in the dataset its training config names (data.path, then each stage's
    data_path). CheckpointError lists the places tried."""
    directory = os.fspath(checkpoint_dir)
    candidates = [os.path.join(directory, TOKENIZER_FILE), os.path.join(directory, HF_FILES_DIR, TOKENIZER_FILE),
                  os.path.join(os.path.dirname(os.path.abspath(directory)), TOKENIZER_FILE)]
    try:
        config = read_train_state(directory).get("config") or {}
    except CheckpointError:  # a model-only or converted checkpoint has no train state
        config = {}
    if isinstance(config, dict):
        data_paths = [(config.get("data") or {}).get("path")]
        data_paths += [stage.get("data_path") for stage in config.get("stages") or [] if isinstance(stage, dict)]
        candidates += [os.path.join(data_path, TOKENIZER_FILE) for data_path in data_paths if data_path]
    for candidate in candidates:
        if os.path.isfile(candidate):
            return candidate
    raise CheckpointError(f"{directory}: no tokenizer found (tried {', '.join(candidates)}); pass one "
                          "(tokenizer= / --tokenizer)")


def load_tokenizer_for(checkpoint_dir: str | os.PathLike, tokenizer: str | os.PathLike | None = None) -> Any:
    """A tokenizers.Tokenizer: `tokenizer` (a tokenizer.json or a folder with one) or the checkpoint's
    (`find_tokenizer`). CheckpointError naming the file when it is missing or unusable."""
    try:
        return load_tokenizer(find_tokenizer(checkpoint_dir) if tokenizer is None else tokenizer)
    except TokenizerError as error:
        raise CheckpointError(str(error)) from None


def default_device_dtype(device: str | torch.device | None, dtype: torch.dtype | None) -> tuple[torch.device, torch.dtype]:
    """CUDA when present, else the CPU; bf16 on CUDA, fp32 elsewhere (unless given)."""
    device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    return device, dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)


def load_model(path: str | os.PathLike, device: str | torch.device | None = None, dtype: torch.dtype | None = None
               ) -> tuple[Transformer, str]:
    """(model in eval mode, resolved checkpoint dir) for any checkpoint `resolve_checkpoint` accepts, on one
    device (`default_device_dtype`). Inference and single-process post-training start here. CheckpointError
    (naming the file) for a checkpoint that cannot be read or does not fit its config."""
    directory, kind = resolve_checkpoint(path)
    device, dtype = default_device_dtype(device, dtype)
    try:
        cfg = read_model_config(directory) if kind == "ours" else read_hf_config(directory)[1]
        with torch.device("meta"):
            model = Transformer(cfg)
        model = model.to(dtype).to_empty(device=device)
        if kind == "ours":
            load_model_only(directory, model)
        else:
            model.load_state_dict(read_hf_weights(directory, cfg))  # copied from the memory-mapped files
    except ConvertError as error:  # a Hugging Face folder's config.json or weights
        raise CheckpointError(str(error)) from None
    return model.eval(), directory

__all__ = [
    "CHECKPOINTS_DIR",
    "CheckpointError",
    "DCP_METADATA_NAME",
    "HF_FILES_DIR",
    "MODEL_CONFIG_NAME",
    "MODEL_SHAPE_FIELDS",
    "TRAIN_STATE_NAME",
    "checkpoint_damage",
    "default_device_dtype",
    "fault_point",
    "find_tokenizer",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "load_model",
    "load_model_only",
    "load_tokenizer_for",
    "model_tensor_metadata",
    "prune_checkpoints",
    "read_model_config",
    "read_train_state",
    "remove_incomplete",
    "resolve_checkpoint",
    "resolve_dcp_checkpoint",
    "resume_latest",
    "save_checkpoint",
    "save_model_only",
    "step_dir_name",
]
