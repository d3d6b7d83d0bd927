"""Step 12, report: what each curation step kept and dropped, per language and reason; scores; the scorer's MAE.

    report = build_report(["runs/c/ingest", "runs/c/exact_dedup", ...], "runs/c/report", tokenizer="tok.json")

Reads the output directories of the steps (in pipeline order) and writes to out_dir:

    report.json     per step: totals and, per language, files / bytes / tokens kept and dropped, dropped ones
                    per reason category ("binary", "exact_duplicate", "syntax_error", ...); the score histogram
                    (20 bins over 0..10, overall and per language) of the last step that has a `score`
                    column; the oracle's rating counts; the scorer's held-out MAE (overall, per bucket); each
                    tokenize step's documents and tokens per language and source; web_recall's held-out recall
                    and precision, web_filter's effect per page category, hq_recall's table per source and round
                    (their plots are linked from their own folders); the SFT synthesis (when the pipeline has SFT
                    rows, source "sft"): rows kept / dropped per SFT step with reasons, sft_self_correct's
                    correction rounds histogram (its self_correction.png linked), the difficulty histogram (0..10,
                    11 bins) and the top 15 topics of the last sft_filter / sft_chats output
    report.md       the same as tables, with the plots
    steps.png       files kept and dropped per step; drop_reasons.png: dropped files per step and reason;
    scores.png      the score histogram and the oracle's rating histogram (matplotlib, Agg backend)
    sft_difficulty.png  the SFT items per difficulty (when there are tagged SFT rows)

Tokens are counted with `tokenizer` (default in a pipeline: the tokenize step's) once per row id, so a file
is tokenized once however many steps it passes; `count_tokens=False` skips them. Counting is most of the
report's time (every file, commit sample and repository document is tokenized): its progress goes to stderr.
Bytes are the `size_bytes` column (the file's size, also for dropped files whose text was not kept), else the
UTF-8 length of the text.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from seedcoder.config import option
from seedcoder.curate import dataset as ds
from seedcoder.curate import hq_recall
from seedcoder.curate.step import StepContext, StepKind
from seedcoder.fileio import atomic_write_text, save_png
from seedcoder.progress import progress as progress_bar
from seedcoder.tokenizer import load_tokenizer

SCORE_BINS = 20
SCORE_RANGE = (0.0, 10.0)
TOKENIZE_ROWS = 512  # texts per encode_batch call, and at most
TOKENIZE_CHARS = 1 << 21  # this many characters (repository documents are up to 1M each): progress stays fine-grained
# The SFT synthesis (issue [14]): its steps, and the steps whose kept rows carry the tags (difficulty, topic)
SFT_STEPS = ("sft_seeds", "sft_synthesize", "sft_self_correct", "sft_filter", "sft_chats")
SFT_TAGGED_STEPS = ("sft_filter", "sft_chats")
SFT_SOURCE = "sft"  # the `source` of SFT rows: the generic steps of the SFT line (dedup, decontaminate) count too
CORRECTION_ROUNDS_KEY = "correction_rounds"  # sft_self_correct's _SUCCESS.json: {"0": n, "1": n, ..., "never": n}
SELF_CORRECTION_PLOT = "self_correction.png"  # sft_self_correct's plot, in its folder
SFT_DIFFICULTY_PLOT = "sft_difficulty.png"
TOP_TOPICS = 15


class TokenCounter:
    """Token counts per row id, each text tokenized once (None: counting is off); `bar.update` per text counted."""

    def __init__(self, tokenizer_path: str | None):
        self.tokenizer = None
        if tokenizer_path and os.path.exists(tokenizer_path):
            self.tokenizer = load_tokenizer(tokenizer_path)
        self.counts: dict[str, int] = {}
        self.bar = None

    def count(self, ids: Sequence[str], texts: Sequence[str | None]) -> np.ndarray | None:
        if self.tokenizer is None:
            return None
        missing = [(i, t or "") for i, t in zip(ids, texts) if i not in self.counts]
        start = 0
        while start < len(missing):
            end, chars = start, 0
            while end < len(missing) and end - start < TOKENIZE_ROWS and (end == start or chars < TOKENIZE_CHARS):
                chars += len(missing[end][1])
                end += 1
            chunk = missing[start:end]
            encodings = self.tokenizer.encode_batch([text for _, text in chunk], add_special_tokens=False)
            for (row_id, _), encoding in zip(chunk, encodings):
                self.counts[row_id] = len(encoding.ids)
            if self.bar is not None:
                self.bar.update(len(chunk))
            start = end
        return np.array([self.counts[i] for i in ids], dtype=np.int64)


def _dataset_parts(step_dir: str) -> list[tuple[str, bool]]:
    """(path, dropped) of the kept, then the dropped part files of a finished dataset step."""
    paths = [(ds.dropped_path(step_dir, index) if dropped else ds.part_path(step_dir, index), dropped)
             for dropped in (False, True) for index in ds.finished_parts(step_dir)]
    return [(path, dropped) for path, dropped in paths if os.path.exists(path)]


def _distinct_ids(step_dirs: Sequence[str]) -> set[str]:
    """Row ids of every finished dataset step: the texts the report tokenizes (id columns only: cheap)."""
    ids: set[str] = set()
    for step_dir in step_dirs:
        if "parts" in (ds.success_record(step_dir) or {}):
            for path, _ in _dataset_parts(step_dir):
                ids.update(ds.read_table(path, ["id"]).column("id").to_pylist())
    return ids


def _empty_counts() -> dict[str, int]:
    return {"kept_rows": 0, "kept_bytes": 0, "kept_tokens": 0, "dropped_rows": 0, "dropped_bytes": 0,
            "dropped_tokens": 0}


def _sizes(table) -> np.ndarray:
    if "size_bytes" in table.column_names:
        return np.asarray(table.column("size_bytes").fill_null(0).to_numpy(zero_copy_only=False), dtype=np.int64)
    lengths = pc.binary_length(table.column("text")).fill_null(0)
    return np.asarray(lengths.to_numpy(zero_copy_only=False), dtype=np.int64)


def _step_counts(step_dir: str, counter: TokenCounter | None) -> dict[str, Any]:
    """Per language and per reason category: rows, bytes and tokens kept and dropped by one dataset step."""
    languages: dict[str, dict[str, Any]] = {}
    reasons: dict[str, dict[str, int]] = {}
    totals = _empty_counts()
    for path, dropped in _dataset_parts(step_dir):
        names = pq.read_schema(path).names
        wanted = ["id", "language", *(["size_bytes"] if "size_bytes" in names else []),
                  *(["text"] if counter is not None or "size_bytes" not in names else []),
                  *([ds.DROP_REASON] if dropped else [])]
        table = ds.read_table(path, wanted)
        if table.num_rows == 0:
            continue
        prefix = "dropped" if dropped else "kept"
        sizes = _sizes(table)
        tokens = None
        if counter is not None and counter.tokenizer is not None:
            tokens = counter.count(table.column("id").to_pylist(), table.column("text").to_pylist())
        language_column = [value or "unknown" for value in table.column("language").to_pylist()]
        categories = ([ds.drop_category(r or "") for r in table.column(ds.DROP_REASON).to_pylist()] if dropped
                      else [None] * table.num_rows)
        for row, language in enumerate(language_column):
            group = languages.setdefault(language, {**_empty_counts(), "drop_reasons": {}})
            row_tokens = int(tokens[row]) if tokens is not None else 0
            for target in (group, totals):
                target[f"{prefix}_rows"] += 1
                target[f"{prefix}_bytes"] += int(sizes[row])
                target[f"{prefix}_tokens"] += row_tokens
            if dropped:
                for where in (group["drop_reasons"], reasons):
                    entry = where.setdefault(categories[row], {"rows": 0, "bytes": 0, "tokens": 0})
                    entry["rows"] += 1
                    entry["bytes"] += int(sizes[row])
                    entry["tokens"] += row_tokens
    if counter is None or counter.tokenizer is None:  # no tokenizer: no token counts at all (not zeros)
        for group in [totals, *languages.values()]:
            group.pop("kept_tokens", None)
            group.pop("dropped_tokens", None)
    return {"totals": totals, "drop_reasons": dict(sorted(reasons.items(), key=lambda item: -item[1]["rows"])),
            "languages": dict(sorted(languages.items(),
                                     key=lambda item: -item[1]["kept_rows"] - item[1]["dropped_rows"]))}


def _score_histogram(step_dir: str) -> dict[str, Any] | None:
    edges = np.linspace(*SCORE_RANGE, SCORE_BINS + 1)
    overall = np.zeros(SCORE_BINS, dtype=np.int64)
    per_language: dict[str, np.ndarray] = {}
    values = []
    for index in ds.finished_parts(step_dir):
        names = ds.part_columns(step_dir, index)
        if "score" not in names:
            return None
        table = ds.read_part(step_dir, index, ["score", "language"])
        scores = np.asarray(table.column("score").to_numpy(zero_copy_only=False), dtype=np.float64)
        values.append(scores)
        for language, score in zip(table.column("language").to_pylist(), scores):
            bucket = int(np.clip(np.searchsorted(edges, score, side="right") - 1, 0, SCORE_BINS - 1))
            overall[bucket] += 1
            per_language.setdefault(language or "unknown", np.zeros(SCORE_BINS, dtype=np.int64))[bucket] += 1
    joined = np.concatenate(values) if values else np.zeros(0)
    summary = {}
    if len(joined):
        summary = {"mean": float(joined.mean()), "p10": float(np.percentile(joined, 10)),
                   "median": float(np.median(joined)), "p90": float(np.percentile(joined, 90))}
    return {"bins": SCORE_BINS, "range": list(SCORE_RANGE), "all": overall.tolist(), **summary,
            "languages": {name: counts.tolist() for name, counts in sorted(per_language.items())}}


def _ratings(step_dir: str) -> dict[str, Any]:
    counts = np.zeros(11, dtype=np.int64)
    languages: dict[str, list[int]] = {}
    for _, table in ds.iter_tables(step_dir, ["rating", "language"]):
        for rating, language in zip(table.column("rating").to_pylist(), table.column("language").to_pylist()):
            if rating is not None and 0 <= rating <= 10:
                counts[int(rating)] += 1
                languages.setdefault(language or "unknown", []).append(int(rating))
    success = ds.success_record(step_dir) or {}
    return {"counts": counts.tolist(), "rated": int(counts.sum()),
            "unparseable": success.get("totals", {}).get("drop_reasons", {}).get("unparseable_rating", 0),
            "oracle": success.get("oracle", []),
            "mean_by_language": {name: float(np.mean(values)) for name, values in sorted(languages.items())}}


def _holds_sft_rows(step_dir: str) -> bool:
    """Whether a dataset step's rows are SFT items (their `source` is "sft"): its first row, kept or dropped, says."""
    for path, _ in _dataset_parts(step_dir):
        if "source" not in pq.read_schema(path).names:
            return False
        sources = ds.read_table(path, ["source"]).column("source")
        if len(sources):
            return sources[0].as_py() == SFT_SOURCE
    return False


def _sft_tags(step_dir: str) -> dict[str, Any] | None:
    """The difficulty histogram (0..10, rounded half up) and the topic counts of a step's kept rows, or None when
    its rows have no difficulty column."""
    counts = np.zeros(11, dtype=np.int64)
    topics: dict[str, int] = {}
    untagged = rows = 0
    for index in ds.finished_parts(step_dir):
        names = ds.part_columns(step_dir, index)
        if "difficulty" not in names:
            return None
        table = ds.read_part(step_dir, index, ["difficulty", *(["topic"] if "topic" in names else [])])
        rows += table.num_rows
        for difficulty in table.column("difficulty").to_pylist():
            if difficulty is None or not np.isfinite(difficulty):
                untagged += 1
            else:
                counts[int(np.clip(np.floor(difficulty + 0.5), 0, 10))] += 1
        for topic in (table.column("topic").to_pylist() if "topic" in names else []):
            if topic:
                topics[topic] = topics.get(topic, 0) + 1
    ranked = sorted(topics.items(), key=lambda item: (-item[1], item[0]))
    return {"rows": rows, "untagged": untagged, "counts": counts.tolist(), "distinct_topics": len(topics),
            "topics": [[name, count] for name, count in ranked[:TOP_TOPICS]]}


def _sft_entry(report: dict[str, Any], name: str, kind: str | None, step_dir: str, success: Mapping[str, Any]) -> None:
    """Add a step of the SFT line to report["sft"]: its counts, and its rounds histogram or tags when it has them."""
    sft = report["sft"] = report["sft"] or {"steps": [], "correction_rounds": None, "difficulty": None}
    totals = success.get("totals", {})
    sft["steps"].append({"name": name, "step": kind, "kept": totals.get("kept_rows", 0),
                         "dropped": totals.get("dropped_rows", 0), "drop_reasons": totals.get("drop_reasons", {})})
    rounds = success.get(CORRECTION_ROUNDS_KEY)
    if kind == "sft_self_correct" and isinstance(rounds, Mapping):
        order = sorted(rounds, key=lambda key: (not str(key).isdigit(), int(key) if str(key).isdigit() else 0, key))
        plot = SELF_CORRECTION_PLOT if os.path.exists(os.path.join(step_dir, SELF_CORRECTION_PLOT)) else None
        sft["correction_rounds"] = {"step": name, "dir": os.path.abspath(step_dir), "plot": plot,
                                    "counts": {str(key): int(rounds[key]) for key in order}}
    if kind in SFT_TAGGED_STEPS:
        tags = _sft_tags(step_dir)
        if tags is not None:  # the last tagged step's
            sft["difficulty"] = {"step": name, **tags}


def build_report(step_dirs: Sequence[str], out_dir: str, *, tokenizer: str | None = None,
                 count_tokens: bool = True, progress: bool = True) -> dict[str, Any]:
    """Write report.json, report.md and the plots for the steps in `step_dirs`; returns the report dict.
    progress: the token counting's progress on stderr (seedcoder.progress)."""
    os.makedirs(out_dir, exist_ok=True)
    counter = TokenCounter(tokenizer) if count_tokens and tokenizer else None
    if counter is not None and counter.tokenizer is not None:
        counter.bar = progress_bar(len(_distinct_ids(step_dirs)), "report: counting tokens", unit="file",
                                   enabled=progress)
    try:
        report = _report(step_dirs, counter, tokenizer)
    finally:
        if counter is not None and counter.bar is not None:
            counter.bar.close()
    report["files"] = ["report.json", "report.md", *_plots(report, out_dir)]
    atomic_write_text(os.path.join(out_dir, "report.json"), json.dumps(report, indent=1) + "\n")
    atomic_write_text(os.path.join(out_dir, "report.md"), render_markdown(report, out_dir))
    return report


def _report(step_dirs: Sequence[str], counter: TokenCounter | None, tokenizer: str | None) -> dict[str, Any]:
    report: dict[str, Any] = {"steps": [], "scores": None, "score_filter": None, "ratings": None, "scorer": None,
                              "shards": [], "web_recall": None, "web_filter": None, "hq_recall": None, "sft": None,
                              "tokenizer": tokenizer if counter is not None and counter.tokenizer is not None else None}
    for step_dir in step_dirs:
        record = ds.step_record(step_dir) or {}
        success = ds.success_record(step_dir)
        name = record.get("name") or os.path.basename(step_dir)
        entry: dict[str, Any] = {"name": name, "step": record.get("step"), "dir": os.path.abspath(step_dir),
                                 "finished": success is not None}
        if success is None:
            report["steps"].append(entry)
            continue
        if "parts" in success:
            entry.update(kind="dataset", parts=success["parts"], **_step_counts(step_dir, counter))
            # the score histogram of every scored file: the score step's (else the last step with scores)
            current = report["scores"]
            if success["parts"] and (current is None or current.get("kind") != "score"):
                histogram = _score_histogram(step_dir)
                if histogram is not None:
                    report["scores"] = {"step": name, "kind": record.get("step"), **histogram}
            if record.get("step") == "score_filter":
                reduce = success.get("reduce", {})
                report["score_filter"] = {"step": name, "drop_fraction": record.get("options", {}).get("drop_fraction"),
                                          "by": reduce.get("by"), "keep_from": reduce.get("keep_from"),
                                          "dropped": reduce.get("dropped")}
            if record.get("step") == "oracle":
                report["ratings"] = {"step": name, **_ratings(step_dir)}
            # the web and high-quality steps' own summaries (their plots stay in their folders)
            for kind, key in (("web_recall", "recall"), ("web_filter", "web_filter"), ("hq_recall", "hq_recall")):
                if record.get("step") == kind and isinstance(success.get(key), Mapping):
                    report[kind] = {"step": name, "dir": os.path.abspath(step_dir), **success[key]}
            if record.get("step") in SFT_STEPS or _holds_sft_rows(step_dir):
                _sft_entry(report, name, record.get("step"), step_dir, success)
        elif success.get("kind") == "model":
            entry.update(kind="model", metrics=success.get("metrics"))
            report["scorer"] = {"step": name, **(success.get("metrics") or {})}
        elif success.get("kind") == "shards":
            entry.update(kind="shards", totals=success.get("totals"))
            manifest_path = os.path.join(step_dir, "manifest.json")
            if os.path.exists(manifest_path):
                with open(manifest_path, encoding="utf-8") as file:
                    manifest = json.load(file)
                report["shards"].append({"step": name, "totals": manifest["totals"],
                                    "languages": {k: {"documents": v["documents"], "tokens": v["tokens"]}
                                                  for k, v in manifest["languages"].items()},
                                    "sources": {k: {"documents": v["documents"], "tokens": v["tokens"]}
                                                for k, v in manifest["sources"].items()}})
        else:
            entry.update(kind=success.get("kind", "other"))
        report["steps"].append(entry)
    return report


# ------------------------------------------------------------------------------------------ markdown
def _mib(value: int) -> str:
    """Bytes, human-readable (B, KiB, MiB, GiB)."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if value >= scale:
            return f"{value / scale:.1f} {unit}"
    return f"{value} B"


def _plot_link(section: Mapping[str, Any], file: str | None, out_dir: str | None, title: str) -> list[str]:
    if not file:
        return []
    path = os.path.join(section["dir"], file)
    return [f"![{title}]({os.path.relpath(path, out_dir) if out_dir else path})", ""]


def _web_and_hq_sections(report: Mapping[str, Any], out_dir: str | None) -> list[str]:
    """Web recall (held-out recall / precision), the web filter per page category, the high-quality set's rounds."""
    lines: list[str] = []
    recall = report.get("web_recall")
    if recall:
        paths = recall.get("pages_by_path") or {}
        lines += ["## Web recall", "", f"Step {recall['step']}: threshold {recall['threshold']:.4f} "
                  f"({recall.get('threshold_how', '')}); pages by path: "
                  + ", ".join(f"{key} {value:,}" for key, value in paths.items()) + ".", ""]
        if recall.get("heldout_pages"):
            lines += [f"On the {recall['heldout_pages']:,} held-out labelled pages (never trained on): classifier "
                      f"recall {recall['heldout_recall']:.3f}, precision {recall['heldout_precision']:.3f}; the step "
                      f"(rule path + classifier) recall {recall['heldout_step_recall']:.3f}, precision "
                      f"{recall['heldout_step_precision']:.3f}.", ""]
        lines += _plot_link(recall, "precision_recall.png" if "precision_recall.png" in recall.get("files", [])
                            else None, out_dir, "precision and recall against the threshold")
    web = report.get("web_filter")
    if web:
        compare = web.get("compare_global") or {}
        global_rows = compare.get("categories", {})
        lines += ["## Web filter by page category", "", f"Step {web['step']} on `{web.get('score_column')}`: "
                  f"{web.get('after_sampling', 0):,} of {web.get('rows', 0):,} pages kept; one global threshold "
                  f"{compare.get('threshold', float('nan')):g} would keep "
                  f"{compare.get('total', {}).get('global_kept', 0):,}.", "",
                  "| category | pages | mean score | threshold | above it | sampling | kept | global threshold keeps |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for category, values in web.get("categories", {}).items():
            lines.append(f"| {category} | {values['rows']:,} | {values['mean_score']:.2f} | {values['threshold']:g} | "
                         f"{values['after_threshold']:,} | {values['sampling']:g} | {values['after_sampling']:,} | "
                         f"{global_rows.get(category, {}).get('global_kept', 0):,} |")
        lines.append("")
        lines += _plot_link(web, web.get("plot"), out_dir, "web filter")
    hq = report.get("hq_recall")
    if hq and hq.get("rounds") is not None:
        lines += ["## High-quality set (iterative recall)", "", f"Step {hq['step']}:", "", hq_recall.rounds_markdown(hq)]
        lines += _plot_link(hq, hq_recall.PLOT_FILE, out_dir, "high-quality recall per round")
    return lines


def _sft_section(report: Mapping[str, Any], out_dir: str | None) -> list[str]:
    """The SFT synthesis: rows per step with reasons, the self-correction rounds, difficulties and topics."""
    sft = report.get("sft")
    if not sft:
        return []
    lines = ["## SFT synthesis", "", "| step | kind | kept | dropped | dropped by reason |", "|---|---|---:|---:|---|"]
    for step in sft["steps"]:
        reasons = ", ".join(f"{reason} {count:,}" for reason, count in step["drop_reasons"].items()) or "-"
        lines.append(f"| {step['name']} | {step['step'] or '-'} | {step['kept']:,} | {step['dropped']:,} | {reasons} |")
    lines.append("")
    rounds = sft.get("correction_rounds")
    if rounds:
        counts = rounds["counts"]
        lines += ["### Self-correction rounds", "", f"Step {rounds['step']}: revisions a verifiable item needed before "
                  "its solution passed its tests in the sandbox (0: the first try; never: dropped).", "",
                  "| revisions | " + " | ".join(counts) + " |", "|---|" + "---:|" * len(counts),
                  "| items | " + " | ".join(f"{count:,}" for count in counts.values()) + " |", ""]
        lines += _plot_link(rounds, rounds.get("plot"), out_dir, "self-correction rounds")
    difficulty = sft.get("difficulty")
    if difficulty:
        lines += ["### Difficulty", "", f"Step {difficulty['step']}: {difficulty['rows']:,} items"
                  + (f" ({difficulty['untagged']:,} untagged)" if difficulty["untagged"] else "") + ".", "",
                  "| difficulty | " + " | ".join(str(i) for i in range(11)) + " |", "|---|" + "---:|" * 11,
                  "| items | " + " | ".join(f"{count:,}" for count in difficulty["counts"]) + " |", "",
                  f"![difficulty]({SFT_DIFFICULTY_PLOT})", ""]
        if difficulty["topics"]:
            lines += [f"### Topics (top {len(difficulty['topics'])} of {difficulty['distinct_topics']:,})", "",
                      "| topic | items |", "|---|---:|"]
            lines += [f"| {topic} | {count:,} |" for topic, count in difficulty["topics"]]
            lines.append("")
    return lines


def render_markdown(report: Mapping[str, Any], out_dir: str | None = None) -> str:
    has_tokens = report.get("tokenizer") is not None
    lines = ["# Curation report", ""]
    header = "| step | files kept | files dropped | bytes kept | bytes dropped |" + (" tokens kept | tokens dropped |"
                                                                                 if has_tokens else "")
    lines += [header, "|" + "---|" * (header.count("|") - 1)]
    datasets = [step for step in report["steps"] if step.get("kind") == "dataset"]
    for step in datasets:
        t = step["totals"]
        row = (f"| {step['name']} | {t['kept_rows']:,} | {t['dropped_rows']:,} | {_mib(t['kept_bytes'])} | "
               f"{_mib(t['dropped_bytes'])} |")
        if has_tokens:
            row += f" {t.get('kept_tokens', 0):,} | {t.get('dropped_tokens', 0):,} |"
        lines.append(row)
    lines += ["", "![files per step](steps.png)", "", "## Dropped, by step and reason", "",
              "| step | reason | files | bytes |" + (" tokens |" if has_tokens else ""),
              "|---|---|---|---|" + ("---|" if has_tokens else "")]
    for step in datasets:
        for reason, counts in step["drop_reasons"].items():
            lines.append(f"| {step['name']} | {reason} | {counts['rows']:,} | {_mib(counts['bytes'])} |"
                         + (f" {counts['tokens']:,} |" if has_tokens else ""))
    lines += ["", "![drop reasons](drop_reasons.png)", ""]
    for step in datasets:
        lines += [f"### {step['name']} by language", "",
                  "| language | files kept | files dropped | bytes kept | bytes dropped |"
                  + (" tokens kept | tokens dropped |" if has_tokens else "") + " dropped by reason |",
                  "|---|---|---|---|---|" + ("---|---|" if has_tokens else "") + "---|"]
        for language, counts in step["languages"].items():
            reasons = ", ".join(f"{name} {value['rows']}" for name, value in counts["drop_reasons"].items())
            row = (f"| {language} | {counts['kept_rows']:,} | {counts['dropped_rows']:,} | "
                   f"{_mib(counts['kept_bytes'])} | {_mib(counts['dropped_bytes'])} |")
            if has_tokens:
                row += f" {counts.get('kept_tokens', 0):,} | {counts.get('dropped_tokens', 0):,} |"
            lines.append(row + f" {reasons} |")
        lines.append("")
    ratings = report.get("ratings")
    if ratings:
        lines += ["## Oracle ratings", "", f"Step {ratings['step']}, oracle {', '.join(ratings['oracle']) or '?'}: "
                  f"{ratings['rated']} rated, {ratings['unparseable']} unparseable answers excluded.", "",
                  "| rating | " + " | ".join(str(i) for i in range(11)) + " |", "|---|" + "---|" * 11,
                  "| files | " + " | ".join(str(c) for c in ratings["counts"]) + " |", ""]
    scorer = report.get("scorer")
    if scorer:
        lines += ["## Scorer", "", f"Held-out MAE {scorer.get('mae', float('nan')):.3f} on the 0..10 scale "
                  f"(predicting the training mean: {scorer.get('baseline_mae', float('nan')):.3f}; "
                  f"n_eval {scorer.get('n_eval')}).", ""]
        buckets = scorer.get("buckets") or {}
        if buckets:
            lines += ["| rating bucket | MAE | files |", "|---|---|---|"]
            for bucket, values in buckets.items():
                mae = values.get("mae")
                lines.append(f"| {bucket} | {'-' if mae is None else f'{mae:.3f}'} | {values.get('count', 0)} |")
            lines.append("")
    scores = report.get("scores")
    if scores:
        width = (scores["range"][1] - scores["range"][0]) / scores["bins"]
        lines += ["## Scores", "", f"Step {scores['step']}: mean {scores.get('mean', 0):.2f}, "
                  f"p10 {scores.get('p10', 0):.2f}, median {scores.get('median', 0):.2f}, "
                  f"p90 {scores.get('p90', 0):.2f}.", ""]
        kept_from = report.get("score_filter")
        if kept_from:
            limits = ", ".join(f"{group} {value:.3f}" for group, value in (kept_from["keep_from"] or {}).items()
                               if value is not None)
            lines += [f"Step {kept_from['step']} dropped the bottom {kept_from['drop_fraction']:.0%} "
                      f"({kept_from['by']}): {kept_from['dropped']} files; lowest score kept: {limits}.", ""]
        lines += ["| score | files |", "|---|---|"]
        for index, count in enumerate(scores["all"]):
            lines.append(f"| {index * width:.1f}-{(index + 1) * width:.1f} | {count} |")
        lines += ["", "![scores](scores.png)", ""]
    lines += _web_and_hq_sections(report, out_dir)
    lines += _sft_section(report, out_dir)
    for shards in report.get("shards") or []:  # each tokenize step
        totals = shards["totals"]
        lines += [f"## Shards: {shards['step']}", "", f"{totals['documents']:,} documents, {totals['tokens']:,} tokens "
                  f"in {totals['shards']} shard(s).", "", "| source / language | documents | tokens |", "|---|---|---|"]
        for group in ("sources", "languages"):
            for name, values in shards[group].items():
                lines.append(f"| {name} | {values['documents']:,} | {values['tokens']:,} |")
        lines.append("")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------ plots
def _plots(report: Mapping[str, Any], out_dir: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    datasets = [step for step in report["steps"] if step.get("kind") == "dataset"]
    if datasets:
        names = [step["name"] for step in datasets]
        kept = [step["totals"]["kept_rows"] for step in datasets]
        dropped = [step["totals"]["dropped_rows"] for step in datasets]
        figure, axis = plt.subplots(figsize=(max(6, 1.1 * len(names)), 4))
        positions = np.arange(len(names))
        axis.bar(positions, kept, label="kept", color="#4c72b0")
        axis.bar(positions, dropped, bottom=kept, label="dropped", color="#dd8452")
        axis.set_xticks(positions, names, rotation=30, ha="right")
        axis.set_ylabel("files")
        axis.set_title("files kept and dropped per step")
        axis.legend()
        save_png(figure, os.path.join(out_dir, "steps.png"), bbox_inches="tight")
        written.append("steps.png")

        categories = sorted({reason for step in datasets for reason in step["drop_reasons"]})
        figure, axis = plt.subplots(figsize=(max(6, 1.1 * len(names)), 4))
        bottom = np.zeros(len(names))
        colors = plt.get_cmap("tab20")
        for number, category in enumerate(categories):
            values = np.array([step["drop_reasons"].get(category, {}).get("rows", 0) for step in datasets])
            axis.bar(positions, values, bottom=bottom, label=category, color=colors(number % 20))
            bottom += values
        axis.set_xticks(positions, names, rotation=30, ha="right")
        axis.set_ylabel("files dropped")
        axis.set_title("dropped files per step and reason")
        if categories:
            axis.legend(fontsize="small", ncol=2)
        save_png(figure, os.path.join(out_dir, "drop_reasons.png"), bbox_inches="tight")
        written.append("drop_reasons.png")

    scores, ratings = report.get("scores"), report.get("ratings")
    if scores or ratings:
        figure, axes = plt.subplots(1, 2, figsize=(11, 4))
        if scores:
            edges = np.linspace(scores["range"][0], scores["range"][1], scores["bins"] + 1)
            axes[0].bar(edges[:-1], scores["all"], width=np.diff(edges), align="edge", color="#4c72b0")
            axes[0].set_title(f"scores ({scores['step']})")
            axes[0].set_xlabel("score (0..10)")
            axes[0].set_ylabel("files")
        if ratings:
            axes[1].bar(np.arange(11), ratings["counts"], color="#55a868")
            axes[1].set_title(f"oracle ratings ({', '.join(ratings['oracle']) or ratings['step']})")
            axes[1].set_xlabel("rating")
            axes[1].set_xticks(np.arange(11))
        save_png(figure, os.path.join(out_dir, "scores.png"), bbox_inches="tight")
        written.append("scores.png")

    difficulty = (report.get("sft") or {}).get("difficulty")
    if difficulty:
        figure, axis = plt.subplots(figsize=(6, 4))
        axis.bar(np.arange(11), difficulty["counts"], color="#8172b3")
        axis.set_xticks(np.arange(11))
        axis.set_xlabel("difficulty (the tag's, 0..10)")
        axis.set_ylabel("items")
        axis.set_title(f"SFT items per difficulty ({difficulty['step']})")
        save_png(figure, os.path.join(out_dir, SFT_DIFFICULTY_PLOT), bbox_inches="tight")
        written.append(SFT_DIFFICULTY_PLOT)
    return written


# ------------------------------------------------------------------------------------------ the step
def run_report(ctx: StepContext) -> dict[str, Any]:
    done = ctx.prepare()
    if done is not None:
        return done
    report = build_report(ctx.inputs["steps"], ctx.out_dir, tokenizer=ctx.options["tokenizer"],
                          count_tokens=ctx.options["count_tokens"], progress=ctx.executor.progress)
    return ctx.finish_other({"kind": "report", "files": sorted(report["files"])})


@dataclass
class ReportOptions:
    tokenizer: str | None = option(None, "count tokens with this tokenizer.json (default: the tokenize step's)")
    count_tokens: bool = option(True, "count tokens of kept and dropped rows (tokenizes every text once)")


STEP = StepKind("report", "per step and language: kept / dropped with reasons, scores, MAE; md+json+png", run_report,
                ReportOptions, reads=("steps",), line="report")


__all__ = ["STEP", "ReportOptions", "TokenCounter", "build_report", "render_markdown", "run_report"]
