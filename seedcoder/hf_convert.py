"""Hugging Face Llama folders <-> our checkpoints, and model-only checkpoint save / load.

    seedcoder convert --from-hf Seed-Coder-8B-Base/ --out ckpt/seedcoder-8b      # fine-tune released weights
    seedcoder convert --to-hf ckpt/step-001000 --out hf/my-model [--dtype bf16]  # serve with transformers / vLLM

Our checkpoint (shared with the trainer): a directory holding `model_config.json` (ModelConfig.to_dict()) and a
`torch.distributed.checkpoint` (DCP) state dict saved as {"model": model.state_dict()}, i.e. tensors named
"model.<our parameter name>". The trainer's checkpoints add optimizer, loader, ... entries next to "model";
model-only readers ignore them. A checkpoint converted from HF also keeps the source folder's config.json and
tokenizer / generation files under `hf/`, so converting back reproduces the same config.json.

Names (ours <-> HF LlamaForCausalLM):
    tok_embeddings.weight                  model.embed_tokens.weight
    layers.{i}.attention.w{q,k,v,o}.weight model.layers.{i}.self_attn.{q,k,v,o}_proj.weight
    layers.{i}.feed_forward.w1 / w3 / w2   model.layers.{i}.mlp.gate_proj / up_proj / down_proj
    layers.{i}.attention_norm / ffn_norm   model.layers.{i}.input_layernorm / post_attention_layernorm
    norm.weight / output.weight            model.norm.weight / lm_head.weight
Tensors are copied unchanged (no q/k permutation: our rotary uses HF's rotate_half layout), so a round trip
is bitwise. Supported configs: model_type "llama", SiLU, no biases, untied embeddings, head_dim = hidden /
heads, default RoPE (no rope_scaling); anything else is refused with the offending key named.

Memory: from-hf memory-maps the safetensors files and hands the mapped tensors to DCP, so pages stream from
disk to the checkpoint without a second copy of the model in RAM (a --dtype cast materializes the cast
tensors). to-hf reads the checkpoint one output shard at a time (≤ max_shard_bytes, 5 GB by default; peak
memory about twice the largest shard, as safetensors serializes a shard in memory).
Outputs appear atomically: everything is written into a sibling temporary directory that is renamed at the end.
"""

from __future__ import annotations

import json
import mmap
import os
import re
import shutil
import struct
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp

from seedcoder.model import ModelConfig, Transformer

MODEL_CONFIG_FILE = "model_config.json"
HF_FILES_DIR = "hf"  # inside our checkpoint: the HF folder's config.json and tokenizer / generation files
HF_SIDE_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                 "generation_config.json", "added_tokens.json")
DEFAULT_MAX_SHARD_BYTES = 5 * 10**9
# Architecture fields of config.json that ModelConfig determines (used to check a kept hf/config.json).
SHAPE_FIELDS = ("vocab_size", "dim", "n_layers", "n_heads", "n_kv_heads", "ffn_dim")

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
SAFETENSORS_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}
HF_DTYPE_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


class ConvertError(ValueError):
    """A checkpoint or HF folder that cannot be converted or loaded; the message names the file and key."""


# ------------------------------------------------------------------------------------------ names
_LAYER_NAMES = {  # ours (inside layers.{i}.) -> HF (inside model.layers.{i}.)
    "attention.wq.weight": "self_attn.q_proj.weight",
    "attention.wk.weight": "self_attn.k_proj.weight",
    "attention.wv.weight": "self_attn.v_proj.weight",
    "attention.wo.weight": "self_attn.o_proj.weight",
    "feed_forward.w1.weight": "mlp.gate_proj.weight",
    "feed_forward.w3.weight": "mlp.up_proj.weight",
    "feed_forward.w2.weight": "mlp.down_proj.weight",
    "attention_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
}
_TOP_NAMES = {"tok_embeddings.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight",
              "output.weight": "lm_head.weight"}
_HF_LAYER_NAMES = {hf: ours for ours, hf in _LAYER_NAMES.items()}
_HF_TOP_NAMES = {hf: ours for ours, hf in _TOP_NAMES.items()}
_OUR_LAYER = re.compile(r"layers\.(\d+)\.(.+)")
_HF_LAYER = re.compile(r"model\.layers\.(\d+)\.(.+)")
_HF_IGNORED = re.compile(r"model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq")  # a buffer some old exports saved


def to_hf_name(name: str) -> str:
    if name in _TOP_NAMES:
        return _TOP_NAMES[name]
    match = _OUR_LAYER.fullmatch(name)
    if match and match.group(2) in _LAYER_NAMES:
        return f"model.layers.{match.group(1)}.{_LAYER_NAMES[match.group(2)]}"
    raise ConvertError(f"no Hugging Face name for parameter {name!r}")


def from_hf_name(name: str) -> str | None:
    """Our name for an HF tensor name; None for an unknown name."""
    if name in _HF_TOP_NAMES:
        return _HF_TOP_NAMES[name]
    match = _HF_LAYER.fullmatch(name)
    if match and match.group(2) in _HF_LAYER_NAMES:
        return f"layers.{match.group(1)}.{_HF_LAYER_NAMES[match.group(2)]}"
    return None


def expected_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Our parameter names -> shapes, in state_dict order (the model built on the meta device)."""
    with torch.device("meta"):
        model = Transformer(cfg)
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


# ------------------------------------------------------------------------------------------ configs
def config_from_hf(hf: dict[str, Any], source: str = "config.json") -> ModelConfig:
    """ModelConfig for an HF Llama config.json dict; unsupported settings raise ConvertError naming the key."""
    def need(key):
        if key not in hf:
            raise ConvertError(f"{source}: missing {key!r}")
        return hf[key]

    def refuse(key, why):
        raise ConvertError(f"{source}: {key} = {hf.get(key)!r} is not supported ({why})")

    if hf.get("model_type") != "llama":
        refuse("model_type", "only Llama-architecture models (model_type 'llama') convert")
    if hf.get("hidden_act", "silu") != "silu":
        refuse("hidden_act", "the MLP is SwiGLU with SiLU")
    for key in ("attention_bias", "mlp_bias"):
        if hf.get(key, False):
            refuse(key, "the model has no biases")
    if hf.get("tie_word_embeddings", False):
        refuse("tie_word_embeddings", "the output head is untied from the embedding; it must be false")
    if hf.get("attention_dropout", 0.0):
        refuse("attention_dropout", "attention dropout is not implemented")
    if hf.get("rope_scaling") is not None:
        refuse("rope_scaling", "only default RoPE is implemented; scaled RoPE (llama3, linear, dynamic, yarn) is not")
    rope_theta = hf.get("rope_theta")
    rope_parameters = hf.get("rope_parameters")
    if rope_parameters is not None:  # transformers >= 5 style
        if not isinstance(rope_parameters, dict) or rope_parameters.get("rope_type", "default") != "default" \
                or set(rope_parameters) - {"rope_type", "rope_theta"}:
            refuse("rope_parameters", "only default RoPE ({'rope_type': 'default', 'rope_theta': ...}) is implemented")
        rope_theta = rope_parameters.get("rope_theta", rope_theta)
    hidden, heads = need("hidden_size"), need("num_attention_heads")
    head_dim = hf.get("head_dim")
    if head_dim is not None and isinstance(hidden, int) and isinstance(heads, int) and heads and head_dim != hidden // heads:
        refuse("head_dim", f"head_dim must equal hidden_size / num_attention_heads = {hidden // heads}")
    fields = {
        "vocab_size": need("vocab_size"), "dim": hidden, "n_layers": need("num_hidden_layers"), "n_heads": heads,
        "n_kv_heads": hf.get("num_key_value_heads") or heads, "ffn_dim": need("intermediate_size"),
        "rope_theta": 10000.0 if rope_theta is None else rope_theta,  # transformers' default
        "norm_eps": hf.get("rms_norm_eps", 1e-6), "max_seq_len": hf.get("max_position_embeddings", 32768),
        "init_std": hf.get("initializer_range", 0.02),
    }
    try:
        return ModelConfig.from_dict(fields)
    except ValueError as error:
        raise ConvertError(f"{source}: {error}") from None


def config_to_hf(cfg: ModelConfig, dtype: torch.dtype, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """An HF LlamaForCausalLM config.json dict. With `base` (the config.json a checkpoint came from) its other
    keys (token ids, ...) are kept and only what ModelConfig and the dtype determine is rewritten, in place."""
    hf = dict(base) if base is not None else {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
        "attention_bias": False, "mlp_bias": False, "attention_dropout": 0.0, "tie_word_embeddings": False,
        "rope_scaling": None, "use_cache": True,
    }
    hf.update({"vocab_size": cfg.vocab_size, "hidden_size": cfg.dim, "num_hidden_layers": cfg.n_layers,
               "num_attention_heads": cfg.n_heads, "num_key_value_heads": cfg.n_kv_heads,
               "intermediate_size": cfg.ffn_dim, "rms_norm_eps": cfg.norm_eps,
               "max_position_embeddings": cfg.max_seq_len, "initializer_range": cfg.init_std})
    if "head_dim" in hf or base is None:
        hf["head_dim"] = cfg.head_dim
    if isinstance(hf.get("rope_parameters"), dict):
        hf["rope_parameters"] = {**hf["rope_parameters"], "rope_theta": cfg.rope_theta}
    else:
        hf["rope_theta"] = cfg.rope_theta
    dtype_key = "dtype" if "dtype" in hf and "torch_dtype" not in hf else "torch_dtype"
    hf[dtype_key] = HF_DTYPE_NAMES[dtype]
    return hf


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ConvertError(f"{path}: not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ConvertError(f"{path}: not valid JSON ({error})") from None


def write_json(path: Path, value: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=2) + "\n")
    os.replace(tmp, path)


def read_model_config(ckpt_dir: str | os.PathLike) -> ModelConfig:
    path = Path(ckpt_dir) / MODEL_CONFIG_FILE
    try:
        return ModelConfig.from_dict(read_json(path))
    except ConvertError:
        raise
    except ValueError as error:
        raise ConvertError(f"{path}: {error}") from None


# ------------------------------------------------------------------------------------------ safetensors
def _safetensors_tensors(path: Path) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) for every tensor of a .safetensors file, memory-mapped (copy-on-write, never written)."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(8)
        if len(head) < 8:
            raise ConvertError(f"{path}: truncated safetensors file")
        (header_len,) = struct.unpack("<Q", head)
        if header_len > min(size - 8, 100 * 2**20):
            raise ConvertError(f"{path}: bad safetensors header length {header_len}")
        try:
            header = json.loads(f.read(header_len))
        except json.JSONDecodeError as error:
            raise ConvertError(f"{path}: bad safetensors header ({error})") from None
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY) if size > 8 + header_len else None
    data_start = 8 + header_len
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = SAFETENSORS_DTYPES.get(info.get("dtype"))
        if dtype is None:
            raise ConvertError(f"{path}: tensor {name!r} has dtype {info.get('dtype')!r}; expected one of "
                               f"{', '.join(SAFETENSORS_DTYPES)}")
        shape, (begin, end) = tuple(info["shape"]), info["data_offsets"]
        numel = 1
        for d in shape:
            numel *= d
        itemsize = torch.empty((), dtype=dtype).element_size()
        if end - begin != numel * itemsize or begin < 0 or data_start + end > size:
            raise ConvertError(f"{path}: tensor {name!r} has inconsistent offsets {info['data_offsets']} for shape {shape}")
        if numel == 0:
            yield name, torch.empty(shape, dtype=dtype)
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tensor = torch.frombuffer(mapped, dtype=dtype, count=numel, offset=data_start + begin)
        yield name, tensor.view(shape)


def _hf_weight_files(hf_dir: Path) -> list[Path]:
    index = hf_dir / "model.safetensors.index.json"
    if index.exists():
        weight_map = read_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise ConvertError(f"{index}: missing or empty 'weight_map'")
        return [hf_dir / name for name in dict.fromkeys(weight_map.values())]
    files = sorted(hf_dir.glob("*.safetensors"))
    if not files:
        bins = sorted(p.name for p in hf_dir.glob("*.bin"))
        hint = f" (found {', '.join(bins)}: re-save it with safe_serialization=True)" if bins else ""
        raise ConvertError(f"{hf_dir}: no *.safetensors weights{hint}")
    return files


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


def _dist_on() -> bool:
    return dist.is_available() and dist.is_initialized()


def _dcp(op, state: dict, ckpt_dir: Path, *, single_process: bool) -> None:
    """dcp.save / dcp.load, without DCP's warning that a single-process call is single-process."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        op(state, checkpoint_id=str(ckpt_dir), no_dist=single_process)


# ------------------------------------------------------------------------------------------ HF -> ours
def convert_from_hf(hf_dir: str | os.PathLike, out_dir: str | os.PathLike, *, dtype: torch.dtype | None = None,
                    log=print) -> ModelConfig:
    """An HF Llama folder (config.json + safetensors, sharded or not) -> our checkpoint directory out_dir."""
    hf_dir, out_dir = Path(hf_dir), Path(out_dir)
    hf_config = read_json(hf_dir / "config.json")
    cfg = config_from_hf(hf_config, str(hf_dir / "config.json"))
    shapes = expected_shapes(cfg)
    state: dict[str, torch.Tensor] = {}
    for path in _hf_weight_files(hf_dir):
        if not path.exists():
            raise ConvertError(f"{path}: listed in the index but missing")
        for hf_name, tensor in _safetensors_tensors(path):
            name = from_hf_name(hf_name)
            if name is None:
                if _HF_IGNORED.fullmatch(hf_name):
                    continue
                raise ConvertError(f"{path}: unexpected tensor {hf_name!r} (not part of a Llama model)")
            if name not in shapes:
                raise ConvertError(f"{path}: tensor {hf_name!r} does not exist in a {cfg.n_layers}-layer model")
            if tuple(tensor.shape) != shapes[name]:
                raise ConvertError(f"{path}: tensor {hf_name!r} has shape {tuple(tensor.shape)}, config.json implies "
                                   f"{shapes[name]}")
            if name in state:
                raise ConvertError(f"{path}: tensor {hf_name!r} appears twice")
            state[name] = tensor if dtype is None else tensor.to(dtype)
    missing = [to_hf_name(name) for name in shapes if name not in state]
    if missing:
        raise ConvertError(f"{hf_dir}: missing tensor(s) {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    state = {name: state[name] for name in shapes}  # state_dict order
    tmp = _start_output(out_dir)
    try:
        _dcp(dcp.save, {"model": state}, tmp, single_process=True)
        write_json(tmp / MODEL_CONFIG_FILE, cfg.to_dict())
        (tmp / HF_FILES_DIR).mkdir()
        write_json(tmp / HF_FILES_DIR / "config.json", hf_config)
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
_WRAPPER_PARTS = re.compile(r"(_checkpoint_wrapped_module|_orig_mod|_fsdp_wrapped_module)\.")  # activation checkpointing,
# torch.compile and FSDP1 wrappers, in case a checkpoint was saved from model.state_dict() of a wrapped model


def _checkpoint_tensors(ckpt_dir: Path) -> dict[str, tuple[str, Any]]:
    """{our parameter name: (stored key, DCP tensor metadata)} for the "model" entries of a checkpoint."""
    if not (ckpt_dir / ".metadata").is_file():
        raise ConvertError(f"{ckpt_dir}: not a torch.distributed.checkpoint directory (no .metadata)")
    metadata = dcp.FileSystemReader(str(ckpt_dir)).read_metadata()
    return {_WRAPPER_PARTS.sub("", key[len("model."):]): (key, meta)
            for key, meta in metadata.state_dict_metadata.items() if key.startswith("model.")}


def convert_to_hf(ckpt_dir: str | os.PathLike, out_dir: str | os.PathLike, *, dtype: torch.dtype | None = None,
                  max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES, tokenizer: str | os.PathLike | None = None,
                  log=print) -> dict[str, Any]:
    """Our checkpoint -> an HF folder (config.json + model.safetensors, or shards + index above max_shard_bytes)
    that transformers' LlamaForCausalLM.from_pretrained loads. dtype None keeps the stored dtype. tokenizer: a
    tokenizer.json file, or a folder whose tokenizer / generation files are copied (default: the checkpoint's hf/)."""
    ckpt_dir, out_dir = Path(ckpt_dir), Path(out_dir)
    cfg = read_model_config(ckpt_dir)
    shapes = expected_shapes(cfg)
    stored = _checkpoint_tensors(ckpt_dir)
    missing = [name for name in shapes if name not in stored]
    extra = [name for name in stored if name not in shapes]
    if missing or extra:
        raise ConvertError(f"{ckpt_dir}: the model entries do not match {MODEL_CONFIG_FILE} (missing: {missing[:5]}, "
                           f"unexpected: {extra[:5]})")
    for name, shape in shapes.items():
        if tuple(stored[name][1].size) != shape:
            raise ConvertError(f"{ckpt_dir}: model.{name} has shape {tuple(stored[name][1].size)}, {MODEL_CONFIG_FILE} "
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
        if any(getattr(kept_cfg, f) != getattr(cfg, f) for f in SHAPE_FIELDS):
            base_config = None  # the model was reshaped since; write a fresh config
    tmp = _start_output(out_dir)
    try:
        weight_map, total = {}, 0
        for index, names in enumerate(shards):
            file_name = "model.safetensors" if len(shards) == 1 else f"model-{index + 1:05d}-of-{len(shards):05d}.safetensors"
            buffers = {stored[name][0]: torch.empty(shapes[name], dtype=stored[name][1].properties.dtype) for name in names}
            _dcp(dcp.load, buffers, ckpt_dir, single_process=True)
            tensors = {to_hf_name(name): buffers.pop(stored[name][0]).to(out_dtype).contiguous() for name in names}
            save_file(tensors, str(tmp / file_name), metadata={"format": "pt"})
            for hf_name, t in tensors.items():
                weight_map[hf_name] = file_name
                total += t.numel() * t.element_size()
            del tensors
        if len(shards) > 1:
            write_json(tmp / "model.safetensors.index.json", {"metadata": {"total_size": total}, "weight_map": weight_map})
        write_json(tmp / "config.json", config_to_hf(cfg, out_dtype, base_config))
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
        shutil.copyfile(source, out_dir / "tokenizer.json")
    elif source.is_dir():
        for name in HF_SIDE_FILES:
            if (source / name).is_file():
                shutil.copyfile(source / name, out_dir / name)
    elif required:
        raise ConvertError(f"{source}: tokenizer file or folder not found")


# ------------------------------------------------------------------------------------------ model-only state
def save_model_state(model: Transformer, ckpt_dir: str | os.PathLike) -> None:
    """Write model_config.json + the DCP {"model": state} to ckpt_dir (replaced if it exists).

    Collective when torch.distributed is initialized (every rank calls it; a sharded model saves its shards).
    The directory appears complete or not at all: ranks write into `<ckpt_dir>.partial`, rank 0 renames it.
    """
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    ckpt_dir = Path(ckpt_dir)
    partial = ckpt_dir.with_name(ckpt_dir.name + ".partial")
    distributed = _dist_on()
    rank0 = not distributed or dist.get_rank() == 0
    if rank0:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
    if distributed:
        dist.barrier()
    _dcp(dcp.save, {"model": get_model_state_dict(model)}, partial, single_process=not distributed)
    if rank0:
        write_json(partial / MODEL_CONFIG_FILE, model.cfg.to_dict())
        if ckpt_dir.exists():
            old = ckpt_dir.with_name(ckpt_dir.name + ".old")
            shutil.rmtree(old, ignore_errors=True)
            os.rename(ckpt_dir, old)
            os.rename(partial, ckpt_dir)
            shutil.rmtree(old)
        else:
            os.rename(partial, ckpt_dir)
    if distributed:
        dist.barrier()


def load_model_state(ckpt_dir: str | os.PathLike, model: Transformer) -> ModelConfig:
    """Load the "model" entries of a checkpoint (ours or the trainer's) into model, in place; returns the stored
    config. Plain and FSDP-sharded models (each rank reads its shards; collective then). The stored shape fields
    must match model.cfg; rope_theta / max_seq_len / norm_eps / init_std may differ (continued pretraining
    changes RoPE θ and the context length). Stored tensors are cast to the model's dtypes."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, set_model_state_dict

    ckpt_dir = Path(ckpt_dir)
    stored = read_model_config(ckpt_dir)
    different = [f"{f}: checkpoint {getattr(stored, f)} vs model {getattr(model.cfg, f)}"
                 for f in SHAPE_FIELDS if getattr(stored, f) != getattr(model.cfg, f)]
    if different:
        raise ConvertError(f"{ckpt_dir / MODEL_CONFIG_FILE}: does not match the model ({'; '.join(different)})")
    if not (ckpt_dir / ".metadata").is_file():
        raise ConvertError(f"{ckpt_dir}: not a torch.distributed.checkpoint directory (no .metadata)")
    state = get_model_state_dict(model)
    _dcp(dcp.load, {"model": state}, ckpt_dir, single_process=not _dist_on())
    set_model_state_dict(model, state)
    return stored


DTYPE_CHOICES = tuple(DTYPES)


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
