"""Where completions come from. A generator is anything with
`generate(prompts, *, n, temperature, top_p, max_tokens, stop) -> list[list[str]]` (n completions per prompt, stop
sequences excluded):

* `OpenAIGenerator`: any OpenAI-compatible server (`seedcoder serve`, `vllm serve`, ...), the `openai` client's
  completions API;
* `EngineGenerator`: our embedded engine (seedcoder.generate), imported only when it is used, so that
  `seedcoder eval` against an HTTP endpoint or with references needs no torch;
* `ReferenceGenerator`: the problems' reference solutions (a self-check of the data and the sandbox).
"""

from __future__ import annotations

import concurrent.futures
import os
from collections.abc import Sequence
from typing import Protocol

from seedcoder.evaluation.problems import Problem, truncate_at_stop


class EvaluationError(ValueError):
    """Bad evaluation settings (n, k, generator answers of the wrong shape): the message names the argument."""


class Generator(Protocol):
    def generate(self, prompts: list[str], *, n: int, temperature: float, top_p: float, max_tokens: int,
                 stop: list[str]) -> list[list[str]]: ...


class OpenAIGenerator:
    """Completions from any OpenAI-compatible server (`seedcoder serve`, `vllm serve`, ...) via the `openai` client.

    base_url is the API root, e.g. http://127.0.0.1:8000/v1. One request per prompt (n completions each), up to
    `concurrency` at a time. Stop sequences are sent and applied again client-side; a server that refuses more
    than 4 (OpenAI's own limit) gets the first 4 and the rest are applied client-side.
    """

    def __init__(self, base_url: str, model: str, *, api_key: str | None = None, timeout_s: float = 600.0,
                 max_retries: int = 2, concurrency: int = 8, seed: int | None = None):
        if not base_url or not isinstance(base_url, str):
            raise EvaluationError(f"OpenAIGenerator: base_url must be a URL such as http://127.0.0.1:8000/v1, got {base_url!r}")
        if not model:
            raise EvaluationError("OpenAIGenerator: model must name the served model (--model)")
        if concurrency < 1:
            raise EvaluationError(f"OpenAIGenerator: concurrency must be >= 1, got {concurrency}")
        from openai import OpenAI

        self.base_url, self.model, self.concurrency, self.seed = base_url, model, concurrency, seed
        self.client = OpenAI(base_url=base_url, api_key=api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY",
                             timeout=timeout_s, max_retries=max_retries)

    def describe(self) -> dict:
        return {"kind": "openai", "base_url": self.base_url, "model": self.model}

    def _one(self, prompt: str, n: int, temperature: float, top_p: float, max_tokens: int, stop: list[str]) -> list[str]:
        import openai

        arguments = {"model": self.model, "prompt": prompt, "n": n, "temperature": temperature, "top_p": top_p,
                     "max_tokens": max_tokens}
        if self.seed is not None:
            arguments["seed"] = self.seed
        try:
            try:
                response = self.client.completions.create(**arguments, stop=list(stop) or None)
            except openai.BadRequestError:
                if len(stop) <= 4:
                    raise
                response = self.client.completions.create(**arguments, stop=list(stop)[:4])
        except openai.APIError as error:
            raise EvaluationError(f"{self.base_url} (model {self.model!r}): {type(error).__name__}: {error}") from error
        choices = sorted(response.choices, key=lambda choice: choice.index)
        if len(choices) != n:
            raise EvaluationError(f"{self.base_url}: asked for n={n} completions, the server returned {len(choices)}")
        return [truncate_at_stop(choice.text or "", stop) for choice in choices]

    def generate(self, prompts: list[str], *, n: int, temperature: float, top_p: float, max_tokens: int,
                 stop: list[str]) -> list[list[str]]:
        with concurrent.futures.ThreadPoolExecutor(max_workers=min(self.concurrency, max(1, len(prompts)))) as pool:
            return list(pool.map(lambda prompt: self._one(prompt, n, temperature, top_p, max_tokens, stop), prompts))


class EngineGenerator:
    """Our embedded engine (seedcoder.generate.Engine) behind the Generator interface; imports it lazily."""

    def __init__(self, engine, *, description: dict | None = None):
        self.engine = engine
        self._description = description or {"kind": "engine"}

    @classmethod
    def from_checkpoint(cls, path: str, device: str | None = None) -> EngineGenerator:
        try:
            from seedcoder.generate import Engine
        except ImportError as error:
            raise EvaluationError(f"the embedded engine (seedcoder.generate) is not available: {error}") from error
        return cls(Engine.from_checkpoint(path, device=device), description={"kind": "engine", "checkpoint": path,
                                                                               "device": device})

    def describe(self) -> dict:
        return dict(self._description)

    def generate(self, prompts: list[str], *, n: int, temperature: float, top_p: float, max_tokens: int,
                 stop: list[str]) -> list[list[str]]:
        from seedcoder.sampling import SamplingParams  # torch: only the embedded engine needs it

        # evaluation means plain sampling: no top-k, no repetition penalty (the engine's defaults are the paper's
        # 0.6 / 0.8 / 1.05 for chat use)
        params = SamplingParams(n=n, temperature=temperature, top_p=top_p, top_k=0, repetition_penalty=1.0,
                                max_tokens=max_tokens, stop=list(stop))
        outputs = self.engine.generate(list(prompts), params)
        return [[truncate_at_stop(completion.text, stop) for completion in completions] for completions in outputs]


class ReferenceGenerator:
    """Returns each problem's reference solution (HumanEval's canonical solution), n times: a sandbox self-check."""

    def __init__(self, problems: Sequence[Problem]):
        self.by_prompt = {problem.prompt: problem.reference for problem in problems}

    def describe(self) -> dict:
        return {"kind": "reference"}

    def generate(self, prompts: list[str], *, n: int, temperature: float, top_p: float, max_tokens: int,
                 stop: list[str]) -> list[list[str]]:
        answers = []
        for prompt in prompts:
            reference = self.by_prompt.get(prompt)
            if reference is None:
                raise EvaluationError("ReferenceGenerator: a problem has no reference solution")
            answers.append([reference] * n)
        return answers


def _describe(generator) -> dict:
    describe = getattr(generator, "describe", None)
    return describe() if callable(describe) else {"kind": type(generator).__name__}
