"""Training the quality scorer (curation step scorer_train): `seedcoder.curate.scorer`'s model on oracle ratings.

    from seedcoder.curate.scorer_train import train_scorer
    metrics = train_scorer(rated, checkpoint="runs/demo", out_dir="runs/scorer")   # rated: a pyarrow.Table with
    print(metrics["mae"], metrics["buckets"])                                       # text, language, path, rating

    seedcoder curate scorer_train --ratings runs/c/oracle --checkpoint runs/demo --out runs/scorer  # the step

Base model: `seedcoder.model.Transformer` built from a checkpoint's `model_config.json` and weights: one of our
checkpoints (a `step-N` directory of the trainer, a trainer's `checkpoints/` folder or run folder, whose newest
complete checkpoint is taken, or a Hugging Face model converted with `seedcoder convert --from-hf`);
`checkpoint=None` starts from a randomly initialized preset (`model`, tests / benchmarks). The tokenizer is the
dataset's `tokenizer.json` (found next to the checkpoint, or through the trainer's config for a trainer
checkpoint, or given); it is copied into the scorer. Ratings 0..10 are trained as rating / 10 with MSE against
the head's sigmoid output; prompts are built by `seedcoder.curate.scorer.encode_prompts`, as at inference.

Training (`train_scorer`): a deterministic held-out split (`eval_fraction`, 10%, by a hash of each row's `id`,
or of path + text without an id column); one epoch by default (`steps` overrides), the shared training-step core
`seedcoder.optim` (AdamW with decay on matrices only, gradient clipping, non-finite steps skipped) with the
project's LR schedule (`seedcoder.lr_schedule`, cosine after a linear warmup), one log line + a metrics.jsonl
record per step (`seedcoder.metrics.MetricsLogger`). Batches: each epoch shuffles the rows (seeded), sorts windows
of 16 batches by length and shuffles the batches, so rows in a batch have similar lengths (little padding).
Checkpoints (`seedcoder.checkpoint`, model + optimizer) every `checkpoint_interval` steps under
out_dir/checkpoints; rerunning the same call after a kill resumes from the newest one and ends with bitwise the
same weights as an uninterrupted run on the same device and thread count (the data order is a function of the
step). A finished out_dir (metrics.json present, same settings) is returned as it is; other settings in an
out_dir that holds a run raise.

Outputs in out_dir, every file written atomically: scorer/ (`seedcoder.curate.scorer.save_scorer`), metrics.jsonl
(per step), loss.png, eval_predictions.parquet (id, language, path, rating, prediction of every held-out row),
and metrics.json, written last: MAE overall and per rating bucket (0-2, 3-4, 5-6, 7-8, 9-10) on the 0..10 scale,
the MAE of predicting the training mean for reference, Pearson r (`pearson_r`), counts and settings. The
held-out predictions come from `load_scorer(out_dir).score`, the inference path itself.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from seedcoder import checkpoint as ckpt
from seedcoder.curate.scorer import (
    PROMPT_FORMAT,
    RATING_MAX,
    SCORER_DIR,
    SCORER_META,
    ScorerError,
    ScorerModel,
    default_device,
    encode_prompts,
    load_model_weights,
    load_scorer,
    load_tokenizer_file,
    pad_batch,
    prompt_format_for,
    quiet_dcp,
    save_scorer,
)
from seedcoder.fileio import atomic_write, atomic_write_text
from seedcoder.lr_schedule import LRSchedule
from seedcoder.metrics import MetricsLogger, plot_loss_curve
from seedcoder.model import ModelConfig, model_config
from seedcoder.optim import DivergedError, OptimizerStep, build_optimizer
from seedcoder.train_config import OptimizerSection

METRICS_FORMAT = "seedcoder-scorer-metrics"
METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "eval_predictions.parquet"
CHECKPOINTS_DIR = "checkpoints"
BUCKETS = (("0-2", 0.0, 2.5), ("3-4", 2.5, 4.5), ("5-6", 4.5, 6.5), ("7-8", 6.5, 8.5), ("9-10", 8.5, 10.0))
MIN_MAX_TOKENS = 16
LENGTH_SORT_WINDOW = 16  # batches per window sorted by length in training
REQUIRED_COLUMNS = ("text", "language", "path", "rating")


# ------------------------------------------------------------------------------------------ base checkpoints
def _check_context(max_tokens: int, cfg: ModelConfig) -> None:
    if max_tokens > cfg.max_seq_len:
        raise ScorerError(f"argument 'max_tokens': {max_tokens} exceeds the model's max_seq_len {cfg.max_seq_len}")


def _base_model_config(checkpoint_dir: str) -> ModelConfig:
    try:
        return ckpt.read_model_config(checkpoint_dir)
    except ckpt.CheckpointError as error:
        raise ScorerError(f"argument 'checkpoint': {error}") from None


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
        load_model_weights(checkpoint_dir, scorer.backbone, "checkpoint")  # every backbone weight; no LM head
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
    hf_tokenizer = load_tokenizer_file(tokenizer_path, "tokenizer")
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
    device = default_device(device)
    scorer_meta = _read_scorer_meta(out_dir)
    if scorer_meta is not None:  # trained, and killed before metrics.json was written
        _check_same_settings(scorer_meta.get("settings") or {}, settings, os.path.join(out_dir, SCORER_DIR))
        return _finish(out_dir, settings, train_rows, eval_rows, device, eval_batch_size, plot, keep_checkpoints,
                       started)
    scorer = _build_model(checkpoint_dir, model, hf_tokenizer.get_vocab_size(), device, seed)
    _check_context(max_tokens, scorer.cfg)
    _init_head(scorer, float(train_targets.mean()), seed)
    scorer.train()
    optimizer = build_optimizer(scorer, OptimizerSection(lr=lr, weight_decay=weight_decay), device)
    schedule = LRSchedule("cosine", lr=lr, total_steps=total_steps, warmup_steps=round(warmup_fraction * total_steps),
                          min_lr_ratio=min_lr_ratio)
    update = OptimizerStep(optimizer, scorer, grad_clip=grad_clip, schedule=schedule,
                           warn=lambda message: print(f"scorer: {message}", file=sys.stderr, flush=True))

    # -- resume
    ckpt_dir = os.path.join(out_dir, CHECKPOINTS_DIR)
    ckpt.remove_incomplete(ckpt_dir)
    step = 0
    resume_path = ckpt.latest_checkpoint(ckpt_dir)
    if resume_path is not None:
        _check_same_settings(ckpt.read_train_state(resume_path).get("scorer_settings") or {}, settings, resume_path)
        with quiet_dcp():
            state = ckpt.load_checkpoint(resume_path, model=scorer, optimizer=optimizer)
        step = int(state["step"])
        update.load_state_dict(state)
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
        train_state = {"scorer_settings": settings, "schedule": {**schedule.state_dict(), "step": step},
                       **update.state_dict()}
        with quiet_dcp():
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
            step += 1
            outcome = update(step, loss)
            logger.log_step(step, loss=outcome.loss, grad_norm=outcome.grad_norm, lr=outcome.lr, tokens=int(input_ids.numel()),
                            loss_tokens=len(rows_index), step_time=time.perf_counter() - step_start, data_time=0.0,
                            seq_len=int(input_ids.shape[1]), skipped=not outcome.applied,
                            extra={"epoch": epoch, "rows": len(rows_index), "batch_mae_0_10": batch_mae})
            ckpt.fault_point("after_step", step)
            if update.gave_up:
                save()
                raise DivergedError(f"scorer step {step}: {update.bad_steps_in_a_row} non-finite steps in a row "
                                    f"(lower train.lr; resume continues from {ckpt_dir})")
            if step % checkpoint_interval == 0 and step < total_steps:
                save()
    finally:
        logger.close()
    provenance = {"base_checkpoint": settings["checkpoint"], "trained_steps": total_steps, "settings": settings}
    save_scorer(out_dir, scorer, tokenizer_path, prompt, provenance)
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
    atomic_write(os.path.join(out_dir, PREDICTIONS_FILE), lambda file: pq.write_table(table, file))
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


__all__ = [
    "BUCKETS",
    "RatedRows",
    "epoch_batches",
    "evaluation_metrics",
    "held_out_mask",
    "rated_rows",
    "train_scorer",
]
