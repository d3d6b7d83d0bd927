"""The web_recall step (seedcoder.curate.web_recall): page-like rows built from real text (standard library
docstrings and code: code-related; licence texts: not), a gold set by URL or by text, the rule and classifier
paths, held-out metrics that agree with the rows written, the plot, resume, and bad gold sets."""

from __future__ import annotations

import json
import os
import re
import shutil

import numpy as np
import pyarrow as pa
import pytest
from recall_texts import licence_paragraphs, stdlib_docs_and_code

from seedcoder.config import ConfigError
from seedcoder.curate import dataset as ds
from seedcoder.curate import web_ingest, web_recall
from seedcoder.curate.errors import CurateConfigError
from seedcoder.curate.executor import ExecutorConfig
from seedcoder.curate.fasttext_classifier import TextClassifier, precision_recall
from seedcoder.curate.step import StepContext

FAST = {"epochs": 10, "dim": 16, "bucket": 20_000}
WEB_SCHEMA = pa.schema([("url", pa.string()), ("fetch_date", pa.string()), ("content_type", pa.string()),
                        ("has_code_tags", pa.bool_()), ("code_blocks", pa.int64()), ("code_chars", pa.int64()),
                        ("words", pa.int64()), ("category", pa.string()), ("size_bytes", pa.int64())])
WEB_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "web")


def page(number: int, text: str, code: bool, *, code_chars: int = 0, host: str | None = None) -> dict:
    host = host or ("docs.example.org" if code else "legal.example.org")
    url = f"https://{host}/page/{number}.html"
    return {"id": ds.stable_id("web", url), "repo": host, "path": f"/page/{number}.html", "language": "text",
            "source": "web", "text": text, "url": url, "fetch_date": "2026-01-02T03:04:05Z",
            "content_type": "text/html", "has_code_tags": code_chars > 0, "code_blocks": int(code_chars > 0),
            "code_chars": code_chars, "words": len(text.split()), "category": "docs" if code else "other",
            "size_bytes": len(text.encode()) + 500}


@pytest.fixture(scope="module")
def pages():
    """Page rows and their true class: prose about code without code tags, prose + a code block (rule path),
    licence paragraphs (a few with a tiny <code> tag, below min_code_chars: classifier path)."""
    docs, code = stdlib_docs_and_code()
    other = licence_paragraphs()
    if len(docs) < 150 or len(code) < 40 or len(other) < 200:
        pytest.skip(f"too few texts on this machine: {len(docs)} docstrings, {len(other)} licence paragraphs")
    rows, truth = [], []
    for number, doc in enumerate(docs[:150]):
        rows.append(page(number, doc, True))
        truth.append(True)
    for number in range(40):
        source = code[number]
        rows.append(page(1000 + number, f"{docs[150 + number % (len(docs) - 150)]}\n\n{source}", True,
                         code_chars=len(source)))
        truth.append(True)
    for number, paragraph in enumerate(other[:200]):
        rows.append(page(2000 + number, paragraph, False, code_chars=5 if number % 10 == 0 else 0))
        truth.append(False)
    order = np.random.default_rng(1).permutation(len(rows))
    return [rows[i] for i in order], [truth[i] for i in order]


def make_dataset(directory, rows, shards=3, schema=WEB_SCHEMA):
    directory = str(directory)
    ds.prepare_output(directory, {"step": "fixture", "name": os.path.basename(directory)})
    markers = []
    for index in range(shards):
        table = ds.base_table(rows[index::shards], schema)
        record = {"task": f"part-{index:05d}", "stats": ds.write_part(directory, index, table)}
        ds.write_json(ds.marker_path(directory, index), record)
        markers.append(record)
    ds.finish_dataset(directory, markers)
    return directory


def write_gold(path, rows, truth, *, every=1, heldout_every=3, by="url", extra=()):
    """Every `every`-th page labelled, every `heldout_every`-th of those held out."""
    with open(path, "w", encoding="utf-8") as file:
        for number, (row, label) in enumerate(list(zip(rows, truth))[::every]):
            record = {"label": "code" if label else "other", "split": "test" if number % heldout_every == 0 else "train"}
            record.update({"url": row["url"]} if by == "url" else {"text": row["text"]})
            file.write(json.dumps(record) + "\n")
        for record in extra:
            file.write(json.dumps(record) + "\n")
    return str(path)


def run(in_dir, out_dir, fast=True, **options):
    """The step as `run_step("web_recall", ...)` runs it; `fast`: a smaller fastText for the tests' short pages."""
    ctx = StepContext(kind="web_recall", name="web_recall", out_dir=str(out_dir),
                      options=web_recall.STEP.check_options({**(FAST if fast else {}), **options}),
                      inputs={"in": str(in_dir)},
                      executor=ExecutorConfig(workers=1, progress=False))
    return web_recall.STEP.run(ctx)


def rows_of(directory, dropped=False):
    return [row for _, table in ds.iter_tables(str(directory), dropped=dropped) for row in table.to_pylist()]


@pytest.fixture(scope="module")
def recalled(tmp_path_factory, pages):
    rows, truth = pages
    root = tmp_path_factory.mktemp("recall")
    in_dir = make_dataset(root / "web", rows)
    missing = [{"url": "https://nowhere.example.org/gone.html", "label": "code", "split": "train"}]
    gold = write_gold(root / "labels.jsonl", rows, truth, every=2, extra=missing)
    success = run(in_dir, root / "out", gold=gold)
    return {"root": root, "in": in_dir, "out": root / "out", "gold": gold, "success": success, "rows": rows,
            "truth": dict(zip((row["url"] for row in rows), truth))}


def test_rule_path_keeps_code_tag_pages_and_the_classifier_decides_the_rest(recalled):
    kept, dropped = rows_of(recalled["out"]), rows_of(recalled["out"], dropped=True)
    assert len(kept) + len(dropped) == len(recalled["rows"])
    assert {row["id"] for row in kept + dropped} == {row["id"] for row in recalled["rows"]}
    threshold = recalled["success"]["recall"]["threshold"]
    for row in kept + dropped:
        assert 0.0 <= row["code_probability"] <= 1.0
        rule = row["has_code_tags"] and row["code_chars"] >= 20
        assert row["recall_path"] == ("rule" if rule else "classifier")
        assert row["fetch_date"] == "2026-01-02T03:04:05Z" and row["category"] in ("docs", "other")  # columns kept
    assert all(row["recall_path"] == "rule" or row["code_probability"] >= threshold for row in kept)
    assert sum(row["recall_path"] == "rule" for row in kept) == 40
    for row in dropped:  # a licence page with a 5-character <code> tag still goes through the classifier
        assert row["recall_path"] == "classifier" and row["code_probability"] < threshold
        match = re.fullmatch(r"not_code_related: P=(\d\.\d+) < threshold (\d\.\d+)", row["drop_reason"])
        assert match, row["drop_reason"]
        assert float(match.group(1)) < float(match.group(2))
        assert abs(float(match.group(2)) - threshold) < 0.01
    totals = recalled["success"]["totals"]
    assert totals["drop_reasons"] == {"not_code_related": len(dropped)}
    # the pages nobody labelled are recalled as well as the labelled ones
    unlabelled = {row["url"] for row in recalled["rows"][1::2]}
    truth = recalled["truth"]
    kept_urls = {row["url"] for row in kept}
    code_pages = [url for url in unlabelled if truth[url]]
    other_pages = [url for url in unlabelled if not truth[url]]
    assert sum(url in kept_urls for url in code_pages) / len(code_pages) >= 0.95
    assert sum(url in kept_urls for url in other_pages) / len(other_pages) <= 0.1


def test_metrics_agree_with_the_rows_written_and_the_plot_exists(recalled):
    out = recalled["out"]
    metrics = json.loads((out / "metrics.json").read_text())
    threshold = metrics["threshold"]["value"]
    assert "5-fold out-of-fold" in metrics["threshold"]["how"]
    assert recalled["success"]["recall"]["threshold"] == threshold
    gold = metrics["gold"]
    assert gold["unmatched_urls"] == 1 and gold["unmatched_examples"] == ["https://nowhere.example.org/gone.html"]
    assert gold["matched_by_url"] == gold["used"] == (len(recalled["rows"]) + 1) // 2
    # recompute the held-out numbers from the dataset's own rows and the gold file
    probability = {row["url"]: row for row in rows_of(out) + rows_of(out, dropped=True)}
    labels = [json.loads(line) for line in open(recalled["gold"], encoding="utf-8")]
    held = [(probability[record["url"]], record["label"] == "code") for record in labels
            if record["split"] == "test" and record["url"] in probability]
    p = [row["code_probability"] for row, _ in held]
    y = [label for _, label in held]
    assert metrics["heldout"]["pages"] == len(held)
    assert metrics["heldout"]["classifier"] == precision_recall(p, y, threshold)
    step_keep = [1.0 if row["recall_path"] == "rule" or row["code_probability"] >= threshold else 0.0
                 for row, _ in held]
    step = precision_recall(step_keep, y, 0.5)
    assert {k: metrics["heldout"]["step"][k] for k in ("tp", "fp", "fn", "tn")} == \
        {k: step[k] for k in ("tp", "fp", "fn", "tn")}
    # on this text the classifier is good; the target recall is met on pages it never saw
    assert metrics["heldout"]["classifier"]["recall"] >= 0.95
    assert metrics["heldout"]["classifier"]["precision"] >= 0.9
    assert metrics["cross_validation"]["recall"] >= 0.99 and metrics["cross_validation"]["folds"] == 5
    curve = metrics["heldout"]["curve"]
    assert curve[-1]["recall"] == 1.0 and len(curve) <= 200
    assert metrics["dataset"]["pages"] == len(recalled["rows"]) and metrics["dataset"]["rule"] == 40
    assert metrics["speed"]["classify_docs_per_s"] > 0 and metrics["speed"]["train_docs_per_s"] > 0
    assert (out / "precision_recall.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the classifier file is the one that wrote the probabilities
    classifier = TextClassifier.load(str(out / "classifier.bin"))
    sample = rows_of(out)[:10] + rows_of(out, dropped=True)[:10]
    assert np.array_equal(classifier.probability([row["text"] for row in sample]),
                          np.array([row["code_probability"] for row in sample]))


def test_resume_skips_training_and_finished_shards(recalled, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(recalled["out"], out)
    before = {name: rows_of(out, dropped) for name, dropped in (("kept", False), ("dropped", True))}
    model_mtime = os.stat(out / "classifier.bin").st_mtime_ns
    part_mtime = os.stat(ds.part_path(str(out), 0)).st_mtime_ns
    # as if killed while classifying shard 2: its files, the metrics and _SUCCESS.json are gone
    for path in (ds.part_path(str(out), 2), ds.marker_path(str(out), 2), ds.dropped_path(str(out), 2),
                 out / "metrics.json", out / "_SUCCESS.json", out / "precision_recall.png"):
        if os.path.exists(path):
            os.unlink(path)
    success = run(recalled["in"], out, gold=recalled["gold"])
    assert os.stat(out / "classifier.bin").st_mtime_ns == model_mtime  # not retrained
    assert os.stat(ds.part_path(str(out), 0)).st_mtime_ns == part_mtime  # shard 0 not redone
    assert {name: rows_of(out, dropped) for name, dropped in (("kept", False), ("dropped", True))} == before
    assert success["totals"] == recalled["success"]["totals"]
    assert (out / "metrics.json").exists() and (out / "precision_recall.png").exists()
    assert run(recalled["in"], out, gold=recalled["gold"]) == success  # finished: returned as it is
    changed = tmp_path / "labels.jsonl"  # the same pages, but another file: the step starts over
    changed.write_text(open(recalled["gold"], encoding="utf-8").read() + "\n")
    run(recalled["in"], out, gold=str(changed))
    assert os.stat(out / "classifier.bin").st_mtime_ns != model_mtime
    assert json.loads((out / "_step.json").read_text())["gold_sha256"] != \
        json.loads((recalled["out"] / "_step.json").read_text())["gold_sha256"]


def test_given_threshold_and_a_gold_set_of_texts(recalled, tmp_path):
    rows = recalled["rows"]
    truth = [recalled["truth"][row["url"]] for row in rows]
    gold = write_gold(tmp_path / "texts.jsonl", rows[:120], truth[:120], by="text")
    success = run(recalled["in"], tmp_path / "out", gold=gold, threshold=0.3)
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["threshold"] == {"value": 0.3, "how": "given (threshold)", "target_recall": 0.99}
    assert metrics["cross_validation"] is None and metrics["gold"]["matched_by_url"] == 0
    assert success["recall"]["threshold"] == 0.3
    for row in rows_of(tmp_path / "out"):
        assert row["recall_path"] == "rule" or row["code_probability"] >= 0.3
    for row in rows_of(tmp_path / "out", dropped=True):
        assert row["code_probability"] < 0.3 and re.search(r"< threshold 0\.300*$", row["drop_reason"])


def test_threshold_picked_on_the_held_out_split_when_asked(recalled, tmp_path):
    run(recalled["in"], tmp_path / "out", gold=recalled["gold"], threshold_folds=0, target_recall=0.9)
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert "held-out split itself" in metrics["threshold"]["how"]
    assert metrics["heldout"]["classifier"]["recall"] >= 0.9


def test_gold_without_splits_is_held_out_by_hash(recalled, tmp_path):
    gold = tmp_path / "nosplit.jsonl"
    with open(gold, "w", encoding="utf-8") as file:
        for row in recalled["rows"][:200]:
            file.write(json.dumps({"url": row["url"], "label": recalled["truth"][row["url"]]}) + "\n")
    pages = web_recall.read_gold(str(gold), heldout_fraction=0.25)
    share = sum(page.heldout for page in pages) / len(pages)
    assert 0.15 < share < 0.35
    assert [page.heldout for page in pages] == [page.heldout for page in web_recall.read_gold(str(gold), 0.25)]


def test_bad_gold_sets_name_the_option(recalled, tmp_path):
    rows, truth = recalled["rows"], [recalled["truth"][row["url"]] for row in recalled["rows"]]
    code_only = write_gold(tmp_path / "code_only.jsonl", [r for r, t in zip(rows, truth) if t][:60], [True] * 60)
    with pytest.raises(CurateConfigError, match=r"web_recall\.gold: .*code_only\.jsonl gives \d+ code and 0 other"):
        run(recalled["in"], tmp_path / "a", gold=code_only)
    tiny = write_gold(tmp_path / "tiny.jsonl", rows[:6], truth[:6])
    with pytest.raises(CurateConfigError, match=r"web_recall\.gold: .*need at least 5 of each"):
        run(recalled["in"], tmp_path / "b", gold=tiny)
    no_heldout = write_gold(tmp_path / "no_heldout.jsonl", rows[:80], truth[:80], heldout_every=10**6)
    (tmp_path / "no_heldout.jsonl").write_text("\n".join(
        line.replace('"test"', '"train"') for line in (tmp_path / "no_heldout.jsonl").read_text().splitlines()))
    with pytest.raises(CurateConfigError, match=r"web_recall\.gold: .*held-out split needs both classes"):
        run(recalled["in"], tmp_path / "c", gold=no_heldout)
    with pytest.raises(CurateConfigError, match=r"web_recall\.gold: gold file .*missing\.jsonl does not exist"):
        run(recalled["in"], tmp_path / "d", gold=str(tmp_path / "missing.jsonl"))
    with pytest.raises(ConfigError, match=r"\[web_recall\]: gold: a gold set is required"):
        run(recalled["in"], tmp_path / "e")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"url": "https://a/", "label": "code", "split": "train"}\n{"url": "https://b/", "label": "maybe"}\n')
    with pytest.raises(CurateConfigError, match=r"bad\.jsonl line 2: label must be \"code\" or \"other\", got 'maybe'"):
        run(recalled["in"], tmp_path / "f", gold=str(bad))
    bad.write_text('{"url": "https://a/", "label": "code", "split": "later"}\n')
    with pytest.raises(CurateConfigError, match=r"line 1: split must be"):
        run(recalled["in"], tmp_path / "g", gold=str(bad))
    bad.write_text("not json\n")
    with pytest.raises(CurateConfigError, match=r"line 1: not JSON"):
        run(recalled["in"], tmp_path / "h", gold=str(bad))
    # a dataset without URLs cannot match a gold set by URL
    plain = make_dataset(tmp_path / "plain", [{k: v for k, v in row.items() if k in ds.BASE_COLUMNS} for row in rows],
                         shards=1, schema=None)
    with pytest.raises(CurateConfigError, match=r"web_recall\.gold: .*has no `url` column"):
        run(plain, tmp_path / "i", gold=recalled["gold"])


@pytest.mark.parametrize("key, value", [("target_recall", 1.5), ("threshold", 2.0), ("threshold_folds", 1),
                                        ("heldout_fraction", 1.0), ("bucket", -1), ("epochs", 0)])
def test_options_are_checked_naming_the_key(key, value):
    with pytest.raises(ConfigError, match=rf"\[web_recall\]: {key}: "):
        web_recall.STEP.check_options({"gold": "labels.jsonl", key: value})


@pytest.mark.skipif(not os.path.exists(os.path.join(WEB_DATA, "labels.jsonl")),
                    reason="tests/data/web (the real-page WARC fixture) is not in this checkout")
def test_real_debian_pages_from_the_warc_fixture(tmp_path):
    """web_ingest over the fixture's WARCs, then web_recall with its labels (matched by URL; split `heldout`)."""
    ingest_ctx = StepContext(kind="web_ingest", name="web_ingest", out_dir=str(tmp_path / "ingest"),
                             options=web_ingest.STEP.check_options({"inputs": [WEB_DATA]}), inputs={},
                             executor=ExecutorConfig(workers=1, progress=False))
    web_ingest.STEP.run(ingest_ctx)
    gold = os.path.join(WEB_DATA, "labels.jsonl")
    success = run(tmp_path / "ingest", tmp_path / "recall", fast=False, gold=gold)  # the defaults, on long pages
    metrics = json.loads((tmp_path / "recall" / "metrics.json").read_text())
    labels = [json.loads(line) for line in open(gold, encoding="utf-8")]
    # every labelled page is matched, or ingest dropped it (and then it is listed as unmatched)
    ingest_dropped = {row["url"] for row in rows_of(tmp_path / "ingest", dropped=True)}
    assert metrics["gold"]["pages"] == len(labels)
    assert metrics["gold"]["matched_by_url"] + metrics["gold"]["unmatched_urls"] == len(labels)
    assert set(metrics["gold"]["unmatched_examples"]) <= ingest_dropped
    assert metrics["gold"]["heldout"]["code"] >= 3 and metrics["gold"]["heldout"]["other"] >= 3
    # the classifier ranks the held-out pages it never saw: programming documentation above office/editor help
    out = {row["url"]: row for row in rows_of(tmp_path / "recall") + rows_of(tmp_path / "recall", dropped=True)}
    held = [(out[r["url"]]["code_probability"], r["label"] == "code") for r in labels
            if r["split"] != "train" and r["url"] in out]
    code_p = [p for p, code in held if code]
    other_p = [p for p, code in held if not code]
    assert np.mean(code_p) > np.mean(other_p) + 0.2, held
    assert metrics["heldout"]["classifier"]["recall"] >= 0.8
    assert metrics["cross_validation"]["recall"] >= 0.99
    assert success["recall"]["heldout_step_recall"] >= 0.8
    # a page with code blocks takes the rule path
    controlflow = out["https://docs.python.org/3/tutorial/controlflow.html"]
    assert controlflow["recall_path"] == "rule" and controlflow["has_code_tags"]
