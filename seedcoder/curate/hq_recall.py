"""The high-quality set by iterative recall (issue [11], section 2): the step `hq_recall`.

Seed-Coder's continued-pretraining set (~130B tokens) is recalled per source (a main language, algorithms, app
development, notebooks, general code) from the scored corpus by a fastText classifier that is retrained for
2-3 rounds on a growing seed set. Over a scored dataset (rows with `score` 0..10 from the `score` step; web rows
may be in the pool too), for each `[[steps.sources]]` table:

    pool        the rows matching the source's filter (`languages`, `keywords` in the text or path, `paths`
                globs, `row_sources`: every given kind must match, any item of a list)
    seeds       pool rows with score >= seed_min_score and the simple features of good code: a comment ratio
                in `seed_comment_ratio`, imports in `seed_imports`, bytes in `seed_bytes` (prose rows, language
                text / markdown / restructuredtext / tex or source web: bytes only)
    round r     a fastText classifier (`seedcoder.curate.fasttext_classifier`) trained on the seeds against
                `negatives_per_positive` random pool rows per seed PLUS hard negatives (code rows with a high
                score but no comment line; rows recalled in an earlier round whose score was then low), at most
                `negatives_per_positive` per seed of them too; every pool row that is neither a seed nor
                recalled before is a candidate; a candidate is recalled when P >= `threshold`
                (`recall_by = "threshold"`), when among the top `top_fraction` (`"top_fraction"`), or when P
                reaches the threshold that gives `target_recall` on the held-out split (`"target_recall"`); a
                recalled row is kept when the scorer agrees (score >= recall_min_score) and joins the seeds of
                the next round; a recalled row scored lower becomes a hard negative of the next rounds
    set         the initial seeds (hq_round 0) plus what every round kept (hq_round r)

The scorer here is the `score` column that the score step already wrote for every row (`score_column =
"rating_score"`: an oracle step's ratings of every row instead): the "scoring" of a
recalled row is a look-up, so the precision against the scorer (kept / recalled) and its recall (kept / the
candidates with score >= recall_min_score) are both measured. A held-out split of each round's training rows
(`holdout_fraction`) gives the classifier's own precision and recall.

Output (a dataset): the kept rows are the final high-quality set, with `hq_source` (the source that took it),
`hq_round` (0: a seed), `hq_probability` (the recalling classifier's P; null for seeds) and `hq_sources` (every
source whose set holds it). A row may match several sources: each source runs on its own (its pool, seeds and
classifiers may share rows with another's) and a row in several sets is assigned to the FIRST source in config
order (a deliberate order: put the specific sources first, general code last); `hq_sources` lists all of them.
Every other input row is in dropped/ with its reason, as in every step (kept + dropped = read):
`not_in_pool: ...` (matches no source), `low_score_after_recall: ...` (recalled, then scored below
recall_min_score; names the source, round and P), `not_recalled: ...` (its highest last-round P and that
round's threshold; or why the source recalled nothing).

Files: `_work/map-NNNNN.parquet` (per-shard features and source membership), `_work/sources/<source>/round-R.bin` (every
round's classifier, kept), `_work/sources/<source>/round-R.parquet` (that round's candidates, P, recalled, kept; round 1
also the initial seeds) with a marker `round-R.done` holding the round's metrics, `_work/decisions-*.parquet`,
then the dataset, `metrics.json` (per source and round: pool, seeds, recalled, kept, precision, scorer recall,
bytes and tokens, the classifier's held-out precision / recall; per source and overall: the final set) and
`hq_recall.png`. Each map shard, each (source, round) and the final decisions is a task with a marker, so a
rerun after a kill continues where it stopped. Tokens are counted with `tokenizer` (a tokenizer.json or a
folder with one); without it the metrics say "bytes only".

Choosing the recall: the classifier is trained on about 1 seed per 3-7 negatives, so its P is calibrated to that
prior and P >= 0.5 is a strict cut (on the test pool of tests/test_hq_recall.py, 21 seeds, nothing reaches 0.5
with few epochs; 0.3 recalls ~1/5 of the candidates). `recall_by = "target_recall"` picks each round's threshold
on the held-out split instead (noisy when it holds only a few seeds); `top_fraction` fixes the volume.

A scorer whose scores crowd into a narrow band (a small model's do) takes `score_quantiles = true`: the two
score options are then quantiles x10 of the input's scores (seed_min_score = 8.0: the top 20%), resolved after the
map and recorded in metrics.json.

Cost: the map measures features (`rubric.measure_code`, ~1 MB/s) only for rows with score >= seed_min_score (all
rows with score_quantiles), the only rows they decide about; every round task holds the per-row features of the
whole input (~45 bytes a row) and reads the input's text three times (training rows, held-out rows, candidates
shard by shard); a classifier file is about (vocabulary + `classifier.bucket`) x `classifier.dim` x 4 bytes (26 MB
at the defaults) per source and round.
"""

from __future__ import annotations

import fnmatch
import math
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from seedcoder.config import build_section, option
from seedcoder.curate import dataset as ds
from seedcoder.curate.errors import CurateConfigError, CurateStateError
from seedcoder.curate.executor import Task
from seedcoder.curate.fasttext_classifier import ClassifierOptions, TextClassifier, precision_recall, threshold_for_recall
from seedcoder.curate.rubric import measure_code
from seedcoder.curate.step import StepContext, StepKind, say, split_decisions
from seedcoder.fileio import save_png
from seedcoder.progress import progress
from seedcoder.tokenizer import load_tokenizer

PROSE_LANGUAGES = frozenset({"text", "markdown", "restructuredtext", "tex"})
MAX_SOURCES = 63  # a row's source membership is a bit mask (int64)
SOURCE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
RECALL_BY = ("threshold", "top_fraction", "target_recall")
METRICS_FILE = "metrics.json"
PLOT_FILE = "hq_recall.png"
CLASSIFIER_SUFFIX = ".bin"

# An import / include / use line of the common languages (Python, C/C++, Java/Kotlin/Scala/Go/JS/TS, C#, Rust, PHP,
# Perl, Ruby, R, CSS, Swift): "simple features", not a parser
_IMPORT = re.compile(r"^(?:[ \t]*(?:import\b|from[ \t]+[\w.]+[ \t]+import\b|#[ \t]*include\b|using[ \t]+[\w.]+[ \t]*;|"
                     r"use[ \t]+[\w:\\{]|extern[ \t]+crate\b|library\(|@import\b)|"
                     r"[^\n]*?(?<![\w.])require(?:_once|_relative)?[ \t]*\(?[ \t]*['\"])", re.MULTILINE)


# ------------------------------------------------------------------------------------------ simple features
@dataclass(frozen=True)
class TextFeatures:
    """The simple features seeds are chosen by (besides the score)."""

    bytes: int  # UTF-8 bytes of the text
    lines: int
    code_lines: int  # code rows: from `rubric.measure_code`; prose rows: 0
    comment_lines: int
    imports: int  # import / include / use lines
    prose: bool  # prose (documentation, web text): the comment and import features do not apply

    @property
    def comment_ratio(self) -> float:
        return comment_ratio(self.comment_lines, self.code_lines)


def comment_ratio(comment_lines: Any, code_lines: Any) -> Any:
    """comment lines / (comment + code lines), 0 without either (numbers or numpy arrays)."""
    total = np.asarray(comment_lines, dtype=np.float64) + np.asarray(code_lines, dtype=np.float64)
    ratio = np.divide(comment_lines, total, out=np.zeros_like(total), where=total > 0)
    return float(ratio) if ratio.ndim == 0 else ratio


def count_imports(text: str) -> int:
    """Import, include and use lines in `text` (any common language)."""
    return sum(1 for _ in _IMPORT.finditer(text))


def is_prose(language: str | None, source: str | None) -> bool:
    return (language or "") in PROSE_LANGUAGES or source == "web"


def text_features(text: str, language: str | None, source: str | None = "file") -> TextFeatures:
    """A row's simple features: bytes, lines, and for code its comment / code lines (`measure_code`) and imports."""
    text = text or ""
    lines = text.count("\n") + (1 if text and not text.endswith("\n") else 0)
    size = len(text.encode("utf-8", "surrogatepass"))
    if is_prose(language, source):
        return TextFeatures(size, lines, 0, 0, 0, True)
    metrics = measure_code(text, language or "unknown")
    return TextFeatures(size, lines, metrics.code_lines, metrics.comment_lines, count_imports(text), False)


def seed_mask(score: np.ndarray, bytes_: np.ndarray, comment_lines: np.ndarray, code_lines: np.ndarray,
              imports: np.ndarray, prose: np.ndarray, options: Mapping[str, Any]) -> np.ndarray:
    """Rows that qualify as seeds: score >= seed_min_score and the features in their ranges (prose: bytes only)."""
    ratio = comment_ratio(comment_lines, code_lines)
    low_ratio, high_ratio = options["seed_comment_ratio"]
    low_imports, high_imports = options["seed_imports"]
    low_bytes, high_bytes = options["seed_bytes"]
    code_ok = (ratio >= low_ratio) & (ratio <= high_ratio) & (imports >= low_imports) & (imports <= high_imports)
    with np.errstate(invalid="ignore"):  # a null score (NaN) is never a seed
        scored = score >= options["seed_min_score"]
    return scored & (bytes_ >= low_bytes) & (bytes_ <= high_bytes) & (prose | code_ok)


def hard_negative_mask(score: np.ndarray, comment_lines: np.ndarray, code_lines: np.ndarray, prose: np.ndarray,
                       options: Mapping[str, Any]) -> np.ndarray:
    """The first round's hard negatives: code rows with a seed-level score but not a single comment line."""
    with np.errstate(invalid="ignore"):
        scored = score >= options["seed_min_score"]
    return scored & ~prose & (comment_lines == 0) & (code_lines > 0)


# ------------------------------------------------------------------------------------------ sources
@dataclass
class HQSource:
    """One [[steps.sources]] table: a named pool of the input. Every filter given must match; an empty filter
    matches every row (a "general code" source)."""

    name: str = field(metadata={"help": "the source's name (letters, digits, _ . -): the hq_source value, a folder"})
    languages: list[str] = option([], "row languages it takes (`language` column), e.g. [\"python\"]; default: all")
    keywords: list[str] = option([], "words or phrases, any of which must occur in the text or the path "
                                     "(case-insensitive, whole words; spaces match any whitespace)")
    paths: list[str] = option([], "glob patterns, any of which must match the row's path (fnmatch: '*/algorithms/*')")
    row_sources: list[str] = option([], "row `source` values it takes (file, repo, commit, web); default: all")

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not SOURCE_NAME.match(self.name):
            raise ValueError(f"name: must be 1-64 letters, digits, '_', '.' or '-' (it names a folder), "
                             f"got {self.name!r}")
        for key in ("languages", "keywords", "paths", "row_sources"):
            for item in getattr(self, key):
                if not item.strip():
                    raise ValueError(f"{key}: an empty string matches nothing useful; remove it")


class SourceMatcher:
    """Whether a row belongs to a source's pool."""

    def __init__(self, source: Mapping[str, Any]):
        self.name = source["name"]
        self.languages = frozenset(source["languages"])
        self.row_sources = frozenset(source["row_sources"])
        self.paths = list(source["paths"])
        words = [r"\s+".join(re.escape(part) for part in keyword.split()) for keyword in source["keywords"]]
        self.keywords = re.compile(r"(?<!\w)(?:" + "|".join(words) + r")(?!\w)", re.IGNORECASE) if words else None

    def matches(self, text: str, path: str, language: str, row_source: str) -> bool:
        if self.languages and language not in self.languages:
            return False
        if self.row_sources and row_source not in self.row_sources:
            return False
        if self.paths and not any(fnmatch.fnmatchcase(path, pattern) for pattern in self.paths):
            return False
        if self.keywords is not None and not (self.keywords.search(path) or self.keywords.search(text)):
            return False
        return True


# ------------------------------------------------------------------------------------------ options
@dataclass
class HQRecallOptions:
    sources: list[HQSource] = option([], "the [[steps.sources]] tables (name + filters), at least one")
    score_column: str = option("score", "the quality score of a row: score (the score step) or rating_score (an "
                                        "oracle step that rated every row)")
    rounds: int = option(3, "recall rounds per source (the paper: 2-3)")
    seed_min_score: float = option(7.0, "seeds: at least this score (0..10)")
    recall_min_score: float = option(6.0, "a recalled row is kept when its score is at least this (the scorer agrees)")
    score_quantiles: bool = option(False, "read seed_min_score and recall_min_score as quantiles of the input's "
                                          "scores (8.0: the 80th percentile), for a scorer whose scale is compressed")
    seed_comment_ratio: list[float] = option([0.02, 0.6], "seeds (code): comment lines / (comment + code lines) "
                                                          "in [min, max]")
    seed_imports: list[int] = option([0, 200], "seeds (code): import / include / use lines in [min, max]")
    seed_bytes: list[int] = option([200, 200_000], "seeds: UTF-8 bytes of the text in [min, max]")
    negatives_per_positive: float = option(3.0, "random pool rows per seed as negatives (and at most as many hard "
                                                "negatives per seed)")
    hard_negatives: bool = option(True, "train against hard negatives too (high score but no comments; recalled, "
                                        "then scored low)")
    recall_by: str = option("threshold", "threshold (P >= threshold), top_fraction (the top share of the "
                                         "candidates) or target_recall (the held-out threshold for that recall)")
    threshold: float = option(0.5, "recall_by = threshold: the probability a candidate needs")
    top_fraction: float = option(0.1, "recall_by = top_fraction: the share of candidates recalled per round")
    target_recall: float = option(0.9, "recall_by = target_recall: the held-out recall the threshold is chosen for")
    holdout_fraction: float = option(0.2, "share of each round's training rows held out to measure the classifier")
    tokenizer: str | None = option(None, "count tokens with this tokenizer.json (or its folder; it must exist when the "
                                         "step starts); default: bytes only")
    classifier: dict[str, Any] = option({}, "options of the fastText classifier (ClassifierOptions of "
                                            "seedcoder.curate.fasttext_classifier: epochs, lr, ...)")
    seed: int = option(0, "seed of the negative sampling and the held-out split")

    def __post_init__(self) -> None:
        if not self.score_column:
            raise ValueError("score_column: must name a column (score or rating_score)")
        if not self.sources:
            raise ValueError("sources: needs at least one source ([[steps.sources]] with a name, or "
                             "sources = [{name = \"python\", languages = [\"python\"]}])")
        if len(self.sources) > MAX_SOURCES:
            raise ValueError(f"sources: at most {MAX_SOURCES} sources, got {len(self.sources)}")
        names = [source.name if isinstance(source, HQSource) else source["name"] for source in self.sources]
        if len(set(names)) != len(names):
            raise ValueError(f"sources: names must be unique, got {names}")
        if self.rounds < 1:
            raise ValueError(f"rounds: must be >= 1 (the paper: 2-3), got {self.rounds}")
        for key in ("seed_min_score", "recall_min_score"):
            if not 0.0 <= getattr(self, key) <= 10.0:
                raise ValueError(f"{key}: must be in [0, 10] (the score's scale), got {getattr(self, key)}")
        for key in ("seed_comment_ratio", "seed_imports", "seed_bytes"):
            value = getattr(self, key)
            if len(value) != 2 or value[0] > value[1] or value[0] < 0:
                raise ValueError(f"{key}: must be [min, max] with 0 <= min <= max, got {value}")
        if not 0.0 < self.negatives_per_positive <= 1000:
            raise ValueError(f"negatives_per_positive: must be in (0, 1000], got {self.negatives_per_positive}")
        if self.recall_by not in RECALL_BY:
            raise ValueError(f"recall_by: must be one of {', '.join(RECALL_BY)}, got {self.recall_by!r}")
        for key in ("threshold", "top_fraction", "target_recall"):
            if not 0.0 < getattr(self, key) <= 1.0:
                raise ValueError(f"{key}: must be in (0, 1], got {getattr(self, key)}")
        if not 0.0 <= self.holdout_fraction < 0.9:
            raise ValueError(f"holdout_fraction: must be in [0, 0.9), got {self.holdout_fraction}")
        if self.recall_by == "target_recall" and self.holdout_fraction == 0:
            raise ValueError("holdout_fraction: recall_by = target_recall picks its threshold on the held-out "
                             "split, so holdout_fraction must be > 0")
        classifier_options(self.classifier)  # its own keys and values, checked now


def classifier_options(table: Mapping[str, Any]) -> ClassifierOptions:
    """The classifier's options from the step's `classifier` table (ConfigError naming `classifier.KEY`)."""
    return build_section(ClassifierOptions, dict(table), prefix="classifier.")


def score_thresholds(options: Mapping[str, Any], scores: np.ndarray) -> dict[str, Any]:
    """score_quantiles: the options with seed_min_score and recall_min_score replaced by those quantiles (x/10)
    of the finite scores."""
    finite = scores[np.isfinite(scores)]
    if not len(finite):
        raise CurateStateError("hq_recall: score_quantiles needs scores, and no row has one")
    return {**options, **{key: float(np.quantile(finite, options[key] / 10.0))
                          for key in ("seed_min_score", "recall_min_score")}}


# ------------------------------------------------------------------------------------------ paths
def source_dir(work_dir: str, name: str) -> str:
    return os.path.join(work_dir, "sources", name)


def round_path(work_dir: str, name: str, round_number: int, suffix: str) -> str:
    return os.path.join(source_dir(work_dir, name), f"round-{round_number}{suffix}")


def classifier_path(work_dir: str, name: str, round_number: int) -> str:
    return round_path(work_dir, name, round_number, CLASSIFIER_SUFFIX)


# ------------------------------------------------------------------------------------------ map: features per shard
def hq_recall_map(in_dir: str, index: int, out_path: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """Shard `index` -> its rows' score, simple features and source membership (a bit per source) at out_path."""
    table = ds.read_part(in_dir, index)
    column = options["score_column"]
    if column not in table.column_names:
        raise CurateStateError(f"hq_recall: {ds.part_path(in_dir, index)} has no `{column}` column (score_column); "
                               "run the score step (or an oracle rating every row) before it")
    matchers = [SourceMatcher(source) for source in options["sources"]]
    texts = [value or "" for value in table.column("text").to_pylist()]
    paths = [value or "" for value in table.column("path").to_pylist()]
    languages = [value or "" for value in table.column("language").to_pylist()]
    row_sources = [value or "" for value in table.column("source").to_pylist()]
    score = table.column(column).cast(pa.float64()).fill_null(float("nan"))
    # measure_code (~1 MB/s) only where the features decide something: seeds and the first hard negatives both
    # need score >= seed_min_score; the other rows get their size only
    lowest = 0.0 if options["score_quantiles"] else options["seed_min_score"]  # quantiles: known after the map
    measured = np.asarray(score.to_numpy(zero_copy_only=False)) >= lowest
    features = [text_features(text, language, row_source) if measure else
                TextFeatures(len(text.encode("utf-8", "surrogatepass")), 0, 0, 0, 0, is_prose(language, row_source))
                for text, language, row_source, measure in zip(texts, languages, row_sources, measured.tolist())]
    member = [sum(1 << bit for bit, matcher in enumerate(matchers) if matcher.matches(text, path, language, row_source))
              for text, path, language, row_source in zip(texts, paths, languages, row_sources)]
    result = pa.table({
        "score": score,
        "bytes": pa.array([f.bytes for f in features], pa.int64()),
        "code_lines": pa.array([f.code_lines for f in features], pa.int32()),
        "comment_lines": pa.array([f.comment_lines for f in features], pa.int32()),
        "imports": pa.array([f.imports for f in features], pa.int32()),
        "prose": pa.array([f.prose for f in features], pa.bool_()),
        "member": pa.array(member, pa.int64()),
    })
    ds.write_table(out_path, result)
    return {"rows": table.num_rows}


@dataclass
class Features:
    """Every row's map output, concatenated in dataset order: global row g is row g - offsets[i] of the i-th shard."""

    score: np.ndarray
    bytes: np.ndarray
    code_lines: np.ndarray
    comment_lines: np.ndarray
    imports: np.ndarray
    prose: np.ndarray
    member: np.ndarray
    offsets: np.ndarray  # offsets[i]: the first row of the i-th shard; offsets[-1]: the number of rows

    @property
    def rows(self) -> int:
        return int(self.offsets[-1])

    def in_source(self, source_index: int) -> np.ndarray:
        return (self.member >> source_index) & 1 == 1

    def seeds(self, options: Mapping[str, Any]) -> np.ndarray:
        return seed_mask(self.score, self.bytes, self.comment_lines, self.code_lines, self.imports, self.prose, options)

    def hard_negatives(self, options: Mapping[str, Any]) -> np.ndarray:
        return hard_negative_mask(self.score, self.comment_lines, self.code_lines, self.prose, options)


def load_features(map_paths: Sequence[str]) -> Features:
    tables = [ds.read_table(path) for path in map_paths]
    sizes = [table.num_rows for table in tables]

    def joined(name: str, dtype) -> np.ndarray:
        arrays = [np.asarray(table.column(name).to_numpy(zero_copy_only=False), dtype=dtype) for table in tables]
        return np.concatenate(arrays) if arrays else np.zeros(0, dtype)

    return Features(joined("score", np.float64), joined("bytes", np.int64), joined("code_lines", np.int64),
                    joined("comment_lines", np.int64), joined("imports", np.int64), joined("prose", bool),
                    joined("member", np.int64), np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64))


def read_texts(in_dir: str, parts: Sequence[int], offsets: np.ndarray, rows: np.ndarray) -> list[str]:
    """The texts of global rows `rows` (any order), read shard by shard."""
    rows = np.asarray(rows, dtype=np.int64)
    texts: list[str] = [""] * len(rows)
    shard_of = np.searchsorted(offsets, rows, side="right") - 1
    for shard in np.unique(shard_of).tolist():
        positions = np.flatnonzero(shard_of == shard)
        column = ds.read_part(in_dir, parts[shard], ["text"]).column("text")
        taken = column.take(pa.array(rows[positions] - offsets[shard])).to_pylist()
        for position, text in zip(positions.tolist(), taken):
            texts[position] = text or ""
    return texts


# ------------------------------------------------------------------------------------------ a round of a source
ROUND_SCHEMA = pa.schema([("row", pa.int64()), ("seed", pa.bool_()), ("probability", pa.float32()),
                          ("recalled", pa.bool_()), ("kept", pa.bool_()), ("tokens", pa.int64())])


def _sample(rng: np.random.Generator, rows: np.ndarray, count: int) -> np.ndarray:
    if count >= len(rows):
        return rows
    return np.sort(rng.choice(rows, size=count, replace=False))


def _split(rng: np.random.Generator, rows: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(train, held out): `fraction` of `rows` held out, at least one row left to train on."""
    held = min(int(math.floor(fraction * len(rows))), max(0, len(rows) - 1))
    order = rng.permutation(len(rows))
    return np.sort(rows[order[held:]]), np.sort(rows[order[:held]])


def _history(work_dir: str, name: str, round_number: int, rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(kept, recalled, recalled then scored low) by the earlier rounds of a source, as masks over all rows."""
    kept, recalled = np.zeros(rows, bool), np.zeros(rows, bool)
    for earlier in range(1, round_number):
        path = round_path(work_dir, name, earlier, ".parquet")
        if not os.path.exists(path):
            raise CurateStateError(f"hq_recall: {path} is missing but round {earlier} of {name!r} is marked done; "
                                   f"delete {source_dir(work_dir, name)} and rerun")
        table = ds.read_table(path, ["row", "recalled", "kept"])
        row = np.asarray(table.column("row").to_numpy(), dtype=np.int64)
        recalled[row[np.asarray(table.column("recalled").to_numpy(zero_copy_only=False), bool)]] = True
        kept[row[np.asarray(table.column("kept").to_numpy(zero_copy_only=False), bool)]] = True
    return kept, recalled, recalled & ~kept


class _TokenCounter:
    def __init__(self, path: str | None):
        self.tokenizer = load_tokenizer(path) if path else None

    def count(self, texts: Sequence[str]) -> np.ndarray:
        if self.tokenizer is None or not texts:
            return np.full(len(texts), -1, np.int64)
        encodings = self.tokenizer.encode_batch(list(texts), add_special_tokens=False)
        return np.array([len(encoding.ids) for encoding in encodings], np.int64)


def _choose_threshold(options: Mapping[str, Any], candidate_probabilities: np.ndarray, held_probabilities: np.ndarray,
                      held_labels: np.ndarray) -> tuple[np.ndarray, float]:
    """(recalled mask over the candidates, the threshold used)."""
    if options["recall_by"] == "top_fraction":
        count = int(math.ceil(options["top_fraction"] * len(candidate_probabilities)))
        recalled = np.zeros(len(candidate_probabilities), bool)
        if count:
            order = np.argsort(-candidate_probabilities, kind="stable")  # ties: the earlier row first
            recalled[order[:count]] = True
            return recalled, float(candidate_probabilities[order[count - 1]])
        return recalled, 1.0
    if options["recall_by"] == "target_recall" and held_labels.any():
        threshold = float(threshold_for_recall(held_probabilities, held_labels, options["target_recall"]))
    else:
        threshold = float(options["threshold"])
    return candidate_probabilities >= threshold, threshold


def hq_round_task(in_dir: str, parts: Sequence[int], map_paths: Sequence[str], work_dir: str, source_index: int,
                  round_number: int, options: Mapping[str, Any], show_progress: bool = False) -> dict[str, Any]:
    """Round `round_number` of source `source_index`: train on the seeds so far against random + hard negatives,
    recall from the pool, keep what the scorer agrees with. Writes the classifier and the round's table."""
    started = time.perf_counter()
    source = options["sources"][source_index]
    name = source["name"]
    features = load_features(map_paths)
    pool = features.in_source(source_index)
    initial_seeds = pool & features.seeds(options)
    kept_before, recalled_before, low_before = _history(work_dir, name, round_number, features.rows)
    positives = initial_seeds | kept_before
    hard = np.zeros(features.rows, bool)
    if options["hard_negatives"]:
        hard = pool & (features.hard_negatives(options) | low_before) & ~positives
    candidates = pool & ~positives & ~recalled_before
    rng = np.random.default_rng([options["seed"], source_index, round_number])
    per = options["negatives_per_positive"]
    positive_rows = np.flatnonzero(positives)
    hard_rows = _sample(rng, np.flatnonzero(hard), int(round(per * len(positive_rows))))
    random_rows = _sample(rng, np.flatnonzero(pool & ~positives & ~hard), int(round(per * len(positive_rows))))
    stats: dict[str, Any] = {
        "source": name, "round": round_number, "pool": int(pool.sum()), "pool_bytes": int(features.bytes[pool].sum()),
        "seeds": int(positives.sum()), "seed_bytes": int(features.bytes[positives].sum()),
        "train_positives": 0, "train_negatives_random": int(len(random_rows)),
        "train_negatives_hard": int(len(hard_rows)), "hard_negatives_available": int(hard.sum()),
        "candidates": int(candidates.sum()),
        "candidates_scored_high": int((candidates & (features.score >= options["recall_min_score"])).sum()),
        "threshold": None, "recalled": 0, "kept": 0, "precision": None, "scorer_recall": None,
        "recalled_bytes": 0, "kept_bytes": 0, "kept_tokens": None, "holdout": None, "classifier": None,
        "skipped": None,
    }
    counter = _TokenCounter(options["tokenizer"])
    table_rows: dict[str, list] = {key: [] for key in ROUND_SCHEMA.names}

    def add(rows: np.ndarray, seed: bool, probability: np.ndarray, recalled: np.ndarray, kept: np.ndarray,
            tokens: np.ndarray) -> None:
        table_rows["row"].append(rows.astype(np.int64))
        table_rows["seed"].append(np.full(len(rows), seed))
        table_rows["probability"].append(probability.astype(np.float32))
        table_rows["recalled"].append(recalled)
        table_rows["kept"].append(kept)
        table_rows["tokens"].append(tokens.astype(np.int64))

    if round_number == 1:  # the initial seeds are part of the set (hq_round 0): recorded once, with their tokens
        seed_rows = np.flatnonzero(initial_seeds)
        seed_tokens = counter.count(read_texts(in_dir, parts, features.offsets, seed_rows)) if counter.tokenizer \
            else np.full(len(seed_rows), -1, np.int64)
        add(seed_rows, True, np.full(len(seed_rows), np.nan), np.zeros(len(seed_rows), bool),
            np.ones(len(seed_rows), bool), seed_tokens)
        stats["initial_seeds"] = int(len(seed_rows))
        stats["initial_seed_bytes"] = int(features.bytes[seed_rows].sum())
        stats["initial_seed_tokens"] = int(seed_tokens.sum()) if counter.tokenizer else None
    negatives = np.concatenate([random_rows, hard_rows])
    if len(positive_rows) == 0:
        stats["skipped"] = (f"no seeds: no pool row has score >= {options['seed_min_score']} and the seed features"
                            if round_number == 1 else "no seeds")
    elif len(negatives) == 0:
        stats["skipped"] = "no negatives: every pool row is a seed"
    if stats["skipped"] is None:
        train_positive, held_positive = _split(rng, positive_rows, options["holdout_fraction"])
        train_negative, held_negative = _split(rng, np.sort(negatives), options["holdout_fraction"])
        train_rows = np.concatenate([train_positive, train_negative])
        labels = np.concatenate([np.ones(len(train_positive), bool), np.zeros(len(train_negative), bool)])
        stats["train_positives"] = int(len(train_positive))
        classifier = TextClassifier.train(read_texts(in_dir, parts, features.offsets, train_rows), labels.tolist(),
                                          classifier_options(options["classifier"]))
        path = classifier_path(work_dir, name, round_number)
        classifier.save(path)  # atomic; the round's marker comes after it
        stats["classifier"] = os.path.relpath(path, work_dir)
        held_rows = np.concatenate([held_positive, held_negative])
        held_labels = np.concatenate([np.ones(len(held_positive), bool), np.zeros(len(held_negative), bool)])
        held_probabilities = (np.asarray(classifier.probability(read_texts(in_dir, parts, features.offsets,
                                                                           held_rows)), np.float64)
                              if len(held_rows) else np.zeros(0))
        # P of every candidate, shard by shard (a pool may be large)
        candidate_rows = np.flatnonzero(candidates)
        probabilities = np.zeros(len(candidate_rows), np.float64)
        shard_of = np.searchsorted(features.offsets, candidate_rows, side="right") - 1
        kept_texts: dict[int, str] = {}
        high = features.score[candidate_rows] >= options["recall_min_score"]
        with progress(len(candidate_rows), f"hq_recall {name} round {round_number}", unit="row",
                      enabled=show_progress) as bar:
            for shard in np.unique(shard_of).tolist():
                positions = np.flatnonzero(shard_of == shard)
                texts = read_texts(in_dir, parts, features.offsets, candidate_rows[positions])
                probabilities[positions] = np.asarray(classifier.probability(texts), np.float64)
                if counter.tokenizer is not None:  # texts of rows that may be kept, for the token count
                    for position, text in zip(positions.tolist(), texts):
                        if high[position]:
                            kept_texts[position] = text
                bar.update(len(positions))
        recalled, threshold = _choose_threshold(options, probabilities, held_probabilities, held_labels)
        kept = recalled & high
        tokens = np.full(len(candidate_rows), -1, np.int64)
        if counter.tokenizer is not None:
            kept_positions = np.flatnonzero(kept)
            tokens[kept_positions] = counter.count([kept_texts[int(p)] for p in kept_positions])
        add(candidate_rows, False, probabilities, recalled, kept, tokens)
        kept_rows, recalled_rows = candidate_rows[kept], candidate_rows[recalled]
        stats.update({
            "threshold": threshold, "recalled": int(recalled.sum()), "kept": int(kept.sum()),
            "precision": float(kept.sum() / recalled.sum()) if recalled.any() else None,
            "scorer_recall": float(kept.sum() / high.sum()) if high.any() else None,
            "recalled_bytes": int(features.bytes[recalled_rows].sum()), "kept_bytes": int(features.bytes[kept_rows].sum()),
            "kept_tokens": int(tokens[kept].sum()) if counter.tokenizer is not None else None,
        })
        if len(held_rows) and held_labels.any() and (~held_labels).any():
            measured = precision_recall(held_probabilities, held_labels, threshold)
            stats["holdout"] = {"rows": int(len(held_rows)), "positives": int(held_labels.sum()),
                                "threshold": threshold,
                                **{key: _finite(value) for key, value in measured.items()}}
    ds.write_table(round_path(work_dir, name, round_number, ".parquet"),
                   pa.table({key: pa.array(np.concatenate(values) if values else [], ROUND_SCHEMA.field(key).type)
                             for key, values in table_rows.items()}))
    stats["seconds"] = round(time.perf_counter() - started, 3)
    return stats


def _finite(value: Any) -> Any:
    """A metric for JSON: nan (an undefined ratio) -> None."""
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(value) else float(value)
    return int(value) if isinstance(value, np.integer) else value


# ------------------------------------------------------------------------------------------ the final set
def hq_finalize(work_dir: str, map_paths: Sequence[str], options: Mapping[str, Any],
                rounds: Mapping[tuple[int, int], Mapping[str, Any]]) -> tuple[list[pa.Table], dict[str, Any]]:
    """Every source's set (initial seeds + kept per round), a row in several assigned to the first source in config
    order; the decisions of every row (kept, or dropped with its reason) per shard, and the metrics."""
    features = load_features(map_paths)
    count = features.rows
    sources = [source["name"] for source in options["sources"]]
    taken_source = np.full(count, -1, np.int64)
    taken_round = np.full(count, -1, np.int64)
    taken_probability = np.full(count, np.nan)
    tokens = np.full(count, -1, np.int64)
    in_sets = np.zeros(count, np.int64)  # bit per source whose set holds the row
    low_info: dict[int, str] = {}  # row -> why it was recalled and not kept (first source, earliest round)
    best_p = np.full(count, -1.0)  # the highest last-round P of a row over its sources, and which (source, round)
    best_at = np.full((count, 2), -1, np.int64)
    per_source = {}
    for source_index, name in enumerate(sources):
        member = np.zeros(count, bool)
        member_round = np.full(count, -1, np.int64)
        member_probability = np.full(count, np.nan)
        last_p = np.full(count, -1.0)
        last_round = np.full(count, -1, np.int64)
        for round_number in range(1, options["rounds"] + 1):
            table = ds.read_table(round_path(work_dir, name, round_number, ".parquet"))
            row = np.asarray(table.column("row").to_numpy(), np.int64)
            seed = np.asarray(table.column("seed").to_numpy(zero_copy_only=False), bool)
            probability = np.asarray(table.column("probability").to_numpy(zero_copy_only=False), np.float64)
            recalled = np.asarray(table.column("recalled").to_numpy(zero_copy_only=False), bool)
            kept = np.asarray(table.column("kept").to_numpy(zero_copy_only=False), bool)
            row_tokens = np.asarray(table.column("tokens").to_numpy(zero_copy_only=False), np.int64)
            joined = row[kept]
            member[joined] = True
            member_round[joined] = np.where(seed[kept], 0, round_number)
            member_probability[joined] = probability[kept]
            tokens[joined] = np.maximum(tokens[joined], row_tokens[kept])
            candidate = ~seed
            last_p[row[candidate]] = probability[candidate]
            last_round[row[candidate]] = round_number
            threshold = rounds[(source_index, round_number)].get("threshold")
            for r, p, score in zip(row[recalled & ~kept].tolist(), probability[recalled & ~kept].tolist(),
                                   features.score[row[recalled & ~kept]].tolist()):
                low_info.setdefault(r, f"low_score_after_recall: score {score:.2f} < {options['recall_min_score']} "
                                       f"(recalled by {name} in round {round_number}, P {p:.3f} >= {threshold:.3f})")
        better = (last_p > best_p) & ~member
        best_p[better] = last_p[better]
        best_at[better, 0] = source_index
        best_at[better, 1] = last_round[better]
        new = member & (taken_source < 0)
        taken_source[new] = source_index
        taken_round[new] = member_round[new]
        taken_probability[new] = member_probability[new]
        in_sets[member] |= 1 << source_index
        per_source[name] = {"rows": int(member.sum()), "bytes": int(features.bytes[member].sum()),
                            "tokens": int(tokens[member].sum()) if options["tokenizer"] else None,
                            "assigned_rows": int(new.sum()), "assigned_bytes": int(features.bytes[new].sum()),
                            "assigned_tokens": int(tokens[new].sum()) if options["tokenizer"] else None,
                            "pool": int(features.in_source(source_index).sum()),
                            "by_round": {str(r): int(((member_round == r) & member).sum())
                                         for r in range(options["rounds"] + 1)}}
    keep = taken_source >= 0
    reasons: list[str | None] = [None] * count
    for row in np.flatnonzero(~keep).tolist():
        if features.member[row] == 0:
            reasons[row] = f"not_in_pool: matches none of the sources ({', '.join(sources)})"
        elif row in low_info:
            reasons[row] = low_info[row]
        elif best_at[row, 0] >= 0:
            source_index, round_number = int(best_at[row, 0]), int(best_at[row, 1])
            threshold = rounds[(source_index, round_number)].get("threshold")
            how = f"not in the top {options['top_fraction']:.0%}, " if options["recall_by"] == "top_fraction" else ""
            reasons[row] = (f"not_recalled: {how}P {best_p[row]:.3f} < {threshold:.3f} "
                            f"({sources[source_index]} round {round_number})")
        else:
            first = int(np.flatnonzero([(int(features.member[row]) >> i) & 1 for i in range(len(sources))])[0])
            why = rounds[(first, 1)].get("skipped") or "no candidate"
            reasons[row] = f"not_recalled: {sources[first]} recalled nothing ({why})"
    names = [sources[i] if i >= 0 else None for i in taken_source.tolist()]
    sets = [[sources[i] for i in range(len(sources)) if (mask >> i) & 1] for mask in in_sets.tolist()]
    sizes = np.diff(features.offsets).tolist()
    decisions = split_decisions(sizes, {
        "keep": pa.array(keep), ds.DROP_REASON: pa.array(reasons, pa.string()),
        "hq_source": pa.array(names, pa.string()),
        "hq_round": pa.array(np.where(keep, taken_round, 0), pa.int32(), mask=~keep),
        "hq_probability": pa.array(np.nan_to_num(taken_probability), pa.float32(), mask=np.isnan(taken_probability)),
        "hq_sources": pa.array(sets, pa.list_(pa.string())),
    })
    table = [dict(rounds[(source_index, round_number)]) for source_index in range(len(sources))
             for round_number in range(1, options["rounds"] + 1)]
    metrics = {
        "rounds": table,
        "sources": per_source,
        "total": {"rows_in": count, "rows": int(keep.sum()), "bytes": int(features.bytes[keep].sum()),
                  "tokens": int(tokens[keep].sum()) if options["tokenizer"] else None},
        "tokens": options["tokenizer"] or "bytes only",
        "overlap": "a row in several sources' sets is assigned to the first source in config order (hq_source); "
                   "hq_sources lists every source whose set holds it",
        "dropped": "every input row not in the set, with its reason (not_in_pool, not_recalled, "
                   "low_score_after_recall): kept + dropped = read",
        "options": {key: options[key] for key in ("rounds", "score_column", "score_quantiles", "seed_min_score",
                                                  "recall_min_score", "recall_by",
                                                  "threshold", "top_fraction", "target_recall",
                                                  "negatives_per_positive", "hard_negatives", "seed_comment_ratio",
                                                  "seed_imports", "seed_bytes", "holdout_fraction", "classifier")},
    }
    return decisions, metrics


def rounds_markdown(metrics: Mapping[str, Any]) -> str:
    """The per-round table of the metrics, as Markdown (for LOG.md and the step's log)."""
    lines = ["| source | round | pool | seeds | candidates | threshold | recalled | kept | precision | scorer recall "
             "| held-out P / R | kept MiB | kept tokens |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|"]

    def number(value: Any, digits: int = 3) -> str:
        return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else f"{value:,}"

    for row in metrics["rounds"]:
        held = row.get("holdout") or {}
        pr = f"{number(held.get('precision'))} / {number(held.get('recall'))}" if held else "-"
        tokens = row["kept_tokens"]
        if tokens is None:
            tokens = "bytes only" if metrics["tokens"] == "bytes only" else "-"
        lines.append(f"| {row['source']} | {row['round']} | {row['pool']:,} | {row['seeds']:,} | {row['candidates']:,} "
                     f"| {number(row['threshold'])} | {row['recalled']:,} | {row['kept']:,} | "
                     f"{number(row['precision'])} | {number(row['scorer_recall'])} | {pr} | "
                     f"{row['kept_bytes'] / 2**20:.3f} | {number(tokens) if not isinstance(tokens, str) else tokens} |")
    total = metrics["total"]
    lines.append("")
    lines.append(f"Final set: {total['rows']:,} of {total['rows_in']:,} rows, {total['bytes'] / 2**20:.2f} MiB"
                 + (f", {total['tokens']:,} tokens" if total["tokens"] is not None else " (bytes only)")
                 + "; per source (own set / assigned): "
                 + ", ".join(f"{name} {value['rows']:,} / {value['assigned_rows']:,}"
                             for name, value in metrics["sources"].items()))
    return "\n".join(lines) + "\n"


def plot_metrics(metrics: Mapping[str, Any], path: str) -> None:
    """hq_recall.png: per source, rows kept per round (round 0: the initial seeds) and recalled; the precision
    against the scorer and the classifier's held-out recall per round."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sources = list(metrics["sources"])
    rounds = metrics["options"]["rounds"]
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    width = 0.8 / max(1, len(sources))
    colors = plt.get_cmap("tab10")
    for number, name in enumerate(sources):
        rows = [row for row in metrics["rounds"] if row["source"] == name]
        initial = next((row.get("initial_seeds", 0) for row in rows if row["round"] == 1), 0)
        kept = [initial] + [row["kept"] for row in rows]
        recalled = [0] + [row["recalled"] for row in rows]
        positions = np.arange(rounds + 1) + (number - (len(sources) - 1) / 2) * width
        axes[0].bar(positions, recalled, width, color=colors(number % 10), alpha=0.35)
        axes[0].bar(positions, kept, width, color=colors(number % 10), label=f"{name} (kept; light: recalled)")
        precision = [row["precision"] if row["precision"] is not None else np.nan for row in rows]
        axes[1].plot(range(1, rounds + 1), precision, marker="o", color=colors(number % 10),
                     label=f"{name}: precision vs scorer")
        held = [(row.get("holdout") or {}).get("recall", np.nan) for row in rows]
        axes[1].plot(range(1, rounds + 1), held, marker="x", linestyle="--", color=colors(number % 10),
                     label=f"{name}: held-out recall")
    axes[0].set_xticks(range(rounds + 1), ["seeds"] + [f"round {r}" for r in range(1, rounds + 1)])
    axes[0].set_ylabel("rows")
    axes[0].set_title("rows per round (kept; recalled)")
    axes[0].legend(fontsize="small")
    axes[1].set_xticks(range(1, rounds + 1))
    axes[1].set_ylim(0, 1.05)
    axes[1].set_xlabel("round")
    axes[1].set_title("precision against the scorer, classifier's held-out recall")
    axes[1].legend(fontsize="small")
    save_png(figure, path, bbox_inches="tight")


# ------------------------------------------------------------------------------------------ the step
def run_hq_recall(ctx: StepContext) -> dict[str, Any]:
    in_dir = ctx.inputs["in"]
    parts = ds.finished_parts(in_dir)
    options = ctx.options
    if options["tokenizer"] is not None and not os.path.exists(options["tokenizer"]):
        # checked here, not with the options: it may be a file an earlier step of the pipeline writes
        raise CurateConfigError(f"{ctx.name}.tokenizer: {options['tokenizer']} does not exist")
    for index in parts[:1]:  # a clear error now, not from inside a task
        if options["score_column"] not in ds.part_columns(in_dir, index):
            raise CurateStateError(f"{ctx.name}: {ds.part_path(in_dir, index)} has no `{options['score_column']}` "
                                   "column (score_column); run the score step (or an oracle rating every row) before it")
    done = ctx.prepare()
    if done is not None:
        return done
    work_dir = os.path.join(ctx.out_dir, ds.WORK_DIR)
    os.makedirs(work_dir, exist_ok=True)
    map_paths = [ds.work_path(ctx.out_dir, f"map-{index:05d}.parquet") for index in parts]
    ctx.run([Task(key=f"map-{index:05d}", function="seedcoder.curate.hq_recall:hq_recall_map",
                  args={"in_dir": in_dir, "index": index, "out_path": path, "options": options},
                  marker=ds.work_path(ctx.out_dir, f"map-{index:05d}.done"))
             for index, path in zip(parts, map_paths)], "map")
    if options["score_quantiles"]:
        options = score_thresholds(options, load_features(map_paths).score)
        say(f"{ctx.name}: score quantiles {ctx.options['seed_min_score'] / 10:.2f} / "
            f"{ctx.options['recall_min_score'] / 10:.2f} -> seed_min_score {options['seed_min_score']:.4f}, "
            f"recall_min_score {options['recall_min_score']:.4f}")
    names = [source["name"] for source in options["sources"]]
    rounds: dict[tuple[int, int], dict[str, Any]] = {}
    for round_number in range(1, options["rounds"] + 1):
        tasks = [Task(key=f"{name}-round-{round_number}", function="seedcoder.curate.hq_recall:hq_round_task",
                      args={"in_dir": in_dir, "parts": parts, "map_paths": map_paths, "work_dir": work_dir,
                            "source_index": index, "round_number": round_number, "options": options,
                            "show_progress": ctx.executor.progress},
                      marker=round_path(work_dir, name, round_number, ".done"))
                 for index, name in enumerate(names)]
        for index, record in enumerate(ctx.run(tasks, f"round {round_number}")):
            stats = record["stats"]
            rounds[(index, round_number)] = stats
            precision = "-" if stats["precision"] is None else f"{stats['precision']:.3f}"
            say(f"{ctx.name} {stats['source']} round {round_number}: pool {stats['pool']:,}, seeds {stats['seeds']:,}, "
                f"recalled {stats['recalled']:,}, kept {stats['kept']:,} (precision {precision})"
                + (f"; skipped: {stats['skipped']}" if stats["skipped"] else ""))
    reduce_marker = ds.work_path(ctx.out_dir, "reduce.done")
    decision_paths = [ds.work_path(ctx.out_dir, f"decisions-{index:05d}.parquet") for index in parts]
    if os.path.exists(reduce_marker):
        metrics = ds.read_json(reduce_marker)
    else:
        decisions, metrics = hq_finalize(work_dir, map_paths, options, rounds)
        for path, table in zip(decision_paths, decisions):
            ds.write_table(path, table)
        ds.write_json(os.path.join(ctx.out_dir, METRICS_FILE), metrics)
        plot_metrics(metrics, os.path.join(ctx.out_dir, PLOT_FILE))
        ds.write_json(reduce_marker, metrics)
    say(f"{ctx.name}: per source and round\n{rounds_markdown(metrics)}")
    tasks = [Task(key=f"part-{index:05d}", function="seedcoder.curate.step:apply_decisions_task",
                  args={"in_dir": in_dir, "index": index, "decisions_path": path, "out_dir": ctx.out_dir},
                  marker=ds.marker_path(ctx.out_dir, index)) for index, path in zip(parts, decision_paths)]
    return ctx.finish(ctx.run(tasks, "filter"), {"hq_recall": metrics, "metrics": METRICS_FILE, "plot": PLOT_FILE})


# its own line ("hq"): a later tokenize step reads it only when named (`in = "hq_recall"`), never by default
STEP = StepKind("hq_recall", "the high-quality set: per source, fastText recall from seeds in 2-3 rounds",
                run_hq_recall, HQRecallOptions, line="hq")


__all__ = ["HQRecallOptions", "HQSource", "PROSE_LANGUAGES", "STEP", "SourceMatcher", "TextFeatures",
           "classifier_options", "classifier_path", "score_thresholds", "comment_ratio", "count_imports", "hard_negative_mask",
           "hq_finalize", "hq_recall_map", "hq_round_task", "is_prose", "plot_metrics",
           "rounds_markdown", "run_hq_recall", "seed_mask", "text_features"]
