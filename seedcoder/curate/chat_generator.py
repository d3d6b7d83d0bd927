"""Chat generators for the curation steps that write text (the SFT synthesis of issue [14]): one interface, three
backends, an on-disk response cache so that a rerun costs nothing.

    generator = make_generator({"backend": "openai", "base_url": "http://127.0.0.1:8000/v1", "model": "m",
                                "concurrency": 8, "cache_dir": "runs/gen-cache"})   # seedcoder serve, vllm serve, ...
    generator = make_generator({"backend": "engine", "checkpoint": "runs/demo", "device": "cpu"})  # our engine
    answers = generator.chat([[{"role": "user", "content": "Write ..."}]], temperature=0.7, max_tokens=512)
    answers[0].text, answers[0].error, answers[0].cached        # text or None; error or None; from the cache?

Backends (`backend`):
  * "openai" (`OpenAIChatGenerator`): any OpenAI-compatible /v1/chat/completions endpoint (`seedcoder serve`,
    `vllm serve`, a provider) through the `openai` client: `base_url`, `model` (default: the endpoint's first
    model), `concurrency` threads, `timeout_s` per attempt, `max_retries` with backoff on connection errors,
    timeouts, 408/409/429 and 5xx (`chat_oracles.Retrier`), `api_key_env`.
  * "engine" (`EngineChatGenerator`): a checkpoint of ours in this process (`seedcoder.generate.Engine.chat`, the
    Seed-Coder chat template): `checkpoint` (a checkpoint, checkpoints root or run folder), `device`,
    `max_batch`.
  * "vllm" (`VLLMChatGenerator`): vLLM in this process (`model`; a clear error when vLLM is not installed).

Every backend: `cache_dir` (an optional `chat_oracles.ResponseCache`, keyed by SHA-256 of the generator's model,
the conversation and the sampling parameters, so a rerun or a resumed step asks nothing twice); answers come back
in request order, one per conversation; a failed request is an answer with `error` set (the message says why: the
endpoint's error after its retries, an empty answer), never an exception, so one bad request costs one item.
Settings that cannot work (an unknown backend or option, no model, a checkpoint that does not exist) raise
GeneratorError naming the option.
"""

from __future__ import annotations

import abc
import json
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

from seedcoder.curate.chat_oracles import ResponseCache, Retrier
from seedcoder.curate.errors import CurateConfigError
from seedcoder.errors import UserError

Conversation = Sequence[Mapping[str, str]]
ROLES = ("system", "user", "assistant")


class GeneratorError(UserError):
    """Generator settings that cannot work; the message names the option."""


@dataclass(frozen=True)
class ChatAnswer:
    text: str | None  # the assistant's answer; None when the request failed
    error: str | None = None  # why it failed
    cached: bool = False  # read from the response cache


def check_conversation(conversation: Any, where: str = "conversation") -> list[dict[str, str]]:
    """A list of {role, content} messages (roles system/user/assistant, content a string), ending with a user turn."""
    if not isinstance(conversation, Sequence) or isinstance(conversation, str) or not conversation:
        raise GeneratorError(f"{where}: expected a non-empty list of messages")
    messages = []
    for index, message in enumerate(conversation):
        if not isinstance(message, Mapping) or message.get("role") not in ROLES or not isinstance(
                message.get("content"), str):
            raise GeneratorError(f"{where}[{index}]: expected {{role: system|user|assistant, content: str}}, "
                                 f"got {message!r:.120}")
        messages.append({"role": message["role"], "content": message["content"]})
    if messages[-1]["role"] != "user":
        raise GeneratorError(f"{where}: the last message must be the user's, got {messages[-1]['role']!r}")
    return messages


class ChatGenerator(abc.ABC):
    """One answer per conversation, through the cache."""

    name: str = "generator"
    model: str = ""

    def __init__(self, cache_dir: str | None = None):
        self.cache = ResponseCache(cache_dir) if cache_dir else None
        self.calls = 0  # requests sent to the backend (cache misses)
        self.cache_hits = 0

    @abc.abstractmethod
    def _answer_many(self, conversations: list[list[dict[str, str]]], sampling: dict[str, Any],
                     finish: Callable[[int, ChatAnswer], None]) -> None:
        """The backend's answers: finish(index, answer) for each conversation as soon as it is answered, so that a
        kill midway loses only the answers still outstanding (no cache here)."""

    def chat(self, conversations: Sequence[Conversation], *, temperature: float = 0.7, top_p: float = 0.95,
             max_tokens: int = 1024, seed: int | None = 0) -> list[ChatAnswer]:
        checked = [check_conversation(c, f"conversations[{i}]") for i, c in enumerate(conversations)]
        if not 0.0 <= temperature <= 2.0 or not 0.0 < top_p <= 1.0 or max_tokens < 1:
            raise GeneratorError(f"sampling: temperature in [0, 2], top_p in (0, 1], max_tokens >= 1; got "
                                 f"{temperature}, {top_p}, {max_tokens}")
        sampling = {"temperature": float(temperature), "top_p": float(top_p), "max_tokens": int(max_tokens),
                    "seed": seed}
        answers: list[ChatAnswer | None] = [None] * len(checked)
        pending: list[tuple[int, str | None]] = []
        for position, conversation in enumerate(checked):
            key = None
            if self.cache is not None:
                key = ResponseCache.key(self.model, json.dumps(conversation, ensure_ascii=False), sampling)
                text = self.cache.get(key)
                if text is not None:
                    self.cache_hits += 1
                    answers[position] = ChatAnswer(text, None, cached=True)
                    continue
            pending.append((position, key))
        def finish(index: int, answer: ChatAnswer) -> None:
            position, key = pending[index]
            if answer.error is None and not answer.text:
                answer = ChatAnswer(None, "the generator returned an empty answer")
            if answer.error is None and self.cache is not None:
                self.cache.put(key, answer.text, model=self.model, sampling=sampling)
            answers[position] = answer

        if pending:
            self.calls += len(pending)
            self._answer_many([checked[position] for position, _ in pending], sampling, finish)
        missing = [position for position, answer in enumerate(answers) if answer is None]
        if missing:  # a backend bug, not a bad answer
            raise RuntimeError(f"{self.name}: no answer for conversations {missing[:5]}")
        return answers  # type: ignore[return-value]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "model": self.model}


# ------------------------------------------------------------------------------------------ OpenAI-compatible
class OpenAIChatGenerator(ChatGenerator):
    def __init__(self, *, base_url: str | None = None, model: str | None = None, concurrency: int = 8,
                 timeout_s: float = 120.0, max_retries: int = 3, backoff_s: float = 1.0, max_backoff_s: float = 30.0,
                 api_key_env: str = "OPENAI_API_KEY", cache_dir: str | None = None):
        super().__init__(cache_dir)
        base_url = base_url or os.environ.get("OPENAI_BASE_URL")
        if not base_url:
            raise GeneratorError("generator.base_url: the endpoint's API root, e.g. http://127.0.0.1:8000/v1")
        if concurrency < 1 or max_retries < 0 or not timeout_s > 0:
            raise GeneratorError(f"generator: concurrency >= 1, max_retries >= 0, timeout_s > 0; got {concurrency}, "
                                 f"{max_retries}, {timeout_s}")
        import openai  # a dependency; imported here to keep `seedcoder --help` light

        self.client = openai.OpenAI(base_url=base_url, api_key=os.environ.get(api_key_env) or "EMPTY",
                                    timeout=float(timeout_s), max_retries=0)  # our retries: counted and reported
        self.retrier = Retrier(openai, int(max_retries), float(backoff_s), float(max_backoff_s))
        self.base_url, self.concurrency = base_url, int(concurrency)
        if not model:
            listed, error = self.retrier.call(lambda: self.client.models.list())
            if error is not None or not getattr(listed, "data", None):
                raise GeneratorError(f"generator.model: not given, and {base_url} lists no model ({error or 'empty'})")
            model = listed.data[0].id
        self.model, self.name = model, f"openai:{model}"
        self._lock = threading.Lock()

    def _answer_one(self, conversation: list[dict[str, str]], sampling: dict[str, Any]) -> ChatAnswer:
        options = {key: value for key, value in sampling.items() if value is not None}
        response, error = self.retrier.call(
            lambda: self.client.chat.completions.create(model=self.model, messages=conversation, **options))
        if error is not None:
            return ChatAnswer(None, error)
        choices = getattr(response, "choices", None) or []
        text = choices[0].message.content if choices and choices[0].message is not None else None
        return ChatAnswer(text or None, None if text else "the endpoint returned an empty answer")

    def _answer_many(self, conversations: list[list[dict[str, str]]], sampling: dict[str, Any],
                     finish: Callable[[int, ChatAnswer], None]) -> None:
        if self.concurrency == 1 or len(conversations) == 1:
            for index, conversation in enumerate(conversations):
                finish(index, self._answer_one(conversation, sampling))
            return
        with ThreadPoolExecutor(min(self.concurrency, len(conversations)), thread_name_prefix="chat-gen") as pool:
            futures = {pool.submit(self._answer_one, c, sampling): i for i, c in enumerate(conversations)}
            for future in as_completed(futures):
                finish(futures[future], future.result())

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "base_url": self.base_url}


# ------------------------------------------------------------------------------------------ our engine
class EngineChatGenerator(ChatGenerator):
    def __init__(self, *, checkpoint: str | None = None, device: str | None = None, max_batch: int = 16,
                 cache_dir: str | None = None):
        super().__init__(cache_dir)
        if not checkpoint:
            raise GeneratorError("generator.checkpoint: a checkpoint, checkpoints root or run folder of ours")
        if not os.path.exists(checkpoint):
            raise GeneratorError(f"generator.checkpoint: {checkpoint} does not exist")
        from seedcoder.generate import Engine  # torch: only for this backend

        try:
            self.engine = Engine.from_checkpoint(checkpoint, device=device, max_batch=max_batch)
        except (OSError, ValueError) as error:  # not a checkpoint, no tokenizer beside it, ...
            raise GeneratorError(f"generator.checkpoint: {error}") from None
        self.model = os.path.abspath(checkpoint)
        self.name = f"engine:{os.path.basename(os.path.normpath(checkpoint))}"

    def _answer_many(self, conversations: list[list[dict[str, str]]], sampling: dict[str, Any],
                     finish: Callable[[int, ChatAnswer], None]) -> None:
        from seedcoder.sampling import SamplingParams

        params = SamplingParams(temperature=sampling["temperature"], top_p=sampling["top_p"],
                                max_tokens=sampling["max_tokens"], seed=sampling["seed"], logprobs=False)
        for index, conversation in enumerate(conversations):  # one at a time: a refused one costs only itself
            try:
                (completion,) = self.engine.chat([conversation], params)[0]
                finish(index, ChatAnswer(completion.text, None))
            except ValueError as error:  # GenerationError, ChatTemplateError: too long, bad messages
                finish(index, ChatAnswer(None, f"engine: {error}"))


# ------------------------------------------------------------------------------------------ vLLM in process
class VLLMChatGenerator(ChatGenerator):
    def __init__(self, *, model: str | None = None, engine_options: Mapping[str, Any] | None = None,
                 cache_dir: str | None = None):
        super().__init__(cache_dir)
        if not model:
            raise GeneratorError("generator.model: the model vLLM loads (a folder or a hub name already on disk)")
        try:
            import vllm
        except ImportError as error:
            raise GeneratorError(f"generator.backend 'vllm' needs vllm in this environment ({error}); use backend "
                                 "'openai' against `vllm serve`, or 'engine'") from None
        self._vllm = vllm
        self.engine = vllm.LLM(model=model, **dict(engine_options or {}))
        self.model, self.name = model, f"vllm:{model}"

    def _answer_many(self, conversations: list[list[dict[str, str]]], sampling: dict[str, Any],
                     finish: Callable[[int, ChatAnswer], None]) -> None:
        params = self._vllm.SamplingParams(**{key: value for key, value in sampling.items() if value is not None})
        try:
            outputs = self.engine.chat(conversations, params, use_tqdm=False)
        except Exception as error:  # one failed batch is reported per request
            outputs = [ChatAnswer(None, f"vLLM: {type(error).__name__}: {error}")] * len(conversations)
        for index, output in enumerate(outputs):
            finish(index, output if isinstance(output, ChatAnswer) else
                   ChatAnswer(output.outputs[0].text if output.outputs else None, None))


BACKENDS = {"openai": OpenAIChatGenerator, "engine": EngineChatGenerator, "vllm": VLLMChatGenerator}
CACHE_DIR = "generator-cache"  # a step's default cache: <step out_dir>/_work/generator-cache
_STEP_GENERATORS: dict[str, ChatGenerator] = {}  # per process: a worker builds a step's generator once


def make_generator(options: Mapping[str, Any]) -> ChatGenerator:
    """A generator from a config table: {backend = "openai" | "engine" | "vllm", ...that backend's options}."""
    options = dict(options)
    backend = options.pop("backend", "openai")
    if backend not in BACKENDS:
        raise GeneratorError(f"generator.backend: one of {', '.join(BACKENDS)}, got {backend!r}")
    try:
        return BACKENDS[backend](**options)
    except TypeError as error:  # an unknown keyword: name it in the config's terms
        raise GeneratorError(f"generator (backend {backend!r}): {str(error).split('() ', 1)[-1]}") from None


# ------------------------------------------------------------------------------------------ for the steps
def generator_settings(table: Mapping[str, Any], out_dir: str) -> dict[str, Any]:
    """A step's `generator` table with its cache: `cache_dir` as given, else <out_dir>/_work/generator-cache."""
    settings = dict(table)
    if not settings.get("cache_dir"):
        settings["cache_dir"] = os.path.join(os.path.abspath(out_dir), "_work", CACHE_DIR)
    return settings


def step_generator(settings: Mapping[str, Any], where: str) -> ChatGenerator:
    """The generator of a step's settings, built once per process; settings that cannot work are a
    CurateConfigError naming `where` (the step's key, e.g. "sft_synthesize.generator")."""
    key = json.dumps(dict(settings), sort_keys=True, default=str)
    if key not in _STEP_GENERATORS:
        try:
            _STEP_GENERATORS[key] = make_generator(settings)
        except GeneratorError as error:  # its message names the option as "generator.KEY": say which step's
            message = str(error)
            raise CurateConfigError(where + message.removeprefix("generator") if message.startswith("generator")
                                    else f"{where}: {message}") from None
    return _STEP_GENERATORS[key]


def one_line(text: str, limit: int) -> str:
    """`text` on one line (whitespace runs -> one space), at most `limit` characters: a drop reason's detail."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def off_format_reason(task: str, answer: str | None) -> str:
    """The drop reason of an answer not in its task's format: the task and the answer's first 80 characters."""
    return f"off_format: {task}: {' '.join((answer or '').split())[:80]}"


def generator_error_reason(task: str, error: str | None) -> str:
    return f"generator_error: {task}: {one_line(error or 'no answer', 300)}"


__all__ = ["BACKENDS", "CACHE_DIR", "ChatAnswer", "ChatGenerator", "EngineChatGenerator", "GeneratorError",
           "OpenAIChatGenerator", "VLLMChatGenerator", "check_conversation", "generator_error_reason", "generator_settings",
           "make_generator", "off_format_reason", "one_line", "step_generator"]
