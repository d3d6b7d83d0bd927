"""Commit samples (seedcoder.curate.commits, reading git through curate.git_history) on small git repositories built
here with the git CLI."""

import hashlib
import os
import subprocess
from collections import Counter

import numpy as np
import pytest
from rank_bm25 import BM25Okapi

from seedcoder.curate.commits import SKIP_REASONS, SnapshotBM25, commit_samples, render_tree
from seedcoder.curate.errors import CurateInputError

PARSER_V1 = '''"""Parse key = value config files."""


def parse_config(text):
    values = {}
    for line in text.splitlines():
        key, _, value = line.partition("=")
        values[key.strip()] = value.strip()
    return values
'''
PARSER_V2 = PARSER_V1.replace(
    "    for line in text.splitlines():\n",
    "    for line in text.splitlines():\n        if not line.strip():  # empty config lines\n            continue\n",
)
NETWORK = '''import socket


def open_connection(host, port):
    return socket.create_connection((host, port), timeout=5)
'''
STORAGE = '''import sqlite3


def open_database(path):
    return sqlite3.connect(path)
'''


class Repo:
    """A git repository in a temporary folder; commits get fixed, increasing dates, so shas are reproducible."""

    def __init__(self, path):
        self.path = path
        self.clock = 0
        path.mkdir(parents=True, exist_ok=True)
        self.git("init", "-q", "-b", "main")

    def git(self, *args, stdin=None):
        self.clock += 1
        date = f"2024-01-01T00:{self.clock // 60:02d}:{self.clock % 60:02d}+0000"
        env = {key: value for key, value in os.environ.items() if not key.startswith("GIT_")}
        env.update(GIT_CONFIG_GLOBAL=os.devnull, GIT_CONFIG_NOSYSTEM="1", GIT_AUTHOR_DATE=date, GIT_COMMITTER_DATE=date)
        result = subprocess.run(["git", "-c", "user.name=Test", "-c", "user.email=test@example.com",
                                 "-c", "commit.gpgsign=false", *args], cwd=self.path, env=env, input=stdin,
                                capture_output=True, check=True)
        return result.stdout.decode().strip()

    def write(self, relative, content):
        target = self.path / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content if isinstance(content, bytes) else content.encode())

    def commit(self, message, files=None, *extra):
        for relative, content in (files or {}).items():
            if content is None:
                (self.path / relative).unlink()
            else:
                self.write(relative, content)
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message, *extra)
        return self.git("rev-parse", "HEAD")


def samples(git_repo, **options):
    skipped = []
    rows = list(commit_samples(str(git_repo.path), on_skip=skipped.append, **options))
    return rows, skipped


@pytest.fixture
def project(tmp_path):
    """Root commit with three modules and a README; then a parser fix whose message talks about the parser."""
    repo = Repo(tmp_path / "project")
    root = repo.commit("Initial import", {"README.md": "# project\nOld readme text.\n", "pkg/parser.py": PARSER_V1,
                                          "pkg/network.py": NETWORK, "pkg/storage.py": STORAGE})
    fix = repo.commit("Skip empty lines when parsing config files",
                      {"pkg/parser.py": PARSER_V2, "README.md": "# project\nNew readme text.\n"})
    return repo, root, fix


def test_root_and_child_commit_samples(project):
    repo, root, fix = project
    rows, skipped = samples(repo, repo="owner/project")
    assert skipped == []
    assert [row["commit_sha"] for row in rows] == [root, fix]  # oldest first
    for row in rows:
        assert row["id"] == hashlib.sha256(f"owner/project\n{row['commit_sha']}".encode()).hexdigest()
        assert (row["repo"], row["path"], row["language"], row["source"]) == ("owner/project", row["commit_sha"],
                                                                               "commit", "commit")
        assert row["text"].startswith("<repository> owner/project\n<commit_message>\n")
        assert row["text"][row["target_start"]:].startswith("<changed_paths>\n")

    first = rows[0]["text"]  # root commit: empty snapshot, every file added
    assert "<tree>\n(empty)\n<changed_paths>\n" in first
    assert "<readme>" not in first and "<file>" not in first
    assert sorted(rows[0]["changed_paths"]) == ["README.md", "pkg/network.py", "pkg/parser.py", "pkg/storage.py"]
    assert "A pkg/parser.py\n" in first and "<diff> A pkg/parser.py\n@@ -0,0 +1,9 @@\n+" in first

    second = rows[1]
    text = second["text"]
    assert second["message"] == "Skip empty lines when parsing config files"
    assert sorted(second["changed_paths"]) == ["README.md", "pkg/parser.py"]
    context, target = text[: second["target_start"]], text[second["target_start"]:]
    # context is the parent snapshot: the old README, the tree, and the parser first among the BM25 picks
    assert "<readme> README.md\n# project\nOld readme text.\n" in context and "New readme" not in context
    assert "<tree>\nREADME.md\npkg/\n  network.py\n  parser.py\n  storage.py\n" in context
    picks = [line[len("<file> "):] for line in context.splitlines() if line.startswith("<file> ")]
    assert picks[0] == "pkg/parser.py"
    assert "if not line.strip()" not in context  # the pre-commit version of the file
    assert "<changed_paths>\nM README.md\nM pkg/parser.py\n" in target
    assert "+        if not line.strip():  # empty config lines\n" in target
    assert "+New readme text.\n" in target and "-Old readme text.\n" in target
    assert "index " not in target and "--- a/" not in target  # git's header lines are dropped


def test_bm25_picks_the_file_the_message_is_about(project):
    repo, _, _ = project
    network_fix = repo.commit("Raise the socket connection timeout for slow hosts",
                              {"pkg/network.py": NETWORK.replace("timeout=5", "timeout=30")})
    storage_fix = repo.commit("Open the sqlite database read-only",
                              {"pkg/storage.py": STORAGE.replace("connect(path)", 'connect(f"file:{path}?mode=ro")')})
    rows, _ = samples(repo, context_files=1)
    by_sha = {row["commit_sha"]: row["text"] for row in rows}
    assert "<file> pkg/network.py\n" in by_sha[network_fix] and by_sha[network_fix].count("<file> ") == 1
    assert "<file> pkg/storage.py\n" in by_sha[storage_fix] and by_sha[storage_fix].count("<file> ") == 1
    rows, _ = samples(repo, context_files=0)
    assert all("<file> " not in row["text"] for row in rows)


def test_incremental_bm25_scores_equal_rank_bm25():
    rng = np.random.default_rng(0)
    vocabulary = [f"w{index}" for index in range(40)]
    index = SnapshotBM25()
    documents = {}
    for round_number in range(6):  # documents come and go as files do from one commit to the next
        for key in list(documents):
            if rng.random() < 0.3:
                del documents[key]
        for number in range(int(rng.integers(3, 12))):
            # a Zipf-like pick: the common words sit in most documents, so some idf values are negative (floored)
            words = [vocabulary[min(int(rng.zipf(1.5)) - 1, 39)] for _ in range(int(rng.integers(1, 60)))]
            documents[f"doc{round_number}-{number}"] = words
        index.update({key: (dict(Counter(words)), len(words)) for key, words in documents.items()})
        keys = sorted(documents)
        reference = BM25Okapi([documents[key] for key in keys])
        for query in (["w0"], ["w0", "w1", "w7", "w30", "absent"], vocabulary[:10]):
            np.testing.assert_allclose(index.scores(keys, query), reference.get_scores(query), rtol=1e-9, atol=1e-12)
    assert sum("w0" in words for words in documents.values()) > len(documents) / 2  # w0's idf was floored
    assert np.all(SnapshotBM25().scores([], ["w0"]) == np.zeros(0))


def test_merge_commits_are_skipped(tmp_path):
    repo = Repo(tmp_path / "merges")
    base = repo.commit("base", {"a.py": "A = 1\n"})
    repo.git("checkout", "-q", "-b", "feature")
    feature = repo.commit("feature work", {"b.py": "B = 2\n"})
    repo.git("checkout", "-q", "main")
    main = repo.commit("main work", {"a.py": "A = 3\n"})
    repo.git("merge", "-q", "--no-ff", "-m", "Merge branch feature", "feature")
    merge = repo.git("rev-parse", "HEAD")
    after = repo.commit("after the merge", {"a.py": "A = 4\n"})
    rows, skipped = samples(repo)
    shas = [row["commit_sha"] for row in rows]
    assert merge not in shas and skipped == []
    assert sorted(shas) == sorted([base, feature, main, after])
    assert shas[0] == base and shas[-1] == after  # parents before children


def test_renames_deletions_binary_typechange_and_non_utf8(tmp_path):
    repo = Repo(tmp_path / "changes")
    body = "".join(f"line {number}\n" for number in range(20))
    repo.commit("start", {"old_name.py": body, "gone.py": "x = 1\n" * 50, "logo.png": b"\x89PNG\0\0\x01",
                          "link_me.txt": "text\n", "latin.txt": "caf\xe9\n".encode("latin-1")})
    (repo.path / "old_name.py").rename(repo.path / "new_name.py")
    (repo.path / "link_me.txt").unlink()
    os.symlink("new_name.py", repo.path / "link_me.txt")
    sha = repo.commit("Rename the module, drop gone.py, new logo", {
        "new_name.py": body + "line 20\n", "gone.py": None, "logo.png": b"\x89PNG\0\0\x02",
        "latin.txt": "caf\xe9 au lait\n".encode("latin-1")})
    rows, skipped = samples(repo)
    assert skipped == []
    row = next(row for row in rows if row["commit_sha"] == sha)
    target = row["text"][row["target_start"]:]
    assert "R old_name.py -> new_name.py\n" in target and "D gone.py\n" in target and "T link_me.txt\n" in target
    assert "<diff> R old_name.py -> new_name.py\n@@ " in target and "+line 20\n" in target
    assert "<diff> D gone.py\n<diff>" in target or target.endswith("<diff> D gone.py\n")  # deletions: no hunks
    assert "x = 1" not in target
    assert "<diff> M logo.png\n(binary file, diff omitted)\n" in target
    assert "<diff> M latin.txt\n(not UTF-8, diff omitted)\n" in target
    assert "+new_name.py\n" in target  # the symlink's target, from the second chunk of the type change
    assert sorted(row["changed_paths"]) == ["gone.py", "latin.txt", "link_me.txt", "logo.png", "new_name.py"]

    repo.write("new_name.py", body + "line 21\n")
    repo.git("add", "new_name.py")
    repo.git("update-index", "--add", "--cacheinfo", f"160000,{sha},vendor/lib")  # a submodule (gitlink)
    repo.git("commit", "-q", "-m", "vendor lib as a submodule")
    with_submodule = repo.git("rev-parse", "HEAD")
    binary_only = repo.commit("new logo again", {"logo.png": b"\x89PNG\0\0\x03"})
    rows, skipped = samples(repo)
    submodule_row = next(row for row in rows if row["commit_sha"] == with_submodule)
    assert "<diff> A vendor/lib\n(submodule, diff omitted)\n" in submodule_row["text"]
    assert binary_only not in [row["commit_sha"] for row in rows]
    assert [(entry["commit_sha"], entry["drop_reason"].split(":")[0]) for entry in skipped] == [
        (binary_only, "no_text_diff")]
    # `git add -A` also removed the gitlink (it has no folder): a binary change and a submodule change, no text
    assert skipped[0]["text"] == "" and skipped[0]["changed_paths"] == ["logo.png", "vendor/lib"]


def test_limits_skip_with_a_counted_reason(tmp_path):
    repo = Repo(tmp_path / "limits")
    start = repo.commit("start", {"a.py": "A = 1\n", "README.md": "# limits\n" + "Some words.\n" * 300})
    big = repo.commit("a big generated table", {"table.py": "".join(f"T{n} = {n}\n" for n in range(20_000))})
    many = repo.commit("touch many files", {f"m{n}.py": f"M = {n}\n" for n in range(6)})
    huge_message = repo.commit("long message\n\n" + "words " * 3000, {"a.py": "A = 2\n"})
    repo.commit("", {"a.py": "A = 3\n"}, "--allow-empty-message")
    repo.commit("nothing changed", None, "--allow-empty")
    medium = repo.commit("medium change", {"b.py": "# note\n" * 40})  # 280 bytes of diff
    fits = repo.commit("change a", {"a.py": "A = 4\n"})
    rows, skipped = samples(repo, max_diff_bytes=10_000, max_sample_bytes=3_000, max_changed_files=5)
    reasons = {entry["commit_sha"]: entry["drop_reason"] for entry in skipped}
    assert reasons[big].startswith("diff_too_large: ")
    assert reasons[many] == "too_many_files: 6 changed files > max_changed_files=5"
    assert reasons[huge_message].startswith("sample_too_large: ")
    assert reasons[start].startswith("sample_too_large: ")  # its diff adds the 3.6 kB README
    codes = sorted(reason.split(":")[0] for reason in reasons.values())
    assert codes == sorted(["diff_too_large", "too_many_files", "sample_too_large", "sample_too_large",
                            "empty_message", "empty_commit"])
    assert set(codes) <= set(SKIP_REASONS)
    kept = {row["commit_sha"]: row for row in rows}
    assert fits in kept and medium in kept and len(rows) + len(skipped) == 8
    for row in rows:
        assert len(row["text"].encode()) <= 3_000
    # the 3.6 kB README does not fit next to the tree and target: left out whole, the tree stays
    assert "<readme>" not in kept[fits]["text"] and "<tree>\nREADME.md\na.py\n" in kept[fits]["text"]
    rows, _ = samples(repo, max_diff_bytes=10_000, max_sample_bytes=100_000, max_changed_files=5)
    assert "<readme> README.md\n# limits\n" in next(row["text"] for row in rows if row["commit_sha"] == fits)
    # the rendered diff itself (not just git's patch) is held to max_diff_bytes
    rows, skipped = samples(repo, max_diff_bytes=200, max_changed_files=5)
    reasons = {entry["commit_sha"]: entry["drop_reason"] for entry in skipped}
    rendered = len("<diff> A b.py\n@@ -0,0 +1,40 @@\n" + "+# note\n" * 40)
    assert reasons[medium] == f"diff_too_large: {rendered} bytes > max_diff_bytes=200"
    assert fits in [row["commit_sha"] for row in rows]


def test_output_is_deterministic_and_max_commits_keeps_the_newest(project):
    repo, _, _ = project
    for number in range(3):
        repo.commit(f"tune parser step {number}", {"pkg/parser.py": PARSER_V2 + f"# step {number}\n"})
    rows, _ = samples(repo)
    again, _ = samples(repo)
    assert rows == again and len(rows) == 5
    newest, _ = samples(repo, max_commits=2)
    assert newest == rows[-2:]
    assert samples(repo, max_commits=0)[0] == []
    assert rows[0]["repo"] == "project"  # default name: the folder's


def test_commit_message_in_another_encoding(tmp_path):
    repo = Repo(tmp_path / "latin")
    repo.write("a.py", "A = 1\n")
    repo.git("add", "-A")
    repo.git("-c", "i18n.commitEncoding=ISO-8859-1", "commit", "-q", "-F", "-", stdin="Caf\xe9 fix\n".encode("latin-1"))
    rows, _ = samples(repo)
    assert rows[0]["message"] == "Caf\xe9 fix"


def test_render_tree_nests_and_cuts():
    paths = ["README.md", "pkg/__init__.py", "pkg/sub/deep.py", "pkg/z.py", "tests/test_a.py"]
    assert render_tree(paths) == ("README.md\npkg/\n  __init__.py\n  sub/\n    deep.py\n  z.py\ntests/\n"
                                  "  test_a.py\n")
    assert render_tree(paths, max_bytes=30) == "README.md\npkg/\n  __init__.py\n(... 3 more entries)\n"
    assert render_tree([]) == "(empty)\n"


def test_broken_repositories_raise_curate_input_errors(tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(CurateInputError, match=f"{plain}.*not a git repository"):
        list(commit_samples(str(plain)))
    with pytest.raises(CurateInputError, match="missing.*not a directory"):
        list(commit_samples(str(tmp_path / "missing")))

    empty = Repo(tmp_path / "empty")
    with pytest.raises(CurateInputError, match="HEAD names no commit"):
        list(commit_samples(str(empty.path)))

    inner = Repo(tmp_path / "outer")
    inner.commit("one", {"sub/a.py": "A = 1\n"})
    with pytest.raises(CurateInputError, match="inside the one at"):
        list(commit_samples(str(inner.path / "sub")))

    corrupt = Repo(tmp_path / "corrupt")
    corrupt.commit("one", {"a.py": "A = 1\n"})
    corrupt.commit("two", {"a.py": "A = 2\n", "b.py": "B = 2\n"})
    blob = corrupt.git("rev-parse", "HEAD~1:a.py")  # the first version of a.py
    os.chmod(corrupt.path / ".git" / "objects" / blob[:2] / blob[2:], 0o644)
    (corrupt.path / ".git" / "objects" / blob[:2] / blob[2:]).unlink()
    with pytest.raises(CurateInputError, match=f"{corrupt.path}.*{blob}"):
        list(commit_samples(str(corrupt.path)))


def test_bad_options_are_rejected(project):
    repo, _, _ = project
    with pytest.raises(ValueError, match="max_diff_bytes"):
        list(commit_samples(str(repo.path), max_diff_bytes=0))
    with pytest.raises(ValueError, match="context_files"):
        list(commit_samples(str(repo.path), context_files=-1))
