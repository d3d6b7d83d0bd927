"""The web_filter step: scored web pages kept by per-category thresholds and sampling rates.

LLM raters are biased by site type (Seed-Coder: documentation and shops rate high, forums low), so one global
threshold keeps too much of some kinds of site and too little of others. This step sets the bar per page category
(the `category` column of `web_ingest`, `web_ingest.CATEGORIES`):

    [[steps]]
    step = "web_filter"
    in = "score_web"          # a scored web dataset: `score` from the score step, or an oracle step with
                              # rubric = "web" that rated every page (then score_column = "rating_score")
    score_column = "score"
    thresholds = {docs = 6.0, qa = 4.0, forum = 3.5, shop = 8.0, default = 5.0}
    sampling = {docs = 0.5, forum = 1.0, default = 1.0}
    seed = 0
    compare_threshold = 5.0   # the single global threshold the summary compares with (default: thresholds.default)

A page is kept when its score >= its category's threshold (`default` for a category not listed; `default` is
required), and then with its category's sampling rate (`default` for a category not listed, else 1.0): a seeded
hash of its id (`sample_value`), the same on every run, for every shard layout and after a resume. Drop reasons:
"low_score: 4.2 < 6.0 (docs)", "sampled_out: docs keeps 50%", and "no_score: ..." for a row without a score (a null
or NaN). A row whose category is null counts as "other".

The summary (in _SUCCESS.json, key "web_filter"): per category the rows, the scored rows, the mean score, the
threshold and the sampling rate, the rows after the threshold and after sampling, and a 20-bin score histogram;
and `compare_global` (a pure function: what the single threshold `compare_threshold` would keep of each category,
with no sampling, next to what the per-category settings keep). The plot `web_filter.png` in the step directory
shows the score histogram of each category with its threshold (and the global one dashed), and the kept share of
each category under the global threshold and under the per-category settings.

Runs one task per input shard (per-shard decisions need nothing global), so it resumes after a kill like every
per-shard step; the summary is read back from the output (ids, categories, scores of kept and dropped rows).
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from seedcoder.config import option
from seedcoder.curate import dataset as ds
from seedcoder.curate.errors import CurateStateError
from seedcoder.curate.step import StepContext, StepKind, column, say
from seedcoder.curate.web_ingest import CATEGORIES
from seedcoder.fileio import save_png

DEFAULT_THRESHOLDS = {"docs": 6.0, "qa": 4.0, "forum": 3.5, "shop": 8.0, "default": 5.0}
DEFAULT_SAMPLING = {"docs": 0.5, "forum": 1.0, "default": 1.0}
CATEGORY_COLUMN = "category"
PLOT_FILE = "web_filter.png"
HISTOGRAM_BINS = 20  # over 0..10
SCORE_RANGE = (0.0, 10.0)


# ------------------------------------------------------------------------------------------ decisions
def category_of(value: Any) -> str:
    """The category a row counts under: its value, or "other" when it has none."""
    return value if isinstance(value, str) and value else "other"


def setting(table: Mapping[str, float], category: str, fallback: float | None = None) -> float:
    """A category's threshold or sampling rate: its own entry, else `default`, else `fallback`."""
    if category in table:
        return float(table[category])
    if "default" in table:
        return float(table["default"])
    if fallback is None:
        raise KeyError(f"no setting for category {category!r} and no 'default'")
    return fallback


def sample_value(row_id: str, seed: int) -> float:
    """A number in [0, 1) from the row's id and the seed (SHA-256): a row with value < rate is kept."""
    digest = hashlib.sha256(f"{seed}\x00{row_id}".encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def _number(value: float) -> str:
    """4.2 -> "4.2", 6 -> "6.0", 5.96 -> "5.96": up to two decimals, at least one."""
    text = f"{value:.2f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def _percent(rate: float) -> str:
    return f"{rate * 100:.4g}%"


def web_filter_decisions(ids: Sequence[str], categories: Sequence[Any], scores: Sequence[float | None],
                         thresholds: Mapping[str, float], sampling: Mapping[str, float], seed: int
                         ) -> tuple[np.ndarray, list[str | None], np.ndarray]:
    """(keep flags, drop reasons, passed-the-threshold flags) of rows: the threshold of each row's category, then
    its sampling rate by `sample_value` (module docstring)."""
    count = len(ids)
    if len(categories) != count or len(scores) != count:
        raise ValueError(f"web_filter_decisions: {count} ids but {len(categories)} categories and {len(scores)} scores")
    keep = np.zeros(count, dtype=bool)
    passed = np.zeros(count, dtype=bool)
    reasons: list[str | None] = [None] * count
    for row, (row_id, value, score) in enumerate(zip(ids, categories, scores)):
        category = category_of(value)
        if score is None or not math.isfinite(float(score)):
            reasons[row] = "no_score: the row has no score"
            continue
        threshold = setting(thresholds, category)
        if score < threshold:
            shown = _number(score)
            if float(shown) >= threshold:  # rounding must not print "6.0 < 6.0"
                shown = f"{score:.6g}"
            reasons[row] = f"low_score: {shown} < {_number(threshold)} ({category})"
            continue
        passed[row] = True
        rate = setting(sampling, category, 1.0)
        if rate < 1.0 and sample_value(str(row_id), seed) >= rate:
            reasons[row] = f"sampled_out: {category} keeps {_percent(rate)}"
            continue
        keep[row] = True
    return keep, reasons, passed


def _scores(table: pa.Table, name: str) -> list[float | None]:
    values = column(table, name)
    return [None if value is None else float(value) for value in values]


def check_columns(names: Sequence[str], score_column: str, where: str) -> None:
    """CurateStateError naming `where` unless the columns web_filter reads are there."""
    if score_column not in names:
        scored = [name for name in ("score", "rating_score") if name in names]
        hint = (f"; it has {', '.join(repr(name) for name in scored)}: set score_column" if scored else
                "; run the score step (or an oracle step with rubric = \"web\" over every page) before it")
        raise CurateStateError(f"web_filter: {where} has no score column {score_column!r}{hint}")
    if CATEGORY_COLUMN not in names:
        raise CurateStateError(f"web_filter: {where} has no {CATEGORY_COLUMN!r} column: it is not a web dataset "
                               "(web_ingest writes the page category)")


def web_filter_rows(table: pa.Table, options: Mapping[str, Any]) -> tuple[np.ndarray, list[str | None], dict]:
    """The row function of one shard (`step.row_step_task`): keep flags and drop reasons; no new columns."""
    check_columns(table.column_names, options["score_column"], "the input")
    keep, reasons, _ = web_filter_decisions(column(table, "id"), column(table, CATEGORY_COLUMN),
                                            _scores(table, options["score_column"]), options["thresholds"],
                                            options["sampling"], options["seed"])
    return keep, reasons, {}


# ------------------------------------------------------------------------------------------ the summary
def _order(categories: Sequence[str]) -> list[str]:
    """Known categories in CATEGORIES order, then the others sorted."""
    present = set(categories)
    return [name for name in CATEGORIES if name in present] + sorted(present - set(CATEGORIES))


def compare_global(categories: Sequence[Any], scores: Sequence[float | None], kept: Sequence[bool],
                   global_threshold: float) -> dict[str, Any]:
    """What one global threshold would keep of each category (score >= it, no sampling) next to what the
    per-category settings kept (`kept`): {"threshold", "categories": {name: {rows, global_kept, global_share,
    kept, share}}, "total": {...}} (shares of the category's rows; rows without a score are never kept)."""
    if not (len(categories) == len(scores) == len(kept)):
        raise ValueError(f"compare_global: {len(categories)} categories, {len(scores)} scores, {len(kept)} kept flags")
    names = [category_of(value) for value in categories]
    values = np.array([np.nan if score is None else float(score) for score in scores], dtype=np.float64)
    with np.errstate(invalid="ignore"):
        global_keep = values >= float(global_threshold)  # NaN compares False
    kept_array = np.asarray(kept, dtype=bool)
    out: dict[str, Any] = {"threshold": float(global_threshold), "categories": {}}

    def entry(mask: np.ndarray) -> dict[str, Any]:
        rows = int(mask.sum())
        global_kept, now_kept = int((global_keep & mask).sum()), int((kept_array & mask).sum())
        return {"rows": rows, "global_kept": global_kept, "global_share": global_kept / rows if rows else None,
                "kept": now_kept, "share": now_kept / rows if rows else None}

    labels = np.array(names, dtype=object)
    for name in _order(names):
        out["categories"][name] = entry(labels == name)
    out["total"] = entry(np.ones(len(names), dtype=bool))
    return out


def summarize(categories: Sequence[Any], scores: Sequence[float | None], passed: Sequence[bool],
              kept: Sequence[bool], options: Mapping[str, Any]) -> dict[str, Any]:
    """The step's summary (module docstring) from every input row's category, score and fate."""
    names = [category_of(value) for value in categories]
    values = np.array([np.nan if score is None else float(score) for score in scores], dtype=np.float64)
    passed_array, kept_array = np.asarray(passed, dtype=bool), np.asarray(kept, dtype=bool)
    labels = np.array(names, dtype=object)
    edges = np.linspace(*SCORE_RANGE, HISTOGRAM_BINS + 1)
    per_category: dict[str, Any] = {}
    for name in _order(names):
        mask = labels == name
        scored = values[mask & np.isfinite(values)]
        histogram, _ = np.histogram(np.clip(scored, *SCORE_RANGE), bins=edges)
        per_category[name] = {
            "rows": int(mask.sum()), "scored": int(scored.size),
            "mean_score": float(scored.mean()) if scored.size else None,
            "threshold": setting(options["thresholds"], name), "sampling": setting(options["sampling"], name, 1.0),
            "after_threshold": int((passed_array & mask).sum()), "after_sampling": int((kept_array & mask).sum()),
            "histogram": histogram.astype(int).tolist(),
        }
    compare_threshold = options.get("compare_threshold")
    if compare_threshold is None:
        compare_threshold = setting(options["thresholds"], "default")
    finite = values[np.isfinite(values)]
    return {
        "score_column": options["score_column"], "rows": len(names), "scored": int(finite.size),
        "mean_score": float(finite.mean()) if finite.size else None,
        "after_threshold": int(passed_array.sum()), "after_sampling": int(kept_array.sum()),
        "histogram_edges": edges.tolist(), "categories": per_category,
        "compare_global": compare_global(names, [None if math.isnan(v) else float(v) for v in values], kept_array,
                                         compare_threshold),
        "plot": PLOT_FILE,
    }


def _read_back(out_dir: str, parts: Sequence[int], score_column: str) -> tuple[list, list, list[bool], list[bool]]:
    """(categories, scores, passed the threshold, kept) of every row the step saw, from its kept and dropped rows."""
    categories: list[Any] = []
    scores: list[float | None] = []
    passed: list[bool] = []
    kept: list[bool] = []
    for index in parts:
        table = ds.read_part(out_dir, index, [CATEGORY_COLUMN, score_column])
        categories += column(table, CATEGORY_COLUMN)
        scores += _scores(table, score_column)
        passed += [True] * table.num_rows
        kept += [True] * table.num_rows
        dropped = ds.read_dropped(out_dir, index, [CATEGORY_COLUMN, score_column, ds.DROP_REASON])
        if dropped is not None:
            categories += column(dropped, CATEGORY_COLUMN)
            scores += _scores(dropped, score_column)
            passed += [ds.drop_category(reason or "") == "sampled_out" for reason in column(dropped, ds.DROP_REASON)]
            kept += [False] * dropped.num_rows
    return categories, scores, passed, kept


# ------------------------------------------------------------------------------------------ the plot
def write_plot(summary: Mapping[str, Any], path: str) -> None:
    """Two panels (module docstring): score histograms per category with their thresholds; kept share per
    category under the global threshold vs the per-category settings. Written atomically."""
    import matplotlib  # here: the plot is this module's only use of matplotlib (a slow import)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary["categories"])
    colors = plt.get_cmap("tab10")
    edges = np.asarray(summary["histogram_edges"])
    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 4.5))
    for number, name in enumerate(names):
        values = summary["categories"][name]
        color = colors(number % 10)
        left.stairs(values["histogram"], edges, label=f"{name} ({values['rows']})", color=color, linewidth=1.6)
        left.axvline(values["threshold"], color=color, linestyle="-", linewidth=1.0, alpha=0.7)
    compare = summary["compare_global"]
    left.axvline(compare["threshold"], color="black", linestyle="--", linewidth=1.2,
                 label=f"global threshold {_number(compare['threshold'])}")
    left.set_xlim(*SCORE_RANGE)
    left.set_xlabel(f"score ({summary['score_column']}); thin lines: each category's threshold")
    left.set_ylabel("pages")
    left.set_title("scores per page category")
    left.legend(fontsize="small")
    positions = np.arange(len(names))
    width = 0.38
    global_share = [compare["categories"][name]["global_share"] or 0.0 for name in names]
    share = [compare["categories"][name]["share"] or 0.0 for name in names]
    right.bar(positions - width / 2, global_share, width, label=f"global threshold {_number(compare['threshold'])}",
              color="#999999")
    right.bar(positions + width / 2, share, width, label="per-category thresholds + sampling", color="#4c72b0")
    right.set_xticks(positions, names)
    right.set_ylim(0, 1.05)
    right.set_ylabel("share of the category's pages kept")
    right.set_title("kept per category")
    right.legend(fontsize="small")
    figure.tight_layout()
    save_png(figure, path)


# ------------------------------------------------------------------------------------------ the step
def run_web_filter(ctx: StepContext) -> dict[str, Any]:
    in_dir = ctx.inputs["in"]
    parts = ds.finished_parts(in_dir)
    score_column = ctx.options["score_column"]
    if parts:  # the columns, before any work
        check_columns(ds.part_columns(in_dir, parts[0]), score_column, in_dir)
    done = ctx.prepare()
    if done is not None:
        return done
    tasks = ctx.part_tasks("seedcoder.curate.step:row_step_task", parts, rows="seedcoder.curate.web_filter:web_filter_rows",
                           in_dir=in_dir, out_dir=ctx.out_dir, options=ctx.options)
    markers = ctx.run(tasks)
    summary = summarize(*_read_back(ctx.out_dir, parts, score_column), ctx.options)
    write_plot(summary, os.path.join(ctx.out_dir, PLOT_FILE))
    for name, values in summary["categories"].items():
        compared = summary["compare_global"]["categories"][name]
        say(f"{ctx.name}: {name}: {values['rows']:,} pages, mean score "
            f"{'-' if values['mean_score'] is None else format(values['mean_score'], '.2f')}, "
            f">= {_number(values['threshold'])}: {values['after_threshold']:,}, sampled "
            f"{_percent(values['sampling'])}: {values['after_sampling']:,} kept (a global threshold "
            f"{_number(summary['compare_global']['threshold'])} would keep {compared['global_kept']:,})")
    return ctx.finish(markers, {"web_filter": summary})


def _check_table(name: str, table: Mapping[str, float], low: float, high: float) -> None:
    known = (*CATEGORIES, "default")
    for key, value in table.items():
        if key not in known:
            raise ValueError(f"{name}: unknown category {key!r}; categories: {', '.join(known)}")
        if not (isinstance(value, (int, float)) and math.isfinite(value) and low <= value <= high):
            raise ValueError(f"{name}.{key}: must be a number in [{low:g}, {high:g}], got {value!r}")


@dataclass
class WebFilterOptions:
    score_column: str = option("score", "the score to filter on: score (the score step) or rating_score (an oracle "
                                        "step with rubric = \"web\" that rated every page)")
    thresholds: dict[str, float] = option(DEFAULT_THRESHOLDS, "minimum score per page category (docs, qa, forum, "
                                                              "blog, shop, news, other); `default` for the rest "
                                                              "(required)")
    sampling: dict[str, float] = option(DEFAULT_SAMPLING, "share of the pages above the threshold kept per category "
                                                          "(by a seeded hash of the id); `default` for the rest, "
                                                          "else 1.0")
    seed: int = option(0, "seed of the sampling hash")
    compare_threshold: float | None = option(None, "the single global threshold the summary and plot compare with "
                                                   "(default: thresholds.default)")

    def __post_init__(self) -> None:
        if not self.score_column:
            raise ValueError("score_column: must name a column (score or rating_score)")
        _check_table("thresholds", self.thresholds, *SCORE_RANGE)
        if "default" not in self.thresholds:
            raise ValueError("thresholds: needs a `default` entry, the threshold of the categories not listed (e.g. "
                             "thresholds = {docs = 6.0, default = 5.0})")
        _check_table("sampling", self.sampling, 0.0, 1.0)
        if self.compare_threshold is not None and not SCORE_RANGE[0] <= self.compare_threshold <= SCORE_RANGE[1]:
            raise ValueError(f"compare_threshold: must be in [0, 10], got {self.compare_threshold}")


STEP = StepKind("web_filter", "web pages kept by per-category score thresholds and sampling rates", run_web_filter,
                WebFilterOptions, line="web", in_line="web")  # its input may be an oracle's ratings


__all__ = ["CATEGORY_COLUMN", "DEFAULT_SAMPLING", "DEFAULT_THRESHOLDS", "PLOT_FILE", "STEP", "WebFilterOptions",
           "category_of", "check_columns", "compare_global", "run_web_filter", "sample_value", "setting", "summarize",
           "web_filter_decisions", "web_filter_rows", "write_plot"]
