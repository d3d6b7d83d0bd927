"""The quality scorer (curation steps scorer_train and score): our Llama + a regression head, and its inference.

    from seedcoder.curate.scorer import load_scorer
    scorer = load_scorer("runs/scorer")                     # written by seedcoder.curate.scorer_train.train_scorer
    scores = scorer.score(texts, languages, paths)          # float32 numpy array on the 0..10 scale

    torchrun --nproc_per_node=8 -m seedcoder.cli curate score --in DATASET --scorer runs/scorer --out runs/scored

Model. The backbone is `seedcoder.model.Transformer` (from a base checkpoint in training, see
`seedcoder.curate.scorer_train`). Its LM head is replaced by `FinalHiddenStates`, so the model returns the final
hidden states (after the final RMSNorm) and never computes vocabulary logits; the regression head is
`nn.Linear(dim, 1)` on the hidden state of the LAST token of each row (the end marker), squashed by a sigmoid into
[0, 1] (a sigmoid rather than a clamp: the output is always in range and the gradient never stops at the
boundary). Scores come back as 10 * sigmoid, float32 on the 0..10 scale of the shards' `score` field.

Prompt format (the same function, `encode_prompts`, builds training and inference inputs):

    <bos>language: {language}\\npath: {path}\\n---\\n{the head of the file}<eos>

`<bos>` is left out when the tokenizer has none; the header is tokenized on its own (the path cut to its last
128 characters, the header to at most half the context), then the file's tokens, then `<eos>`, whose hidden
state the head reads. Files longer than the scorer's context (`max_tokens`, 1024 by default) keep their HEAD:
the text is first cut to 16 characters per token of context (a bound that only saves tokenizing megabytes that
would be dropped anyway), tokenized, and its tokens cut so that the whole prompt is `max_tokens` long. Rows are
padded on the right; attention is causal, so padding never changes what the last real token sees.

Scorer directory (`save_scorer`, written atomically; `load_scorer` reads it): model_config.json, scorer.json
(format, prompt format, provenance), tokenizer.json (the training tokenizer, copied so inference uses the very
same one) and the weights as a torch.distributed.checkpoint.

Inference (`Scorer.score`): prompts encoded in one batched tokenizer call, rows sorted by length (longest first)
and run `batch_size` at a time, padded to the longest in the batch; files/s printed to stderr. On CUDA the
weights are cast to bfloat16 for inference (training keeps float32). Scoring a dataset, on one process or over
torchrun ranks (shard i on rank i mod world size), is the curation step `score` (`seedcoder.curate.score`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import get_model_state_dict

from seedcoder import checkpoint as ckpt
from seedcoder.curate.errors import CurateConfigError
from seedcoder.fileio import atomic_write, atomic_write_text
from seedcoder.model import ModelConfig, Transformer
from seedcoder.progress import progress
from seedcoder.tokenizer import EOS_NAMES, TOKENIZER_FILE, TokenizerError, load_tokenizer

SCORER_FORMAT = "seedcoder-scorer"
SCORER_VERSION = 1
PROMPT_FORMAT = "v1: <bos>language: {language}\\npath: {path}\\n---\\n{head of the file}<eos>"
SCORER_DIR = "scorer"
SCORER_META = "scorer.json"
RATING_MAX = 10.0
CHARS_PER_TOKEN_BOUND = 16  # the text is cut to this many characters per context token before tokenizing
MAX_PATH_CHARS = 128
BOS_NAMES = ("<[begin▁of▁sentence]>", "<|begin_of_text|>", "<s>", "<bos>", "<|startoftext|>")
PAD_NAMES = ("<[PAD▁TOKEN]>", "<pad>", "<|pad|>", "[PAD]")


class ScorerError(CurateConfigError):
    """A bad argument to the scorer (rows, checkpoint, tokenizer, options) or an unusable scorer directory;
    the message names the argument and the problem."""


# ------------------------------------------------------------------------------------------ model
class FinalHiddenStates(nn.Module):
    """Stands in for `Transformer.output`: returns the final-normed hidden states, so no logits are computed."""

    def forward(self, hidden: torch.Tensor, labels: torch.Tensor | None = None, reduction: str = "sum") -> torch.Tensor:
        if labels is not None:
            raise ValueError("the scorer backbone has no LM head: call it without labels")
        return hidden


class ScorerModel(nn.Module):
    """Transformer backbone (without its LM head) + a linear regression head on the last real token.

    forward(input_ids (B, S), lengths (B,)) -> (B,) float32 predictions in [0, 1] (sigmoid). Rows are padded on
    the right; lengths[i] is the number of real tokens of row i, so the head reads position lengths[i] - 1.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.backbone = Transformer(cfg)
        self.backbone.output = FinalHiddenStates()
        self.head = nn.Linear(cfg.dim, 1)

    @classmethod
    def empty(cls, cfg: ModelConfig, device: torch.device) -> ScorerModel:
        """Allocated on `device`, uninitialized (built on the meta device: the vocab x dim LM head never exists)."""
        with torch.device("meta"):
            model = cls(cfg)
        return model.to_empty(device=device)

    def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        hidden = self.backbone(input_ids)
        rows = torch.arange(input_ids.shape[0], device=input_ids.device)
        last = hidden[rows, lengths.to(input_ids.device) - 1]
        logit = nn.functional.linear(last.float(), self.head.weight.float(), self.head.bias.float()).squeeze(-1)
        return torch.sigmoid(logit)


@contextlib.contextmanager
def quiet_dcp():
    """torch.distributed.checkpoint warns that a call without a process group is single-process: it is."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


# ------------------------------------------------------------------------------------------ prompts
@dataclass(frozen=True)
class PromptFormat:
    """How a file becomes the scorer's input ids (see the module docstring). The same for training and inference."""

    max_tokens: int
    eos_id: int
    bos_id: int | None
    pad_id: int

    def header(self, language: str | None, path: str | None) -> str:
        return f"language: {language or 'unknown'}\npath: {(path or '')[-MAX_PATH_CHARS:]}\n---\n"

    def to_dict(self) -> dict[str, Any]:
        return {"template": PROMPT_FORMAT, **dataclasses.asdict(self), "chars_per_token_bound": CHARS_PER_TOKEN_BOUND,
                "max_path_chars": MAX_PATH_CHARS}


def _find_token(tokenizer, names: Sequence[str]) -> int | None:
    for name in names:
        token_id = tokenizer.token_to_id(name)
        if token_id is not None:
            return int(token_id)
    return None


def prompt_format_for(tokenizer, max_tokens: int, *, tokenizer_path: str = "tokenizer") -> PromptFormat:
    """The PromptFormat of a tokenizer: its <eos> (required), <bos> and pad tokens (optional; pad defaults to eos)."""
    eos = _find_token(tokenizer, EOS_NAMES)
    if eos is None:
        raise ScorerError(f"argument 'tokenizer': {tokenizer_path} has no end-of-sequence token "
                          f"(tried {', '.join(EOS_NAMES)})")
    pad = _find_token(tokenizer, PAD_NAMES)
    return PromptFormat(max_tokens=max_tokens, eos_id=eos, bos_id=_find_token(tokenizer, BOS_NAMES),
                        pad_id=eos if pad is None else pad)


def encode_prompts(tokenizer, fmt: PromptFormat, texts: Sequence[str], languages: Sequence[str | None],
                   paths: Sequence[str | None]) -> list[np.ndarray]:
    """The input ids (int64 arrays of 2..max_tokens tokens) of each file: header, head of the file, <eos>."""
    headers = tokenizer.encode_batch([fmt.header(language, path) for language, path in zip(languages, paths)],
                                     add_special_tokens=False)
    char_limit = fmt.max_tokens * CHARS_PER_TOKEN_BOUND
    bodies = tokenizer.encode_batch([text[:char_limit] for text in texts], add_special_tokens=False)
    start = [] if fmt.bos_id is None else [fmt.bos_id]
    header_limit = fmt.max_tokens // 2
    prompts = []
    for header, body in zip(headers, bodies):
        prefix = start + header.ids[:header_limit]
        budget = fmt.max_tokens - len(prefix) - 1
        prompts.append(np.asarray(prefix + body.ids[:budget] + [fmt.eos_id], dtype=np.int64))
    return prompts


def pad_batch(prompts: Sequence[np.ndarray], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids (B, longest) padded on the right with pad_id, lengths (B,))."""
    lengths = np.fromiter((len(p) for p in prompts), dtype=np.int64, count=len(prompts))
    ids = np.full((len(prompts), int(lengths.max())), pad_id, dtype=np.int64)
    for row, prompt in enumerate(prompts):
        ids[row, : len(prompt)] = prompt
    return torch.from_numpy(ids), torch.from_numpy(lengths)


def load_tokenizer_file(path: str, argument: str):
    """`seedcoder.tokenizer.load_tokenizer`, failing with a ScorerError that names `argument`."""
    try:
        return load_tokenizer(path)
    except TokenizerError as error:
        raise ScorerError(f"argument {argument!r}: {error}") from None


# ------------------------------------------------------------------------------------------ inference
def default_device(device: str | torch.device | None) -> torch.device:
    """`device`, or CUDA when available, else CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class Scorer:
    """A trained scorer: `score(texts, languages, paths)` -> float32 scores on the 0..10 scale."""

    def __init__(self, model: ScorerModel, tokenizer, prompt: PromptFormat, *, name: str = "scorer"):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.prompt = prompt
        self.name = name
        self.device = next(model.parameters()).device
        self.last_stats: dict[str, float] = {}

    def encode(self, texts: Sequence[str], languages: Sequence[str | None],
               paths: Sequence[str | None]) -> list[np.ndarray]:
        return encode_prompts(self.tokenizer, self.prompt, texts, languages, paths)

    def score(self, texts: Sequence[str], languages: Sequence[str | None], paths: Sequence[str | None], *,
              batch_size: int = 16, sort_by_length: bool = True, verbose: bool = True) -> np.ndarray:
        """Scores (float32, 0..10) of the files, in input order. Rows run `batch_size` at a time, longest first
        (sort_by_length=False keeps the input order: for benchmarks); with `verbose`, progress and then a files/s
        line go to stderr."""
        _check_inputs(texts, languages, paths)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ScorerError(f"argument 'batch_size': expected a positive integer, got {batch_size!r}")
        started = time.perf_counter()
        scores = np.empty(len(texts), dtype=np.float32)
        if not len(texts):
            return scores
        prompts = self.encode(texts, languages, paths)
        lengths = np.fromiter((len(p) for p in prompts), dtype=np.int64, count=len(prompts))
        order = np.argsort(-lengths, kind="stable") if sort_by_length else np.arange(len(prompts))
        padded_tokens = 0
        with torch.inference_mode(), progress(len(texts), "scorer", unit="file", enabled=verbose) as bar:
            for start in range(0, len(order), batch_size):
                rows = order[start: start + batch_size]
                input_ids, row_lengths = pad_batch([prompts[i] for i in rows], self.prompt.pad_id)
                padded_tokens += input_ids.numel()
                predictions = self.model(input_ids.to(self.device, non_blocking=True), row_lengths)
                scores[rows] = predictions.float().cpu().numpy() * RATING_MAX
                bar.update(len(rows))
        seconds = time.perf_counter() - started
        self.last_stats = {"files": float(len(texts)), "seconds": seconds, "files_per_s": len(texts) / seconds,
                           "tokens": float(lengths.sum()), "padded_tokens": float(padded_tokens)}
        if verbose:
            print(f"scorer: {len(texts):,} files, {int(lengths.sum()):,} tokens in {seconds:.2f} s: "
                  f"{len(texts) / seconds:,.1f} files/s on {self.device.type} "
                  f"(padding {100 * (1 - lengths.sum() / max(1, padded_tokens)):.1f}% of the batch tokens)",
                  file=sys.stderr, flush=True)
        return scores


def _check_inputs(texts, languages, paths) -> None:
    for name, values in (("texts", texts), ("languages", languages), ("paths", paths)):
        if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
            raise ScorerError(f"argument {name!r}: expected a sequence of strings, got {type(values).__name__}")
    if not len(texts) == len(languages) == len(paths):
        raise ScorerError(f"arguments 'texts', 'languages', 'paths': lengths differ ({len(texts)}, {len(languages)}, "
                          f"{len(paths)})")
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise ScorerError(f"argument 'texts': item {index} is {type(text).__name__}, not a string")


def _scorer_dir(out_dir: str) -> str:
    out_dir = os.fspath(out_dir)
    for candidate in (os.path.join(out_dir, SCORER_DIR), out_dir):
        if os.path.isfile(os.path.join(candidate, SCORER_META)):
            return candidate
    raise ScorerError(f"argument 'out_dir': {out_dir} holds no trained scorer (no {SCORER_DIR}/{SCORER_META}; "
                      "train one with train_scorer)")


def load_scorer(out_dir: str, device: str | torch.device | None = None) -> Scorer:
    """The scorer that `train_scorer(out_dir=...)` wrote (out_dir, or its scorer/ folder). device: default CUDA when
    available, else CPU; on CUDA the weights are cast to bfloat16."""
    directory = _scorer_dir(out_dir)
    try:
        with open(os.path.join(directory, SCORER_META), encoding="utf-8") as file:
            meta = json.load(file)
        if meta.get("format") != SCORER_FORMAT or meta.get("version") != SCORER_VERSION:
            raise ValueError(f"not a {SCORER_FORMAT} v{SCORER_VERSION} file")
        cfg = ModelConfig.from_dict(meta["model_config"])
        prompt = PromptFormat(**{key: meta["prompt"][key] for key in ("max_tokens", "eos_id", "bos_id", "pad_id")})
    except (OSError, ValueError, KeyError, TypeError) as error:
        where = os.path.join(directory, SCORER_META)
        raise ScorerError(f"argument 'out_dir': {where} is unreadable: {error}") from None
    tokenizer = load_tokenizer_file(os.path.join(directory, TOKENIZER_FILE), "out_dir")
    device = default_device(device)
    model = ScorerModel.empty(cfg, device)
    load_model_weights(directory, model, "out_dir")
    if device.type == "cuda":
        model.backbone.to(torch.bfloat16)  # the head stays float32 (ScorerModel.forward casts the hidden state)
    return Scorer(model, tokenizer, prompt, name=f"scorer:{directory}")


def load_model_weights(directory: str, model: nn.Module, argument: str) -> None:
    """The "model" entries of checkpoint `directory` into `model` (`seedcoder.checkpoint.load_model_only`), failing
    with a ScorerError that names `argument`."""
    try:
        ckpt.load_model_only(directory, model)
    except ckpt.CheckpointError as error:
        raise ScorerError(f"argument {argument!r}: {error}") from None


def save_scorer(out_dir: str, model: ScorerModel, tokenizer_path: str, prompt: PromptFormat,
                provenance: Mapping[str, Any]) -> str:
    """Write out_dir/scorer/ atomically (built in a temporary sibling, renamed when complete); load_scorer reads it."""
    final = os.path.join(out_dir, SCORER_DIR)
    temp = os.path.join(out_dir, f".{SCORER_DIR}.tmp")
    shutil.rmtree(temp, ignore_errors=True)
    os.makedirs(temp)
    with quiet_dcp():
        dcp.save({"model": get_model_state_dict(model)}, checkpoint_id=temp, no_dist=True)
    with open(tokenizer_path, "rb") as source:
        body = source.read()
    atomic_write(os.path.join(temp, TOKENIZER_FILE), lambda file: file.write(body))
    meta = {"format": SCORER_FORMAT, "version": SCORER_VERSION, "model_config": model.cfg.to_dict(),
            "prompt": prompt.to_dict(), "head": "linear(dim, 1) on the last token's final hidden state, sigmoid, x10",
            **provenance}
    atomic_write_text(os.path.join(temp, ckpt.MODEL_CONFIG_NAME), json.dumps(model.cfg.to_dict(), indent=1) + "\n")
    atomic_write_text(os.path.join(temp, SCORER_META), json.dumps(meta, indent=1) + "\n")
    if os.path.exists(final):
        shutil.rmtree(final)
    os.rename(temp, final)
    return final


__all__ = [
    "FinalHiddenStates",
    "PromptFormat",
    "Scorer",
    "ScorerError",
    "ScorerModel",
    "encode_prompts",
    "load_scorer",
    "pad_batch",
    "prompt_format_for",
    "save_scorer",
]

