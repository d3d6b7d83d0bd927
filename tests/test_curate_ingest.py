"""Curation step 1 (ingest) and language detection: directories, git repositories, dumps, every kind of bad input."""

import json
import os
import subprocess
import time
import typing

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from seedcoder.config import ConfigError
from seedcoder.curate import dataset as ds
from seedcoder.curate.errors import CurateConfigError
from seedcoder.curate.executor import ExecutorConfig
from seedcoder.curate.ingest import IngestOptions, check_content, normalize_language, plan_ingest
from seedcoder.curate.languages import LANGUAGES, grammar_name, language_of
from seedcoder.curate.pipeline import check_options, run_step
from seedcoder.data.shards import Language

INLINE = ExecutorConfig(kind="local", workers=1, progress=False)
PAPER_LANGUAGES = ["python", "java", "c", "cpp", "csharp", "javascript", "typescript", "go", "rust", "php", "ruby",
                   "kotlin", "swift", "scala", "shell", "sql", "html", "css", "lua", "r", "julia", "haskell", "perl",
                   "dart", "objective_c", "matlab", "fortran", "markdown", "json", "yaml", "toml", "dockerfile",
                   "makefile", "cmake", "vue"]


def ingest(tmp_path, inputs, name="ingest", **options):
    out = tmp_path / name
    run_step("ingest", out=str(out), options={"inputs": [str(i) if isinstance(i, os.PathLike) else i for i in inputs],
                                              **options}, executor=INLINE)
    return out


def rows(out, dropped=False):
    result = []
    for _, table in ds.iter_tables(str(out), dropped=dropped):
        result += table.to_pylist()
    return result


def by_path(records):
    return {record["path"]: record for record in records}


def git(repo, *args):
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args], check=True,
                   capture_output=True)


# ------------------------------------------------------------------------------------------ languages
def test_languages_cover_the_paper_and_the_shard_format():
    shard_names = {language.name.lower() for language in Language}
    assert len(LANGUAGES - {"unknown", "text"}) >= 30
    assert LANGUAGES <= shard_names, LANGUAGES - shard_names  # the shard writer accepts every name we produce
    assert set(PAPER_LANGUAGES) <= LANGUAGES, set(PAPER_LANGUAGES) - LANGUAGES
    import tree_sitter_language_pack

    grammars = set(typing.get_args(tree_sitter_language_pack.SupportedLanguage))
    for language in LANGUAGES:
        grammar = grammar_name(language)
        assert grammar is None or grammar in grammars, (language, grammar)
    assert grammar_name("shell") == "bash" and grammar_name("objective_c") == "objc"
    assert grammar_name("makefile") == "make"
    assert grammar_name("typescript", "ui/App.tsx") == "tsx" and grammar_name("typescript", "a.ts") == "typescript"
    assert grammar_name("text") is None


@pytest.mark.parametrize("path, head, expected", [
    ("src/main.rs", None, "rust"), ("a/B.java", None, "java"), ("x.PY", None, "python"), ("Makefile", None, "makefile"),
    ("sub/Dockerfile", None, "dockerfile"), ("Dockerfile.dev", None, "dockerfile"), ("CMakeLists.txt", None, "cmake"),
    ("notes.txt", None, "text"), ("data.bin", None, "unknown"),
    ("bin/tool", b"#!/usr/bin/env python3.11\nprint(1)\n", "python"),
    ("bin/run", b"#!/bin/bash\necho hi\n", "shell"), ("bin/x", b"plain text", "unknown"),
    ("vec.h", b"#include <vector>\nnamespace v { class A; }\n", "cpp"),
    ("io.h", b"#include <stdio.h>\nint f(void);\n", "c"),
    ("View.h", b"#import <UIKit/UIKit.h>\n@interface View\n@end\n", "objective_c"),
    ("f.m", b"% comment\nfunction y = f(x)\n  y = x;\nend\n", "matlab"),
    ("V.m", b"#import \"V.h\"\n@implementation V\n@end\n", "objective_c"), ("app.vue", None, "vue"),
])
def test_language_of(path, head, expected):
    assert language_of(path, head) == expected


def test_check_content_reasons():
    assert check_content(b"x = 1\n", 100) == ("x = 1\n", None)
    assert check_content(b"", 100)[1] == "empty: 0 bytes"
    assert check_content(b" \n\t\n", 100)[1].startswith("empty: only whitespace")
    assert check_content(b"ab\x00cd", 100)[1] == "binary: NUL byte at offset 2"
    assert check_content(b"caf\xe9 = 1", 100)[1].startswith("not_utf8: invalid continuation byte at byte 3")
    assert check_content(b"x" * 101, 100)[1] == "oversize: 101 bytes > max_file_bytes 100"
    assert normalize_language("C++", "a.cc") == "cpp" and normalize_language("Objective-C", "") == "objective_c"
    assert normalize_language("klingon", "x.go") == "go" and normalize_language(None, "") == "unknown"


# ------------------------------------------------------------------------------------------ directories
@pytest.fixture
def messy_dir(tmp_path):
    root = tmp_path / "proj"
    (root / "pkg" / "sub").mkdir(parents=True)
    (root / "pkg" / "a.py").write_text("def a():\n    return 1\n")
    (root / "pkg" / "sub" / "b.go").write_text("package sub\n\nfunc B() int { return 2 }\n")
    (root / "README.md").write_text("# proj\n")
    (root / "pkg" / "latin1.py").write_bytes(b"name = '\xe9t\xe9'\n")
    (root / "pkg" / "blob.bin").write_bytes(b"\x89PNG\x00\x00\x01")
    (root / "pkg" / "empty.py").write_bytes(b"")
    (root / "pkg" / "blank.py").write_text("\n   \n")
    with open(root / "pkg" / "huge.py", "wb") as file:  # 50 MB, sparse: created instantly, must never be read
        file.truncate(50 * 1024 * 1024)
    os.symlink("self_loop", root / "pkg" / "self_loop")
    os.symlink("missing_target.py", root / "pkg" / "dangling.py")
    os.symlink("..", root / "pkg" / "sub" / "up")  # a directory link back to an ancestor
    os.symlink("a.py", root / "pkg" / "alias.py")  # a file link: read through
    os.mkfifo(root / "pkg" / "pipe")  # reading it would block forever
    (root / ".git_not").mkdir()
    (root / "node_cache").mkdir()
    (root / "node_cache" / "skip.js").write_text("var x = 1;\n")
    return root


def test_directory_with_bad_inputs(tmp_path, messy_dir):
    started = time.perf_counter()
    out = ingest(tmp_path, [messy_dir], exclude=[".git", "node_cache"])
    assert time.perf_counter() - started < 20
    kept, dropped = by_path(rows(out)), by_path(rows(out, dropped=True))
    assert set(kept) == {"README.md", "pkg/a.py", "pkg/alias.py", "pkg/sub/b.go"}
    assert kept["pkg/a.py"]["text"] == "def a():\n    return 1\n" and kept["pkg/a.py"]["language"] == "python"
    assert kept["pkg/sub/b.go"]["language"] == "go" and kept["README.md"]["language"] == "markdown"
    assert all(row["repo"] == "proj" and row["source"] == "file" for row in kept.values())
    assert kept["pkg/a.py"]["size_bytes"] == len(kept["pkg/a.py"]["text"])
    reasons = {path: row["drop_reason"] for path, row in dropped.items()}
    assert reasons["pkg/latin1.py"].startswith("not_utf8:")
    assert reasons["pkg/blob.bin"] == "binary: NUL byte at offset 4"
    assert reasons["pkg/empty.py"] == "empty: 0 bytes"
    assert reasons["pkg/blank.py"].startswith("empty: only whitespace")
    assert reasons["pkg/huge.py"] == f"oversize: {50 * 1024 * 1024} bytes > max_file_bytes {1 << 20}"
    assert dropped["pkg/huge.py"]["size_bytes"] == 50 * 1024 * 1024 and dropped["pkg/huge.py"]["text"] == ""
    assert reasons["pkg/self_loop"].startswith("symlink_loop:")
    assert reasons["pkg/dangling.py"].startswith("unreadable: dangling symlink -> missing_target.py")
    assert reasons["pkg/sub/up"].startswith("symlink: directory link not followed")
    assert reasons["pkg/pipe"] == "not_regular_file: fifo"
    assert "node_cache/skip.js" not in kept and "node_cache/skip.js" not in dropped  # excluded on request
    assert len(dropped) == 9  # every bad entry has exactly one row, each with a reason
    success = ds.success_record(str(out))
    assert success["totals"]["kept_rows"] == 4 and success["totals"]["dropped_rows"] == 9 and success["excluded"] == 1
    assert success["totals"]["drop_reasons"]["empty"] == 2

    # ids are stable: a second ingest into another directory gives the same ids for the same files
    again = by_path(rows(ingest(tmp_path, [messy_dir], name="again", exclude=[".git", "node_cache"])))
    assert {path: row["id"] for path, row in again.items()} == {path: row["id"] for path, row in kept.items()}
    assert len({row["id"] for row in kept.values()}) == 4


def test_follow_symlinks_detects_loops(tmp_path, messy_dir):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "lib.rs").write_text("fn f() {}\n")
    os.symlink(tmp_path / "elsewhere", messy_dir / "linked")
    out = ingest(tmp_path, [messy_dir], follow_symlinks=True, exclude=[".git", "node_cache", "huge.py"])
    kept, dropped = by_path(rows(out)), by_path(rows(out, dropped=True))
    assert kept["linked/lib.rs"]["language"] == "rust"  # a link to another directory is followed
    assert dropped["pkg/sub/up"]["drop_reason"].startswith("symlink_loop: pkg/sub/up -> ..")


def test_include_patterns_and_shards(tmp_path):
    root = tmp_path / "many"
    root.mkdir()
    for number in range(7):
        (root / f"m{number}.py").write_text(f"X = {number}\n")
    (root / "notes.txt").write_text("not code\n")
    out = ingest(tmp_path, [root], include=["*.py"], shard_rows=3)
    assert ds.finished_parts(str(out)) == [0, 1, 2]
    assert [row["path"] for row in rows(out)] == [f"m{n}.py" for n in range(7)]  # plan order: sorted by path
    assert [ds.read_part(str(out), i).num_rows for i in range(3)] == [3, 3, 1]


def test_missing_and_unknown_inputs(tmp_path):
    with pytest.raises(CurateConfigError, match="does not exist"):
        plan_ingest([str(tmp_path / "nope")], IngestOptions())
    (tmp_path / "single.py").write_text("x = 1\n")
    with pytest.raises(CurateConfigError, match="not a .jsonl or .parquet dump"):
        plan_ingest([str(tmp_path / "single.py")], IngestOptions())
    with pytest.raises(ConfigError, match=r"unknown config key 'ingest.max_file_byte' \(did you mean 'ingest.max_file_bytes'"):
        check_options("ingest", {"max_file_byte": 3})
    with pytest.raises(ConfigError, match=r"config key 'ingest.inputs': expected a list of any values, got 'x'"):
        check_options("ingest", {"inputs": "x"})
    with pytest.raises(CurateConfigError, match="no inputs"):
        plan_ingest([], IngestOptions())


# ------------------------------------------------------------------------------------------ git repositories
def make_repo(path):
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    (path / "lib.py").write_text("def lib():\n    return 'committed'\n")
    (path / "docs").mkdir()
    (path / "docs" / "guide.md").write_text("# guide\n")
    (path / "big.json").write_text("[" + "1," * 600 + "1]\n")
    os.symlink("lib.py", path / "link.py")
    git(path, "add", ".")
    git(path, "commit", "-q", "-m", "first")
    (path / "lib.py").write_text("def lib():\n    return 'edited, not committed'\n")  # worktree change: ignored
    (path / "untracked.py").write_text("x = 1\n")  # not tracked: ignored
    return path


def test_git_repository_reads_head(tmp_path):
    repo = make_repo(tmp_path / "gitrepo")
    out = ingest(tmp_path, [repo], max_file_bytes=1000)
    kept, dropped = by_path(rows(out)), by_path(rows(out, dropped=True))
    assert set(kept) == {"lib.py", "docs/guide.md"}
    assert kept["lib.py"]["text"] == "def lib():\n    return 'committed'\n"
    assert dropped["link.py"]["drop_reason"].startswith("symlink:")
    assert dropped["big.json"]["drop_reason"].startswith("oversize: 1204 bytes")
    assert "untracked.py" not in kept and "untracked.py" not in dropped


def test_broken_git_repository_and_nested_repositories(tmp_path):
    holder = tmp_path / "holder"
    make_repo(holder / "inner")
    (holder / "top.py").write_text("TOP = 1\n")
    broken = tmp_path / "broken"
    (broken / ".git").mkdir(parents=True)
    (broken / ".git" / "HEAD").write_text("garbage\n")
    (broken / "file.py").write_text("x = 1\n")
    out = ingest(tmp_path, [holder, broken])
    kept, dropped = rows(out), rows(out, dropped=True)
    assert {(row["repo"], row["path"]) for row in kept} == {
        ("holder", "top.py"), ("holder/inner", "lib.py"), ("holder/inner", "docs/guide.md"),
        ("holder/inner", "big.json")}
    failures = [row for row in dropped if row["repo"] == "broken"]
    assert len(failures) == 1 and failures[0]["drop_reason"].startswith("broken_git_repository: ")
    assert str(broken) in failures[0]["drop_reason"]


# ------------------------------------------------------------------------------------------ dumps
def test_jsonl_dump_with_malformed_lines(tmp_path):
    dump = tmp_path / "dump.jsonl"
    lines = [
        json.dumps({"text": "def ok():\n    pass\n", "repo": "o/r", "path": "ok.py", "language": "Python"}),
        "{not json",
        json.dumps([1, 2, 3]),
        json.dumps({"repo": "o/r", "path": "no_text.py"}),
        json.dumps({"text": 42, "path": "int.py"}),
        "",
        json.dumps({"content": "fn main() {}\n", "max_stars_repo_name": "a/b", "max_stars_repo_path": "src/main.rs"}),
        '{"text": "bad \\ud800 surrogate", "path": "s.py"}',
        json.dumps({"text": "", "path": "empty.py"}),
        json.dumps({"text": "x\u0000y", "path": "nul.py"}),
    ]
    dump.write_text("\n".join(lines) + "\n")
    out = ingest(tmp_path, [dump], shard_rows=4)
    kept, dropped = rows(out), rows(out, dropped=True)
    assert [(row["repo"], row["path"], row["language"]) for row in kept] == [("o/r", "ok.py", "python"),
                                                                            ("a/b", "src/main.rs", "rust")]
    reasons = [row["drop_reason"] for row in dropped]
    assert reasons[0].startswith(f"malformed_record: {dump}:2: ")
    assert reasons[1] == f"malformed_record: {dump}:3: a list, not an object"
    assert reasons[2] == f"malformed_record: {dump}:4: no text or content field"
    assert reasons[3] == f"malformed_record: {dump}:5: the text is a int, not a string"
    assert reasons[4].startswith(f"not_utf8: {dump}:8: surrogates not allowed")
    assert reasons[5] == "empty: 0 bytes" and reasons[6] == "binary: NUL byte at offset 1"
    assert len(dropped) == 7 and len(ds.finished_parts(str(out))) == 3  # chunks of 4 lines


def test_parquet_dumps(tmp_path):
    good = tmp_path / "good.parquet"
    pq.write_table(pa.table({"content": ["int main() { return 0; }\n", "\x00"], "path": ["m.c", "z.c"],
                             "lang": ["C", "C"]}), good, row_group_size=1)
    no_text = tmp_path / "no_text.parquet"
    pq.write_table(pa.table({"body": ["x"]}), no_text)
    corrupt = tmp_path / "corrupt.parquet"
    corrupt.write_bytes(b"PAR1 this is not parquet")
    out = ingest(tmp_path, [good, no_text, str(corrupt)])
    kept, dropped = rows(out), rows(out, dropped=True)
    assert [(row["path"], row["language"]) for row in kept] == [("m.c", "c")]
    reasons = [row["drop_reason"] for row in dropped]
    assert reasons[0] == "binary: NUL byte at offset 0"
    assert reasons[1] == f"malformed_record: {no_text}:row 0: no text or content field"
    assert reasons[2].startswith(f"malformed_dump: {corrupt}: not a readable Parquet file")
