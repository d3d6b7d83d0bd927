"""DPO and GRPO on 2 gloo ranks (FSDP2, seedcoder.posttrain.policy) against one process, fp32 on the CPU.

* Gradients (torch.multiprocessing, 2 ranks): the DPO loss of a minibatch split 3 + 2 pairs, and the GRPO
  token-level loss of samples of different lengths split unevenly, each rank's loss divided by the GLOBAL pair or
  token count; FSDP2 sums the ranks' gradients, which must equal one process's gradient of the whole batch
  (measured: max abs difference 3e-8 on gradients up to 0.28; asserted 2e-7).
* The command lines under torchrun (`-m seedcoder.posttrain.dpo` / `grpo` with the tiny demo configs) against the
  same command in one process. GRPO, with a sharded KL reference, 3 prompts per step on 2 ranks and a 2-rank
  resume halfway: every per-step metric within 2.4e-7 (asserted 1e-5), the engine/trainer parity within 1e-7,
  final weights within 1.2e-7 (asserted 1e-5). DPO: the same mined pairs (rank 0 mines), per-step metrics within
  3.3e-6 (asserted 1e-5), final weights within 4.8e-4 after 4 steps at lr 3e-3 (asserted 2e-3): many of the
  head's gradient components are ~1e-10, and Adam normalises them to steps of up to lr, so their last-bit
  differences (the reference log-probs are scored in other batch shapes on 2 ranks) grow to a fraction of lr;
  the gradients themselves are checked above.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from seedcoder.checkpoint import load_model
from seedcoder.posttrain.dpo import dpo_loss, reference_logprobs, sequence_logprobs
from seedcoder.posttrain.grpo import grpo_token_loss
from seedcoder.posttrain.policy import (
    PolicySection,
    all_reduce_sum,
    init_data_parallel,
    load_policy,
    load_sharded_policy,
    response_logprobs,
)
from seedcoder.processes import exit_process

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, "configs")

pytestmark = [pytest.mark.filterwarnings("ignore:torch.distributed is disabled:UserWarning"),
              pytest.mark.usefixtures("one_torch_thread")]


# ------------------------------------------------------------------------------------------ gradients
def _pairs() -> list[dict]:
    """Five toy pairs of different lengths (the toy tokenizer has 16 ids)."""
    g = torch.Generator().manual_seed(3)
    draw = lambda n: torch.randint(1, 16, (n,), generator=g).tolist()  # noqa: E731
    return [{"prompt_ids": draw(2 + i % 3), "chosen_ids": draw(1 + i % 2), "rejected_ids": draw(3 - i % 2)} for i in range(5)]


def _dpo_gradient_loss(model, rank: int, world: int) -> torch.Tensor:
    pairs = _pairs()
    ref_chosen, ref_rejected = reference_logprobs(model, pairs, batch_size=2)
    ref_chosen, ref_rejected = ref_chosen - 0.3, ref_rejected + 0.2  # a reference other than the policy: h != 0
    mine = list(range(len(pairs)))[rank::world]
    prompts = [pairs[i]["prompt_ids"] for i in mine] * 2
    lp = sequence_logprobs(model, prompts, [pairs[i]["chosen_ids"] for i in mine] + [pairs[i]["rejected_ids"] for i in mine])
    loss, _ = dpo_loss(lp[: len(mine)], lp[len(mine):], ref_chosen[mine], ref_rejected[mine], beta=0.5)
    return loss * len(mine) / len(pairs)


def _grpo_gradient_loss(model, rank: int, world: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(5)
    lengths = [1, 4, 2, 6, 3, 5, 2]  # rank 0 gets 1 + 2 + 3 + 2 tokens, rank 1 4 + 6 + 5
    prompts = [torch.randint(1, 16, (3,), generator=g).tolist() for _ in lengths]
    responses = [torch.randint(1, 16, (n,), generator=g).tolist() for n in lengths]
    advantages = torch.randn(len(lengths), generator=g)
    noise = 0.1 * torch.randn((len(lengths), max(lengths)), generator=g)  # ratios away from 1, some clipped
    mine = list(range(len(lengths)))[rank::world]
    logprobs, mask = response_logprobs(model, [prompts[i] for i in mine], [responses[i] for i in mine])
    old = logprobs.detach() + noise[mine, : logprobs.shape[1]]
    tokens = int(all_reduce_sum([int(mask.sum())])[0])
    assert tokens == sum(lengths)
    loss, _ = grpo_token_loss(logprobs, old, advantages[mine], mask, num_tokens=tokens)
    return loss


LOSSES = {"dpo": _dpo_gradient_loss, "grpo": _grpo_gradient_loss}


def _gradients(model) -> dict[str, torch.Tensor]:
    return {name: (p.grad.full_tensor() if hasattr(p.grad, "full_tensor") else p.grad).clone()
            for name, p in model.named_parameters()}


def _gradient_worker(rank: int, world: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist_env = init_data_parallel()
    try:
        result = {}
        for name, loss_fn in LOSSES.items():
            model, _ = load_sharded_policy(PolicySection(seed=1), dist_env)
            loss_fn(model, rank, world).backward()  # FSDP2 sums the ranks' gradients
            result[name] = _gradients(model)
        if rank == 0:
            torch.save(result, out)
    finally:
        dist.destroy_process_group()
    exit_process(0)  # no interpreter finalization racing gloo's threads (seedcoder.processes)


def _free_port() -> int:
    import socket  # noqa: PLC0415 (only this helper needs it)

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_sharded_gradients_equal_one_process(tmp_path):
    out = str(tmp_path / "grads.pt")
    mp.spawn(_gradient_worker, args=(2, _free_port(), out), nprocs=2, join=True)
    sharded = torch.load(out)
    for name, loss_fn in LOSSES.items():
        model, _ = load_policy(PolicySection(seed=1))
        loss_fn(model, 0, 1).backward()
        single = _gradients(model)
        assert single.keys() == sharded[name].keys()
        largest = max(float(g.abs().max()) for g in single.values())
        assert largest > 1e-3, name  # a gradient worth comparing
        for key, grad in single.items():
            torch.testing.assert_close(sharded[name][key], grad, rtol=0, atol=2e-7, msg=f"{name}: {key}")


# ------------------------------------------------------------------------------------------ command lines
def _run(module: str, out_dir, *args: str, ranks: int = 1) -> None:
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}"] if ranks > 1 else []
    command = [sys.executable, *launcher, "-m", f"seedcoder.posttrain.{module}", f"--output.dir={out_dir}", *args]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr[-4000:]}"


def _records(out_dir) -> list[dict]:
    with open(os.path.join(out_dir, "metrics.jsonl")) as file:
        return [json.loads(line) for line in file]


def _compare_records(single: list[dict], ranks: list[dict], atol: float) -> float:
    """Equal keys and integers, floats within atol; returns the largest float difference."""
    assert [r["step"] for r in ranks] == [r["step"] for r in single]
    worst = 0.0
    for a, b in zip(single, ranks):
        assert a.keys() == b.keys(), a.keys() ^ b.keys()
        for key, value in a.items():
            if key == "seconds":
                continue
            if isinstance(value, float):
                worst = max(worst, abs(value - b[key]))
                assert b[key] == pytest.approx(value, abs=atol), (a["step"], key)
            else:
                assert b[key] == value, (a["step"], key)
    return worst


def _weight_difference(dir_a, dir_b) -> float:
    model_a, _ = load_model(os.path.join(dir_a, "checkpoints"))
    model_b, _ = load_model(os.path.join(dir_b, "checkpoints"))
    return max(float((a - b).abs().max()) for a, b in zip(model_a.state_dict().values(), model_b.state_dict().values()))


@pytest.mark.slow
def test_grpo_on_two_ranks_matches_one_process_and_resumes(tmp_path):
    args = [f"--config={CONFIGS}/grpo_tiny_demo.toml", "--grpo.prompts_per_step=3", "--grpo.group_size=8",
            "--grpo.max_tokens=2", "--grpo.kl_coef=0.05", "--output.checkpoint_every=0"]
    _run("grpo", tmp_path / "one", *args, "--grpo.steps=4")
    _run("grpo", tmp_path / "two", *args, "--grpo.steps=2", ranks=2)
    _run("grpo", tmp_path / "two", *args, "--grpo.steps=4", ranks=2)  # resumes at step 3 from the step-2 checkpoint
    single, ranks = _records(tmp_path / "one"), _records(tmp_path / "two")
    assert sum(r["samples_trained"] for r in single) > 0 and any(r["kl"] > 0 for r in single)
    _compare_records(single, ranks, atol=1e-5)
    assert all(r["parity_mean_abs_diff"] < 1e-5 for r in ranks if "parity_mean_abs_diff" in r)
    assert _weight_difference(tmp_path / "one", tmp_path / "two") < 1e-5


@pytest.mark.slow
def test_dpo_on_two_ranks_matches_one_process(tmp_path):
    args = [f"--config={CONFIGS}/dpo_tiny_demo.toml", "--mine.k=8", "--dpo.batch_size=5", "--dpo.steps=4",
            "--output.checkpoint_every=0"]
    _run("dpo", tmp_path / "one", *args)
    _run("dpo", tmp_path / "two", *args, ranks=2)
    pairs = (tmp_path / "one" / "pairs.jsonl").read_text()
    assert pairs.count("\n") >= 5 and (tmp_path / "two" / "pairs.jsonl").read_text() == pairs  # mined on rank 0
    single, ranks = _records(tmp_path / "one"), _records(tmp_path / "two")
    _compare_records(single, ranks, atol=1e-5)
    assert single[-1]["loss"] < single[0]["loss"]
    assert _weight_difference(tmp_path / "one", tmp_path / "two") < 2e-3  # Adam on ~1e-10 gradients: module docstring


@pytest.mark.slow
def test_grpo_rank_without_prompts_keeps_in_step(tmp_path):
    """One prompt per step on 2 ranks: rank 1 has no group and runs one masked row through FSDP2's collectives."""
    args = [f"--config={CONFIGS}/grpo_tiny_demo.toml", "--grpo.prompts_per_step=1", "--grpo.group_size=8",
            "--grpo.max_tokens=2", "--grpo.steps=2", "--output.checkpoint_every=0"]
    _run("grpo", tmp_path / "one", *args)
    _run("grpo", tmp_path / "two", *args, ranks=2)
    single = _records(tmp_path / "one")
    assert all(r["samples_trained"] == 8 for r in single)  # both steps train (rank 0's group only)
    _compare_records(single, _records(tmp_path / "two"), atol=1e-5)
    assert _weight_difference(tmp_path / "one", tmp_path / "two") < 1e-5


def test_dpo_minibatch_smaller_than_the_ranks_is_a_config_error(tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"prompt_ids": [1, 2], "chosen_ids": [3], "rejected_ids": [4]}) + "\n")
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    command = [sys.executable, *launcher, "-m", "seedcoder.posttrain.dpo", f"--config={CONFIGS}/dpo_tiny_demo.toml",
               f"--data.pairs={pairs}", f"--output.dir={tmp_path / 'out'}"]
    result = subprocess.run(command, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode != 0
    assert ("seedcoder.posttrain.dpo: config key 'dpo.batch_size': a minibatch of 1 pair(s) cannot feed 2 ranks"
            in result.stderr)
