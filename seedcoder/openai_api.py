"""OpenAI's completions API as plain functions: the request schema, its checks and limits, and the response shapes.

`seedcoder serve` (seedcoder/serve.py) wires these to FastAPI and the engine; nothing here needs FastAPI, torch
or the engine, so each check can be called (and tested) on a plain request dict. A check that fails raises
`APIError`, which the server answers in OpenAI's error format. The request models need pydantic, imported
only when `request_models()` is first called (so that `seedcoder --help`, which imports the server, stays fast).

`echo` (completions): each choice's text starts with its prompt, and with `logprobs` its log-probs start with the
prompt tokens' (the first one None, as vLLM and OpenAI answer); `max_tokens: 0` with echo returns only that, the
way clients read a prompt's log-probabilities (the prompt's log-probs themselves are the server's: `Echo`).
"""

from __future__ import annotations

import functools
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from seedcoder.data.tokenizer_tables import UNICODE_TO_BYTE

SSE_DONE = "data: [DONE]\n\n"


class APIError(Exception):
    """An error answered in OpenAI's format."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


# ------------------------------------------------------------------------------------------ requests
@functools.cache
def request_models() -> tuple[type, type]:
    """(CompletionRequest, ChatRequest): the pydantic models FastAPI parses request bodies into (field types only;
    the checks below do the rest)."""
    from pydantic import BaseModel, ConfigDict, Field

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
        echo: bool = False

    class ChatRequest(Sampling):
        messages: list[dict[str, Any]]
        max_tokens: int | None = None
        max_completion_tokens: int | None = None
        logprobs: bool = False
        top_logprobs: int | None = Field(default=None, ge=0, le=20)

    return CompletionRequest, ChatRequest


def validation_error(errors: Sequence[dict[str, Any]]) -> APIError:
    """The 400 for a body that does not fit the request model (pydantic's errors): the first one, its field named."""
    first = (list(errors) or [{"loc": (), "msg": "invalid request"}])[0]
    location = [str(part) for part in first.get("loc", ()) if part != "body"]
    param = location[0] if location else None
    where = ".".join(location) or "body"
    return APIError(400, f"{where}: {first.get('msg')}", param=param)


def check_model(requested: str, served: str) -> None:
    """404 for a model name this server does not serve."""
    if requested != served:
        raise APIError(404, f"The model '{requested}' does not exist (this server serves '{served}')",
                       type="not_found_error", param="model", code="model_not_found")


def prompts_of(prompt: str | list[str] | list[int] | list[list[int]]) -> list[Any]:
    """A completion request's prompts: strings or token id lists."""
    if isinstance(prompt, str):
        prompts: list[Any] = [prompt]
    elif prompt and all(isinstance(p, int) for p in prompt):
        prompts = [prompt]
    else:
        prompts = list(prompt)
    if not prompts:
        raise APIError(400, "prompt: must not be empty", param="prompt")
    return prompts


def check_completion_count(body: dict[str, Any], prompts: int, max_n: int) -> None:
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


def refuse_unsupported(body: dict[str, Any]) -> None:
    """400 for an OpenAI field this server does not implement: refused rather than silently ignored."""
    checks = [("suffix", body.get("suffix") is not None, "suffix is not supported (use a fill-in-the-middle prompt)"),
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


def echo_only(body: dict[str, Any]) -> bool:
    """Whether a completion request asks only for its prompt back (echo with max_tokens 0: the way to read a
    prompt's log-probabilities); 400 for max_tokens 0 without echo."""
    if body.get("max_tokens") != 0 or isinstance(body.get("max_tokens"), bool):
        return False
    if not body.get("echo"):
        raise APIError(400, "max_tokens: 0 is allowed only with echo=true (the prompt back, with its log-probs when "
                            "logprobs is set)", param="max_tokens")
    return True


def chat_max_tokens(body: dict[str, Any]) -> tuple[int | None, str]:
    """(max_tokens, the field that gave it) of a chat request: max_completion_tokens wins over max_tokens."""
    if body.get("max_completion_tokens") is not None:
        return body["max_completion_tokens"], "max_completion_tokens"
    return body.get("max_tokens"), "max_tokens"


def check_chat_logprobs(body: dict[str, Any]) -> None:
    if body.get("top_logprobs") and not body.get("logprobs"):
        raise APIError(400, "top_logprobs: needs logprobs to be true", param="top_logprobs")


def check_context(prompts: list[list[int]], max_tokens: int | None, context: int, *, param: str, what: str) -> None:
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


def sampling_fields(body: dict[str, Any], *, max_tokens: int | None, logprobs: bool, top_logprobs: int,
                    default_max_tokens: int, eos_id: int) -> dict[str, Any]:
    """SamplingParams' keyword arguments from a request body (omitted fields keep SamplingParams' defaults);
    stop_token_ids add to eos unless ignore_eos (vLLM's meaning)."""
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
    return fields


# ------------------------------------------------------------------------------------------ responses
class TokenText:
    """Token strings and bytes for log-prob answers (byte-level BPE tokens mapped back to their bytes)."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer

    def bytes(self, token_id: int) -> bytes:
        token = self.tokenizer.id_to_token(token_id)
        if token is None:
            return b""
        if all(char in UNICODE_TO_BYTE for char in token):
            return bytes(UNICODE_TO_BYTE[char] for char in token)
        return token.encode("utf-8")  # an added token (specials): its content

    def text(self, token_id: int) -> str:
        return self.bytes(token_id).decode("utf-8", errors="replace")


def usage(prompts: list[list[int]], completion_tokens: int) -> dict[str, int]:
    prompt_tokens = sum(len(p) for p in prompts)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def completion_logprobs(token_text: TokenText, token_ids: Sequence[int], logprobs: Sequence[float],
                        top: Sequence[dict] | None, offset: int) -> dict[str, Any]:
    """The completions API's logprobs: tokens, their log-probs, {token: log-prob} alternatives, text offsets."""
    tokens = [token_text.text(t) for t in token_ids]
    offsets, position = [], offset
    for token in tokens:
        offsets.append(position)
        position += len(token)
    top_entries = None
    if top is not None:  # None stays None: the first prompt token of an echo has no log-prob and no alternatives
        top_entries = [None if entry is None else {token_text.text(t): lp for t, lp in entry.items()} for entry in top]
    return {"tokens": tokens, "token_logprobs": list(logprobs), "top_logprobs": top_entries, "text_offset": offsets}


@dataclass
class Echo:
    """A prompt echoed back (`echo: true`): its text and, when log-probs were asked for, its tokens' log-probs
    (None for the first token, which nothing predicts) and their top alternatives."""

    text: str
    token_ids: list[int]
    logprobs: list[float | None] | None = None
    top_logprobs: list[dict[int, float] | None] | None = None


def merge_logprobs(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    """Completion log-probs after echoed ones (the second's text offsets already continue the first's)."""
    top = None
    if first["top_logprobs"] is not None or second["top_logprobs"] is not None:
        top = (first["top_logprobs"] or [None] * len(first["tokens"])) + (second["top_logprobs"] or
                                                                         [None] * len(second["tokens"]))
    merged = {key: first[key] + second[key] for key in ("tokens", "token_logprobs", "text_offset")}
    return merged | {"top_logprobs": top}


def chat_logprobs(token_text: TokenText, token_ids: Sequence[int], logprobs: Sequence[float],
                  top: Sequence[dict] | None) -> dict[str, Any]:
    """The chat API's logprobs: {"content": [{token, logprob, bytes, top_logprobs}]}."""
    def entry(token_id: int, logprob: float) -> dict[str, Any]:
        raw = token_text.bytes(token_id)
        return {"token": raw.decode("utf-8", errors="replace"), "logprob": logprob, "bytes": list(raw)}

    content = []
    for position, (token_id, logprob) in enumerate(zip(token_ids, logprobs)):
        alternatives = top[position] if top is not None else {}
        content.append({**entry(token_id, logprob),
                        "top_logprobs": [entry(t, lp) for t, lp in (alternatives or {}).items()]})
    return {"content": content}


class CompletionAnswer:
    """OpenAI's `text_completion` objects answering one request; choice `index` runs over prompts x n.

    echo: each prompt echoed before its completions (text and, with logprobs, the prompt tokens' log-probs, as
    vLLM answers `echo`); echo_only: nothing is generated (max_tokens 0), every choice is its prompt."""

    endpoint = "completions"

    def __init__(self, model: str, prompts: list[list[int]], n: int, token_text: TokenText, logprobs: bool,
                 echo: list[Echo] | None = None, echo_only: bool = False, token_ids: bool = False):
        if echo_only and echo is None:
            raise ValueError("CompletionAnswer: echo_only needs echo")
        self.id = f"cmpl-{uuid.uuid4().hex}"
        self.prompts, self.n, self.token_text, self.logprobs = prompts, n, token_text, logprobs
        self.echo, self.echo_only, self.token_ids = echo, echo_only, token_ids
        self.base = {"id": self.id, "object": "text_completion", "created": int(time.time()), "model": model}
        self.log_fields = {"prompts": len(prompts)} | ({"echo": True} if echo is not None else {})
        self._offsets: dict[int, int] = {}  # choice index -> text offset so far (streamed log-probs continue it)

    def index(self, prompt_index: int, choice: int) -> int:
        return prompt_index * self.n + choice

    def _echo_logprobs(self, prompt_index: int) -> dict[str, Any] | None:
        echo = self.echo[prompt_index]
        if not self.logprobs or echo.logprobs is None:
            return None
        return completion_logprobs(self.token_text, echo.token_ids, echo.logprobs, echo.top_logprobs, 0)

    def _echo_choice(self, prompt_index: int, choice: int) -> dict[str, Any]:
        """The echo of a prompt as the choice (or the first stream chunk) of each of its n completions."""
        logprobs = self._echo_logprobs(prompt_index)
        index = self.index(prompt_index, choice)
        if logprobs is not None:
            self._offsets[index] = sum(len(token) for token in logprobs["tokens"])
        return {"index": index, "text": self.echo[prompt_index].text, "logprobs": logprobs,
                "finish_reason": "length" if self.echo_only else None}

    def echo_choices(self) -> list[dict[str, Any]]:
        """Every choice's echo, in index order."""
        return [self._echo_choice(p, c) for p in range(len(self.prompts)) for c in range(self.n)] if self.echo else []

    def first_chunks(self) -> list[dict[str, Any]]:
        return [{**self.base, "choices": [choice]} for choice in self.echo_choices()]

    def chunk(self, index: int, update: Any, reason: str | None) -> dict[str, Any] | None:
        """The stream chunk for one update (SequenceUpdate), None when it carries nothing."""
        logprobs = None
        if self.logprobs:
            logprobs = completion_logprobs(self.token_text, update.token_ids, update.model_logprobs, update.top_logprobs,
                                           self._offsets.get(index, 0))
            self._offsets[index] = self._offsets.get(index, 0) + sum(len(t) for t in logprobs["tokens"])
        if not (update.text or reason or logprobs):
            return None
        return {**self.base, "choices": [{"index": index, "text": update.text, "logprobs": logprobs,
                                          "finish_reason": reason}]}

    def usage_chunk(self, completion_tokens: int) -> dict[str, Any]:
        return {**self.base, "choices": [], "usage": usage(self.prompts, completion_tokens)}

    def choice(self, index: int, completion: Any) -> dict[str, Any]:
        """The whole answer's choice for one Completion (after its prompt, with echo)."""
        logprobs, text = None, completion.text
        echoed = self._echo_choice(index // self.n, index % self.n) if self.echo is not None else None
        if self.logprobs:
            offset = sum(len(t) for t in echoed["logprobs"]["tokens"]) if echoed and echoed["logprobs"] else 0
            logprobs = completion_logprobs(self.token_text, completion.token_ids, completion.model_logprobs,
                                           completion.top_logprobs, offset)
            if echoed and echoed["logprobs"]:
                logprobs = merge_logprobs(echoed["logprobs"], logprobs)
        if echoed is not None:
            text = echoed["text"] + text
        choice = {"index": index, "text": text, "logprobs": logprobs, "finish_reason": completion.finish_reason}
        if self.token_ids:  # vLLM's return_token_ids: the sampled ids, so a trainer needs no re-tokenization
            choice["token_ids"] = list(completion.token_ids)
        return choice

    def whole(self, choices: list[dict[str, Any]], completion_tokens: int) -> dict[str, Any]:
        return {**self.base, "choices": choices, "usage": usage(self.prompts, completion_tokens)}


class ChatAnswer:
    """OpenAI's `chat.completion` (and `chat.completion.chunk`) objects answering one request of n choices."""

    endpoint = "chat.completions"

    def __init__(self, model: str, prompt: list[int], n: int, token_text: TokenText, logprobs: bool):
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.prompts, self.n, self.token_text, self.logprobs = [prompt], n, token_text, logprobs
        self.base = {"id": self.id, "created": int(time.time()), "model": model}
        self.log_fields: dict[str, Any] = {}
        self._chunk_base = {**self.base, "object": "chat.completion.chunk"}

    def index(self, prompt_index: int, choice: int) -> int:
        return choice

    def first_chunks(self) -> list[dict[str, Any]]:
        """The role comes first, in a chunk of its own per choice (as OpenAI does)."""
        return [{**self._chunk_base, "choices": [{"index": index, "delta": {"role": "assistant", "content": ""},
                                                  "logprobs": None, "finish_reason": None}]} for index in range(self.n)]

    def chunk(self, index: int, update: Any, reason: str | None) -> dict[str, Any] | None:
        logprobs = chat_logprobs(self.token_text, update.token_ids, update.model_logprobs, update.top_logprobs) \
            if self.logprobs else None
        if not (update.text or reason or logprobs):
            return None
        delta = {"content": update.text} if update.text else {}
        return {**self._chunk_base, "choices": [{"index": index, "delta": delta, "logprobs": logprobs,
                                                 "finish_reason": reason}]}

    def usage_chunk(self, completion_tokens: int) -> dict[str, Any]:
        return {**self._chunk_base, "choices": [], "usage": usage(self.prompts, completion_tokens)}

    def choice(self, index: int, completion: Any) -> dict[str, Any]:
        logprobs = chat_logprobs(self.token_text, completion.token_ids, completion.model_logprobs,
                                 completion.top_logprobs) if self.logprobs else None
        return {"index": index, "message": {"role": "assistant", "content": completion.text}, "logprobs": logprobs,
                "finish_reason": completion.finish_reason}

    def whole(self, choices: list[dict[str, Any]], completion_tokens: int) -> dict[str, Any]:
        return {**self.base, "object": "chat.completion", "choices": choices,
                "usage": usage(self.prompts, completion_tokens)}


Answer = CompletionAnswer | ChatAnswer
Finished = Callable[[int, list[str]], None]  # called with (completion tokens, finish reasons) once answered


def sse(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload)}\n\n"


async def stream_events(answer: Answer, updates: AsyncIterator[tuple[int, Any]], *, include_usage: bool,
                        finished: Finished) -> AsyncIterator[str]:
    """The server-sent events of a streamed answer, from (prompt index, SequenceUpdate) pairs, ended by [DONE]. An
    APIError once streaming has begun becomes an error event and [DONE] (the HTTP status is already sent, so the
    error travels as an event, as vLLM does)."""
    for chunk in answer.first_chunks():
        yield sse(chunk)
    completion_tokens, finish = 0, []
    try:
        async for prompt_index, update in updates:
            completion_tokens += len(update.token_ids)
            reason = update.completion.finish_reason if update.finished else None
            if reason:
                finish.append(reason)
            chunk = answer.chunk(answer.index(prompt_index, update.index), update, reason)
            if chunk is not None:
                yield sse(chunk)
    except APIError as error:
        yield sse(error.body()) + SSE_DONE
        return
    if include_usage:
        yield sse(answer.usage_chunk(completion_tokens))
    yield SSE_DONE
    finished(completion_tokens, finish)


async def whole_answer(answer: Answer, updates: AsyncIterator[tuple[int, Any]], *, finished: Finished) -> dict[str, Any]:
    """The answer object once every sequence finished."""
    results: dict[int, Any] = {}
    async for prompt_index, update in updates:
        if update.finished:
            results[answer.index(prompt_index, update.index)] = update.completion
    choices = [answer.choice(index, results[index]) for index in sorted(results)]
    completion_tokens = sum(len(c.token_ids) for c in results.values())
    finished(completion_tokens, [c["finish_reason"] for c in choices])
    return answer.whole(choices, completion_tokens)
