"""The LLM oracle backends: an on-disk response cache, any OpenAI-compatible chat endpoint, and vLLM in process.

    oracle = OpenAIOracle(base_url="http://localhost:8000/v1", model="Qwen/Qwen2.5-Coder-32B-Instruct",
                          concurrency=16, cache_dir="runs/oracle-cache")  # any OpenAI-compatible server
    oracle = VLLMOracle(model="...")                                     # in-process vLLM (when installed)

  * "openai" (`OpenAIOracle`): any OpenAI-compatible chat endpoint (`vllm serve`, a provider) through the
    `openai` client: `concurrency` threads, `max_retries` retries with exponential backoff on connection errors,
    timeouts, 408/409/429 and 5xx (other 4xx fail at once), `timeout_s` per request, and an on-disk response
    cache (`cache_dir`) keyed by SHA-256 of (model, prompt, sampling parameters), each entry written atomically.
  * "vllm" (`VLLMOracle`): vLLM in this process (lazy import; a clear OracleError when it is not installed),
    batched generation, the same cache.

Both send the prompt of the request's rubric (`rating.build_prompt`: the code rubric, or the web rubric for a
request with rubric="web") and parse the answer with `curate/rating.py`; `make_oracle` in
`curate/oracle.py` builds them by backend name.
"""

from __future__ import annotations

import abc
import hashlib
import json
import os
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from seedcoder.curate.rating import (
    DEFAULT_PROMPT_CHARS,
    Oracle,
    OracleError,
    RatingRequest,
    RatingResult,
    build_prompt,
    invalid_request,
    result_from_answer,
)
from seedcoder.fileio import atomic_write_text


# ------------------------------------------------------------------------------------------ response cache
class ResponseCache:
    """Answers on disk, one JSON file per key (DIR/ab/abcd....json), each written atomically; a corrupt or
    foreign file reads as a miss and is rewritten. Thread-safe (no shared state besides the files)."""

    def __init__(self, directory: str):
        self.directory = os.fspath(directory)
        os.makedirs(self.directory, exist_ok=True)

    @staticmethod
    def key(model: str, prompt: str, sampling: Mapping[str, Any]) -> str:
        payload = json.dumps({"model": model, "prompt": prompt, "sampling": dict(sampling)}, sort_keys=True,
                             ensure_ascii=False)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    def _path(self, key: str) -> str:
        return os.path.join(self.directory, key[:2], f"{key}.json")

    def get(self, key: str) -> str | None:
        try:
            with open(self._path(key), encoding="utf-8") as file:
                record = json.load(file)
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict) or record.get("key") != key or not isinstance(record.get("answer"), str):
            return None
        return record["answer"]

    def put(self, key: str, answer: str, *, model: str, sampling: Mapping[str, Any]) -> None:
        path = self._path(key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        record = {"key": key, "model": model, "sampling": dict(sampling), "answer": answer, "time": time.time()}
        atomic_write_text(path, json.dumps(record, ensure_ascii=False) + "\n")


class _ChatOracle(Oracle):
    """Shared by the LLM backends: prompts, sampling parameters, the cache, parsing."""

    def __init__(self, *, model: str | None = None, temperature: float = 0.0, top_p: float = 1.0, max_tokens: int = 1024,
                 seed: int | None = 0, cache_dir: str | None = None, max_prompt_chars: int = DEFAULT_PROMPT_CHARS):
        if not model or not isinstance(model, str):
            raise OracleError(f"{type(self).__name__}: `model` (the served model's name) is required")
        if max_tokens <= 0:
            raise OracleError(f"{type(self).__name__}: max_tokens must be > 0, got {max_tokens}")
        self.model = model
        self.sampling = {"temperature": float(temperature), "top_p": float(top_p), "max_tokens": int(max_tokens),
                         "seed": seed}
        self.max_prompt_chars = max_prompt_chars
        self.cache = ResponseCache(cache_dir) if cache_dir else None
        self.cache_hits = 0
        self.calls = 0

    def _prompt(self, request: RatingRequest) -> str:
        return build_prompt(request, max_chars=self.max_prompt_chars)

    @abc.abstractmethod
    def _complete_many(self, prompts: list[str]) -> list[tuple[str | None, str | None]]:
        """(answer, error) per prompt."""

    def rate(self, requests: Sequence[RatingRequest]) -> list[RatingResult]:
        results: list[RatingResult | None] = [None] * len(requests)
        pending: list[tuple[int, str, str | None]] = []  # (position, prompt, cache key)
        for position, request in enumerate(requests):
            problem = invalid_request(request)
            if problem is not None:
                results[position] = RatingResult(id=request.id, rating=None, explanation="", raw="", error=problem)
                continue
            prompt = self._prompt(request)
            key = ResponseCache.key(self.model, prompt, self.sampling) if self.cache else None
            cached = self.cache.get(key) if self.cache else None
            if cached is not None:
                self.cache_hits += 1
                results[position] = result_from_answer(request.id, cached)
            else:
                pending.append((position, prompt, key))
        if pending:
            answers = self._complete_many([prompt for _, prompt, _ in pending])
            for (position, _, key), (answer, error) in zip(pending, answers):
                request_id = requests[position].id
                if error is not None:
                    results[position] = RatingResult(id=request_id, rating=None, explanation="", raw=answer or "",
                                                     error=error)
                    continue
                if self.cache is not None:
                    self.cache.put(key, answer, model=self.model, sampling=self.sampling)
                results[position] = result_from_answer(request_id, answer)
        return results  # type: ignore[return-value]


# ------------------------------------------------------------------------------------------ OpenAI-compatible
_RETRY_STATUS = frozenset({408, 409, 429})


class Retrier:
    """Calls to an OpenAI-compatible endpoint through the `openai` client, retried: at most 1 + max_retries
    attempts, waiting backoff_s * 2**attempt (±25% jitter, capped at max_backoff_s) between them, on connection
    errors, timeouts, 408/409/429 and 5xx; other errors (4xx) fail at once. Thread-safe. Shared by the chat
    backend here and the log-prob rater (`curate/logprob_oracle.py`)."""

    def __init__(self, openai: Any, max_retries: int, backoff_s: float, max_backoff_s: float):
        self.openai, self.max_retries, self.backoff_s, self.max_backoff_s = openai, max_retries, backoff_s, max_backoff_s
        self._lock = threading.Lock()
        self._jitter = random.Random(0)

    def retryable(self, error: Exception) -> bool:
        openai = self.openai
        if isinstance(error, (openai.APIConnectionError, openai.APITimeoutError, openai.RateLimitError,
                              openai.InternalServerError)):
            return True
        status = getattr(error, "status_code", None)
        return isinstance(status, int) and (status in _RETRY_STATUS or status >= 500)

    def call(self, function: Callable[[], Any]) -> tuple[Any, str | None]:
        """(function's result, None), or (the last exception, the message "request failed after N attempt(s):
        Type: message") once the attempts are spent or the error is not worth retrying."""
        last_error: Exception | None = None
        attempt = 0
        for attempt in range(self.max_retries + 1):
            try:
                return function(), None
            except Exception as error:  # the client's errors; anything else is a bug and also reported per request
                last_error = error
                if not self.retryable(error) or attempt == self.max_retries:
                    break
                with self._lock:
                    jitter = self._jitter.uniform(0.75, 1.25)
                time.sleep(min(self.max_backoff_s, self.backoff_s * 2**attempt) * jitter)
        return last_error, f"request failed after {attempt + 1} attempt(s): {type(last_error).__name__}: {last_error}"


class OpenAIOracle(_ChatOracle):
    """Any OpenAI-compatible chat-completions endpoint (vllm serve, sglang, a provider) via the `openai` client.

    api_key_env names the environment variable with the key; when it is unset the key "EMPTY" is sent (local
    servers accept anything). Each request: at most 1 + max_retries attempts, waiting backoff_s * 2**attempt
    (with ±25% jitter, capped at max_backoff_s) between them; `timeout_s` bounds each attempt.
    """

    def __init__(self, *, model: str | None = None, base_url: str | None = None, api_key_env: str = "OPENAI_API_KEY",
                 concurrency: int = 8, max_retries: int = 4, backoff_s: float = 1.0, max_backoff_s: float = 30.0,
                 timeout_s: float = 120.0, system_prompt: str | None = None, **options: Any):
        super().__init__(model=model, **options)
        if concurrency < 1:
            raise OracleError(f"OpenAIOracle: concurrency must be >= 1, got {concurrency}")
        if max_retries < 0 or backoff_s < 0 or not timeout_s > 0:
            raise OracleError("OpenAIOracle: max_retries and backoff_s must be >= 0 and timeout_s > 0, got "
                              f"{max_retries}, {backoff_s}, {timeout_s}")
        try:
            import openai
        except ImportError as error:  # pragma: no cover - openai is a dependency of this package
            raise OracleError(f"backend 'openai' needs the openai package: {error}") from error
        self._openai = openai
        self.base_url = base_url or os.environ.get("OPENAI_BASE_URL")
        self.concurrency = int(concurrency)
        self.max_retries = int(max_retries)
        self.backoff_s = float(backoff_s)
        self.max_backoff_s = float(max_backoff_s)
        self.timeout_s = float(timeout_s)
        self.system_prompt = system_prompt
        # The client's own retries are off: ours are counted, backed off and reported the same for every error.
        self.client = openai.OpenAI(base_url=self.base_url, api_key=os.environ.get(api_key_env) or "EMPTY",
                                    timeout=self.timeout_s, max_retries=0)
        self.retrier = Retrier(openai, self.max_retries, self.backoff_s, self.max_backoff_s)
        self.name = f"openai:{model}"
        self._lock = threading.Lock()

    def _complete_one(self, prompt: str) -> tuple[str | None, str | None]:
        messages = ([{"role": "system", "content": self.system_prompt}] if self.system_prompt else []) + [
            {"role": "user", "content": prompt}]
        options = {k: v for k, v in self.sampling.items() if v is not None}

        def call() -> Any:
            with self._lock:
                self.calls += 1
            return self.client.chat.completions.create(model=self.model, messages=messages, **options)

        response, error = self.retrier.call(call)
        if error is not None:
            return None, error
        content = response.choices[0].message.content if response.choices else None
        if not content:
            return None, "request failed: the endpoint returned an empty answer"
        return content, None

    def _complete_many(self, prompts: list[str]) -> list[tuple[str | None, str | None]]:
        if len(prompts) == 1 or self.concurrency == 1:
            return [self._complete_one(prompt) for prompt in prompts]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(prompts)),
                                thread_name_prefix="oracle-openai") as pool:
            return list(pool.map(self._complete_one, prompts))


# ------------------------------------------------------------------------------------------ vLLM in-process
class VLLMOracle(_ChatOracle):
    """vLLM in this process: `LLM(model, **engine_options).chat(...)` over all pending prompts at once."""

    def __init__(self, *, model: str | None = None, engine_options: Mapping[str, Any] | None = None, **options: Any):
        super().__init__(model=model, **options)
        try:
            import vllm
        except ImportError as error:
            raise OracleError(
                "backend 'vllm' needs the vllm package in this environment (pip install vllm; a CUDA machine), "
                f"which is not importable here ({error}); use backend 'openai' against a `vllm serve` endpoint, "
                "or 'rubric' (offline proxy)"
            ) from error
        self._vllm = vllm
        self.engine = vllm.LLM(model=model, **dict(engine_options or {}))
        self.name = f"vllm:{model}"

    def _complete_many(self, prompts: list[str]) -> list[tuple[str | None, str | None]]:
        params = self._vllm.SamplingParams(**{k: v for k, v in self.sampling.items() if v is not None})
        conversations = [[{"role": "user", "content": prompt}] for prompt in prompts]
        self.calls += len(prompts)
        try:
            outputs = self.engine.chat(conversations, params, use_tqdm=False)
        except Exception as error:  # one failed batch is reported per request, not raised
            return [(None, f"request failed: vLLM generation: {type(error).__name__}: {error}")] * len(prompts)
        answers = []
        for output in outputs:
            text = output.outputs[0].text if output.outputs else ""
            answers.append((text, None) if text else (None, "request failed: vLLM returned an empty answer"))
        return answers


__all__ = ["OpenAIOracle", "ResponseCache", "Retrier", "VLLMOracle"]
