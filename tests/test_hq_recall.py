"""The high-quality set by iterative recall (`seedcoder.curate.hq_recall`), on a pool of real files: the Python
files (and a few text files) of this interpreter's standard library, with synthetic scores from a known rule.

The rule: a Python file of the concurrency, networking, mail and markup packages (GOOD_PACKAGES: asyncio,
multiprocessing, email, xml, ...; their vocabulary is what the classifier can learn) is good, scores spread over
6.0 .. 9.5, except a fixed quarter of them, chosen by a hash of the path, that the "scorer" rates 5.x (below
recall_min_score); every other Python file is poor (2.x). So the good files are known: seeds are the good files
at >= 8.0 with the seed features, the rest must be recalled, no poor file can be kept, and a recalled good-package
file is kept with probability about 3/4. The precision against the scorer is measured against the base rate
(the share of high-scored candidates), which random recall would reach.
"""

import hashlib
import json
import os
import re
import sysconfig

import numpy as np
import pyarrow as pa
import pytest
import tomllib
from tokenizers import Tokenizer, models, pre_tokenizers

from seedcoder.config import ConfigError
from seedcoder.curate import dataset as ds
from seedcoder.curate import hq_recall, pipeline
from seedcoder.curate.errors import CurateStateError
from seedcoder.curate.executor import ExecutorConfig, TaskError
from seedcoder.curate.fasttext_classifier import TextClassifier
from seedcoder.curate.hq_recall import STEP, SourceMatcher, count_imports, text_features
from seedcoder.curate.step import StepContext

INLINE = ExecutorConfig(kind="local", workers=1, progress=False)
STDLIB = sysconfig.get_paths()["stdlib"]
GOOD_PACKAGES = {"asyncio", "multiprocessing", "concurrent", "email", "xml", "wsgiref", "urllib", "http", "html",
                 "json", "xmlrpc"}
SKIP_DIRS = {"site-packages", "test", "tests", "idle_test", "__pycache__"}
SOURCES = [{"name": "python", "languages": ["python"]},
           {"name": "algorithms", "keywords": ["sort", "heap", "binary search", "graph"]},
           {"name": "docs", "row_sources": ["web"]}]
# seeds need 8.0 (less than half of the good files, before the features); a small, quick classifier; with 3 negatives
# (and up to 3 hard ones) per seed its P is calibrated to a prior of ~1/5, so the threshold is below 0.5
OPTIONS = {"sources": SOURCES, "rounds": 3, "seed_min_score": 8.0, "threshold": 0.3,
           "classifier": {"epochs": 15, "lr": 1.0, "dim": 8, "word_ngrams": 1, "bucket": 20_000}}


def digest(text):
    return int(hashlib.sha1(text.encode()).hexdigest(), 16)


def synthetic_score(path, text, language):
    jitter = (digest(path) % 10) / 20  # 0 .. 0.45
    if language != "python":
        return 8.5 + jitter if digest(path) % 2 else 2.0 + jitter  # documents: half good
    if path.split("/")[0] in GOOD_PACKAGES:  # good: 6.0 .. 9.5, but a quarter the scorer rates low
        return 5.0 + jitter if digest(path) % 4 == 0 else 6.0 + 3.5 * (digest(path[::-1]) % 100) / 100
    return 2.0 + jitter


def stdlib_rows(limit=None):
    """Python, .txt and .rst files of 600 B - 12 KB from the standard library (tests excluded), in path order; the
    .rst and idlelib's .txt files stand for web pages (source web), the other .txt files are in no source's pool."""
    rows = []
    for folder, dirs, names in os.walk(STDLIB):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith(("config-", "lib-")))
        for name in sorted(names):
            path = os.path.join(folder, name)
            if not name.endswith((".py", ".txt", ".rst")) or not 600 <= os.path.getsize(path) <= 12_000:
                continue
            relative = os.path.relpath(path, STDLIB)
            with open(path, encoding="utf-8", errors="replace") as file:
                text = file.read()
            language = {".py": "python", ".txt": "text", ".rst": "restructuredtext"}[os.path.splitext(name)[1]]
            web = language == "restructuredtext" or (language == "text" and relative.startswith("idlelib/"))
            rows.append({"id": ds.stable_id("stdlib", relative), "repo": "stdlib", "path": relative,
                         "language": language, "text": text, "source": "web" if web else "file",
                         "score": synthetic_score(relative, text, language)})
    return rows[:limit]


def make_dataset(directory, rows, shards=3):
    ds.prepare_output(str(directory), {"step": "fixture", "name": "scored"})
    markers = []
    size = -(-len(rows) // shards)
    for index in range(shards):
        table = ds.base_table(rows[index * size : (index + 1) * size], pa.schema([("score", pa.float32())]))
        record = {"task": f"part-{index:05d}", "stats": ds.write_part(str(directory), index, table)}
        ds.write_json(ds.marker_path(str(directory), index), record)
        markers.append(record)
    ds.finish_dataset(str(directory), markers)
    return str(directory)


def run(out, source, options, executor=INLINE, name="hq_recall"):
    ctx = StepContext(kind="hq_recall", name=name, out_dir=str(out), options=STEP.check_options(options),
                      inputs={"in": source}, executor=executor)
    return STEP.run(ctx)


def rows_of(directory, dropped=False):
    return [row for _, table in ds.iter_tables(str(directory), dropped=dropped) for row in table.to_pylist()]


def outputs(directory):
    """What a run must reproduce: kept and dropped rows, the round tables, the metrics (without timings)."""
    rounds = {}
    work = os.path.join(directory, ds.WORK_DIR)
    for source in SOURCES:
        for number in range(1, 4):
            path = hq_recall.round_path(work, source["name"], number, ".parquet")
            rounds[(source["name"], number)] = [{**row, "probability": repr(row["probability"])}  # nan != nan
                                                for row in ds.read_table(path).to_pylist()]
    with open(os.path.join(directory, hq_recall.METRICS_FILE)) as file:
        metrics = json.load(file)
    for row in metrics["rounds"]:
        row.pop("seconds")
    return rows_of(directory), rows_of(directory, dropped=True), rounds, metrics


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    rows = stdlib_rows()
    assert len(rows) >= 300, f"expected the standard library's files, found {len(rows)} in {STDLIB}"
    return rows, make_dataset(tmp_path_factory.mktemp("hq") / "scored", rows)


@pytest.fixture(scope="module")
def finished(pool, tmp_path_factory):
    out = tmp_path_factory.mktemp("hq") / "out"
    success = run(out, pool[1], OPTIONS)
    return str(out), success


# ------------------------------------------------------------------------------------------ features, filters
def test_simple_features_and_source_filters():
    code = "import os\nfrom a import b\n# a comment\nx = 1  # trailing\n\ndef f():\n    return os.sep\n"
    features = text_features(code, "python")
    assert (features.comment_lines, features.code_lines, features.imports, features.prose) == (1, 5, 2, False)
    assert features.comment_ratio == pytest.approx(1 / 6)
    assert features.bytes == len(code.encode())
    assert count_imports("#include <stdio.h>\nusing System;\nuse std::io;\nconst x = require('x');\n") == 4
    assert count_imports("important = 1\nimported()\n") == 0
    prose = text_features("An é page\nabout sorting.\n", "text", "web")
    assert prose.prose and prose.comment_lines == 0 and prose.bytes == len("An é page\nabout sorting.\n".encode())

    algorithms = SourceMatcher({"name": "a", "languages": [], "keywords": ["binary search", "heap"], "paths": [],
                                "row_sources": []})
    assert algorithms.matches("a Binary\n  Search tree", "x.py", "python", "file")
    assert algorithms.matches("nothing", "lib/heap.py", "python", "file")  # the path counts too
    assert not algorithms.matches("heapq and binary searching", "x.py", "python", "file")  # whole words only
    narrow = SourceMatcher({"name": "n", "languages": ["python"], "keywords": [], "paths": ["*/algorithms/*"],
                            "row_sources": ["file"]})
    assert narrow.matches("", "repo/algorithms/sort.py", "python", "file")
    assert not narrow.matches("", "repo/algorithms/sort.py", "go", "file")
    assert not narrow.matches("", "repo/other/sort.py", "python", "file")
    assert not narrow.matches("", "repo/algorithms/sort.py", "python", "web")


# ------------------------------------------------------------------------------------------ the stdlib pool
def test_recall_on_the_stdlib_pool(pool, finished):
    rows, _ = pool
    out, success = finished
    kept, dropped = rows_of(out), rows_of(out, dropped=True)
    by_id = {row["id"]: row for row in rows}
    assert len(kept) + len(dropped) == len(rows)  # nothing lost
    assert {row["id"] for row in kept} | {row["id"] for row in dropped} == set(by_id)
    assert success["totals"]["kept_rows"] == len(kept) and success["hq_recall"]["total"]["rows"] == len(kept)

    # seeds (round 0): exactly the rows with a seed score and the seed features, in a pool
    options = STEP.check_options(OPTIONS)
    matchers = [SourceMatcher(source) for source in options["sources"]]
    expected_seeds = set()
    for row in rows:
        if row["score"] < 8.0 or not any(m.matches(row["text"], row["path"], row["language"], row["source"])
                                         for m in matchers):
            continue
        features = text_features(row["text"], row["language"], row["source"])
        if (0.02 <= features.comment_ratio <= 0.6 or features.prose) and 200 <= features.bytes <= 200_000:
            expected_seeds.add(row["id"])
    assert {row["id"] for row in kept if row["hq_round"] == 0} == expected_seeds
    assert all(row["hq_probability"] is None for row in kept if row["hq_round"] == 0)

    # recalled rows are kept only when the scorer agrees; the dropped ones say why
    recalled_kept = [row for row in kept if row["hq_round"] >= 1]
    assert recalled_kept and all(row["score"] >= 6.0 for row in recalled_kept)
    reasons = {row["id"]: row["drop_reason"] for row in dropped}
    low = [i for i, reason in reasons.items() if reason.startswith("low_score_after_recall: ")]
    assert low and all(by_id[i]["score"] < 6.0 for i in low)
    assert all(re.search(r"recalled by \w+ in round [123], P [01]\.\d+", reasons[i]) for i in low)
    for i, reason in reasons.items():
        in_pool = any(m.matches(by_id[i]["text"], by_id[i]["path"], by_id[i]["language"], by_id[i]["source"])
                      for m in matchers)
        assert reason.startswith("not_in_pool: ") == (not in_pool), (by_id[i]["path"], reason)
    assert any(r.startswith("not_recalled: P ") for r in reasons.values())
    assert any(r.startswith("not_in_pool: ") for r in reasons.values())  # the .txt files: in no source

    # what the rule predicts: most good Python files are found, no poor one is kept
    python = [row for row in rows if row["language"] == "python"]
    good = {row["id"] for row in python if row["score"] >= 6.0}
    found = {row["id"] for row in kept} & good
    assert len(found) >= 0.7 * len(good), (len(found), len(good))
    assert not {row["id"] for row in kept if row["language"] == "python"} - good

    # the metrics per round: what the round tables and the output say
    metrics = success["hq_recall"]
    with open(os.path.join(out, hq_recall.METRICS_FILE)) as file:
        assert json.load(file) == metrics
    assert os.path.getsize(os.path.join(out, hq_recall.PLOT_FILE)) > 10_000
    table = {(row["source"], row["round"]): row for row in metrics["rounds"]}
    first = table[("python", 1)]
    assert first["pool"] == len(python) and first["seeds"] == len(expected_seeds & {row["id"] for row in python})
    assert first["train_negatives_hard"] > 0  # a high score, not a comment line
    assert table[("python", 1)]["recalled"] and table[("python", 2)]["recalled"]
    for number in (1, 2, 3):
        row = table[("python", number)]
        assert row["precision"] == (pytest.approx(row["kept"] / row["recalled"]) if row["recalled"] else None)
        if number > 1:  # the seeds grow by what the last round kept; its low-scored recalls are hard negatives now
            before = table[("python", number - 1)]
            assert row["seeds"] == before["seeds"] + before["kept"]
            low = before["recalled"] - before["kept"]  # + the low-scored recalls, - hard negatives recalled and kept
            assert before["hard_negatives_available"] + low - before["kept"] <= row["hard_negatives_available"] \
                <= before["hard_negatives_available"] + low
            assert row["candidates"] == before["candidates"] - before["recalled"]
    base_rate = first["candidates_scored_high"] / first["candidates"]  # what recalling at random would keep
    precision = sum(table[("python", n)]["kept"] for n in (1, 2, 3)) / sum(table[("python", n)]["recalled"]
                                                                          for n in (1, 2, 3))
    assert base_rate < 0.15 and precision >= 2 * base_rate, (precision, base_rate)
    by_round = metrics["sources"]["python"]["by_round"]
    for number in range(4):  # python is the first source: its own set is what it was assigned
        assert by_round[str(number)] == sum(1 for row in kept if row["hq_source"] == "python"
                                             and row["hq_round"] == number)
    assert by_round["0"] + sum(table[("python", n)]["kept"] for n in (1, 2, 3)) == metrics["sources"]["python"]["rows"]
    assert metrics["tokens"] == "bytes only" and all(row["kept_tokens"] is None for row in metrics["rounds"])

    # a row in two sets goes to the first source in config order
    both = [row for row in kept if row["hq_sources"] == ["python", "algorithms"]]
    assert both and all(row["hq_source"] == "python" for row in both)
    assert metrics["sources"]["algorithms"]["rows"] > metrics["sources"]["algorithms"]["assigned_rows"]

    # every round's classifier is kept; it gives the recorded probabilities
    work = os.path.join(out, ds.WORK_DIR)
    for (name, number), row in table.items():
        path = hq_recall.classifier_path(work, name, number)
        assert os.path.exists(path) == (row["skipped"] is None) and row["classifier"] == (
            None if row["skipped"] else os.path.relpath(path, work))
    sample = [row for row in recalled_kept if row["hq_source"] == "python" and row["hq_round"] == 1][:5]
    classifier = TextClassifier.load(hq_recall.classifier_path(work, "python", 1))
    assert np.allclose(classifier.probability([row["text"] for row in sample]),
                       [row["hq_probability"] for row in sample], atol=1e-6)
    print("\n" + hq_recall.rounds_markdown(metrics))


def test_a_rerun_after_a_kill_continues_and_ends_the_same(pool, finished, tmp_path, monkeypatch):
    out = tmp_path / "out"
    calls = []
    train = TextClassifier.train.__func__

    def failing(cls, texts, labels, options=None, **kwargs):
        calls.append(len(texts))
        if len(calls) == 4:  # round 2 of the first source: rounds 1 of the three sources are done
            raise RuntimeError("killed")
        return train(cls, texts, labels, options, **kwargs)

    monkeypatch.setattr(TextClassifier, "train", classmethod(failing))
    with pytest.raises(TaskError, match="python-round-2"):
        run(out, pool[1], OPTIONS)
    work = os.path.join(out, ds.WORK_DIR)
    assert all(os.path.exists(hq_recall.round_path(work, s["name"], 1, ".done")) for s in SOURCES)
    assert not os.path.exists(hq_recall.round_path(work, "python", 2, ".done"))
    first_model = hq_recall.classifier_path(work, "python", 1)
    stamp = os.stat(first_model).st_mtime_ns

    calls.clear()
    monkeypatch.setattr(TextClassifier, "train", classmethod(lambda cls, *a, **k: calls.append(1) or train(cls, *a, **k)))
    run(out, pool[1], OPTIONS)
    assert len(calls) == 3 * 2  # rounds 2 and 3 of the three sources; round 1 was not trained again
    assert os.stat(first_model).st_mtime_ns == stamp
    assert outputs(str(out)) == outputs(finished[0])
    assert run(out, pool[1], OPTIONS)["totals"] == finished[1]["totals"]  # finished: skipped whole


def test_recall_modes_and_token_counts(pool, tmp_path):
    rows = [row for row in pool[0] if row["language"] == "python"][:150]
    source = make_dataset(tmp_path / "small", rows, shards=2)
    vocabulary = {char: index for index, char in enumerate(pre_tokenizers.ByteLevel.alphabet())}
    vocabulary["<|endoftext|>"] = len(vocabulary)
    tokenizer = Tokenizer(models.BPE(vocabulary, [], unk_token=None))  # no merges: one token per byte
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tokenizer.add_special_tokens(["<|endoftext|>"])
    path = str(tmp_path / "tokenizer.json")
    tokenizer.save(path)
    base = {"sources": [{"name": "python"}], "rounds": 1, "classifier": {"epochs": 5, "bucket": 5_000, "dim": 8}}

    success = run(tmp_path / "top", source, {**base, "recall_by": "top_fraction", "top_fraction": 0.25,
                                              "tokenizer": path})
    (stats,) = success["hq_recall"]["rounds"]
    assert stats["recalled"] == int(np.ceil(0.25 * stats["candidates"]))
    assert stats["kept_tokens"] == stats["kept_bytes"] and stats["initial_seed_tokens"] == stats["initial_seed_bytes"]
    assert success["hq_recall"]["total"]["tokens"] == success["hq_recall"]["total"]["bytes"]
    assert any("not_recalled: not in the top 25%" in row["drop_reason"] for row in rows_of(tmp_path / "top", True))

    success = run(tmp_path / "target", source, {**base, "recall_by": "target_recall", "target_recall": 0.5})
    (stats,) = success["hq_recall"]["rounds"]
    assert stats["holdout"]["recall"] >= 0.5 and stats["threshold"] == stats["holdout"]["threshold"]


def test_score_column_and_quantiles(pool, tmp_path):
    """A scorer with a compressed scale (7.0-7.9 instead of 0-10) in another column: score_quantiles reads the two
    score options as quantiles and picks the same rows as the absolute thresholds those quantiles are."""
    rows = [row for row in pool[0] if row["language"] == "python"][:150]
    squeezed = [{key: value for key, value in row.items() if key != "score"} | {"rating_score": 7.0 + row["score"] / 11}
                for row in rows]
    schema = pa.schema([("rating_score", pa.float32())])
    ds.prepare_output(str(tmp_path / "rated"), {"step": "fixture", "name": "rated"})
    table = ds.base_table(squeezed, schema)
    marker = {"task": "part-00000", "stats": ds.write_part(str(tmp_path / "rated"), 0, table)}
    ds.write_json(ds.marker_path(str(tmp_path / "rated"), 0), marker)
    ds.finish_dataset(str(tmp_path / "rated"), [marker])
    base = {"sources": [{"name": "python"}], "rounds": 2, "score_column": "rating_score", "threshold": 0.3,
            "classifier": {"epochs": 5, "bucket": 5_000, "dim": 8}}
    with pytest.raises(CurateStateError, match="no `score` column"):
        run(tmp_path / "missing", str(tmp_path / "rated"), {**base, "score_column": "score"})

    quantiles = run(tmp_path / "q", str(tmp_path / "rated"), {**base, "score_quantiles": True, "seed_min_score": 7.5,
                                                               "recall_min_score": 5.0})
    scores = np.array(table.column("rating_score").to_pylist(), dtype=np.float64)
    resolved = quantiles["hq_recall"]["options"]
    assert resolved["seed_min_score"] == pytest.approx(np.quantile(scores, 0.75))
    assert resolved["recall_min_score"] == pytest.approx(np.quantile(scores, 0.5))
    assert 7.0 < resolved["recall_min_score"] < resolved["seed_min_score"] < 8.0
    seeds = quantiles["hq_recall"]["rounds"][0]["seeds"]
    assert 0 < seeds <= int(np.sum(scores >= resolved["seed_min_score"]))  # the features narrow the top quarter
    absolute = run(tmp_path / "a", str(tmp_path / "rated"), {**base, "seed_min_score": resolved["seed_min_score"],
                                                              "recall_min_score": resolved["recall_min_score"]})
    assert sorted(row["id"] for row in rows_of(tmp_path / "q")) == sorted(row["id"] for row in rows_of(tmp_path / "a"))
    assert quantiles["totals"]["kept_rows"] == absolute["totals"]["kept_rows"] > seeds


# ------------------------------------------------------------------------------------------ bad input
def test_bad_configs_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="sources: needs at least one source"):
        STEP.check_options({})
    with pytest.raises(ConfigError, match=r"unknown config key 'hq_recall.round' \(did you mean 'hq_recall.rounds'"):
        STEP.check_options({"sources": SOURCES, "round": 2})
    with pytest.raises(ConfigError, match=r"'hq_recall.sources\[1\].langauges' \(did you mean "
                                          r"'hq_recall.sources\[1\].languages'"):
        STEP.check_options({"sources": [{"name": "a"}, {"name": "b", "langauges": ["go"]}]})
    with pytest.raises(ConfigError, match=r"rounds: must be >= 1"):
        STEP.check_options({"sources": SOURCES, "rounds": 0})
    with pytest.raises(ConfigError, match=r"'hq_recall.sources\[0\].name' is missing"):
        STEP.check_options({"sources": [{"languages": ["python"]}]})
    with pytest.raises(ConfigError, match=r"name: must be 1-64 letters"):
        STEP.check_options({"sources": [{"name": "../x"}]})
    with pytest.raises(ConfigError, match="names must be unique"):
        STEP.check_options({"sources": [{"name": "a"}, {"name": "a"}]})
    with pytest.raises(ConfigError, match=r"unknown config key 'classifier.epoch' \(did you mean 'classifier.epochs'"):
        STEP.check_options({"sources": SOURCES, "classifier": {"epoch": 3}})
    with pytest.raises(ConfigError, match="recall_by: must be one of threshold, top_fraction, target_recall"):
        STEP.check_options({"sources": SOURCES, "recall_by": "best"})
    with pytest.raises(ConfigError, match=r"seed_bytes: must be \[min, max\]"):
        STEP.check_options({"sources": SOURCES, "seed_bytes": [10]})

    # the nested tables of a pipeline config
    config = tomllib.loads(
        '[[steps]]\nstep = "hq_recall"\nrounds = 2\n[[steps.sources]]\nname = "python"\nlanguages = ["python"]\n'
        '[[steps.sources]]\nname = "algorithms"\nkeywords = ["sort", "dynamic programming"]\n')
    table = {key: value for key, value in config["steps"][0].items() if key != "step"}
    checked = STEP.check_options(table)
    assert [source["name"] for source in checked["sources"]] == ["python", "algorithms"]
    assert checked["sources"][1]["keywords"] == ["sort", "dynamic programming"] and checked["rounds"] == 2


def test_a_pipeline_config_with_nested_source_tables(pool, tmp_path, monkeypatch):
    monkeypatch.setitem(pipeline.STEPS, "hq_recall", STEP)  # the registry's line for the step (pipeline.py)
    rows = [row for row in pool[0] if row["language"] == "python"][:80]
    scored = make_dataset(tmp_path / "scored", rows, shards=2)
    config = tmp_path / "hq.toml"
    config.write_text(f'out = "{tmp_path / "runs"}"\nworkers = 1\nprogress = false\n'
                      f'[[steps]]\nstep = "hq_recall"\nin = "{scored}"\nrounds = 3\n'
                      '[steps.classifier]\nepochs = 5\nbucket = 5000\ndim = 8\n'
                      '[[steps.sources]]\nname = "python"\nlanguages = ["python"]\n'
                      '[[steps.sources]]\nname = "algorithms"\nkeywords = ["sort", "heap"]\n')
    results = pipeline.run_pipeline(str(config), overrides=["--hq_recall.rounds=1"])
    metrics = results["hq_recall"]["hq_recall"]
    assert [(row["source"], row["round"]) for row in metrics["rounds"]] == [("python", 1), ("algorithms", 1)]
    assert results["hq_recall"]["totals"]["kept_rows"] + results["hq_recall"]["totals"]["dropped_rows"] == 80
    with pytest.raises(ConfigError, match=r"unknown config key 'hq_recall.sources\[1\].keyword'"):
        pipeline.run_pipeline(str(config), overrides=["--hq_recall.sources=[{name='a'}, {name='b', keyword=['x']}]"])


def test_an_unscored_input_is_refused(tmp_path):
    source = make_dataset(tmp_path / "unscored", [{"id": "a", "repo": "r", "path": "a.py", "language": "python",
                                                    "text": "x = 1\n", "source": "file", "score": 1.0}], shards=1)
    table = ds.read_part(source, 0).drop_columns(["score"])
    ds.write_table(ds.part_path(source, 0), table)
    with pytest.raises(CurateStateError, match=r"no `score` column \(score_column\); run the score step"):
        run(tmp_path / "out", source, {"sources": [{"name": "all"}]})
    assert not os.path.exists(tmp_path / "out")  # refused before any work
    with pytest.raises(ConfigError, match=r"hq_recall.tokenizer: .*none.json does not exist"):
        run(tmp_path / "out3", source, {"sources": [{"name": "all"}], "tokenizer": str(tmp_path / "none.json")})
    assert not os.path.exists(tmp_path / "out3")  # refused before any work
    missing = tmp_path / "missing"
    with pytest.raises(CurateStateError, match="does not exist"):
        run(tmp_path / "out2", str(missing), {"sources": [{"name": "all"}]})
