"""An OpenAI-compatible HTTP server for our model: `seedcoder serve --checkpoint DIR`.

    seedcoder serve --checkpoint runs/demo/checkpoints --port 8000 [--max-batch 32] [--log-jsonl serve.jsonl]
    # then any OpenAI client:
    client = openai.OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="unused")
    client.completions.create(model=client.models.list().data[0].id, prompt="def fib(n):", max_tokens=64)

Endpoints (FastAPI + uvicorn): GET /v1/models, POST /v1/completions, POST /v1/chat/completions (Seed-Coder's
chat template, seedcoder/chat_template.py), GET /health. Streaming is server-sent events in OpenAI's chunk
format, ended by `data: [DONE]`. Supported request fields: n, temperature, top_p, max_tokens
(max_completion_tokens for chat), stop, seed, logprobs (completions: the number of alternatives per token;
chat: logprobs + top_logprobs), stream, stream_options.include_usage, and vLLM's extras top_k,
repetition_penalty, ignore_eos, stop_token_ids. Omitted sampling fields take `SamplingParams`' defaults (the
paper's temperature 0.6, top-p 0.8, repetition penalty 1.05; max_tokens `--max-tokens`, 256). Reported
log-probabilities are the raw model's (log_softmax of the logits at temperature 1, as vLLM reports them).
Unsupported fields (echo, suffix, best_of > n, presence/frequency penalties, tools) are refused, not ignored.

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
"""

# No `from __future__ import annotations` here: FastAPI reads the request models from the handlers' annotations,
# and those models are local to create_app (so importing this module does not import pydantic / FastAPI).
import argparse
import asyncio
import contextlib
import json
import os
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Hashable, Sequence
from typing import TYPE_CHECKING, Any

from seedcoder.errors import UserError

if TYPE_CHECKING:  # imported where used, so that `seedcoder --help` (which imports this module) stays fast
    from seedcoder.generate import Engine, SequenceUpdate
    from seedcoder.sampling import SamplingParams

DEFAULT_MAX_TOKENS = 256
DEFAULT_MAX_N = 256  # completions per request: pass@100 is usually estimated from n = 200 samples
DEFAULT_MAX_REQUEST_BYTES = 1 << 20  # a 32K-token prompt is ~128 KB of text, ~250 KB as a JSON list of token ids


class APIError(Exception):
    """An error answered in OpenAI's format."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


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
    """Runs `engine.step()` in a background thread and routes each update to the asyncio queue of its request."""

    def __init__(self, engine: "Engine"):
        self.engine = engine
        self._lock = threading.Lock()
        self._routes: dict[Hashable, tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="seedcoder-engine", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=30)

    def submit(self, prompt_ids: list[int], params: "SamplingParams", queue: asyncio.Queue) -> Hashable:
        """Add a request whose updates go to `queue` (call from the event loop). GenerationError for a bad prompt."""
        request_id = f"req-{uuid.uuid4().hex}"
        with self._lock:
            self._routes[request_id] = (asyncio.get_running_loop(), queue)
        try:
            self.engine.add_request(prompt_ids, params, request_id=request_id)
        except BaseException:
            with self._lock:
                self._routes.pop(request_id, None)
            raise
        self._wake.set()
        return request_id

    def release(self, request_id: Hashable, *, abort: bool) -> None:
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


# ------------------------------------------------------------------------------------------ helpers
class TokenText:
    """Token strings and bytes for log-prob answers (byte-level BPE tokens mapped back to their bytes)."""

    def __init__(self, tokenizer: Any):
        from seedcoder.data.tokenizer_tables import UNICODE_TO_BYTE

        self.tokenizer = tokenizer
        self.unicode_to_byte = UNICODE_TO_BYTE

    def bytes(self, token_id: int) -> bytes:
        token = self.tokenizer.id_to_token(token_id)
        if token is None:
            return b""
        if all(char in self.unicode_to_byte for char in token):
            return bytes(self.unicode_to_byte[char] for char in token)
        return token.encode("utf-8")  # an added token (specials): its content

    def text(self, token_id: int) -> str:
        return self.bytes(token_id).decode("utf-8", errors="replace")


def _sampling_params(body: dict[str, Any], *, max_tokens: int | None, logprobs: bool, top_logprobs: int,
                     default_max_tokens: int, eos_id: int) -> "SamplingParams":
    """SamplingParams from a request body; stop_token_ids add to eos unless ignore_eos (vLLM's meaning)."""
    from seedcoder.sampling import SamplingParams, SamplingParamsError

    fields: dict[str, Any] = {"max_tokens": max_tokens if max_tokens is not None else default_max_tokens,
                              "logprobs": logprobs, "top_logprobs": top_logprobs}
    for name in ("n", "temperature", "top_p", "top_k", "repetition_penalty", "seed"):
        if body.get(name) is not None:
            fields[name] = body[name]
    if body.get("stop") is not None:
        fields["stop"] = [body["stop"]] if isinstance(body["stop"], str) else list(body["stop"])
    extra_stop_ids = tuple(body.get("stop_token_ids") or ())
    if body.get("ignore_eos"):
        fields["stop_token_ids"] = extra_stop_ids
    elif extra_stop_ids:
        fields["stop_token_ids"] = (eos_id, *extra_stop_ids)
    try:
        return SamplingParams(**fields)
    except SamplingParamsError as error:
        raise APIError(400, str(error), param=error.param) from None


def _check_request_size(body: dict[str, Any], prompts: int, max_n: int) -> None:
    """400 for a request asking for more than `max_n` completions (n, best_of, or prompts x n)."""
    for param in ("n", "best_of"):
        value = body.get(param)
        if isinstance(value, int) and not isinstance(value, bool) and value > max_n:
            raise APIError(400, f"{param}: at most {max_n} completions per request (seedcoder serve --max-n), "
                                f"got {value}", param=param)
    n = body.get("n") or 1
    if isinstance(n, int) and prompts * n > max_n:
        raise APIError(400, f"prompt: {prompts} prompts x n={n} ask for {prompts * n} completions, over this server's "
                            f"limit of {max_n} per request (seedcoder serve --max-n)", param="prompt")


def _check_context(prompts: list[list[int]], max_tokens: int | None, context: int, *, param: str, what: str) -> None:
    """400 for a prompt whose tokens + max_tokens can never fit the context (vLLM's check and message)."""
    if max_tokens is None or isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
        return
    for index, prompt in enumerate(prompts):
        if len(prompt) + max_tokens > context:
            where = f"prompt {index}: " if len(prompts) > 1 else ""
            raise APIError(400, f"{where}This model's maximum context length is {context} tokens. However, you "
                                f"requested {len(prompt) + max_tokens} tokens ({len(prompt)} in the {what}, "
                                f"{max_tokens} in the completion). Please reduce the length of the {what} or "
                                f"{param}.", param=param, code="context_length_exceeded")


def _refuse_unsupported(body: dict[str, Any]) -> None:
    checks = [("echo", bool(body.get("echo")), "echo is not supported"),
              ("suffix", body.get("suffix") is not None, "suffix is not supported (use a fill-in-the-middle prompt)"),
              ("best_of", body.get("best_of") not in (None, body.get("n") or 1), "best_of other than n is not supported"),
              ("presence_penalty", bool(body.get("presence_penalty")), "presence_penalty is not supported "
               "(use repetition_penalty)"),
              ("frequency_penalty", bool(body.get("frequency_penalty")), "frequency_penalty is not supported "
               "(use repetition_penalty)"),
              ("logit_bias", bool(body.get("logit_bias")), "logit_bias is not supported"),
              ("tools", bool(body.get("tools")), "tools are not supported"),
              ("response_format", (body.get("response_format") or {"type": "text"}).get("type") != "text",
               "only the text response_format is supported")]
    for param, refused, message in checks:
        if refused:
            raise APIError(400, message, param=param)


# ------------------------------------------------------------------------------------------ app
def create_app(engine: "Engine", model_name: str, *, default_max_tokens: int = DEFAULT_MAX_TOKENS,
               log_jsonl: str | os.PathLike | None = None, max_n: int = DEFAULT_MAX_N,
               max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES):
    """The FastAPI app serving `engine` as `model_name`; the engine thread starts and stops with the app.
    max_n: completions per request at most; max_request_bytes: the largest request body (module docstring)."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, StreamingResponse
    from pydantic import BaseModel, ConfigDict, Field

    from seedcoder.chat_template import ChatTemplateError, tokenize_chat
    from seedcoder.generate import GenerationError, SequenceUpdate
    from seedcoder.sampling import SamplingParams

    engine_loop = EngineLoop(engine)
    token_text = TokenText(engine.tokenizer)
    log_lock = threading.Lock()
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

    class Sampling(BaseModel):
        model_config = ConfigDict(extra="allow")  # OpenAI fields we do not use (user, metadata, ...) are accepted

        model: str
        n: int = 1
        temperature: float | None = None
        top_p: float | None = None
        top_k: int | None = None
        repetition_penalty: float | None = None
        stop: str | list[str] | None = None
        stop_token_ids: list[int] | None = None
        ignore_eos: bool = False
        seed: int | None = None
        stream: bool = False
        stream_options: dict[str, Any] | None = None

    class CompletionRequest(Sampling):
        prompt: str | list[str] | list[int] | list[list[int]]
        max_tokens: int | None = None
        logprobs: int | None = Field(default=None, ge=0, le=20)

    class ChatRequest(Sampling):
        messages: list[dict[str, Any]]
        max_tokens: int | None = None
        max_completion_tokens: int | None = None
        logprobs: bool = False
        top_logprobs: int | None = Field(default=None, ge=0, le=20)

    @app.exception_handler(APIError)
    async def api_error(_request: Request, error: APIError):
        return JSONResponse(error.body(), status_code=error.status)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, error: RequestValidationError):
        first = (error.errors() or [{"loc": (), "msg": "invalid request"}])[0]
        location = [str(part) for part in first.get("loc", ()) if part != "body"]
        param = location[0] if location else None
        where = ".".join(location) or "body"
        return JSONResponse(APIError(400, f"{where}: {first.get('msg')}", param=param).body(), status_code=400)

    def check_model(name: str) -> None:
        if name != model_name:
            raise APIError(404, f"The model '{name}' does not exist (this server serves '{model_name}')",
                           type="not_found_error", param="model", code="model_not_found")

    def log(record: dict[str, Any]) -> None:
        if log_jsonl is None:
            return
        with log_lock, open(log_jsonl, "a", encoding="utf-8") as file:  # one line per request: appends stay whole
            file.write(json.dumps(record) + "\n")

    async def run(prompts: list[list[int]], params: SamplingParams) -> tuple[list[Hashable], asyncio.Queue]:
        queue: asyncio.Queue = asyncio.Queue()
        request_ids: list[Hashable] = []
        try:
            for index, prompt in enumerate(prompts):
                try:
                    request_ids.append(engine_loop.submit(prompt, params, queue))
                except GenerationError as error:
                    where = f"prompt {index}: " if len(prompts) > 1 else ""
                    raise APIError(400, where + str(error), param=error.param or "prompt") from None
        except BaseException:
            for request_id in request_ids:
                engine_loop.release(request_id, abort=True)
            raise
        return request_ids, queue

    async def updates(request_ids: list[Hashable], queue: asyncio.Queue, n: int) -> AsyncIterator[tuple[int, SequenceUpdate]]:
        """(prompt index, update) until every sequence finished; releases (aborts) the requests when stopped early."""
        position = {request_id: index for index, request_id in enumerate(request_ids)}
        remaining = len(request_ids) * n
        open_ids = set(request_ids)
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
            finished_all = remaining == 0
            for request_id in open_ids:
                engine_loop.release(request_id, abort=not finished_all)

    def prompts_of(body: CompletionRequest) -> list[Any]:
        """The request's prompts: strings or token id lists."""
        prompt = body.prompt
        if isinstance(prompt, str):
            prompts: list[Any] = [prompt]
        elif prompt and all(isinstance(p, int) for p in prompt):
            prompts = [prompt]
        else:
            prompts = list(prompt)
        if not prompts:
            raise APIError(400, "prompt: must not be empty", param="prompt")
        return prompts

    def prompt_ids_of(prompts: list[Any]) -> list[list[int]]:
        out = []
        for index, p in enumerate(prompts):
            try:
                out.append(engine.encode_prompt(p, "prompt" if len(prompts) == 1 else f"prompt[{index}]"))
            except GenerationError as error:
                raise APIError(400, str(error), param="prompt") from None
        return out

    def usage(prompts: list[list[int]], completion_tokens: int) -> dict[str, int]:
        prompt_tokens = sum(len(p) for p in prompts)
        return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens}

    # -------------------------------------------------------------------------------- log-prob formats
    def completion_logprobs(token_ids: Sequence[int], logprobs: Sequence[float], top: Sequence[dict] | None,
                            offset: int) -> dict[str, Any]:
        tokens = [token_text.text(t) for t in token_ids]
        offsets, position = [], offset
        for token in tokens:
            offsets.append(position)
            position += len(token)
        top_entries = None
        if top is not None:
            top_entries = [{token_text.text(t): lp for t, lp in (entry or {}).items()} for entry in top]
        return {"tokens": tokens, "token_logprobs": list(logprobs), "top_logprobs": top_entries, "text_offset": offsets}

    def chat_logprobs(token_ids: Sequence[int], logprobs: Sequence[float], top: Sequence[dict] | None) -> dict[str, Any]:
        def entry(token_id: int, logprob: float) -> dict[str, Any]:
            raw = token_text.bytes(token_id)
            return {"token": raw.decode("utf-8", errors="replace"), "logprob": logprob, "bytes": list(raw)}

        content = []
        for position, (token_id, logprob) in enumerate(zip(token_ids, logprobs)):
            alternatives = top[position] if top is not None else {}
            content.append({**entry(token_id, logprob),
                            "top_logprobs": [entry(t, lp) for t, lp in (alternatives or {}).items()]})
        return {"content": content}

    # -------------------------------------------------------------------------------- endpoints
    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": created, "owned_by": "seedcoder",
                                            "max_model_len": engine.max_seq_len}]}

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest):
        started = time.perf_counter()
        check_model(body.model)
        raw = body.model_dump()
        given = prompts_of(body)
        _check_request_size(raw, len(given), max_n)
        _refuse_unsupported(raw)
        prompts = prompt_ids_of(given)
        _check_context(prompts, body.max_tokens, engine.max_seq_len, param="max_tokens", what="prompt")
        params = _sampling_params(raw, max_tokens=body.max_tokens, logprobs=body.logprobs is not None,
                                  top_logprobs=body.logprobs or 0, default_max_tokens=default_max_tokens, eos_id=engine.eos_id)
        request_ids, queue = await run(prompts, params)
        response_id, n = f"cmpl-{uuid.uuid4().hex}", params.n
        base = {"id": response_id, "object": "text_completion", "created": int(time.time()), "model": model_name}

        def record(completion_tokens: int, finish: list[str]) -> None:
            log({"time": time.time(), "id": response_id, "endpoint": "completions", "prompts": len(prompts),
                 "n": n, "prompt_tokens": sum(map(len, prompts)), "completion_tokens": completion_tokens,
                 "finish_reasons": finish, "stream": body.stream, "latency_s": round(time.perf_counter() - started, 4)})

        if body.stream:
            include_usage = bool((body.stream_options or {}).get("include_usage"))

            async def stream():
                completion_tokens, finish, offsets = 0, [], {}
                async for prompt_index, update in _errors_as_events(updates(request_ids, queue, n)):
                    if isinstance(update, str):  # the engine failed: an error event, then the end
                        yield update
                        return
                    index = prompt_index * n + update.index
                    completion_tokens += len(update.token_ids)
                    logprobs = None
                    if params.logprobs:
                        logprobs = completion_logprobs(update.token_ids, update.model_logprobs, update.top_logprobs,
                                                       offsets.get(index, 0))
                        offsets[index] = offsets.get(index, 0) + sum(len(t) for t in logprobs["tokens"])
                    reason = update.completion.finish_reason if update.finished else None
                    if reason:
                        finish.append(reason)
                    if update.text or reason or logprobs:
                        choice = {"index": index, "text": update.text, "logprobs": logprobs, "finish_reason": reason}
                        yield _sse({**base, "choices": [choice]})
                if include_usage:
                    yield _sse({**base, "choices": [], "usage": usage(prompts, completion_tokens)})
                yield "data: [DONE]\n\n"
                record(completion_tokens, finish)

            return StreamingResponse(stream(), media_type="text/event-stream")

        results: dict[int, Any] = {}
        async for prompt_index, update in updates(request_ids, queue, n):
            if update.finished:
                results[prompt_index * n + update.index] = update.completion
        choices = []
        for index in sorted(results):
            completion = results[index]
            logprobs = None
            if params.logprobs:
                logprobs = completion_logprobs(completion.token_ids, completion.model_logprobs, completion.top_logprobs, 0)
            choices.append({"index": index, "text": completion.text, "logprobs": logprobs,
                            "finish_reason": completion.finish_reason})
        completion_tokens = sum(len(c.token_ids) for c in results.values())
        record(completion_tokens, [c["finish_reason"] for c in choices])
        return {**base, "choices": choices, "usage": usage(prompts, completion_tokens)}

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatRequest):
        started = time.perf_counter()
        check_model(body.model)
        raw = body.model_dump()
        _check_request_size(raw, 1, max_n)
        _refuse_unsupported(raw)
        try:
            prompt = engine.encode_prompt(tokenize_chat(body.messages, engine.tokenizer).input_ids, "messages")
        except ChatTemplateError as error:
            raise APIError(400, str(error), param="messages") from None
        except GenerationError as error:
            raise APIError(400, str(error), param="messages") from None
        max_tokens = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
        _check_context([prompt], max_tokens, engine.max_seq_len,
                       param="max_completion_tokens" if body.max_completion_tokens is not None else "max_tokens",
                       what="messages")
        if body.top_logprobs and not body.logprobs:
            raise APIError(400, "top_logprobs: needs logprobs to be true", param="top_logprobs")
        params = _sampling_params(raw, max_tokens=max_tokens, logprobs=body.logprobs, top_logprobs=body.top_logprobs or 0,
                                  default_max_tokens=default_max_tokens, eos_id=engine.eos_id)
        request_ids, queue = await run([prompt], params)
        response_id, n = f"chatcmpl-{uuid.uuid4().hex}", params.n
        base = {"id": response_id, "created": int(time.time()), "model": model_name}

        def record(completion_tokens: int, finish: list[str]) -> None:
            log({"time": time.time(), "id": response_id, "endpoint": "chat.completions", "n": n,
                 "prompt_tokens": len(prompt), "completion_tokens": completion_tokens, "finish_reasons": finish,
                 "stream": body.stream, "latency_s": round(time.perf_counter() - started, 4)})

        if body.stream:
            include_usage = bool((body.stream_options or {}).get("include_usage"))
            chunk = {**base, "object": "chat.completion.chunk"}

            async def stream():
                for index in range(n):  # the role comes first, in a chunk of its own (as OpenAI does)
                    yield _sse({**chunk, "choices": [{"index": index, "delta": {"role": "assistant", "content": ""},
                                                      "logprobs": None, "finish_reason": None}]})
                completion_tokens, finish = 0, []
                async for _, update in _errors_as_events(updates(request_ids, queue, n)):
                    if isinstance(update, str):
                        yield update
                        return
                    completion_tokens += len(update.token_ids)
                    logprobs = chat_logprobs(update.token_ids, update.model_logprobs, update.top_logprobs) \
                        if params.logprobs else None
                    reason = update.completion.finish_reason if update.finished else None
                    if reason:
                        finish.append(reason)
                    if update.text or reason or logprobs:
                        delta = {"content": update.text} if update.text else {}
                        yield _sse({**chunk, "choices": [{"index": update.index, "delta": delta, "logprobs": logprobs,
                                                          "finish_reason": reason}]})
                if include_usage:
                    yield _sse({**chunk, "choices": [], "usage": usage([prompt], completion_tokens)})
                yield "data: [DONE]\n\n"
                record(completion_tokens, finish)

            return StreamingResponse(stream(), media_type="text/event-stream")

        results: dict[int, Any] = {}
        async for _, update in updates(request_ids, queue, n):
            if update.finished:
                results[update.index] = update.completion
        choices = []
        for index in sorted(results):
            completion = results[index]
            logprobs = chat_logprobs(completion.token_ids, completion.model_logprobs, completion.top_logprobs) \
                if params.logprobs else None
            choices.append({"index": index, "message": {"role": "assistant", "content": completion.text},
                            "logprobs": logprobs, "finish_reason": completion.finish_reason})
        completion_tokens = sum(len(c.token_ids) for c in results.values())
        record(completion_tokens, [c["finish_reason"] for c in choices])
        return {**base, "object": "chat.completion", "choices": choices, "usage": usage([prompt], completion_tokens)}

    return app


def _sse(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload)}\n\n"


async def _errors_as_events(source: AsyncIterator[tuple[int, "SequenceUpdate"]]) -> AsyncIterator[tuple[int, Any]]:
    """The updates; an APIError once streaming has begun becomes (-1, "data: {error}" + "data: [DONE]") (the HTTP
    status is already sent, so the error travels as an event, as vLLM does)."""
    try:
        async for item in source:
            yield item
    except APIError as error:
        yield -1, _sse(error.body()) + "data: [DONE]\n\n"


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
                                        max_prefill_tokens=args.max_prefill_tokens, seed=args.seed)
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


__all__ = ["APIError", "EngineLoop", "RequestSizeLimit", "TokenText", "add_serve_commands", "create_app", "run_serve"]
