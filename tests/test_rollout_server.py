"""GRPO's rollouts from our OpenAI-compatible server (seedcoder.posttrain.rollout_server, seedcoder/serve.py's
/v1/weights), the server started in a subprocess on the policy's starting weights: every step pushes the trainer's
weights (the version increments, and every answer names it), the samples equal the embedded engine's (same seeds,
same weights), the log-prob parity between server and trainer holds, and bad or stale updates are refused."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest
import torch
from safetensors.torch import save_file

from seedcoder.checkpoint import load_model, save_model_only
from seedcoder.posttrain.grpo import GRPOConfig, RolloutSection, grpo_train, main
from seedcoder.posttrain.policy import PolicySection, load_policy
from seedcoder.posttrain.rewards import prefix_reward_fn
from seedcoder.posttrain.rollout_server import RolloutServerError, ServerRollouts
from seedcoder.posttrain.run_config import toy_problems
from seedcoder.sampling import SamplingParams

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = [pytest.mark.filterwarnings("ignore:torch.distributed is disabled:UserWarning"),
              pytest.mark.usefixtures("one_torch_thread")]
POLICY = PolicySection(seed=3)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`seedcoder serve` of the policy's starting weights (model-only checkpoint + the toy tokenizer), fp32 on the CPU."""
    folder = tmp_path_factory.mktemp("served")
    model, tokenizer = load_policy(POLICY)
    save_model_only(model, folder / "model")
    tokenizer.save(str(folder / "tokenizer.json"))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "seedcoder.cli", "serve", "--checkpoint", str(folder / "model"), "--tokenizer",
               str(folder / "tokenizer.json"), "--port", str(port), "--device", "cpu", "--dtype", "fp32", "--threads", "1",
               "--served-model-name", "policy"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 120
    while True:
        try:
            ServerRollouts(url, tokenizer, weights_dir=folder / "unused")
            break
        except RolloutServerError:
            assert process.poll() is None and time.monotonic() < deadline, process.stdout.read() if process.poll() else "timeout"
            time.sleep(0.2)
    yield url
    process.terminate()
    process.wait(timeout=30)


def test_grpo_steps_sample_from_the_pushed_weights(server, tmp_path):
    config = GRPOConfig(steps=3, prompts_per_step=2, group_size=8, max_tokens=2, lr=3e-3, filter_overlong=False)
    embedded_model, tokenizer = load_policy(POLICY)
    embedded = grpo_train(embedded_model, tokenizer, toy_problems(), prefix_reward_fn, config)
    served_model, _ = load_policy(POLICY)
    rollouts = ServerRollouts(server, tokenizer, weights_dir=tmp_path / "weights")
    start = rollouts.version
    served = grpo_train(served_model, tokenizer, toy_problems(), prefix_reward_fn, config, engine=rollouts)
    assert [r["weights_version"] for r in served] == [start + 1, start + 2, start + 3]
    assert rollouts._request("GET", "/weights")["version"] == start + 3
    assert sorted(os.listdir(tmp_path / "weights")) == [f"weights-{start + 3:08d}.safetensors"]  # older ones removed
    assert sum(r["samples_trained"] for r in served) > 0
    for a, b in zip(embedded, served):  # the same seeds and weights: the same samples, rewards and updates
        for key in ("reward_mean", "samples_trained", "tokens", "response_tokens_mean"):
            assert a.get(key) == b.get(key), (a["step"], key)
        assert b["loss"] == pytest.approx(a["loss"], abs=1e-5)
        assert b["parity_mean_abs_diff"] < 1e-5 and b["parity_warnings"] == 0  # server vs trainer log-probs
    for (name, a), b in zip(embedded_model.state_dict().items(), served_model.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-5, msg=name)


def test_bad_and_stale_updates_are_refused(server, tmp_path):
    model, tokenizer = load_policy(POLICY)
    rollouts = ServerRollouts(server, tokenizer, weights_dir=tmp_path)
    version = rollouts.version
    with pytest.raises(RolloutServerError, match="HTTP 409"):  # not above the serving version
        rollouts._request("POST", "/weights", {"path": str(tmp_path / "x.safetensors"), "version": version})
    wrong = {name: torch.zeros(3) for name in model.state_dict()}
    save_file(wrong, str(tmp_path / "wrong.safetensors"))
    with pytest.raises(RolloutServerError, match="HTTP 400.*shape"):
        rollouts._request("POST", "/weights", {"path": str(tmp_path / "wrong.safetensors"), "version": version + 1})
    with pytest.raises(RolloutServerError, match="HTTP 400.*cannot read"):
        rollouts._request("POST", "/weights", {"path": str(tmp_path / "missing.safetensors"), "version": version + 1})
    assert rollouts._request("GET", "/weights")["version"] == version  # nothing swapped
    # another writer moved the server on: this trainer's rollouts would be stale, and say so
    other = ServerRollouts(server, tokenizer, weights_dir=tmp_path / "other")
    other.push_weights(model)
    with pytest.raises(RolloutServerError, match=f"version {version + 1}, not the pushed {version}"):
        rollouts.generate([[1, 2]], SamplingParams(n=2, max_tokens=1))


def test_rollout_section_checks():
    with pytest.raises(ValueError, match="backend"):
        RolloutSection(backend="vllm-ish")
    with pytest.raises(ValueError, match="base_url"):
        RolloutSection(backend="server")
    with pytest.raises(ValueError, match="base_url"):
        ServerRollouts("localhost:8000", None, weights_dir="x")


def test_an_update_waits_for_the_request_in_flight(server, tmp_path):
    """The swap happens between requests: a long request still sampling when an update is sent reports the old
    version and samples what the old weights sample (same seed, same 500 tokens), so the swap, which the update's
    POST waits for, came after its last token. (The order in which the client threads then see the two answers is
    not the server's to keep: a timestamp taken after each answer once came out 0.5 ms the other way.)"""
    model, tokenizer = load_policy(POLICY)
    rollouts = ServerRollouts(server, tokenizer, weights_dir=tmp_path)
    long = SamplingParams(n=1, max_tokens=500, temperature=1.0, top_p=1.0, repetition_penalty=1.0, seed=7,
                          stop_token_ids=())  # no stop token: 500 tokens (~0.5 s here)
    before = rollouts.generate([[1, 2]], long)[0][0].token_ids
    finished = {}

    def long_request():
        finished["tokens"] = rollouts.generate([[1, 2]], long)[0][0].token_ids  # checks the old version

    thread = threading.Thread(target=long_request)
    thread.start()
    time.sleep(0.1)  # the request is in the engine now
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    pushed = ServerRollouts(server, tokenizer, weights_dir=tmp_path / "push")
    assert thread.is_alive() and not finished  # the update is sent while the long request is in the engine
    pushed.push_weights(model)
    thread.join()
    assert finished["tokens"] == before and len(before) == 500
    rollouts.version = pushed.version
    assert rollouts.generate([[1, 2]], long)[0][0].token_ids != before  # the new weights sample otherwise


def test_command_line_rollout_backend_server(server, tmp_path, capsys):
    version = ServerRollouts(server, load_policy(POLICY)[1], weights_dir=tmp_path).version
    args = [f"--config={ROOT}/configs/grpo_tiny_demo.toml", f"--output.dir={tmp_path}", "--grpo.steps=2",
            "--grpo.prompts_per_step=2", "--grpo.group_size=4", "--rollout.backend=server", f"--rollout.base_url={server}",
            "--model.seed=3"]
    assert main(args) == 0
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["weights_version"] for r in lines] == [version + 1, version + 2]
    assert os.listdir(tmp_path / "rollout_weights") == [f"weights-{version + 2:08d}.safetensors"]
    capsys.readouterr()
    assert main(args[:-3] + ["--rollout.backend=server"]) == 2  # no base_url: one line naming the key
    assert "base_url" in capsys.readouterr().err


@pytest.mark.slow
def test_two_ranks_with_server_rollouts_match_one_process_with_the_engine(server, tmp_path):
    """torchrun, 2 ranks, each requesting its groups from the server after rank 0 pushed the gathered weights: the
    records and final weights of one process with the embedded engine (measured: equal weights, parity 2e-8)."""
    args = [f"--config={ROOT}/configs/grpo_tiny_demo.toml", "--grpo.prompts_per_step=3", "--grpo.group_size=8",
            "--grpo.max_tokens=2", "--grpo.steps=2", "--output.checkpoint_every=0", "--model.seed=3"]
    env = {**{k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}, "OMP_NUM_THREADS": "1"}
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    for command in ([sys.executable, "-m", "seedcoder.posttrain.grpo", *args, f"--output.dir={tmp_path / 'one'}"],
                    [*launch, "-m", "seedcoder.posttrain.grpo", *args, f"--output.dir={tmp_path / 'two'}",
                     "--rollout.backend=server", f"--rollout.base_url={server}"]):
        result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-4000:]
    one, two = ([json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
                for name in ("one", "two"))
    assert two[1]["weights_version"] == two[0]["weights_version"] + 1
    for a, b in zip(one, two):
        assert b.keys() - {"weights_version"} == a.keys()
        assert {k: b[k] for k in a if k != "seconds"} == pytest.approx({k: a[k] for k in a if k != "seconds"}, abs=1e-6)
        assert b["parity_mean_abs_diff"] < 1e-6
    single, _ = load_model(str(tmp_path / "one" / "checkpoints"))
    ranks, _ = load_model(str(tmp_path / "two" / "checkpoints"))
    for (name, a), b in zip(single.state_dict().items(), ranks.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-6, msg=name)
