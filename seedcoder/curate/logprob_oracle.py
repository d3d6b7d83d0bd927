"""The log-probability rater (oracle backend "logprob", `LogprobOracle`): any language model rates a file by the
probabilities it gives the ratings 0..10, with no answer to parse.

    oracle = make_oracle("logprob", checkpoint="runs/demo")                  # ours: a step, a run, an HF folder
    oracle = make_oracle("logprob", base_url="http://127.0.0.1:8000/v1")     # `seedcoder serve`, `vllm serve`
    oracle = LogprobOracle.from_model(model, tokenizer, name="round-1")      # a model already in memory
    result = oracle.rate([RatingRequest(id="a1", text=code, language="python", path="pkg/util.py")])[0]
    result.score, result.rating, result.distribution, result.entropy         # 6.84, 7, (p0, ..., p10), 1.52

The prompt is the request's rubric prompt (`rating.build_prompt`: the code rubric, or the web rubric for a
request with rubric="web"; both end by asking for `Rating: [[X]]`) followed by `Rating: [[`, the place where the
rater's answer gives its rating. Each candidate answer "k]]" (k = 0..10) is scored teacher-forced: its log-
probability given the prompt is the sum of its tokens' log-probabilities (so "10" is a sequence when the
tokenizer splits digits, as ours, Llama-3's and Qwen's do). The closing "]]" is part of every candidate: without
it, "1" would also hold the probability of "10" (and of "1.5", "12"...), and normalising would count that mass
twice; with it, "1]]" and "10]]" are different, complete answers. The 11 log-probabilities are normalised into
a distribution over the ratings (the probability left to other continuations is dropped); the result's `score`
is its expectation (a float, what the scorer learns), `rating` the expectation rounded half up, `entropy` the
distribution's (nats; ln 11 = 2.40 at most), `raw` the candidates' log-probabilities as JSON. No answer is
unparseable.

Tokens of a candidate. The prompt + candidate string is tokenized as one text, the way a server tokenizes an
echoed prompt; the candidate's tokens are those that hold any of its characters. That is exact when the
tokenizer does not merge across the boundary between `[[` and the digit (byte-level BPE with digits split, and
most others); a merged token would be scored whole.

Three ways to get the log-probabilities, one interface:
  * `checkpoint` (any path `seedcoder.checkpoint.load_model` resolves: a step folder, a checkpoints root or run
    folder, a Hugging Face folder) or `from_model` (a `seedcoder.model.Transformer` + tokenizer): the prompt is
    prefilled once into a KV cache (`seedcoder.model.KVCache`); the candidates' tokens form a small tree (0..9
    then "]]", "1" then "0" then "]]") decoded in depth-first order over the cache, one decode step per inner
    node for a batch of prompts at once: about 11 decode steps per batch instead of 11 forward passes per file.
    On CUDA with 16-bit weights a batch's prompts are prefilled together as one packed row (flash attention);
    elsewhere one prompt per forward. A prompt longer than the model's context has its code cut to fit.
  * `base_url`: any OpenAI-compatible /v1/completions endpoint that returns prompt log-probabilities with
    `echo` (vLLM, `seedcoder serve`): one request per file with the 11 prompt + candidate strings, `echo: true,
    max_tokens: 0, logprobs: 1`; the candidate's tokens are read from the end of the echoed tokens. At start a
    probe request checks that the endpoint answers, echoes log-probabilities and spells the ratings; otherwise
    an OracleError names base_url (`max_tokens = 1` for a server that refuses 0).
Results are cached on disk like the chat backends' (`cache_dir`: ResponseCache keyed by the model, the prompt
and the candidates), and a progress line reports long runs.

Bad input: a tokenizer that cannot spell the candidates (digits or "10" mapped to an unknown token, candidates
that tokenize the same) and an endpoint without log-probabilities are OracleErrors naming the model or base_url.

Torch is imported only by the checkpoint path (`seedcoder curate` and the endpoint path run without it).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

from seedcoder.curate.chat_oracles import ResponseCache, Retrier
from seedcoder.curate.rating import (
    DEFAULT_PROMPT_CHARS,
    RATING_SCALE,
    Oracle,
    OracleError,
    RatingRequest,
    RatingResult,
    build_prompt,
    invalid_request,
)
from seedcoder.progress import progress
from seedcoder.tokenizer import load_tokenizer

PROMPT_END = "Rating: [["  # the rubric prompt ends here; the rater's next characters are its rating
CLOSE = "]]"
RATINGS = tuple(range(RATING_SCALE[0], RATING_SCALE[1] + 1))
CANDIDATES = tuple(f"{rating}{CLOSE}" for rating in RATINGS)
CACHE_FORMAT = {"rater": "logprob", "prompt_end": PROMPT_END, "candidates": list(CANDIDATES), "version": 1}
DTYPE_NAMES = ("fp32", "bf16", "fp16")


# ------------------------------------------------------------------------------------------ the distribution
def rating_distribution(logprobs: Sequence[float]) -> tuple[list[float], float, float]:
    """(probabilities of 0..10, expectation, entropy in nats) from the candidates' log-probabilities."""
    if len(logprobs) != len(RATINGS):
        raise ValueError(f"rating_distribution: expected {len(RATINGS)} log-probabilities, got {len(logprobs)}")
    values = [float(v) for v in logprobs]
    if any(math.isnan(v) or v == math.inf for v in values) or all(v == -math.inf for v in values):
        raise ValueError(f"rating_distribution: log-probabilities must be finite or -inf, not all -inf: {values}")
    top = max(values)
    weights = [math.exp(v - top) for v in values]
    total = math.fsum(weights)
    probabilities = [w / total for w in weights]
    expectation = math.fsum(p * r for p, r in zip(probabilities, RATINGS))
    entropy = -math.fsum(p * math.log(p) for p in probabilities if p > 0)
    return probabilities, expectation, max(0.0, entropy)


def result_from_logprobs(request_id: str, logprobs: Sequence[float]) -> RatingResult:
    probabilities, expectation, entropy = rating_distribution(logprobs)
    mode = max(RATINGS, key=lambda r: probabilities[r - RATINGS[0]])
    rating = int(math.floor(expectation + 0.5))
    explanation = (f"log-prob rating: expectation {expectation:.2f} over 0-10, most likely {mode} "
                   f"(p = {probabilities[mode - RATINGS[0]]:.2f}), entropy {entropy:.2f} nats")
    raw = json.dumps({"candidates": list(CANDIDATES), "logprobs": [float(v) for v in logprobs]})
    return RatingResult(id=request_id, rating=rating, explanation=explanation, raw=raw, score=expectation,
                        distribution=tuple(probabilities), entropy=entropy)


# ------------------------------------------------------------------------------------------ tokens
def candidate_tokens(tokenizer: Any, prompt: str) -> list[tuple[list[int], int]]:
    """For each candidate: (token ids of prompt + candidate up to its last token, index of its first token), the
    candidate's tokens being those that hold any of its characters (module docstring)."""
    encodings = tokenizer.encode_batch([prompt + candidate for candidate in CANDIDATES])
    out = []
    for encoding in encodings:
        scored = [index for index, (_, end) in enumerate(encoding.offsets) if end > len(prompt)]
        if not scored:
            out.append((list(encoding.ids), len(encoding.ids)))
            continue
        out.append((list(encoding.ids[: scored[-1] + 1]), scored[0]))
    return out


def check_spelling(tokenizer: Any, what: str, vocab_size: int | None = None) -> None:
    """OracleError naming `what` (the model) unless its tokenizer spells each candidate after `Rating: [[` as
    distinct tokens that decode back to it (an unknown token decodes to something else)."""
    seen: dict[tuple[int, ...], str] = {}
    for candidate, (ids, first) in zip(CANDIDATES, candidate_tokens(tokenizer, PROMPT_END)):
        tokens = tuple(ids[first:])
        text = tokenizer.decode(list(tokens), skip_special_tokens=False) if tokens else ""
        if not tokens or not text.replace(" ", "").endswith(candidate):
            raise OracleError(f"backend 'logprob': the tokenizer of {what} cannot spell the rating {candidate!r}: it "
                              f"becomes token(s) {list(tokens)} that decode to {text!r} (digits or '10' unknown to "
                              "its vocabulary?)")
        if tokens in seen:
            raise OracleError(f"backend 'logprob': the tokenizer of {what} gives the ratings {seen[tokens]!r} and "
                              f"{candidate!r} the same tokens {list(tokens)}: it cannot tell them apart")
        if vocab_size is not None and max(tokens) >= vocab_size:
            raise OracleError(f"backend 'logprob': the tokenizer of {what} spells {candidate!r} with token id "
                              f"{max(tokens)}, outside the model's vocabulary of {vocab_size}")
        seen[tokens] = candidate


# ------------------------------------------------------------------------------------------ our model
class ModelScorer:
    """The candidates' log-probabilities from a `seedcoder.model.Transformer` (module docstring: prefill, then
    the candidates' token tree decoded over the KV cache)."""

    def __init__(self, model: Any, tokenizer: Any, *, name: str, batch_size: int = 8, max_batch_tokens: int = 32768,
                 max_seq_len: int | None = None):
        import torch

        from seedcoder.model import Transformer  # torch: imported only when a model rates (module docstring)

        if not isinstance(model, Transformer):
            raise OracleError(f"backend 'logprob': {name}: expected a seedcoder.model.Transformer, got "
                              f"{type(model).__name__}")
        tokenizer = getattr(tokenizer, "backend_tokenizer", tokenizer)
        if not hasattr(tokenizer, "encode_batch") or not hasattr(tokenizer, "decode"):
            raise OracleError(f"backend 'logprob': {name}: tokenizer must be a tokenizers.Tokenizer, got "
                              f"{type(tokenizer).__name__}")
        for option, value in (("batch_size", batch_size), ("max_batch_tokens", max_batch_tokens)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise OracleError(f"backend 'logprob': {option} must be a positive integer, got {value!r}")
        check_spelling(tokenizer, name, model.cfg.vocab_size)
        self.torch = torch
        self.model, self.tokenizer, self.name = model.eval(), tokenizer, name
        self.cfg = model.cfg
        self.device = model.tok_embeddings.weight.device
        self.dtype = model.tok_embeddings.weight.dtype
        self.batch_size, self.max_batch_tokens = batch_size, max_batch_tokens
        self.max_seq_len = int(max_seq_len or self.cfg.max_seq_len)
        self.pack = self.device.type == "cuda" and self.dtype in (torch.bfloat16, torch.float16)
        self.candidate_room = max(len(ids) - first for ids, first in candidate_tokens(tokenizer, PROMPT_END)) + 2
        self.directory: str | None = None  # the resolved checkpoint, when loaded from one

    def prompt_tokens(self, prompt: str) -> int:
        return len(self.tokenizer.encode(prompt).ids)

    def score(self, prompts: Sequence[str], on_done: Any = None) -> list[tuple[list[float] | None, str | None]]:
        """(the 11 candidates' log-probabilities, None) or (None, why not) per prompt, in order; on_done(k) after
        each batch of k prompts."""
        prepared = [self._prepare(prompt) for prompt in prompts]
        results: list[tuple[list[float] | None, str | None]] = [(None, problem) for _, problem in prepared]
        pending = [index for index, (item, _) in enumerate(prepared) if item is not None]
        batch: list[int] = []
        tokens = 0
        for index in [*pending, None]:
            size = len(prepared[index][0][0]) if index is not None else 0
            if batch and (index is None or len(batch) == self.batch_size or tokens + size > self.max_batch_tokens):
                for position, logprobs in zip(batch, self._score_batch([prepared[i][0] for i in batch])):
                    results[position] = (logprobs, None)
                if on_done is not None:
                    on_done(len(batch))
                batch, tokens = [], 0
            if index is not None:
                batch.append(index)
                tokens += size
        return results

    def _prepare(self, prompt: str) -> tuple[tuple[list[int], list[list[int]], list[int]] | None, str | None]:
        """(prefix ids shared by the candidates, each candidate's remaining ids, the index in those of its first
        scored token), or a problem."""
        encoded = candidate_tokens(self.tokenizer, prompt)
        shared = min(first for _, first in encoded)
        for ids, _ in encoded[1:]:
            shared = min(shared, next((i for i, (a, b) in enumerate(zip(ids, encoded[0][0])) if a != b), shared))
        if shared < 1:
            return None, "the prompt has no token before the rating to condition on"
        longest = max(len(ids) for ids, _ in encoded)
        if longest > self.max_seq_len:
            return None, f"the prompt + rating take {longest} tokens, over the model's max_seq_len {self.max_seq_len}"
        prefix = encoded[0][0][:shared]
        return (prefix, [ids[shared:] for ids, _ in encoded], [first - shared for _, first in encoded]), None

    def _score_batch(self, items: list[tuple[list[int], list[list[int]], list[int]]]) -> list[list[float]]:
        torch = self.torch
        from seedcoder.model import KVCache

        # The inner nodes of each prompt's candidate tree, in depth-first order (sorted tuples are a preorder: a
        # node's ancestors come before it and its subtree is contiguous), so that positions prefix..prefix+d-1
        # of its slot hold the node's ancestors when it is decoded at prefix + d.
        trees = [sorted({tuple(suffix[:depth]) for suffix in suffixes for depth in range(1, len(suffix))})
                 for _, suffixes, _ in items]
        depth = max(len(suffix) for _, suffixes, _ in items for suffix in suffixes)
        capacity = max(len(prefix) for prefix, _, _ in items) + depth
        with torch.inference_mode():
            cache = KVCache(self.cfg, len(items), capacity, self.device, self.dtype)
            rows: list[dict[tuple[int, ...], Any]] = [{} for _ in items]  # node -> log-probs of its next token
            for slot, logprobs in enumerate(self._prefill(cache, [prefix for prefix, _, _ in items])):
                rows[slot][()] = logprobs
            for step in range(max((len(tree) for tree in trees), default=0)):
                tokens, positions = [], []
                for (prefix, _, _), tree in zip(items, trees):
                    node = tree[step] if step < len(tree) else None
                    tokens.append(node[-1] if node else 0)  # a finished slot decodes a dummy it never reads
                    positions.append(len(prefix) + len(node) - 1 if node else len(prefix))
                token_tensor = torch.tensor(tokens, device=self.device)[:, None]
                position_tensor = torch.tensor(positions, device=self.device)
                logits = self.model(token_tensor, position_ids=position_tensor[:, None],
                                    kv_cache=cache.decode(position_tensor, max(positions)))[:, 0]
                logprobs = logits.float().log_softmax(-1).cpu()
                for slot, tree in enumerate(trees):
                    if step < len(tree):
                        rows[slot][tree[step]] = logprobs[slot]
        out = []
        for (_, suffixes, firsts), nodes in zip(items, rows):
            out.append([float(sum(nodes[tuple(suffix[:j])][suffix[j]].item() for j in range(first, len(suffix))))
                        for suffix, first in zip(suffixes, firsts)])
        return out

    def _prefill(self, cache: Any, prefixes: list[list[int]]) -> list[Any]:
        """Write each prefix's K/V into its slot (slot = its index); the log-probs after each prefix's last token."""
        torch = self.torch
        groups = [list(range(len(prefixes)))] if self.pack else [[slot] for slot in range(len(prefixes))]
        out: list[Any] = [None] * len(prefixes)
        for group in groups:
            lengths = [len(prefixes[slot]) for slot in group]
            ids = torch.tensor([[token for slot in group for token in prefixes[slot]]], device=self.device)
            positions = torch.cat([torch.arange(n) for n in lengths]).to(self.device)
            cu_seqlens = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
            slot_of_token = torch.repeat_interleave(torch.tensor(group), torch.tensor(lengths)).to(self.device)
            logits = self.model(ids, position_ids=positions[None], cu_seqlens=cu_seqlens, max_seqlen=max(lengths),
                                kv_cache=cache.prefill(slot_of_token, positions),
                                logits_at=(cu_seqlens[1:] - 1).long().to(self.device))
            for slot, row in zip(group, logits.float().log_softmax(-1).cpu()):
                out[slot] = row
        return out


def load_model_scorer(checkpoint: str, *, tokenizer: str | None, device: str | None, dtype: str | None,
                **options: Any) -> ModelScorer:
    """A ModelScorer for a checkpoint path (`seedcoder.checkpoint.load_model`); errors name the checkpoint."""
    import torch

    from seedcoder.checkpoint import load_model, load_tokenizer_for  # torch: only for this path

    if dtype is not None and dtype not in DTYPE_NAMES:
        raise OracleError(f"backend 'logprob': dtype must be one of {', '.join(DTYPE_NAMES)}, got {dtype!r}")
    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}.get(dtype or "")
    try:
        model, directory = load_model(checkpoint, device, torch_dtype)
        tokenizer_object = load_tokenizer_for(directory, tokenizer)
    except (OSError, ValueError, RuntimeError) as error:  # CheckpointError is a RuntimeError; a bad device too
        raise OracleError(f"backend 'logprob': checkpoint {checkpoint}: {error}") from None
    scorer = ModelScorer(model, tokenizer_object, name=f"checkpoint {checkpoint}", **options)
    scorer.directory = directory
    return scorer


def checkpoint_identity(directory: str) -> str:
    """What names a checkpoint's weights in cache keys: its resolved path and its files' sizes and mtimes (a
    checkpoints root's newer step, or weights rewritten in place, are another model)."""
    entries = []
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            stat = os.stat(path)
            entries.append(f"{name}:{stat.st_size}:{stat.st_mtime_ns}")
    return f"{os.path.realpath(directory)}|{';'.join(entries)}"


# ------------------------------------------------------------------------------------------ an endpoint
class EndpointUnusable(OracleError):
    """The endpoint cannot rate at all (no log-probabilities, no echo, a vocabulary without the ratings)."""


class EndpointScorer:
    """The candidates' log-probabilities from an OpenAI-compatible completions endpoint, through echo."""

    def __init__(self, base_url: str, model: str | None, *, api_key_env: str = "OPENAI_API_KEY", concurrency: int = 4,
                 max_retries: int = 4, backoff_s: float = 1.0, max_backoff_s: float = 30.0, timeout_s: float = 300.0,
                 max_tokens: int = 0, http_client: Any = None):
        import openai

        if concurrency < 1 or max_retries < 0 or backoff_s < 0 or not timeout_s > 0 or max_tokens not in (0, 1):
            raise OracleError("backend 'logprob': concurrency must be >= 1, max_retries and backoff_s >= 0, timeout_s "
                              f"> 0 and max_tokens 0 or 1; got {concurrency}, {max_retries}, {backoff_s}, {timeout_s}, "
                              f"{max_tokens}")
        self.base_url, self.concurrency, self.max_tokens = base_url, int(concurrency), int(max_tokens)
        self.client = openai.OpenAI(base_url=base_url, api_key=os.environ.get(api_key_env) or "EMPTY",
                                    timeout=float(timeout_s), max_retries=0, http_client=http_client)
        self.retrier = Retrier(openai, int(max_retries), float(backoff_s), float(max_backoff_s))
        if not model:
            listed, error = self.retrier.call(lambda: self.client.models.list())
            if error is not None or not getattr(listed, "data", None):
                raise OracleError(f"backend 'logprob': cannot list the models of the endpoint {base_url} "
                                  f"({error or 'none served'}); give `model`")
            model = listed.data[0].id
        self.model = model

    def probe(self) -> None:
        """OracleError naming base_url unless the endpoint answers an echo request with log-probabilities of tokens
        that spell the candidates."""
        logprobs, error = self.score_one(PROMPT_END)
        if error is not None:
            raise OracleError(f"backend 'logprob': the endpoint {self.base_url} (model {self.model!r}) failed the "
                              f"probe request (echo=true, max_tokens={self.max_tokens}, logprobs=1): {error}"
                              + ("; set backend_options.max_tokens = 1 if it refuses max_tokens 0"
                                 if self.max_tokens == 0 else ""))

    def score(self, prompts: Sequence[str], on_done: Any = None) -> list[tuple[list[float] | None, str | None]]:
        results: list[tuple[list[float] | None, str | None]] = [(None, "not rated")] * len(prompts)
        with ThreadPoolExecutor(max_workers=max(1, min(self.concurrency, len(prompts))),
                                thread_name_prefix="oracle-logprob") as pool:
            futures = {pool.submit(self.score_one, prompt): index for index, prompt in enumerate(prompts)}
            for future in as_completed(futures):
                results[futures[future]] = future.result()  # EndpointUnusable propagates: the rater cannot work
                if on_done is not None:
                    on_done(1)
        return results

    def score_one(self, prompt: str) -> tuple[list[float] | None, str | None]:
        joints = [prompt + candidate for candidate in CANDIDATES]
        response, error = self.retrier.call(lambda: self.client.completions.create(
            model=self.model, prompt=joints, echo=True, max_tokens=self.max_tokens, logprobs=1, temperature=0.0))
        if error is not None:
            return None, error
        choices = sorted(getattr(response, "choices", None) or [], key=lambda choice: choice.index)
        if len(choices) != len(CANDIDATES):
            raise EndpointUnusable(f"backend 'logprob': the endpoint {self.base_url} answered {len(choices)} choices for "
                                   f"{len(CANDIDATES)} prompts")
        return [self._candidate_logprob(choice, joint, candidate)
                for choice, joint, candidate in zip(choices, joints, CANDIDATES)], None

    def _candidate_logprob(self, choice: Any, joint: str, candidate: str) -> float:
        where = f"the endpoint {self.base_url} (model {self.model!r})"
        logprobs = choice.logprobs
        tokens = getattr(logprobs, "tokens", None)
        values = getattr(logprobs, "token_logprobs", None)
        if not tokens or values is None or len(values) != len(tokens):
            raise EndpointUnusable(f"backend 'logprob': {where} returned no log-probabilities of the prompt for "
                                   "echo=true, logprobs=1; the log-prob rater needs a completions endpoint that "
                                   "returns them (vLLM's and `seedcoder serve`'s /v1/completions do)")
        text = choice.text or ""
        if not text.startswith(joint):
            raise EndpointUnusable(f"backend 'logprob': {where} did not echo the prompt (echo=true): its text starts "
                                   f"{text[:40]!r}")
        # The prompt's tokens come first, then max_tokens generated ones (an end-of-sequence token included).
        prompt_tokens = tokens[: len(tokens) - self.max_tokens]
        end = sum(len(token) for token in prompt_tokens)  # the echoed tokens' texts end with the candidate
        start, position, picked = end - len(candidate), 0, []
        for index, token in enumerate(prompt_tokens):
            if position + len(token) > start:  # holds a character of the candidate
                picked.append(index)
            position += len(token)
        covered = "".join(prompt_tokens[index] for index in picked)
        if not picked or not covered.endswith(candidate):
            raise EndpointUnusable(f"backend 'logprob': {where} cannot spell the rating {candidate!r}: its echoed "
                                   f"tokens end {tokens[-4:]!r}")
        if any(values[index] is None for index in picked):
            raise EndpointUnusable(f"backend 'logprob': {where} gave no log-probability for a token of {candidate!r}")
        return float(sum(values[index] for index in picked))


# ------------------------------------------------------------------------------------------ the oracle
class LogprobOracle(Oracle):
    """Rates files by the probabilities a language model gives the ratings (module docstring).

    Options (the oracle step's `backend_options`): `checkpoint` or `base_url`, one of them.
      checkpoint: tokenizer (default: found with the checkpoint), device (default CUDA when present), dtype
        (fp32 / bf16 / fp16; default bf16 on CUDA, fp32 elsewhere), batch_size (prompts per batch, 8),
        max_batch_tokens (prompt tokens per batch, 32768), max_seq_len (default the model's).
      base_url: model (default: the endpoint's first listed model), api_key_env, concurrency (requests in
        flight, 4), max_retries, backoff_s, max_backoff_s, timeout_s (per request, 300), max_tokens (0; 1 for a
        server that refuses 0), probe (true: check the endpoint at start).
      both: cache_dir (on-disk cache of the candidates' log-probabilities), max_prompt_chars (code characters in
        the prompt, 32,000), progress (a progress line for long runs, true).
    """

    def __init__(self, *, checkpoint: str | None = None, tokenizer: str | None = None, device: str | None = None,
                 dtype: str | None = None, batch_size: int = 8, max_batch_tokens: int = 32768,
                 max_seq_len: int | None = None, base_url: str | None = None, model: str | None = None,
                 api_key_env: str = "OPENAI_API_KEY", concurrency: int = 4, max_retries: int = 4,
                 backoff_s: float = 1.0, max_backoff_s: float = 30.0, timeout_s: float = 300.0, max_tokens: int = 0,
                 probe: bool = True, cache_dir: str | None = None, max_prompt_chars: int = DEFAULT_PROMPT_CHARS,
                 progress: bool = True, http_client: Any = None):
        if (checkpoint is None) == (base_url is None):
            raise OracleError("backend 'logprob': give one of `checkpoint` (our checkpoint, a run folder or a Hugging "
                              "Face folder) and `base_url` (an OpenAI-compatible completions endpoint that returns "
                              f"log-probabilities), got {'both' if checkpoint is not None else 'neither'}")
        if checkpoint is not None:
            if model is not None or http_client is not None:
                raise OracleError("backend 'logprob': `model` and `http_client` go with `base_url`, not `checkpoint`")
            scorer: ModelScorer | EndpointScorer = load_model_scorer(
                os.fspath(checkpoint), tokenizer=tokenizer, device=device, dtype=dtype, batch_size=batch_size,
                max_batch_tokens=max_batch_tokens, max_seq_len=max_seq_len)
            identity = f"{checkpoint_identity(scorer.directory)}|{scorer.dtype}"
            name = f"logprob:{os.fspath(checkpoint)}"
        else:
            if tokenizer is not None or device is not None or dtype is not None:
                raise OracleError("backend 'logprob': `tokenizer`, `device` and `dtype` go with `checkpoint`; the "
                                  "endpoint's server has its own")
            scorer = EndpointScorer(base_url, model, api_key_env=api_key_env, concurrency=concurrency,
                                    max_retries=max_retries, backoff_s=backoff_s, max_backoff_s=max_backoff_s,
                                    timeout_s=timeout_s, max_tokens=max_tokens, http_client=http_client)
            if probe:
                scorer.probe()
            identity, name = f"endpoint|{scorer.model}", f"logprob:{scorer.model}"
        self._setup(scorer, name, identity, cache_dir=cache_dir, max_prompt_chars=max_prompt_chars, progress=progress)

    @classmethod
    def from_model(cls, model: Any, tokenizer: Any, *, name: str = "in-memory", cache_dir: str | None = None,
                   max_prompt_chars: int = DEFAULT_PROMPT_CHARS, progress: bool = True, **options: Any) -> LogprobOracle:
        """A rater over a `seedcoder.model.Transformer` already loaded and its tokenizer (a tokenizers.Tokenizer
        or a tokenizer.json path); options: batch_size, max_batch_tokens, max_seq_len. `name` names it and keys
        its cache entries: give each model its own."""
        if isinstance(tokenizer, (str, os.PathLike)):
            tokenizer = load_tokenizer(tokenizer)
        oracle = cls.__new__(cls)
        scorer = ModelScorer(model, tokenizer, name=f"model {name!r}", **options)
        oracle._setup(scorer, f"logprob:{name}", f"in-memory|{name}|{scorer.dtype}", cache_dir=cache_dir,
                      max_prompt_chars=max_prompt_chars, progress=progress)
        return oracle

    def _setup(self, scorer: ModelScorer | EndpointScorer, name: str, identity: str, *, cache_dir: str | None,
               max_prompt_chars: int, progress: bool) -> None:
        if isinstance(max_prompt_chars, bool) or not isinstance(max_prompt_chars, int) or max_prompt_chars < 1:
            raise OracleError(f"backend 'logprob': max_prompt_chars must be a positive integer, got {max_prompt_chars!r}")
        self.scorer, self.name, self.identity = scorer, name, identity
        self.max_prompt_chars, self.show_progress = max_prompt_chars, bool(progress)
        self.cache = ResponseCache(cache_dir) if cache_dir else None
        self.cache_hits = 0

    def prompt(self, request: RatingRequest) -> str:
        """The request's rubric prompt ending in `Rating: [[`; for our model, the code (or page text) cut until it
        fits the context."""
        max_chars = self.max_prompt_chars
        prompt = build_prompt(request, max_chars=max_chars) + PROMPT_END
        if isinstance(self.scorer, ModelScorer):
            limit = self.scorer.max_seq_len - self.scorer.candidate_room
            overhead = None  # tokens of the prompt around the text (the rubric, the truncation note)
            for _ in range(8):
                tokens = self.scorer.prompt_tokens(prompt)
                shown = min(len(request.text), max_chars)
                if tokens <= limit or shown <= 1:
                    break
                if overhead is None:
                    empty = build_prompt(dataclasses.replace(request, text=""), max_chars=max_chars) + PROMPT_END
                    overhead = self.scorer.prompt_tokens(empty) + self.scorer.prompt_tokens(
                        f"\n... [truncated: the first {shown:,} of {len(request.text):,} characters are shown]")
                # scale the text (not the whole prompt) to the room the rubric leaves
                text_tokens, room = max(tokens - overhead, 1), max(limit - overhead, 1)
                max_chars = max(1, min(shown - 1, int(shown * room / text_tokens * 0.95)))
                prompt = build_prompt(request, max_chars=max_chars) + PROMPT_END
        return prompt

    def rate(self, requests: Sequence[RatingRequest]) -> list[RatingResult]:
        results: list[RatingResult | None] = [None] * len(requests)
        pending: list[tuple[int, str, str | None]] = []  # (position, prompt, cache key)
        for position, request in enumerate(requests):
            problem = invalid_request(request)
            if problem is not None:
                results[position] = RatingResult(id=request.id, rating=None, explanation="", raw="", error=problem)
                continue
            prompt = self.prompt(request)
            key = ResponseCache.key(self.identity, prompt, CACHE_FORMAT) if self.cache else None
            cached = self.cache.get(key) if self.cache else None
            logprobs = _cached_logprobs(cached)
            if logprobs is not None:
                self.cache_hits += 1
                results[position] = result_from_logprobs(request.id, logprobs)
            else:
                pending.append((position, prompt, key))
        if pending:
            with progress(len(pending), f"oracle {self.name}", unit="file", enabled=self.show_progress) as bar:
                scored = self.scorer.score([prompt for _, prompt, _ in pending], on_done=bar.update)
            for (position, _, key), (logprobs, error) in zip(pending, scored):
                request_id = requests[position].id
                if error is not None or logprobs is None:
                    results[position] = RatingResult(id=request_id, rating=None, explanation="", raw="",
                                                     error=f"request failed: {error}")
                    continue
                if self.cache is not None:
                    self.cache.put(key, json.dumps(logprobs), model=self.identity, sampling=CACHE_FORMAT)
                results[position] = result_from_logprobs(request_id, logprobs)
        return results  # type: ignore[return-value]


def _cached_logprobs(answer: str | None) -> list[float] | None:
    """The log-probabilities stored in a cache entry, or None (a miss, or an entry of another format)."""
    if answer is None:
        return None
    try:
        values = json.loads(answer)
    except ValueError:
        return None
    if not isinstance(values, list) or len(values) != len(CANDIDATES):
        return None
    if not all(isinstance(v, (int, float)) or v is None for v in values):
        return None
    return [-math.inf if v is None else float(v) for v in values]


__all__ = ["CANDIDATES", "CLOSE", "PROMPT_END", "EndpointScorer", "EndpointUnusable", "LogprobOracle", "ModelScorer",
           "candidate_tokens", "check_spelling", "checkpoint_identity", "load_model_scorer", "rating_distribution",
           "result_from_logprobs"]
