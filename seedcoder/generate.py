"""The generation engine: batched sampling from our model with a KV cache and continuous batching.

    from seedcoder.generate import Engine
    from seedcoder.sampling import SamplingParams
    engine = Engine.from_checkpoint("runs/demo/checkpoints")          # newest step-N; or an HF folder; or a step dir
    outs = engine.generate(["def fib(n):"], SamplingParams(n=4, max_tokens=128, stop=["\\ndef "], seed=0))
    outs[0][2].text, outs[0][2].token_ids, outs[0][2].logprobs, outs[0][2].model_logprobs, outs[0][2].finish_reason
    engine.chat([[{"role": "user", "content": "Write fib(n)."}]], SamplingParams.greedy())   # Seed-Coder chat template

`Engine(model, tokenizer)` wraps a `seedcoder.model.Transformer` and a `tokenizers.Tokenizer`;
`load_engine(path, backend="auto")` picks vLLM (`seedcoder.vllm_engine.VLLMEngine`, same `generate`) when it is
installed on a GPU machine and this engine otherwise. The OpenAI-compatible server (`seedcoder serve`,
seedcoder/serve.py) drives the lower-level API: `add_request` (thread-safe), `abort` (thread-safe), `step` (one
engine iteration, returning `SequenceUpdate`s with new text safe to stream) and `has_unfinished`. What is sampled
and what each Completion reports: seedcoder/sampling.py.

KV cache and batching. The model's `KVCache` is paged: per layer a pool of blocks of `kv_block_size` (256)
positions, and per running sequence a block table; a sequence holds ceil(length / 256) blocks, taken as it
grows and freed when it finishes, so a batch of 64 rollouts of which one reaches 32K holds the sum of their
lengths, not 64 x 32K. `kv_cache_tokens` is the pool's budget, allocated on the first step (the memory the
user grants, as in vLLM); without it the budget is room for max_batch sequences of max_seq_len (which never
preempts) and the pool starts small and doubles as blocks are needed (a growth briefly holds both pools).
Running sequences occupy slots (block-table rows) 0..B-1: when one finishes, the last running sequence's table
moves into its row (no K/V is copied), so a decode step reads rows 0..B-1 through their tables, with a padding
mask for the shorter sequences. New requests are admitted whenever slots are free and the blocks of their
prompt and first token fit beside those the running sequences need for their next token (continuous
batching), up to `max_prefill_tokens` prompt tokens per step: their prompts are prefilled together as one
packed row (document-masked attention from cu_seqlens: the model's forward pass as in training), computing
the output head only at each prompt's last position. The n samples of a request share one prefill and its
full blocks (the last partial block is copied). When a decode step needs more blocks than are free, the
newest running sequences are preempted as in vLLM's recompute preemption: their blocks are freed and they go
back to the front of the queue, to be prefilled again later over prompt + the tokens sampled so far (their
sampling state, generator included, is kept, so a seeded request samples the same tokens, its log-probs equal
up to rounding; `stats["preempted"]`, `stats["recomputed_tokens"]`). A request whose prompt + max_tokens
could exceed the whole budget is refused at `add_request`. Prefill and decode are the model's own forward
pass with the cache as an argument (`Transformer.forward(..., kv_cache=...)`), so cached decoding reproduces
the full forward pass.
"""

from __future__ import annotations

import collections
import itertools
import os
import queue
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from seedcoder.chat_template import tokenize_chat
from seedcoder.checkpoint import load_model, load_tokenizer_for
from seedcoder.model import KVCache, Transformer
from seedcoder.sampling import Completion, SampledTokens, SamplingParams, sample_tokens
from seedcoder.tokenizer import EOS_NAMES
from seedcoder.vllm_engine import VLLMEngine, vllm_unavailable_reason

KV_BLOCK_SIZE = 256  # positions per block of the paged KV cache


class GenerationError(ValueError):
    """A prompt or request the engine cannot run (empty, too long, token ids outside the vocabulary)."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


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
    admitted: int = -1  # admission order (the newest running sequence is preempted first)
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

    @property
    def prefill_ids(self) -> list[int]:
        """What a prefill of this sequence runs over: the prompt, plus the tokens sampled before a preemption."""
        return self.request.prompt_ids + self.token_ids


def _request_seed(seed: int, index: int) -> int:
    """Independent seeds for the n samples of a seeded request."""
    import numpy as np

    return int(np.random.SeedSequence([seed, index]).generate_state(1, dtype=np.uint64)[0] >> 1)


# ------------------------------------------------------------------------------------------ engine
class Engine:
    """Batched generation from a Transformer (module docstring).

    max_batch: cache slots, i.e. sequences decoded together; max_seq_len: the longest sequence (prompt +
    completion; default the model's max_seq_len); max_prefill_tokens: prompt tokens prefilled per step (a
    longer prompt runs alone); kv_cache_tokens: the paged KV cache's budget in positions (rounded up to whole
    blocks of kv_block_size, the positions per block; default: max_batch sequences of max_seq_len, which never
    preempts); seed: the shared generator of unseeded requests. `step` and `generate` run in one thread at a
    time; `add_request` and `abort` may be called from any thread.
    """

    def __init__(self, model: Transformer, tokenizer: Any, *, max_batch: int = 32, max_seq_len: int | None = None,
                 max_prefill_tokens: int = 8192, kv_cache_tokens: int | None = None, kv_block_size: int = KV_BLOCK_SIZE,
                 seed: int = 0):
        if not isinstance(model, Transformer):
            raise TypeError(f"Engine: model must be a seedcoder.model.Transformer, got {type(model).__name__}")
        for name, value in (("max_batch", max_batch), ("max_prefill_tokens", max_prefill_tokens),
                            ("max_seq_len", 1 if max_seq_len is None else max_seq_len),
                            ("kv_cache_tokens", 1 if kv_cache_tokens is None else kv_cache_tokens),
                            ("kv_block_size", kv_block_size)):
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
        self.kv_block_size = kv_block_size
        blocks_per_sequence = -(-self.max_seq_len // kv_block_size)
        self.kv_cache_blocks = -(-kv_cache_tokens // kv_block_size) if kv_cache_tokens else max_batch * blocks_per_sequence
        self.kv_cache_tokens = self.kv_cache_blocks * kv_block_size
        self._preallocate = kv_cache_tokens is not None
        self._generator = torch.Generator(device=self.device).manual_seed(seed)
        self._incoming: queue.SimpleQueue = queue.SimpleQueue()  # ("add", _Request) / ("abort", request_id)
        self._waiting: collections.deque[_Sequence] = collections.deque()
        self._running: list[_Sequence] = []  # index = cache slot
        self._cache: KVCache | None = None
        self._seen: torch.Tensor | None = None  # (max_batch, V) bool: tokens in each slot's sequence
        self._ids = itertools.count()
        self._admissions = itertools.count()
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
        self._check_budget(prompt_ids, params)
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

    def _check_budget(self, prompt_ids: list[int], params: SamplingParams, where: str = "prompt") -> None:
        """A sequence must fit the whole KV budget alone (else preempting every other one would not help)."""
        longest = min(len(prompt_ids) + params.max_tokens, self.max_seq_len)
        if longest > self.kv_cache_tokens:
            raise GenerationError(f"{where}: {len(prompt_ids)} prompt tokens + max_tokens {params.max_tokens} need up "
                                  f"to {longest} positions of KV cache, over the engine's kv_cache_tokens budget "
                                  f"{self.kv_cache_tokens}: lower max_tokens or raise kv_cache_tokens", "max_tokens")

    def abort(self, request_id: Hashable) -> None:
        """Drop a request (thread-safe): its sequences stop at the next step without a final update."""
        self._incoming.put(("abort", request_id))

    def has_unfinished(self) -> bool:
        return bool(self._waiting or self._running or not self._incoming.empty())

    def fail_all(self) -> list[Hashable]:
        """Drop every queued and running request (after an error inside `step` left them in an unknown state);
        returns their ids. The cache's pool is kept, its blocks freed."""
        self._drain()
        request_ids = list(dict.fromkeys(s.request.request_id for s in itertools.chain(self._waiting, self._running)))
        self._waiting.clear()
        self._running.clear()
        if self._cache is not None:
            self._cache.reset()
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
            self._ensure_cache()
            self._make_room()
            running = list(self._running)
            logits = []
            if running:
                tokens = torch.tensor([[s.token_ids[-1]] for s in running], device=self.device)
                positions = torch.tensor([s.cached for s in running], device=self.device)
                cache = self._cache.decode(positions, max(s.cached for s in running))
                logits.append(self.model(tokens, position_ids=positions[:, None], kv_cache=cache)[:, 0])
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
            self.stats["peak_kv_blocks"] = max(self.stats["peak_kv_blocks"], self._cache.used_blocks)
            updates = [self._advance(s, i, sampled) for i, s in enumerate(sequences)]
            self._release([s.slot for s in sequences if s.finish_reason is not None])
            return updates

    def _make_room(self) -> None:
        """Preempt the newest running sequences until every one left has a block for its next position."""
        cache = self._cache
        while self._running:
            needed = sum(cache.blocks_needed(s.slot, s.cached + 1) for s in self._running)
            if needed <= cache.free_blocks:
                return
            if len(self._running) == 1:  # _check_budget makes this unreachable; say so rather than loop
                raise RuntimeError(f"Engine: one sequence of {self._running[0].cached + 1} positions does not fit "
                                   f"kv_cache_tokens {self.kv_cache_tokens}")
            victim = max(self._running, key=lambda s: s.admitted)
            self._release([victim.slot])
            victim.cached, victim.slot = 0, -1
            self._waiting.appendleft(victim)  # first in line again: recomputed as soon as it fits
            self.stats["preempted"] += 1

    def _admit(self) -> list[_Sequence]:
        admitted: list[_Sequence] = []
        budget_used = 0
        cache, block = self._cache, self.kv_block_size
        # the blocks the running sequences need for their next token stay free: admission never preempts at once
        free_blocks = cache.free_blocks - sum(cache.blocks_needed(s.slot, s.cached + 1) for s in self._running)
        while self._waiting and len(self._running) < self.max_batch:
            sequence = self._waiting[0]
            length = len(sequence.prefill_ids)
            shares_prefill = (admitted and admitted[-1].request is sequence.request and not sequence.token_ids
                              and not admitted[-1].token_ids)
            cost = 0 if shares_prefill else length
            if admitted and budget_used + cost > self.max_prefill_tokens:
                break
            # blocks for its positions and its first decoded token (a sample sharing a prefill shares the full
            # blocks of the prompt and needs only the rest)
            blocks = -(-(length + 1) // block) - (length // block if shares_prefill else 0)
            if blocks > free_blocks:
                break
            free_blocks -= blocks
            budget_used += cost
            self._waiting.popleft()
            sequence.slot = len(self._running)
            sequence.admitted = next(self._admissions)
            self._running.append(sequence)
            admitted.append(sequence)
        return admitted

    def _prefill(self, admitted: list[_Sequence]) -> torch.Tensor:
        groups: list[list[_Sequence]] = []
        for sequence in admitted:
            if (groups and groups[-1][0].request is sequence.request and not sequence.token_ids
                    and not groups[-1][0].token_ids):
                groups[-1].append(sequence)
            else:
                groups.append([sequence])
        prompts = [g[0].prefill_ids for g in groups]
        first_logits = self._forward_prompts(prompts, [g[0].slot for g in groups])
        self.stats["prefill_tokens"] += sum(len(p) for p in prompts)
        self.stats["recomputed_tokens"] += sum(len(p) for g, p in zip(groups, prompts) if g[0].token_ids)
        rows = []
        for group_index, (group, prompt) in enumerate(zip(groups, prompts)):
            self._seen[group[0].slot] = False
            self._seen[group[0].slot, torch.tensor(prompt, device=self.device)] = True
            for sequence in group:
                if sequence is not group[0]:  # the n samples of a request share the prompt's K/V
                    self._cache.fork(group[0].slot, sequence.slot, len(prompt))
                    self._seen[sequence.slot] = self._seen[group[0].slot]
                sequence.cached = len(prompt)
                rows.append(group_index)
        return first_logits[torch.tensor(rows, device=self.device)]

    def _forward_prompts(self, prompts: list[list[int]], slots: list[int]) -> torch.Tensor:
        """Run the prompts as one packed row, write their K/V into cache slots `slots` (positions 0..len-1) and
        return the logits at each prompt's last token, (len(prompts), V)."""
        lengths = [len(p) for p in prompts]
        ids = torch.tensor([list(itertools.chain.from_iterable(prompts))], device=self.device)
        positions = torch.cat([torch.arange(n) for n in lengths]).to(self.device)
        cu_seqlens = torch.tensor([0, *itertools.accumulate(lengths)], device=self.device, dtype=torch.int32)
        slot_of_token = torch.repeat_interleave(torch.tensor(slots, device=self.device),
                                                torch.tensor(lengths, device=self.device))
        return self.model(ids, position_ids=positions[None], cu_seqlens=cu_seqlens, max_seqlen=max(lengths),
                          kv_cache=self._cache.prefill(slot_of_token, positions), logits_at=(cu_seqlens[1:] - 1).long())

    def _ensure_cache(self) -> None:
        if self._seen is None:
            self._seen = torch.zeros(self.max_batch, self.cfg.vocab_size, dtype=torch.bool, device=self.device)
        if self._cache is None:  # a given budget is allocated at once; the default one as blocks are needed
            self._cache = KVCache(self.cfg, self.max_batch, self.max_seq_len, self.device, self.dtype,
                                  block_size=self.kv_block_size, max_blocks=self.kv_cache_blocks,
                                  initial_blocks=self.kv_cache_blocks if self._preallocate else 0)

    @property
    def kv_cache(self) -> KVCache | None:
        """The paged KV cache (None before the first step): its pool, block tables and free list."""
        return self._cache

    def _release(self, slots: Sequence[int]) -> None:
        """Free finished (or aborted) sequences' blocks, moving the last running sequence into each hole."""
        for slot in sorted(set(slots), reverse=True):  # from the top: the last running sequence is never freed here
            last = len(self._running) - 1
            self._cache.free(slot)
            if slot != last:
                moved = self._running[last]
                self._cache.move(last, slot)
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
        for i, (ids, sp) in enumerate(zip(encoded, params)):
            self._check_budget(ids, sp, f"prompts[{i}]")
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


def load_engine(path: str | os.PathLike, backend: str = "auto", **kwargs: Any) -> Engine | VLLMEngine:
    """An engine for a checkpoint. backend: "seedcoder" (ours), "vllm" (BackendUnavailable when it cannot run), or
    "auto" (vLLM when installed on a GPU machine, ours otherwise). kwargs go to the chosen engine."""
    if backend not in ("auto", "seedcoder", "vllm"):
        raise ValueError(f"backend: expected 'auto', 'seedcoder' or 'vllm', got {backend!r}")
    if backend == "vllm" or (backend == "auto" and vllm_unavailable_reason() is None):
        return VLLMEngine.from_checkpoint(path, **kwargs)
    return Engine.from_checkpoint(path, **kwargs)


__all__ = ["Engine", "GenerationError", "SequenceUpdate", "find_eos_id", "load_engine"]
