"""DPO (seedcoder.posttrain.dpo) and the rewards (seedcoder.posttrain.rewards).

Losses and gradients are checked against values computed by hand; response log-probs against a per-token
forward pass of each sequence alone; pair mining runs completions in the real sandbox; training starts at
exactly log 2 (policy == reference) and lowers the loss.
"""

import json
import math

import pytest
import torch
from toy_models import toy_model, toy_tokenizer

from seedcoder.generate import Engine
from seedcoder.posttrain.dpo import (
    dpo_loss,
    dpo_train,
    form_pairs,
    mine_pairs,
    read_pairs,
    reference_logprobs,
    sequence_logprobs,
)
from seedcoder.posttrain.policy import prompt_token_ids, response_logprobs
from seedcoder.posttrain.rewards import (
    combined_rewards,
    extract_code,
    format_reward,
    make_unit_test_reward_fn,
    prefix_reward_fn,
    unit_test_rewards,
)
from seedcoder.sampling import Completion, SamplingParams

CORPUS = ["def add(a, b):\n    return a + b\n", "print(7)\nprint(3)\n", "x = [1, 2, 3]\n"] * 8


# the resume tests save single-process DCP checkpoints, which torch warns about
pytestmark = [pytest.mark.filterwarnings("ignore:torch.distributed is disabled:UserWarning"),
              pytest.mark.usefixtures("one_torch_thread")]



@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return toy_tokenizer(tmp_path_factory.mktemp("tok"), CORPUS, vocab_size=300)


# ------------------------------------------------------------------------------------------ losses
def leaves(*values):
    return [torch.tensor([v], dtype=torch.float64, requires_grad=True) for v in values]


def test_sigmoid_loss_value_gradient_and_metrics():
    pc, pr, rc, rr = leaves(-1.0, -3.0, -2.0, -2.0)
    loss, m = dpo_loss(pc, pr, rc, rr, beta=0.5)
    # h = (-1 + 2) - (-3 + 2) = 2, beta h = 1: loss = log(1 + e^-1); d/d pc = -beta sigmoid(-1)
    assert loss.item() == pytest.approx(math.log1p(math.exp(-1)), abs=1e-12)
    loss.backward()
    s = 1 / (1 + math.e)
    assert pc.grad.item() == pytest.approx(-0.5 * s, abs=1e-12)
    assert pr.grad.item() == pytest.approx(0.5 * s, abs=1e-12)
    assert rc.grad.item() == pytest.approx(0.5 * s, abs=1e-12) and rr.grad.item() == pytest.approx(-0.5 * s, abs=1e-12)
    assert m["chosen_reward"] == pytest.approx(0.5) and m["rejected_reward"] == pytest.approx(-0.5)
    assert m["reward_margin"] == pytest.approx(1.0) and m["reward_accuracy"] == 1.0


def test_mean_over_pairs_and_accuracy():
    pc = torch.tensor([-1.0, -5.0], requires_grad=True)
    pr = torch.tensor([-3.0, -2.0], requires_grad=True)
    zero = torch.zeros(2)
    loss, m = dpo_loss(pc, pr, zero, zero, beta=1.0)
    # pair 0: h = 2, pair 1: h = -3
    expected = (math.log1p(math.exp(-2)) + math.log1p(math.exp(3))) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    assert pc.grad.tolist() == pytest.approx([-sig(-2) / 2, -sig(3) / 2], rel=1e-6)
    assert m["reward_accuracy"] == 0.5 and m["reward_margin"] == pytest.approx(-0.5)


def test_ipo_loss_and_gradient():
    pc, pr, rc, rr = leaves(-1.0, -3.0, -2.0, -2.0)
    loss, _ = dpo_loss(pc, pr, rc, rr, beta=0.25, loss_type="ipo")
    # h = 2, 1/(2 beta) = 2: loss 0; beta 0.5: (2 - 1)^2 = 1, d/d pc = 2 (h - 1) = 2
    assert loss.item() == pytest.approx(0.0, abs=1e-12)
    pc, pr, rc, rr = leaves(-1.0, -3.0, -2.0, -2.0)
    loss, _ = dpo_loss(pc, pr, rc, rr, beta=0.5, loss_type="ipo")
    assert loss.item() == pytest.approx(1.0)
    loss.backward()
    assert pc.grad.item() == pytest.approx(2.0) and pr.grad.item() == pytest.approx(-2.0)


def test_hinge_loss_and_gradient():
    pc, pr, rc, rr = leaves(-1.0, -3.0, -2.0, -2.0)
    loss, _ = dpo_loss(pc, pr, rc, rr, beta=0.25, loss_type="hinge")
    assert loss.item() == pytest.approx(0.5)  # 1 - 0.25 * 2
    loss.backward()
    assert pc.grad.item() == pytest.approx(-0.25) and pr.grad.item() == pytest.approx(0.25)
    pc, pr, rc, rr = leaves(-1.0, -3.0, -2.0, -2.0)
    loss, _ = dpo_loss(pc, pr, rc, rr, beta=1.0, loss_type="hinge")  # beta h = 2 > 1: no loss, no gradient
    loss.backward()
    assert loss.item() == 0.0 and pc.grad.item() == 0.0


def test_loss_arguments_are_checked():
    t = torch.zeros(2)
    with pytest.raises(ValueError, match="loss_type"):
        dpo_loss(t, t, t, t, loss_type="kto")
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(t, t, t, t, beta=0)
    with pytest.raises(ValueError, match="ref_rejected"):
        dpo_loss(t, t, t, torch.zeros(3))


# ------------------------------------------------------------------------------------------ log-probs
def test_response_logprobs_match_unpadded_forward():
    model = toy_model(64)
    prompts = [[1, 2, 3], [4], [5, 6]]
    responses = [[7, 8], [9, 10, 11, 12], []]
    with torch.no_grad():
        lp, mask = response_logprobs(model, prompts, responses)
        assert lp.shape == (3, 4) and mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]]
        for b, (p, r) in enumerate(zip(prompts, responses)):
            if not r:
                continue
            ids = torch.tensor([p + r])
            full = model(ids)[0].float().log_softmax(-1)
            expected = [full[len(p) - 1 + j, r[j]].item() for j in range(len(r))]
            assert lp[b, : len(r)].tolist() == pytest.approx(expected, abs=1e-5)
        sums = sequence_logprobs(model, prompts, responses, batch_size=2)
    assert sums.tolist() == pytest.approx(lp.sum(-1).tolist(), abs=1e-5)
    assert sums[2].item() == 0.0  # empty response: log 1


def test_response_logprobs_exclude_prompt_tokens_and_check_input():
    model = toy_model(64)
    with torch.no_grad():
        a = sequence_logprobs(model, [[1, 2, 3]], [[4, 5]])
        # the same tokens split differently: the moved token's log-prob is no longer counted
        b = sequence_logprobs(model, [[1, 2, 3, 4]], [[5]])
        lp, _ = response_logprobs(model, [[1, 2, 3]], [[4, 5]])
    assert b.item() == pytest.approx(lp[0, 1].item(), abs=1e-5)
    assert a.item() != pytest.approx(b.item(), abs=1e-3)
    with pytest.raises(ValueError, match="prompts"):
        response_logprobs(model, [[]], [[1]])
    with pytest.raises(ValueError, match="responses"):
        response_logprobs(model, [[1]], [[1], [2]])


# ------------------------------------------------------------------------------------------ rewards
def test_extract_code_and_format_reward():
    text = "Here:\n```python\nx = 1\n```\nand better:\n```\ny = 2\n```\n"
    assert extract_code(text) == "y = 2\n"
    assert extract_code("no code at all") is None
    assert extract_code("```python\nunclosed") is None
    assert format_reward(text) == 1.0 and format_reward("x = 1") == 0.0
    assert format_reward(text, answer_tag="answer") == 0.0
    assert format_reward(text + "<answer>2</answer>", answer_tag="answer") == 1.0
    with pytest.raises(ValueError, match="answer_tag"):
        format_reward(text, answer_tag="a b")


def test_unit_test_and_combined_rewards_in_sandbox():
    texts = [["```python\ndef f():\n    return 1\n```", "def f():\n    return 1\n", "```python\ndef f():\n    return 2\n```"],
             ["import sys\nsys.exit(3)\n"]]
    tests = ["assert f() == 1", ""]
    assert unit_test_rewards(texts, tests, workers=2) == [[1.0, 1.0, 0.0], [0.0]]
    assert combined_rewards(texts, tests, format_weight=0.5, workers=2) == [[1.5, 1.0, 0.5], [0.0]]
    fn = make_unit_test_reward_fn(format_weight=0.0, workers=2)
    assert fn([{"tests": "assert f() == 1"}], [texts[0]]) == [[1.0, 1.0, 0.0]]
    with pytest.raises(ValueError, match="tests"):
        unit_test_rewards(texts, ["only one"])
    assert prefix_reward_fn([{"answer": "7"}], [[" 7 apples", "17", "7"]]) == [[1.0, 0.0, 1.0]]


# ------------------------------------------------------------------------------------------ pairs
def test_form_pairs():
    assert form_pairs([True, False, False, True, True]) == [(0, 1), (3, 2)]
    assert form_pairs([True, True]) == [] and form_pairs([False]) == []
    assert form_pairs([True, False, True, False], max_pairs=1) == [(0, 1)]


class ScriptedEngine:
    """An engine stand-in whose samples are fixed texts (the model's part is tested with the real Engine below)."""

    def __init__(self, texts):
        self.texts = texts

    def encode_prompt(self, prompt, where="prompt"):
        return [ord(c) % 50 + 1 for c in prompt]

    def generate(self, prompts, params):
        assert params.n == len(self.texts[0])
        return [[Completion(t, [ord(c) % 50 + 1 for c in t] + [2], [0.0] * (len(t) + 1), [0.0] * (len(t) + 1), "stop")
                 for t in group] for group in self.texts[: len(prompts)]]


def test_mine_pairs_judges_in_sandbox_and_writes_jsonl(tmp_path):
    good, bad, crash = "def f():\n    return 1\n", "def f():\n    return 0\n", "raise SystemExit(1)\n"
    engine = ScriptedEngine([[good, bad, crash, good], [good, good, good, good], [bad, bad, crash, bad]])
    problems = [{"id": "a", "prompt": "def f():", "tests": "assert f() == 1"},
                {"id": "b", "prompt": "def f():", "tests": "assert f() == 1"},
                {"id": "c", "prompt": "def f():", "tests": "assert f() == 1"}]
    out = tmp_path / "pairs.jsonl"
    pairs = mine_pairs(engine, problems, out, k=4, params=SamplingParams(n=4), workers=2)
    assert [(p["id"], p["chosen"], p["rejected"]) for p in pairs] == [("a", good, bad), ("a", good, crash)]
    assert read_pairs(out) == pairs
    assert pairs[0]["chosen_ids"][-1] == 2 and pairs[0]["prompt_ids"] == engine.encode_prompt("def f():")
    with pytest.raises(ValueError, match="k"):
        mine_pairs(engine, problems, out, k=1)
    with pytest.raises(ValueError, match=r"problems\[0\]"):
        mine_pairs(engine, [{"prompt": "x"}], out, k=4)


def test_prompt_token_ids_text_ids_and_chat(tokenizer):
    from seedcoder.chat_template import tokenize_chat

    engine = Engine(toy_model(tokenizer.get_vocab_size()), tokenizer, max_batch=2)
    chat = [{"role": "user", "content": "Write add(a, b)."}]
    assert prompt_token_ids(engine, chat) == tokenize_chat(chat, tokenizer).input_ids
    assert prompt_token_ids(engine, "def add(a, b):") == tokenizer.encode("def add(a, b):").ids
    assert prompt_token_ids(engine, [5, 6]) == [5, 6]
    with pytest.raises(ValueError, match="problems"):
        prompt_token_ids(engine, "", "problems[0].prompt")


def test_mine_pairs_with_the_real_engine(tmp_path, tokenizer):
    engine = Engine(toy_model(tokenizer.get_vocab_size()), tokenizer, max_batch=8)
    out = tmp_path / "pairs.jsonl"
    # the test program passes whatever the code defines, unless the code itself fails: random-model text almost
    # always is a syntax error, so outcomes are judged per sample and written whatever they are
    pairs = mine_pairs(engine, [{"prompt": "def add(a, b):", "tests": "pass"}], out, k=4,
                       params=SamplingParams(n=4, max_tokens=8, seed=1), workers=2)
    assert out.exists() and read_pairs(out) == pairs
    for pair in pairs:
        assert pair["chosen"] != pair["rejected"]


# ------------------------------------------------------------------------------------------ training
def test_dpo_train_starts_at_log2_and_learns(tmp_path):
    torch.manual_seed(0)
    model = toy_model(64, seed=3)
    pairs = [{"prompt_ids": [1, 2, 3 + i], "chosen_ids": [10 + i, 11, 2], "rejected_ids": [20 + i, 21, 22, 2]}
             for i in range(6)]
    reference = reference_logprobs(model, pairs)
    log = tmp_path / "dpo.jsonl"
    records = dpo_train(model, pairs, steps=12, batch_size=6, beta=0.5, lr=3e-3, reference=reference, log_path=log)
    assert records[0]["loss"] == pytest.approx(math.log(2), abs=1e-5)  # policy == reference: h = 0
    assert records[0]["reward_margin"] == pytest.approx(0.0, abs=1e-5)
    assert records[-1]["loss"] < 0.5 * math.log(2)
    assert records[-1]["reward_accuracy"] == 1.0 and records[-1]["reward_margin"] > 0.5
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["step"] for r in lines] == list(range(1, 13))
    with pytest.raises(ValueError, match="pairs"):
        dpo_train(model, [], steps=1)
    with pytest.raises(ValueError, match="loss_type"):
        dpo_train(model, pairs, steps=1, loss_type="bad")


def test_dpo_resumes_from_its_checkpoint(tmp_path):
    pairs = [{"prompt_ids": [1, 2 + i], "chosen_ids": [10 + i, 2], "rejected_ids": [20 + i, 21, 2]} for i in range(5)]
    kwargs = dict(batch_size=2, beta=0.5, lr=3e-3, seed=7)
    straight = toy_model(64, seed=4)
    full = dpo_train(straight, pairs, steps=6, **kwargs)
    interrupted = toy_model(64, seed=4)
    first = dpo_train(interrupted, pairs, steps=3, checkpoint_dir=tmp_path / "ckpt", **kwargs)
    resumed_model = toy_model(64, seed=4)  # a restart: the same init, then the checkpoint
    rest = dpo_train(resumed_model, pairs, steps=6, checkpoint_dir=tmp_path / "ckpt", **kwargs)
    assert [r["step"] for r in rest] == [4, 5, 6]
    assert [r["loss"] for r in first + rest] == pytest.approx([r["loss"] for r in full], abs=1e-6)
    for (name, a), b in zip(straight.state_dict().items(), resumed_model.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["step-00000003", "step-00000006"]


def test_command_line_mines_and_trains_the_demo_config(tmp_path):
    from pathlib import Path

    from seedcoder.config import load_sections
    from seedcoder.posttrain.dpo import DPORunConfig, DPOSection, main

    config = Path(__file__).resolve().parent.parent / "configs" / "dpo_tiny_demo.toml"
    assert main(["--config", str(config), f"--output.dir={tmp_path}", "--dpo.steps=3", "--dpo.loss_type=hinge"]) == 0
    pairs = read_pairs(tmp_path / "pairs.jsonl")
    assert pairs and all(p["chosen"].startswith(p["id"]) and not p["rejected"].startswith(p["id"]) for p in pairs)
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3]
    written = load_sections(DPORunConfig, tmp_path / "config.toml")  # the run's config, as given
    assert written.dpo.steps == 3 and written.dpo.loss_type == "hinge" and written.output.dir == str(tmp_path)
    cfg = load_sections(DPORunConfig, config, ["--dpo.beta=1", "--model.init_from=runs/x", "--top_p=0.5"])
    assert cfg.dpo.beta == 1.0 and cfg.model.init_from == "runs/x" and cfg.mine.k == 32 and cfg.mine.top_p == 0.5
    assert cfg.dpo.max_grad_norm == DPOSection().max_grad_norm  # not in the file: the default
    assert cfg.output.dir == "runs/dpo-tiny" and DPORunConfig().output.dir == "runs/dpo"
    for overrides, message in ((["--dpo.beta=high"], "config key 'dpo.beta': expected a number, got 'high'"),
                               (["--dpo.betta=1"], "did you mean 'dpo.betta'|did you mean 'dpo.beta'"),
                               (["--dpo.beta=0"], r"config section \[dpo\]: beta"),
                               (["--data.reward=exact"], r"config section \[data\]: reward: expected one of"),
                               (["--mine.k=2.5"], "config key 'mine.k': expected an integer"),
                               (["--nothing=1"], "unknown config key 'nothing'")):
        with pytest.raises(ValueError, match=message):
            load_sections(DPORunConfig, config, overrides)
    bad = tmp_path / "bad.toml"
    bad.write_text("[dpo]\nsteps = 0\n")
    with pytest.raises(ValueError, match=f"{bad}: config section \\[dpo\\]: steps"):
        load_sections(DPORunConfig, bad, [])


def test_fused_response_logprobs_match_logits_path_with_gradients():
    model = toy_model(64, seed=9)
    prompts, responses = [[1, 2, 3], [4]], [[7, 8], [9, 10, 11]]
    lp, mask = response_logprobs(model, prompts, responses)
    (lp * torch.tensor([[1.0, 2.0, 0.0], [3.0, 1.0, 0.5]])).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    fused, fused_mask = response_logprobs(model, prompts, responses, fused=True)
    (fused * torch.tensor([[1.0, 2.0, 0.0], [3.0, 1.0, 0.5]])).sum().backward()
    assert torch.equal(mask, fused_mask)
    torch.testing.assert_close(fused, lp, atol=1e-5, rtol=1e-5)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, grads[name], atol=1e-5, rtol=1e-4, msg=name)
    assert sequence_logprobs(model, prompts, responses, fused=True).tolist() == pytest.approx(lp.sum(-1).tolist(), abs=1e-5)
