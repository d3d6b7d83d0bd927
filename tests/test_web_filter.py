"""web_filter (seedcoder.curate.web_filter): per-category thresholds and sampling rates over scored web pages, the
drop reasons, the summary and its comparison with one global threshold, the plot, resuming, bad input; and the
whole path from the oracle step with rubric = "web" (rating_score) to the filter."""

from __future__ import annotations

import os
from collections import Counter

import numpy as np
import pytest
from web_pages import FORUM, NAVIGATION, SHOP, TUTORIAL, make_web_dataset, web_row

from seedcoder.config import ConfigError
from seedcoder.curate import dataset as ds
from seedcoder.curate.errors import CurateStateError
from seedcoder.curate.executor import ExecutorConfig
from seedcoder.curate.pipeline import run_step
from seedcoder.curate.step import StepContext
from seedcoder.curate.web_filter import (
    DEFAULT_SAMPLING,
    DEFAULT_THRESHOLDS,
    PLOT_FILE,
    STEP,
    compare_global,
    sample_value,
    summarize,
    web_filter_decisions,
)

INLINE = ExecutorConfig(kind="local", workers=1, progress=False)
OPTIONS = STEP.check_options({})  # the defaults, as a run gets them


def run_filter(out, source, **options):
    """The step on `source` (a run_step that does not depend on the pipeline's registry)."""
    ctx = StepContext(kind="web_filter", name="web_filter", out_dir=os.path.abspath(str(out)),
                      options=STEP.check_options(options), inputs={"in": os.path.abspath(source)}, executor=INLINE)
    return STEP.run(ctx)


def scored_rows(count=400, seed=0):
    """Rows of every category with scores spread over 0..10 (docs high, forum low: a biased rater's picture)."""
    rng = np.random.default_rng(seed)
    centre = {"docs": 7.0, "qa": 5.5, "forum": 3.5, "blog": 5.0, "shop": 6.5, "news": 4.0, "other": 4.5}
    names = list(centre)
    rows = []
    for n in range(count):
        category = names[n % len(names)]
        score = float(np.clip(rng.normal(centre[category], 1.8), 0.0, 10.0))
        rows.append(web_row(n, f"Page {n} about {category}: some words of text here.", category, score=score))
    return rows


# ------------------------------------------------------------------------------------------ decisions
def test_the_defaults_are_the_configured_ones():
    assert OPTIONS["thresholds"] == {"docs": 6.0, "qa": 4.0, "forum": 3.5, "shop": 8.0, "default": 5.0}
    assert OPTIONS["sampling"] == {"docs": 0.5, "forum": 1.0, "default": 1.0}
    assert OPTIONS["score_column"] == "score" and OPTIONS["seed"] == 0 and OPTIONS["compare_threshold"] is None
    assert DEFAULT_THRESHOLDS == OPTIONS["thresholds"] and DEFAULT_SAMPLING == OPTIONS["sampling"]


def test_thresholds_per_category_and_the_drop_reasons():
    cases = [  # (category, score, kept?, reason)
        ("forum", 3.6, True, None),  # forum's bar is 3.5
        ("qa", 4.0, True, None),  # a score equal to the threshold is kept
        ("blog", 4.99, False, "low_score: 4.99 < 5.0 (blog)"),  # not listed: default 5.0
        ("shop", 7.9, False, "low_score: 7.9 < 8.0 (shop)"),
        ("docs", 4.2, False, "low_score: 4.2 < 6.0 (docs)"),
        ("docs", 5.996, False, "low_score: 5.996 < 6.0 (docs)"),  # not "6.0 < 6.0"
        (None, 5.0, True, None),  # no category: "other", the default threshold
        ("news", None, False, "no_score: the row has no score"),
        ("news", float("nan"), False, "no_score: the row has no score"),
    ]
    thresholds, no_sampling = OPTIONS["thresholds"], {"default": 1.0}
    keep, reasons, passed = web_filter_decisions([f"id{n}" for n in range(len(cases))], [c for c, *_ in cases],
                                                 [s for _, s, *_ in cases], thresholds, no_sampling, seed=0)
    assert keep.tolist() == [k for _, _, k, _ in cases] and passed.tolist() == keep.tolist()
    assert reasons == [r for *_, r in cases]
    with pytest.raises(ValueError, match="3 ids but 2 categories"):
        web_filter_decisions(["a", "b", "c"], ["docs", "qa"], [1.0, 2.0, 3.0], thresholds, no_sampling, 0)


def test_sampling_keeps_the_share_by_a_seeded_hash_of_the_id():
    ids = [f"https://docs.example.org/page/{n}" for n in range(4000)]
    categories = ["docs"] * 2000 + ["forum"] * 2000
    scores = [9.0] * 4000  # all above every threshold
    keep, reasons, passed = web_filter_decisions(ids, categories, scores, OPTIONS["thresholds"],
                                                 OPTIONS["sampling"], seed=0)
    assert passed.all()
    docs_kept = keep[:2000].mean()
    assert 0.46 < docs_kept < 0.54 and keep[2000:].all()  # docs keeps 50%, forum 100%
    assert {reasons[n] for n in range(2000) if not keep[n]} == {"sampled_out: docs keeps 50%"}
    # the same ids keep the same fate in any order and any shard layout (a resumed run decides the same)
    order = np.random.default_rng(1).permutation(4000)
    shuffled, _, _ = web_filter_decisions([ids[i] for i in order], [categories[i] for i in order], scores,
                                          OPTIONS["thresholds"], OPTIONS["sampling"], seed=0)
    assert (shuffled == keep[order]).all()
    other_seed, _, _ = web_filter_decisions(ids, categories, scores, OPTIONS["thresholds"], OPTIONS["sampling"], seed=1)
    assert (other_seed[:2000] != keep[:2000]).sum() > 500 and 0.46 < other_seed[:2000].mean() < 0.54
    values = [sample_value(i, 0) for i in ids[:100]]
    assert all(0.0 <= v < 1.0 for v in values) and values == [sample_value(i, 0) for i in ids[:100]]
    _, reasons, _ = web_filter_decisions(["a", "b", "c"] * 50, ["shop"] * 150, [9.0] * 150, {"default": 5.0},
                                         {"shop": 0.125}, seed=0)
    assert "sampled_out: shop keeps 12.5%" in reasons


def test_compare_global_counts_what_one_threshold_would_keep():
    categories = ["docs", "docs", "docs", "forum", "forum", "shop", None]
    scores = [9.0, 6.5, 4.0, 4.0, 3.6, 8.5, None]
    kept = [True, False, False, True, True, True, False]  # what the per-category settings kept
    result = compare_global(categories, scores, kept, 5.0)
    assert result["threshold"] == 5.0 and list(result["categories"]) == ["docs", "forum", "shop", "other"]
    assert result["categories"]["docs"] == {"rows": 3, "global_kept": 2, "global_share": 2 / 3, "kept": 1,
                                            "share": 1 / 3}
    assert result["categories"]["forum"] == {"rows": 2, "global_kept": 0, "global_share": 0.0, "kept": 2, "share": 1.0}
    assert result["categories"]["other"]["global_kept"] == 0  # no score: never kept
    assert result["total"] == {"rows": 7, "global_kept": 3, "global_share": 3 / 7, "kept": 4, "share": 4 / 7}
    with pytest.raises(ValueError, match="compare_global: 2 categories, 1 scores"):
        compare_global(["a", "b"], [1.0], [True, False], 5.0)


def test_summary_counts_per_category():
    rows = scored_rows(140)
    ids, categories, scores = [r["id"] for r in rows], [r["category"] for r in rows], [r["score"] for r in rows]
    keep, _, passed = web_filter_decisions(ids, categories, scores, OPTIONS["thresholds"], OPTIONS["sampling"], 0)
    summary = summarize(categories, scores, passed, keep, OPTIONS)
    assert summary["rows"] == 140 and summary["after_sampling"] == int(keep.sum())
    for name, values in summary["categories"].items():
        mine = [score for category, score in zip(categories, scores) if category == name]
        assert values["rows"] == len(mine) == values["scored"] == sum(values["histogram"])
        assert values["mean_score"] == pytest.approx(np.mean(mine))
        threshold = OPTIONS["thresholds"].get(name, 5.0)
        assert values["threshold"] == threshold and values["after_threshold"] == sum(s >= threshold for s in mine)
        assert values["after_sampling"] <= values["after_threshold"]
    assert summary["categories"]["docs"]["sampling"] == 0.5 and summary["categories"]["blog"]["sampling"] == 1.0
    assert summary["compare_global"]["threshold"] == 5.0  # the default threshold unless compare_threshold is given
    assert summarize(categories, scores, passed, keep, {**OPTIONS, "compare_threshold": 7.0}
                     )["compare_global"]["threshold"] == 7.0


@pytest.mark.parametrize("options, message", [
    ({"thresholds": {"doc": 6.0, "default": 5.0}}, r"thresholds: unknown category 'doc'; categories: docs, qa"),
    ({"thresholds": {"docs": 11.0, "default": 5.0}}, r"thresholds.docs: must be a number in \[0, 10\], got 11.0"),
    ({"thresholds": {"docs": 6.0}}, r"thresholds: needs a `default` entry"),
    ({"sampling": {"forum": 1.5}}, r"sampling.forum: must be a number in \[0, 1\], got 1.5"),
    ({"sampling": {"docs": "half"}}, r"web_filter.sampling.docs.: expected a number, got 'half'"),
    ({"compare_threshold": -1.0}, r"compare_threshold: must be in \[0, 10\]"),
    ({"score_column": ""}, r"score_column: must name a column"),
    ({"treshold": 1}, r"unknown config key 'web_filter.treshold'"),
])
def test_bad_options(options, message):
    with pytest.raises(ConfigError, match=message):
        STEP.check_options(options)


# ------------------------------------------------------------------------------------------ the step
def test_step_keeps_drops_summarizes_plots_and_resumes(tmp_path):
    rows = scored_rows(400)
    source = make_web_dataset(tmp_path / "scored", [rows[:150], rows[150:300], rows[300:]])
    out = tmp_path / "filtered"
    success = run_filter(out, source)
    totals = success["totals"]
    assert totals["kept_rows"] + totals["dropped_rows"] == 400  # nothing lost
    assert set(totals["drop_reasons"]) == {"low_score", "sampled_out"}
    kept = [row for _, table in ds.iter_tables(str(out)) for row in table.to_pylist()]
    dropped = [row for _, table in ds.iter_tables(str(out), dropped=True) for row in table.to_pylist()]
    by_id = {row["id"]: row for row in rows}
    for row in kept:
        threshold = OPTIONS["thresholds"].get(row["category"], 5.0)
        assert row["score"] >= threshold and row["text"] == by_id[row["id"]]["text"]  # every column kept
    for row in dropped:
        threshold = OPTIONS["thresholds"].get(row["category"], 5.0)
        if row["drop_reason"].startswith("low_score"):
            assert row["score"] < threshold and row["drop_reason"].endswith(f"({row['category']})")
        else:
            assert row["drop_reason"] == "sampled_out: docs keeps 50%" and row["score"] >= threshold
    summary = success["web_filter"]
    assert summary["rows"] == 400 and summary["after_sampling"] == len(kept)
    assert sum(values["after_sampling"] for values in summary["categories"].values()) == len(kept)
    assert Counter(row["category"] for row in kept) == {
        name: values["after_sampling"] for name, values in summary["categories"].items() if values["after_sampling"]}
    docs = summary["categories"]["docs"]
    assert 0.3 * docs["after_threshold"] < docs["after_sampling"] < 0.7 * docs["after_threshold"]
    compare = summary["compare_global"]["categories"]
    # the per-category settings lift forum and cut shop against one threshold of 5.0
    assert compare["forum"]["share"] > compare["forum"]["global_share"]
    assert compare["shop"]["share"] < compare["shop"]["global_share"]
    plot = out / PLOT_FILE
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000

    # a finished step is skipped; a killed one redoes only its unfinished shards
    again = run_filter(out, source)
    assert again == ds.read_json(str(out / ds.SUCCESS_FILE))
    marker_0 = ds.marker_path(str(out), 0)
    stamp = os.stat(marker_0).st_mtime_ns
    os.unlink(out / ds.SUCCESS_FILE)
    os.unlink(ds.marker_path(str(out), 2))
    os.unlink(ds.part_path(str(out), 2))
    os.unlink(out / PLOT_FILE)
    resumed = run_filter(out, source)
    assert os.stat(marker_0).st_mtime_ns == stamp and resumed["web_filter"] == summary
    assert resumed["totals"] == totals and plot.exists()
    # other options: the directory is redone
    looser = run_filter(out, source, thresholds={"default": 0.0}, sampling={})
    assert looser["totals"]["kept_rows"] == 400 and looser["web_filter"]["compare_global"]["threshold"] == 0.0


def test_missing_columns_are_named(tmp_path):
    rows = [web_row(n, "A page about code, with words.", "docs", rating_score=7.0) for n in range(3)]
    source = make_web_dataset(tmp_path / "rated", [rows])
    with pytest.raises(CurateStateError, match=r"has no score column 'score'; it has 'rating_score': set score_column"):
        run_filter(tmp_path / "out", source)
    assert run_filter(tmp_path / "out", source, score_column="rating_score")["totals"]["kept_rows"] >= 1
    files = make_web_dataset(tmp_path / "files", [[{k: v for k, v in row.items() if k != "category"} for row in rows]])
    with pytest.raises(CurateStateError, match=r"has no 'category' column: it is not a web dataset"):
        run_filter(tmp_path / "out2", files, score_column="rating_score")
    unscored = make_web_dataset(tmp_path / "unscored", [[web_row(0, "A page.", "docs")]])
    with pytest.raises(CurateStateError, match=r"no score column 'score'; run the score step"):
        run_filter(tmp_path / "out3", unscored)


def test_from_the_web_oracle_to_the_filter(tmp_path):
    """Pages rated by the oracle step with rubric = "web" (every page), filtered on rating_score."""
    rows = [web_row(0, TUTORIAL, "docs"), web_row(1, SHOP, "shop"), web_row(2, FORUM, "forum"),
            web_row(3, NAVIGATION, "other"), web_row(4, TUTORIAL.replace("Python", "Python 3"), "blog")]
    source = make_web_dataset(tmp_path / "pages", [rows])
    rated = str(tmp_path / "rated")
    run_step("oracle", out=rated, inputs={"in": source}, executor=INLINE, options={"n": 100, "rubric": "web"})
    success = run_filter(tmp_path / "filtered", rated, score_column="rating_score", sampling={"default": 1.0})
    kept = {row["id"] for _, table in ds.iter_tables(str(tmp_path / "filtered")) for row in table.to_pylist()}
    reasons = {row["id"]: row["drop_reason"] for _, table in ds.iter_tables(str(tmp_path / "filtered"), dropped=True)
               for row in table.to_pylist()}
    assert kept == {"page0000", "page0002", "page0004"}
    assert reasons == {"page0001": "low_score: 0.0 < 8.0 (shop)", "page0003": "low_score: 0.0 < 5.0 (other)"}
    assert success["web_filter"]["score_column"] == "rating_score"
