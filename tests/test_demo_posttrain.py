"""The post-training demo's data (seedcoder.demo.posttrain): deterministic, well-formed, and the toy problems'
reference solutions pass their tests in the sandbox while the wrong answers fail."""

from __future__ import annotations

import json
import os

import pytest

from seedcoder.demo import posttrain
from seedcoder.posttrain.rewards import extract_code, unit_test_rewards

STDLIB_FAKE = {
    "alpha.py": 'def double(x):\n    """Return twice x.\n\n    More words."""\n    return 2 * x\n\n\n'
                'def _private(x):\n    """Hidden."""\n    return x\n\n\n'
                'def nodoc(x):\n    return x\n',
    "pkg/beta.py": 'import functools\n\n\n@functools.cache\ndef cached(x):\n    """Decorated: left out."""\n    return x\n\n\n'
                   'def long_one(x):\n    """Too long."""\n' + "    x += 1\n" * 20 + "    return x\n\n\n"
                   'def greet(name, *, loud=False):\n    """Say hello\n    to name."""\n    return "hi " + name\n',
    "test/gamma.py": 'def in_tests(x):\n    """Tests are left out."""\n    return x\n',
}


def _fake_stdlib(root) -> str:
    for name, text in STDLIB_FAKE.items():
        path = os.path.join(root, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as file:
            file.write(text)
    return str(root)


def test_stdlib_conversations_picks_small_documented_functions(tmp_path):
    rows = posttrain.stdlib_conversations(10, _fake_stdlib(tmp_path))
    users = [r["messages"][0]["content"] for r in rows]
    assert users == ["Write a Python function double(x) (from alpha): Return twice x.",
                     "Write a Python function greet(name, *, loud=False) (from pkg.beta): Say hello to name."]
    answer = rows[0]["messages"][1]["content"]
    assert answer.startswith("```python\ndef double(x):") and answer.endswith("return 2 * x\n```")
    assert extract_code(answer).strip().endswith("return 2 * x")
    assert posttrain.stdlib_conversations(1, str(tmp_path)) == rows[:1]
    with pytest.raises(ValueError, match="limit"):
        posttrain.stdlib_conversations(0, str(tmp_path))
    with pytest.raises(ValueError, match="stdlib"):
        posttrain.stdlib_conversations(3, str(tmp_path / "missing"))


def test_real_stdlib_rows_are_deterministic():
    first = posttrain.stdlib_conversations(5)
    assert first == posttrain.stdlib_conversations(5) and len(first) == 5
    for row in first:
        assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
        assert extract_code(row["messages"][1]["content"]).startswith("def ")


def test_toy_problems_are_well_formed_and_unique():
    problems = posttrain.toy_problems()
    assert problems == posttrain.toy_problems()
    assert len({p["id"] for p in problems}) == len(problems) >= 15
    for p in problems:
        assert set(posttrain.problem_record(p)) == {"id", "prompt", "tests"}
        assert p["id"] in p["prompt"] and p["tests"].count("assert") >= 3
        assert p["solution"] != p["wrong"]
    rows = posttrain.toy_conversations(problems[:2], phrasings=3)
    assert len(rows) == 6 and rows[0]["messages"][0]["content"] == problems[0]["prompt"]
    assert len({r["messages"][0]["content"] for r in rows}) == 6
    assert all(extract_code(r["messages"][1]["content"]) == problems[i // 3]["solution"] for i, r in enumerate(rows))
    with pytest.raises(ValueError, match="phrasings"):
        posttrain.toy_conversations(phrasings=5)


def test_toy_solutions_pass_and_wrong_answers_fail_in_the_sandbox():
    problems = posttrain.toy_problems()
    texts = [[posttrain.fenced(p["solution"]), "Here it is:\n" + posttrain.fenced(p["wrong"]), "no code at all"]
             for p in problems]
    rewards = unit_test_rewards(texts, [p["tests"] for p in problems], workers=2)
    assert rewards == [[1.0, 0.0, 0.0]] * len(problems)


def test_sft_rows_render_with_the_chat_template(tmp_path):
    from tokenizers import Tokenizer

    from seedcoder.posttrain.sft import render_example
    from seedcoder.tokenizer import train_tokenizer

    rows = posttrain.toy_conversations(posttrain.toy_problems()[:3]) + posttrain.stdlib_conversations(3, _fake_stdlib(tmp_path))
    corpus = [m["content"] for r in rows for m in r["messages"]] + ["system\nuser\nassistant\n"]
    train_tokenizer(corpus, str(tmp_path / "tokenizer.json"), vocab_size=320, min_frequency=1)
    tokenizer = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    path = tmp_path / "chats.jsonl"
    posttrain.write_jsonl(str(path), rows)
    assert [json.loads(line) for line in path.read_text().splitlines()] == rows
    for row in rows:
        example = render_example(row, tokenizer)
        assert 0 < example.loss_mask.sum() < len(example.input_ids)
        masked = tokenizer.decode([int(t) for t, m in zip(example.input_ids, example.loss_mask) if m], skip_special_tokens=True)
        assert masked == row["messages"][1]["content"]
    # steps 8-9 prompt with the same rendering as the SFT data (no system turn): the prompt is the row's prefix
    problem = posttrain.toy_problems()[0]
    example = render_example(rows[0], tokenizer, system_prompt=posttrain.SYSTEM_PROMPT)
    ids = posttrain.prompt_ids(problem, tokenizer)
    assert list(example.input_ids[: len(ids)]) == ids and not example.loss_mask[: len(ids)].any()
    assert example.loss_mask[len(ids):].all()


def test_step_of_and_run_posttrain_checks_its_input(tmp_path):
    assert posttrain._step_of(None) == 0
    assert posttrain._step_of(str(tmp_path / "step-00000040")) == 40
    with pytest.raises(ValueError, match="out"):
        posttrain.run_posttrain(str(tmp_path), nproc=1)


def test_dpo_and_rl_checkpoints_load_with_their_tokenizer(tmp_path):
    """The hand-over between stages: a dpo_train checkpoint folder with tokenizer.json beside its step-N folders
    loads (posttrain._load) and `seedcoder eval`'s engine finds the tokenizer on its own."""
    import shutil

    import torch

    from seedcoder.generate import Engine
    from seedcoder.model import Transformer, model_config
    from seedcoder.posttrain.dpo import dpo_train
    from seedcoder.tokenizer import toy_tokenizer

    torch.set_num_threads(1)
    tokenizer = toy_tokenizer()
    tokenizer_path = tmp_path / "tokenizer.json"
    tokenizer.save(str(tokenizer_path))
    model = Transformer(model_config("debug", vocab_size=tokenizer.get_vocab_size()))
    model.init_weights(seed=0)
    pairs = [{"prompt_ids": [0, 1], "chosen_ids": [2], "rejected_ids": [3]}]
    checkpoints = tmp_path / "dpo" / "checkpoints"
    dpo_train(model, pairs, steps=2, batch_size=1, lr=1e-2, checkpoint_dir=str(checkpoints))
    shutil.copyfile(tokenizer_path, checkpoints / "tokenizer.json")
    loaded, loaded_tokenizer = posttrain._load(str(checkpoints), str(tokenizer_path))
    assert loaded_tokenizer.get_vocab_size() == tokenizer.get_vocab_size()
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor)
    engine = Engine.from_checkpoint(str(checkpoints), device="cpu")
    assert engine.tokenizer.get_vocab_size() == tokenizer.get_vocab_size()
    assert posttrain._step_of(posttrain._latest(str(checkpoints))) == 2
