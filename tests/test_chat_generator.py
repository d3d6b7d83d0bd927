"""The chat generators of the SFT synthesis steps: an OpenAI-compatible endpoint (the scripted server: real HTTP),
our engine on a checkpoint, the response cache, failures as answers, and settings that cannot work."""

import os
import shutil

import pytest
from sft_script_server import ScriptServer

from seedcoder import checkpoint as ckpt
from seedcoder.curate.chat_generator import ChatAnswer, GeneratorError, make_generator
from seedcoder.model import Transformer, model_config
from seedcoder.tokenizer import load_tokenizer, train_tokenizer


def conversation(task, behaviour):
    return [{"role": "system", "content": "You write code."},
            {"role": "user", "content": f"TASK: {task}\nThe seed (script:{behaviour})."}]


def test_openai_backend_answers_in_order_caches_and_reports_failures(tmp_path):
    with ScriptServer(slow_s=2.0) as server:
        generator = make_generator({"backend": "openai", "base_url": server.base_url, "cache_dir": str(tmp_path),
                                    "timeout_s": 0.5, "max_retries": 1, "backoff_s": 0.01})
        assert generator.model == "script" and generator.name == "openai:script"  # the endpoint's first model
        asked = [conversation("synthesize", "good"), conversation("solve", "broken_then_fixed"),
                 conversation("revise", "broken_then_fixed"), conversation("judge", "error"),
                 conversation("respond", "slow"), conversation("respond", "empty")]
        answers = generator.chat(asked, temperature=0.0, max_tokens=64)
        assert [a.error is None for a in answers] == [True, True, True, False, False, False]
        assert answers[0].text.startswith("[Instruction]\nWrite a Python function add")
        assert "return a - b" in answers[1].text and "return a + b" in answers[2].text  # in request order
        assert "500" in answers[3].error and "2 attempt(s)" in answers[3].error  # retried once, then reported
        assert "Timeout" in answers[4].error and answers[5] == ChatAnswer(None, "the endpoint returned an empty answer")
        calls = sum(server.calls.values())

        again = generator.chat(asked, temperature=0.0, max_tokens=64)  # answers are cached, failures are not
        assert [a.cached for a in again] == [True, True, True, False, False, False]
        assert [a.text for a in again[:3]] == [a.text for a in answers[:3]]
        assert sum(server.calls.values()) - calls == 3 * 2 - 1  # error and slow: 2 attempts each; empty: 1
        other = generator.chat(asked[:1], temperature=0.5, max_tokens=64)  # other sampling: another key
        assert not other[0].cached

    with pytest.raises(GeneratorError, match="base_url"):
        make_generator({"backend": "openai", "model": "m", "base_url": ""})
    with pytest.raises(GeneratorError, match="backend 'openai'.*unexpected keyword argument 'bogus'"):
        make_generator({"backend": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m", "bogus": 1})
    with pytest.raises(GeneratorError, match="generator.backend: one of openai, engine, vllm"):
        make_generator({"backend": "gpt"})
    generator = make_generator({"backend": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m"})
    with pytest.raises(GeneratorError, match=r"conversations\[0\]: the last message must be the user's"):
        generator.chat([[{"role": "assistant", "content": "hi"}]])
    with pytest.raises(GeneratorError, match=r"conversations\[0\]\[0\]: expected"):
        generator.chat([[{"role": "robot", "content": "hi"}]])


def test_engine_backend_on_a_checkpoint(tmp_path):
    corpus = ["def add(a, b):\n    return a + b\n", "class Point:\n    x = 0\n"] * 20
    train_tokenizer(corpus, str(tmp_path / "tokenizer.json"), vocab_size=300, min_frequency=1)
    vocab = load_tokenizer(str(tmp_path / "tokenizer.json")).get_vocab_size()
    model = Transformer(model_config("debug", vocab_size=-(-vocab // 64) * 64, max_seq_len=512))
    model.init_weights(0)
    ckpt.save_model_only(model, str(tmp_path / "model"))
    shutil.copy(tmp_path / "tokenizer.json", tmp_path / "model" / "tokenizer.json")

    generator = make_generator({"backend": "engine", "checkpoint": str(tmp_path / "model"), "device": "cpu",
                                "cache_dir": str(tmp_path / "cache")})
    asked = [conversation("respond", "good"), [{"role": "user", "content": "x " * 2000}]]  # the second: too long
    answers = generator.chat(asked, temperature=0.0, max_tokens=8)
    assert answers[0].error is None and isinstance(answers[0].text, str) and answers[0].text
    assert answers[1].text is None and answers[1].error.startswith("engine: ")
    assert generator.chat(asked[:1], temperature=0.0, max_tokens=8)[0] == ChatAnswer(answers[0].text, None, cached=True)
    assert os.listdir(tmp_path / "cache")
    with pytest.raises(GeneratorError, match="generator.checkpoint: .*nowhere does not exist"):
        make_generator({"backend": "engine", "checkpoint": str(tmp_path / "nowhere")})
