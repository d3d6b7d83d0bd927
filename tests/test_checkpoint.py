"""Checkpoints (DCP): round trip of model, optimizer and RNG; keep-last-K; a failure between writing and publishing
leaves the previous checkpoint loadable; model-only loading into a plain model. In-process, one gloo rank."""

import contextlib
import os

import pytest
import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh

from seedcoder import checkpoint as ckpt
from seedcoder.model import Transformer, model_config
from seedcoder.parallelize import parallelize


@contextlib.contextmanager
def process_group(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    try:
        yield init_device_mesh("cpu", (1,))
    finally:
        dist.destroy_process_group()


def sharded_model(mesh, seed=0, **overrides):
    with torch.device("meta"):
        model = Transformer(model_config("debug", **overrides))
    parallelize(model, mesh)
    model.to_empty(device="cpu")
    model.init_weights(seed)
    return model


def train_steps(model, optimizer, steps, seed=0):
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        ids = torch.randint(0, model.cfg.vocab_size, (2, 16), generator=generator)
        model(ids, labels=ids.roll(-1, dims=1)).backward()
        optimizer.step()
        optimizer.zero_grad()


def full_state(model):
    return {name: (p.full_tensor() if hasattr(p, "full_tensor") else p).detach().clone() for name, p in model.named_parameters()}


def optimizer_tensors(optimizer):
    tensors = []
    for state in optimizer.state.values():
        for value in state.values():
            tensors.append(value.full_tensor() if hasattr(value, "full_tensor") else value)
    return tensors


def save(root, step, model, optimizer, keep=None, **train_state):
    return ckpt.save_checkpoint(root, step, model=model, optimizer=optimizer, model_config=model.cfg.to_dict(),
                                train_state={"stage": 0, **train_state}, keep=keep)


def test_round_trip_and_keep_last(tmp_path):
    root = str(tmp_path / "ckpt")
    with process_group(tmp_path) as mesh:
        model = sharded_model(mesh)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
        for step in (1, 2, 3):
            train_steps(model, optimizer, 1, seed=step)
            path = save(root, step, model, optimizer, keep=2, loader={"row": step})
        assert [step for step, _ in ckpt.list_checkpoints(root)] == [2, 3]
        assert sorted(os.listdir(root)) == ["step-00000002", "step-00000003"]  # nothing half-deleted left behind
        assert ckpt.latest_checkpoint(root) == path
        expected_params, expected_optimizer = full_state(model), optimizer_tensors(optimizer)
        expected_random = torch.rand(4)  # the RNG state saved is the one before this draw

        other = sharded_model(mesh, seed=99)
        other_optimizer = torch.optim.AdamW(other.parameters(), lr=1e-2)
        assert not torch.equal(full_state(other)["output.weight"], expected_params["output.weight"])
        state = ckpt.load_checkpoint(path, model=other, optimizer=other_optimizer)
        assert state["step"] == 3 and state["loader"] == {"row": 3} and state["world_size"] == 1
        for name, tensor in full_state(other).items():
            assert torch.equal(tensor, expected_params[name]), name
        for got, want in zip(optimizer_tensors(other_optimizer), expected_optimizer, strict=True):
            assert torch.equal(got, want)
        assert torch.equal(torch.rand(4), expected_random)
        # the restored optimizer continues exactly like the original
        train_steps(model, optimizer, 1, seed=7)
        train_steps(other, other_optimizer, 1, seed=7)
        for name, tensor in full_state(other).items():
            assert torch.equal(tensor, full_state(model)[name]), name


def test_failure_between_write_and_publish_keeps_previous(tmp_path, monkeypatch):
    root = str(tmp_path / "ckpt")
    with process_group(tmp_path) as mesh:
        model = sharded_model(mesh)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
        train_steps(model, optimizer, 1)
        good = save(root, 1, model, optimizer)
        saved = full_state(model)
        train_steps(model, optimizer, 1, seed=1)

        monkeypatch.setenv(ckpt.FAULT_ENV, "checkpoint_publish@2:raise")
        with pytest.raises(RuntimeError, match="injected fault"):
            save(root, 2, model, optimizer)
        monkeypatch.delenv(ckpt.FAULT_ENV)
        temp = os.path.join(root, "step-00000002.tmp")
        assert os.path.isfile(os.path.join(temp, ".metadata"))  # fully written, yet not visible
        assert ckpt.read_train_state(temp)["step"] == 2
        assert ckpt.latest_checkpoint(root) == good

        fresh = sharded_model(mesh, seed=5)
        ckpt.load_checkpoint(ckpt.latest_checkpoint(root), model=fresh, optimizer=torch.optim.AdamW(fresh.parameters()))
        for name, tensor in full_state(fresh).items():
            assert torch.equal(tensor, saved[name]), name

        assert ckpt.remove_incomplete(root) == ["step-00000002.tmp"]
        assert not os.path.exists(temp)
        assert save(root, 2, model, optimizer).endswith("step-00000002")
        assert [step for step, _ in ckpt.list_checkpoints(root)] == [1, 2]


def test_model_only_into_plain_model_without_process_group(tmp_path):
    root = str(tmp_path / "ckpt")
    with process_group(tmp_path) as mesh:
        model = sharded_model(mesh, seed=3)
        path = save(root, 1, model, None)
        expected = full_state(model)
    plain = Transformer(model_config("debug"))  # no process group now, no FSDP
    ckpt.load_model_only(path, plain)
    for name, tensor in plain.named_parameters():
        assert torch.equal(tensor.detach(), expected[name]), name
    assert ckpt.read_model_config(path) == model_config("debug")

    with pytest.raises(ckpt.CheckpointError, match="nowhere"):
        ckpt.load_model_only(str(tmp_path / "nowhere"), plain)
    wider = Transformer(model_config("debug", dim=128))
    with pytest.raises(ckpt.CheckpointError, match=f"{os.path.basename(path)}.*dim: checkpoint 64 vs model 128"):
        ckpt.load_model_only(path, wider)


def test_incomplete_directories_are_not_checkpoints(tmp_path):
    root = tmp_path / "ckpt"
    (root / "step-00000007").mkdir(parents=True)  # no train_state.json: not complete
    (root / "step-00000008.tmp").mkdir()
    (root / "notes").mkdir()
    assert ckpt.list_checkpoints(root) == [] and ckpt.latest_checkpoint(root) is None


def test_damage_is_named_and_resume_takes_the_newest_intact_checkpoint(tmp_path, capsys):
    root = tmp_path / "ckpt"
    with process_group(tmp_path) as mesh:
        model = sharded_model(mesh)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
        states = {}
        for step in (1, 2, 3):
            train_steps(model, optimizer, 1, seed=step)
            save(root, step, model, optimizer)
            states[step] = full_state(model)
        step1, step2, step3 = (root / ckpt.step_dir_name(step) for step in (1, 2, 3))
        assert [ckpt.checkpoint_damage(path) for path in (step1, step2, step3)] == [None] * 3

        (step2 / "train_state.json").write_text('{"format": "seedcoder-checkpoint", "vers')  # cut short
        shard = step3 / "__0_0.distcp"
        shard.write_bytes(bytes(shard.stat().st_size))  # the right size, all zeros: only DCP's load finds out
        assert ckpt.checkpoint_damage(step2).startswith("train_state.json: unreadable (")
        assert ckpt.checkpoint_damage(step3) is None

        fresh = sharded_model(mesh, seed=9)
        path, state = ckpt.resume_latest(root, model=fresh, optimizer=torch.optim.AdamW(fresh.parameters()),
                                         model_config=fresh.cfg.to_dict())
        assert path == str(step1) and state["step"] == 1
        for name, tensor in full_state(fresh).items():
            assert torch.equal(tensor, states[1][name]), name
        warnings = capsys.readouterr().out.splitlines()
        assert len(warnings) == 2 and all(line.startswith("WARNING: checkpoint ") for line in warnings)
        assert f"{step3} is damaged (cannot load the model and optimizer state: " in warnings[0]
        assert f"{step2} is damaged (train_state.json: unreadable (" in warnings[1]
        assert sorted(os.listdir(root)) == ["step-00000001", "step-00000002.damaged", "step-00000003.damaged"]

        with pytest.raises(ckpt.CheckpointError, match="written for another model: the model config differs in dim"):
            ckpt.resume_latest(root, model=fresh, optimizer=torch.optim.AdamW(fresh.parameters()),
                               model_config={**fresh.cfg.to_dict(), "dim": 128})

        (step1 / "rng" / "rank-00000.pt").write_bytes(b"PK")
        assert ckpt.checkpoint_damage(step1).startswith("rng/rank-00000.pt: unreadable (")
        with pytest.raises(ckpt.CheckpointError, match=r"every checkpoint is damaged \(step-00000001: rng/rank-00000.pt"):
            ckpt.resume_latest(root, model=fresh, optimizer=torch.optim.AdamW(fresh.parameters()))
        assert sorted(os.listdir(root)) == ["step-00000001", "step-00000002.damaged", "step-00000003.damaged"]
        assert ckpt.resume_latest(tmp_path / "empty", model=fresh, optimizer=torch.optim.AdamW(fresh.parameters())) is None


def test_checkpoint_damage_names_missing_and_truncated_files(tmp_path):
    with process_group(tmp_path) as mesh:
        model = sharded_model(mesh)
        path = save(tmp_path / "ckpt", 1, model, torch.optim.AdamW(model.parameters()))
    metadata = os.path.join(path, ".metadata")
    with open(metadata, "rb") as file:
        whole = file.read()
    with open(metadata, "wb") as file:
        file.write(whole[: len(whole) // 2])
    assert ckpt.checkpoint_damage(path).startswith(".metadata: unreadable (")
    with open(metadata, "wb") as file:
        file.write(whole)
    os.rename(os.path.join(path, "__0_0.distcp"), os.path.join(path, "moved.distcp"))
    assert ckpt.checkpoint_damage(path) == "__0_0.distcp: missing"
    os.remove(os.path.join(path, "model_config.json"))
    assert ckpt.checkpoint_damage(path) == "no model_config.json (not a seedcoder checkpoint)"
