"""configs/curate_web_demo.toml end to end on a small slice (web pages -> Source.WEB shards; the high-quality set
-> Source.HQ shards with the same tokenizer), the web_corpus step (Debian packages, or the committed fixture), the
{out} variable, and the report's web and high-quality sections."""

import dataclasses
import json
import os

import pytest

from seedcoder.curate import dataset as ds
from seedcoder.curate import web_corpus
from seedcoder.curate.errors import CurateInputError
from seedcoder.curate.executor import ExecutorConfig
from seedcoder.curate.pipeline import load_pipeline_config, plan_pipeline, run_pipeline, run_step
from seedcoder.data.loader import ShardLoader
from seedcoder.data.manifest import load_manifest
from seedcoder.data.shard_reader import ShardReader
from seedcoder.data.shards import Source, file_sha256

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "curate_web_demo.toml")
INLINE = ExecutorConfig(kind="local", workers=1, progress=False)


def shard_sources(directory):
    sources = set()
    for shard in load_manifest(str(directory))["shards"]:
        with ShardReader(os.path.join(str(directory), shard["path"])) as reader:
            sources |= {reader.document(i).source for i in range(reader.document_count)}
    return sources


def without_packages(monkeypatch):
    """Every known package looks uninstalled (its HTML folder does not exist)."""
    missing = {name: dataclasses.replace(package, root="/nonexistent/" + name)
               for name, package in web_corpus.PACKAGES.items()}
    monkeypatch.setattr(web_corpus, "PACKAGES", missing)


def test_out_variable_follows_the_overridden_out(tmp_path):
    data = load_pipeline_config(CONFIG, overrides={"out": str(tmp_path / "w")})
    steps = {step["name"]: step for step in data["steps"]}
    assert steps["web_ingest"]["inputs"] == [str(tmp_path / "w" / "web_corpus")]
    assert steps["web_recall"]["gold"] == str(tmp_path / "w" / "web_corpus" / "labels.jsonl")
    plan = {step.name: step for step in plan_pipeline(data)}
    # web steps follow the web line; web_filter reads the web oracle and stays on it; hq_recall reads the ratings
    assert plan["web_recall"].inputs["in"] == str(tmp_path / "w" / "web_decontaminate")
    assert plan["web_filter"].inputs["in"] == str(tmp_path / "w" / "web_oracle")
    assert plan["hq_recall"].inputs["in"] == str(tmp_path / "w" / "file_oracle")
    assert plan["tokenize_hq"].inputs["datasets"] == [str(tmp_path / "w" / "hq_recall")]


def test_web_demo_config_end_to_end(tmp_path, monkeypatch):
    """A slice of the demo: 6 pages per package (the fixture when none is installed), three stdlib packages."""
    installed = bool(web_corpus.installed_packages(list(web_corpus.PACKAGES)))
    out = tmp_path / "w"
    stdlib = load_pipeline_config(CONFIG)["steps"]
    stdlib = next(step for step in stdlib if step["name"] == "ingest")["inputs"][0]
    results = run_pipeline(CONFIG, overrides={
        "out": str(out), "workers": 1, "progress": False, "web_corpus.max_pages": 6,
        "ingest.inputs": [os.path.join(stdlib, "json"), os.path.join(stdlib, "email"), os.path.join(stdlib, "asyncio")],
        "web_recall.threshold_folds": 3, "tokenize.vocab_size": 600, "hq_recall.rounds": 2,
        "report.count_tokens": False})
    corpus = results["web_corpus"]
    assert corpus["kind"] == "web_corpus" and corpus["fixture"] == (not installed) and corpus["pages"] >= 30
    labels = [json.loads(line) for line in (out / "web_corpus" / "labels.jsonl").read_text().splitlines()]
    assert {row["label"] for row in labels} == {"code", "other"} and {row["split"] for row in labels} >= {"train"}

    # every web step: kept + dropped = read
    previous = None
    for name in ("web_ingest", "web_exact_dedup", "web_near_dedup", "web_decontaminate", "web_recall", "web_oracle",
                 "web_filter"):
        totals = results[name]["totals"]
        if previous is not None:
            assert totals["kept_rows"] + totals["dropped_rows"] == previous, name
        previous = totals["kept_rows"]
    assert results["web_ingest"]["totals"]["drop_reasons"].get("not_response", 0) >= 1  # the warcinfo records
    recall = results["web_recall"]["recall"]
    assert 0.0 <= recall["heldout_precision"] <= 1.0 and recall["heldout_recall"] >= 0.5

    # shards: web pages as Source.WEB, the high-quality set as Source.HQ, one tokenizer
    assert shard_sources(out / "tokenize") == {Source.WEB}
    assert shard_sources(out / "tokenize_hq") == {Source.HQ}
    assert file_sha256(out / "tokenize" / "tokenizer.json") == file_sha256(out / "tokenize_hq" / "tokenizer.json")
    hq = results["hq_recall"]["hq_recall"]
    assert [row["round"] for row in hq["rounds"] if row["source"] == "python"] == [1, 2]
    assert hq["total"]["rows"] == results["tokenize_hq"]["totals"]["documents"] > 0
    assert hq["total"]["tokens"] > 0  # counted with the web step's tokenizer

    # continued pretraining reads both as one dataset, the mixture by source
    tokenizer = str(out / "tokenize" / "tokenizer.json")
    with ShardLoader([str(out / "tokenize"), str(out / "tokenize_hq")], tokenizer=tokenizer, seq_len=64,
                     mixture={"hq": 0.5, "*": 0.5}, rank=0, world_size=1) as loader:
        groups = {key: count for key, _, count, _ in loader.kept_groups()}
        assert groups == {"hq": hq["total"]["rows"], "*": results["tokenize"]["totals"]["documents"]}

    report = (out / "report" / "report.md").read_text()
    for heading in ("## Web recall", "## Web filter by page category", "## High-quality set (iterative recall)",
                    "## Shards: tokenize", "## Shards: tokenize_hq"):
        assert heading in report
    for link in ("../web_recall/precision_recall.png", "../web_filter/web_filter.png", "../hq_recall/hq_recall.png"):
        assert f"({link})" in report and (out / "report" / link).is_file()


def test_web_corpus_falls_back_to_the_fixture(tmp_path, monkeypatch):
    without_packages(monkeypatch)
    success = run_step("web_corpus", out=str(tmp_path / "corpus"), options={"packages": ["python3-doc"]},
                       executor=INLINE)
    assert success["fixture"] and success["missing"] == ["python3-doc"]
    copied = sorted(name for name in os.listdir(tmp_path / "corpus") if not name.startswith("_"))
    fixture = sorted(name for name in os.listdir(web_corpus.FIXTURE_DIR) if name.endswith((".warc.gz", ".jsonl")))
    assert copied == fixture
    for name in fixture:
        assert (tmp_path / "corpus" / name).read_bytes() == open(os.path.join(web_corpus.FIXTURE_DIR, name), "rb").read()
    assert ds.success_record(str(tmp_path / "corpus"))["pages"] == success["pages"] > 0

    # and web_ingest reads it: every record is a kept or a dropped row
    ingested = run_step("web_ingest", out=str(tmp_path / "pages"), options={"inputs": [str(tmp_path / "corpus")]},
                        executor=INLINE)
    assert ingested["totals"]["kept_rows"] >= 50 and ingested["totals"]["dropped_rows"] >= 8

    with pytest.raises(CurateInputError, match="none of the packages python3-doc is installed.*fallback = false"):
        run_step("web_corpus", out=str(tmp_path / "strict"), options={"packages": ["python3-doc"], "fallback": False},
                 executor=INLINE)


def test_web_corpus_options_are_checked():
    from seedcoder.config import ConfigError

    with pytest.raises(ConfigError, match="unknown package 'python-doc'"):
        run_step("web_corpus", out="/nonexistent/x", options={"packages": ["python-doc"]})
    with pytest.raises(ConfigError, match="heldout_fraction: must be in"):
        run_step("web_corpus", out="/nonexistent/x", options={"heldout_fraction": 1.0})
