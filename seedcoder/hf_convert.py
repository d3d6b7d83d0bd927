"""Hugging Face Llama folders <-> our checkpoints.

    seedcoder convert --from-hf Seed-Coder-8B-Base/ --out ckpt/seedcoder-8b      # fine-tune released weights
    seedcoder convert --to-hf ckpt/step-001000 --out hf/my-model [--dtype bf16]  # serve with transformers / vLLM

Our checkpoint (`seedcoder.checkpoint`, shared with the trainer): a directory holding `model_config.json`
(ModelConfig.to_dict()) and a `torch.distributed.checkpoint` (DCP) state dict saved as {"model": model.state_dict()},
i.e. tensors named "model.<our parameter name>". The trainer's checkpoints add optimizer, loader, ... entries next
to "model"; the conversion ignores them. A checkpoint converted from HF also keeps the source folder's config.json
and tokenizer / generation files under `hf/`, so converting back reproduces the same config.json. Tensor names and
the supported configs: `seedcoder.hf_format`.

Memory: from-hf hands the memory-mapped safetensors tensors to DCP, so pages stream from disk to the checkpoint
without a second copy of the model in RAM (a --dtype cast materializes the cast tensors). to-hf reads the
checkpoint one output shard at a time (≤ max_shard_bytes, 5 GB by default; peak memory about twice the largest
shard, as safetensors serializes a shard in memory).
Outputs appear atomically: everything is written into a sibling temporary directory that is renamed at the end.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp

from seedcoder.checkpoint import (
    HF_FILES_DIR,
    MODEL_CONFIG_NAME,
    MODEL_SHAPE_FIELDS,
    model_tensor_metadata,
    read_model_config,
)
from seedcoder.fileio import atomic_write_text
from seedcoder.hf_format import (
    HF_DTYPE_NAMES,
    ConvertError,
    config_from_hf,
    config_to_hf,
    expected_shapes,
    read_hf_config,
    read_hf_weights,
    read_json,
    to_hf_name,
)
from seedcoder.model import ModelConfig
from seedcoder.tokenizer import TOKENIZER_FILE

HF_SIDE_FILES = (TOKENIZER_FILE, "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                 "generation_config.json", "added_tokens.json")
DEFAULT_MAX_SHARD_BYTES = 5 * 10**9
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}  # --dtype choices


def _write_json(path: Path, value: Any) -> None:
    atomic_write_text(path, json.dumps(value, indent=2) + "\n")


# ------------------------------------------------------------------------------------------ atomic dirs
def _start_output(out_dir: Path) -> Path:
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ConvertError(f"{out_dir}: already exists; remove it or choose another --out")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    return tmp


def _finish_output(tmp: Path, out_dir: Path) -> None:
    if out_dir.exists():
        out_dir.rmdir()  # empty (checked in _start_output)
    os.rename(tmp, out_dir)


def _dcp(op, state: dict, ckpt_dir: Path) -> None:
    """dcp.save / dcp.load in this process alone, without DCP's warning that such a call is single-process."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        op(state, checkpoint_id=str(ckpt_dir), no_dist=True)


# ------------------------------------------------------------------------------------------ HF -> ours
def convert_from_hf(hf_dir: str | os.PathLike, out_dir: str | os.PathLike, *, dtype: torch.dtype | None = None,
                    log=print) -> ModelConfig:
    """An HF Llama folder (config.json + safetensors, sharded or not) -> our checkpoint directory out_dir."""
    hf_dir, out_dir = Path(hf_dir), Path(out_dir)
    hf_config, cfg = read_hf_config(hf_dir)
    state = read_hf_weights(hf_dir, cfg)
    if dtype is not None:
        state = {name: tensor.to(dtype) for name, tensor in state.items()}
    tmp = _start_output(out_dir)
    try:
        _dcp(dcp.save, {"model": state}, tmp)
        _write_json(tmp / MODEL_CONFIG_NAME, cfg.to_dict())
        (tmp / HF_FILES_DIR).mkdir()
        _write_json(tmp / HF_FILES_DIR / "config.json", hf_config)
        for name in HF_SIDE_FILES:
            if (hf_dir / name).is_file():
                shutil.copyfile(hf_dir / name, tmp / HF_FILES_DIR / name)
        _finish_output(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    n_params = sum(t.numel() for t in state.values())
    log(f"converted {hf_dir} -> {out_dir}: {n_params / 1e6:,.1f}M parameters, {len(state)} tensors, config {cfg}")
    return cfg


# ------------------------------------------------------------------------------------------ ours -> HF
def convert_to_hf(ckpt_dir: str | os.PathLike, out_dir: str | os.PathLike, *, dtype: torch.dtype | None = None,
                  max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES, tokenizer: str | os.PathLike | None = None,
                  log=print) -> dict[str, Any]:
    """Our checkpoint -> an HF folder (config.json + model.safetensors, or shards + index above max_shard_bytes)
    that transformers' LlamaForCausalLM.from_pretrained loads. dtype None keeps the stored dtype. tokenizer: a
    tokenizer.json file, or a folder whose tokenizer / generation files are copied (default: the checkpoint's hf/)."""
    ckpt_dir, out_dir = Path(ckpt_dir), Path(out_dir)
    cfg = read_model_config(ckpt_dir)
    shapes = expected_shapes(cfg)
    stored = model_tensor_metadata(ckpt_dir)
    missing = [name for name in shapes if name not in stored]
    extra = [name for name in stored if name not in shapes]
    if missing or extra:
        raise ConvertError(f"{ckpt_dir}: the model entries do not match {MODEL_CONFIG_NAME} (missing: {missing[:5]}, "
                           f"unexpected: {extra[:5]})")
    for name, shape in shapes.items():
        if tuple(stored[name][1].size) != shape:
            raise ConvertError(f"{ckpt_dir}: model.{name} has shape {tuple(stored[name][1].size)}, {MODEL_CONFIG_NAME} "
                               f"implies {shape}")
    dtypes = {stored[name][1].properties.dtype for name in shapes}
    out_dtype = dtype or (dtypes.pop() if len(dtypes) == 1 else torch.float32)
    if out_dtype not in HF_DTYPE_NAMES:
        raise ConvertError(f"{ckpt_dir}: cannot write dtype {out_dtype} (use --dtype)")
    itemsize = torch.empty((), dtype=out_dtype).element_size()

    shards: list[list[str]] = [[]]  # greedy, in model order, never splitting a tensor
    shard_bytes = 0
    for name, shape in shapes.items():
        nbytes = itemsize * torch.Size(shape).numel()
        if shards[-1] and shard_bytes + nbytes > max_shard_bytes:
            shards.append([])
            shard_bytes = 0
        shards[-1].append(name)
        shard_bytes += nbytes

    from safetensors.torch import save_file

    base_config = None
    kept = ckpt_dir / HF_FILES_DIR / "config.json"
    if kept.is_file():
        base_config = read_json(kept)
        kept_cfg = config_from_hf(base_config, str(kept))
        if any(getattr(kept_cfg, f) != getattr(cfg, f) for f in MODEL_SHAPE_FIELDS):
            base_config = None  # the model was reshaped since; write a fresh config
    tmp = _start_output(out_dir)
    try:
        weight_map, total = {}, 0
        for index, names in enumerate(shards):
            file_name = "model.safetensors" if len(shards) == 1 else f"model-{index + 1:05d}-of-{len(shards):05d}.safetensors"
            buffers = {stored[name][0]: torch.empty(shapes[name], dtype=stored[name][1].properties.dtype) for name in names}
            _dcp(dcp.load, buffers, ckpt_dir)
            tensors = {to_hf_name(name): buffers.pop(stored[name][0]).to(out_dtype).contiguous() for name in names}
            save_file(tensors, str(tmp / file_name), metadata={"format": "pt"})
            for hf_name, t in tensors.items():
                weight_map[hf_name] = file_name
                total += t.numel() * t.element_size()
            del tensors
        if len(shards) > 1:
            _write_json(tmp / "model.safetensors.index.json", {"metadata": {"total_size": total}, "weight_map": weight_map})
        _write_json(tmp / "config.json", config_to_hf(cfg, out_dtype, base_config))
        _copy_tokenizer_files(Path(tokenizer) if tokenizer is not None else ckpt_dir / HF_FILES_DIR, tmp,
                              required=tokenizer is not None)
        _finish_output(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"converted {ckpt_dir} -> {out_dir}: {len(shards)} safetensors file(s), {total / 1e9:.2f} GB, dtype {out_dtype}")
    return config_to_hf(cfg, out_dtype, base_config)


def _copy_tokenizer_files(source: Path, out_dir: Path, *, required: bool) -> None:
    if source.is_file():
        shutil.copyfile(source, out_dir / TOKENIZER_FILE)
    elif source.is_dir():
        for name in HF_SIDE_FILES:
            if (source / name).is_file():
                shutil.copyfile(source / name, out_dir / name)
    elif required:
        raise ConvertError(f"{source}: tokenizer file or folder not found")


def parse_size(text: str) -> int:
    """'5GB', '500MB', '2e9' -> bytes."""
    match = re.fullmatch(r"\s*([0-9.eE+]+)\s*([KMG]i?B)?\s*", text)
    units = {None: 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}
    try:
        value = int(float(match.group(1)) * units[match.group(2)]) if match else 0
    except ValueError:
        value = 0
    if value < 1:
        raise ConvertError(f"--max-shard-size: expected a size like 5GB or 500MB, got {text!r}")
    return value
