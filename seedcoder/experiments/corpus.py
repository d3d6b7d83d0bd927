"""The ablation's corpus: files with real quality spread, sampled offline from what this machine has installed.

    manifest = build_corpus(CorpusSection(max_bytes=4 << 20), "runs/ablation/corpus")
    manifest["splits"]["train"]["files"], manifest["train"]        # counts; the training files' directory

Sources: the `roots` (default: this interpreter's standard library and its site-packages, the installed
packages of many projects). That mix holds what a real crawl holds: well-written library code, tests, vendored
copies of other projects (`pip/_vendor`, ...), generated protobuf modules (`*_pb2.py`), data tables written as
code (`encodings/cp1252.py`, `idna/uts46data.py`, large literal dicts), machine-written or minified files,
headers, stubs and data files (by `extensions`).

Sampling, deterministic for a given machine and `seed`: every file under the roots with one of the `extensions`
and a size in [min_file_bytes, max_file_bytes] is a candidate (directories named in `exclude_dirs` are not
entered below a root: __pycache__, a nested site-packages, ...). Files are grouped by project (the root's label
and the first path component under it: `stdlib/json`, `site-packages/numpy`); each project contributes at most
`max_files_per_project` files (a seeded draw), so that a few huge projects do not make up the corpus; the
candidates left are shuffled (seeded) and taken in that order until `max_bytes` or `max_files` is reached.
Files that are not UTF-8, are binary or are blank are skipped (and counted).

Every taken file is checked against HumanEval (word 10-grams, `seedcoder.curate.decontaminate.Decontaminator`,
the curation step's own matcher); a match is left out of both splits and listed in the manifest. The held-out
split is a deterministic function of the path alone: a file is held out when the first 8 bytes of
SHA-256("heldout:" + path) as a fraction of 2^64 are below `heldout_fraction`, so a held-out file is never in
the training dump whatever the seed or budget.

Outputs in the out_dir, each written atomically:
  train/         the training files as a directory tree, each at its corpus path (root label + relative path:
                 `train/site-packages/numpy/linalg/_linalg.py`): what the curation's ingest step reads (input kind
                 "dir", repository "corpus"), so a row's id is a function of the corpus path alone, not of where
                 the experiment's folder is (a jsonl dump's row ids include the dump's absolute path);
  heldout.jsonl  the held-out files, one record per file (text, repo = the project, path, kind), sorted by path;
  files.jsonl    every sampled file without its text: path, project, kind, bytes, split;
  manifest.json  written last: the settings, the counts per split, kind and root, the HumanEval matches, and the
                 SHA-256 of heldout.jsonl, files.jsonl and the train/ tree. A rerun with the same settings whose
                 outputs are intact does nothing.

`kind` labels each file for the report (what each arm dropped): pb2 (generated protobuf), minified (very long
lines), data_table (Python whose lines are mostly literals), generated (a generated-file marker in its head),
data_file (JSON/CSV/text/markdown...), test, vendored, other_language (C, headers, JS, ...), library (the rest
of the Python). The filters never see it.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import shutil
import sys
import sysconfig
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from seedcoder.config import ConfigError, option
from seedcoder.curate.decontaminate import DEFAULT_NGRAM, Decontaminator
from seedcoder.curate.languages import language_of
from seedcoder.fileio import atomic_write, atomic_write_text
from seedcoder.progress import progress

CORPUS_FORMAT = "seedcoder-ablation-corpus"
CORPUS_VERSION = 1
TRAIN_DIR = "train"
HELDOUT_FILE = "heldout.jsonl"
FILES_FILE = "files.jsonl"
MANIFEST_FILE = "manifest.json"
KINDS = ("pb2", "minified", "data_table", "generated", "data_file", "test", "vendored", "other_language", "library")
DATA_LANGUAGES = frozenset({"json", "yaml", "toml", "xml", "ini", "csv", "text", "markdown", "restructuredtext",
                            "unknown"})
VENDOR_DIRS = frozenset({"_vendor", "vendor", "vendored", "_vendored", "third_party", "_third_party", "extern",
                         "_extern", "externals"})
TEST_DIRS = frozenset({"test", "tests", "testing", "_tests", "unittests", "idle_test"})
_GENERATED = re.compile(r"do not edit|auto[- ]?generated|automatically generated|machine[- ]generated|@generated|"
                        r"generated (?:by|from|with) ", re.IGNORECASE)
_STRING = re.compile(r"[rbuRBU]{0,2}(?:'(?:[^'\\\n]|\\.)*'|\"(?:[^\"\\\n]|\\.)*\")")
_LITERAL_LINE = re.compile(r"^[\s\[\](){},:.+\-*0-9a-fA-FxXjJeE_]*$")


def default_roots() -> dict[str, str]:
    """The placeholders `roots` may use: {stdlib} (this interpreter's standard library) and {site_packages} (the
    installed packages of the environment that runs this)."""
    paths = sysconfig.get_paths()
    return {"stdlib": paths["stdlib"], "site_packages": paths["purelib"]}


@dataclass
class CorpusSection:
    """[corpus]: what the experiment's corpus is sampled from, and how much of it."""

    roots: list[str] = option(["{stdlib}", "{site_packages}"], "directories to sample from ({stdlib}: this "
                              "interpreter's standard library, {site_packages}: its installed packages)")
    extensions: list[str] = option([".py", ".pyi", ".h", ".c", ".js", ".json", ".txt", ".md"],
                                   "file name endings taken (lower case)")
    exclude_dirs: list[str] = option(["__pycache__", "site-packages", "dist-packages", ".git", "*.dist-info",
                                      "*.egg-info"], "directory names (globs) not entered below a root")
    max_bytes: int = option(8 << 20, "size budget of the sampled corpus (train + held-out), in bytes")
    max_files: int = option(5000, "at most this many files (train + held-out)")
    min_file_bytes: int = option(200, "smaller files are not candidates")
    max_file_bytes: int = option(256 << 10, "larger files are not candidates")
    max_files_per_project: int = option(40, "files drawn per project (root label + first path component) at most")
    heldout_fraction: float = option(0.05, "share of files held out by path hash (never trained on)")
    seed: int = option(0, "the sampling seed")
    decontaminate_ngram: int = option(DEFAULT_NGRAM, "word n-gram length of the HumanEval check")

    def __post_init__(self) -> None:
        if not self.roots:
            raise ValueError("roots: at least one directory")
        if not self.extensions or not all(isinstance(e, str) and e.startswith(".") for e in self.extensions):
            raise ValueError(f"extensions: a list of endings such as \".py\", got {self.extensions!r}")
        for name in ("max_bytes", "max_files", "max_file_bytes", "max_files_per_project", "decontaminate_ngram"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.min_file_bytes < 1 or self.min_file_bytes > self.max_file_bytes:
            raise ValueError(f"min_file_bytes: must be in 1..max_file_bytes ({self.max_file_bytes}), "
                             f"got {self.min_file_bytes}")
        if not 0.0 < self.heldout_fraction < 1.0:
            raise ValueError(f"heldout_fraction: must be in (0, 1), got {self.heldout_fraction}")


# ------------------------------------------------------------------------------------------ labels and split
def is_heldout(path: str, fraction: float) -> bool:
    """Whether `path` (the corpus path: root label + relative path) is in the held-out split: a function of the path
    alone (module docstring)."""
    digest = hashlib.sha256(("heldout:" + path).encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64 < fraction


def _data_line_share(text: str) -> tuple[float, int]:
    """(share of non-blank, non-comment lines made only of literals and punctuation, number of such lines)."""
    lines = data = 0
    for line in text.splitlines():
        stripped = _STRING.sub("0", line).split("#", 1)[0].strip()
        if not stripped:
            continue
        lines += 1
        if _LITERAL_LINE.match(stripped) or stripped.endswith(("= {", "= [", "= (")) and len(stripped) < 40:
            data += 1
    return (data / lines if lines else 0.0), lines


def file_kind(path: str, text: str) -> str:
    """The file's label for the report (module docstring); `path` is the corpus path."""
    name = os.path.basename(path).lower()
    parts = [part.lower() for part in path.split("/")[1:-1]]
    language = language_of(path, text[:4096])
    if name.endswith(("_pb2.py", "_pb2_grpc.py", "_pb2.pyi")):
        return "pb2"
    lines = text.splitlines() or [""]
    longest = max(len(line) for line in lines)
    if longest > 1000 and len(text) / len(lines) > 200:
        return "minified"
    if language == "python":
        share, count = _data_line_share(text)
        if count >= 30 and share >= 0.6:
            return "data_table"
    if _GENERATED.search(text[:2000]):
        return "generated"
    if language in DATA_LANGUAGES:
        return "data_file"
    if any(part in TEST_DIRS for part in parts) or name.startswith("test_") or name.endswith("_test.py") or \
            name == "conftest.py":
        return "test"
    if any(part in VENDOR_DIRS for part in parts):
        return "vendored"
    if language != "python":
        return "other_language"
    return "library"


# ------------------------------------------------------------------------------------------ candidates
@dataclass(frozen=True)
class Candidate:
    path: str  # the corpus path: root label + "/" + relative path
    absolute: str
    project: str
    size: int


def _root_labels(roots: Sequence[str]) -> list[tuple[str, str]]:
    """[(label, absolute directory)]: {stdlib} -> "stdlib", {site_packages} -> "site-packages", else the basename."""
    variables = default_roots()
    labelled, seen = [], Counter()
    for root in roots:
        label, directory = None, root
        for name, value in variables.items():
            if root == "{" + name + "}":
                label, directory = name.replace("_", "-"), value
        for name, value in variables.items():
            directory = directory.replace("{" + name + "}", value)
        directory = os.path.abspath(os.path.expanduser(directory))
        if not os.path.isdir(directory):
            raise ConfigError(f"config key 'corpus.roots': {root!r} is not a directory ({directory})")
        label = label or os.path.basename(os.path.normpath(directory)) or "root"
        seen[label] += 1
        labelled.append((label if seen[label] == 1 else f"{label}~{seen[label]}", directory))
    return labelled


def candidates(cfg: CorpusSection) -> Iterator[Candidate]:
    """Every candidate file under the roots, in sorted walk order (directory symlinks are not followed)."""
    extensions = tuple(extension.lower() for extension in cfg.extensions)
    for label, directory in _root_labels(cfg.roots):
        for folder, dirs, names in os.walk(directory):
            dirs[:] = sorted(d for d in dirs if not any(fnmatch.fnmatch(d, pattern) for pattern in cfg.exclude_dirs))
            for name in sorted(names):
                if not name.lower().endswith(extensions):
                    continue
                absolute = os.path.join(folder, name)
                try:
                    if os.path.islink(absolute) or not os.path.isfile(absolute):
                        continue
                    size = os.path.getsize(absolute)
                except OSError:
                    continue
                if not cfg.min_file_bytes <= size <= cfg.max_file_bytes:
                    continue
                relative = os.path.relpath(absolute, directory).replace(os.sep, "/")
                top = relative.split("/", 1)[0]
                project = f"{label}/{top.rsplit('.', 1)[0] if '/' not in relative else top}"
                yield Candidate(f"{label}/{relative}", absolute, project, size)


def sample_candidates(found: Sequence[Candidate], cfg: CorpusSection) -> list[Candidate]:
    """At most max_files_per_project per project (seeded), then a seeded shuffle: the order files are taken in."""
    rng = np.random.default_rng([cfg.seed, 0x5EED])
    by_project: dict[str, list[Candidate]] = {}
    for candidate in found:
        by_project.setdefault(candidate.project, []).append(candidate)
    pool: list[Candidate] = []
    for project in sorted(by_project):
        files = by_project[project]
        if len(files) > cfg.max_files_per_project:
            chosen = rng.choice(len(files), size=cfg.max_files_per_project, replace=False)
            files = [files[i] for i in sorted(chosen.tolist())]
        pool.extend(files)
    order = rng.permutation(len(pool))
    return [pool[i] for i in order.tolist()]


def _read_text(path: str) -> tuple[str | None, str | None]:
    """(text, None) or (None, why it is skipped)."""
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as error:
        return None, f"unreadable: {error.strerror}"
    if b"\x00" in data:
        return None, "binary"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None, "not_utf8"
    if not text.strip():
        return None, "blank"
    return text, None


# ------------------------------------------------------------------------------------------ the build
def corpus_settings(cfg: CorpusSection) -> dict[str, Any]:
    """What the corpus is a function of: the section, the resolved roots, the interpreter."""
    return {"corpus": asdict(cfg), "roots": [list(pair) for pair in _root_labels(cfg.roots)],
            "python": sys.version.split()[0]}


def read_manifest(out_dir: str) -> dict[str, Any] | None:
    path = os.path.join(out_dir, MANIFEST_FILE)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as file:
        return json.load(file)


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_jsonl(path: str, records: Sequence[Mapping[str, Any]]) -> None:
    def body(file) -> None:
        for record in records:
            file.write((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))

    atomic_write(path, body)


def read_records(path: str) -> list[dict[str, Any]]:
    """The records of heldout.jsonl or files.jsonl."""
    with open(path, encoding="utf-8") as file:
        return [json.loads(line) for line in file if line.strip()]


def _write_tree(directory: str, records: Sequence[Mapping[str, Any]]) -> None:
    """Each record's text at directory/<its path>, the directory appearing whole (written beside it, then renamed)."""
    partial = directory + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(partial)
    for record in records:
        target = os.path.join(partial, *record["path"].split("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "w", encoding="utf-8", newline="") as file:
            file.write(record["text"])
    shutil.rmtree(directory, ignore_errors=True)
    os.replace(partial, directory)


def tree_sha256(directory: str) -> str:
    """SHA-256 over the sorted (relative path, SHA-256 of the bytes) of every file under `directory`."""
    entries = []
    for folder, dirs, names in os.walk(directory):
        dirs.sort()
        for name in sorted(names):
            path = os.path.join(folder, name)
            entries.append((os.path.relpath(path, directory).replace(os.sep, "/"), _sha256(path)))
    return hashlib.sha256(json.dumps(sorted(entries)).encode()).hexdigest()


def _intact(out_dir: str, digests: Mapping[str, str]) -> bool:
    for name, digest in digests.items():
        path = os.path.join(out_dir, name)
        actual = (tree_sha256(path) if os.path.isdir(path) else _sha256(path)) if os.path.exists(path) else None
        if actual != digest:
            return False
    return bool(digests)


def build_corpus(cfg: CorpusSection, out_dir: str, *, log=print) -> dict[str, Any]:
    """Sample, check and split the corpus into out_dir (module docstring); returns the manifest. Resumable: a finished
    corpus with the same settings is returned as it is."""
    settings = corpus_settings(cfg)
    previous = read_manifest(out_dir)
    if previous is not None and previous.get("settings") == json.loads(json.dumps(settings)):
        if _intact(out_dir, previous.get("sha256", {})):
            log(f"[corpus] {out_dir} already holds this corpus ({previous['splits']['train']['files']:,} training, "
                f"{previous['splits']['heldout']['files']:,} held-out files); skipped")
            return previous
    started = time.perf_counter()
    os.makedirs(out_dir, exist_ok=True)
    found = list(candidates(cfg))
    if not found:
        raise ConfigError(f"config key 'corpus.roots': no file with one of {cfg.extensions} between "
                          f"{cfg.min_file_bytes} and {cfg.max_file_bytes} bytes under {cfg.roots}")
    projects = len({candidate.project for candidate in found})
    ordered = sample_candidates(found, cfg)
    log(f"[corpus] {len(found):,} candidate files in {projects:,} projects; sampling up to {cfg.max_bytes / 2**20:.1f} "
        f"MiB / {cfg.max_files:,} files (at most {cfg.max_files_per_project} per project, seed {cfg.seed})")
    decontaminator = Decontaminator.from_sources(humaneval=True, ngram=cfg.decontaminate_ngram)
    skipped: Counter = Counter()
    contaminated: list[dict[str, str]] = []
    splits: dict[str, list[dict[str, Any]]] = {"train": [], "heldout": []}
    used_bytes = 0
    with progress(len(ordered), "corpus: sampling", unit="file") as bar:
        for candidate in ordered:
            if used_bytes >= cfg.max_bytes or sum(len(v) for v in splits.values()) >= cfg.max_files:
                break
            bar.update(1)
            if used_bytes + candidate.size > cfg.max_bytes:
                continue  # a smaller file further on may still fit
            text, reason = _read_text(candidate.absolute)
            if text is None:
                skipped[reason.split(":")[0]] += 1
                continue
            hit = decontaminator.match(text)
            if hit is not None:
                contaminated.append({"path": candidate.path, "benchmark_item": hit})
                continue
            used_bytes += len(text.encode("utf-8"))
            record = {"text": text, "repo": candidate.project, "path": candidate.path,
                      "kind": file_kind(candidate.path, text)}
            splits["heldout" if is_heldout(candidate.path, cfg.heldout_fraction) else "train"].append(record)
    if not splits["train"]:
        raise ConfigError("config key 'corpus.max_bytes': the budget took no training file (raise it or the "
                          "file size limits)")
    counts = {}
    for split, records in splits.items():
        records.sort(key=lambda record: record["path"])
        kinds = Counter(record["kind"] for record in records)
        roots = Counter(record["path"].split("/", 1)[0] for record in records)
        counts[split] = {"files": len(records), "bytes": sum(len(r["text"].encode("utf-8")) for r in records),
                         "projects": len({r["repo"] for r in records}),
                         "kinds": {kind: kinds.get(kind, 0) for kind in KINDS}, "roots": dict(sorted(roots.items()))}
    manifest_path = os.path.join(out_dir, MANIFEST_FILE)
    if os.path.exists(manifest_path):
        os.unlink(manifest_path)  # the outputs below change: a kill midway must not leave the old manifest over them
    _write_tree(os.path.join(out_dir, TRAIN_DIR), splits["train"])
    _write_jsonl(os.path.join(out_dir, HELDOUT_FILE), splits["heldout"])
    _write_jsonl(os.path.join(out_dir, FILES_FILE), sorted(
        ({"path": r["path"], "project": r["repo"], "kind": r["kind"], "bytes": len(r["text"].encode("utf-8")),
          "split": split} for split, records in splits.items() for r in records), key=lambda r: r["path"]))
    manifest = {
        "format": CORPUS_FORMAT, "version": CORPUS_VERSION, "settings": settings,
        "candidates": {"files": len(found), "projects": projects},
        "splits": counts, "skipped": dict(sorted(skipped.items())),
        "humaneval_matches": contaminated,
        "train": os.path.abspath(os.path.join(out_dir, TRAIN_DIR)),
        "heldout": os.path.abspath(os.path.join(out_dir, HELDOUT_FILE)),
        "files": os.path.abspath(os.path.join(out_dir, FILES_FILE)),
        "sha256": {TRAIN_DIR: tree_sha256(os.path.join(out_dir, TRAIN_DIR)),
                   HELDOUT_FILE: _sha256(os.path.join(out_dir, HELDOUT_FILE)),
                   FILES_FILE: _sha256(os.path.join(out_dir, FILES_FILE))},
        "seconds": round(time.perf_counter() - started, 2),
    }
    atomic_write_text(manifest_path, json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    train, heldout = counts["train"], counts["heldout"]
    log(f"[corpus] {train['files']:,} training files ({train['bytes'] / 2**20:.2f} MiB, {train['projects']} projects), "
        f"{heldout['files']:,} held out ({heldout['bytes'] / 2**20:.2f} MiB); {len(contaminated)} HumanEval match(es) "
        f"left out; kinds {train['kinds']} in {manifest['seconds']:.1f} s -> {out_dir}")
    return manifest


__all__ = ["CORPUS_FORMAT", "FILES_FILE", "HELDOUT_FILE", "KINDS", "MANIFEST_FILE", "TRAIN_DIR", "Candidate",
           "CorpusSection", "build_corpus", "candidates", "corpus_settings", "default_roots", "file_kind", "is_heldout",
           "read_manifest", "read_records", "sample_candidates", "tree_sha256"]
