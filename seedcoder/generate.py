"""The generation engine: batched sampling from our model with a KV cache and continuous batching.

    from seedcoder.generate import Engine, SamplingParams
    engine = Engine.from_checkpoint("runs/demo/checkpoints")          # newest step-N; or an HF folder; or a step dir
    outs = engine.generate(["def fib(n):"], SamplingParams(n=4, max_tokens=128, stop=["\\ndef "], seed=0))
    outs[0][2].text, outs[0][2].token_ids, outs[0][2].logprobs, outs[0][2].model_logprobs, outs[0][2].finish_reason
    engine.chat([[{"role": "user", "content": "Write fib(n)."}]], SamplingParams.greedy())   # Seed-Coder chat template

`Engine(model, tokenizer)` wraps a `seedcoder.model.Transformer` and a `tokenizers.Tokenizer`;
`load_engine(path, backend="auto")` picks vLLM (`VLLMEngine`, same `generate`) when it is installed on a GPU
machine and this engine otherwise. The OpenAI-compatible server (`seedcoder serve`, seedcoder/serve.py) drives
the lower-level API: `add_request` (thread-safe), `abort` (thread-safe), `step` (one engine iteration, returning
`SequenceUpdate`s with new text safe to stream) and `has_unfinished`.

Sampling (SamplingParams; the paper's defaults temperature 0.6, top-p 0.8, repetition penalty 1.05). Per step
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

KV cache and batching. Every running sequence owns a slot of a per-layer cache of shape
(max_batch, n_kv_heads, capacity, head_dim) (per-sequence blocks; capacity grows by doubling up to
`max_seq_len`). Running sequences occupy slots 0..B-1: when one finishes, the last running sequence moves
into its slot (one copy of its K/V), so every decode step attends over a plain slice of the cache, with a
padding mask for the shorter sequences, in torch SDPA (grouped-query heads folded into the query rows). New
requests are admitted whenever slots are free (continuous batching), up to `max_prefill_tokens` prompt tokens
per step: their prompts are prefilled together as one packed row (document-masked attention from cu_seqlens,
i.e. the model's `attend`: our flash attention on CUDA with 16-bit weights, SDPA otherwise), computing the
output head only at each prompt's last position. The n samples of a request share one prefill (its K/V is
copied to their slots). The layer math mirrors `TransformerBlock.forward` step for step (same modules, same
kernels: RMSNorm, rotary with position ids, SwiGLU), so cached decoding reproduces the full forward pass.
"""

from __future__ import annotations

import collections
import importlib.util
import itertools
import json
import math
import os
import queue
import tempfile
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from seedcoder import hf_convert
from seedcoder.chat_template import CHAT_TEMPLATE_JINJA, tokenize_chat
from seedcoder.checkpoint import find_tokenizer, load_model, load_tokenizer_for, resolve_checkpoint
from seedcoder.data.tokenizer_tables import BOS_TOKEN, EOS_TOKEN, PAD_TOKEN
from seedcoder.fileio import atomic_write_text
from seedcoder.kernels import apply_rotary
from seedcoder.model import Transformer, attend, build_attention_mask
from seedcoder.tokenizer import EOS_NAMES

FINISH_REASONS = ("stop", "length")
MAX_TOP_LOGPROBS = 20
CACHE_ALIGN = 256  # cache capacity grows in multiples of this many positions
TOP_P_CANDIDATES = 256  # top-p looks for its cut among this many most likely tokens first (apply_top_p)


class SamplingParamsError(ValueError):
    """A sampling parameter out of range; `param` names it (the server reports it in OpenAI's error format)."""

    def __init__(self, param: str, message: str):
        super().__init__(f"{param}: {message}")
        self.param = param


class GenerationError(ValueError):
    """A prompt or request the engine cannot run (empty, too long, token ids outside the vocabulary)."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


class BackendUnavailable(RuntimeError):
    """A generation backend (vLLM) that cannot run here; the message says why (missing package, no GPU)."""


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


@dataclass
class SequenceUpdate:
    """What one engine step did to one sequence: `text` is new text safe to show (text that could still turn
    out to begin a stop string is held back until it cannot), `token_ids` the tokens sampled this step.
    `completion` is set on the update that finishes the sequence; `error` when the engine failed the request."""

    request_id: Hashable
    index: int
    text: str
    token_ids: list[int]
    finished: bool
    prompt_tokens: int
    completion: Completion | None = None
    error: BaseException | None = None
    logprobs: list[float] | None = None  # of token_ids, when the request asked for log-probs
    model_logprobs: list[float] | None = None
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


# ------------------------------------------------------------------------------------------ KV cache + model
def _kernel_backend(t: torch.Tensor) -> str:
    """The model's rule: the Triton kernels on CUDA, the torch references elsewhere."""
    return "triton" if t.is_cuda else "torch"


class KVCache:
    """Per-slot key/value blocks: keys[layer] and values[layer] are (slots, n_kv_heads, capacity, head_dim)."""

    def __init__(self, model: Transformer, slots: int, capacity: int, device: torch.device, dtype: torch.dtype):
        cfg = model.cfg
        self.shape = (slots, cfg.n_kv_heads, capacity, cfg.head_dim)
        self.keys = [torch.zeros(self.shape, device=device, dtype=dtype) for _ in range(cfg.n_layers)]
        self.values = [torch.zeros(self.shape, device=device, dtype=dtype) for _ in range(cfg.n_layers)]

    @property
    def capacity(self) -> int:
        return self.shape[2]

    def grow(self, capacity: int, used: int) -> None:
        """Reallocate with room for `capacity` positions, keeping the first `used` of every slot."""
        shape = (*self.shape[:2], capacity, self.shape[3])
        for tensors in (self.keys, self.values):
            for layer, old in enumerate(tensors):
                new = torch.zeros(shape, device=old.device, dtype=old.dtype)
                new[:, :, :used] = old[:, :, :used]
                tensors[layer] = new
        self.shape = shape

    def copy_slot(self, source: int, target: int, length: int) -> None:
        for tensors in (self.keys, self.values):
            for t in tensors:
                t[target, :, :length] = t[source, :, :length]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.keys + self.values)


def _block_qkv(block, x: torch.Tensor, position_ids: torch.Tensor):
    attention = block.attention
    batch, seqlen, _ = x.shape
    q = attention.wq(x).view(batch, seqlen, attention.n_heads, attention.head_dim)
    k = attention.wk(x).view(batch, seqlen, attention.n_kv_heads, attention.head_dim)
    v = attention.wv(x).view(batch, seqlen, attention.n_kv_heads, attention.head_dim)
    q, k = apply_rotary(q, k, position_ids, theta=attention.rope_theta, backend=_kernel_backend(q))
    return q, k, v


def _block_finish(block, h: torch.Tensor, attention_out: torch.Tensor) -> torch.Tensor:
    """The rest of TransformerBlock.forward after attention: residual add fused in the norm, then SwiGLU."""
    x, h = block.ffn_norm(attention_out.to(h.dtype), residual=h)
    return h + block.feed_forward(x)


def prefill(model: Transformer, cache: KVCache, prompts: Sequence[Sequence[int]], slots: Sequence[int]) -> torch.Tensor:
    """Run the prompts as one packed row, write their K/V into cache slots `slots` (positions 0..len-1) and
    return the logits at each prompt's last token, (len(prompts), V)."""
    device = model.tok_embeddings.weight.device
    lengths = [len(p) for p in prompts]
    ids = torch.tensor([list(itertools.chain.from_iterable(prompts))], device=device)
    positions = torch.cat([torch.arange(n) for n in lengths]).to(device)
    cu_seqlens = torch.tensor([0, *itertools.accumulate(lengths)], device=device, dtype=torch.int32)
    slot_index = torch.repeat_interleave(torch.tensor(list(slots), device=device),
                                         torch.tensor(lengths, device=device))
    position_ids = positions.unsqueeze(0)
    mask = build_attention_mask(ids, position_ids=position_ids, cu_seqlens=cu_seqlens, max_seqlen=max(lengths))
    h = model.tok_embeddings(ids)
    for layer, block in enumerate(model.layers):
        q, k, v = _block_qkv(block, block.attention_norm(h), position_ids)
        cache.keys[layer][slot_index, :, positions] = k[0]
        cache.values[layer][slot_index, :, positions] = v[0]
        out = block.attention.wo(attend(q, k, v, mask).reshape(1, ids.shape[1], -1))
        h = _block_finish(block, h, out)
    last = h[0, (cu_seqlens[1:] - 1).long()]
    return model.output(model.norm(last))


def decode(model: Transformer, cache: KVCache, tokens: torch.Tensor, positions: torch.Tensor, max_position: int
           ) -> torch.Tensor:
    """One step for the sequences in slots 0..B-1: token b at position positions[b] (its K/V is written there),
    attending over cache positions 0..positions[b]. Returns logits (B, V). max_position = max(positions)."""
    batch = tokens.shape[0]
    n_heads, n_kv_heads = model.cfg.n_heads, model.cfg.n_kv_heads
    head_dim, group = model.cfg.head_dim, n_heads // n_kv_heads
    span = max_position + 1
    rows = torch.arange(batch, device=tokens.device)
    keep = (torch.arange(span, device=tokens.device)[None, :] <= positions[:, None]).view(batch, 1, 1, span)
    position_ids = positions.view(batch, 1)
    h = model.tok_embeddings(tokens.view(batch, 1))
    for layer, block in enumerate(model.layers):
        q, k, v = _block_qkv(block, block.attention_norm(h), position_ids)
        keys, values = cache.keys[layer], cache.values[layer]
        keys[rows, :, positions] = k[:, 0]
        values[rows, :, positions] = v[:, 0]
        # GQA without repeating K/V: the `group` query heads of a K/V head become `group` query rows of it
        # (query head j reads K/V head j // group, as in the model's SDPA with enable_gqa).
        q = q.reshape(batch, n_kv_heads, group, head_dim)
        out = F.scaled_dot_product_attention(q, keys[:batch, :, :span], values[:batch, :, :span], attn_mask=keep)
        h = _block_finish(block, h, block.attention.wo(out.reshape(batch, 1, n_heads * head_dim)))
    return model.output(model.norm(h[:, 0]))


# ------------------------------------------------------------------------------------------ requests
@dataclass
class _Request:
    request_id: Hashable
    prompt_ids: list[int]
    params: SamplingParams
    stop_ids: frozenset[int]
    sequences: list[_Sequence] = field(default_factory=list)


@dataclass
class _Sequence:
    request: _Request
    index: int
    generator: torch.Generator | None
    slot: int = -1
    cached: int = 0  # positions of this sequence whose K/V are in the cache
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    model_logprobs: list[float] = field(default_factory=list)
    top_logprobs: list[dict[int, float]] = field(default_factory=list)
    text: str = ""
    emitted: int = 0  # characters of text already handed out in updates
    prefix_offset: int = 0  # incremental detokenization window over token_ids
    read_offset: int = 0
    finish_reason: str | None = None

    @property
    def length(self) -> int:
        return len(self.request.prompt_ids) + len(self.token_ids)


def _request_seed(seed: int, index: int) -> int:
    """Independent seeds for the n samples of a seeded request."""
    import numpy as np

    return int(np.random.SeedSequence([seed, index]).generate_state(1, dtype=np.uint64)[0] >> 1)


# ------------------------------------------------------------------------------------------ engine
class Engine:
    """Batched generation from a Transformer (module docstring).

    max_batch: cache slots, i.e. sequences decoded together; max_seq_len: the longest sequence (prompt +
    completion; default the model's max_seq_len); max_prefill_tokens: prompt tokens prefilled per step (a
    longer prompt runs alone); seed: the shared generator of unseeded requests. `step` and `generate` run in one
    thread at a time; `add_request` and `abort` may be called from any thread.
    """

    def __init__(self, model: Transformer, tokenizer: Any, *, max_batch: int = 32, max_seq_len: int | None = None,
                 max_prefill_tokens: int = 8192, seed: int = 0):
        if not isinstance(model, Transformer):
            raise TypeError(f"Engine: model must be a seedcoder.model.Transformer, got {type(model).__name__}")
        for name, value in (("max_batch", max_batch), ("max_prefill_tokens", max_prefill_tokens),
                            ("max_seq_len", 1 if max_seq_len is None else max_seq_len)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Engine: {name} must be a positive integer, got {value!r}")
        self.model = model.eval()
        self.cfg = model.cfg
        self.tokenizer = getattr(tokenizer, "backend_tokenizer", tokenizer)  # a transformers fast tokenizer works too
        if not hasattr(self.tokenizer, "decode") or not hasattr(self.tokenizer, "token_to_id"):
            raise TypeError(f"Engine: tokenizer must be a tokenizers.Tokenizer, got {type(tokenizer).__name__}")
        if self.tokenizer.get_vocab_size() > self.cfg.vocab_size:
            raise ValueError(f"Engine: the tokenizer has {self.tokenizer.get_vocab_size()} tokens, more than the "
                             f"model's vocab_size {self.cfg.vocab_size}")
        self.eos_id = find_eos_id(self.tokenizer)
        self.device = model.tok_embeddings.weight.device
        self.dtype = model.tok_embeddings.weight.dtype
        self.max_batch = max_batch
        self.max_seq_len = max_seq_len or self.cfg.max_seq_len
        self.max_prefill_tokens = max_prefill_tokens
        self._generator = torch.Generator(device=self.device).manual_seed(seed)
        self._incoming: queue.SimpleQueue = queue.SimpleQueue()  # ("add", _Request) / ("abort", request_id)
        self._waiting: collections.deque[_Sequence] = collections.deque()
        self._running: list[_Sequence] = []  # index = cache slot
        self._cache: KVCache | None = None
        self._seen: torch.Tensor | None = None  # (max_batch, V) bool: tokens in each slot's sequence
        self._ids = itertools.count()
        self.stats = collections.Counter()

    # -------------------------------------------------------------------------------- construction
    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str | torch.device | None = None,
                        dtype: torch.dtype | None = None, *, tokenizer: Any = None, **engine_kwargs: Any) -> Engine:
        """An engine for a checkpoint: our trainer's or model-only checkpoint directory (step-N, or the folder
        holding step-N dirs: the newest is used), a converted one, or a Hugging Face Llama folder (config.json +
        safetensors). device: default CUDA when present, else CPU; dtype: default bf16 on CUDA, fp32 on CPU.
        tokenizer: a tokenizers.Tokenizer, a tokenizer.json path or a folder holding one; default: found next to
        the checkpoint (`find_tokenizer`)."""
        model, path = load_model(path, device, dtype)
        if tokenizer is None or isinstance(tokenizer, (str, os.PathLike)):
            tokenizer = load_tokenizer_for(path, tokenizer)
        return cls(model, tokenizer, **engine_kwargs)

    # -------------------------------------------------------------------------------- requests
    def encode_prompt(self, prompt: str | Sequence[int], where: str = "prompt") -> list[int]:
        """Token ids of a prompt (a string, encoded with the tokenizer's special-token post-processing, or ids)."""
        if isinstance(prompt, str):
            ids = self.tokenizer.encode(prompt).ids
        elif isinstance(prompt, Sequence) and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
            ids = list(prompt)
            bad = [t for t in ids if not 0 <= t < self.cfg.vocab_size]
            if bad:
                raise GenerationError(f"{where}: token id(s) {bad[:5]} outside the vocabulary [0, {self.cfg.vocab_size})",
                                      "prompt")
        else:
            raise GenerationError(f"{where}: expected a string or a list of token ids, got {type(prompt).__name__}",
                                  "prompt")
        if not ids:
            raise GenerationError(f"{where}: the prompt is empty (no tokens to condition on)", "prompt")
        if len(ids) >= self.max_seq_len:
            raise GenerationError(f"{where}: {len(ids)} tokens leave no room to generate within the engine's "
                                  f"max_seq_len {self.max_seq_len}", "prompt")
        return ids

    def add_request(self, prompt: str | Sequence[int], params: SamplingParams | None = None,
                    request_id: Hashable | None = None) -> Hashable:
        """Queue a prompt (thread-safe); returns its request id. Raises GenerationError for a bad prompt."""
        params = SamplingParams() if params is None else params
        if not isinstance(params, SamplingParams):
            raise TypeError(f"params must be a SamplingParams, got {type(params).__name__}")
        prompt_ids = self.encode_prompt(prompt)
        request_id = next(self._ids) if request_id is None else request_id
        stop_ids = frozenset((self.eos_id,) if params.stop_token_ids is None else params.stop_token_ids)
        request = _Request(request_id, prompt_ids, params, stop_ids)
        for index in range(params.n):
            generator = None
            if params.seed is not None:
                generator = torch.Generator(device=self.device).manual_seed(_request_seed(params.seed, index))
            request.sequences.append(_Sequence(request, index, generator))
        self._incoming.put(("add", request))
        return request_id

    def abort(self, request_id: Hashable) -> None:
        """Drop a request (thread-safe): its sequences stop at the next step without a final update."""
        self._incoming.put(("abort", request_id))

    def has_unfinished(self) -> bool:
        return bool(self._waiting or self._running or not self._incoming.empty())

    def fail_all(self) -> list[Hashable]:
        """Drop every queued and running request (after an error inside `step` left them in an unknown state);
        returns their ids. The cache is kept."""
        self._drain()
        request_ids = list(dict.fromkeys(s.request.request_id for s in itertools.chain(self._waiting, self._running)))
        self._waiting.clear()
        self._running.clear()
        return request_ids

    def _drain(self) -> None:
        aborted = set()
        while True:
            try:
                kind, item = self._incoming.get_nowait()
            except queue.Empty:
                break
            if kind == "add":
                self._waiting.extend(item.sequences)
            else:
                aborted.add(item)
        if aborted:
            self._waiting = collections.deque(s for s in self._waiting if s.request.request_id not in aborted)
            self._release([s.slot for s in self._running if s.request.request_id in aborted])

    # -------------------------------------------------------------------------------- the loop
    def step(self) -> list[SequenceUpdate]:
        """One iteration: a decode step for the running sequences, admission and prefill of waiting ones into
        free slots, one sampled token each. Returns an update per sequence that got a token."""
        with torch.inference_mode():
            self._drain()
            running = list(self._running)
            logits = []
            if running:
                self._ensure_capacity(max(s.cached for s in running) + 1)
                tokens = torch.tensor([s.token_ids[-1] for s in running], device=self.device)
                positions = [s.cached for s in running]
                logits.append(decode(self.model, self._cache, tokens, torch.tensor(positions, device=self.device),
                                     max(positions)))
                for s in running:
                    s.cached += 1
                self.stats["decode_tokens"] += len(running)
            admitted = self._admit()
            if admitted:
                if running:
                    self.stats["admitted_while_running"] += len(admitted)
                logits.append(self._prefill(admitted))
            sequences = running + admitted
            if not sequences:
                return []
            self.stats["steps"] += 1
            self.stats["peak_running"] = max(self.stats["peak_running"], len(sequences))
            sampled = sample_tokens(torch.cat(logits) if len(logits) > 1 else logits[0], self._seen[:len(sequences)],
                                    [s.request.params for s in sequences], [s.generator for s in sequences],
                                    self._generator)
            self._seen[torch.arange(len(sequences), device=self.device),
                       torch.tensor(sampled.tokens, device=self.device)] = True
            updates = [self._advance(s, i, sampled) for i, s in enumerate(sequences)]
            self._release([s.slot for s in sequences if s.finish_reason is not None])
            return updates

    def _admit(self) -> list[_Sequence]:
        admitted: list[_Sequence] = []
        budget_used = 0
        while self._waiting and len(self._running) < self.max_batch:
            sequence = self._waiting[0]
            shares_prefill = admitted and admitted[-1].request is sequence.request
            cost = 0 if shares_prefill else len(sequence.request.prompt_ids)
            if admitted and budget_used + cost > self.max_prefill_tokens:
                break
            budget_used += cost
            self._waiting.popleft()
            sequence.slot = len(self._running)
            self._running.append(sequence)
            admitted.append(sequence)
        return admitted

    def _prefill(self, admitted: list[_Sequence]) -> torch.Tensor:
        groups: list[list[_Sequence]] = []
        for sequence in admitted:
            if groups and groups[-1][0].request is sequence.request:
                groups[-1].append(sequence)
            else:
                groups.append([sequence])
        self._ensure_capacity(max(len(g[0].request.prompt_ids) for g in groups))
        first_logits = prefill(self.model, self._cache, [g[0].request.prompt_ids for g in groups], [g[0].slot for g in groups])
        self.stats["prefill_tokens"] += sum(len(g[0].request.prompt_ids) for g in groups)
        rows = []
        for group_index, group in enumerate(groups):
            prompt = group[0].request.prompt_ids
            self._seen[group[0].slot] = False
            self._seen[group[0].slot, torch.tensor(prompt, device=self.device)] = True
            for sequence in group:
                if sequence is not group[0]:  # the n samples of a request share the prompt's K/V
                    self._cache.copy_slot(group[0].slot, sequence.slot, len(prompt))
                    self._seen[sequence.slot] = self._seen[group[0].slot]
                sequence.cached = len(prompt)
                rows.append(group_index)
        return first_logits[torch.tensor(rows, device=self.device)]

    def _ensure_capacity(self, needed: int) -> None:
        if self._seen is None:
            self._seen = torch.zeros(self.max_batch, self.cfg.vocab_size, dtype=torch.bool, device=self.device)
        if self._cache is not None and self._cache.capacity >= needed:
            return
        current = self._cache.capacity if self._cache is not None else 0
        capacity = min(self.max_seq_len, max(needed, 2 * current, CACHE_ALIGN))
        capacity = min(self.max_seq_len, -(-capacity // CACHE_ALIGN) * CACHE_ALIGN)
        if self._cache is None:
            self._cache = KVCache(self.model, self.max_batch, capacity, self.device, self.dtype)
        else:
            self._cache.grow(capacity, used=current)
        self.stats["cache_capacity"] = capacity

    def _release(self, slots: Sequence[int]) -> None:
        """Free finished (or aborted) sequences' slots, moving the last running sequence into each hole."""
        for slot in sorted(set(slots), reverse=True):  # from the top: the last running sequence is never freed here
            last = len(self._running) - 1
            if slot != last:
                moved = self._running[last]
                self._cache.copy_slot(last, slot, moved.cached)
                self._seen[slot] = self._seen[last]
                self._running[slot] = moved
                moved.slot = slot
            self._running.pop()

    # -------------------------------------------------------------------------------- per token
    def _advance(self, sequence: _Sequence, row: int, sampled: SampledTokens) -> SequenceUpdate:
        request, params = sequence.request, sequence.request.params
        token = sampled.tokens[row]
        sequence.token_ids.append(token)
        if params.logprobs:
            sequence.logprobs.append(sampled.logprobs[row])
            sequence.model_logprobs.append(sampled.model_logprobs[row])
        if params.top_logprobs:
            sequence.top_logprobs.append(sampled.top_logprobs[row])
        if token in request.stop_ids:
            sequence.finish_reason = "stop"
        else:
            previous = len(sequence.text)
            sequence.text += self._detokenize(sequence)
            if params.stop:
                window = max(0, previous - max(len(s) for s in params.stop) + 1)
                hits = [i for i in (sequence.text.find(s, window) for s in params.stop) if i >= 0]
                if hits:
                    sequence.text = sequence.text[:min(hits)]
                    sequence.finish_reason = "stop"
        if sequence.finish_reason is None and (len(sequence.token_ids) >= params.max_tokens
                                               or sequence.length >= self.max_seq_len):
            sequence.finish_reason = "length"
        finished = sequence.finish_reason is not None
        if finished and sequence.finish_reason == "length":
            sequence.text += self._detokenize(sequence, final=True)  # bytes of an unfinished character, as "\ufffd"
        holdback = 0 if finished or not params.stop else max(len(s) for s in params.stop) - 1
        end = max(sequence.emitted, len(sequence.text) - holdback)
        text, sequence.emitted = sequence.text[sequence.emitted:end], end
        completion = None
        if finished:
            completion = Completion(sequence.text, list(sequence.token_ids),
                                    list(sequence.logprobs) if params.logprobs else None,
                                    list(sequence.model_logprobs) if params.logprobs else None,
                                    sequence.finish_reason, list(sequence.top_logprobs) if params.top_logprobs else None)
            self.stats["finished"] += 1
        update = SequenceUpdate(request.request_id, sequence.index, text, [token], finished, len(request.prompt_ids),
                                completion)
        if params.logprobs:
            update.logprobs, update.model_logprobs = [sampled.logprobs[row]], [sampled.model_logprobs[row]]
        if params.top_logprobs:
            update.top_logprobs = [sampled.top_logprobs[row]]
        return update

    def _detokenize(self, sequence: _Sequence, final: bool = False) -> str:
        """New text of the sequence since the last call (held back while it ends inside a UTF-8 character)."""
        ids = sequence.token_ids
        if ids and ids[-1] in sequence.request.stop_ids:
            ids = ids[:-1]
        decode_ids = lambda part: self.tokenizer.decode(part, skip_special_tokens=True)
        prefix = decode_ids(ids[sequence.prefix_offset:sequence.read_offset])
        full = decode_ids(ids[sequence.prefix_offset:])
        if len(full) > len(prefix) and (final or not full.endswith("\ufffd")):
            sequence.prefix_offset, sequence.read_offset = sequence.read_offset, len(ids)
            return full[len(prefix):]
        return ""

    # -------------------------------------------------------------------------------- blocking API
    def generate(self, prompts: Sequence[str] | Sequence[Sequence[int]], params: SamplingParams | Sequence[SamplingParams]
                 | None = None, *, progress: bool = False) -> list[list[Completion]]:
        """Completions for every prompt: result[i] holds params.n completions of prompts[i] (in sample order).
        params: one SamplingParams for all prompts or one per prompt. progress: a tqdm bar over completions."""
        if isinstance(prompts, str) or not isinstance(prompts, Sequence):
            raise GenerationError("prompts: expected a list of strings or of token-id lists", "prompt")
        prompts = list(prompts)
        if params is None or isinstance(params, SamplingParams):
            params = [params or SamplingParams()] * len(prompts)
        params = list(params)
        if len(params) != len(prompts):
            raise ValueError(f"params: got {len(params)} SamplingParams for {len(prompts)} prompts")
        if self.has_unfinished():
            raise RuntimeError("Engine.generate: the engine is serving other requests (step() is driven elsewhere)")
        encoded = [self.encode_prompt(p, f"prompts[{i}]") for i, p in enumerate(prompts)]  # all checked before any runs
        ids = [self.add_request(p, sp) for p, sp in zip(encoded, params)]
        results: dict[Hashable, list[Completion | None]] = {rid: [None] * sp.n for rid, sp in zip(ids, params)}
        remaining = sum(sp.n for sp in params)
        from tqdm import tqdm

        try:
            with tqdm(total=remaining, desc="generate", unit="seq", disable=not progress) as bar:
                while remaining:
                    for update in self.step():
                        if update.finished:
                            results[update.request_id][update.index] = update.completion
                            remaining -= 1
                            bar.update(1)
        except BaseException:  # interrupted or failed: leave no half-run requests behind for the next call
            self.fail_all()
            raise
        return [results[rid] for rid in ids]

    def chat(self, conversations: Sequence[Sequence[dict]], params: SamplingParams | Sequence[SamplingParams] | None = None,
             **kwargs: Any) -> list[list[Completion]]:
        """`generate` on conversations rendered with Seed-Coder's chat template (seedcoder.chat_template)."""
        prompts = [tokenize_chat(messages, self.tokenizer).input_ids for messages in conversations]
        return self.generate(prompts, params, **kwargs)


# ------------------------------------------------------------------------------------------ loading
def find_eos_id(tokenizer: Any) -> int:
    """The end-of-sequence id: Seed-Coder's <[end▁of▁sentence]> or another common eos name."""
    for name in EOS_NAMES:
        token_id = tokenizer.token_to_id(name)
        if token_id is not None:
            return token_id
    raise ValueError(f"tokenizer: no end-of-sequence token (tried {', '.join(EOS_NAMES)})")


# ------------------------------------------------------------------------------------------ vLLM
def vllm_unavailable_reason() -> str | None:
    """Why the vLLM backend cannot run here, or None when it can."""
    if importlib.util.find_spec("vllm") is None:
        return "the 'vllm' package is not installed (pip install vllm, on a machine with a CUDA GPU)"
    if not torch.cuda.is_available():
        return "vllm is installed but no CUDA GPU is visible"
    return None


def write_hf_tokenizer_files(hf_dir: str | os.PathLike, max_seq_len: int | None = None) -> None:
    """tokenizer_config.json (Seed-Coder's specials, no automatic bos, the chat template) and
    generation_config.json (bos / eos / pad ids) for an HF folder holding our tokenizer.json, so transformers'
    AutoTokenizer, `vllm serve` and VLLMEngine read our tokenizer and chat format correctly."""
    from tokenizers import Tokenizer

    hf_dir = Path(hf_dir)
    tokenizer = Tokenizer.from_file(str(hf_dir / "tokenizer.json"))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "add_bos_token": False, "add_eos_token": False,
              "chat_template": CHAT_TEMPLATE_JINJA, "clean_up_tokenization_spaces": False}
    generation = {}
    for key, token in (("bos", BOS_TOKEN), ("eos", EOS_TOKEN), ("pad", PAD_TOKEN)):
        if tokenizer.token_to_id(token) is not None:
            config[f"{key}_token"] = token
            generation[f"{key}_token_id"] = tokenizer.token_to_id(token)
    if max_seq_len:
        config["model_max_length"] = max_seq_len
    atomic_write_text(hf_dir / "tokenizer_config.json", json.dumps(config, indent=2) + "\n")
    atomic_write_text(hf_dir / "generation_config.json", json.dumps(generation, indent=2) + "\n")


class VLLMEngine:
    """vLLM behind the Engine interface (`generate`, `chat`), for GPU machines with vllm installed.

    hf_dir: a Hugging Face folder (`seedcoder convert --to-hf`, or `VLLMEngine.from_checkpoint` converts ours).
    Reported log-probabilities: vLLM returns one kind per engine; `model_logprobs` holds vLLM's raw log-probs
    (logprobs_mode "raw_logprobs", its default: log_softmax of the raw logits) and `logprobs` is None.
    Raises BackendUnavailable (naming the missing package, or the missing GPU) where vLLM cannot run.
    """

    def __init__(self, hf_dir: str | os.PathLike, *, dtype: str = "auto", seed: int = 0, max_model_len: int | None = None,
                 gpu_memory_utilization: float = 0.85, **llm_kwargs: Any):
        reason = vllm_unavailable_reason()
        if reason is not None:
            raise BackendUnavailable(f"VLLMEngine: {reason}")
        import vllm

        self._vllm = vllm
        self.llm = vllm.LLM(model=str(hf_dir), dtype=dtype, seed=seed, max_model_len=max_model_len,
                            gpu_memory_utilization=gpu_memory_utilization, **llm_kwargs)
        self.hf_tokenizer = self.llm.get_tokenizer()
        self.tokenizer = getattr(self.hf_tokenizer, "backend_tokenizer", self.hf_tokenizer)
        self.eos_id = self.hf_tokenizer.eos_token_id

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, *, hf_dir: str | os.PathLike | None = None,
                        tokenizer: str | os.PathLike | None = None, dtype: torch.dtype = torch.bfloat16,
                        **kwargs: Any) -> VLLMEngine:
        """An HF folder is used as it is; our checkpoint is converted (to hf_dir, default a temporary folder)."""
        reason = vllm_unavailable_reason()
        if reason is not None:  # before converting anything
            raise BackendUnavailable(f"VLLMEngine: {reason}")
        directory, kind = resolve_checkpoint(path)
        if kind == "ours":
            tokenizer_path = Path(tokenizer) if tokenizer is not None else find_tokenizer(directory)
            out = Path(hf_dir) if hf_dir is not None else Path(tempfile.mkdtemp(prefix="seedcoder-vllm-")) / "hf"
            hf_convert.convert_to_hf(directory, out, dtype=dtype, tokenizer=tokenizer_path, log=lambda *_: None)
            write_hf_tokenizer_files(out, hf_convert.read_model_config(directory).max_seq_len)
            directory = out
        return cls(directory, **kwargs)

    def _sampling_params(self, params: SamplingParams) -> Any:
        return self._vllm.SamplingParams(
            n=params.n, temperature=params.temperature, top_p=params.top_p, top_k=params.top_k if params.top_k else -1,
            repetition_penalty=params.repetition_penalty, max_tokens=params.max_tokens, stop=list(params.stop),
            stop_token_ids=list(params.stop_token_ids or ()), ignore_eos=params.stop_token_ids == (), seed=params.seed,
            logprobs=params.top_logprobs if params.logprobs or params.top_logprobs else None)

    def generate(self, prompts: Sequence[str] | Sequence[Sequence[int]], params: SamplingParams | Sequence[SamplingParams]
                 | None = None, *, progress: bool = False) -> list[list[Completion]]:
        prompts = list(prompts)
        if params is None or isinstance(params, SamplingParams):
            params = [params or SamplingParams()] * len(prompts)
        inputs = [p if isinstance(p, str) else {"prompt_token_ids": list(p)} for p in prompts]
        outputs = self.llm.generate(inputs, [self._sampling_params(p) for p in params], use_tqdm=progress)
        results = []
        for output, sp in zip(outputs, params):
            completions = []
            for sample in sorted(output.outputs, key=lambda o: o.index):
                token_ids = list(sample.token_ids)
                model_logprobs = top = None
                if sample.logprobs is not None:
                    model_logprobs = [float(step[t].logprob) for t, step in zip(token_ids, sample.logprobs)]
                    if sp.top_logprobs:
                        top = [{t: float(lp.logprob) for t, lp in step.items() if lp.rank <= sp.top_logprobs}
                               for step in sample.logprobs]
                completions.append(Completion(sample.text, token_ids, None, model_logprobs if sp.logprobs else None,
                                              "stop" if sample.finish_reason == "stop" else "length", top))
            results.append(completions)
        return results

    def chat(self, conversations: Sequence[Sequence[dict]], params: SamplingParams | Sequence[SamplingParams] | None = None,
             **kwargs: Any) -> list[list[Completion]]:
        return self.generate([tokenize_chat(m, self.tokenizer).input_ids for m in conversations], params, **kwargs)


def load_engine(path: str | os.PathLike, backend: str = "auto", **kwargs: Any) -> Engine | VLLMEngine:
    """An engine for a checkpoint. backend: "seedcoder" (ours), "vllm" (BackendUnavailable when it cannot run), or
    "auto" (vLLM when installed on a GPU machine, ours otherwise). kwargs go to the chosen engine."""
    if backend not in ("auto", "seedcoder", "vllm"):
        raise ValueError(f"backend: expected 'auto', 'seedcoder' or 'vllm', got {backend!r}")
    if backend == "vllm" or (backend == "auto" and vllm_unavailable_reason() is None):
        return VLLMEngine.from_checkpoint(path, **kwargs)
    return Engine.from_checkpoint(path, **kwargs)


__all__ = [
    "BackendUnavailable",
    "Completion",
    "Engine",
    "GenerationError",
    "KVCache",
    "SamplingParams",
    "SamplingParamsError",
    "SequenceUpdate",
    "VLLMEngine",
    "apply_repetition_penalty",
    "apply_top_k",
    "apply_top_p",
    "decode",
    "find_eos_id",
    "load_engine",
    "prefill",
    "process_logits",
    "sample_tokens",
    "vllm_unavailable_reason",
    "write_hf_tokenizer_files",
]
