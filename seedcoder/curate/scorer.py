"""The quality scorer (curation steps 6 and 7): our Llama model plus a regression head, trained on oracle ratings.

    from seedcoder.curate.scorer import train_scorer, load_scorer
    metrics = train_scorer(rated, checkpoint="runs/demo", out_dir="runs/scorer")   # rated: a pyarrow.Table with
    print(metrics["mae"], metrics["buckets"])                                       # text, language, path, rating
    scorer = load_scorer("runs/scorer")
    scores = scorer.score(texts, languages, paths)          # float32 numpy array on the 0..10 scale

    torchrun --nproc_per_node=8 -m seedcoder.curate.scorer score --scorer runs/scorer --out runs/scores data/*.parquet
    python -m seedcoder.curate.scorer train --rows rated.parquet --checkpoint runs/demo --out runs/scorer

Model. The backbone is `seedcoder.model.Transformer` built from a checkpoint's `model_config.json` and weights:
one of our checkpoints (a `step-N` directory of the trainer, a trainer's `checkpoints/` folder or run folder,
whose newest complete checkpoint is taken, or a Hugging Face model converted with `seedcoder convert --from-hf`).
Its LM head is replaced by `FinalHiddenStates`, so the model returns the final hidden states (after the final
RMSNorm) and never computes vocabulary logits; the regression head is `nn.Linear(dim, 1)` on the hidden state of
the LAST token of each row (the end marker), squashed by a sigmoid into [0, 1]. Ratings 0..10 are trained as
rating / 10 with MSE against the sigmoid output (a sigmoid rather than a clamp: the output is always in range and
the gradient never stops at the boundary); scores come back as 10 * sigmoid, float32 on the 0..10 scale of the
shards' `score` field. `checkpoint=None` starts from a randomly initialized preset (`model`, tests / benchmarks).

Prompt format (the same function, `encode_prompts`, builds training and inference inputs):

    <bos>language: {language}\\npath: {path}\\n---\\n{the head of the file}<eos>

`<bos>` is left out when the tokenizer has none; the header is tokenized on its own (the path cut to its last
128 characters, the header to at most half the context), then the file's tokens, then `<eos>`, whose hidden
state the head reads. Files longer than the scorer's context (`max_tokens`, 1024 by default) keep their HEAD:
the text is first cut to 16 characters per token of context (a bound that only saves tokenizing megabytes that
would be dropped anyway), tokenized, and its tokens cut so that the whole prompt is `max_tokens` long. The
tokenizer is the dataset's `tokenizer.json` (found next to the checkpoint, or through the trainer's config for
a trainer checkpoint, or given); it is copied into the scorer so inference uses the very same one.

Training (`train_scorer`): a deterministic held-out split (`eval_fraction`, 10%, by a hash of each row's `id`,
or of path + text without an id column); one epoch by default (`steps` overrides), AdamW from the trainer
(`seedcoder.train.build_optimizer`: decay on matrices only) with the project's LR schedule (`seedcoder.lr_schedule`,
cosine after a linear warmup), gradient clipping, one log line + a metrics.jsonl record per step
(`seedcoder.metrics.MetricsLogger`). Batches: each epoch shuffles the rows (seeded), sorts windows of 16 batches
by length and shuffles the batches, so rows in a batch have similar lengths (little padding). Rows are padded on
the right; attention is causal, so padding never changes what the last real token sees. Checkpoints
(`seedcoder.checkpoint`, model + optimizer) every `checkpoint_interval` steps under out_dir/checkpoints; rerunning
the same call after a kill resumes from the newest one and ends with bitwise the same weights as an uninterrupted
run on the same device and thread count (the data order is a function of the step). A finished out_dir
(metrics.json present, same settings) is returned as it is; other settings in an out_dir that holds a run raise.

Outputs in out_dir, every file written atomically: scorer/ (model_config.json, scorer.json, tokenizer.json and
the weights as a torch.distributed.checkpoint), metrics.jsonl (per step), loss.png, eval_predictions.parquet
(id, language, path, rating, prediction of every held-out row), and metrics.json, written last: MAE overall and
per rating bucket (0-2, 3-4, 5-6, 7-8, 9-10) on the 0..10 scale, the MAE of predicting the training mean for
reference, Pearson r (`pearson_r`), counts and settings. The held-out predictions come from
`load_scorer(out_dir).score`, the inference path itself.

Inference (`Scorer.score`): prompts encoded in one batched tokenizer call, rows sorted by length (longest first)
and run `batch_size` at a time, padded to the longest in the batch; files/s printed to stderr. On CUDA the
weights are cast to bfloat16 for inference (training keeps float32). `score_parquet` splits the rows of parquet
files over torchrun ranks (row i goes to rank i mod world size, like DistributedSampler without padding); each
rank writes its part atomically and skips a part that is already there; `read_scores` joins them in row order.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import math
import os
import shutil
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from torch import nn

from seedcoder import checkpoint as ckpt
from seedcoder.curate.errors import CurateConfigError
from seedcoder.fileio import atomic_write, atomic_write_text
from seedcoder.model import ModelConfig, Transformer, model_config
from seedcoder.progress import progress
from seedcoder.tokenizer import EOS_NAMES, TokenizerError, load_tokenizer

SCORER_FORMAT = "seedcoder-scorer"
SCORER_VERSION = 1
PROMPT_FORMAT = "v1: <bos>language: {language}\\npath: {path}\\n---\\n{head of the file}<eos>"
METRICS_FORMAT = "seedcoder-scorer-metrics"
SCORER_DIR = "scorer"
SCORER_META = "scorer.json"
TOKENIZER_FILE = "tokenizer.json"
METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "eval_predictions.parquet"
CHECKPOINTS_DIR = "checkpoints"
RATING_MAX = 10.0
BUCKETS = (("0-2", 0.0, 2.5), ("3-4", 2.5, 4.5), ("5-6", 4.5, 6.5), ("7-8", 6.5, 8.5), ("9-10", 8.5, 10.0))
CHARS_PER_TOKEN_BOUND = 16  # the text is cut to this many characters per context token before tokenizing
MAX_PATH_CHARS = 128
MIN_MAX_TOKENS = 16
LENGTH_SORT_WINDOW = 16  # batches per window sorted by length in training
REQUIRED_COLUMNS = ("text", "language", "path", "rating")
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
def _quiet_dcp():
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


def _load_tokenizer(path: str, argument: str):
    try:
        return load_tokenizer(path)
    except TokenizerError as error:
        raise ScorerError(f"argument {argument!r}: {error}") from None


# ------------------------------------------------------------------------------------------ inference
def _default_device(device: str | torch.device | None) -> torch.device:
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
    tokenizer = _load_tokenizer(os.path.join(directory, TOKENIZER_FILE), "out_dir")
    device = _default_device(device)
    model = ScorerModel.empty(cfg, device)
    _load_model_weights(directory, model, "out_dir")
    if device.type == "cuda":
        model.backbone.to(torch.bfloat16)  # the head stays float32 (ScorerModel.forward casts the hidden state)
    return Scorer(model, tokenizer, prompt, name=f"scorer:{directory}")


def _load_model_weights(directory: str, model: nn.Module, argument: str) -> None:
    try:
        ckpt.load_model_only(directory, model)
    except ckpt.CheckpointError as error:
        raise ScorerError(f"argument {argument!r}: {error}") from None


# ------------------------------------------------------------------------------------------ base checkpoints
def _check_context(max_tokens: int, cfg: ModelConfig) -> None:
    if max_tokens > cfg.max_seq_len:
        raise ScorerError(f"argument 'max_tokens': {max_tokens} exceeds the model's max_seq_len {cfg.max_seq_len}")


def _base_model_config(checkpoint_dir: str) -> ModelConfig:
    try:
        return ModelConfig.from_dict(ckpt.read_model_config(checkpoint_dir))
    except (ckpt.CheckpointError, ValueError) as error:
        raise ScorerError(f"argument 'checkpoint': {checkpoint_dir}: {error}") from None


def _load_backbone(checkpoint_dir: str, model: ScorerModel) -> None:
    from seedcoder.hf_convert import ConvertError, load_model_state

    try:
        with _quiet_dcp():
            load_model_state(checkpoint_dir, model.backbone)  # every backbone weight; the LM head is not read
    except (ConvertError, RuntimeError, ValueError) as error:
        raise ScorerError(f"argument 'checkpoint': cannot load the weights of {checkpoint_dir}: {error}") from None


# ------------------------------------------------------------------------------------------ rows
@dataclass
class RatedRows:
    ids: list[str]
    texts: list[str]
    languages: list[str]
    paths: list[str]
    ratings: np.ndarray  # float64, 0..10

    def take(self, index: np.ndarray) -> RatedRows:
        return RatedRows([self.ids[i] for i in index], [self.texts[i] for i in index],
                         [self.languages[i] for i in index], [self.paths[i] for i in index], self.ratings[index])

    def __len__(self) -> int:
        return len(self.texts)


def rated_rows(rows: pa.Table) -> RatedRows:
    """Validate the training table (columns text, language, path, rating 0..10; optional id)."""
    if not isinstance(rows, pa.Table):
        raise ScorerError(f"argument 'rows': expected a pyarrow.Table, got {type(rows).__name__}")
    missing = [name for name in REQUIRED_COLUMNS if name not in rows.column_names]
    if missing:
        raise ScorerError(f"argument 'rows': missing column(s) {', '.join(map(repr, missing))} "
                          f"(has {', '.join(map(repr, rows.column_names)) or 'none'})")
    if rows.num_rows < 2:
        raise ScorerError(f"argument 'rows': {rows.num_rows} row(s); a scorer needs at least 2 (train + held-out)")
    rating_type = rows.schema.field("rating").type
    if not (pa.types.is_integer(rating_type) or pa.types.is_floating(rating_type)):
        raise ScorerError(f"argument 'rows': column 'rating' must be numeric (0..10), got {rating_type}")
    texts = rows.column("text").to_pylist()
    bad_text = [i for i, text in enumerate(texts) if not isinstance(text, str)]
    if bad_text:
        raise ScorerError(f"argument 'rows': column 'text' has {len(bad_text)} null or non-string value(s) "
                          f"(rows {', '.join(map(str, bad_text[:5]))})")
    ratings = np.asarray(rows.column("rating").to_numpy(zero_copy_only=False), dtype=np.float64)
    null = np.flatnonzero(~np.isfinite(ratings))
    if len(null):
        raise ScorerError(f"argument 'rows': column 'rating' has {len(null)} null or non-finite value(s) (rows "
                          f"{', '.join(map(str, null[:5]))}); drop unrated rows first")
    outside = np.flatnonzero((ratings < 0) | (ratings > RATING_MAX))
    if len(outside):
        shown = ", ".join(f"row {i}: {ratings[i]:g}" for i in outside[:5])
        raise ScorerError(f"argument 'rows': column 'rating' must be within 0..10; {len(outside)} value(s) outside "
                          f"({shown})")
    languages = [value if isinstance(value, str) and value else "unknown"
                 for value in rows.column("language").to_pylist()]
    paths = [value if isinstance(value, str) else "" for value in rows.column("path").to_pylist()]
    if "id" in rows.column_names:
        ids = [str(value) if value is not None else _content_id(p, t) for value, p, t in
               zip(rows.column("id").to_pylist(), paths, texts)]
    else:
        ids = [_content_id(path, text) for path, text in zip(paths, texts)]
    return RatedRows(ids, texts, languages, paths, ratings)


def _content_id(path: str, text: str) -> str:
    return hashlib.sha1(f"{path}\0{text}".encode("utf-8", "surrogatepass")).hexdigest()


def held_out_mask(ids: Sequence[str], fraction: float) -> np.ndarray:
    """True for the held-out rows: the hash of the id (blake2b, 64 bits) / 2^64 < fraction. Deterministic and
    independent of row order and count; with no row under the fraction, the row of the smallest hash."""
    values = np.fromiter((int.from_bytes(hashlib.blake2b(i.encode("utf-8", "surrogatepass"), digest_size=8).digest(),
                                         "little") for i in ids), dtype=np.uint64, count=len(ids))
    mask = values < np.uint64(min(fraction, 1.0) * 2.0**64 - 1)
    if not mask.any():
        mask[int(np.argmin(values))] = True
    if mask.all():
        mask[int(np.argmax(values))] = False
    return mask


def _data_sha256(rows: RatedRows) -> str:
    digest = hashlib.sha256()
    for values in (rows.ids, rows.languages, rows.paths, rows.texts):
        for value in values:
            encoded = value.encode("utf-8", "surrogatepass")
            digest.update(len(encoded).to_bytes(8, "little"))
            digest.update(encoded)
    digest.update(rows.ratings.tobytes())
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------ training
def epoch_batches(lengths: np.ndarray, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """The batches (row indices) of one epoch: shuffled, windows of LENGTH_SORT_WINDOW batches sorted by length,
    batches shuffled. A pure function of its arguments (resume replays it)."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    window = batch_size * LENGTH_SORT_WINDOW
    batches = []
    for start in range(0, len(order), window):
        chunk = order[start: start + window]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        batches.extend(chunk[i: i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def _positive_int(name: str, value: Any, *, optional: bool = False) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ScorerError(f"argument {name!r}: expected a positive integer, got {value!r}")


def _fraction(name: str, value: Any, *, low_open: bool, high_open: bool) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > 0 if low_open else value >= 0) and (value < 1 if high_open else value <= 1)
    if not ok:
        interval = f"{'(' if low_open else '['}0, 1{')' if high_open else ']'}"
        raise ScorerError(f"argument {name!r}: expected a number in {interval}, got {value!r}")


def _build_model(checkpoint_dir: str | None, model: str | Mapping[str, Any] | ModelConfig, vocab_size: int,
                 device: torch.device, seed: int) -> ScorerModel:
    if checkpoint_dir is not None:
        cfg = _base_model_config(checkpoint_dir)
        if vocab_size > cfg.vocab_size:
            raise ScorerError(f"argument 'tokenizer': {vocab_size} tokens, more than the vocabulary of the checkpoint "
                              f"{checkpoint_dir} ({cfg.vocab_size}); use the tokenizer the model was trained with")
        scorer = ScorerModel.empty(cfg, device)
        _load_backbone(checkpoint_dir, scorer)
    else:
        try:
            cfg = model_config(model, vocab_size=-(-vocab_size // 64) * 64)
        except ValueError as error:
            raise ScorerError(f"argument 'model': {error}") from None
        scorer = ScorerModel.empty(cfg, device)
        scorer.backbone.init_weights(seed)
    return scorer


def _init_head(model: ScorerModel, mean_target: float, seed: int) -> None:
    """Head weights ~ N(0, init_std²); bias = logit(training mean), so the first prediction is the mean rating."""
    generator = torch.Generator(device=model.head.weight.device).manual_seed(seed)
    with torch.no_grad():
        model.head.weight.normal_(0.0, model.cfg.init_std, generator=generator)
        p = min(max(mean_target, 0.02), 0.98)
        model.head.bias.fill_(math.log(p / (1 - p)))


def _save_scorer(out_dir: str, model: ScorerModel, tokenizer_path: str, prompt: PromptFormat,
                 provenance: Mapping[str, Any]) -> str:
    """Write out_dir/scorer/ atomically (built in a temporary sibling, renamed when complete)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    final = os.path.join(out_dir, SCORER_DIR)
    temp = os.path.join(out_dir, f".{SCORER_DIR}.tmp")
    shutil.rmtree(temp, ignore_errors=True)
    os.makedirs(temp)
    with _quiet_dcp():
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


def evaluation_metrics(ratings: np.ndarray, predictions: np.ndarray, train_mean: float) -> dict[str, Any]:
    """MAE overall and per rating bucket on the 0..10 scale, the MAE of always predicting train_mean, Pearson r."""
    ratings, predictions = np.asarray(ratings, np.float64), np.asarray(predictions, np.float64)
    errors = np.abs(predictions - ratings)
    buckets = {}
    for name, low, high in BUCKETS:
        inside = (ratings >= low) & ((ratings < high) if high < RATING_MAX else (ratings <= high))
        buckets[name] = {"count": int(inside.sum()), "mae": float(errors[inside].mean()) if inside.any() else None,
                         "mean_prediction": float(predictions[inside].mean()) if inside.any() else None}
    pearson = None
    if len(ratings) > 1 and ratings.std() > 0 and predictions.std() > 0:
        pearson = float(np.corrcoef(ratings, predictions)[0, 1])
    return {"mae": float(errors.mean()), "rmse": float(np.sqrt(np.mean(errors**2))),
            "baseline_mae": float(np.abs(ratings - train_mean).mean()), "pearson_r": pearson, "buckets": buckets}


def train_scorer(
    rows: pa.Table,
    *,
    checkpoint: str | None,
    model: str | Mapping[str, Any] | ModelConfig = "tiny",
    out_dir: str,
    tokenizer: str | None = None,
    epochs: int = 1,
    steps: int | None = None,
    lr: float = 1e-4,
    batch_size: int = 16,
    max_tokens: int = 1024,
    warmup_fraction: float = 0.05,
    min_lr_ratio: float = 0.1,
    weight_decay: float = 0.1,
    grad_clip: float = 1.0,
    eval_fraction: float = 0.1,
    seed: int = 0,
    checkpoint_interval: int = 200,
    device: str | torch.device | None = None,
    eval_batch_size: int = 16,
    plot: bool = True,
    tensorboard: bool = False,
    keep_checkpoints: bool = False,
) -> dict[str, Any]:
    """Train the scorer on rated rows and evaluate it on a held-out split; returns (and writes) metrics.json.

    rows: pyarrow.Table with text, language, path, rating (0..10; ints or floats) and optionally id.
    checkpoint: the base model (`seedcoder.checkpoint.resolve_dcp_checkpoint`: ours, not a Hugging Face folder), or
    None for a fresh `model` preset (name, dict or ModelConfig; ignored when a checkpoint is given: its
    model_config.json decides). tokenizer: tokenizer.json
    (default: found with the checkpoint, see `seedcoder.checkpoint.find_tokenizer`; required without a checkpoint).
    epochs / steps: one epoch by default; `steps` sets the number of optimizer steps instead (the data cycles).
    lr, warmup_fraction, min_lr_ratio: AdamW peak LR, linear warmup over that fraction of the steps, cosine
    down to lr * min_lr_ratio. max_tokens: the scorer's context (prompt length cap). checkpoint_interval: steps
    between training checkpoints. device: default CUDA when available. Rerunning after a kill resumes.
    """
    started = time.perf_counter()
    if not isinstance(out_dir, (str, os.PathLike)) or not os.fspath(out_dir):
        raise ScorerError(f"argument 'out_dir': expected a directory path, got {out_dir!r}")
    out_dir = os.fspath(out_dir)
    for name, value in (("epochs", epochs), ("batch_size", batch_size), ("checkpoint_interval", checkpoint_interval),
                        ("eval_batch_size", eval_batch_size), ("max_tokens", max_tokens)):
        _positive_int(name, value)
    _positive_int("steps", steps, optional=True)
    if max_tokens < MIN_MAX_TOKENS:
        raise ScorerError(f"argument 'max_tokens': at least {MIN_MAX_TOKENS} (header + code + end marker), "
                          f"got {max_tokens}")
    _fraction("eval_fraction", eval_fraction, low_open=True, high_open=True)
    _fraction("warmup_fraction", warmup_fraction, low_open=False, high_open=True)
    _fraction("min_lr_ratio", min_lr_ratio, low_open=False, high_open=False)
    for name, value in (("lr", lr), ("weight_decay", weight_decay), ("grad_clip", grad_clip)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0 or (
                name == "lr" and value == 0):
            raise ScorerError(f"argument {name!r}: expected a {'positive' if name == 'lr' else 'non-negative'} number, "
                              f"got {value!r}")
    data = rated_rows(rows)

    # -- base model and tokenizer
    checkpoint_dir = None
    if checkpoint is not None:
        try:
            checkpoint_dir = ckpt.resolve_dcp_checkpoint(checkpoint)
        except ckpt.CheckpointError as error:
            raise ScorerError(f"argument 'checkpoint': {error}") from None
    if tokenizer is None:
        if checkpoint_dir is None:
            raise ScorerError("argument 'tokenizer': required when checkpoint is None (a tokenizer.json)")
        try:
            tokenizer = ckpt.find_tokenizer(checkpoint_dir)
        except ckpt.CheckpointError as error:
            raise ScorerError(f"argument 'tokenizer': {error}") from None
    tokenizer_path = os.path.abspath(os.fspath(tokenizer))
    hf_tokenizer = _load_tokenizer(tokenizer_path, "tokenizer")
    prompt = prompt_format_for(hf_tokenizer, max_tokens, tokenizer_path=tokenizer_path)
    if checkpoint_dir is not None:
        _check_context(max_tokens, _base_model_config(checkpoint_dir))

    # -- split, settings, and what out_dir already holds
    held_out = held_out_mask(data.ids, eval_fraction)
    train_rows, eval_rows = data.take(np.flatnonzero(~held_out)), data.take(np.flatnonzero(held_out))
    train_targets = train_rows.ratings / RATING_MAX
    steps_per_epoch = -(-len(train_rows) // batch_size)
    total_steps = steps if steps is not None else epochs * steps_per_epoch
    with open(tokenizer_path, "rb") as file:
        tokenizer_sha = hashlib.sha256(file.read()).hexdigest()
    settings = {
        "checkpoint": os.path.abspath(checkpoint_dir) if checkpoint_dir else None,
        "model": None if checkpoint_dir else (model.to_dict() if isinstance(model, ModelConfig) else model),
        "tokenizer_sha256": tokenizer_sha, "data_sha256": _data_sha256(data), "rows": len(data),
        "epochs": epochs, "steps": total_steps, "lr": lr, "batch_size": batch_size, "max_tokens": max_tokens,
        "warmup_fraction": warmup_fraction, "min_lr_ratio": min_lr_ratio, "weight_decay": weight_decay,
        "grad_clip": grad_clip, "eval_fraction": eval_fraction, "seed": seed,
    }
    settings = json.loads(json.dumps(settings))  # the JSON form, as it is compared after a reload
    os.makedirs(out_dir, exist_ok=True)
    metrics_path = os.path.join(out_dir, METRICS_FILE)
    if os.path.isfile(metrics_path):
        with open(metrics_path, encoding="utf-8") as file:
            finished = json.load(file)
        _check_same_settings(finished.get("settings") or {}, settings, metrics_path)
        if os.path.isfile(os.path.join(out_dir, SCORER_DIR, SCORER_META)):
            print(f"scorer: {out_dir} already holds this scorer (metrics.json); nothing to do", file=sys.stderr,
                  flush=True)
            return finished

    # -- model, optimizer, schedule
    device = _default_device(device)
    scorer_meta = _read_scorer_meta(out_dir)
    if scorer_meta is not None:  # trained, and killed before metrics.json was written
        _check_same_settings(scorer_meta.get("settings") or {}, settings, os.path.join(out_dir, SCORER_DIR))
        return _finish(out_dir, settings, train_rows, eval_rows, device, eval_batch_size, plot, keep_checkpoints,
                       started)
    scorer = _build_model(checkpoint_dir, model, hf_tokenizer.get_vocab_size(), device, seed)
    _check_context(max_tokens, scorer.cfg)
    _init_head(scorer, float(train_targets.mean()), seed)
    scorer.train()
    from seedcoder.config import OptimizerSection, TrainConfig
    from seedcoder.lr_schedule import LRSchedule
    from seedcoder.metrics import MetricsLogger
    from seedcoder.train import build_optimizer, clip_grad_norm_

    optimizer_config = TrainConfig(optimizer=OptimizerSection(lr=lr, weight_decay=weight_decay))
    optimizer = build_optimizer(optimizer_config, scorer, device)
    schedule = LRSchedule("cosine", lr=lr, total_steps=total_steps, warmup_steps=round(warmup_fraction * total_steps),
                          min_lr_ratio=min_lr_ratio)
    parameters = [p for p in scorer.parameters() if p.requires_grad]

    # -- resume
    ckpt_dir = os.path.join(out_dir, CHECKPOINTS_DIR)
    ckpt.remove_incomplete(ckpt_dir)
    step = 0
    resume_path = ckpt.latest_checkpoint(ckpt_dir)
    if resume_path is not None:
        _check_same_settings(ckpt.read_train_state(resume_path).get("scorer_settings") or {}, settings, resume_path)
        with _quiet_dcp():
            state = ckpt.load_checkpoint(resume_path, model=scorer, optimizer=optimizer)
        step = int(state["step"])
        print(f"scorer: resumed from {resume_path} (step {step}/{total_steps})", file=sys.stderr, flush=True)

    prompts = encode_prompts(hf_tokenizer, prompt, train_rows.texts, train_rows.languages, train_rows.paths)
    lengths = np.fromiter((len(p) for p in prompts), dtype=np.int64, count=len(prompts))
    print(f"scorer: {len(train_rows):,} training rows ({int(lengths.sum()):,} tokens), {len(eval_rows):,} held out; "
          f"{total_steps} steps of {batch_size} rows; {scorer.backbone.num_params():,} backbone parameters from "
          f"{checkpoint_dir or f'a fresh {model!r} model'}; device {device.type}",
          file=sys.stderr, flush=True)
    logger = MetricsLogger(out_dir, total_steps=total_steps, start_step=step, device=device, world_size=1,
                           flops_per_token=scorer.backbone.flops_per_token(max_tokens), jsonl=True,
                           tensorboard=tensorboard, progress_bar=True)
    targets = torch.from_numpy(train_targets.astype(np.float32))
    epoch_cache: dict[int, list[np.ndarray]] = {}

    def save() -> None:
        train_state = {"scorer_settings": settings, "schedule": {**schedule.state_dict(), "step": step}}
        with _quiet_dcp():
            path = ckpt.save_checkpoint(ckpt_dir, step, model=scorer, optimizer=optimizer,
                                        model_config=scorer.cfg.to_dict(), train_state=train_state, keep=2)
        logger.print(f"checkpoint: {path}")

    try:
        while step < total_steps:
            step_start = time.perf_counter()
            epoch, position = divmod(step, steps_per_epoch)
            if epoch not in epoch_cache:
                epoch_cache.clear()
                epoch_cache[epoch] = epoch_batches(lengths, batch_size, seed, epoch)
            rows_index = epoch_cache[epoch][position]
            input_ids, row_lengths = pad_batch([prompts[i] for i in rows_index], prompt.pad_id)
            predictions = scorer(input_ids.to(device), row_lengths)
            errors = predictions - targets[rows_index].to(device)
            loss = torch.mean(errors**2)
            loss.backward()
            batch_mae = float(errors.detach().abs().mean()) * RATING_MAX
            grad_norm = clip_grad_norm_(parameters, grad_clip)
            loss_value, grad_norm_value = torch.stack([loss.detach(), grad_norm.float()]).tolist()
            step += 1
            lr_now = schedule(step)
            finite = math.isfinite(loss_value) and math.isfinite(grad_norm_value)
            if finite:
                for group in optimizer.param_groups:
                    group["lr"] = lr_now
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            logger.log_step(step, loss=loss_value, grad_norm=grad_norm_value, lr=lr_now, tokens=int(input_ids.numel()),
                            loss_tokens=len(rows_index), step_time=time.perf_counter() - step_start, data_time=0.0,
                            seq_len=int(input_ids.shape[1]), skipped=not finite,
                            extra={"epoch": epoch, "rows": len(rows_index), "batch_mae_0_10": batch_mae})
            ckpt.fault_point("after_step", step)
            if step % checkpoint_interval == 0 and step < total_steps:
                save()
    finally:
        logger.close()
    provenance = {"base_checkpoint": settings["checkpoint"], "trained_steps": total_steps, "settings": settings}
    _save_scorer(out_dir, scorer, tokenizer_path, prompt, provenance)
    return _finish(out_dir, settings, train_rows, eval_rows, device, eval_batch_size, plot, keep_checkpoints, started)


def _read_scorer_meta(out_dir: str) -> dict[str, Any] | None:
    try:
        with open(os.path.join(out_dir, SCORER_DIR, SCORER_META), encoding="utf-8") as file:
            return json.load(file)
    except (OSError, ValueError):
        return None


def _finish(out_dir: str, settings: dict[str, Any], train_rows: RatedRows, eval_rows: RatedRows, device: torch.device,
            eval_batch_size: int, plot: bool, keep_checkpoints: bool, started: float) -> dict[str, Any]:
    """Evaluate the saved scorer through the inference path (load_scorer + score); write the predictions, the loss
    plot and metrics.json (last: it marks the run complete)."""
    from seedcoder.metrics import plot_loss_curve

    train_seconds = time.perf_counter() - started
    loaded = load_scorer(out_dir, device=device)
    eval_predictions = loaded.score(eval_rows.texts, eval_rows.languages, eval_rows.paths, batch_size=eval_batch_size)
    metrics = {
        "format": METRICS_FORMAT,
        **evaluation_metrics(eval_rows.ratings, eval_predictions, float(train_rows.ratings.mean())),
        "n_train": len(train_rows), "n_eval": len(eval_rows), "steps": settings["steps"],
        "train_seconds": train_seconds, "eval_files_per_s": loaded.last_stats.get("files_per_s"),
        "device": device.type, "scorer_dir": os.path.join(out_dir, SCORER_DIR),
        "model_config": loaded.model.cfg.to_dict(), "prompt_format": PROMPT_FORMAT, "settings": settings,
    }
    table = pa.table({"id": eval_rows.ids, "language": eval_rows.languages, "path": eval_rows.paths,
                      "rating": eval_rows.ratings, "prediction": eval_predictions})
    _write_parquet(os.path.join(out_dir, PREDICTIONS_FILE), table)
    if plot:
        plot_loss_curve(os.path.join(out_dir, "metrics.jsonl"), os.path.join(out_dir, "loss.png"),
                        title="scorer: training loss (MSE on ratings / 10)")
    atomic_write_text(os.path.join(out_dir, METRICS_FILE), json.dumps(metrics, indent=1) + "\n")
    if not keep_checkpoints:
        shutil.rmtree(os.path.join(out_dir, CHECKPOINTS_DIR), ignore_errors=True)
    buckets = ", ".join(f"{name} {bucket['mae']:.2f} (n={bucket['count']})"
                        for name, bucket in metrics["buckets"].items() if bucket["count"])
    print(f"scorer: held-out MAE {metrics['mae']:.3f} (predicting the mean: {metrics['baseline_mae']:.3f}); by rating: "
          f"{buckets}", file=sys.stderr, flush=True)
    return metrics


def _check_same_settings(saved: Mapping[str, Any], current: Mapping[str, Any], where: str) -> None:
    changed = sorted(key for key in set(saved) | set(current) if saved.get(key) != current.get(key))
    if changed:
        shown = "; ".join(f"{key}: {saved.get(key)!r} there, {current.get(key)!r} now" for key in changed[:4])
        raise ScorerError(f"argument 'out_dir': {where} belongs to a scorer run with other settings ({shown}); "
                          "use a new out_dir or delete the old one")


def _write_parquet(path: str, table: pa.Table) -> None:
    import pyarrow.parquet as pq

    atomic_write(path, lambda file: pq.write_table(table, file))


# ------------------------------------------------------------------------------------------ distributed scoring
def score_parquet(scorer_dir: str, inputs: Sequence[str], out_dir: str, *, rank: int | None = None,
                  world_size: int | None = None, batch_size: int = 16, device: str | torch.device | None = None) -> str:
    """Score this rank's rows of the parquet files `inputs` (text, language, path; id kept when present).

    Rows are numbered across the inputs in order; rank r takes rows r, r + W, r + 2W, ... (W = world size;
    default from torchrun's RANK / WORLD_SIZE, else 0 of 1) and writes out_dir/scores-RRRRR-of-WWWWW.parquet
    (row, id, score) atomically; a part already there is kept (rerun after a kill). Returns its path.
    """
    import pyarrow.parquet as pq

    rank = int(os.environ.get("RANK", 0)) if rank is None else rank
    world_size = int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else world_size
    if not 0 <= rank < world_size:
        raise ScorerError(f"argument 'rank': {rank} is not in 0..{world_size - 1}")
    os.makedirs(out_dir, exist_ok=True)
    part = os.path.join(out_dir, f"scores-{rank:05d}-of-{world_size:05d}.parquet")
    if os.path.isfile(part):
        return part
    if device is None and torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    scorer = load_scorer(scorer_dir, device=device)
    texts, languages, paths, ids, row_numbers = [], [], [], [], []
    offset = 0
    for path in inputs:
        try:
            names = pq.ParquetFile(path).schema_arrow.names
            table = pq.read_table(path, columns=[name for name in ("id", "text", "language", "path") if name in names])
        except (OSError, pa.ArrowException) as error:
            raise ScorerError(f"argument 'inputs': cannot read {path}: {error}") from None
        missing = [name for name in ("text", "language", "path") if name not in table.column_names]
        if missing:
            raise ScorerError(f"argument 'inputs': {path} lacks column(s) {', '.join(map(repr, missing))}")
        mine = np.arange((rank - offset) % world_size, table.num_rows, world_size)
        if len(mine):
            picked = table.take(pa.array(mine))
            texts += [t if isinstance(t, str) else "" for t in picked.column("text").to_pylist()]
            languages += picked.column("language").to_pylist()
            paths += picked.column("path").to_pylist()
            ids += picked.column("id").to_pylist() if "id" in table.column_names else [None] * len(mine)
            row_numbers += (mine + offset).tolist()
        offset += table.num_rows
    scores = scorer.score(texts, languages, paths, batch_size=batch_size)
    id_column = pa.array([None if value is None else str(value) for value in ids], pa.string())
    result = pa.table({"row": pa.array(row_numbers, pa.int64()), "id": id_column,
                       "score": pa.array(scores, pa.float32())})
    _write_parquet(part, result)
    return part


def read_scores(out_dir: str) -> pa.Table:
    """The parts score_parquet wrote, joined in row order; ScorerError if a rank's part is missing."""
    import pyarrow.parquet as pq

    names = sorted(name for name in os.listdir(out_dir) if name.startswith("scores-") and name.endswith(".parquet"))
    if not names:
        raise ScorerError(f"argument 'out_dir': no scores-*.parquet in {out_dir}")
    world_sizes = {int(name.split("-of-")[1].split(".")[0]) for name in names}
    if len(world_sizes) != 1:
        raise ScorerError(f"argument 'out_dir': {out_dir} mixes parts of runs with {sorted(world_sizes)} ranks")
    world_size = world_sizes.pop()
    expected = [f"scores-{rank:05d}-of-{world_size:05d}.parquet" for rank in range(world_size)]
    missing = sorted(set(expected) - set(names))
    if missing:
        raise ScorerError(f"argument 'out_dir': {out_dir} lacks {', '.join(missing)} (a rank did not finish)")
    table = pa.concat_tables([pq.read_table(os.path.join(out_dir, name)) for name in expected])
    return table.take(pa.array(np.argsort(table.column("row").to_numpy(), kind="stable")))


# ------------------------------------------------------------------------------------------ command line
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m seedcoder.curate.scorer", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train a scorer on a parquet table of rated files")
    train.add_argument("--rows", required=True, nargs="+", help="parquet file(s) with text, language, path, rating")
    train.add_argument("--checkpoint", help="base model checkpoint (ours or converted HF); default: a fresh --model")
    train.add_argument("--model", default="tiny", help="preset for a fresh model (without --checkpoint)")
    train.add_argument("--tokenizer", help="tokenizer.json (default: found with the checkpoint)")
    train.add_argument("--out", required=True, help="output directory")
    train.add_argument("--epochs", type=int, default=1)
    train.add_argument("--steps", type=int)
    train.add_argument("--lr", type=float, default=1e-4)
    train.add_argument("--batch-size", type=int, default=16)
    train.add_argument("--max-tokens", type=int, default=1024)
    train.add_argument("--device")
    score = commands.add_parser("score", help="score parquet files (torchrun: rows split over the ranks)")
    score.add_argument("inputs", nargs="+", help="parquet files with text, language, path (and id)")
    score.add_argument("--scorer", required=True, help="a train_scorer output directory")
    score.add_argument("--out", required=True, help="directory for scores-RRRRR-of-WWWWW.parquet")
    score.add_argument("--batch-size", type=int, default=16)
    score.add_argument("--device")
    args = parser.parse_args(argv)
    try:
        if args.command == "train":
            import pyarrow.parquet as pq

            rows = pa.concat_tables([pq.read_table(path) for path in args.rows], promote_options="default")
            train_scorer(rows, checkpoint=args.checkpoint, model=args.model, tokenizer=args.tokenizer, out_dir=args.out,
                         epochs=args.epochs, steps=args.steps, lr=args.lr, batch_size=args.batch_size,
                         max_tokens=args.max_tokens, device=args.device)
        else:
            part = score_parquet(args.scorer, args.inputs, args.out, batch_size=args.batch_size, device=args.device)
            print(f"scores: {part}", file=sys.stderr, flush=True)
    except ScorerError as error:
        print(f"seedcoder.curate.scorer: {error}", file=sys.stderr, flush=True)
        return 2
    return 0


__all__ = [
    "BUCKETS",
    "FinalHiddenStates",
    "PromptFormat",
    "Scorer",
    "ScorerError",
    "ScorerModel",
    "encode_prompts",
    "epoch_batches",
    "evaluation_metrics",
    "held_out_mask",
    "load_scorer",
    "pad_batch",
    "prompt_format_for",
    "rated_rows",
    "read_scores",
    "score_parquet",
    "train_scorer",
]


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())

