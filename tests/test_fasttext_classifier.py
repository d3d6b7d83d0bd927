"""The fastText classifier (seedcoder.curate.fasttext_classifier) on real text: standard library docstrings and code
(code-related) against licence texts (not), plus the precision / recall arithmetic against brute force."""

from __future__ import annotations

import math
import os
import struct

import numpy as np
import pytest
from recall_texts import licence_paragraphs, stdlib_docs_and_code

from seedcoder.curate import fasttext_classifier as fc
from seedcoder.curate.fasttext_classifier import (
    ClassifierFileError,
    ClassifierOptions,
    TextClassifier,
    normalize,
    precision_recall,
    precision_recall_curve,
    threshold_for_recall,
)

SMALL = ClassifierOptions(epochs=10, dim=16, bucket=20_000)


@pytest.fixture(scope="module")
def corpus():
    docs, code = stdlib_docs_and_code()
    other = licence_paragraphs()
    if len(docs) < 100 or len(other) < 100:
        pytest.skip(f"too few texts on this machine: {len(docs)} docstrings, {len(other)} licence paragraphs")
    positives = list(docs[:150]) + list(code[:100])
    negatives = list(other[:250])
    texts = positives + negatives
    labels = np.array([True] * len(positives) + [False] * len(negatives))
    order = np.random.default_rng(0).permutation(len(texts))
    texts, labels = [texts[i] for i in order], labels[order]
    cut = int(0.7 * len(texts))
    return texts[:cut], labels[:cut], texts[cut:], labels[cut:]


@pytest.fixture(scope="module")
def trained(corpus):
    train_texts, train_labels, _, _ = corpus
    return TextClassifier.train(train_texts, train_labels, SMALL)


def test_separates_code_related_text_from_licences_on_held_out_text(corpus, trained):
    _, _, test_texts, test_labels = corpus
    p = trained.probability(test_texts)
    assert p.dtype == np.float64 and p.shape == (len(test_texts),)
    assert np.all((p >= 0) & (p <= 1))
    metrics = precision_recall(p, test_labels, 0.5)
    assert metrics["tp"] + metrics["fp"] + metrics["fn"] + metrics["tn"] == len(test_texts)
    assert metrics["recall"] >= 0.95 and metrics["precision"] >= 0.95, metrics
    # unseen prose about code (a docstring held back from training) vs a licence paragraph
    assert p[test_labels].mean() > 0.8 > 0.2 > p[~test_labels].mean()


def test_training_is_deterministic_also_after_other_models_in_the_process(corpus, trained):
    train_texts, train_labels, test_texts, _ = corpus
    first = trained.probability(test_texts)
    # other models in between leave freed memory that fastText's uninitialised matrix would pick up
    for seed in (1, 2):
        TextClassifier.train(train_texts[: len(train_texts) // 2], train_labels[: len(train_texts) // 2],
                             ClassifierOptions(epochs=3, dim=16, bucket=20_000, seed=seed))
    again = TextClassifier.train(train_texts, train_labels, SMALL).probability(test_texts)
    assert np.array_equal(first, again)
    other_seed = TextClassifier.train(train_texts, train_labels, ClassifierOptions(epochs=10, dim=16, bucket=20_000,
                                                                                   seed=7))
    assert not np.array_equal(first, other_seed.probability(test_texts))  # the seed is used


def test_save_is_atomic_and_load_gives_the_same_probabilities(tmp_path, corpus, trained):
    _, _, test_texts, _ = corpus
    path = tmp_path / "models" / "code.bin"
    trained.save(str(path))
    assert sorted(os.listdir(path.parent)) == ["code.bin"]  # no temp file left
    loaded = TextClassifier.load(str(path))
    assert np.array_equal(loaded.probability(test_texts), trained.probability(test_texts))
    trained.save(str(path))  # overwrites
    assert sorted(os.listdir(path.parent)) == ["code.bin"]


def test_load_names_the_file_when_it_is_missing_or_bad(tmp_path, trained):
    good = tmp_path / "good.bin"
    trained.save(str(good))
    data = good.read_bytes()
    with pytest.raises(ClassifierFileError, match=r"nothere\.bin: no such file"):
        TextClassifier.load(str(tmp_path / "nothere.bin"))
    with pytest.raises(ClassifierFileError, match="not a regular file"):
        TextClassifier.load(str(tmp_path))
    cases = {"text.bin": b"this is not a model, just words\n" * 10, "empty.bin": b"",
             "cut_tail.bin": data[:-1], "cut_matrix.bin": data[: len(data) // 2], "cut_head.bin": data[:100],
             "trailing.bin": data + b"\0"}
    expected = {"text.bin": "not a fastText model", "empty.bin": "truncated", "cut_tail.bin": "truncated",
                "cut_matrix.bin": "truncated", "cut_head.bin": "truncated", "trailing.bin": "after the model's end"}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ClassifierFileError, match=str(tmp_path / name)) as error:
            TextClassifier.load(str(tmp_path / name))
        assert expected[name] in str(error.value), (name, str(error.value))
    unsupervised = bytearray(data)
    struct.pack_into("<i", unsupervised, 8 + 7 * 4, 1)  # args.model = cbow
    (tmp_path / "cbow.bin").write_bytes(bytes(unsupervised))
    with pytest.raises(ClassifierFileError, match="not a supervised"):
        TextClassifier.load(str(tmp_path / "cbow.bin"))


def test_load_refuses_a_fasttext_model_with_other_labels(tmp_path):
    import fasttext

    lines = tmp_path / "train.txt"
    lines.write_text("__label__spam buy now cheap\n__label__ham see you at lunch\n" * 30)
    with fc._zero_filled_allocations():
        model = fasttext.train_supervised(str(lines), dim=8, bucket=1000, verbose=0, thread=1)
    model.save_model(str(tmp_path / "spam.bin"))
    with pytest.raises(ClassifierFileError, match=r"labels \['__label__ham', '__label__spam'\]"):
        TextClassifier.load(str(tmp_path / "spam.bin"))


@pytest.mark.parametrize("texts, labels, message", [
    ([], [], "texts: the training set is empty"),
    (["def f(): pass", "x = 1"], [True, True], "labels: one class only"),
    (["a", "b", "c"], [True, False], "differ in length: 3 texts, 2 labels"),
    (["a", 3], [True, False], r"texts\[1\]: expected a string"),
    (["a", "b"], [True, "yes"], r"labels\[1\]: expected a boolean"),
    ("some text", [True], "texts: expected a sequence of strings"),
])
def test_training_refuses_bad_input_naming_the_argument(texts, labels, message):
    with pytest.raises(ValueError, match=message):
        TextClassifier.train(texts, labels, SMALL)


@pytest.mark.parametrize("field, value", [("epochs", 0), ("lr", 0.0), ("dim", -1), ("bucket", -5), ("threads", 0),
                                          ("word_ngrams", 0), ("seed", -1), ("min_count", 1.5)])
def test_options_refuse_bad_values_naming_the_field(field, value):
    with pytest.raises(ValueError, match=f"^{field}:"):
        ClassifierOptions(**{field: value})
    with pytest.raises(ValueError, match="^bucket: word_ngrams = 2 needs buckets"):
        ClassifierOptions(bucket=0)


def test_normalize_makes_identifiers_and_symbols_tokens_on_one_line():
    line = normalize("Call os.path.join(a, b_c)\n    return X[0] != None  # ok\n\tdone")
    assert line == ("call os . path . join ( a , b_c ) <indent> return x [ 0 ] ! = none # ok <indent> done")
    assert "\n" not in normalize("a\nb\r\nc") and normalize("") == ""
    long = " ".join(f"w{i}" for i in range(5000))
    tokens = normalize(long).split()
    assert len(tokens) == fc.MAX_TOKENS and tokens[-1] == f"w{fc.MAX_TOKENS - 1}"  # the head, cut at a token
    assert normalize("x" * 100_000) == "x" * 100_000  # one long token is scanned whole
    assert normalize("caf\u00e9 \udcff ok") == "café ? ok"  # a lone surrogate cannot reach fastText


def test_probability_of_edge_texts(trained):
    p = trained.probability(["", "   ", "\x00\x01", "def f(x):\n    return x"])
    assert p.shape == (4,) and np.all((p >= 0) & (p <= 1))
    assert trained.probability([]).shape == (0,)
    with pytest.raises(ValueError, match="texts: expected a sequence"):
        trained.probability("a single string")


def test_precision_recall_counts_by_hand():
    p = [0.9, 0.8, 0.7, 0.4, 0.3, 0.1]
    y = [True, False, True, True, False, False]
    got = precision_recall(p, y, 0.5)
    assert got == {"threshold": 0.5, "tp": 2, "fp": 1, "fn": 1, "tn": 2, "precision": 2 / 3, "recall": 2 / 3}
    assert precision_recall(p, y, 0.7)["tp"] == 2  # P >= threshold counts as positive
    assert math.isnan(precision_recall(p, y, 0.95)["precision"])  # nothing predicted positive
    assert math.isnan(precision_recall(p, [False] * 6, 0.5)["recall"])  # nothing to recall
    with pytest.raises(ValueError, match="differ in length"):
        precision_recall(p, y[:3], 0.5)


def test_threshold_for_recall_is_the_highest_reaching_the_target():
    generator = np.random.default_rng(3)
    for _ in range(50):
        n = int(generator.integers(2, 60))
        p = np.round(generator.random(n), 2)  # ties
        y = generator.random(n) < 0.5
        if not y.any():
            continue
        target = float(generator.choice([0.5, 0.9, 0.99, 1.0, 1 / 3]))
        t = threshold_for_recall(p, y, target)
        assert precision_recall(p, y, t)["recall"] >= target
        higher = [c for c in np.unique(p) if c > t]
        assert all(precision_recall(p, y, c)["recall"] < target for c in higher)
    assert threshold_for_recall([0.9, 0.2, 0.6], [True, True, False], 1.0) == 0.2
    assert threshold_for_recall([0.9, 0.2, 0.6], [True, True, False], 0.5) == 0.9
    with pytest.raises(ValueError, match="target_recall"):
        threshold_for_recall([0.5], [True], 0.0)
    with pytest.raises(ValueError, match="no positive example"):
        threshold_for_recall([0.5], [False], 0.9)


def test_curve_points_agree_with_precision_recall():
    generator = np.random.default_rng(5)
    p = np.round(generator.random(200), 2)
    y = generator.random(200) < p  # informative probabilities
    curve = precision_recall_curve(p, y)
    thresholds = [point["threshold"] for point in curve]
    assert thresholds == sorted(set(p.tolist()), reverse=True)
    for point in curve:
        assert point == precision_recall(p, y, point["threshold"])
    assert curve[-1]["recall"] == 1.0 and curve[-1]["fn"] == 0 and curve[-1]["tn"] == 0
    recalls = [point["recall"] for point in curve]
    assert recalls == sorted(recalls)
    with pytest.raises(ValueError, match="no positive example"):
        precision_recall_curve([0.1, 0.2], [False, False])
