"""The fastText text classifier of the curation pipeline (web recall, the high-quality set's iterative recall):
training, P(positive), saving and loading, and the precision / recall arithmetic around a threshold.

    from seedcoder.curate.fasttext_classifier import (ClassifierOptions, TextClassifier, precision_recall,
                                                       precision_recall_curve, threshold_for_recall)
    classifier = TextClassifier.train(texts, labels, ClassifierOptions(epochs=50, seed=0))   # labels: bools
    p = classifier.probability(other_texts)              # np.ndarray float64, P(positive) in [0, 1], one per text
    classifier.save("runs/x/classifier.bin")             # atomic: a temp file in the same folder + os.replace
    classifier = TextClassifier.load("runs/x/classifier.bin")   # ClassifierFileError naming the file when bad
    t = threshold_for_recall(p_heldout, y_heldout, 0.99) # the highest threshold whose recall (P >= t) is >= 0.99
    precision_recall(p_heldout, y_heldout, t)            # {"threshold", "tp", "fp", "fn", "tn", "precision", "recall"}
    precision_recall_curve(p_heldout, y_heldout)         # one such dict per distinct probability, highest first

`ClassifierOptions` (all keyword, checked on construction, ValueError naming the field): `epochs` (50), `lr` (1.0),
`word_ngrams` (2: words and word bigrams), `dim` (32), `min_count` (1), `bucket` (200,000 hash buckets of the
n-gram embeddings; the model file is about (vocabulary + bucket) x dim x 4 bytes, 26 MB at the defaults; raise it
for web-scale gold sets), `seed` (0), `threads` (1). Epochs and rate suit gold sets of tens to thousands of pages:
fastText starts from a saddle (output weights zero, the average of a long page's embeddings near zero), and on the
58 real pages of tests/data/web 25 epochs at lr 0.5 barely leave it (out-of-fold AUC 0.59) where 50 at 1.0 reach
0.96. Training with `threads = 1` is deterministic: the same texts, labels and options give the same model and the
same probabilities (the lines are shuffled with `seed` before fastText reads them, since fastText learns them in
file order), also for many models trained in one process: this fastText leaves most of its input matrix
uninitialised, so training runs with glibc's allocations zero-filled (see `_zero_filled_allocations`; without glibc
a second model in a process may differ). More threads train faster but not reproducibly.

Text normalisation (`normalize`, applied to every text at training and at prediction, so it is part of the model
format): the first `MAX_TOKENS` tokens of the text, where a token is a run of word characters (`\\w+`: letters,
digits, `_`, so identifiers stay whole), a single other non-space character (`(`, `.`, `=`, `{`, `#`, ...: code
punctuation becomes tokens of its own), or `<indent>` for a line break followed by indentation (code blocks);
lower-cased, joined by spaces on one line. Only a prefix of the text is scanned, so an enormous page costs no
more than its head.

fastText itself (`fasttext.train_supervised`, from the fasttext-numpy2-wheel package) reads its training set from a
file: `train` writes one in a temporary folder (`temp_dir`, default the system's) and deletes it afterwards. The
model has two labels, `__label__1` (positive) and `__label__0`; `probability` is fastText's softmax probability of
`__label__1` (clipped to [0, 1]: fastText adds 1e-5 before its log). The saved file is fastText's own binary
format (`fasttext.load_model` reads it; give it `normalize`d lines).

Bad input raises ValueError naming the argument: an empty training set, one class only, texts and labels of
different lengths, a text that is not a string, a label that is not a bool (or 0/1).
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import mmap
import os
import platform
import re
import struct
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import fasttext
import numpy as np

from seedcoder.config import option
from seedcoder.errors import UserError
from seedcoder.fileio import atomic_write_by_name

POSITIVE_LABEL = "__label__1"
NEGATIVE_LABEL = "__label__0"
MAX_TOKENS = 1024  # tokens of a text the classifier reads (its head)
INDENT_TOKEN = "<indent>"
# a line break before indentation (the indent token), a word, or one other visible character
_TOKEN = re.compile(r"\n(?=[ \t]+\S)|\w+|[^\w\s\x00-\x1f\x7f]")
_CHARS_PER_TOKEN_GUESS = 12  # the first scan reads max_tokens * this many characters; longer tokens: scan more


# fastText (the version in fasttext-numpy2-wheel) fills only threads/10 of its input matrix with random values
# (DenseMatrix::uniform: blocks of a tenth, one per thread) and allocates it with posix_memalign, which does not
# clear it: the rest holds zeros when the memory is fresh from the kernel but whatever the process freed before when
# it is reused, so a second training in one process differs from the first and can diverge to NaN. glibc's
# M_PERTURB makes every allocation zero-filled while it is set; training runs under it (and a lock, since the
# setting is process-wide), so each model is the one a fresh process trains. Elsewhere (not glibc) it is not set.
_M_PERTURB = -6
_TRAIN_LOCK = threading.Lock()


def _glibc_mallopt():
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return None


_MALLOPT = _glibc_mallopt()


@contextlib.contextmanager
def _zero_filled_allocations():
    with _TRAIN_LOCK:
        if _MALLOPT is not None:
            _MALLOPT(_M_PERTURB, 0xFF)  # allocations are filled with ~0xFF = 0 (frees with 0xFF)
        try:
            yield
        finally:
            if _MALLOPT is not None:
                _MALLOPT(_M_PERTURB, 0)


class ClassifierFileError(UserError):
    """A classifier file that is missing, unreadable or not a model of this module; the message names the file."""


@dataclass
class ClassifierOptions:
    """fastText's training settings (its names: epoch, lr, wordNgrams, dim, minCount, bucket, seed, thread)."""

    epochs: int = option(50, "passes over the training set")
    lr: float = option(1.0, "learning rate (decays linearly to 0)")
    word_ngrams: int = option(2, "word n-grams of up to this length (2: words and bigrams)")
    dim: int = option(32, "embedding size")
    min_count: int = option(1, "words seen fewer times are ignored")
    bucket: int = option(200_000, "hash buckets of the word n-gram embeddings (model size ~ bucket x dim x 4 B)")
    seed: int = option(0, "seed of fastText's initialisation and of the training order")
    threads: int = option(1, "training threads (1: deterministic)")

    def __post_init__(self) -> None:
        for name in ("epochs", "word_ngrams", "dim", "min_count", "threads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name}: must be an integer >= 1, got {value!r}")
        if isinstance(self.bucket, bool) or not isinstance(self.bucket, (int, np.integer)) or self.bucket < 0:
            raise ValueError(f"bucket: must be an integer >= 0, got {self.bucket!r}")
        if self.word_ngrams > 1 and self.bucket == 0:
            raise ValueError(f"bucket: word_ngrams = {self.word_ngrams} needs buckets for its n-grams, got 0")
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not 0.0 < self.lr <= 10.0:
            raise ValueError(f"lr: must be a number in (0, 10], got {self.lr!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or not 0 <= self.seed < 2**31:
            raise ValueError(f"seed: must be an integer in [0, 2**31), got {self.seed!r}")


# ------------------------------------------------------------------------------------------ normalisation
def normalize(text: str, max_tokens: int = MAX_TOKENS) -> str:
    """`text` as the classifier reads it: its first `max_tokens` tokens, lower-cased, on one line (see the module)."""
    if not isinstance(text, str):
        raise ValueError(f"text: expected a string, got {type(text).__name__}")
    limit = max_tokens * _CHARS_PER_TOKEN_GUESS
    while True:
        # a prefix: a token cut at its end is the last one found, so it is dropped whenever the prefix holds
        # more than max_tokens tokens; otherwise scan a longer prefix (or the whole text)
        tokens = _TOKEN.findall(text if limit >= len(text) else text[:limit])
        if len(tokens) > max_tokens or limit >= len(text):
            break
        limit *= 4
    del tokens[max_tokens:]
    line = " ".join(tokens).lower().replace("\n", INDENT_TOKEN)  # the only "\n" left are indent tokens
    # lone surrogates (text decoded with surrogateescape) cannot go to fastText as UTF-8
    return line.encode("utf-8", "replace").decode("utf-8") if not line.isascii() else line


def _check_texts(texts: Any, name: str = "texts") -> list[str]:
    if isinstance(texts, (str, bytes)) or not isinstance(texts, Sequence | np.ndarray):
        raise ValueError(f"{name}: expected a sequence of strings, got {type(texts).__name__}")
    texts = list(texts)
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(f"{name}[{index}]: expected a string, got {type(text).__name__}")
    return texts


def _check_labels(labels: Any, name: str = "labels") -> np.ndarray:
    if isinstance(labels, (str, bytes)) or not isinstance(labels, Sequence | np.ndarray):
        raise ValueError(f"{name}: expected a sequence of booleans, got {type(labels).__name__}")
    values = list(labels)
    for index, value in enumerate(values):
        if not (isinstance(value, (bool, np.bool_)) or (isinstance(value, (int, np.integer)) and value in (0, 1))):
            raise ValueError(f"{name}[{index}]: expected a boolean (or 0/1), got {value!r}")
    return np.array([bool(value) for value in values], dtype=bool)


def _check_probabilities(probabilities: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(probabilities, dtype=np.float64).reshape(-1)
    y = _check_labels(labels)
    if len(p) != len(y):
        raise ValueError(f"probabilities and labels differ in length: {len(p)} probabilities, {len(y)} labels")
    if len(p) and not np.all(np.isfinite(p)):
        raise ValueError("probabilities: must be finite numbers")
    return p, y


# ------------------------------------------------------------------------------------------ the classifier
class TextClassifier:
    """A binary fastText classifier; `probability(texts)` is P(positive) per text."""

    def __init__(self, model: Any, path: str | None = None) -> None:
        self.model = model
        self.path = path

    @classmethod
    def train(cls, texts: Sequence[str], labels: Sequence[bool], options: ClassifierOptions | None = None, *,
              temp_dir: str | None = None) -> TextClassifier:
        options = options if options is not None else ClassifierOptions()
        if not isinstance(options, ClassifierOptions):
            raise ValueError(f"options: expected ClassifierOptions, got {type(options).__name__}")
        texts = _check_texts(texts)
        y = _check_labels(labels)
        if len(texts) != len(y):
            raise ValueError(f"texts and labels differ in length: {len(texts)} texts, {len(y)} labels")
        if not texts:
            raise ValueError("texts: the training set is empty")
        positives = int(y.sum())
        if positives in (0, len(y)):
            raise ValueError(f"labels: one class only ({len(y)} {'positive' if positives else 'negative'}); "
                             "training needs positive and negative examples")
        order = np.random.default_rng(options.seed).permutation(len(texts))  # fastText learns in file order
        with tempfile.TemporaryDirectory(prefix="seedcoder-fasttext-", dir=temp_dir) as folder:
            path = os.path.join(folder, "train.txt")
            with open(path, "w", encoding="utf-8") as file:
                for index in order.tolist():
                    file.write(f"{POSITIVE_LABEL if y[index] else NEGATIVE_LABEL} {normalize(texts[index])}\n")
            try:
                with _zero_filled_allocations():
                    model = fasttext.train_supervised(
                        input=path, epoch=int(options.epochs), lr=float(options.lr),
                        wordNgrams=int(options.word_ngrams), dim=int(options.dim), minCount=int(options.min_count),
                        bucket=int(options.bucket), seed=int(options.seed), thread=int(options.threads),
                        loss="softmax", verbose=0)
            except RuntimeError as error:
                if "NaN" not in str(error):
                    raise
                raise ValueError(f"lr: fastText's training diverged ({error}) at lr = {options.lr}; lower it"
                                 ) from None
        return cls(model)

    def probability(self, texts: Sequence[str]) -> np.ndarray:
        """P(positive) of each text, float64 in [0, 1]."""
        texts = _check_texts(texts)
        if not texts:
            return np.zeros(0, dtype=np.float64)
        labels, probabilities = self.model.predict([normalize(text) for text in texts], k=2, threshold=0.0)
        out = np.empty(len(texts), dtype=np.float64)
        for row, (names, values) in enumerate(zip(labels, probabilities)):
            out[row] = 0.0
            for name, value in zip(names, values):
                if name == POSITIVE_LABEL:
                    out[row] = value
        return np.clip(out, 0.0, 1.0)

    def save(self, path: str) -> None:
        """fastText's binary model at `path`, atomically (temp file in the same folder, fsync, os.replace)."""
        path = os.fspath(path)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        atomic_write_by_name(path, self.model.save_model)
        self.path = path

    @classmethod
    def load(cls, path: str) -> TextClassifier:
        path = os.fspath(path)
        _check_model_file(path)
        try:
            model = fasttext.load_model(path)
        except (ValueError, RuntimeError, OSError, MemoryError) as error:
            raise ClassifierFileError(f"fastText classifier {path}: cannot be read as a fastText model ({error})"
                                      ) from None
        labels = set(model.get_labels())
        if labels != {POSITIVE_LABEL, NEGATIVE_LABEL}:
            raise ClassifierFileError(f"fastText classifier {path}: labels {sorted(labels)}, expected "
                                      f"{POSITIVE_LABEL} and {NEGATIVE_LABEL} (not a model of this module)")
        return cls(model, path)


_MAGIC = 793712314  # FASTTEXT_FILEFORMAT_MAGIC_INT32
_SUPERVISED = 3  # model_name::sup


def _check_model_file(path: str) -> None:
    """Walk the layout of fastText's binary model (fastText.cc saveModel) before fastText reads it: fastText reads a
    truncated file without complaint (missing weights stay zero) and, when the cut falls in its header, tries
    allocations of any size. Layout: magic and version (int32), args (12 int32 and a double), the dictionary (size,
    nwords, nlabels as int32, ntokens and pruneidx_size as int64, then per entry: the word, a NUL byte, count as
    int64, type as int8; then pruneidx_size pairs of int32), then per matrix (input, output) a quantized flag byte,
    rows and columns as int64 and rows x columns float32."""
    if not os.path.exists(path):
        raise ClassifierFileError(f"fastText classifier {path}: no such file")
    if not os.path.isfile(path):
        raise ClassifierFileError(f"fastText classifier {path}: not a regular file")
    size = os.path.getsize(path)

    def bad(problem: str) -> ClassifierFileError:
        return ClassifierFileError(f"fastText classifier {path}: {problem}")

    def need(end: int, what: str) -> None:
        if end > size:
            raise bad(f"truncated ({size:,} bytes; {what} ends at byte {end:,})")

    need(8 + 56 + 28, "the header")
    try:
        with open(path, "rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
            magic, version = struct.unpack_from("<ii", data, 0)
            if magic != _MAGIC or version not in (11, 12):
                raise bad("not a fastText model (its first bytes are not fastText's magic number and version)")
            args = struct.unpack_from("<12id", data, 8)
            if args[7] != _SUPERVISED:
                raise bad("not a supervised (classifier) fastText model")
            entries, nwords, nlabels, _, pruned = struct.unpack_from("<iiiqq", data, 64)
            if entries < 0 or nwords < 0 or nlabels < 0 or nwords + nlabels != entries:
                raise bad(f"a damaged dictionary header ({entries} entries, {nwords} words, {nlabels} labels)")
            position = 92
            for _ in range(entries):
                end = data.find(b"\0", position)
                if end < 0:
                    raise bad(f"truncated ({size:,} bytes, in the dictionary)")
                position = end + 1 + 9
                need(position, "the dictionary")
            position += max(pruned, 0) * 8
            for name in ("input", "output"):
                need(position + 17, f"the {name} matrix header")
                if data[position]:
                    raise bad(f"a quantized model (its {name} matrix; this module saves full ones)")
                rows, columns = struct.unpack_from("<qq", data, position + 1)
                if rows < 0 or columns != args[0]:
                    raise bad(f"a damaged {name} matrix header ({rows} x {columns}, dim {args[0]})")
                position += 17 + rows * columns * 4
                need(position, f"the {name} matrix")
            if position != size:
                raise bad(f"{size - position:,} bytes after the model's end at byte {position:,}")
    except OSError as error:
        raise bad(f"cannot be read ({error})") from None


# ------------------------------------------------------------------------------------------ precision / recall
def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else math.nan


def precision_recall(probabilities: Sequence[float] | np.ndarray, labels: Sequence[bool] | np.ndarray,
                     threshold: float) -> dict[str, Any]:
    """Counts and ratios of the prediction P >= threshold against the labels. Undefined ratios (nothing predicted
    positive: precision; no positive label: recall) are nan."""
    p, y = _check_probabilities(probabilities, labels)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.floating, np.integer)) \
            or not math.isfinite(threshold):
        raise ValueError(f"threshold: expected a finite number, got {threshold!r}")
    predicted = p >= threshold
    tp = int(np.sum(predicted & y))
    fp = int(np.sum(predicted & ~y))
    fn = int(np.sum(~predicted & y))
    tn = int(np.sum(~predicted & ~y))
    return {"threshold": float(threshold), "tp": tp, "fp": fp, "fn": fn, "tn": tn,
            "precision": _ratio(tp, tp + fp), "recall": _ratio(tp, tp + fn)}


def threshold_for_recall(probabilities: Sequence[float] | np.ndarray, labels: Sequence[bool] | np.ndarray,
                         target_recall: float) -> float:
    """The highest threshold t whose recall (share of positives with P >= t) is at least `target_recall`: the
    probability of the k-th most probable positive, k = ceil(target_recall x positives)."""
    p, y = _check_probabilities(probabilities, labels)
    if isinstance(target_recall, bool) or not isinstance(target_recall, (int, float, np.floating)) \
            or not 0.0 < target_recall <= 1.0:
        raise ValueError(f"target_recall: must be in (0, 1], got {target_recall!r}")
    positives = np.sort(p[y])[::-1]
    if len(positives) == 0:
        raise ValueError("labels: no positive example, so no threshold reaches a recall")
    needed = max(1, math.ceil(target_recall * len(positives) - 1e-9))
    return float(positives[needed - 1])


def precision_recall_curve(probabilities: Sequence[float] | np.ndarray,
                           labels: Sequence[bool] | np.ndarray) -> list[dict[str, Any]]:
    """`precision_recall` at every distinct probability used as the threshold, from the highest (fewest predicted
    positive) to the lowest (everything predicted positive)."""
    p, y = _check_probabilities(probabilities, labels)
    if not y.any():
        raise ValueError("labels: no positive example, so recall is undefined everywhere")
    order = np.argsort(-p, kind="stable")
    sorted_p, sorted_y = p[order], y[order]
    tp = np.cumsum(sorted_y)
    fp = np.cumsum(~sorted_y)
    positives, negatives = int(y.sum()), int((~y).sum())
    last_of_run = np.flatnonzero(np.r_[sorted_p[1:] != sorted_p[:-1], True])  # all rows with P >= this value
    return [{"threshold": float(sorted_p[i]), "tp": int(tp[i]), "fp": int(fp[i]), "fn": positives - int(tp[i]),
             "tn": negatives - int(fp[i]), "precision": int(tp[i]) / int(tp[i] + fp[i]),
             "recall": int(tp[i]) / positives} for i in last_of_run.tolist()]


__all__ = ["INDENT_TOKEN", "MAX_TOKENS", "NEGATIVE_LABEL", "POSITIVE_LABEL", "ClassifierFileError",
           "ClassifierOptions", "TextClassifier", "normalize", "precision_recall",
           "precision_recall_curve", "threshold_for_recall"]
