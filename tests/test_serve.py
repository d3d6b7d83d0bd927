"""The OpenAI-compatible server, driven by the official `openai` client against uvicorn on a free local port.

The server's outputs are checked against the engine's own (a second Engine on the same model), so a wrong
request mapping, template, or batching effect shows up as a different text.
"""

import argparse
import http.client
import json
import socket
import threading
import time
from types import SimpleNamespace

import pytest
import torch

openai = pytest.importorskip("openai")
uvicorn = pytest.importorskip("uvicorn")

from toy_models import toy_model, toy_tokenizer  # noqa: E402

from seedcoder.chat_template import tokenize_chat  # noqa: E402
from seedcoder.generate import Engine  # noqa: E402
from seedcoder.sampling import SamplingParams  # noqa: E402
from seedcoder.serve import DEFAULT_MAX_N, DEFAULT_MAX_REQUEST_BYTES, add_serve_commands, create_app  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CORPUS = ["def add(a, b):\n    return a + b\n", "import os\nfor name in os.listdir('.'):\n    print(name)\n",
          "class Point:\n    def __init__(self, x):\n        self.x = x\n"] * 8
PROMPT = "def add(a, b):"
MESSAGES = [{"role": "user", "content": "Write add(a, b)."}]
MODEL = "tiny-test"



@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return toy_tokenizer(tmp_path_factory.mktemp("tokenizer"), CORPUS, vocab_size=300)


@pytest.fixture(scope="module")
def model(tokenizer):
    return toy_model(tokenizer.get_vocab_size(), seed=1)


@pytest.fixture(scope="module")
def reference(model, tokenizer):
    """The engine outside the server (its own cache), to compare the server's answers with."""
    return Engine(model, tokenizer)


@pytest.fixture(scope="module")
def server(model, tokenizer, tmp_path_factory):
    engine = Engine(model, tokenizer, max_batch=8)
    log_path = tmp_path_factory.mktemp("serve") / "requests.jsonl"
    app = create_app(engine, MODEL, log_jsonl=log_path)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # a free port, held from here on (no race with other processes)
    port = sock.getsockname()[1]
    uv = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not uv.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.05)
    yield SimpleNamespace(url=f"http://127.0.0.1:{port}/v1", port=port, engine=engine, log_path=log_path)
    uv.should_exit = True
    thread.join(timeout=30)
    sock.close()


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=120)


def post_raw(server, path, body):
    """(status, body bytes) of a POST with an arbitrary JSON body (or raw bytes)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    connection.request("POST", f"/v1/{path}", body=data, headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    payload = response.read()
    connection.close()
    return response.status, payload


def post_chunked(server, path, chunks):
    """(status, body bytes) of a POST whose body is sent chunked: no Content-Length header."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    connection.request("POST", f"/v1/{path}", body=iter(chunks), headers={"Content-Type": "application/json"},
                       encode_chunked=True)
    response = connection.getresponse()
    payload = response.read()
    connection.close()
    return response.status, payload


def wait_until_idle(engine, seconds=30):
    deadline = time.monotonic() + seconds
    while engine.has_unfinished():
        assert time.monotonic() < deadline, "the engine kept running a request nobody waits for"
        time.sleep(0.02)


# ------------------------------------------------------------------------------------------ answers
def test_models_and_greedy_completion_equal_the_engine(client, reference, tokenizer):
    assert [m.id for m in client.models.list().data] == [MODEL]
    out = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=12, temperature=0,
                                    extra_body={"ignore_eos": True})
    expected = reference.generate([PROMPT], SamplingParams(temperature=0, max_tokens=12, stop_token_ids=()))[0][0]
    assert out.choices[0].text == expected.text
    assert out.choices[0].finish_reason == "length"
    assert out.usage.completion_tokens == 12 and out.usage.prompt_tokens == len(tokenizer.encode(PROMPT).ids)
    assert out.object == "text_completion" and out.model == MODEL


def test_completion_n_seed_logprobs_and_several_prompts(client, reference):
    prompts = [PROMPT, "import os\n"]
    out = client.completions.create(model=MODEL, prompt=prompts, n=2, max_tokens=6, temperature=0.9, top_p=0.95,
                                    seed=5, logprobs=2, stop=["\n\n\n"], extra_body={"ignore_eos": True})
    params = SamplingParams(n=2, max_tokens=6, temperature=0.9, top_p=0.95, seed=5, stop=["\n\n\n"], stop_token_ids=(),
                            top_logprobs=2)
    expected = reference.generate(prompts, params)
    assert [c.index for c in out.choices] == [0, 1, 2, 3]
    for choice in out.choices:
        completion = expected[choice.index // 2][choice.index % 2]
        assert choice.text == completion.text  # seeded: the same draws inside and outside the server
        assert choice.logprobs.token_logprobs == pytest.approx(completion.model_logprobs, abs=1e-4)
        assert len(choice.logprobs.tokens) == len(completion.token_ids) == len(choice.logprobs.top_logprobs)
        assert all(1 <= len(alternatives) <= 2 for alternatives in choice.logprobs.top_logprobs)
    assert out.usage.completion_tokens == sum(len(c.token_ids) for pair in expected for c in pair)


def test_chat_greedy_equals_the_engine_on_the_chat_template(client, reference, tokenizer):
    out = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=10, temperature=0, logprobs=True,
                                         top_logprobs=2, extra_body={"ignore_eos": True})
    expected = reference.chat([MESSAGES], SamplingParams(temperature=0, max_tokens=10, stop_token_ids=()))[0][0]
    choice = out.choices[0]
    assert choice.message.role == "assistant" and choice.message.content == expected.text
    assert [entry.logprob for entry in choice.logprobs.content] == pytest.approx(expected.model_logprobs, abs=1e-4)
    assert all(len(entry.top_logprobs) == 2 for entry in choice.logprobs.content)
    assert bytes(b for entry in choice.logprobs.content for b in entry.bytes).decode("utf-8", "replace") == expected.text
    assert out.usage.prompt_tokens == len(tokenize_chat(MESSAGES, tokenizer).input_ids)


def direct_logprobs(model, ids):
    """log p(ids[i] | ids[:i]) for i >= 1 and the top-2 alternatives, from one forward pass of the model."""
    with torch.no_grad():
        rows = model(torch.tensor([ids]))[0].log_softmax(-1)
    return [rows[i - 1, ids[i]].item() for i in range(1, len(ids))], rows[:-1].topk(2, dim=-1)


def test_echo_returns_the_prompt_tokens_log_probs(client, model, tokenizer, reference):
    """echo + max_tokens 0: the prompt back with its tokens' log-probs (the first None), as vLLM answers it; the
    log-prob rater reads candidates' log-probs this way."""
    prompts = [PROMPT, "import os\nfor name in os.listdir('.'):"]
    out = client.completions.create(model=MODEL, prompt=prompts, echo=True, max_tokens=0, logprobs=2, n=2)
    assert [c.index for c in out.choices] == [0, 1, 2, 3] and out.usage.completion_tokens == 0
    for choice in out.choices:
        prompt = prompts[choice.index // 2]
        ids = tokenizer.encode(prompt).ids
        expected, (top_values, _) = direct_logprobs(model, ids)
        assert choice.text == prompt and choice.finish_reason == "length"
        assert "".join(choice.logprobs.tokens) == prompt and len(choice.logprobs.tokens) == len(ids)
        assert choice.logprobs.token_logprobs[0] is None and choice.logprobs.top_logprobs[0] is None
        assert choice.logprobs.token_logprobs[1:] == pytest.approx(expected, abs=1e-4)
        for entry, top in zip(choice.logprobs.top_logprobs[1:], top_values.tolist()):  # keyed by text: may collide
            assert 1 <= len(entry) <= 2 and all(min(abs(v - t) for t in top) < 1e-4 for v in entry.values())
        assert choice.logprobs.text_offset[-1] == len(prompt) - len(choice.logprobs.tokens[-1])
    # logprobs=0: the prompt tokens' log-probs through the fused loss, no alternatives
    zero = client.completions.create(model=MODEL, prompt=PROMPT, echo=True, max_tokens=0, logprobs=0).choices[0]
    assert zero.logprobs.token_logprobs[1:] == pytest.approx(out.choices[0].logprobs.token_logprobs[1:], abs=1e-4)
    # token-id prompts are echoed decoded; echo without logprobs carries no log-probs
    plain = client.completions.create(model=MODEL, prompt=tokenizer.encode(PROMPT).ids, echo=True, max_tokens=0)
    assert plain.choices[0].text == PROMPT and plain.choices[0].logprobs is None


def test_echo_before_a_completion_whole_and_streamed(client, reference, tokenizer):
    kwargs = dict(model=MODEL, prompt=PROMPT, echo=True, max_tokens=5, temperature=0, logprobs=1,
                  extra_body={"ignore_eos": True})
    expected = reference.generate([PROMPT], SamplingParams(temperature=0, max_tokens=5, stop_token_ids=()))[0][0]
    choice = client.completions.create(**kwargs).choices[0]
    prompt_tokens = len(tokenizer.encode(PROMPT).ids)
    assert choice.text == PROMPT + expected.text
    assert len(choice.logprobs.tokens) == prompt_tokens + 5 and choice.logprobs.token_logprobs[0] is None
    assert choice.logprobs.token_logprobs[prompt_tokens:] == pytest.approx(expected.model_logprobs, abs=1e-4)
    offsets = choice.logprobs.text_offset
    assert offsets == sorted(offsets) and offsets[prompt_tokens] == len(PROMPT)  # the completion's continue the prompt's
    chunks = list(client.completions.create(stream=True, **kwargs))
    assert chunks[0].choices[0].text == PROMPT and chunks[0].choices[0].logprobs.tokens[0] == choice.logprobs.tokens[0]
    assert "".join(c.choices[0].text for c in chunks if c.choices) == choice.text
    streamed_offsets = [o for c in chunks if c.choices and c.choices[0].logprobs for o in c.choices[0].logprobs.text_offset]
    assert streamed_offsets == offsets
    only = list(client.completions.create(model=MODEL, prompt=PROMPT, echo=True, max_tokens=0, stream=True))
    assert [(c.choices[0].text, c.choices[0].finish_reason) for c in only] == [(PROMPT, "length")]


def test_streaming_completions_and_chat(client):
    kwargs = dict(model=MODEL, max_tokens=16, temperature=0, extra_body={"ignore_eos": True})
    whole = client.completions.create(prompt=PROMPT, **kwargs).choices[0].text
    chunks = list(client.completions.create(prompt=PROMPT, stream=True, stream_options={"include_usage": True}, **kwargs))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == 16 and not chunks[-1].choices

    whole = client.chat.completions.create(messages=MESSAGES, **kwargs).choices[0].message.content
    chunks = list(client.chat.completions.create(messages=MESSAGES, stream=True, **kwargs))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == whole
    assert chunks[-1].choices[0].finish_reason == "length"
    assert all(c.object == "chat.completion.chunk" for c in chunks)


def test_sse_wire_format_ends_with_done(server):
    status, payload = post_raw(server, "completions", {"model": MODEL, "prompt": PROMPT, "max_tokens": 5, "stream": True})
    assert status == 200
    events = [line[len("data: "):] for line in payload.decode().split("\n\n") if line]
    assert events[-1] == "[DONE]"
    assert all(json.loads(event)["object"] == "text_completion" for event in events[:-1])


def test_bad_requests_get_openai_errors(client, server):
    with pytest.raises(openai.BadRequestError) as error:
        client.completions.create(model=MODEL, prompt=PROMPT, temperature=-1)
    assert error.value.status_code == 400 and "temperature" in error.value.message
    assert error.value.body["param"] == "temperature" and error.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="gpt-4", prompt=PROMPT)
    with pytest.raises(openai.BadRequestError, match="role"):
        client.chat.completions.create(model=MODEL, messages=[{"role": "robot", "content": "x"}])
    with pytest.raises(openai.BadRequestError, match="max_tokens: 0 is allowed only with echo") as error:
        client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=0)
    assert error.value.body["param"] == "max_tokens"
    with pytest.raises(openai.BadRequestError, match="suffix"):
        client.completions.create(model=MODEL, prompt=PROMPT, suffix="x")
    with pytest.raises(openai.BadRequestError, match="max_seq_len"):
        client.completions.create(model=MODEL, prompt=[1] * 600)
    for body in [{"model": MODEL}, {"model": MODEL, "prompt": PROMPT, "n": "many"}, b"{not json"]:
        status, payload = post_raw(server, "completions", body)
        assert status == 400, payload
        assert set(json.loads(payload)["error"]) == {"message", "type", "param", "code"}
    status, payload = post_raw(server, "completions", {"model": MODEL})
    assert json.loads(payload)["error"]["param"] == "prompt"


def test_n_and_best_of_over_the_limit_are_refused(client, server):
    too_many = DEFAULT_MAX_N + 1
    with pytest.raises(openai.BadRequestError, match=f"at most {DEFAULT_MAX_N} completions") as error:
        client.completions.create(model=MODEL, prompt=PROMPT, n=too_many, max_tokens=1)
    assert error.value.body["param"] == "n"
    with pytest.raises(openai.BadRequestError, match=f"at most {DEFAULT_MAX_N} completions") as error:
        client.completions.create(model=MODEL, prompt=PROMPT, n=1, max_tokens=1, extra_body={"best_of": too_many})
    assert error.value.body["param"] == "best_of"
    with pytest.raises(openai.BadRequestError, match=f"ask for {2 * (DEFAULT_MAX_N // 2 + 1)} completions") as error:
        client.completions.create(model=MODEL, prompt=[PROMPT, "def"], n=DEFAULT_MAX_N // 2 + 1, max_tokens=1)
    assert error.value.body["param"] == "prompt"
    with pytest.raises(openai.BadRequestError, match="--max-n") as error:
        client.chat.completions.create(model=MODEL, messages=MESSAGES, n=too_many, max_tokens=1)
    assert error.value.body["param"] == "n"
    wait_until_idle(server.engine, seconds=1)  # nothing was started


def test_max_tokens_that_cannot_fit_the_context_is_refused(client, server):
    context = server.engine.max_seq_len
    prompt = [1] * (context - 2)
    with pytest.raises(openai.BadRequestError, match=f"maximum context length is {context} tokens. However, you "
                                                     f"requested {context + 1} tokens \\({context - 2} in the prompt, "
                                                     "3 in the completion\\)") as error:
        client.completions.create(model=MODEL, prompt=prompt, max_tokens=3)
    assert error.value.body["param"] == "max_tokens" and error.value.body["code"] == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError, match="maximum context length"):
        client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=10**9)
    with pytest.raises(openai.BadRequestError, match="prompt 1: .*maximum context length"):
        client.completions.create(model=MODEL, prompt=[[1, 2], prompt], max_tokens=3)
    with pytest.raises(openai.BadRequestError, match="in the messages") as error:
        client.chat.completions.create(model=MODEL, messages=MESSAGES, max_completion_tokens=10**9)
    assert error.value.body["param"] == "max_completion_tokens"
    # what fits exactly is served, and so is a request without max_tokens (it stops at the end of the context)
    out = client.completions.create(model=MODEL, prompt=prompt, max_tokens=2, extra_body={"ignore_eos": True})
    assert out.usage.completion_tokens == 2 and out.choices[0].finish_reason == "length"
    out = client.completions.create(model=MODEL, prompt=prompt, extra_body={"ignore_eos": True})
    assert out.usage.completion_tokens == 2 and out.choices[0].finish_reason == "length"


def test_a_request_body_over_the_limit_is_refused_before_parsing(server, monkeypatch):
    encoded = []
    real_encode = server.engine.encode_prompt
    monkeypatch.setattr(server.engine, "encode_prompt", lambda *args, **kwargs: encoded.append(1) or real_encode(*args,
                                                                                                              **kwargs))
    huge = json.dumps({"model": MODEL, "prompt": "x = 1\n" * (DEFAULT_MAX_REQUEST_BYTES // 6 + 1)}).encode()
    assert len(huge) > DEFAULT_MAX_REQUEST_BYTES
    status, payload = post_raw(server, "completions", huge)
    assert status == 413, payload
    error = json.loads(payload)["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == "request_too_large"
    assert f"{len(huge):,} bytes" in error["message"] and "--max-request-bytes" in error["message"]
    # chunked: no Content-Length, the bytes are counted as they arrive
    status, payload = post_chunked(server, "completions", [huge[i:i + 65536] for i in range(0, len(huge), 65536)])
    assert status == 413 and json.loads(payload)["error"]["code"] == "request_too_large"
    assert encoded == []  # neither was tokenized
    status, payload = post_chunked(server, "completions", [b'{"model": "%s", ' % MODEL.encode(),
                                                           b'"prompt": "def", "max_tokens": 1}'])
    assert status == 200 and encoded, payload  # within the limit: parsed and served


def test_concurrent_clients_are_batched_and_get_their_own_answers(client, server, reference):
    prompts = [PROMPT, "import os\n", "class Point:\n", "def"]
    expected = [c[0].text for c in reference.generate(prompts, SamplingParams(temperature=0, max_tokens=40,
                                                                               stop_token_ids=()))]
    server.engine.stats["peak_running"] = 0
    answers = [None] * len(prompts)

    def ask(index):
        answers[index] = client.completions.create(model=MODEL, prompt=prompts[index], max_tokens=40, temperature=0,
                                                   extra_body={"ignore_eos": True}).choices[0].text

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(prompts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == expected
    assert server.engine.stats["peak_running"] >= 2  # decoded in one batch


def test_a_client_that_disconnects_mid_stream_is_aborted(client, server):
    finished_before = server.engine.stats["finished"]
    stream = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=480, temperature=0, stream=True,
                                       extra_body={"ignore_eos": True})
    for count, _ in enumerate(stream):
        if count == 2:
            break
    stream.close()
    wait_until_idle(server.engine)
    assert server.engine.stats["finished"] == finished_before  # stopped, not run to its 480 tokens


def test_an_engine_failure_answers_500_and_the_server_keeps_serving(client, server, monkeypatch):
    engine = server.engine
    real_step = engine.step

    def failing_step():
        monkeypatch.setattr(engine, "step", real_step)  # only this one step fails
        raise RuntimeError("injected failure")

    monkeypatch.setattr(engine, "step", failing_step)
    with pytest.raises(openai.InternalServerError, match="injected failure"):
        client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=4)
    wait_until_idle(engine)  # the failed request was dropped (its abort notice drains at the next loop turn)
    assert client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=4, extra_body={"ignore_eos": True}
                                     ).usage.completion_tokens == 4


def test_request_log_lines(client, server):
    client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=3, temperature=0,
                                   extra_body={"ignore_eos": True})
    records = [json.loads(line) for line in server.log_path.read_text().splitlines()]
    last = records[-1]
    assert last["endpoint"] == "chat.completions" and last["completion_tokens"] == 3 and last["latency_s"] > 0


def test_serve_command_line(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_serve_commands(parser.add_subparsers(dest="group"))
    args = parser.parse_args(["serve", "--checkpoint", str(tmp_path), "--port", "8123", "--max-batch", "4"])
    assert (args.port, args.max_batch, args.host) == (8123, 4, "127.0.0.1")
    assert (args.max_n, args.max_request_bytes) == (DEFAULT_MAX_N, DEFAULT_MAX_REQUEST_BYTES)
    assert args.handler(args) == 1
    assert "not a checkpoint" in capsys.readouterr().err
    args = parser.parse_args(["serve", "--checkpoint", str(tmp_path), "--max-n", "0"])
    assert args.handler(args) == 2
    assert "--max-n must be >= 1" in capsys.readouterr().err
