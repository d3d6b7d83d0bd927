"""GRPO (seedcoder.posttrain.grpo): advantages, the clipped token-level loss and its gradient on hand-computed
values, the filters, the parity monitor against the real engine (and a deliberately perturbed copy), and the loop
raising the reward of a tiny model on a toy verifiable task ("Write 7" -> a completion starting with 7)."""

import copy
import dataclasses
import json
import math
import warnings

import pytest
import torch

from seedcoder.config import load_sections
from seedcoder.generate import Engine
from seedcoder.model import Transformer, model_config
from seedcoder.posttrain.grpo import (
    CurriculumFilter,
    GRPOConfig,
    GRPORunConfig,
    GRPOStage,
    ParityMonitor,
    group_advantages,
    grpo_token_loss,
    grpo_train,
    informative_groups,
    overlong_keep,
    pad_logprobs,
    sync_weights,
)
from seedcoder.posttrain.policy import response_logprobs
from seedcoder.posttrain.rewards import prefix_reward_fn
from seedcoder.posttrain.run_config import toy_problems as make_toy_problems
from seedcoder.sampling import SamplingParams
from seedcoder.tokenizer import toy_tokenizer

# the resume tests save single-process DCP checkpoints, which torch warns about
pytestmark = [pytest.mark.filterwarnings("ignore:torch.distributed is disabled:UserWarning"),
              pytest.mark.usefixtures("one_torch_thread")]



@pytest.fixture(scope="module")
def tokenizer():
    """The toy task's word-level tokenizer: 16 tokens ("Write", the digits, x, y, the specials)."""
    tok = toy_tokenizer()
    assert tok.get_vocab_size() == 16 and tok.decode(tok.encode("Write 7").ids) == "Write7"
    return tok


def tiny_model(vocab_size: int, seed: int = 0, init_std: float = 0.3) -> Transformer:
    model = Transformer(model_config("debug", vocab_size=vocab_size, init_std=init_std))
    model.init_weights(seed=seed)
    return model


# ------------------------------------------------------------------------------------------ advantages
def test_group_advantages_hand_computed():
    adv = group_advantages(torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 0.0, 1.0, 0.0], [3.0, 3.0, 3.0, 3.0]]))
    # group 0: mean 0.25, unbiased std sqrt((0.75^2 + 3 * 0.25^2) / 3) = 0.5; group 1: mean 0.5, std sqrt(1/3)
    assert adv[0].tolist() == pytest.approx([1.5, -0.5, -0.5, -0.5], abs=1e-5)
    s = math.sqrt(1 / 3)
    assert adv[1].tolist() == pytest.approx([0.5 / s, -0.5 / s, 0.5 / s, -0.5 / s], abs=1e-5)
    assert adv[2].tolist() == [0.0, 0.0, 0.0, 0.0]  # all equal: exactly zero, not 0 / eps
    assert group_advantages(torch.tensor([[5.0]])).tolist() == [[0.0]]
    # eps keeps a tiny spread finite
    tiny = group_advantages(torch.tensor([[1e-9, 0.0]]), eps=1e-6)
    assert tiny.abs().max().item() < 1e-3
    with pytest.raises(ValueError, match="rewards"):
        group_advantages(torch.tensor([1.0, 0.0]))


# ------------------------------------------------------------------------------------------ loss
def test_clipped_token_loss_hand_computed():
    old = torch.zeros(2, 3, dtype=torch.float64)
    # sample 0 (A = +1): ratios 1.5 (above 1 + 0.28: clipped), 0.5 (below 1 - 0.2, but A > 0: not clipped)
    # sample 1 (A = -1): ratios 0.7 (below 0.8, A < 0: clipped), 1.2 (inside), third token masked
    logp = torch.log(torch.tensor([[1.5, 0.5, 1.0], [0.7, 1.2, 3.0]], dtype=torch.float64)).requires_grad_(True)
    mask = torch.tensor([[1, 1, 0], [1, 1, 0]], dtype=torch.bool)
    adv = torch.tensor([1.0, -1.0], dtype=torch.float64)
    loss, m = grpo_token_loss(logp, old, adv, mask)
    # per token: max(-1.5, -1.28) = -1.28; max(-0.5, -0.8) = -0.5; max(0.7, 0.8) = 0.8; max(1.2, 1.2) = 1.2
    assert loss.item() == pytest.approx((-1.28 - 0.5 + 0.8 + 1.2) / 4, abs=1e-12)
    loss.backward()
    # d/dlogp of -A * ratio is -A * ratio where unclipped, 0 where the clipped term wins; / 4 tokens
    assert logp.grad.flatten().tolist() == pytest.approx([0.0, -0.5 / 4, 0.0, 0.0, 1.2 / 4, 0.0], abs=1e-12)
    assert m["clip_fraction"] == 0.5 and m["clip_high_fraction"] == 0.25 and m["clip_low_fraction"] == 0.25
    # symmetric 0.2 clipping would have clipped the first token at 1.2 instead of 1.28
    sym, _ = grpo_token_loss(logp.detach(), old, adv, mask, clip_high=0.2)
    assert sym.item() == pytest.approx((-1.2 - 0.5 + 0.8 + 1.2) / 4, abs=1e-12)


def test_token_level_averaging_is_not_per_sample():
    # on-policy (ratio 1): sample 0 has 1 token (A = +1), sample 1 has 3 tokens (A = -1)
    logp = torch.zeros(2, 3, requires_grad=True)
    mask = torch.tensor([[1, 0, 0], [1, 1, 1]], dtype=torch.bool)
    loss, _ = grpo_token_loss(logp, torch.zeros(2, 3), torch.tensor([1.0, -1.0]), mask)
    assert loss.item() == pytest.approx((-1 + 3) / 4)  # per-sample means would give (-1 + 1) / 2 = 0
    loss.backward()
    assert logp.grad.flatten().tolist() == pytest.approx([-0.25, 0, 0, 0.25, 0.25, 0.25])
    half, _ = grpo_token_loss(logp.detach(), torch.zeros(2, 3), torch.tensor([1.0, -1.0]), mask, num_tokens=8)
    assert half.item() == pytest.approx(2 / 8)


def test_optional_kl_k3():
    logp = torch.zeros(1, 2)
    ref = torch.full((1, 2), math.log(2.0))
    mask = torch.ones(1, 2, dtype=torch.bool)
    adv = torch.zeros(1)
    off, m_off = grpo_token_loss(logp, logp, adv, mask, ref_logprobs=ref)  # kl_coef 0 (default): no KL term
    assert off.item() == 0.0 and m_off["kl"] == 0.0
    on, m = grpo_token_loss(logp, logp, adv, mask, ref_logprobs=ref, kl_coef=0.1)
    k3 = 2.0 - math.log(2.0) - 1.0
    assert m["kl"] == pytest.approx(k3, rel=1e-6) and on.item() == pytest.approx(0.1 * k3, rel=1e-6)
    with pytest.raises(ValueError, match="ref_logprobs"):
        grpo_token_loss(logp, logp, adv, mask, kl_coef=0.1)
    with pytest.raises(ValueError, match="advantages"):
        grpo_token_loss(logp, logp, torch.zeros(2), mask)
    with pytest.raises(ValueError, match="mask"):
        grpo_token_loss(logp, logp, adv, torch.zeros(1, 2, dtype=torch.bool))


# ------------------------------------------------------------------------------------------ filters
def test_overlong_and_curriculum_filters():
    assert overlong_keep(["stop", "length", "stop"]) == [True, False, True]
    with pytest.raises(ValueError, match="finish_reasons"):
        overlong_keep(["abort"])
    passed = torch.tensor([[True, True], [True, False], [False, False]])
    assert informative_groups(passed).tolist() == [False, True, True]
    cur = CurriculumFilter()
    cur.update("a", [True] * 7 + [False])  # 0.875: kept (the threshold is "exceeds")
    cur.update("b", [True] * 8)
    cur.update("c", [True] * 9 + [False])  # 0.9
    assert cur.active(["a", "b", "c", "new"]) == ["a", "new"]
    cur.update("b", [False] * 8)
    assert cur.keep("b")
    restored = CurriculumFilter(0.5)
    restored.load_state_dict(cur.state_dict())
    assert restored.pass_rates == cur.pass_rates and restored.max_pass_rate == 0.875


# ------------------------------------------------------------------------------------------ parity
def sample(engine, prompts, n=3, max_tokens=6, seed=0):
    params = SamplingParams(n=n, temperature=1.0, top_p=1.0, repetition_penalty=1.0, max_tokens=max_tokens, seed=seed)
    outs = engine.generate(prompts, params)
    ids = [engine.encode_prompt(p) for p in prompts]
    flat = [(ids[i], c) for i, group in enumerate(outs) for c in group]
    return [p for p, _ in flat], [list(c.token_ids) for _, c in flat], [c.model_logprobs for _, c in flat]


def test_parity_monitor_passes_synced_engine_and_catches_perturbed_one(tokenizer):
    model = tiny_model(tokenizer.get_vocab_size())
    engine_model = copy.deepcopy(model)
    engine = Engine(engine_model, tokenizer, max_batch=8)
    prompts = ["Write 7", "Write 3 x"]
    monitor = ParityMonitor(tolerance=1e-3)
    p, r, engine_lp = sample(engine, prompts)
    with torch.no_grad():
        lp, mask = response_logprobs(model, p, r)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning when the weights agree
        stats = monitor.check(lp, pad_logprobs(engine_lp, lp), mask, step=1)
    assert stats["parity_mean_abs_diff"] < 1e-4 and monitor.warnings == 0

    with torch.no_grad():  # a deliberately perturbed engine copy: stale / wrong weights
        engine_model.output.weight.add_(0.05 * torch.randn_like(engine_model.output.weight))
    p, r, engine_lp = sample(engine, prompts, seed=1)
    with torch.no_grad():
        lp, mask = response_logprobs(model, p, r)
    with pytest.warns(RuntimeWarning, match="parity at step 2"):
        stats = monitor.check(lp, pad_logprobs(engine_lp, lp), mask, step=2)
    assert stats["parity_mean_abs_diff"] > 1e-3 and monitor.warnings == 1 and stats["parity_warnings"] == 1

    sync_weights(engine_model, model)  # re-synced: parity restored
    p, r, engine_lp = sample(engine, prompts, seed=2)
    with torch.no_grad():
        lp, mask = response_logprobs(model, p, r)
    assert monitor.check(lp, pad_logprobs(engine_lp, lp), mask)["parity_mean_abs_diff"] < 1e-4
    assert monitor.warnings == 1 and monitor.checks == 3


# ------------------------------------------------------------------------------------------ loop
def toy_problems():
    return make_toy_problems("73")


def test_grpo_loop_records_filters_and_parity(tokenizer, tmp_path):
    model = tiny_model(tokenizer.get_vocab_size(), seed=1)
    before = copy.deepcopy(model.state_dict())
    log = tmp_path / "grpo.jsonl"
    # max_tokens 1: only samples that drew the end token first escape the overlong filter
    config = GRPOConfig(steps=3, prompts_per_step=2, group_size=8, max_tokens=1, lr=1e-2, filter_overlong=True)
    records = grpo_train(model, tokenizer, toy_problems(), prefix_reward_fn, config, log_path=log)
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [1, 2, 3]
    for r in records:
        assert r["overlong_samples"] + r["samples_trained"] <= 16 and r["overlong_samples"] > 0
        if not r.get("skipped"):
            assert r["parity_mean_abs_diff"] < 1e-3 and r["parity_warnings"] == 0
    trained = sum(r["samples_trained"] for r in records)
    changed = any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert changed == any(r.get("grad_norm", 0.0) > 0 for r in records)  # zero advantages: zero gradient, no change
    assert trained == sum(r.get("tokens", 0) for r in records)  # one token (the end token) per kept sample
    # without the filter every sample of a group that is not all-correct is trained on
    unfiltered = grpo_train(model, tokenizer, toy_problems(), prefix_reward_fn,
                            GRPOConfig(steps=1, prompts_per_step=2, group_size=8, max_tokens=1, filter_overlong=False))[0]
    assert unfiltered["samples_trained"] == 16 - 8 * unfiltered["dropped_all_correct_groups"]
    with pytest.raises(ValueError, match="group_size"):
        GRPOConfig(group_size=0)
    with pytest.raises(ValueError, match="problems"):
        grpo_train(model, tokenizer, [], prefix_reward_fn, config)


def test_grpo_raises_reward_on_toy_task(tokenizer, tmp_path):
    torch.manual_seed(0)
    model = tiny_model(tokenizer.get_vocab_size(), seed=2, init_std=0.02)
    config = GRPOConfig(steps=25, prompts_per_step=2, group_size=16, max_tokens=1, lr=3e-3, filter_overlong=False,
                        max_pass_rate=1.0)
    records = grpo_train(model, tokenizer, toy_problems(), prefix_reward_fn, config, log_path=tmp_path / "rl.jsonl")
    first = sum(r["reward_mean"] for r in records[:3]) / 3  # chance: 1/16 per sample
    last = sum(r["reward_mean"] for r in records[-5:]) / 5  # seeds 0-3 measured: 0.90-0.97
    assert first < 0.3 and last > 0.6 and last > first + 0.4, [round(r["reward_mean"], 2) for r in records]
    assert all(r.get("parity_warnings", 0) == 0 for r in records)


def test_grpo_resumes_from_its_checkpoint(tokenizer, tmp_path):
    config = GRPOConfig(steps=4, prompts_per_step=1, group_size=8, max_tokens=2, lr=3e-3, filter_overlong=False)
    straight = tiny_model(tokenizer.get_vocab_size(), seed=5, init_std=0.02)
    full = grpo_train(straight, tokenizer, toy_problems(), prefix_reward_fn, config)
    first_model = tiny_model(tokenizer.get_vocab_size(), seed=5, init_std=0.02)
    first = grpo_train(first_model, tokenizer, toy_problems(), prefix_reward_fn, dataclasses.replace(config, steps=2),
                       checkpoint_dir=tmp_path / "ckpt")
    resumed = tiny_model(tokenizer.get_vocab_size(), seed=5, init_std=0.02)
    rest = grpo_train(resumed, tokenizer, toy_problems(), prefix_reward_fn, config, checkpoint_dir=tmp_path / "ckpt")
    assert [r["step"] for r in rest] == [3, 4]
    keys = ("reward_mean", "samples_trained", "active_prompts")
    assert [[r[k] for k in keys] for r in first + rest] == [[r[k] for k in keys] for r in full]
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)


def test_command_line_runs_the_demo_config_and_resumes(tmp_path, capsys):
    from pathlib import Path

    from seedcoder.posttrain.grpo import main

    config = Path(__file__).resolve().parent.parent / "configs" / "grpo_tiny_demo.toml"
    args = ["--config", str(config), f"--output.dir={tmp_path}", "--grpo.prompts_per_step=2", "--grpo.group_size=4"]
    assert main(args + ["--grpo.steps=2"]) == 0
    assert main(args + ["--grpo.steps=3"]) == 0  # resumes at step 3 from the step-2 checkpoint
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]
    assert (tmp_path / "checkpoints" / "step-00000003" / "train_state.json").is_file()
    capsys.readouterr()
    assert main(args + ["--grpo.stepz=2"]) == 2  # bad input: one line on stderr (seedcoder.errors)
    assert "unknown config key 'grpo.stepz' (did you mean 'grpo.steps'?)" in capsys.readouterr().err
    assert main(args + ["--grpo.steps=two"]) == 2
    assert "config key 'grpo.steps': expected an integer, got 'two'" in capsys.readouterr().err
    assert main(args + ["--grpo.stages=[{start_step=1, max_tokenz=1, group_size=4}]"]) == 2
    assert "unknown config key 'grpo.stages[0].max_tokenz'" in capsys.readouterr().err


def test_loop_parity_monitor_catches_a_perturbed_engine(tokenizer):
    model = tiny_model(tokenizer.get_vocab_size(), seed=6)
    engine = Engine(copy.deepcopy(model), tokenizer, max_batch=16)
    # weights are synced every step, so perturb what the engine computes instead: noise on its output logits
    noise = torch.Generator().manual_seed(0)
    engine.model.output.register_forward_hook(lambda module, args, out: out + 0.3 * torch.randn(out.shape, generator=noise))
    config = GRPOConfig(steps=2, prompts_per_step=2, group_size=4, max_tokens=3, lr=1e-3, filter_overlong=False)
    with pytest.warns(RuntimeWarning, match="log-prob parity"):
        records = grpo_train(model, tokenizer, toy_problems(), prefix_reward_fn, config, engine=engine)
    assert [r["parity_warnings"] for r in records] == [1, 2]
    assert all(r["parity_mean_abs_diff"] > 1e-2 for r in records)


def test_loop_with_kl_and_several_ppo_epochs(tokenizer):  # and the fused log-prob path
    model = tiny_model(tokenizer.get_vocab_size(), seed=7, init_std=0.02)
    config = GRPOConfig(steps=3, prompts_per_step=2, group_size=8, max_tokens=2, lr=1e-2, filter_overlong=False,
                        kl_coef=0.5, ppo_epochs=3, max_pass_rate=1.0, fused_logprobs=True)
    records = [r for r in grpo_train(model, tokenizer, toy_problems(), prefix_reward_fn, config) if "loss" in r]
    assert records and all(r["kl"] >= 0.0 for r in records)
    moved = [r for r in records if r["grad_norm"] > 0]
    # the later epochs of a step see a policy that has moved away from the sampling one (ratio != 1) and the
    # reference (KL > 0): both only arise when the loop really re-evaluates and updates
    assert moved and any(abs(r["ratio_mean"] - 1.0) > 1e-4 for r in moved) and any(r["kl"] > 0 for r in moved)


def test_progressive_length_stages(tokenizer, tmp_path):
    config = GRPOConfig(max_tokens=7, group_size=2, stages=[{"start_step": 3, "max_tokens": 2, "group_size": 8},
                                                            GRPOStage(start_step=2, max_tokens=1, group_size=4)])
    assert [(s.start_step, s.max_tokens, s.group_size) for s in config.stages] == [(2, 1, 4), (3, 2, 8)]
    assert [config.stage(step) for step in (1, 2, 3, 50)] == [(7, 2), (1, 4), (2, 8), (2, 8)]
    stage = {"start_step": 2, "max_tokens": 1, "group_size": 4}
    for bad, key in (([{"start_step": 3, "max_tokens": 2}], r"stages\[0\]\.group_size' is missing"),
                     ([{**stage, "start_step": 0}], r"stages\[0\]\.start_step': must be an integer >= 1"),
                     ([stage, {**stage, "max_tokens": 8}], r"stages\[1\]\.start_step': 2 is also stages\[0\]"),
                     ([{**stage, "max_tokens": "a"}], r"stages\[0\]\.max_tokens': expected an integer"),
                     ([{**stage, "max_tokenz": 3}], r"unknown config key 'stages\[0\]\.max_tokenz'"),
                     ("3:2:8", r"'stages': expected an array of tables")):
        with pytest.raises(ValueError, match=key):
            GRPOConfig(stages=bad)

    # [[grpo.stages]] tables in the TOML config, as the command line reads it
    path = tmp_path / "grpo.toml"
    path.write_text("[grpo]\nmax_tokens = 7\n[[grpo.stages]]\nstart_step = 1\nmax_tokens = 16384\ngroup_size = 16\n"
                    "[[grpo.stages]]\nstart_step = 301\nmax_tokens = 32768\ngroup_size = 32\n")
    config = load_sections(GRPORunConfig, path, []).grpo
    assert [config.stage(step) for step in (1, 300, 301)] == [(16384, 16), (16384, 16), (32768, 32)]
    config = load_sections(GRPORunConfig, None, ["--grpo.stages=[{start_step=2, max_tokens=3, group_size=4}]"]).grpo
    assert [config.stage(step) for step in (1, 2)] == [(16384, 16), (3, 4)]

    model = tiny_model(tokenizer.get_vocab_size(), seed=8)
    config = GRPOConfig(steps=3, prompts_per_step=1, group_size=4, max_tokens=1,
                        stages=[GRPOStage(start_step=3, max_tokens=2, group_size=8)], lr=1e-3, filter_overlong=False)
    records = grpo_train(model, tokenizer, toy_problems(), prefix_reward_fn, config)
    assert [(r["max_tokens"], r["group_size"]) for r in records] == [(1, 4), (1, 4), (2, 8)]
    assert all(r["response_tokens_mean"] <= r["max_tokens"] for r in records)


def test_kv_cache_budget_is_checked():
    assert GRPOConfig(kv_cache_tokens=4096).kv_cache_tokens == 4096
    for bad in (0, -5, 2.5, True):
        with pytest.raises(ValueError, match="kv_cache_tokens"):
            GRPOConfig(kv_cache_tokens=bad)
