"""Steps 6 and 7, scorer_train and score: the quality scorer (`seedcoder.curate.scorer`) trained on the oracle's
ratings, then every file scored with it (column `score`, 0..10; nothing is dropped here, score_filter drops).

The steps live apart from the scorer because the scorer imports torch (seconds): `seedcoder curate ingest` and
the other steps do not pay for it, and the scorer is imported only when one of these steps runs.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from seedcoder.config import option
from seedcoder.curate import dataset as ds
from seedcoder.curate.errors import CurateStateError
from seedcoder.curate.executor import run_tasks
from seedcoder.curate.step import WORKER_CACHE, StepContext, StepKind, column, say


def training_rows(ratings_dir: str) -> list[pa.Table]:
    """The oracle step's rows as the scorer learns them: the target is the oracle's number, `rating_score` (the
    log-prob rater's expectation, the proxy's unrounded mean) when present, else the integer `rating`."""
    tables = []
    for _, table in ds.iter_tables(ratings_dir):
        if "rating_score" in table.column_names:
            table = table.set_column(table.column_names.index("rating"), "rating", table.column("rating_score"))
        tables.append(table.select(["id", "text", "language", "path", "rating"]))
    return tables


def run_scorer_train(ctx: StepContext) -> dict[str, Any]:
    ratings_dir = ctx.inputs["ratings"]
    tables = training_rows(ratings_dir)
    done = ctx.prepare()
    if done is not None:
        return done
    rows = pa.concat_tables(tables) if tables else None
    if rows is None or rows.num_rows == 0:
        raise CurateStateError(f"scorer_train: {ratings_dir} holds no rated rows (every answer unparseable?)")
    options = ctx.options
    say(f"{ctx.name}: training the scorer on {rows.num_rows:,} rated files from "
        f"{options['checkpoint'] or 'a fresh ' + repr(options['model']) + ' model'}")
    from seedcoder.curate.scorer_train import train_scorer  # after the line above: importing torch takes seconds

    metrics = train_scorer(rows, checkpoint=options["checkpoint"], model=options["model"], out_dir=ctx.out_dir,
                           tokenizer=options["tokenizer"], device=options["device"], **options["train"])
    keep = ("mae", "baseline_mae", "pearson_r", "buckets", "n_train", "n_eval")
    return ctx.finish_other({"kind": "model", "metrics": {key: metrics.get(key) for key in keep if key in metrics}})


def score_task(in_dir: str, index: int, out_dir: str, scorer_dir: str, batch_size: int, device: str | None) -> dict:
    from seedcoder.curate.scorer import load_scorer  # torch: imported by the worker that scores

    key = ("scorer", scorer_dir, ds.input_fingerprint(scorer_dir), device)  # a retrained scorer is loaded anew
    if key not in WORKER_CACHE:
        WORKER_CACHE[key] = load_scorer(scorer_dir, device=device)
    table = ds.read_part(in_dir, index)
    texts = [value or "" for value in column(table, "text")]
    scores = (np.asarray(WORKER_CACHE[key].score(texts, column(table, "language"), column(table, "path"),
                                                 batch_size=batch_size), dtype=np.float32)
              if table.num_rows else np.zeros(0, np.float32))
    if scores.shape != (table.num_rows,) or not np.all(np.isfinite(scores)):
        raise CurateStateError(f"scorer {scorer_dir} returned {scores.shape} scores (non-finite: "
                               f"{int(np.sum(~np.isfinite(scores)))}) for {table.num_rows} rows of shard {index}")
    table = ds.with_columns(table, {"score": pa.array(scores, pa.float32())})
    return ds.write_part(out_dir, index, table, None)


def run_score(ctx: StepContext) -> dict[str, Any]:
    in_dir, scorer_dir = ctx.inputs["in"], ctx.inputs["scorer"]
    parts = ds.finished_parts(in_dir)
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if rank == 0:
        done = ctx.prepare()
        if done is not None:
            return done
    else:  # under torchrun, rank 0 readies the directory; the others wait for it
        expected = ds.canonical_record(ctx.record())
        while ds.step_record(ctx.out_dir) != expected:
            time.sleep(1.0)
    tasks = ctx.part_tasks("seedcoder.curate.score:score_task", parts, in_dir=in_dir, out_dir=ctx.out_dir,
                           scorer_dir=scorer_dir, batch_size=ctx.options["batch_size"], device=ctx.options["device"])
    if world > 1:  # under torchrun: shard i goes to rank i mod world, each on its own GPU; rank 0 finishes
        device = ctx.options["device"] or (f"cuda:{os.environ.get('LOCAL_RANK', 0)}" if _cuda_available() else None)
        mine = [dataclasses.replace(task, args={**task.args, "device": device}) for task in tasks[rank::world]]
        run_tasks(mine, dataclasses.replace(ctx.executor, kind="local", workers=1),
                  log_path=os.path.join(ctx.out_dir, ds.LOG_FILE), log_fields={"step": ctx.name, "rank": rank})
        if rank != 0:
            return {"rank": rank, "parts": len(mine)}
        while not all(os.path.exists(task.marker) for task in tasks):
            time.sleep(2.0)
    return ctx.finish(ctx.run(tasks))


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


@dataclass
class ScorerTrainOptions:
    checkpoint: str | None = option(None, "base model checkpoint (ours or converted HF); default: a fresh `model`")
    model: str = option("tiny", "preset of a fresh model (without checkpoint)")
    tokenizer: str | None = option(None, "tokenizer.json (default: the checkpoint's)")
    device: str | None = option(None, "cpu, cuda, cuda:1 (default: CUDA when present)")
    train: dict[str, Any] = option({}, "more train_scorer arguments: epochs, steps, lr, batch_size, max_tokens, ...")


@dataclass
class ScoreOptions:
    batch_size: int = option(16, "files per forward pass")
    device: str | None = option(None, "cpu, cuda, cuda:1 (default: CUDA when present)")


SCORER_TRAIN = StepKind("scorer_train", "train the quality scorer on the oracle's ratings", run_scorer_train,
                        ScorerTrainOptions, reads=("ratings",), line="model")
SCORE = StepKind("score", "score every file with the trained scorer (column `score`, 0..10)", run_score, ScoreOptions,
                 reads=("in", "scorer"))


__all__ = ["SCORE", "SCORER_TRAIN", "ScoreOptions", "ScorerTrainOptions", "run_score", "run_scorer_train", "score_task"]
