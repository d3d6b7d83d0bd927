"""Web recall (a curation step over web pages, issue [11]): keep the code-related pages.

A page whose main content has explicit code tags (`has_code_tags`, with at least `min_code_chars` characters inside
<pre>/<code>: `code_chars`) takes the rule path and is kept (`recall_path = "rule"`). Every other page goes through
a fastText classifier (`seedcoder.curate.fasttext_classifier`; `recall_path = "classifier"`) and is kept when
P(code) >= the threshold; a dropped page's reason reads "not_code_related: P=0.12 < threshold 0.40". Every row gets
`code_probability` (rule-path rows too). A dataset without `has_code_tags` sends every page to the classifier.

The classifier learns from a gold set, the option `gold`: a jsonl file, one labelled page per line, either

    {"url": "https://docs.python.org/3/library/ast.html", "label": "code", "split": "train"}
    {"text": "The licensee may ...", "label": "other", "split": "test"}

A line with `url` and no `text` names the input dataset's row with that URL (its `text`, `has_code_tags` and
`code_chars`; URLs missing from the dataset are counted and listed in metrics.json); a line with `text` brings its
own page (optionally with `has_code_tags`, `code_chars`, and a `url` or `id` naming it). `label`: "code" or "other"
(or true / false). `split`: "train", or held out: "test", "heldout", "held_out", "dev", "valid", "validation",
"eval"; a line without one is held out when a hash of its URL (or text) falls in the first `heldout_fraction`. The
held-out split is never trained on. Too few pages of either class in the train split (`min_gold`) or none of either
class held out stops the step with an error naming the option.

The threshold: `threshold` when given; otherwise the highest threshold whose recall reaches `target_recall` (0.99;
the paper reports recall 99% at precision 45%), read from out-of-fold probabilities of the train split
(`threshold_folds`-fold cross-validation, stratified and seeded: each fold's model never saw the pages it scores),
so the held-out split measures the threshold as it measures the model. `threshold_folds = 0` picks it on the
held-out split itself; its held-out recall then says nothing. The classifier is then trained on the whole train
split.

Besides the dataset, the step directory holds `classifier.bin` (`TextClassifier.load`), `metrics.json` and
`precision_recall.png` (the held-out precision-recall curve, the cross-validated one, the chosen point, the paper's
point); `_SUCCESS.json`'s `recall` holds the headline numbers. metrics.json: `gold` (file, sha256, lines, matched,
unmatched URLs, pages per split and class), `threshold` (value and how it was chosen), `heldout` (at the threshold:
`classifier` over every held-out page, `step`: the step's own decision, rule path included, `classifier_path`: the
held-out pages without code tags; `curve`: precision and recall at each distinct held-out probability, at most 200
points; `errors`: up to 20 held-out mistakes), `cross_validation` (out-of-fold precision / recall at the threshold),
`dataset` (pages per path, kept and dropped), `speed` (training and classification docs/s).

Resume: training runs once (`classifier.bin`, then `_work/train.json` with its results); a rerun after a kill skips
it and the shards already done. The gold file's SHA-256 is part of the step's record, so a changed gold set starts
the step over.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import pyarrow as pa

from seedcoder.config import option
from seedcoder.curate import dataset as ds
from seedcoder.curate.errors import CurateConfigError, CurateStateError
from seedcoder.curate.fasttext_classifier import (
    ClassifierOptions,
    TextClassifier,
    precision_recall,
    precision_recall_curve,
    threshold_for_recall,
)
from seedcoder.curate.step import WORKER_CACHE, StepContext, StepKind, column, say
from seedcoder.fileio import save_png

CLASSIFIER_FILE = "classifier.bin"
METRICS_FILE = "metrics.json"
PLOT_FILE = "precision_recall.png"
TRAIN_RECORD = "train.json"  # in _work/: written after classifier.bin, marks training done
TRAIN_SPLITS = ("train",)
HELDOUT_SPLITS = ("test", "heldout", "held_out", "held-out", "dev", "valid", "validation", "eval")
CODE_LABELS = ("code", "true", "1", "yes")
OTHER_LABELS = ("other", "false", "0", "no")
CURVE_POINTS = 200  # at most this many curve points in metrics.json
LISTED = 20  # unmatched URLs, held-out mistakes listed in metrics.json
PAPER_POINT = {"recall": 0.99, "precision": 0.45}  # Seed-Coder's reported recall and precision
CLASSIFIER_KEYS = tuple(f.name for f in fields(ClassifierOptions))


# ------------------------------------------------------------------------------------------ the gold set
@dataclass
class GoldPage:
    line: int  # in the gold file (1-based)
    label: bool  # code-related
    heldout: bool
    url: str | None = None
    text: str | None = None  # None: the dataset's row with `url`
    has_code_tags: bool = False
    code_chars: int = 0
    from_dataset: bool = False  # its text is the dataset's row with `url`

    def takes_rule(self, min_code_chars: int) -> bool:
        return self.has_code_tags and self.code_chars >= min_code_chars

    def name(self) -> str:
        return self.url or (self.text or "")[:80].replace("\n", " ")


def _label(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower() if isinstance(value, (str, int)) else None
    if text in CODE_LABELS:
        return True
    if text in OTHER_LABELS:
        return False
    raise CurateConfigError(f"{where}: label must be \"code\" or \"other\", got {value!r}")


def _split(value: Any, key: str, heldout_fraction: float, where: str) -> bool:
    """True when held out."""
    if value is None:
        digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < heldout_fraction
    text = str(value).strip().lower()
    if text in TRAIN_SPLITS:
        return False
    if text in HELDOUT_SPLITS:
        return True
    raise CurateConfigError(f"{where}: split must be \"train\" or held out ({', '.join(HELDOUT_SPLITS)}), got {value!r}")


def read_gold(path: str, heldout_fraction: float = 0.2, option_name: str = "gold") -> list[GoldPage]:
    """The gold file's pages (see the module); CurateConfigError naming the option, the file and the line."""
    if not path:
        raise CurateConfigError(f"{option_name}: a gold set is required (a labels jsonl: url, label, split; or "
                                "text, label, split)")
    if not os.path.isfile(path):
        raise CurateConfigError(f"{option_name}: gold file {path} does not exist")
    pages, seen_urls = [], {}
    try:
        with open(path, encoding="utf-8") as file:
            for number, line in enumerate(file, 1):
                if not line.strip():
                    continue
                where = f"{option_name}: {path} line {number}"
                try:
                    record = json.loads(line)
                except ValueError as error:
                    raise CurateConfigError(f"{where}: not JSON ({error})") from None
                if not isinstance(record, dict):
                    raise CurateConfigError(f"{where}: expected a JSON object, got {type(record).__name__}")
                if "label" not in record:
                    raise CurateConfigError(f"{where}: no \"label\"")
                text, url = record.get("text"), record.get("url")
                if text is None and not url:
                    raise CurateConfigError(f"{where}: needs \"url\" (a page of the dataset) or \"text\"")
                if text is not None and not isinstance(text, str):
                    raise CurateConfigError(f"{where}: \"text\" must be a string")
                if url is not None and not isinstance(url, str):
                    raise CurateConfigError(f"{where}: \"url\" must be a string")
                label = _label(record["label"], where)
                named = url if url else (str(record["id"]) if record.get("id") is not None else None)
                page = GoldPage(line=number, label=label, url=named, text=text,
                                heldout=_split(record.get("split"), url or text or "", heldout_fraction, where))
                if text is not None:
                    code_chars = record.get("code_chars") or 0
                    if isinstance(code_chars, bool) or not isinstance(code_chars, int) or code_chars < 0:
                        raise CurateConfigError(f"{where}: \"code_chars\" must be a count, got {code_chars!r}")
                    page.has_code_tags, page.code_chars = bool(record.get("has_code_tags")), code_chars
                elif url in seen_urls:
                    first = seen_urls[url]
                    if (first.label, first.heldout) != (page.label, page.heldout):
                        raise CurateConfigError(f"{where}: {url} is also on line {first.line} with another label "
                                                "or split")
                    continue
                else:
                    seen_urls[url] = page
                pages.append(page)
    except UnicodeDecodeError as error:
        raise CurateConfigError(f"{option_name}: gold file {path} is not UTF-8 ({error})") from None
    except OSError as error:
        raise CurateConfigError(f"{option_name}: gold file {path} cannot be read ({error})") from None
    return pages


def match_gold(pages: Sequence[GoldPage], in_dir: str, parts: Sequence[int], option_name: str = "gold") -> list[str]:
    """Fill in the text and code tags of the pages named by URL from the dataset; returns the URLs not found."""
    wanted: dict[str, list[GoldPage]] = {}
    for page in pages:
        if page.text is None:
            wanted.setdefault(page.url, []).append(page)
    if not wanted:
        return []
    say(f"{option_name}: matching {len(wanted):,} gold URLs against the {len(parts)} shard(s) of {in_dir}")
    for index in parts:
        names = ds.part_columns(in_dir, index)
        if "url" not in names:
            raise CurateConfigError(f"{option_name}: the gold set names pages by URL but {in_dir} (shard {index}) has "
                                    "no `url` column; give the gold pages' text instead")
        table = ds.read_part(in_dir, index, [name for name in ("url", "text", "has_code_tags", "code_chars")
                                             if name in names])
        rows = zip(column(table, "url"), column(table, "text"), column(table, "has_code_tags"),
                   column(table, "code_chars"))
        for url, text, has_code_tags, code_chars in rows:
            for page in wanted.pop(url, ()):  # the first row with the URL
                page.text, page.from_dataset = text or "", True
                page.has_code_tags, page.code_chars = bool(has_code_tags), int(code_chars or 0)
        if not wanted:
            break
    return sorted(wanted)


# ------------------------------------------------------------------------------------------ the rule
def rule_mask(table: pa.Table, min_code_chars: int) -> np.ndarray:
    """The rows that take the rule path: explicit code tags with at least `min_code_chars` code characters."""
    tags = column(table, "has_code_tags")
    chars = column(table, "code_chars")
    return np.array([bool(tag) and int(count or 0) >= min_code_chars for tag, count in zip(tags, chars)], dtype=bool)


def drop_reason(probability: float, threshold: float) -> str:
    """ "not_code_related: P=0.12 < threshold 0.40", with enough digits that the two numbers differ."""
    digits = 2
    while digits < 8 and f"{probability:.{digits}f}" == f"{threshold:.{digits}f}":
        digits += 1
    return f"not_code_related: P={probability:.{digits}f} < threshold {threshold:.{digits}f}"


# ------------------------------------------------------------------------------------------ training
def classifier_options(options: Mapping[str, Any]) -> ClassifierOptions:
    return ClassifierOptions(**{key: options[key] for key in CLASSIFIER_KEYS})


def _folds(labels: np.ndarray, count: int, seed: int) -> np.ndarray:
    """A fold number per row, stratified: each class's rows in a seeded random order, dealt round robin."""
    folds = np.empty(len(labels), dtype=np.int64)
    generator = np.random.default_rng(seed)
    for value in (True, False):
        rows = np.flatnonzero(labels == value)
        folds[generator.permutation(rows)] = np.arange(len(rows)) % count
    return folds


def _finite(value: Any) -> Any:
    """nan -> None (JSON), recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value


def _thin(curve: list[dict[str, Any]], count: int = CURVE_POINTS) -> list[dict[str, Any]]:
    if len(curve) <= count:
        return curve
    keep = sorted(set(np.linspace(0, len(curve) - 1, count).round().astype(int).tolist()))
    return [curve[i] for i in keep]


def train_recall(ctx: StepContext, gold_path: str, gold_sha256: str, parts: Sequence[int]) -> dict[str, Any]:
    """Read the gold set, pick the threshold, train and save the classifier, measure it on the held-out split;
    returns the training record (written to _work/train.json by the caller)."""
    options, name = ctx.options, ctx.name
    option_name = f"{name}.gold"
    pages = read_gold(gold_path, options["heldout_fraction"], option_name)
    unmatched = match_gold(pages, ctx.inputs["in"], parts, option_name)
    lines = len(pages)
    pages = [page for page in pages if page.text is not None]
    train = [page for page in pages if not page.heldout]
    heldout = [page for page in pages if page.heldout]
    y_train = np.array([page.label for page in train], dtype=bool)
    y_held = np.array([page.label for page in heldout], dtype=bool)
    counts = {"train": {"code": int(y_train.sum()), "other": int((~y_train).sum())},
              "heldout": {"code": int(y_held.sum()), "other": int((~y_held).sum())}}
    missing = f" ({len(unmatched)} of its URLs are not in {ctx.inputs['in']})" if unmatched else ""
    if min(counts["train"].values()) < options["min_gold"]:
        raise CurateConfigError(
            f"{option_name}: {gold_path} gives {counts['train']['code']} code and {counts['train']['other']} other "
            f"pages to train on{missing}; need at least {options['min_gold']} of each (min_gold)")
    if min(counts["heldout"].values()) < 1:
        raise CurateConfigError(
            f"{option_name}: {gold_path} holds out {counts['heldout']['code']} code and "
            f"{counts['heldout']['other']} other pages{missing}; the held-out split needs both classes "
            "(split = \"test\", or heldout_fraction for lines without a split)")
    folds = options["threshold_folds"] if options["threshold"] is None else 0
    if folds and min(counts["train"].values()) < folds:
        raise CurateConfigError(
            f"{option_name}: {counts['train']['code']} code and {counts['train']['other']} other train pages are too "
            f"few for {name}.threshold_folds = {folds} "
            "(each class needs a page per fold); give more gold pages, fewer folds, or a threshold")
    say(f"{name}: gold {gold_path}: {len(train)} train pages ({counts['train']['code']} code), {len(heldout)} held "
        f"out ({counts['heldout']['code']} code){f', {len(unmatched)} URLs unmatched' if unmatched else ''}")
    classifier_settings = classifier_options(options)
    train_texts = [page.text or "" for page in train]
    held_texts = [page.text or "" for page in heldout]
    trained_docs, tick = 0, time.perf_counter()

    cross_validation = None
    if folds:
        fold_of = _folds(y_train, folds, options["seed"])
        out_of_fold = np.zeros(len(train), dtype=np.float64)
        for fold in range(folds):
            inside = fold_of == fold
            say(f"{name}: cross-validation fold {fold + 1}/{folds}: training on {int((~inside).sum()):,} pages")
            model = TextClassifier.train([t for t, held in zip(train_texts, inside) if not held], y_train[~inside],
                                         classifier_settings)
            out_of_fold[inside] = model.probability([t for t, held in zip(train_texts, inside) if held])
            trained_docs += int((~inside).sum())
        threshold = threshold_for_recall(out_of_fold, y_train, options["target_recall"])
        how = f"target_recall {options['target_recall']} on {folds}-fold out-of-fold probabilities of the train split"
        cross_validation = {"folds": folds, **precision_recall(out_of_fold, y_train, threshold),
                            "curve": _thin(precision_recall_curve(out_of_fold, y_train))}

    say(f"{name}: training the classifier on the {len(train):,} train pages")
    classifier = TextClassifier.train(train_texts, y_train, classifier_settings)
    trained_docs += len(train)
    train_seconds = time.perf_counter() - tick
    classifier.save(os.path.join(ctx.out_dir, CLASSIFIER_FILE))
    tick = time.perf_counter()
    p_held = classifier.probability(held_texts)
    predict_seconds = time.perf_counter() - tick
    if options["threshold"] is not None:
        threshold, how = float(options["threshold"]), "given (threshold)"
    elif not folds:
        threshold = threshold_for_recall(p_held, y_held, options["target_recall"])
        how = f"target_recall {options['target_recall']} on the held-out split itself (its recall is no measurement)"
    rule = np.array([page.takes_rule(options["min_code_chars"]) for page in heldout], dtype=bool)
    kept = rule | (p_held >= threshold)
    mistakes = [{"page": page.name(), "label": "code" if page.label else "other", "p": float(p),
                 "path": "rule" if r else "classifier", "gold_line": page.line}
                for page, p, r, k in zip(heldout, p_held.tolist(), rule.tolist(), kept.tolist()) if k != page.label]
    say(f"{name}: classifier trained in {train_seconds:.1f} s; threshold {threshold:.4f} ({how})")
    return {
        "gold": {"file": gold_path, "sha256": gold_sha256, "pages": lines, "used": len(pages),
                 "matched_by_url": sum(1 for page in pages if page.from_dataset),
                 "unmatched_urls": len(unmatched), "unmatched_examples": unmatched[:LISTED], **counts},
        "threshold": {"value": threshold, "how": how, "target_recall": options["target_recall"]},
        "heldout": {
            "pages": len(heldout),
            "classifier": precision_recall(p_held, y_held, threshold),
            "step": {**precision_recall(kept.astype(np.float64), y_held, 0.5), "threshold": threshold,
                     "rule_pages": int(rule.sum())},
            "classifier_path": (precision_recall(p_held[~rule], y_held[~rule], threshold)
                                if (~rule).any() else None),
            "curve": _thin(precision_recall_curve(p_held, y_held)),
            "errors": mistakes[:LISTED], "error_count": len(mistakes),
        },
        "cross_validation": cross_validation,
        "classifier": {"file": CLASSIFIER_FILE, "options": {key: options[key] for key in CLASSIFIER_KEYS}},
        "speed": {"train_docs": trained_docs, "train_seconds": round(train_seconds, 3),
                  "train_docs_per_s": trained_docs / train_seconds if train_seconds else None,
                  "heldout_predict_docs_per_s": len(heldout) / predict_seconds if predict_seconds else None},
        "paper": PAPER_POINT,
    }


# ------------------------------------------------------------------------------------------ the shards
def web_recall_task(in_dir: str, index: int, out_dir: str, model_path: str, threshold: float,
                    options: Mapping[str, Any]) -> dict[str, Any]:
    """Shard `index`: P(code) of every page, the rule or the threshold decides, kept + dropped written."""
    stat = os.stat(model_path)
    key = ("web_recall", model_path, stat.st_mtime_ns, stat.st_size)  # a retrained classifier is loaded anew
    if key not in WORKER_CACHE:
        WORKER_CACHE[key] = TextClassifier.load(model_path)
    table = ds.read_part(in_dir, index)
    tick = time.perf_counter()
    probabilities = WORKER_CACHE[key].probability([text or "" for text in column(table, "text")])
    seconds = time.perf_counter() - tick
    rule = rule_mask(table, options["min_code_chars"])
    passed = probabilities >= threshold
    keep = rule | passed
    reasons = [None if k else drop_reason(p, threshold) for k, p in zip(keep.tolist(), probabilities.tolist())]
    table = ds.with_columns(table, {
        "recall_path": pa.array(["rule" if r else "classifier" for r in rule.tolist()], pa.string()),
        "code_probability": pa.array(probabilities, pa.float64())})
    kept, dropped = ds.split_rows(table, keep, reasons)
    stats = ds.write_part(out_dir, index, kept, dropped)
    stats.update({"rule_rows": int(rule.sum()), "classifier_kept": int((~rule & passed).sum()),
                  "classifier_dropped": int((~keep).sum()), "classify_seconds": round(seconds, 4)})
    return stats


def _plot(record: Mapping[str, Any], path: str) -> None:
    import matplotlib  # here: `seedcoder curate` imports every step, and most runs draw no plot

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.5, 4.8))
    held = record["heldout"]
    curve = held["curve"]
    axis.plot([p["recall"] for p in curve], [p["precision"] for p in curve], color="#4c72b0", drawstyle="steps-post",
              label=f"held out ({held['pages']} pages)")
    if record.get("cross_validation"):
        cv = record["cross_validation"]
        axis.plot([p["recall"] for p in cv["curve"]], [p["precision"] for p in cv["curve"]], color="#8c8c8c",
                  linestyle="--", drawstyle="steps-post", label=f"train, {cv['folds']}-fold out-of-fold")
    chosen, threshold = held["classifier"], record["threshold"]["value"]
    if chosen["recall"] is not None and chosen["precision"] is not None:
        axis.scatter([chosen["recall"]], [chosen["precision"]], color="#c44e52", zorder=3,
                     label=f"threshold {threshold:.3f}: P {chosen['precision']:.2f}, R {chosen['recall']:.2f}")
    axis.scatter([PAPER_POINT["recall"]], [PAPER_POINT["precision"]], marker="x", color="black", zorder=3,
                 label="Seed-Coder paper: P 0.45, R 0.99")
    axis.axvline(record["threshold"]["target_recall"], color="#dd8452", linestyle=":", linewidth=1,
                 label=f"target recall {record['threshold']['target_recall']}")
    axis.set_xlim(0, 1.02)
    axis.set_ylim(0, 1.02)
    axis.set_xlabel("recall (code-related pages kept)")
    axis.set_ylabel("precision")
    axis.set_title("web recall: fastText classifier, precision vs recall")
    axis.legend(fontsize="small", loc="lower left")
    save_png(figure, path, bbox_inches="tight")


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def run_web_recall(ctx: StepContext) -> dict[str, Any]:
    in_dir = ctx.inputs["in"]
    parts = ds.finished_parts(in_dir)
    gold = ctx.options["gold"]
    if not gold:
        raise CurateConfigError(f"{ctx.name}.gold: a gold set is required (a labels jsonl: url, label, split; "
                                "or text, label, split)")
    gold_path = os.path.abspath(gold)
    if not os.path.isfile(gold_path):
        raise CurateConfigError(f"{ctx.name}.gold: gold file {gold_path} does not exist")
    gold_sha256 = _sha256(gold_path)
    done = ctx.prepare(gold_sha256=gold_sha256)
    if done is not None:
        return done
    os.makedirs(os.path.join(ctx.out_dir, ds.WORK_DIR), exist_ok=True)
    model_path = os.path.join(ctx.out_dir, CLASSIFIER_FILE)
    record_path = ds.work_path(ctx.out_dir, TRAIN_RECORD)
    if os.path.exists(record_path) and os.path.exists(model_path):
        record = ds.read_json(record_path)
        say(f"{ctx.name}: classifier already trained ({model_path}); threshold {record['threshold']['value']:.4f}")
    else:
        record = _finite(train_recall(ctx, gold_path, gold_sha256, parts))
        ds.write_json(record_path, record)
    threshold = float(record["threshold"]["value"])
    tasks = ctx.part_tasks("seedcoder.curate.web_recall:web_recall_task", parts, in_dir=in_dir, out_dir=ctx.out_dir,
                           model_path=model_path, threshold=threshold, options=ctx.options)
    markers = ctx.run(tasks, "classify")
    stats = [marker.get("stats", {}) for marker in markers]
    rows = sum(s.get("kept_rows", 0) + s.get("dropped_rows", 0) for s in stats)
    classify_seconds = sum(s.get("classify_seconds", 0.0) for s in stats)
    task_seconds = sum(marker.get("seconds", 0.0) for marker in markers)
    rule_rows = sum(s.get("rule_rows", 0) for s in stats)
    kept, dropped = sum(s.get("classifier_kept", 0) for s in stats), sum(s.get("classifier_dropped", 0) for s in stats)
    if rows != rule_rows + kept + dropped:
        raise CurateStateError(f"{ctx.name}: shard markers count {rows} rows but {rule_rows} + {kept} + {dropped} by path")
    record["dataset"] = {"pages": rows, "rule": rule_rows, "classifier_kept": kept, "classifier_dropped": dropped,
                         "kept": rule_rows + kept}
    record["speed"].update({"classify_docs_per_s": rows / classify_seconds if classify_seconds else None,
                            "step_docs_per_s": rows / task_seconds if task_seconds else None})
    record = _finite(record)
    ds.write_json(os.path.join(ctx.out_dir, METRICS_FILE), record)
    _plot(record, os.path.join(ctx.out_dir, PLOT_FILE))
    held = record["heldout"]
    summary = {"threshold": threshold, "threshold_how": record["threshold"]["how"],
               "heldout_pages": held["pages"],
               "heldout_recall": held["classifier"]["recall"], "heldout_precision": held["classifier"]["precision"],
               "heldout_step_recall": held["step"]["recall"], "heldout_step_precision": held["step"]["precision"],
               "pages_by_path": {"rule": rule_rows, "classifier_kept": kept, "classifier_dropped": dropped},
               "files": [CLASSIFIER_FILE, METRICS_FILE, PLOT_FILE]}
    say(f"{ctx.name}: held out: recall {held['classifier']['recall']}, precision {held['classifier']['precision']} "
        f"at threshold {threshold:.4f} (step, with the rule path: recall {held['step']['recall']}, precision "
        f"{held['step']['precision']})")
    return ctx.finish(markers, {"recall": summary})


# ------------------------------------------------------------------------------------------ options
@dataclass
class WebRecallOptions:
    gold: str = option("", "the gold set: a jsonl of {url, label: code|other, split} (pages of this dataset) or "
                           "of {text, label, split}")
    threshold: float | None = option(None, "keep a classifier-path page when P(code) >= this (default: picked "
                                           "for target_recall)")
    target_recall: float = option(0.99, "the recall the picked threshold reaches (the paper: 0.99 at precision 0.45)")
    threshold_folds: int = option(5, "pick the threshold on k-fold out-of-fold probabilities of the train split "
                                     "(0: on the held-out split itself)")
    heldout_fraction: float = option(0.2, "gold lines without a split: this share (by a hash of url or text) is "
                                          "held out")
    min_gold: int = option(5, "fewest train pages of each class")
    min_code_chars: int = option(20, "rule path: pages with code tags and at least this many characters in them")
    epochs: int = option(ClassifierOptions.epochs, "fastText: passes over the train split")
    lr: float = option(ClassifierOptions.lr, "fastText: learning rate")
    word_ngrams: int = option(ClassifierOptions.word_ngrams, "fastText: word n-grams up to this length")
    dim: int = option(ClassifierOptions.dim, "fastText: embedding size")
    min_count: int = option(ClassifierOptions.min_count, "fastText: rarer words are ignored")
    bucket: int = option(ClassifierOptions.bucket, "fastText: n-gram hash buckets (model ~ bucket x dim x 4 B)")
    seed: int = option(ClassifierOptions.seed, "fastText's seed and the folds' shuffle")
    threads: int = option(ClassifierOptions.threads, "fastText training threads (1: deterministic)")

    def __post_init__(self) -> None:
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold: must be in [0, 1], got {self.threshold}")
        if not 0.0 < self.target_recall <= 1.0:
            raise ValueError(f"target_recall: must be in (0, 1], got {self.target_recall}")
        if self.threshold_folds < 0 or self.threshold_folds == 1:
            raise ValueError(f"threshold_folds: must be 0 or at least 2, got {self.threshold_folds}")
        if not 0.0 <= self.heldout_fraction < 1.0:
            raise ValueError(f"heldout_fraction: must be in [0, 1), got {self.heldout_fraction}")
        if self.min_gold < 1:
            raise ValueError(f"min_gold: must be at least 1, got {self.min_gold}")
        if self.min_code_chars < 0:
            raise ValueError(f"min_code_chars: must be >= 0, got {self.min_code_chars}")
        ClassifierOptions(**{key: getattr(self, key) for key in CLASSIFIER_KEYS})  # its ValueError names the key
        if not self.gold:
            raise ValueError("gold: a gold set is required (a labels jsonl: url, label, split; or text, label, split)")


STEP = StepKind("web_recall", "code-related web pages: code tags (rule) or a fastText classifier from a gold set",
                run_web_recall, WebRecallOptions, in_line="web")


__all__ = ["CLASSIFIER_FILE", "METRICS_FILE", "PLOT_FILE", "STEP", "GoldPage", "WebRecallOptions", "drop_reason",
           "match_gold", "read_gold", "rule_mask", "run_web_recall", "train_recall", "web_recall_task"]
