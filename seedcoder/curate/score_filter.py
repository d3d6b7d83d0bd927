"""Step 7b, score_filter: the bottom `drop_fraction` of files by score dropped, over all files or per language
("low_score: S is in the bottom 10% (of LANGUAGE | overall)"). Ties: the earlier row is dropped first.

A global step with no map phase: the reduce reads the `score` column of every input shard.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from seedcoder.config import option
from seedcoder.curate import dataset as ds
from seedcoder.curate.errors import CurateStateError
from seedcoder.curate.step import StepContext, StepKind, run_global_step, split_decisions


def score_filter_reduce(map_paths: Sequence[str], parts: Sequence[int], options: Mapping[str, Any]
                        ) -> tuple[list[pa.Table], dict[str, Any]]:
    tables = [ds.read_table(path, None) for path in map_paths]
    for path, table in zip(map_paths, tables):
        if "score" not in table.column_names:
            raise CurateStateError(f"score_filter: {path} has no `score` column; run the score step before it")
    sizes = [table.num_rows for table in tables]
    scores = np.concatenate([np.asarray(table.column("score").to_numpy(zero_copy_only=False), dtype=np.float64)
                             for table in tables]) if tables else np.zeros(0)
    languages = [value or "unknown" for table in tables for value in table.column("language").to_pylist()]
    fraction, by = options["drop_fraction"], options["by"]
    groups: dict[str, list[int]] = {}
    for row, language in enumerate(languages):
        groups.setdefault(language if by == "language" else "all", []).append(row)
    keep = np.ones(len(scores), dtype=bool)
    reasons: list[str | None] = [None] * len(scores)
    thresholds = {}
    for group, rows in groups.items():
        rows_array = np.array(rows, dtype=np.int64)
        order = rows_array[np.argsort(scores[rows_array], kind="stable")]  # ties: the earlier row is dropped first
        cut = int(np.floor(fraction * len(order)))
        thresholds[group] = float(scores[order[cut]]) if cut < len(order) else None
        for row in order[:cut].tolist():
            keep[row] = False
            reasons[row] = (f"low_score: {scores[row]:.3f} is in the bottom {fraction:.0%} "
                            f"({'of ' + group if by == 'language' else 'overall'})")
    decisions = split_decisions(sizes, {"keep": pa.array(keep), ds.DROP_REASON: pa.array(reasons, pa.string())})
    return decisions, {"rows": len(scores), "dropped": int((~keep).sum()), "by": by, "keep_from": thresholds}


def run_score_filter(ctx: StepContext) -> dict[str, Any]:
    return run_global_step(ctx, None, score_filter_reduce)


@dataclass
class ScoreFilterOptions:
    drop_fraction: float = option(0.1, "fraction of files to drop (the bottom by score)")
    by: str = option("global", "global, or language: the fraction is taken per language")

    def __post_init__(self) -> None:
        if not 0.0 <= self.drop_fraction < 1.0:
            raise ValueError(f"drop_fraction: must be in [0, 1), got {self.drop_fraction}")
        if self.by not in ("global", "language"):
            raise ValueError(f"by: must be 'global' or 'language', got {self.by!r}")


STEP = StepKind("score_filter", "drop the lowest-scored files", run_score_filter, ScoreFilterOptions)


__all__ = ["STEP", "ScoreFilterOptions", "run_score_filter", "score_filter_reduce"]
