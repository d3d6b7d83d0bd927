"""HF Llama <-> our checkpoints: logits parity, bitwise round trip, config checks, model-only save / load
(seedcoder.checkpoint's, which the conversion writes and reads)."""

import json
import os
import socket
import sys
from pathlib import Path

import pytest
import torch

from seedcoder import cli
from seedcoder.checkpoint import CheckpointError, load_model, load_model_only, save_model_only
from seedcoder.hf_convert import convert_from_hf, convert_to_hf, parse_size
from seedcoder.hf_format import ConvertError, config_from_hf
from seedcoder.model import Transformer, model_config

transformers = pytest.importorskip("transformers")
from safetensors.torch import load_file  # noqa: E402  (a transformers dependency)

HF_SHAPE = dict(vocab_size=300, hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, rms_norm_eps=1e-5, max_position_embeddings=256, tie_word_embeddings=False)


def quiet(*_args, **_kwargs):
    pass


def save_hf_model(path: Path, *, dtype=torch.float32, seed=0, max_shard_size="40KB", **config) -> "transformers.LlamaForCausalLM":
    """A tiny random LlamaForCausalLM saved like a downloaded checkpoint (sharded safetensors + index)."""
    torch.manual_seed(seed)
    hf_config = transformers.LlamaConfig(**{**HF_SHAPE, "rope_theta": 250_000.0, **config})
    model = transformers.LlamaForCausalLM(hf_config).to(dtype).eval()
    with torch.no_grad():  # norms away from 1 so a swapped norm weight would show
        for name, param in model.named_parameters():
            if "norm" in name:
                param.uniform_(0.5, 1.5)
    model.save_pretrained(path, max_shard_size=max_shard_size)
    (path / "tokenizer.json").write_text('{"model": "stand-in"}')
    return model


def hf_tensors(path: Path) -> dict[str, torch.Tensor]:
    tensors = {}
    for file in sorted(path.glob("*.safetensors")):
        tensors.update(load_file(str(file)))
    return tensors


def test_hf_to_ours_same_logits_and_back_bitwise(tmp_path):
    hf_model = save_hf_model(tmp_path / "hf")
    assert (tmp_path / "hf" / "model.safetensors.index.json").exists()  # the sharded layout is exercised
    cfg = convert_from_hf(tmp_path / "hf", tmp_path / "ckpt", log=quiet)
    assert (cfg.dim, cfg.n_layers, cfg.n_heads, cfg.n_kv_heads, cfg.ffn_dim) == (64, 2, 4, 2, 160)
    assert (cfg.rope_theta, cfg.norm_eps, cfg.max_seq_len, cfg.vocab_size) == (250_000.0, 1e-5, 256, 300)

    model = Transformer(cfg)
    load_model_only(tmp_path / "ckpt", model)
    ids = torch.randint(0, 300, (2, 33), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(ids), hf_model(ids).logits, rtol=1e-5, atol=1e-5)
        from_hf, _ = load_model(tmp_path / "hf", device="cpu")  # the HF folder itself, read by the same rules
        assert torch.equal(from_hf(ids), model(ids))

    convert_to_hf(tmp_path / "ckpt", tmp_path / "back", max_shard_bytes=30_000, log=quiet)
    original, back = hf_tensors(tmp_path / "hf"), hf_tensors(tmp_path / "back")
    assert original.keys() == back.keys()
    for name, tensor in original.items():
        assert back[name].dtype == tensor.dtype and torch.equal(back[name], tensor), name
    config_back, config_original = ((tmp_path / d / "config.json").read_text() for d in ("back", "hf"))
    assert json.loads(config_back) == json.loads(config_original)
    index = json.loads((tmp_path / "back" / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(original) and len(set(index["weight_map"].values())) > 1
    assert (tmp_path / "back" / "tokenizer.json").read_text() == '{"model": "stand-in"}'
    reloaded = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "back").eval()
    with torch.no_grad():
        assert torch.equal(reloaded(ids).logits, hf_model(ids).logits)


def test_bf16_checkpoint_round_trip_keeps_dtype_and_legacy_config_keys(tmp_path):
    save_hf_model(tmp_path / "hf", dtype=torch.bfloat16, max_shard_size="10MB")
    config_path = tmp_path / "hf" / "config.json"
    legacy = json.loads(config_path.read_text())  # written the way Seed-Coder-8B-Base's config.json is
    legacy.pop("rope_parameters")
    legacy.pop("dtype", None)
    legacy.update({"rope_theta": 500000.0, "rope_scaling": None, "torch_dtype": "bfloat16"})
    config_path.write_text(json.dumps(legacy))
    cfg = convert_from_hf(tmp_path / "hf", tmp_path / "ckpt", log=quiet)
    assert cfg.rope_theta == 500_000.0
    convert_to_hf(tmp_path / "ckpt", tmp_path / "back", log=quiet)
    assert sorted(p.name for p in (tmp_path / "back").glob("*.safetensors")) == ["model.safetensors"]
    original, back = hf_tensors(tmp_path / "hf"), hf_tensors(tmp_path / "back")
    assert all(back[k].dtype == torch.bfloat16 and torch.equal(back[k], v) for k, v in original.items())
    assert json.loads((tmp_path / "back" / "config.json").read_text()) == legacy
    # --dtype casts on the way out, and the config says so
    convert_to_hf(tmp_path / "ckpt", tmp_path / "fp32", dtype=torch.float32, log=quiet)
    assert json.loads((tmp_path / "fp32" / "config.json").read_text())["torch_dtype"] == "float32"
    assert all(t.dtype == torch.float32 for t in hf_tensors(tmp_path / "fp32").values())


def test_our_checkpoint_to_hf_loads_in_transformers(tmp_path):
    model = Transformer(model_config("debug", rope_theta=10_000.0))
    model.init_weights(seed=3)
    save_model_only(model, tmp_path / "ckpt")
    assert json.loads((tmp_path / "ckpt" / "model_config.json").read_text()) == model.cfg.to_dict()
    hf_config = convert_to_hf(tmp_path / "ckpt", tmp_path / "hf", log=quiet)
    assert hf_config["tie_word_embeddings"] is False and hf_config["rope_theta"] == 10_000.0
    hf_model = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "hf").eval()
    assert hf_model.config.num_key_value_heads == 2 and hf_model.config.head_dim == 16
    ids = torch.randint(0, 256, (2, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(hf_model(ids).logits, model(ids), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------ refusals
def hf_config_dict(**changes):
    config = transformers.LlamaConfig(**HF_SHAPE).to_dict()
    config.update(changes)
    return config


@pytest.mark.parametrize(("changes", "key"), [
    ({"tie_word_embeddings": True}, "tie_word_embeddings"),
    ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "rope_scaling"),
    ({"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0}}, "rope_parameters"),
    ({"attention_bias": True}, "attention_bias"),
    ({"mlp_bias": True}, "mlp_bias"),
    ({"model_type": "mistral"}, "model_type"),
    ({"hidden_act": "gelu"}, "hidden_act"),
    ({"head_dim": 32}, "head_dim"),
    ({"num_key_value_heads": 3}, "n_heads \\(4\\) must be a multiple of n_kv_heads \\(3\\)"),
])
def test_unsupported_hf_configs_are_refused(changes, key):
    with pytest.raises(ConvertError, match=key):
        config_from_hf(hf_config_dict(**changes))


def test_missing_or_misshapen_tensors_are_refused(tmp_path):
    save_hf_model(tmp_path / "hf", max_shard_size="10MB")
    weights = tmp_path / "hf" / "model.safetensors"
    tensors = load_file(str(weights))
    from safetensors.torch import save_file

    save_file({k: v for k, v in tensors.items() if k != "lm_head.weight"}, str(weights))
    with pytest.raises(ConvertError, match="missing tensor\\(s\\) lm_head.weight"):
        convert_from_hf(tmp_path / "hf", tmp_path / "out", log=quiet)
    save_file({**tensors, "model.norm.weight": torch.ones(65)}, str(weights))
    with pytest.raises(ConvertError, match="'model.norm.weight' has shape \\(65,\\)"):
        convert_from_hf(tmp_path / "hf", tmp_path / "out", log=quiet)
    save_file({**tensors, "model.layers.0.self_attn.q_norm.weight": torch.ones(16)}, str(weights))
    with pytest.raises(ConvertError, match="unexpected tensor 'model.layers.0.self_attn.q_norm.weight'"):
        convert_from_hf(tmp_path / "hf", tmp_path / "out", log=quiet)
    assert not (tmp_path / "out").exists() and [p.name for p in tmp_path.iterdir()] == ["hf"]  # nothing left behind
    with pytest.raises(CheckpointError, match="unexpected tensor 'model.layers.0.self_attn.q_norm.weight'"):
        load_model(tmp_path / "hf", device="cpu")  # loading for inference refuses it the same way


def test_output_directory_must_be_new_and_cli_reports_errors(tmp_path, capsys):
    save_hf_model(tmp_path / "hf", max_shard_size="10MB")
    assert cli.main(["convert", "--from-hf", str(tmp_path / "hf"), "--out", str(tmp_path / "ckpt")]) == 0
    assert "converted" in capsys.readouterr().out
    assert cli.main(["convert", "--from-hf", str(tmp_path / "hf"), "--out", str(tmp_path / "ckpt")]) == 1
    assert "already exists" in capsys.readouterr().err
    assert cli.main(["convert", "--to-hf", str(tmp_path / "hf"), "--out", str(tmp_path / "x")]) == 1
    assert "no model_config.json (not a seedcoder checkpoint)" in capsys.readouterr().err
    assert cli.main(["convert", "--to-hf", str(tmp_path / "ckpt"), "--out", str(tmp_path / "back"),
                     "--dtype", "bf16", "--max-shard-size", "20KB"]) == 0
    assert len(list((tmp_path / "back").glob("*.safetensors"))) > 1
    assert cli.main(["convert", "--to-hf", str(tmp_path / "ckpt"), "--out", str(tmp_path / "b2"),
                     "--max-shard-size", "lots"]) == 1
    assert "--max-shard-size" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["convert", "--from-hf", "a", "--to-hf", "b", "--out", "c"])


def test_parse_size():
    assert parse_size("5GB") == 5 * 10**9 and parse_size("500MB") == 5 * 10**8 and parse_size("1GiB") == 2**30
    assert parse_size("2e9") == 2 * 10**9
    with pytest.raises(ConvertError):
        parse_size("0")


# ------------------------------------------------------------------------------------------ model-only checkpoints
def test_model_only_checkpoint_checks_shapes_and_casts(tmp_path):
    model = Transformer(model_config("debug"))
    model.init_weights(seed=1)
    save_model_only(model, tmp_path / "ckpt")
    save_model_only(model, tmp_path / "ckpt")  # replacing an existing checkpoint
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    bf16 = Transformer(model_config("debug", rope_theta=1e6, max_seq_len=4096)).to(torch.bfloat16)  # CPT may change these
    load_model_only(tmp_path / "ckpt", bf16)
    assert torch.equal(bf16.output.weight, model.output.weight.to(torch.bfloat16))
    with pytest.raises(CheckpointError, match="n_layers: checkpoint 2 vs model 3"):
        load_model_only(tmp_path / "ckpt", Transformer(model_config("debug", n_layers=3)))
    with pytest.raises(CheckpointError, match="nowhere: no model_config.json"):
        load_model_only(tmp_path / "nowhere", bf16)


FSDP_SCRIPT = """
import sys, torch, torch.distributed as dist
from torch.distributed.fsdp import fully_shard
from seedcoder.model import Transformer, model_config
from seedcoder.checkpoint import load_model_only, save_model_only
from seedcoder.processes import exit_process, init_process_group
init_process_group("gloo")
plain_dir, out_dir, loss_prefix = sys.argv[1], sys.argv[2], sys.argv[3]
with torch.device("meta"):
    model = Transformer(model_config("debug", vocab_size=250))
for block in model.layers:
    fully_shard(block)
fully_shard(model)
model.to_empty(device="cpu")
load_model_only(plain_dir, model)             # a plain checkpoint into a sharded model
save_model_only(model, out_dir)               # and a sharded model back out
ids = torch.arange(32).view(2, 16) % 250
with open(f"{loss_prefix}{dist.get_rank()}", "w") as f:  # a file per rank: torchrun may interleave stdout lines
    f.write(repr(model(ids, labels=ids).item()))
dist.destroy_process_group()
exit_process(0)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_model_only_checkpoint_with_fsdp_two_ranks(tmp_path):
    import subprocess

    model = Transformer(model_config("debug", vocab_size=250))
    model.init_weights(seed=9)
    save_model_only(model, tmp_path / "plain")
    script = tmp_path / "fsdp.py"
    script.write_text(FSDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TRITON_INTERPRET": "0"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port",
                             str(free_port()), str(script), str(tmp_path / "plain"), str(tmp_path / "sharded"),
                             str(tmp_path / "loss-")],
                            capture_output=True, text=True, env=env, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    losses = [float((tmp_path / f"loss-{rank}").read_text()) for rank in range(2)]
    ids = torch.arange(32).view(2, 16) % 250
    with torch.no_grad():
        expected = model(ids, labels=ids).item()
    assert len(losses) == 2 and all(abs(loss - expected) < 1e-4 * abs(expected) for loss in losses)
    reloaded = Transformer(model_config("debug", vocab_size=250))
    load_model_only(tmp_path / "sharded", reloaded)
    for name, tensor in model.state_dict().items():
        assert torch.equal(reloaded.state_dict()[name], tensor), name


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")
def test_to_hf_accepts_a_checkpoint_saved_from_a_wrapped_model(tmp_path):
    import torch.distributed.checkpoint as dcp

    model = Transformer(model_config("debug"))
    model.init_weights(seed=2)
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    for index, block in enumerate(model.layers):  # torch.compile per block renames the blocks' parameters
        model.layers[index] = torch.compile(block)
    assert any("_orig_mod" in key for key in model.state_dict())
    save_model_only(model, tmp_path / "canonical")  # get_model_state_dict drops the wrapper from the names
    (tmp_path / "raw").mkdir()
    dcp.save({"model": model.state_dict()}, checkpoint_id=str(tmp_path / "raw"), no_dist=True)
    (tmp_path / "raw" / "model_config.json").write_text(json.dumps(model.cfg.to_dict()))
    for name in ("canonical", "raw"):
        convert_to_hf(tmp_path / name, tmp_path / f"hf-{name}", log=quiet)
        back = hf_tensors(tmp_path / f"hf-{name}")
        assert torch.equal(back["model.layers.1.mlp.down_proj.weight"], expected["layers.1.feed_forward.w2.weight"])
        assert len(back) == len(expected)
