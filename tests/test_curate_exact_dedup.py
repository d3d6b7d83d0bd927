"""Curation step 2 (exact dedup): SHA-256 at file level (first copy kept) and repository level (same file set)."""

import hashlib
import os

import pytest

from seedcoder.curate import dataset as ds
from seedcoder.curate.exact_dedup import content_digests, duplicate_repositories, exact_duplicates
from seedcoder.curate.executor import ExecutorConfig
from seedcoder.curate.pipeline import run_step

INLINE = ExecutorConfig(kind="local", workers=1, progress=False)


def test_content_digests_are_sha256():
    texts = ["def f():\n    pass\n", "", "ünïcode ✓"]
    assert content_digests(texts) == [hashlib.sha256(t.encode()).digest() for t in texts]


def test_file_level_keeps_the_first_copy():
    texts = ["a", "b", "a", "c", "b", "a"]
    ids = [f"id{i}" for i in range(6)]
    keep, reasons = exact_duplicates(content_digests(texts), [""] * 6, ids, [f"p{i}" for i in range(6)])
    assert keep.tolist() == [True, True, False, True, False, False]
    assert reasons[2] == "exact_duplicate: same content as id0 (/p0)"
    assert reasons[4] == "exact_duplicate: same content as id1 (/p1)" and reasons[5].endswith("id0 (/p0)")
    assert reasons[0] is None and reasons[3] is None


def test_repository_level_drops_whole_copies():
    # r2 has r1's files (other paths, other order): dropped whole; r3 has one more file: only its copies go
    files = [("r1", "x = 1"), ("r1", "y = 2"), ("r2", "y = 2"), ("r2", "x = 1"), ("r3", "x = 1"), ("r3", "y = 2"),
             ("r3", "z = 3"), ("", "x = 1")]
    repos = [repo for repo, _ in files]
    digests = content_digests([text for _, text in files])
    assert duplicate_repositories(digests, repos) == {"r2": "r1"}
    keep, reasons = exact_duplicates(digests, repos, [f"id{i}" for i in range(len(files))])
    assert keep.tolist() == [True, True, False, False, False, False, True, False]
    assert reasons[2] == reasons[3] == "duplicate_repository: same files as repository r1"
    assert reasons[4].startswith("exact_duplicate: same content as id0") and reasons[7].startswith("exact_duplicate")

    keep_files_only, reasons_files_only = exact_duplicates(digests, repos, [str(i) for i in range(8)], repo_level=False)
    assert keep_files_only.tolist() == [True, True, False, False, False, False, True, False]
    assert all(r is None or r.startswith("exact_duplicate") for r in reasons_files_only)
    keep_repos_only, _ = exact_duplicates(digests, repos, [str(i) for i in range(8)], file_level=False)
    assert keep_repos_only.tolist() == [True, True, False, False, True, True, True, True]


def test_lengths_must_agree():
    with pytest.raises(ValueError, match="3 digests but 2 repos"):
        exact_duplicates(content_digests(["a", "b", "c"]), ["r", "r"], ["1", "2"])


def write_files(root, files):
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_exact_dedup_step_across_shards(tmp_path):
    corpus = tmp_path / "corpus"
    body = {"a.py": "A = 1\n", "b.py": "B = 2\n", "c.py": "C = 3\n"}
    write_files(corpus / "repo1", body)
    write_files(corpus / "repo2", {"x/a_copy.py": "A = 1\n", "x/b_copy.py": "B = 2\n", "x/c_copy.py": "C = 3\n"})
    write_files(corpus / "repo3", {"a.py": "A = 1\n", "own.py": "OWN = 4\n", "own_again.py": "OWN = 4\n"})
    inputs = [str(corpus / name) for name in ("repo1", "repo2", "repo3")]
    run_step("ingest", out=str(tmp_path / "ingest"), options={"inputs": inputs, "shard_rows": 2}, executor=INLINE)
    assert len(ds.finished_parts(str(tmp_path / "ingest"))) == 5  # duplicates land in other shards than originals
    out = str(tmp_path / "exact")
    success = run_step("exact_dedup", out=out, inputs={"in": str(tmp_path / "ingest")}, executor=INLINE)
    kept = [row for _, table in ds.iter_tables(out) for row in table.to_pylist()]
    dropped = {(row["repo"], row["path"]): row["drop_reason"] for _, t in ds.iter_tables(out, dropped=True)
               for row in t.to_pylist()}
    assert [(row["repo"], row["path"]) for row in kept] == [("repo1", "a.py"), ("repo1", "b.py"), ("repo1", "c.py"),
                                                          ("repo3", "own.py")]
    assert all(row["sha256"] == hashlib.sha256(row["text"].encode()).hexdigest() for row in kept)
    assert dropped[("repo2", "x/a_copy.py")] == "duplicate_repository: same files as repository repo1"
    assert dropped[("repo3", "a.py")].startswith("exact_duplicate: same content as ") and "(repo1/a.py)" in dropped[
        ("repo3", "a.py")]
    assert dropped[("repo3", "own_again.py")].endswith("(repo3/own.py)")
    assert success["totals"]["kept_rows"] == 4 and success["totals"]["dropped_rows"] == 5
    assert success["totals"]["drop_reasons"] == {"duplicate_repository": 3, "exact_duplicate": 2}
    assert success["reduce"]["unique_digests"] == 4

    # resume: a lost shard (marker and part gone) is redone from the cached digests and decisions, identically
    before = ds.read_part(out, 3)
    for path in (ds.marker_path(out, 3), ds.part_path(out, 3)):
        os.unlink(path)
    (tmp_path / "exact" / "_SUCCESS.json").unlink()
    again = run_step("exact_dedup", out=out, inputs={"in": str(tmp_path / "ingest")}, executor=INLINE)
    assert ds.read_part(out, 3).equals(before) and again["totals"] == success["totals"]
