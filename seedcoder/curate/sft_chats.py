"""The sft_chats step (issue [14]; Seed-Coder §3.1, the output): filtered instruction-response rows -> chats in the
Seed-Coder template with a system prompt and a sampling weight from the row's difficulty.

    [[steps]]
    step = "sft_chats"                   # in: the last step of the "sft" line (sft_filter, decontaminate, ...)
    weight_by_difficulty = {0 = 1.0, 4 = 2.0, 7 = 4.0}
    # system_prompt = "..."              # default: Seed-Coder's (seedcoder.chat_template.DEFAULT_SYSTEM_PROMPT)

    seedcoder data sft build runs/c/sft_chats --tokenizer tokenizer.json --out data/sft   # reads it directly

Per row (one task per shard): `messages`, a JSON string of [{"role": "system", "content": system_prompt},
{"role": "user", "content": the instruction (`text`)}, {"role": "assistant", "content": the response}] (no system
turn when `system_prompt` is ""; `seedcoder data sft build` then renders its own default); `difficulty` (the tag's,
float; null when the row was not tagged) and `weight`: the entry of `weight_by_difficulty` with the largest
difficulty key <= the row's difficulty (default {0: 1, 4: 2, 7: 4}: in the spirit of posttrain/sft.py's
DIFFICULTY_WEIGHTS easy 1, medium 2, hard 4, harder items are drawn more often), 1.0 for an untagged row.
`seedcoder data sft build` writes ln(weight) as each document's score; training with `data.score_temperature = 1`
draws documents with p ∝ weight. A row without an instruction or a response is dropped as "empty_chat: ...".

After the shards, `chats.jsonl` in the step directory (written atomically) holds one line per kept row, in
dataset order: {"messages": [...], "weight": w, "difficulty": d, "id": id}, for tools that read JSONL chats. The
_SUCCESS.json extra `sft_chats` counts the rows per weight.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from seedcoder.chat_template import DEFAULT_SYSTEM_PROMPT
from seedcoder.config import option
from seedcoder.curate import dataset as ds
from seedcoder.curate.errors import CurateStateError
from seedcoder.curate.step import StepContext, StepKind, column
from seedcoder.fileio import atomic_write

CHATS_FILE = "chats.jsonl"
DEFAULT_WEIGHTS = {"0": 1.0, "4": 2.0, "7": 4.0}
DIFFICULTY_RANGE = (0.0, 10.0)
REQUIRED_COLUMNS = ("id", "text", "response")


def weight_table(table: Mapping[str, float]) -> list[tuple[float, float]]:
    """{min difficulty (a string key, as TOML writes it): weight} -> [(min difficulty, weight)] sorted; ValueError
    naming the entry for a key that is not a number in 0..10, a weight that is not finite and > 0, or no entry for 0."""
    entries = []
    for key, weight in table.items():
        try:
            bound = float(key)
        except ValueError:
            raise ValueError(f"weight_by_difficulty: key {key!r} is not a difficulty (a number 0..10)") from None
        if not (math.isfinite(bound) and DIFFICULTY_RANGE[0] <= bound <= DIFFICULTY_RANGE[1]):
            raise ValueError(f"weight_by_difficulty: key {key!r} is outside 0..10")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight <= 0:
            raise ValueError(f"weight_by_difficulty.{key}: a weight must be a finite number > 0, got {weight!r}")
        entries.append((bound, float(weight)))
    entries.sort()
    if not entries or entries[0][0] != 0.0:
        raise ValueError(f"weight_by_difficulty: needs an entry for difficulty 0 (the weight of the easiest rows), got "
                         f"keys {sorted(table)}")
    return entries


def difficulty_weight(difficulty: float | None, entries: Sequence[tuple[float, float]]) -> float:
    """The weight of the largest bound <= difficulty; 1.0 for a row without a difficulty (not tagged)."""
    if difficulty is None or not math.isfinite(difficulty):
        return 1.0
    weight = entries[0][1]
    for bound, value in entries:
        if difficulty >= bound:
            weight = value
    return weight


def chat_messages(instruction: str, response: str, system_prompt: str) -> list[dict[str, str]]:
    system = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return [*system, {"role": "user", "content": instruction}, {"role": "assistant", "content": response}]


def check_columns(names: Sequence[str], where: str) -> None:
    missing = [name for name in REQUIRED_COLUMNS if name not in names]
    if missing:
        raise CurateStateError(f"sft_chats: {where} has no {', '.join(repr(name) for name in missing)} column(s): it "
                               "is not a dataset of the SFT line (sft_synthesize writes the response)")


def chat_rows(table: pa.Table, options: Mapping[str, Any]) -> tuple[np.ndarray, list[str | None], dict]:
    """The row function of one shard (`step.row_step_task`): messages, difficulty, weight; empty chats dropped."""
    check_columns(table.column_names, "the input")
    entries = weight_table(options["weight_by_difficulty"])
    messages, weights, difficulties, reasons = [], [], [], []
    for instruction, response, value in zip(column(table, "text"), column(table, "response"),
                                            column(table, "difficulty")):
        difficulty = None if value is None or not math.isfinite(float(value)) else float(value)
        difficulties.append(difficulty)
        if not (instruction or "").strip() or not (response or "").strip():
            what = "instruction" if not (instruction or "").strip() else "response"
            reasons.append(f"empty_chat: the row has no {what}")
            messages.append(None)
            weights.append(None)
            continue
        reasons.append(None)
        messages.append(json.dumps(chat_messages(instruction, response, options["system_prompt"]), ensure_ascii=False))
        weights.append(difficulty_weight(difficulty, entries))
    keep = np.array([reason is None for reason in reasons], dtype=bool)
    return keep, reasons, {"messages": pa.array(messages, pa.string()), "difficulty": pa.array(difficulties, pa.float64()),
                           "weight": pa.array(weights, pa.float64())}


def write_chats(out_dir: str, parts: Sequence[int]) -> dict[str, int]:
    """chats.jsonl from the kept rows of every shard, in order (atomically); returns the rows per weight."""
    counts: dict[str, int] = {}

    def body(file) -> None:
        for index in parts:
            table = ds.read_part(out_dir, index, ["id", "messages", "weight", "difficulty"])
            for row in table.to_pylist():
                line = {"messages": json.loads(row["messages"]), "weight": row["weight"],
                        "difficulty": row["difficulty"], "id": row["id"]}
                file.write((json.dumps(line, ensure_ascii=False) + "\n").encode("utf-8"))
                counts[f"{row['weight']:g}"] = counts.get(f"{row['weight']:g}", 0) + 1

    atomic_write(os.path.join(out_dir, CHATS_FILE), body)
    return dict(sorted(counts.items(), key=lambda item: float(item[0])))


def run_sft_chats(ctx: StepContext) -> dict[str, Any]:
    in_dir = ctx.inputs["in"]
    parts = ds.finished_parts(in_dir)
    if parts:  # the columns, before any work
        check_columns(ds.part_columns(in_dir, parts[0]), in_dir)
    done = ctx.prepare()
    if done is not None:
        return done
    tasks = ctx.part_tasks("seedcoder.curate.step:row_step_task", parts, rows="seedcoder.curate.sft_chats:chat_rows",
                           in_dir=in_dir, out_dir=ctx.out_dir, options=ctx.options)
    markers = ctx.run(tasks)
    weights = write_chats(ctx.out_dir, parts)
    return ctx.finish(markers, {"sft_chats": {"file": CHATS_FILE, "rows": sum(weights.values()),
                                              "rows_per_weight": weights}})


@dataclass
class SFTChatsOptions:
    system_prompt: str = option(DEFAULT_SYSTEM_PROMPT, "the system turn of every chat (default: Seed-Coder's); \"\" "
                                                       "for none")
    weight_by_difficulty: dict[str, float] = option(DEFAULT_WEIGHTS, "{min difficulty = weight}: a row's sampling "
                                                                     "weight is the entry of the largest key <= its "
                                                                     "difficulty (an entry for 0 is required)")

    def __post_init__(self) -> None:
        weight_table(self.weight_by_difficulty)


STEP = StepKind("sft_chats", "SFT chats (system prompt, instruction, response) with difficulty weights; chats.jsonl",
                run_sft_chats, SFTChatsOptions, in_line="sft")


__all__ = ["CHATS_FILE", "DEFAULT_WEIGHTS", "STEP", "SFTChatsOptions", "chat_messages", "chat_rows",
           "difficulty_weight", "run_sft_chats", "weight_table", "write_chats"]
