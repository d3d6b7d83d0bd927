"""What to sample and how: SamplingParams, the logits processing and the draw, and the Completion that comes back.

    from seedcoder.sampling import SamplingParams
    SamplingParams(n=4, max_tokens=128, stop=["\\ndef "], seed=0)   # the paper's defaults otherwise
    SamplingParams.greedy()

Both engines (seedcoder.generate.Engine, seedcoder.vllm_engine.VLLMEngine) take SamplingParams and return
Completions; `sample_tokens` is our engine's per-step sampling.

Sampling (the paper's defaults temperature 0.6, top-p 0.8, repetition penalty 1.05). Per step
and sequence, on fp32 logits z of the model: (1) repetition penalty p on every token already in the sequence
(prompt and generated): z/p where z > 0, z*p otherwise (CTRL / HF / vLLM); (2) temperature: z/T; (3) top-k
(0 = off); (4) top-p (the smallest set of most likely tokens whose mass reaches p); then one token is drawn
from the softmax of what is left (on a GPU the exponential race argmax(prob / Exp(1) noise), on a CPU torch's
multinomial); a request with a `seed` has its own generator and gets the same tokens whatever else shares the
batch. temperature 0 is greedy: the argmax after the penalty. Each completion reports, per generated token:

* `logprobs`: the log-probability of the token under the distribution it was actually drawn from, i.e.
  after penalty, temperature, top-k and top-p (0.0 for greedy decoding, a point mass);
* `model_logprobs`: log_softmax of the raw logits at temperature 1 (what RL's policy ratio and KL need);
* `top_logprobs` (when `top_logprobs=k`): the k most likely tokens of the raw model distribution.

`token_ids`, `logprobs` and `model_logprobs` cover every sampled token, the stop token (eos) included; `text`
is the decoded text without special tokens, cut before the first stop string (when one ends generation, the
tokens that completed it are still in `token_ids`). finish_reason: "stop" (stop token or stop string) or
"length" (max_tokens, or the engine's context `max_seq_len`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

MAX_TOP_LOGPROBS = 20
TOP_P_CANDIDATES = 256  # top-p looks for its cut among this many most likely tokens first (apply_top_p)


class SamplingParamsError(ValueError):
    """A sampling parameter out of range; `param` names it (the server reports it in OpenAI's error format)."""

    def __init__(self, param: str, message: str):
        super().__init__(f"{param}: {message}")
        self.param = param


# ------------------------------------------------------------------------------------------ parameters
@dataclass(frozen=True)
class SamplingParams:
    """How to sample (module docstring). stop: strings that end a completion (a str is one stop string);
    stop_token_ids: None = the tokenizer's end-of-sequence token, () = none; seed: per-request generator (None:
    the engine's shared generator); logprobs: report `logprobs` / `model_logprobs`; top_logprobs: also the k
    most likely raw-model tokens per position."""

    n: int = 1
    temperature: float = 0.6
    top_p: float = 0.8
    top_k: int = 0
    repetition_penalty: float = 1.05
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] | None = None
    seed: int | None = None
    logprobs: bool = True
    top_logprobs: int = 0

    def __post_init__(self) -> None:
        def integer(name: str, low: int, high: int | None = None) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
                bound = f">= {low}" + (f" and <= {high}" if high is not None else "")
                raise SamplingParamsError(name, f"must be an integer {bound}, got {value!r}")

        def number(name: str, ok, rule: str) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not ok(value):
                raise SamplingParamsError(name, f"must be {rule}, got {value!r}")
            object.__setattr__(self, name, float(value))

        integer("n", 1)
        integer("max_tokens", 1)
        integer("top_k", 0)
        integer("top_logprobs", 0, MAX_TOP_LOGPROBS)
        number("temperature", lambda v: v >= 0, "a number >= 0 (0 = greedy)")
        number("top_p", lambda v: 0 < v <= 1, "a number in (0, 1]")
        number("repetition_penalty", lambda v: v > 0, "a number > 0 (1 = off)")
        stop = (self.stop,) if isinstance(self.stop, str) else self.stop
        if stop is None:
            stop = ()
        if not isinstance(stop, (list, tuple)) or not all(isinstance(s, str) and s for s in stop):
            raise SamplingParamsError("stop", f"must be a string or a list of non-empty strings, got {self.stop!r}")
        object.__setattr__(self, "stop", tuple(stop))
        if self.stop_token_ids is not None:
            ids = self.stop_token_ids
            if not isinstance(ids, (list, tuple)) or any(isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in ids):
                raise SamplingParamsError("stop_token_ids", f"must be a list of token ids >= 0, got {ids!r}")
            object.__setattr__(self, "stop_token_ids", tuple(ids))
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise SamplingParamsError("seed", f"must be an integer or None, got {self.seed!r}")
        if not isinstance(self.logprobs, bool):
            raise SamplingParamsError("logprobs", f"must be true or false, got {self.logprobs!r}")

    @classmethod
    def greedy(cls, **overrides: Any) -> SamplingParams:
        """Deterministic decoding: temperature 0, no repetition penalty, top-p 1 (override any field)."""
        return cls(**{"temperature": 0.0, "top_p": 1.0, "repetition_penalty": 1.0, **overrides})


@dataclass
class Completion:
    """One sampled continuation (see the module docstring for what each list holds)."""

    text: str
    token_ids: list[int]
    logprobs: list[float] | None
    model_logprobs: list[float] | None
    finish_reason: str
    top_logprobs: list[dict[int, float]] | None = None


# ------------------------------------------------------------------------------------------ logits processing
def _column(values: torch.Tensor | Sequence[float] | float, rows: int, like: torch.Tensor) -> torch.Tensor:
    """A (rows, 1) tensor on like's device from a scalar, a list or a tensor of per-row values."""
    if not isinstance(values, torch.Tensor):
        values = torch.tensor(values if isinstance(values, Sequence) else [values] * rows, device=like.device)
    return values.to(like.device).reshape(-1, 1).expand(rows, 1)


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty) -> torch.Tensor:
    """logits (B, V) with every token marked in `seen` (B, V bool) penalized: z / p where z > 0, z * p otherwise."""
    p = _column(penalty, logits.shape[0], logits).to(logits.dtype)
    return torch.where(seen, torch.where(logits > 0, logits / p, logits * p), logits)


def _needed(values, predicate) -> bool:
    """Whether any row's value satisfies predicate; decided on the host for Python values (no device sync)."""
    if isinstance(values, torch.Tensor):
        return bool(predicate(values).any())
    if isinstance(values, Sequence):
        return any(predicate(v) for v in values)
    return bool(predicate(values))


def apply_top_k(logits: torch.Tensor, top_k) -> torch.Tensor:
    """Keep each row's k largest logits (ties with the k-th kept too), -inf elsewhere; k <= 0 keeps the row."""
    rows, vocab = logits.shape
    if isinstance(top_k, torch.Tensor):
        widest = int(torch.where(top_k <= 0, vocab, top_k).max())
    else:
        widest = max((vocab if k <= 0 else k) for k in (top_k if isinstance(top_k, Sequence) else [top_k]))
    k = _column(top_k, rows, logits).to(torch.int64)
    k = torch.where(k <= 0, vocab, k.clamp(max=vocab))
    kth = logits.topk(min(widest, vocab), dim=-1).values.gather(-1, k - 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def apply_top_p(logits: torch.Tensor, top_p) -> torch.Tensor:
    """Nucleus filtering: keep each row's smallest set of most likely tokens whose probability reaches p (the
    most likely token always stays), -inf elsewhere; p = 1 keeps the row.

    Exact, and cheap in the common case: the cut is searched among the TOP_P_CANDIDATES most likely tokens
    (a partial sort), and the whole vocabulary is sorted only when those do not reach p for some row."""
    rows, vocab = logits.shape
    p = _column(top_p, rows, logits).to(torch.float32)
    log_norm = logits.float().logsumexp(dim=-1, keepdim=True)
    values, order = logits.topk(min(TOP_P_CANDIDATES, vocab), dim=-1)  # sorted, most likely first
    probs = (values.float() - log_norm).exp()
    if values.shape[-1] < vocab and bool(((probs.sum(-1, keepdim=True) < p) & (p < 1)).any()):
        values, order = logits.sort(dim=-1, descending=True)
        probs = (values.float() - log_norm).exp()
    mass_before = probs.cumsum(dim=-1) - probs  # every token outside the candidates has at least this much before it
    kept = values.masked_fill(mass_before >= p, float("-inf"))
    filtered = torch.full_like(logits, float("-inf")).scatter_(-1, order, kept)
    return torch.where(p < 1, filtered, logits)


def process_logits(logits: torch.Tensor, seen: torch.Tensor | None, *, temperature, top_k, top_p,
                   repetition_penalty) -> torch.Tensor:
    """The logits a token is drawn from: penalty, temperature (rows at 0 keep temperature 1: greedy takes their
    argmax), top-k, top-p; each a scalar or per-row values. fp32 in, fp32 out."""
    rows = logits.shape[0]
    x = logits.float()
    if seen is not None and _needed(repetition_penalty, lambda v: v != 1):
        x = apply_repetition_penalty(x, seen, repetition_penalty)
    if _needed(temperature, lambda v: (v > 0) & (v != 1)):
        temps = _column(temperature, rows, x).float()
        x = x / torch.where(temps > 0, temps, torch.ones_like(temps))
    if _needed(top_k, lambda v: v > 0):
        x = apply_top_k(x, top_k)
    if _needed(top_p, lambda v: v < 1):
        x = apply_top_p(x, top_p)
    return x


@dataclass
class SampledTokens:
    tokens: list[int]
    logprobs: list[float]
    model_logprobs: list[float]
    top_logprobs: list[dict[int, float] | None]


def _draw(probs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One token per row of probs. GPU: the exponential race argmax(p / Exp(1)) (no host sync); CPU: torch's
    multinomial (a cumulative sum and one uniform number per row, cheaper than V exponentials)."""
    if probs.is_cuda:
        noise = torch.empty_like(probs).exponential_(generator=generator)
        return (probs / noise.clamp_(min=torch.finfo(torch.float32).tiny)).argmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


def sample_tokens(logits: torch.Tensor, seen: torch.Tensor | None, params: Sequence[SamplingParams],
                  generators: Sequence[torch.Generator | None], shared_generator: torch.Generator) -> SampledTokens:
    """One token per row of logits (B, V), row i sampled with params[i] (generators[i] when the request is
    seeded, else the shared generator). See the module docstring for the reported log-probabilities."""
    rows = logits.shape[0]
    logits = logits.float()
    model_logprobs = logits.log_softmax(dim=-1)
    x = process_logits(logits, seen, temperature=[p.temperature for p in params], top_k=[p.top_k for p in params],
                       top_p=[p.top_p for p in params], repetition_penalty=[p.repetition_penalty for p in params])
    logprobs = x.log_softmax(dim=-1)
    tokens = x.argmax(dim=-1)  # greedy rows keep it
    sampled_rows = [row for row, p in enumerate(params) if p.temperature > 0]
    if sampled_rows:
        probs = logprobs.exp()
        shared = [row for row in sampled_rows if generators[row] is None]
        if shared:
            index = torch.tensor(shared, device=x.device)
            tokens[index] = _draw(probs[index], shared_generator)
        for row in sampled_rows:
            if generators[row] is not None:  # its own generator: the draw does not depend on the other rows
                tokens[row] = _draw(probs[row:row + 1], generators[row])[0]
    greedy = torch.tensor([p.temperature == 0 for p in params], device=x.device)
    chosen = torch.where(greedy, torch.zeros_like(greedy, dtype=torch.float32),
                         logprobs.gather(-1, tokens[:, None])[:, 0])
    model_chosen = model_logprobs.gather(-1, tokens[:, None])[:, 0]
    top: list[dict[int, float] | None] = [None] * rows
    k_max = max(p.top_logprobs for p in params)
    if k_max:
        values, indices = model_logprobs.topk(k_max, dim=-1)
        values, indices = values.tolist(), indices.tolist()
        top = [dict(zip(indices[r][: p.top_logprobs], values[r][: p.top_logprobs])) if p.top_logprobs else None
               for r, p in enumerate(params)]
    return SampledTokens(tokens.tolist(), chosen.tolist(), model_chosen.tolist(), top)


__all__ = [
    "MAX_TOP_LOGPROBS",
    "Completion",
    "SampledTokens",
    "SamplingParams",
    "SamplingParamsError",
    "apply_repetition_penalty",
    "apply_top_k",
    "apply_top_p",
    "process_logits",
    "sample_tokens",
]
