"""The ablation's arms: which files each one trains on.

    build_arm("c", scored_dir="runs/x/curate/score", out_dir="runs/x/arms/c/dataset", drop_fraction=0.2, seed=0)

    (a) everything that passed the rules: the decontaminate step's dataset itself (no step here);
    (b) a random drop: the bottom `drop_fraction` by a seeded random key;
    (c) the scorer's bottom `drop_fraction` dropped (key: the `score` column of the score step);
    (d) the oracle's bottom `drop_fraction` dropped (key: the oracle's number for every file, `ratings_dir`:
        `rating_score` where the oracle step wrote it, the number the scorer learns, else `rating`).

Arms (b)-(d) start from the same rows (the score step's dataset, which holds every file that passed the rules)
and drop exactly floor(drop_fraction x n) files each, the count rule of the score_filter step; ties of the key
(the oracle's integer ratings) are broken by a seeded random order, not by the dataset's order (which is the
corpus's path order, and would drop whole packages). A file the oracle could not rate (an unparseable answer)
gets the median rating. Each arm is a curation dataset (`seedcoder.curate.dataset`) made by a global step of the
curation framework (`seedcoder.curate.step.run_global_step`): resumable, `dropped/` holds what the arm dropped
with its reason, and `_step.json` records the options and the fingerprints of its inputs.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from seedcoder.curate import dataset as ds
from seedcoder.curate.errors import CurateStateError
from seedcoder.curate.executor import ExecutorConfig
from seedcoder.curate.step import StepContext, run_global_step, split_decisions

ARMS = {
    "a": "everything that passed the rules",
    "b": "a random drop",
    "c": "the scorer's bottom fraction dropped",
    "d": "the oracle's bottom fraction dropped",
}
ARM_KEYS = {"b": "random", "c": "score", "d": "rating"}


def seeded_uniform(ids: Sequence[str], seed: int, salt: str) -> np.ndarray:
    """A number in [0, 1) per row id, a function of (seed, salt, id) only: the same on every run and machine."""
    values = np.empty(len(ids), dtype=np.float64)
    for index, row_id in enumerate(ids):
        digest = hashlib.sha256(f"{seed}\x00{salt}\x00{row_id}".encode()).digest()
        values[index] = int.from_bytes(digest[:8], "big") / 2.0**64
    return values


def bottom_fraction(keys: np.ndarray, tiebreak: np.ndarray, fraction: float) -> np.ndarray:
    """The indices of the floor(fraction x n) rows with the lowest keys (ties: the lower tiebreak first)."""
    cut = int(np.floor(fraction * len(keys)))
    return np.lexsort((tiebreak, keys))[:cut]


def ratings_by_id(ratings_dir: str) -> dict[str, float]:
    """{row id: the oracle's number} of an oracle step's dataset: `rating_score` (what the scorer learns: the proxy's
    unrounded mean, the log-prob rater's expectation) where the dataset has it, else the integer `rating`."""
    ratings: dict[str, float] = {}
    for index in ds.finished_parts(ratings_dir):
        names = ds.part_columns(ratings_dir, index)
        name = "rating_score" if "rating_score" in names else "rating"
        table = ds.read_part(ratings_dir, index, ["id", name])
        for row_id, rating in zip(table.column("id").to_pylist(), table.column(name).to_pylist()):
            if rating is not None:
                ratings[row_id] = float(rating)
    return ratings


def key_fingerprint(key: str, scored_dir: str, ratings_dir: str | None) -> str | None:
    """SHA-256 of the values an arm ranks by (None for the random arm). A dataset's fingerprint for the next step is
    its _SUCCESS.json, which holds counts, not values: a rescored or re-rated corpus with the same counts would look
    unchanged, so the arm records the values' own hash among its options."""
    if key == "random":
        return None
    if key == "score":
        pairs = sorted(zip(dataset_ids(scored_dir), dataset_column(scored_dir, "score")))
    else:
        pairs = sorted(ratings_by_id(ratings_dir).items())
    return hashlib.sha256(json.dumps(pairs).encode()).hexdigest()


def arm_reduce(map_paths: Sequence[str], parts: Sequence[int], options: Mapping[str, Any]
               ) -> tuple[list[pa.Table], dict[str, Any]]:
    """The decisions of an arm over every row (module docstring); the key is kept as the column `arm_key`."""
    key, fraction, seed = options["key"], options["drop_fraction"], options["seed"]
    columns = ["id", "score"] if key == "score" else ["id"]
    for path in map_paths:
        missing = [name for name in columns if name not in pq.read_schema(path).names]
        if missing:
            raise CurateStateError(f"arm {options['arm']}: {path} has no {missing} column(s); run the score step first")
    tables = [ds.read_table(path, columns) for path in map_paths]
    sizes = [table.num_rows for table in tables]
    ids = [row_id for table in tables for row_id in table.column("id").to_pylist()]
    tiebreak = seeded_uniform(ids, seed, "tiebreak")
    unrated = 0
    if key == "random":
        keys = seeded_uniform(ids, seed, "random")
    elif key == "score":
        keys = np.concatenate([np.asarray(table.column("score").to_numpy(zero_copy_only=False), dtype=np.float64)
                               for table in tables]) if tables else np.zeros(0)
    elif key == "rating":
        ratings = ratings_by_id(options["ratings"])
        if not ratings:
            raise CurateStateError(f"arm {options['arm']}: {options['ratings']} holds no rating")
        median = float(np.median(list(ratings.values())))
        unrated = sum(1 for row_id in ids if row_id not in ratings)
        keys = np.asarray([ratings.get(row_id, median) for row_id in ids], dtype=np.float64)
    else:
        raise ValueError(f"arm key must be random, score or rating, got {key!r}")
    dropped = bottom_fraction(keys, tiebreak, fraction)
    keep = np.ones(len(ids), dtype=bool)
    keep[dropped] = False
    reasons: list[str | None] = [None] * len(ids)
    for row in dropped.tolist():
        reasons[row] = f"arm_{options['arm']}: {key} {keys[row]:.3f} in the bottom {fraction:.0%}"
    decisions = split_decisions(sizes, {"keep": pa.array(keep), ds.DROP_REASON: pa.array(reasons, pa.string()),
                                        "arm_key": pa.array(keys, pa.float64())})
    threshold = float(keys[np.lexsort((tiebreak, keys))[len(dropped)]]) if len(dropped) < len(ids) else None
    dropped_ids = sorted(ids[row] for row in dropped.tolist())
    return decisions, {"rows": len(ids), "dropped": int(len(dropped)), "key": key, "keep_from": threshold,
                       "unrated": unrated, "dropped_sha256": hashlib.sha256(json.dumps(dropped_ids).encode()).hexdigest()}


def build_arm(arm: str, *, scored_dir: str, out_dir: str, drop_fraction: float, seed: int,
              ratings_dir: str | None = None, executor: ExecutorConfig | None = None) -> dict[str, Any]:
    """Arm `arm` (b, c or d) as a dataset in out_dir; returns its _SUCCESS record (resumable)."""
    if arm not in ARM_KEYS:
        raise ValueError(f"arm must be one of {sorted(ARM_KEYS)}, got {arm!r}")
    if not 0.0 <= drop_fraction < 1.0:
        raise ValueError(f"drop_fraction must be in [0, 1), got {drop_fraction}")
    key = ARM_KEYS[arm]
    if key == "rating" and not ratings_dir:
        raise ValueError("arm d needs ratings_dir (the oracle's ratings of every file)")
    inputs: dict[str, Any] = {"in": os.path.abspath(scored_dir)}
    if key == "rating":
        inputs["ratings"] = os.path.abspath(ratings_dir)
    options = {"arm": arm, "key": key, "drop_fraction": drop_fraction, "seed": seed,
               "ratings": inputs.get("ratings"), "key_sha256": key_fingerprint(key, scored_dir, ratings_dir)}
    ctx = StepContext(kind="ablation_arm", name=f"arm_{arm}", out_dir=os.path.abspath(out_dir), options=options,
                      inputs=inputs, executor=executor or ExecutorConfig())
    return run_global_step(ctx, None, arm_reduce)


def dataset_ids(dataset_dir: str, *, dropped: bool = False) -> list[str]:
    """The row ids of a finished dataset (or of its dropped side tables)."""
    return [row_id for _, table in ds.iter_tables(dataset_dir, ["id"], dropped=dropped)
            for row_id in table.column("id").to_pylist()]


def dataset_column(dataset_dir: str, name: str, *, dropped: bool = False) -> list[Any]:
    return [value for _, table in ds.iter_tables(dataset_dir, [name], dropped=dropped)
            for value in table.column(name).to_pylist()]


__all__ = ["ARMS", "ARM_KEYS", "arm_reduce", "bottom_fraction", "build_arm", "dataset_column", "dataset_ids",
           "key_fingerprint", "ratings_by_id", "seeded_uniform"]
