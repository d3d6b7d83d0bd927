"""The OpenAI API's checks and response shapes as plain functions, without FastAPI, a server or a model
(tests/test_serve.py drives the same through HTTP with the official client)."""

import asyncio
import json
from types import SimpleNamespace

import pytest

from seedcoder.openai_api import (
    APIError,
    CompletionAnswer,
    Echo,
    chat_max_tokens,
    check_completion_count,
    check_context,
    echo_only,
    prompts_of,
    refuse_unsupported,
    sampling_fields,
    stream_events,
    validation_error,
    whole_answer,
)


def refusal(check, *args, **kwargs) -> APIError:
    with pytest.raises(APIError) as error:
        check(*args, **kwargs)
    return error.value


def test_request_checks_name_the_field():
    assert prompts_of("def") == ["def"] and prompts_of([1, 2]) == [[1, 2]] and prompts_of(["a", "b"]) == ["a", "b"]
    assert refusal(prompts_of, []).param == "prompt"
    assert refusal(check_completion_count, {"n": 5}, 1, 4).param == "n"
    assert refusal(check_completion_count, {"n": 1, "best_of": 5}, 1, 4).param == "best_of"
    assert "ask for 6 completions" in refusal(check_completion_count, {"n": 3}, 2, 4).message
    check_completion_count({"n": 2}, 2, 4)
    assert refusal(refuse_unsupported, {"suffix": "x"}).param == "suffix"
    refuse_unsupported({"echo": True})  # echo is supported
    assert echo_only({"echo": True, "max_tokens": 0}) and not echo_only({"echo": True, "max_tokens": 3})
    assert not echo_only({"max_tokens": None}) and not echo_only({"echo": True})
    assert refusal(echo_only, {"max_tokens": 0}).param == "max_tokens"
    assert refusal(refuse_unsupported, {"n": 2, "best_of": 3}).param == "best_of"
    refuse_unsupported({"n": 2, "best_of": 2, "response_format": {"type": "text"}})
    error = refusal(check_context, [[1, 2], [1] * 7], 2, 8, param="max_tokens", what="prompt")
    assert error.code == "context_length_exceeded" and error.message.startswith("prompt 1: ")
    check_context([[1] * 6], 2, 8, param="max_tokens", what="prompt")
    check_context([[1] * 6], None, 8, param="max_tokens", what="prompt")  # without max_tokens: runs to the end
    assert chat_max_tokens({"max_tokens": 3, "max_completion_tokens": 5}) == (5, "max_completion_tokens")
    assert chat_max_tokens({"max_tokens": 3, "max_completion_tokens": None}) == (3, "max_tokens")
    error = validation_error([{"loc": ("body", "n"), "msg": "Input should be a valid integer"}])
    assert (error.status, error.param, error.message) == (400, "n", "n: Input should be a valid integer")


def test_sampling_fields_keep_defaults_for_omitted_fields():
    fields = sampling_fields({"n": 2, "temperature": None, "stop": "\n", "stop_token_ids": [7]}, max_tokens=None,
                             logprobs=False, top_logprobs=0, default_max_tokens=256, eos_id=1)
    assert fields == {"max_tokens": 256, "logprobs": False, "top_logprobs": 0, "n": 2, "stop": ["\n"],
                      "stop_token_ids": (1, 7)}
    fields = sampling_fields({"ignore_eos": True}, max_tokens=4, logprobs=False, top_logprobs=0, default_max_tokens=256,
                             eos_id=1)
    assert fields["stop_token_ids"] == () and fields["max_tokens"] == 4


def update(index, text, finished=False):
    completion = SimpleNamespace(text=text, token_ids=[0] * len(text), finish_reason="length", model_logprobs=[],
                                 top_logprobs=None)
    return SimpleNamespace(index=index, text=text, token_ids=[0] * len(text), finished=finished, completion=completion,
                           model_logprobs=[], top_logprobs=None)


async def updates_of(items, error=None):
    for item in items:
        yield item
    if error is not None:
        raise error


def collect(source):
    async def run():
        return [event async for event in source]

    return asyncio.run(run())


def test_streams_and_whole_answers():
    answer = CompletionAnswer("m", [[1, 2], [3]], 2, token_text=None, logprobs=False)
    done = []
    items = [(0, update(1, "ab")), (1, update(0, "c", finished=True)), (0, update(1, "", finished=True))]
    events = collect(stream_events(answer, updates_of(items), include_usage=True, finished=lambda *a: done.append(a)))
    assert events[-1] == "data: [DONE]\n\n"
    chunks = [json.loads(event[len("data: "):]) for event in events[:-1]]
    assert [c["choices"][0]["index"] for c in chunks[:-1]] == [1, 2, 1]  # prompt index x n + choice
    assert chunks[-1]["usage"] == {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}
    assert done == [(3, ["length", "length"])]

    failed = collect(stream_events(answer, updates_of(items[:1], APIError(500, "boom", type="server_error")),
                                   include_usage=True, finished=lambda *a: done.append(a)))
    assert json.loads(failed[-1].split("\n\n")[0][len("data: "):])["error"]["message"] == "boom"
    assert failed[-1].endswith("data: [DONE]\n\n") and len(done) == 1  # not logged as answered

    whole = asyncio.run(whole_answer(answer, updates_of(items), finished=lambda *a: None))
    assert [(c["index"], c["text"]) for c in whole["choices"]] == [(1, ""), (2, "c")]
    assert whole["object"] == "text_completion" and whole["usage"]["completion_tokens"] == 1


class Letters:
    """TokenText stand-in: token id i is the letter chr(97 + i)."""

    @staticmethod
    def text(token_id):
        return chr(97 + token_id)


def test_echo_answers_put_the_prompt_first():
    echo = [Echo("ab", [0, 1], [None, -0.5], [None, {1: -0.5, 2: -1.5}]), Echo("c", [2], [None], [None])]
    answer = CompletionAnswer("m", [[0, 1], [2]], 1, token_text=Letters, logprobs=True, echo=echo, echo_only=True)
    choices = answer.echo_choices()
    assert [(c["index"], c["text"], c["finish_reason"]) for c in choices] == [(0, "ab", "length"), (1, "c", "length")]
    assert choices[0]["logprobs"] == {"tokens": ["a", "b"], "token_logprobs": [None, -0.5],
                                      "top_logprobs": [None, {"b": -0.5, "c": -1.5}], "text_offset": [0, 1]}
    # a completion after its echo: text and log-probs continue the prompt's, offsets too
    answer = CompletionAnswer("m", [[0, 1]], 1, token_text=Letters, logprobs=True, echo=echo[:1])
    completion = SimpleNamespace(text="dd", token_ids=[3, 3], model_logprobs=[-1.0, -2.0], top_logprobs=None,
                                 finish_reason="length")
    choice = answer.choice(0, completion)
    assert choice["text"] == "abdd"
    assert choice["logprobs"] == {"tokens": ["a", "b", "d", "d"], "token_logprobs": [None, -0.5, -1.0, -2.0],
                                  "text_offset": [0, 1, 2, 3], "top_logprobs": [None, {"b": -0.5, "c": -1.5}, None, None]}
    streamed = collect(stream_events(answer, updates_of([]), include_usage=False, finished=lambda *a: None))
    assert json.loads(streamed[0][len("data: "):])["choices"][0]["text"] == "ab"
    with pytest.raises(ValueError, match="echo_only needs echo"):
        CompletionAnswer("m", [[0]], 1, token_text=Letters, logprobs=False, echo_only=True)
