"""The Hugging Face Llama format, read and written: tensor names, config.json <-> ModelConfig, safetensors weights.

Below `seedcoder.checkpoint` (which loads Hugging Face folders for inference) and `seedcoder.hf_convert` (which
converts them to and from our checkpoints), so that both read HF folders by the same rules.

Names (ours <-> HF LlamaForCausalLM):
    tok_embeddings.weight                  model.embed_tokens.weight
    layers.{i}.attention.w{q,k,v,o}.weight model.layers.{i}.self_attn.{q,k,v,o}_proj.weight
    layers.{i}.feed_forward.w1 / w3 / w2   model.layers.{i}.mlp.gate_proj / up_proj / down_proj
    layers.{i}.attention_norm / ffn_norm   model.layers.{i}.input_layernorm / post_attention_layernorm
    norm.weight / output.weight            model.norm.weight / lm_head.weight
Tensors are used unchanged (no q/k permutation: our rotary uses HF's rotate_half layout), so a round trip is
bitwise. Supported configs: model_type "llama", SiLU, no biases, untied embeddings, head_dim = hidden / heads,
default RoPE (no rope_scaling); anything else is refused with the offending key named.

Weights are memory-mapped from the safetensors files (copy-on-write, never written): pages stream from disk to
wherever the tensors go (a DCP checkpoint, a model's parameters) without a second copy of the model in RAM.
"""

from __future__ import annotations

import json
import mmap
import os
import re
import struct
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from seedcoder.errors import UserError
from seedcoder.model import ModelConfig, Transformer

SAFETENSORS_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}
HF_DTYPE_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


class ConvertError(UserError, ValueError):
    """A Hugging Face folder or checkpoint that cannot be converted or loaded; the message names the file and key."""


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
def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ConvertError(f"{path}: not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ConvertError(f"{path}: not valid JSON ({error})") from None


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


def read_hf_config(hf_dir: str | os.PathLike) -> tuple[dict[str, Any], ModelConfig]:
    """(the config.json dict, its ModelConfig) of Hugging Face folder `hf_dir`."""
    path = Path(hf_dir) / "config.json"
    hf_config = read_json(path)
    return hf_config, config_from_hf(hf_config, str(path))


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


# ------------------------------------------------------------------------------------------ weights
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


def read_hf_weights(hf_dir: str | os.PathLike, cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """{our parameter name: memory-mapped tensor, in its stored dtype} of Hugging Face folder `hf_dir` (sharded
    with an index or not), in state_dict order; every tensor of a `cfg` model, each once, with its shape, and
    nothing else, else ConvertError naming the file and tensor."""
    hf_dir = Path(hf_dir)
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
            state[name] = tensor
    missing = [to_hf_name(name) for name in shapes if name not in state]
    if missing:
        raise ConvertError(f"{hf_dir}: missing tensor(s) {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    return {name: state[name] for name in shapes}


__all__ = [
    "ConvertError",
    "HF_DTYPE_NAMES",
    "SAFETENSORS_DTYPES",
    "config_from_hf",
    "config_to_hf",
    "expected_shapes",
    "from_hf_name",
    "read_hf_config",
    "read_hf_weights",
    "read_json",
    "to_hf_name",
]
