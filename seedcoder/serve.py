"""An OpenAI-compatible HTTP server for our model: `seedcoder serve --checkpoint DIR`.

    seedcoder serve --checkpoint runs/demo/checkpoints --port 8000 [--max-batch 32] [--log-jsonl serve.jsonl]
    # then any OpenAI client:
    client = openai.OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="unused")
    client.completions.create(model=client.models.list().data[0].id, prompt="def fib(n):", max_tokens=64)

Endpoints (FastAPI + uvicorn): GET /v1/models, POST /v1/completions, POST /v1/chat/completions (Seed-Coder's
chat template, seedcoder/chat_template.py), GET /health. Streaming is server-sent events in OpenAI's chunk
format, ended by `data: [DONE]`. Supported request fields: n, temperature, top_p, max_tokens
(max_completion_tokens for chat), stop, seed, logprobs (completions: the number of alternatives per token;
chat: logprobs + top_logprobs), echo (completions: the prompt first, with its tokens' log-probs when logprobs
is set; max_tokens 0 returns only that: a prompt's log-probabilities, as the log-prob rater
`seedcoder.curate.logprob_oracle` reads them), stream, stream_options.include_usage, and vLLM's extras top_k,
repetition_penalty, ignore_eos, stop_token_ids. Omitted sampling fields take `SamplingParams`' defaults (the
paper's temperature 0.6, top-p 0.8, repetition penalty 1.05; max_tokens `--max-tokens`, 256). Reported
log-probabilities are the raw model's (log_softmax of the logits at temperature 1, as vLLM reports them); a
prompt's come from one forward pass of the model per prompt, outside the engine's batch (with alternatives it
holds the prompt's logits: prompt tokens x vocabulary). Unsupported fields (suffix, best_of > n,
presence/frequency penalties, tools) are refused, not ignored.

Limits, checked before any work: a request body over `--max-request-bytes` (default 1 MiB) is answered 413
before it is parsed (the Content-Length header first, then the bytes as they arrive); a request asking for
more than `--max-n` completions (default 256: n, best_of, and prompts x n; pass@100 takes n = 200) gets a 400;
so does one whose prompt tokens + max_tokens exceed the context (`max_model_len` in /v1/models), as vLLM
answers it. Without max_tokens a completion runs up to `--max-tokens` or the end of the context.

Errors use OpenAI's format {"error": {"message", "type", "param", "code"}}: HTTP 400 for a bad request (the
message names the field), 404 for an unknown model name, 413 for a request body over the limit, 500 when the
engine fails (every request then running fails; the server keeps serving).

Batching: one background thread drives the engine (`Engine.step`); every HTTP request adds its prompt(s) to the
engine and waits on an asyncio queue fed from that thread, so requests from concurrent clients are decoded
together (continuous batching: a request joins as soon as a slot is free). A client that disconnects
mid-stream has its request aborted. `--log-jsonl PATH` appends one JSON line per finished request (endpoint,
tokens, latency).

Weight updates (the rollout protocol of RL, `seedcoder.posttrain.grpo` with rollout backend "server"): POST
/v1/weights {"path": a safetensors file of the model's whole state dict (our parameter names), "version": an
integer above the current one} loads the file and swaps the weights in between requests: the engine thread applies
an update only when no request is queued or running, so every request samples from one version; the POST returns
{"version", "seconds"} once the new weights serve. Every completion answer (and stream chunk) carries
"weights_version" (0: the checkpoint's weights), as does GET /v1/weights. A file of other parameter names or
shapes is a 400 naming the tensor, a version not above the current one a 409; nothing is swapped then. Passing a
path on a shared filesystem keeps gigabytes of weights out of the request body (and its 1 MiB limit).
`"return_token_ids": true` in a completion request (vLLM's field) adds each choice's sampled "token_ids".

Layout: seedcoder/openai_api.py holds the API itself (the request schema, each check and limit, the response and
stream shapes) as plain functions; this module holds the HTTP side (the body-size middleware, the engine thread
`EngineLoop`, the routes, each of which reads parse -> engine -> answer) and the command line.
"""

# No `from __future__ import annotations` here: FastAPI reads the request models from the route handlers'
# annotations, and those models are built when the app is (openai_api.request_models), so that importing this
# module imports neither pydantic nor FastAPI.
import argparse
import asyncio
import contextlib
import json
import os
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Hashable
from typing import TYPE_CHECKING, Any

from seedcoder.chat_template import ChatTemplateError, tokenize_chat
from seedcoder.errors import UserError
from seedcoder.openai_api import (
    Answer,
    APIError,
    ChatAnswer,
    CompletionAnswer,
    Echo,
    Finished,
    TokenText,
    chat_max_tokens,
    check_chat_logprobs,
    check_completion_count,
    check_context,
    check_model,
    echo_only,
    prompts_of,
    refuse_unsupported,
    request_models,
    sampling_fields,
    stream_events,
    validation_error,
    whole_answer,
)

if TYPE_CHECKING:  # imported where used, so that `seedcoder --help` (which imports this module) stays fast
    from seedcoder.generate import Engine, SequenceUpdate
    from seedcoder.sampling import SamplingParams

DEFAULT_MAX_TOKENS = 256
DEFAULT_MAX_N = 256  # completions per request: pass@100 is usually estimated from n = 200 samples
DEFAULT_MAX_REQUEST_BYTES = 1 << 20  # a 32K-token prompt is ~128 KB of text, ~250 KB as a JSON list of token ids


class RequestSizeLimit:
    """ASGI middleware: a request body over `max_bytes` is answered 413 (OpenAI's error format) before the app parses
    it: on the Content-Length header, else (chunked) as soon as the bytes read pass the limit. A body within the
    limit is read here and handed on whole."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send, f"the request body is {int(declared):,} bytes")
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                await self._refuse(send, f"the request body is at least {size:,} bytes")
                return
            if not message.get("more_body", False):
                break
        body_sent = False

        async def replay():
            nonlocal body_sent
            if not body_sent:
                body_sent = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()  # after the body: the disconnect a stream watches for

        await self.app(scope, replay, send)

    async def _refuse(self, send, what: str) -> None:
        error = APIError(413, f"{what}, over this server's limit of {self.max_bytes:,} bytes (seedcoder serve "
                              "--max-request-bytes)", code="request_too_large")
        payload = json.dumps(error.body()).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})




# ------------------------------------------------------------------------------------------ engine thread
class EngineLoop:
    """Runs `engine.step()` in a background thread and routes each update to the asyncio queue of its HTTP request,
    so that concurrent requests are decoded together."""

    def __init__(self, engine: "Engine"):
        self.engine = engine
        self._lock = threading.Lock()
        self._routes: dict[Hashable, tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.version = 0  # of the weights serving now (changed under _lock, while no request is in the engine)
        self.submitted_version = 0  # the version the latest submitted request samples from (set in the event loop)
        self._pending: list[tuple[dict, int, threading.Event, list]] = []  # weight updates the engine thread applies
        self._thread = threading.Thread(target=self._run, name="seedcoder-engine", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=30)

    def update_weights(self, state: dict, version: int) -> None:
        """Swap the engine's weights for `state` (blocking; call from a worker thread) once no request is in the
        engine; ValueError (nothing swapped) when the names, shapes or version do not fit."""
        current = self.engine.model.state_dict()
        if state.keys() != current.keys():
            missing, extra = sorted(current.keys() - state.keys()), sorted(state.keys() - current.keys())
            raise ValueError(f"path: the weights do not fit the served model (missing {missing[:3]}, unexpected {extra[:3]})")
        for name, tensor in state.items():
            if tuple(tensor.shape) != tuple(current[name].shape):
                raise ValueError(f"path: {name} has shape {tuple(tensor.shape)}, the served model's is "
                                 f"{tuple(current[name].shape)}")
        done, failure = threading.Event(), []
        with self._lock:
            self._pending.append((state, version, done, failure))
        self._wake.set()
        done.wait()
        if failure:
            raise failure[0]

    def _apply_pending(self) -> None:
        """In the engine thread, between requests: the queued weight updates, in order."""
        import torch

        with self._lock:  # no request can be added meanwhile, so none samples from half-swapped weights
            if self.engine.has_unfinished():
                return
            pending, self._pending = self._pending, []
            for state, version, done, failure in pending:
                if version <= self.version:
                    failure.append(VersionConflict(f"version: {version} is not above the serving version {self.version}"))
                else:
                    with torch.no_grad():
                        for name, tensor in self.engine.model.state_dict().items():
                            tensor.copy_(state[name])
                    self.version = version
                done.set()

    def submit(self, prompts: list[list[int]], params: "SamplingParams") -> AsyncIterator[tuple[int, "SequenceUpdate"]]:
        """Add one HTTP request's prompts (call from the event loop); APIError 400 for a prompt the engine refuses
        (nothing of the request then runs). Returns its updates as (prompt index, update) until every sequence
        finished; stopping early (a client gone) aborts what still runs. The weights version they sample from is
        `self.submitted_version` right after this call (no update applies while they are in the engine)."""
        from seedcoder.generate import GenerationError

        queue: asyncio.Queue = asyncio.Queue()
        request_ids: list[Hashable] = []
        try:
            for index, prompt in enumerate(prompts):
                try:
                    request_ids.append(self._add(prompt, params, queue))
                except GenerationError as error:
                    where = f"prompt {index}: " if len(prompts) > 1 else ""
                    raise APIError(400, where + str(error), param=error.param or "prompt") from None
        except BaseException:
            for request_id in request_ids:
                self._release(request_id, abort=True)
            raise
        return self._updates(request_ids, queue, params.n)

    async def _updates(self, request_ids: list[Hashable], queue: asyncio.Queue,
                       n: int) -> AsyncIterator[tuple[int, "SequenceUpdate"]]:
        position = {request_id: index for index, request_id in enumerate(request_ids)}
        remaining = len(request_ids) * n
        try:
            while remaining:
                update: SequenceUpdate = await queue.get()
                if update.error is not None:
                    raise APIError(500, f"generation failed: {type(update.error).__name__}: {update.error}",
                                   type="server_error")
                if update.finished:
                    remaining -= 1
                yield position[update.request_id], update
        finally:
            for request_id in request_ids:
                self._release(request_id, abort=remaining != 0)

    def _add(self, prompt_ids: list[int], params: "SamplingParams", queue: asyncio.Queue) -> Hashable:
        request_id = f"req-{uuid.uuid4().hex}"
        with self._lock:  # also keeps a weight update from starting between the version read and the add
            self._routes[request_id] = (asyncio.get_running_loop(), queue)
            self.submitted_version = self.version
            try:
                self.engine.add_request(prompt_ids, params, request_id=request_id)
            except BaseException:
                self._routes.pop(request_id, None)
                raise
        self._wake.set()
        return request_id

    def _release(self, request_id: Hashable, *, abort: bool) -> None:
        """Stop routing a request's updates; abort it in the engine when it has not finished."""
        with self._lock:
            self._routes.pop(request_id, None)
        if abort:
            self.engine.abort(request_id)

    def _deliver(self, request_id: Hashable, item: "SequenceUpdate") -> None:
        with self._lock:
            route = self._routes.get(request_id)
        if route is not None:
            loop, queue = route
            with contextlib.suppress(RuntimeError):  # the event loop closed (shutdown): nobody is waiting
                loop.call_soon_threadsafe(queue.put_nowait, item)

    def _run(self) -> None:
        from seedcoder.generate import SequenceUpdate

        while not self._stop.is_set():
            if self._pending:
                self._apply_pending()
            if not self.engine.has_unfinished():
                self._wake.wait(timeout=0.5)
                self._wake.clear()
                continue
            try:
                updates = self.engine.step()
            except Exception as error:  # fail what was running, keep serving
                for request_id in self.engine.fail_all():
                    self._deliver(request_id, SequenceUpdate(request_id, -1, "", [], True, 0, error=error))
                continue
            for update in updates:
                self._deliver(update.request_id, update)


class VersionConflict(ValueError):
    """A weight update whose version is not above the serving one (HTTP 409)."""


def read_weights(path: str) -> dict:
    """The tensors of a safetensors file (a weight update), on the CPU; ValueError naming the path otherwise."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path)
    except (OSError, SafetensorError) as error:
        raise ValueError(f"path: cannot read safetensors weights from {path!r}: {error}") from None


# ------------------------------------------------------------------------------------------ engine-facing parsing
def encode_prompts(engine: "Engine", prompts: list[Any]) -> list[list[int]]:
    """A completion request's prompts (strings or token ids) as token ids; 400 for one the engine refuses."""
    from seedcoder.generate import GenerationError

    out = []
    for index, prompt in enumerate(prompts):
        try:
            out.append(engine.encode_prompt(prompt, "prompt" if len(prompts) == 1 else f"prompt[{index}]"))
        except GenerationError as error:
            raise APIError(400, str(error), param="prompt") from None
    return out


def encode_chat(engine: "Engine", messages: list[dict[str, Any]]) -> list[int]:
    """A chat request's messages as the token ids of Seed-Coder's chat template; 400 for messages it refuses."""
    from seedcoder.generate import GenerationError

    try:
        return engine.encode_prompt(tokenize_chat(messages, engine.tokenizer).input_ids, "messages")
    except (ChatTemplateError, GenerationError) as error:
        raise APIError(400, str(error), param="messages") from None


def echo_prompts(engine: "Engine", given: list[Any], prompts: list[list[int]], top: int | None) -> list[Echo]:
    """The echo of each prompt: its text (a string prompt as given, token ids decoded) and, when `top` is not None
    (the request's logprobs), its tokens' log-probs under the model (None for the first) with `top` alternatives.
    One forward pass per prompt, in the calling thread (the engine's own thread keeps decoding meanwhile: a
    forward pass without a cache changes no state)."""
    import torch

    echoes = []
    with torch.inference_mode():
        for prompt, ids in zip(given, prompts):
            text = prompt if isinstance(prompt, str) else engine.tokenizer.decode(ids, skip_special_tokens=False)
            if top is None:
                echoes.append(Echo(text, ids))
                continue
            logprobs: list[float | None] = [None]
            alternatives: list[dict[int, float] | None] | None = [None] if top else None
            if len(ids) > 1:
                x = torch.tensor([ids], device=engine.device)
                labels = torch.tensor([ids[1:] + [-100]], device=engine.device)
                if top:  # the alternatives need the logits: prompt tokens x vocabulary
                    rows = engine.model(x)[0, :-1].float().log_softmax(-1)
                    logprobs += rows.gather(-1, labels[0, :-1, None])[:, 0].tolist()
                    values, indices = rows.topk(top, dim=-1)
                    alternatives += [dict(zip(i, v)) for i, v in zip(indices.tolist(), values.tolist())]
                else:  # the fused loss: each next token's -log-prob without the logits
                    losses = engine.model(x, labels=labels, loss_reduction="none")[0, :-1].float()
                    logprobs += (-losses).tolist()
            echoes.append(Echo(text, ids, logprobs, alternatives))
    return echoes


async def no_updates() -> AsyncIterator[tuple[int, "SequenceUpdate"]]:
    """The updates of an echo-only answer: none (nothing is generated)."""
    return
    yield


def sampling_params(fields: dict[str, Any]) -> "SamplingParams":
    """SamplingParams from `openai_api.sampling_fields`; 400 naming the field SamplingParams refuses."""
    from seedcoder.sampling import SamplingParams, SamplingParamsError

    try:
        return SamplingParams(**fields)
    except SamplingParamsError as error:
        raise APIError(400, str(error), param=error.param) from None


class RequestLog:
    """`--log-jsonl PATH`: one JSON line per finished request (endpoint, tokens, latency); None writes nothing."""

    def __init__(self, path: str | os.PathLike | None):
        self.path = path
        self._lock = threading.Lock()

    def when_finished(self, answer: Answer, *, stream: bool, started: float) -> Finished:
        def write(completion_tokens: int, finish: list[str]) -> None:
            if self.path is None:
                return
            record = {"time": time.time(), "id": answer.id, "endpoint": answer.endpoint, **answer.log_fields,
                      "n": answer.n, "prompt_tokens": sum(map(len, answer.prompts)),
                      "completion_tokens": completion_tokens, "finish_reasons": finish, "stream": stream,
                      "latency_s": round(time.perf_counter() - started, 4)}
            with self._lock, open(self.path, "a", encoding="utf-8") as file:  # one line per request: appends stay whole
                file.write(json.dumps(record) + "\n")

        return write


# ------------------------------------------------------------------------------------------ app
def create_app(engine: "Engine", model_name: str, *, default_max_tokens: int = DEFAULT_MAX_TOKENS,
               log_jsonl: str | os.PathLike | None = None, max_n: int = DEFAULT_MAX_N,
               max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES):
    """The FastAPI app serving `engine` as `model_name`; the engine thread starts and stops with the app.
    max_n: completions per request at most; max_request_bytes: the largest request body (module docstring)."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, StreamingResponse

    CompletionRequest, ChatRequest = request_models()
    engine_loop = EngineLoop(engine)
    token_text = TokenText(engine.tokenizer)
    request_log = RequestLog(log_jsonl)
    created = int(time.time())

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        engine_loop.start()
        try:
            yield
        finally:
            engine_loop.stop()

    app = FastAPI(title="seedcoder", lifespan=lifespan)
    app.state.engine_loop = engine_loop
    app.add_middleware(RequestSizeLimit, max_bytes=max_request_bytes)

    @app.exception_handler(APIError)
    async def api_error(_request: Request, error: APIError):
        return JSONResponse(error.body(), status_code=error.status)

    @app.exception_handler(RequestValidationError)
    async def invalid_body(_request: Request, error: RequestValidationError):
        refusal = validation_error(error.errors())
        return JSONResponse(refusal.body(), status_code=refusal.status)

    async def respond(answer: Answer, updates: AsyncIterator, body: Any, started: float):
        """The answer: server-sent events when the request streams, else the whole object once generated."""
        finished = request_log.when_finished(answer, stream=body.stream, started=started)
        if body.stream:
            include_usage = bool((body.stream_options or {}).get("include_usage"))
            return StreamingResponse(stream_events(answer, updates, include_usage=include_usage, finished=finished),
                                     media_type="text/event-stream")
        return await whole_answer(answer, updates, finished=finished)

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/v1/weights")
    async def weights_version():
        return {"version": engine_loop.version}

    @app.post("/v1/weights")
    async def update_weights(body: dict):
        path, version = body.get("path"), body.get("version")
        if not isinstance(path, str) or not path:
            raise APIError(400, "path: expected the path of a safetensors file", param="path")
        if isinstance(version, bool) or not isinstance(version, int):
            raise APIError(400, f"version: expected an integer, got {version!r}", param="version")
        if version <= engine_loop.version:  # before reading gigabytes (checked again when the swap happens)
            raise APIError(409, f"version: {version} is not above the serving version {engine_loop.version}", param="version")
        started = time.perf_counter()
        try:
            state = await asyncio.to_thread(read_weights, path)
            await asyncio.to_thread(engine_loop.update_weights, state, version)
        except VersionConflict as error:
            raise APIError(409, str(error), param="version") from None
        except ValueError as error:
            raise APIError(400, str(error), param="path") from None
        return {"version": engine_loop.version, "seconds": time.perf_counter() - started}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": created, "owned_by": "seedcoder",
                                            "max_model_len": engine.max_seq_len}]}

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest):
        started = time.perf_counter()
        raw = body.model_dump()
        check_model(body.model, model_name)
        given = prompts_of(body.prompt)
        check_completion_count(raw, len(given), max_n)
        refuse_unsupported(raw)
        only_echo = echo_only(raw)
        prompts = encode_prompts(engine, given)
        check_context(prompts, body.max_tokens, engine.max_seq_len, param="max_tokens", what="prompt")
        # with echo-only, max_tokens 1 just lets SamplingParams check the other fields; nothing is generated
        params = sampling_params(sampling_fields(raw, max_tokens=1 if only_echo else body.max_tokens,
                                                 logprobs=body.logprobs is not None, top_logprobs=body.logprobs or 0,
                                                 default_max_tokens=default_max_tokens, eos_id=engine.eos_id))
        echo = None
        if body.echo:
            echo = await asyncio.to_thread(echo_prompts, engine, given, prompts, body.logprobs)
        answer = CompletionAnswer(model_name, prompts, params.n, token_text, params.logprobs, echo=echo,
                                  echo_only=only_echo, token_ids=bool(raw.get("return_token_ids")))
        if only_echo:
            if not body.stream:
                choices = answer.echo_choices()
                request_log.when_finished(answer, stream=False, started=started)(0, [c["finish_reason"] for c in choices])
                return answer.whole(choices, 0)
            return await respond(answer, no_updates(), body, started)
        updates = engine_loop.submit(prompts, params)
        answer.base["weights_version"] = engine_loop.submitted_version  # fixed while the request is in the engine
        return await respond(answer, updates, body, started)

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatRequest):
        started = time.perf_counter()
        raw = body.model_dump()
        check_model(body.model, model_name)
        check_completion_count(raw, 1, max_n)
        refuse_unsupported(raw)
        prompt = encode_chat(engine, body.messages)
        max_tokens, max_tokens_param = chat_max_tokens(raw)
        check_context([prompt], max_tokens, engine.max_seq_len, param=max_tokens_param, what="messages")
        check_chat_logprobs(raw)
        params = sampling_params(sampling_fields(raw, max_tokens=max_tokens, logprobs=body.logprobs,
                                                 top_logprobs=body.top_logprobs or 0, default_max_tokens=default_max_tokens,
                                                 eos_id=engine.eos_id))
        updates = engine_loop.submit([prompt], params)
        answer = ChatAnswer(model_name, prompt, params.n, token_text, params.logprobs)
        answer.base["weights_version"] = engine_loop.submitted_version
        return await respond(answer, updates, body, started)

    return app


# ------------------------------------------------------------------------------------------ CLI
def add_serve_commands(groups: argparse._SubParsersAction) -> None:
    serve = groups.add_parser(
        "serve",
        help="an OpenAI-compatible HTTP server for a checkpoint (/v1/completions, /v1/chat/completions, streaming)",
        description="Serves CHECKPOINT (our checkpoint, a folder of step-N checkpoints (the newest is used), or a "
                    "Hugging Face Llama folder) with the batched generation engine. See docs/serving.md.",
    )
    serve.add_argument("--checkpoint", required=True, metavar="DIR", help="checkpoint to serve")
    serve.add_argument("--tokenizer", metavar="PATH", help="tokenizer.json or a folder holding one (default: found next "
                                                           "to the checkpoint or from its training data)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.add_argument("--served-model-name", metavar="NAME", help="the model name clients pass (default: --checkpoint "
                                                                    "as given, like `vllm serve`)")
    serve.add_argument("--max-batch", type=int, default=32, help="sequences decoded together (default 32)")
    serve.add_argument("--max-seq-len", type=int, help="longest prompt + completion (default: the model's max_seq_len)")
    serve.add_argument("--max-prefill-tokens", type=int, default=8192, help="prompt tokens prefilled per step (default 8192)")
    serve.add_argument("--kv-cache-tokens", type=int, help="paged KV cache budget in positions (default max-batch x context)")
    serve.add_argument("--max-tokens", type=int, default=DEFAULT_MAX_TOKENS,
                       help=f"max_tokens when a request omits it (default {DEFAULT_MAX_TOKENS})")
    serve.add_argument("--max-n", type=int, default=DEFAULT_MAX_N,
                       help=f"completions one request may ask for: n, best_of, prompts x n (default {DEFAULT_MAX_N}; "
                            "more: HTTP 400)")
    serve.add_argument("--max-request-bytes", type=int, default=DEFAULT_MAX_REQUEST_BYTES,
                       help=f"largest request body (default {DEFAULT_MAX_REQUEST_BYTES:,}: 1 MiB; more: HTTP 413 before "
                            "parsing)")
    serve.add_argument("--device", help="cuda, cuda:1, cpu (default: cuda when present)")
    serve.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], help="weights dtype (default bf16 on CUDA, fp32 on CPU)")
    serve.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    serve.add_argument("--seed", type=int, default=0, help="seed of the shared sampling generator (default 0)")
    serve.add_argument("--log-jsonl", metavar="PATH", help="append one JSON line per finished request")
    serve.set_defaults(handler=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    import torch
    import uvicorn

    from seedcoder.generate import Engine, GenerationError
    from seedcoder.hf_convert import DTYPES

    for name in ("port", "max_batch", "max_prefill_tokens", "max_tokens", "max_n", "max_request_bytes"):
        if getattr(args, name) < 1:
            print(f"seedcoder serve: --{name.replace('_', '-')} must be >= 1", file=sys.stderr)
            return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        engine = Engine.from_checkpoint(args.checkpoint, args.device, DTYPES[args.dtype] if args.dtype else None,
                                        tokenizer=args.tokenizer, max_batch=args.max_batch, max_seq_len=args.max_seq_len,
                                        max_prefill_tokens=args.max_prefill_tokens, kv_cache_tokens=args.kv_cache_tokens,
                                        seed=args.seed)
    except (UserError, GenerationError, ValueError, OSError) as error:  # UserError: the checkpoint or its tokenizer
        print(f"seedcoder serve: {error}", file=sys.stderr)
        return 1
    name = args.served_model_name or args.checkpoint
    print(f"seedcoder serve: {name} on http://{args.host}:{args.port}/v1 ({engine.device}, {engine.dtype}, "
          f"{args.max_batch} slots, context {engine.max_seq_len})", flush=True)
    app = create_app(engine, name, default_max_tokens=args.max_tokens, log_jsonl=args.log_jsonl, max_n=args.max_n,
                     max_request_bytes=args.max_request_bytes)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0


__all__ = ["EngineLoop", "RequestLog", "RequestSizeLimit", "VersionConflict", "add_serve_commands", "create_app", "echo_prompts",
           "encode_chat", "encode_prompts", "read_weights", "run_serve", "sampling_params"]
