"""The curation framework: datasets on disk, executors (local pool, Ray), resume after a kill, the step adapters,
tokenize + shards, the report, the config and the CLI."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pyarrow as pa
import pytest

from seedcoder.cli import main as cli_main
from seedcoder.config import ConfigError
from seedcoder.curate import dataset as ds
from seedcoder.curate import pipeline, syntax_filter
from seedcoder.curate.errors import CurateConfigError, CurateStateError
from seedcoder.curate.executor import ExecutorConfig, TaskError
from seedcoder.curate.pipeline import check_options, load_pipeline_config, run_pipeline, run_step
from seedcoder.data.manifest import load_manifest
from seedcoder.data.shard_reader import ShardReader
from seedcoder.data.shards import DocFlag, Language, Source
from seedcoder.tokenizer import load_tokenizer, train_tokenizer

INLINE = ExecutorConfig(kind="local", workers=1, progress=False)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ------------------------------------------------------------------------------------------ fixtures and helpers
def file_row(number, text, *, repo="r", path=None, language="python", source="file", **extra):
    return {"id": f"id{number:04d}", "repo": repo, "path": path or f"f{number}.py", "language": language, "text": text,
            "source": source, **extra}


def make_dataset(directory, shards, schema_extra=None):
    """A finished dataset with the given shards (lists of row dicts), as if a step had written it."""
    directory = str(directory)
    ds.prepare_output(directory, {"step": "fixture", "name": os.path.basename(directory)})
    markers = []
    for index, rows in enumerate(shards):
        table = ds.base_table(rows, schema_extra)
        record = {"task": f"part-{index:05d}", "stats": ds.write_part(directory, index, table)}
        ds.write_json(ds.marker_path(directory, index), record)
        markers.append(record)
    ds.finish_dataset(directory, markers)
    return directory


def kept_rows(directory, columns=None):
    return [row for _, table in ds.iter_tables(str(directory), columns) for row in table.to_pylist()]


def dropped_rows(directory):
    return [row for _, table in ds.iter_tables(str(directory), dropped=True) for row in table.to_pylist()]


def snapshot(directory):
    """Everything a step wrote that must not depend on how it ran: rows of parts and dropped parts, shard bytes."""
    result = {}
    for root, _, names in os.walk(directory):
        for name in sorted(names):
            path = os.path.join(root, name)
            relative = os.path.relpath(path, directory)
            if name.endswith(".parquet") and "_work" not in relative:
                result[relative] = ds.read_table(path).to_pylist()
            elif name.endswith((".scs", "tokenizer.json", "manifest.json", ds.SUCCESS_FILE)):
                with open(path, "rb") as file:
                    result[relative] = file.read()
    return result


CORPUS_TEMPLATE = ("def function_{n}(values):\n    total = {n}\n    for value in values:\n"
                   "        total += value * {n}\n    return total\n")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus") / "project"
    (root / "pkg").mkdir(parents=True)
    for number in range(24):
        (root / "pkg" / f"module_{number:02d}.py").write_text(CORPUS_TEMPLATE.format(n=number))
    (root / "pkg" / "copy_of_03.py").write_text(CORPUS_TEMPLATE.format(n=3))
    (root / "pkg" / "broken.py").write_text("def broken(:\n    pass\n")
    (root / "pkg" / "data.bin").write_bytes(b"\x00\x01\x02")
    (root / "main.go").write_text("package main\n\nfunc main() {}\n")
    return root


# ------------------------------------------------------------------------------------------ datasets
def test_dataset_parts_markers_and_output_guard(tmp_path):
    table = ds.base_table([file_row(1, "a = 1\n"), file_row(2, "b = 2\n")])
    with pytest.raises(ValueError, match="dropped without a reason"):
        ds.split_rows(table, [True, False], [None, None])
    kept, dropped = ds.split_rows(table, [True, False], [None, "test: reason"])
    out = str(tmp_path / "d")
    assert ds.prepare_output(out, {"step": "x", "options": {"a": 1}}) is False
    stats = ds.write_part(out, 0, kept, dropped)
    assert stats == {"kept_rows": 1, "kept_bytes": 6, "dropped_rows": 1, "dropped_bytes": 6,
                     "drop_reasons": {"test": 1}}
    assert ds.read_part(out, 0).to_pylist() == kept.to_pylist()
    assert ds.read_dropped(out, 0).column(ds.DROP_REASON).to_pylist() == ["test: reason"]
    with pytest.raises(CurateStateError, match="is not finished"):
        ds.finished_parts(out)
    assert ds.prepare_output(out, {"step": "x", "options": {"a": 1}}) is True  # the same step: continued, kept
    assert os.path.exists(ds.part_path(out, 0))
    assert ds.prepare_output(out, {"step": "x", "options": {"a": 2}}) is False  # other options: started over
    assert not os.path.exists(ds.part_path(out, 0))

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep me")
    with pytest.raises(CurateStateError, match="not made by a curation step"):
        ds.prepare_output(str(foreign), {"step": "x"})
    assert (foreign / "precious.txt").read_text() == "keep me"
    assert ds.stable_id("file", "r", "a.py") == ds.stable_id("file", "r", "a.py") != ds.stable_id("file", "r", "b.py")


# ------------------------------------------------------------------------------------------ executors and resume
def test_local_pool_ray_and_inline_give_identical_outputs(tmp_path, corpus):
    pytest.importorskip("ray")
    import ray

    options = {"inputs": [str(corpus)], "shard_rows": 4}
    snapshots = {}
    try:
        for label, executor in (("inline", INLINE), ("pool", ExecutorConfig(kind="local", workers=2, progress=False)),
                                ("ray", ExecutorConfig(kind="ray", workers=2, progress=False))):
            run_step("ingest", out=str(tmp_path / label / "ingest"), options=options, executor=executor)
            run_step("exact_dedup", out=str(tmp_path / label / "exact"),
                     inputs={"in": str(tmp_path / label / "ingest")}, executor=executor)
            snapshots[label] = {step: snapshot(tmp_path / label / step) for step in ("ingest", "exact")}
            if label == "ray":
                assert ray.is_initialized()
    finally:
        ray.shutdown()
    assert len(snapshots["inline"]["ingest"]) == 7 + 1 + 1  # 7 parts, one dropped/ table (data.bin), _SUCCESS
    assert snapshots["pool"] == snapshots["inline"]
    assert snapshots["ray"] == snapshots["inline"]
    log = [json.loads(line) for line in open(tmp_path / "ray" / "exact" / ds.LOG_FILE)]
    assert sorted(entry["task"] for entry in log if entry["phase"] == "filter") == [f"part-{i:05d}" for i in range(7)]


def test_a_failed_shard_stops_the_step_and_the_rerun_finishes_it(tmp_path, corpus, monkeypatch):
    run_step("ingest", out=str(tmp_path / "ingest"), options={"inputs": [str(corpus)], "shard_rows": 4},
             executor=INLINE)
    reference = str(tmp_path / "reference")
    run_step("syntax", out=reference, inputs={"in": str(tmp_path / "ingest")}, executor=INLINE)

    original = syntax_filter.syntax_rows

    def failing(table, options):
        if "pkg/module_12.py" in table.column("path").to_pylist():
            raise RuntimeError("simulated crash")
        return original(table, options)

    monkeypatch.setattr(syntax_filter, "syntax_rows", failing)
    out = str(tmp_path / "syntax")
    with pytest.raises(TaskError, match=r"task part-00004 .* RuntimeError: simulated crash"):
        run_step("syntax", out=out, inputs={"in": str(tmp_path / "ingest")}, executor=INLINE)
    assert [ds.part_done(out, i) for i in range(7)] == [True, True, True, True, False, False, False]
    assert not ds.is_finished(out)
    with open(os.path.join(out, ".part-00004.parquet.abcdef.tmp"), "wb") as file:  # what a kill mid-write leaves
        file.write(b"half a parquet file")

    monkeypatch.setattr(syntax_filter, "syntax_rows", original)
    run_step("syntax", out=out, inputs={"in": str(tmp_path / "ingest")}, executor=INLINE)
    assert snapshot(out) == snapshot(reference)
    assert not os.path.exists(os.path.join(out, ".part-00004.parquet.abcdef.tmp"))
    tasks = [json.loads(line)["task"] for line in open(os.path.join(out, ds.LOG_FILE))]
    assert sorted(tasks) == [f"part-{i:05d}" for i in range(7)]  # one line per finished shard, none twice
    syntax_drops = [row for row in dropped_rows(out)]
    assert [row["path"] for row in syntax_drops] == ["pkg/broken.py"]
    assert syntax_drops[0]["drop_reason"].startswith("syntax_error: ")


KILL_CONFIG = """
out = "{out}"
executor = "local"
workers = 1
progress = false

[[steps]]
step = "ingest"
inputs = ["{corpus}"]
shard_rows = 2

[[steps]]
step = "exact_dedup"

[[steps]]
step = "syntax"

[[steps]]
step = "tokenize"
vocab_size = 300
"""


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, corpus):
    out = tmp_path_factory.mktemp("uninterrupted")
    config = out / "curate.toml"
    config.write_text(KILL_CONFIG.format(out=out / "run", corpus=corpus))
    run_pipeline(str(config))
    return {step: snapshot(out / "run" / step) for step in ("ingest", "exact_dedup", "syntax", "tokenize")}


def test_killed_pipeline_reruns_to_the_same_output(tmp_path, corpus, uninterrupted):
    """SIGKILL in the middle of a global step's map phase; the same command again ends like an uninterrupted run."""
    kill_at = "exact_dedup/_work/map-00004.done"
    config = tmp_path / "curate.toml"
    config.write_text(KILL_CONFIG.format(out=tmp_path / "run", corpus=corpus))
    command = [sys.executable, "-m", "seedcoder.cli", "curate", "run", "--config", str(config)]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = tmp_path / "run" / kill_at
    deadline = time.monotonic() + 120
    while process.poll() is None and not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.001)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert marker.exists(), "the pipeline ended before reaching the kill point"
    assert not (tmp_path / "run" / "tokenize" / ds.SUCCESS_FILE).exists()  # it really was killed mid-run

    run_pipeline(str(config))  # the same config again: finished shards are kept, the rest is done
    for step, expected in uninterrupted.items():
        assert snapshot(tmp_path / "run" / step) == expected, step


WORKERS_CONFIG = """
out = "{out}"
executor = "local"
workers = 2
progress = false

[[steps]]
step = "ingest"
inputs = ["{corpus}"]
shard_rows = 2

[[steps]]
step = "decontaminate"
humaneval = false
files = ["{fifo}"]
"""


def processes_with(marker: str) -> dict[int, str]:
    """pid -> command line of every process whose environment holds `marker` (what this test started)."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as file:
                if marker.encode() not in file.read().split(b"\0"):
                    continue
            with open(f"/proc/{entry}/cmdline", "rb") as file:
                found[int(entry)] = file.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:  # gone meanwhile, or not ours
            continue
    return found


def test_kill_9_of_curate_run_leaves_no_worker_behind(tmp_path, corpus):
    """The pool's workers (and the multiprocessing helpers) must not outlive a `curate run` killed with SIGKILL.

    The decontaminate step reads its benchmark file, a FIFO nobody writes, in the main process: the run stalls
    there while the ingest step's pool (2 workers, kept for the next steps) is alive, as in a long main-process
    phase such as scorer_train."""
    fifo = tmp_path / "benchmark.txt"
    os.mkfifo(fifo)
    config = tmp_path / "curate.toml"
    config.write_text(WORKERS_CONFIG.format(out=tmp_path / "run", corpus=corpus, fifo=fifo))
    marker = f"SEEDCODER_TEST_MARKER={os.getpid()}-{time.time_ns()}"
    name, value = marker.split("=", 1)
    command = [sys.executable, "-m", "seedcoder.cli", "curate", "run", "--config", str(config)]
    process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, name: value}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "run" / "ingest" / ds.SUCCESS_FILE).exists():  # the pool ran the ingest step
            assert process.poll() is None, process.stderr.read().decode(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "the ingest step did not finish"
            time.sleep(0.05)
        time.sleep(0.5)  # into decontaminate: the main process waits on the FIFO
        started = processes_with(marker)
        assert process.poll() is None and len(started) >= 3, started  # the run and its 2 workers at least
        process.kill()
        process.wait()
        deadline = time.monotonic() + 10
        while processes_with(marker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert processes_with(marker) == {}, f"left behind after kill -9 (of {len(started)}): {processes_with(marker)}"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for pid in processes_with(marker):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        process.stderr.close()


# ------------------------------------------------------------------------------------------ step adapters
def test_score_filter_drops_the_bottom_fraction(tmp_path):
    rng = np.random.default_rng(0)
    shards, number = [], 0
    for _ in range(3):
        rows = []
        for _ in range(20):
            language = ["python", "go", "rust"][number % 3]
            rows.append(file_row(number, f"x{number}", language=language, score=float(rng.uniform(0, 10))))
            number += 1
        shards.append(rows)
    source = make_dataset(tmp_path / "scored", shards, pa.schema([("score", pa.float32())]))
    scores = {row["id"]: row["score"] for row in kept_rows(source)}

    out = str(tmp_path / "global")
    run_step("score_filter", out=out, inputs={"in": source}, options={"drop_fraction": 0.1}, executor=INLINE)
    dropped = {row["id"] for row in dropped_rows(out)}
    assert dropped == set(sorted(scores, key=scores.get)[:6])  # floor(0.1 * 60) lowest, over all languages
    assert all(row["drop_reason"].startswith("low_score: ") for row in dropped_rows(out))

    out = str(tmp_path / "per_language")
    run_step("score_filter", out=out, inputs={"in": source}, options={"drop_fraction": 0.25, "by": "language"},
             executor=INLINE)
    languages = {row["id"]: row["language"] for row in kept_rows(source)}
    for language in ("python", "go", "rust"):
        members = sorted((i for i in scores if languages[i] == language), key=scores.get)
        assert {row["id"] for row in dropped_rows(out) if row["language"] == language} == set(members[:5])
    with pytest.raises(ConfigError, match=r"config section \[score_filter\]: drop_fraction: must be in \[0, 1\)"):
        run_step("score_filter", out=str(tmp_path / "bad"), inputs={"in": source}, options={"drop_fraction": 1.5})

    unscored = make_dataset(tmp_path / "unscored", [[file_row(1, "x")]])
    with pytest.raises(CurateStateError, match="no `score` column"):
        run_step("score_filter", out=str(tmp_path / "no_score"), inputs={"in": unscored}, executor=INLINE)


def git(repo, *args):
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args], check=True,
                   capture_output=True)


def make_git_history(path):
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    (path / "README.md").write_text("# calc\n")
    (path / "calc.py").write_text("def add(a, b):\n    return a + b\n")
    git(path, "add", ".")
    git(path, "commit", "-q", "-m", "Add the calculator")
    (path / "calc.py").write_text("def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n")
    git(path, "commit", "-q", "-am", "Add subtraction")
    return path


def test_commits_step_records_broken_repositories(tmp_path):
    good = make_git_history(tmp_path / "calc")
    broken = tmp_path / "broken"
    (broken / ".git").mkdir(parents=True)
    (broken / ".git" / "HEAD").write_text("nonsense\n")
    out = str(tmp_path / "commits")
    success = run_step("commits", out=out, options={"repos": [str(good), str(broken)]}, executor=INLINE)
    rows = kept_rows(out)
    assert [row["message"].strip() for row in rows] == ["Add the calculator", "Add subtraction"]
    assert all(row["source"] == "commit" and row["repo"] == "calc" and row["size_bytes"] > 0 for row in rows)
    assert rows[1]["changed_paths"] == ["calc.py"] and "def sub(a, b)" in rows[1]["text"]
    failures = dropped_rows(out)
    assert len(failures) == 1 and failures[0]["repo"] == "broken"
    assert failures[0]["drop_reason"].startswith("broken_repository: ") and str(broken) in failures[0]["drop_reason"]
    assert success["totals"]["kept_rows"] == 2 and success["totals"]["drop_reasons"] == {"broken_repository": 1}


def test_repo_documents_step_gathers_repositories_across_shards(tmp_path):
    pytest.importorskip("seedcoder.curate.repo_documents")
    shards = [
        [file_row(0, "import util\n\nprint(util.X)\n", repo="a", path="main.py", score=8.0),
         file_row(1, "X = 1\n", repo="a", path="util.py", score=6.0)],
        [file_row(2, "package b\n", repo="b", path="b.go", language="go", score=5.0),
         file_row(3, "Y = 2\n", repo="a", path="zeta.py", score=1.0)],
    ]
    source = make_dataset(tmp_path / "files", shards, pa.schema([("score", pa.float32())]))
    out = str(tmp_path / "repo_docs")
    run_step("repo_documents", out=out, inputs={"in": source}, executor=INLINE)
    documents = {row["repo"]: row for row in kept_rows(out)}
    assert set(documents) == {"a", "b"} and all(row["source"] == "repo" for row in documents.values())
    assert documents["a"]["file_paths"].index("util.py") < documents["a"]["file_paths"].index("main.py")
    assert sorted(documents["a"]["file_paths"]) == ["main.py", "util.py", "zeta.py"]
    assert documents["a"]["score"] == pytest.approx(5.0) and documents["b"]["score"] == pytest.approx(5.0)
    assert documents["a"]["size_bytes"] == len(documents["a"]["text"].encode())


def test_tokenize_writes_shards_with_score_language_source_and_flags(tmp_path):
    score_schema = pa.schema([("score", pa.float32())])
    files = make_dataset(tmp_path / "files", [
        [file_row(0, "def f():\n    return 1\n", score=7.5), file_row(1, "fn main() {}\n", language="rust", score=2.0)],
        [file_row(2, "SELECT 1;\n", language="sql", score=9.0)]], score_schema)
    repos = make_dataset(tmp_path / "repo", [[file_row(3, "# a.py\nA = 1\n", source="repo", path="<part 0>",
                                                       file_paths=["a.py", "b.py"], score=4.0)]],
                         pa.schema([("file_paths", pa.list_(pa.string())), ("score", pa.float32())]))
    commits = make_dataset(tmp_path / "commits", [[file_row(4, "<commit_message>\nFix\n", source="commit",
                                                            language="commit", path="abc123", commit_sha="abc123")]],
                           pa.schema([("commit_sha", pa.string())]))
    out = tmp_path / "tokenize"
    run_step("tokenize", out=str(out), inputs={"datasets": [files, repos, commits]}, options={"vocab_size": 300},
             executor=INLINE)
    manifest = load_manifest(str(out))
    assert manifest["totals"]["documents"] == 5 and sorted(os.path.basename(s["path"]) for s in manifest["shards"]) == [
        "commits-00000.scs", "files-00000.scs", "files-00001.scs", "repo-00000.scs"]
    tokenizer = load_tokenizer(str(out / "tokenizer.json"))
    documents = {}
    for shard in manifest["shards"]:
        with ShardReader(os.path.join(str(out), shard["path"])) as reader:
            for index in range(reader.document_count):
                document = reader.document(index)
                documents[document.metadata["id"]] = document
    assert documents["id0000"].score == 7.5 and documents["id0000"].language == Language.PYTHON
    assert documents["id0000"].source == Source.FILE and documents["id0000"].flags == 0
    assert tokenizer.decode(documents["id0001"].tokens.tolist()) == "fn main() {}\n"
    assert documents["id0002"].language == Language.SQL
    assert documents["id0003"].source == Source.REPO and documents["id0003"].flags & DocFlag.REPO_LEVEL
    assert documents["id0003"].metadata["files"] == 2
    commit = documents["id0004"]
    assert commit.source == Source.COMMIT and commit.language == Language.UNKNOWN and commit.score == 0.0
    assert commit.metadata["language"] == "commit" and commit.metadata["commit_sha"] == "abc123"

    # web pages keep their source; `source = "hq"` writes every document of a dataset as the high-quality set
    web = make_dataset(tmp_path / "web", [[file_row(5, "Use `sorted(xs)`:\n\n    sorted([3, 1])\n", source="web",
                                                    language="text", path="/docs/howto")]])
    hq_out = tmp_path / "tokenize_hq"
    run_step("tokenize", out=str(hq_out), inputs={"datasets": [files, web]},
             options={"tokenizer": str(out / "tokenizer.json"), "source": "hq"}, executor=INLINE)
    web_out = tmp_path / "tokenize_web"
    run_step("tokenize", out=str(web_out), inputs={"datasets": [web]},
             options={"tokenizer": str(out / "tokenizer.json")}, executor=INLINE)
    for directory, expected in ((hq_out, {Source.HQ}), (web_out, {Source.WEB})):
        sources = set()
        for shard in load_manifest(str(directory))["shards"]:
            with ShardReader(os.path.join(str(directory), shard["path"])) as reader:
                sources |= {reader.document(i).source for i in range(reader.document_count)}
        assert sources == expected, directory
    with pytest.raises(ConfigError, match="source: one of"):
        run_step("tokenize", out=str(tmp_path / "bad"), inputs={"datasets": [web]}, options={"source": "blog"})

    # the report over these steps: counts per step and language, tokens, plots
    report_dir = tmp_path / "report"
    run_step("report", out=str(report_dir), inputs={"steps": [files, repos, commits, str(out)]},
             options={"tokenizer": str(out / "tokenizer.json")}, executor=INLINE)
    report = json.loads((report_dir / "report.json").read_text())
    files_step = report["steps"][0]
    assert files_step["totals"]["kept_rows"] == 3 and files_step["languages"]["rust"]["kept_rows"] == 1
    expected_tokens = len(tokenizer.encode("fn main() {}\n", add_special_tokens=False).ids)
    assert files_step["languages"]["rust"]["kept_tokens"] == expected_tokens
    assert report["shards"][0]["totals"]["documents"] == 5 and report["scores"]["step"] == "repo"
    assert sum(report["scores"]["all"]) == 1  # the last step with a score column: repo (one document, score 4)
    for name in ("steps.png", "drop_reasons.png", "scores.png"):
        assert (report_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| files | 3 | 0 |" in (report_dir / "report.md").read_text()


def test_near_dedup_step(tmp_path):
    pytest.importorskip("seedcoder.curate.near_dedup")
    base = " ".join(f"token{i}" for i in range(300))
    variant = base.replace("token150", "changed")  # Jaccard far above 0.8
    other = " ".join(f"word{i}" for i in range(300))
    shards = [[file_row(0, base, repo="r1"), file_row(1, other, repo="r1")],
              [file_row(2, variant, repo="r2"), file_row(3, other + " tail", repo="r3"),
               file_row(4, " ".join(f"unique{i}" for i in range(300)), repo="r3")]]
    source = make_dataset(tmp_path / "files", shards)
    out = str(tmp_path / "near")
    success = run_step("near_dedup", out=out, inputs={"in": source}, options={"repo_level": False}, executor=INLINE)
    assert [row["id"] for row in kept_rows(out)] == ["id0000", "id0001", "id0004"]
    reasons = {row["id"]: row["drop_reason"] for row in dropped_rows(out)}
    assert reasons == {"id0002": "near_duplicate: of id0000 (r1/f0.py)",
                       "id0003": "near_duplicate: of id0001 (r1/f1.py)"}
    sizes = {row["id"]: row["near_dup_cluster_size"] for row in kept_rows(out)}
    assert sizes == {"id0000": 2, "id0001": 2, "id0004": 1}
    assert success["reduce"]["file_clusters"] == 3
    # repository level: r2 (one file, a near copy of r1's first file) is not a near copy of r1 as a whole, but
    # r4 (near copies of both of r1's files) is, and goes whole before file-level clustering
    run_step("near_dedup", out=str(tmp_path / "near_repo"), inputs={"in": source}, executor=INLINE)
    assert len(kept_rows(tmp_path / "near_repo")) == 3
    r4 = [file_row(5, variant, repo="r4"), file_row(6, other.replace("word7 ", "changed "), repo="r4")]
    source = make_dataset(tmp_path / "with_r4", [*shards, r4])
    success = run_step("near_dedup", out=str(tmp_path / "near_r4"), inputs={"in": source}, executor=INLINE)
    reasons = {row["id"]: row["drop_reason"] for row in dropped_rows(tmp_path / "near_r4")}
    assert reasons["id0005"] == reasons["id0006"] == "near_duplicate_repository: of repository r1"
    assert [row["id"] for row in kept_rows(tmp_path / "near_r4")] == ["id0000", "id0001", "id0004"]
    assert success["reduce"]["duplicate_repositories"] == 1


def test_decontaminate_step(tmp_path):
    pytest.importorskip("seedcoder.curate.decontaminate")
    benchmark = tmp_path / "bench.jsonl"
    solution = "def secret_benchmark_function(alpha, beta, gamma):\n    return alpha * beta + gamma - alpha / beta\n"
    benchmark.write_text(json.dumps({"task_id": "Mine/0", "prompt": solution}) + "\n")
    source = make_dataset(tmp_path / "files", [[file_row(0, "x = 1\n"), file_row(1, "# copied\n" + solution)]])
    out = str(tmp_path / "decon")
    run_step("decontaminate", out=out, inputs={"in": source}, options={"humaneval": False, "files": [str(benchmark)]},
             executor=INLINE)
    assert [row["id"] for row in kept_rows(out)] == ["id0000"]
    (reason,) = [row["drop_reason"] for row in dropped_rows(out)]
    assert reason.startswith("contaminated: 10-gram overlap with benchmark item ")


def test_oracle_step_rates_a_stratified_sample(tmp_path):
    pytest.importorskip("seedcoder.curate.oracle")
    shards = [[file_row(n, CORPUS_TEMPLATE.format(n=n), language=["python", "go"][n % 2]) for n in range(k, k + 10)]
              for k in (0, 10, 20)]
    source = make_dataset(tmp_path / "files", shards)
    out = str(tmp_path / "oracle")
    success = run_step("oracle", out=out, inputs={"in": source}, options={"n": 12, "shard_rows": 5}, executor=INLINE)
    rated = kept_rows(out)
    assert len(rated) + len(dropped_rows(out)) == 12 and len(ds.finished_parts(out)) == 3
    assert all(0 <= row["rating"] <= 10 and row["oracle"] for row in rated)
    assert {row["language"] for row in rated} == {"python", "go"}
    assert success["sampled"] == 12 and success["population"] == 30


# ------------------------------------------------------------------------------------------ config and CLI
def test_options_and_config_errors(tmp_path):
    assert check_options("near_dedup", {"threshold": 0.75})["threshold"] == 0.75
    assert check_options("near_dedup", {"repo_threshold": 1})["repo_threshold"] == 1.0  # an integer for a float
    assert check_options("ingest", {"inputs": ["a", {"path": "b", "kind": "dir"}]})["inputs"][1] == {"path": "b",
                                                                                                   "kind": "dir"}
    with pytest.raises(ConfigError, match="did you mean 'near_dedup.threshold'"):
        check_options("near_dedup", {"treshold": 0.8})
    with pytest.raises(ConfigError, match="config key 'near_dedup.threshold': expected a number, got 'high'"):
        check_options("near_dedup", {"threshold": "high"})
    with pytest.raises(ConfigError, match="config key 'exact_dedup.repo_level': expected true or false, got 1"):
        check_options("exact_dedup", {"repo_level": 1})
    with pytest.raises(ConfigError, match=r"config key 'decontaminate.files\[1\]': expected a string, got 3"):
        check_options("decontaminate", {"files": ["a.jsonl", 3]})
    with pytest.raises(ConfigError, match=r"config section \[oracle\]: backend: must be one of rubric, openai, vllm"):
        check_options("oracle", {"backend": "gpt"})
    with pytest.raises(CurateConfigError, match="unknown step 'exact_dedupe'.*did you mean 'exact_dedup'"):
        run_step("exact_dedupe", out=str(tmp_path / "x"))
    with pytest.raises(CurateConfigError, match="needs input 'in'"):
        run_step("syntax", out=str(tmp_path / "x"))
    with pytest.raises(CurateStateError, match="does not exist"):
        run_step("syntax", out=str(tmp_path / "x"), inputs={"in": str(tmp_path / "missing")}, executor=INLINE)
    with pytest.raises(CurateConfigError, match=r"needs \[\[steps\]\]"):
        load_pipeline_config({"out": "x"})
    with pytest.raises(ConfigError, match="unknown config key 'output' \\(did you mean 'out'\\?\\)"):
        load_pipeline_config({"output": "x", "steps": [{"step": "ingest"}]})
    with pytest.raises(ConfigError, match=r"config key 'dedup.in': expected a string or a list of strings .*, got 3"):
        load_pipeline_config({"steps": [{"step": "ingest"}, {"step": "exact_dedup", "name": "dedup", "in": 3}]})
    with pytest.raises(ConfigError, match=r"unknown config key 'dedup.inn' \(did you mean 'dedup.in'\?\)"):
        load_pipeline_config({"steps": [{"step": "ingest"}, {"step": "exact_dedup", "name": "dedup", "inn": "x"}]})
    with pytest.raises(CurateConfigError, match="must be unique"):
        load_pipeline_config({"steps": [{"step": "syntax"}, {"step": "syntax"}]})
    with pytest.raises(CurateConfigError, match="no step named 'nope'"):
        load_pipeline_config({"steps": [{"step": "ingest"}]}, overrides={"nope.x": 1})
    with pytest.raises(CurateConfigError, match="no earlier step makes its 'in' input"):
        run_pipeline({"out": str(tmp_path / "o"), "steps": [{"step": "syntax"}]})
    bad = tmp_path / "bad.toml"
    bad.write_text("steps = [\n")
    with pytest.raises(ConfigError, match="bad.toml: not valid TOML"):
        load_pipeline_config(str(bad))
    config = load_pipeline_config({"steps": [{"step": "ingest", "inputs": ["{root}/x", "{stdlib}"]}]},
                                  overrides={"ingest.shard_rows": 5})
    assert config["steps"][0]["inputs"][0] == os.path.join(ROOT, "x") and config["steps"][0]["shard_rows"] == 5
    assert config["steps"][0]["name"] == "ingest"
    assert os.path.isfile(os.path.join(config["steps"][0]["inputs"][1], "os.py"))


def test_run_checks_the_whole_config_before_the_first_step(tmp_path, corpus, capsys):
    """Unknown keys and wrong types, overrides included, stop `curate run` before any step writes anything."""
    out = tmp_path / "out"
    config = tmp_path / "c.toml"
    config.write_text(textwrap.dedent(f"""
        out = "{out}"
        workers = 1
        progress = false
        [[steps]]
        step = "ingest"
        inputs = ["{corpus}"]
        [[steps]]
        step = "exact_dedup"
        [[steps]]
        step = "near_dedup"
    """))
    cases = [("--workerz=3", "unknown config key 'workerz' (did you mean 'workers'?)"),
             ("--near_dedup.threshold=abc", "config key 'near_dedup.threshold': expected a number, got 'abc'"),
             ("--near_dedup.treshold=0.8",
              "unknown config key 'near_dedup.treshold' (did you mean 'near_dedup.threshold'?)"),
             ("--near_dedup.threshold=1.5", "config section [near_dedup]: threshold: must be in (0, 1)"),
             ("--workers=two", "config key 'workers': expected an integer (or leave the key out), got 'two'"),
             ("--exact_dedup.workers=true", "config key 'exact_dedup.workers': expected an integer"),
             ("--executor=slurm", "executor must be one of local, ray, got 'slurm'"),
             ("--nope.threshold=0.8", "override 'nope.threshold': no step named 'nope'"),
             ("--out", "config override '--out' has no value")]
    for override, message in cases:
        assert cli_main(["curate", "run", "--config", str(config), override]) == 1, override
        assert message in capsys.readouterr().err, override
        assert not out.exists(), override
    with pytest.raises(ConfigError, match="unknown config key 'workerz'"):
        run_pipeline(str(config), overrides={"workerz": 3})
    assert not out.exists()
    # values are read as the key's type: a string key keeps a number-like text, `in` takes a step or a directory
    data = load_pipeline_config(str(config), ["--out=2024", "--near_dedup.seed", "7", "--near_dedup.in=exact_dedup",
                                              "--ray-address=10.0.0.1:6379", "--progress=true", "--executor", "ray"])
    assert data["out"] == "2024" and data["ray_address"] == "10.0.0.1:6379" and data["progress"] is True
    assert data["executor"] == "ray"
    assert data["steps"][2]["seed"] == 7 and data["steps"][2]["in"] == "exact_dedup"


def test_demo_config_names_every_step_with_valid_options():
    config = load_pipeline_config(os.path.join(ROOT, "configs", "curate_demo.toml"))
    kinds = [step["step"] for step in config["steps"]]
    assert kinds == ["ingest", "exact_dedup", "near_dedup", "syntax", "decontaminate", "oracle", "scorer_train",
                     "score", "score_filter", "commits", "repo_documents", "web_corpus", "web_ingest", "exact_dedup",
                     "near_dedup", "decontaminate", "web_recall", "oracle", "web_filter", "tokenize", "hq_recall",
                     "tokenize", "report"]
    for step in config["steps"]:
        check_options(step["step"], {k: v for k, v in step.items() if k not in pipeline.STEP_TABLE_KEYS})


def test_cli_runs_a_step_and_reports_errors(tmp_path, corpus, capsys):
    out = tmp_path / "cli_ingest"
    assert cli_main(["curate", "ingest", "--in", str(corpus), "--out", str(out), "--workers", "1", "--no-progress",
                     "--shard-rows", "100", "--exclude", '["*.bin"]']) == 0
    assert ds.success_record(str(out))["totals"] == {"kept_rows": 27, "kept_bytes": ds.success_record(str(out))[
        "totals"]["kept_bytes"], "dropped_rows": 0, "dropped_bytes": 0, "drop_reasons": {}}
    assert cli_main(["curate", "syntax", "--in", str(tmp_path / "missing"), "--out", str(tmp_path / "s")]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert cli_main(["curate", "run", "--config", str(tmp_path / "none.toml")]) == 1
    assert "none.toml does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_main(["curate", "syntax", "--in", "x", "--out", "y", "--no-such-option", "1"])


def test_full_pipeline_from_a_config(tmp_path):
    for module in ("near_dedup", "syntax", "decontaminate", "oracle", "scorer", "commits", "repo_documents"):
        pytest.importorskip(f"seedcoder.curate.{module}")
    project = make_git_history(tmp_path / "calc")
    for number in range(12):
        (project / f"mod_{number}.py").write_text(CORPUS_TEMPLATE.format(n=number) * 2)
    (project / "bad.py").write_text("def oops(:\n")
    git(project, "add", ".")
    git(project, "commit", "-q", "-m", "Add modules")
    texts = [CORPUS_TEMPLATE.format(n=n) * 2 for n in range(12)] + ["language: python\npath: calc.py\n---\n"]
    tokenizer = train_tokenizer(texts, str(tmp_path / "tokenizer.json"), vocab_size=300)
    config = {
        "out": str(tmp_path / "run"), "workers": 1, "progress": False,
        "steps": [
            {"step": "ingest", "inputs": [str(project)], "shard_rows": 5},
            {"step": "exact_dedup"}, {"step": "near_dedup", "threshold": 0.85}, {"step": "syntax"},
            {"step": "decontaminate"}, {"step": "oracle", "n": 8},
            {"step": "scorer_train", "model": "debug", "tokenizer": tokenizer, "device": "cpu",
             "train": {"steps": 2, "batch_size": 4, "max_tokens": 64, "plot": False}},
            {"step": "score", "device": "cpu"}, {"step": "score_filter", "drop_fraction": 0.2},
            {"step": "commits"}, {"step": "repo_documents"}, {"step": "tokenize", "tokenizer": tokenizer},
            {"step": "report"},
        ],
    }
    results = run_pipeline(config)
    assert list(results) == [step["step"] for step in config["steps"]]
    run = tmp_path / "run"
    assert [row["path"] for row in dropped_rows(run / "syntax")] == ["bad.py"]
    scored = kept_rows(run / "score")
    assert scored and all(0.0 <= row["score"] <= 10.0 for row in scored)
    assert len(kept_rows(run / "score_filter")) == len(scored) - int(0.2 * len(scored))
    rated = kept_rows(run / "oracle")
    assert rated and all(0 <= row["rating"] <= 10 for row in rated)
    manifest = load_manifest(str(run / "tokenize"))
    assert set(manifest["sources"]) == {"file", "repo", "commit"}
    assert manifest["sources"]["commit"]["documents"] == 3
    report = json.loads((run / "report" / "report.json").read_text())
    assert [step["name"] for step in report["steps"]] == [step["step"] for step in config["steps"][:-1]]
    assert report["scorer"]["mae"] >= 0 and report["ratings"]["rated"] + report["ratings"]["unparseable"] == 8
    assert report["scores"]["step"] == "score" and sum(report["scores"]["all"]) == len(scored)
    assert report["score_filter"]["dropped"] == int(0.2 * len(scored))
    # a second run finds every step finished and changes nothing
    before = {step: snapshot(run / step) for step in ("ingest", "score_filter", "tokenize")}
    run_pipeline(config)
    assert {step: snapshot(run / step) for step in before} == before
    assert hashlib.sha256((run / "tokenize" / "tokenizer.json").read_bytes()).hexdigest() == hashlib.sha256(
        open(tokenizer, "rb").read()).hexdigest()


def test_run_pipeline_defaults_follow_lines(tmp_path):
    """commits default to the ingested git repositories; tokenize reads the last files, repo and commits datasets."""
    config = textwrap.dedent("""
        [[steps]]
        step = "ingest"
        inputs = ["{root}"]
        [[steps]]
        step = "commits"
        [[steps]]
        step = "tokenize"
    """)
    path = tmp_path / "c.toml"
    path.write_text(config)
    data = load_pipeline_config(str(path))
    assert pipeline._ingested_git_repositories(data["steps"]) == ([ROOT] if os.path.isdir(os.path.join(ROOT, ".git"))
                                                                  else [])


def test_scorer_learns_the_oracles_number_not_its_rounding(tmp_path):
    """scorer_train's target is `rating_score` (the log-prob rater's expectation, the proxy's mean) when the oracle
    step wrote one, else the integer `rating`."""
    import pyarrow as pa

    from seedcoder.curate.score import training_rows

    rows = [{"id": f"f{i}", "text": "x = 1\n", "language": "python", "path": f"f{i}.py"} for i in range(3)]
    extra = pa.schema([("rating", pa.int64()), ("rating_score", pa.float64())])
    with_scores = make_dataset(tmp_path / "scored", [[{**r, "rating": 7, "rating_score": 6.6 + i} for i, r in
                                                      enumerate(rows)]], extra)
    assert pa.concat_tables(training_rows(with_scores)).column("rating").to_pylist() == pytest.approx([6.6, 7.6, 8.6])
    plain = make_dataset(tmp_path / "plain", [[{**r, "rating": 4} for r in rows]], pa.schema([("rating", pa.int64())]))
    assert pa.concat_tables(training_rows(plain)).column("rating").to_pylist() == [4, 4, 4]
