"""Source folder -> byte-level BPE tokenizer -> shards -> the training loader: a round trip, resumable builds."""

import json
import os
import subprocess
import sys

import pytest

from seedcoder.data.build import BuildError, build_dataset
from seedcoder.data.loader import ShardLoader
from seedcoder.data.manifest import load_manifest
from seedcoder.data.shard_reader import ShardReader
from seedcoder.data.shards import Language, Source
from seedcoder.data.tokenizer_tables import SPECIAL_TOKENS
from seedcoder.tokenizer import load_tokenizer

FILES = {
    "pkg/core.py": "def add(a, b):\n    return a + b\n\nTOTAL = 12345 + add(6, 7)\n",
    "pkg/util.py": "import os\n\n\nclass Path:\n    def __init__(self, value):\n        self.value = os.fspath(value)\n",
    "pkg/copy_of_core.py": "def add(a, b):\n    return a + b\n\nTOTAL = 12345 + add(6, 7)\n",  # exact duplicate
    "pkg/empty.py": "\n\n",
    "pkg/latin1.py": b"name = '\xe9t\xe9'\n",  # not UTF-8
    "pkg/tests/test_core.py": "from pkg.core import add\n\nassert add(1, 2) == 3\n",  # excluded below
    "README.md": "# not python\n",  # not included
}
for number in range(30):  # enough text for merges to form
    FILES[f"pkg/gen/module_{number:02d}.py"] = (
        f"def function_{number}(values):\n    total = 0\n    for value in values:\n        total += value * {number + 1}\n"
        f"    return total  # {number * 37}\n"
    )


@pytest.fixture
def source(tmp_path):
    root = tmp_path / "src"
    for relative, content in FILES.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return root


def build(source, out, **kwargs):
    settings = {"vocab_size": 400, "exclude": ["*/tests/*"], "shard_bytes": 600, "progress": False, **kwargs}
    return build_dataset(source, out, **settings)


def test_round_trip(source, tmp_path):
    out = tmp_path / "data"
    manifest = build(source, out)
    plan = json.loads((out / "plan.json").read_text())
    assert plan["dropped"] == {"empty": 1, "not_utf8": 1, "too_large": 0, "duplicate": 1, "unreadable": 0}
    kept = [entry["path"] for entry in plan["files"]]
    assert "pkg/tests/test_core.py" not in kept and "README.md" not in kept and "pkg/util.py" in kept
    assert manifest["totals"]["documents"] == len(kept) and manifest["totals"]["shards"] == plan["shards"] > 1

    tokenizer = load_tokenizer(str(out / "tokenizer.json"))
    for index, content in enumerate(SPECIAL_TOKENS.values()):  # bos, eos, pad, fim suffix / prefix / middle
        assert tokenizer.token_to_id(content) == index
    digits = tokenizer.encode("x = 9876543210", add_special_tokens=False).tokens
    assert [token for token in digits if any(c.isdigit() for c in token)] == list("9876543210")  # one digit a token
    assert tokenizer.get_vocab_size() <= 400

    documents = {}
    for shard in manifest["shards"]:
        with ShardReader(out / shard["path"]) as reader:
            for document in reader:
                documents[document.metadata["path"]] = document
    assert sorted(documents) == sorted(kept)
    util = documents["pkg/util.py"]
    assert tokenizer.decode(util.tokens.tolist(), skip_special_tokens=False) == FILES["pkg/util.py"]
    assert util.language == Language.PYTHON and util.source == Source.FILE

    # the training loader reads it, with Seed-Coder's FIM on this tokenizer's special tokens
    with ShardLoader(out, seq_len=64, batch_size=4, fim_rate=1.0, seed=0, threads=1) as loader:
        batch = next(loader)
        assert loader.fim_token_ids == tuple(tokenizer.token_to_id(SPECIAL_TOKENS[k]) for k in
                                             ("fim_suffix", "fim_prefix", "fim_middle"))
        assert loader.eos_id == tokenizer.token_to_id(SPECIAL_TOKENS["eos"])
        assert (batch["input_ids"] == loader.fim_token_ids[0]).any()


def test_rerun_skips_finished_work_and_repairs_an_interrupted_build(source, tmp_path):
    out = tmp_path / "data"
    build(source, out)
    shards = sorted(name for name in os.listdir(out) if name.endswith(".scs"))
    contents = {name: (out / name).read_bytes() for name in shards}
    times = {name: os.stat(out / name).st_mtime_ns for name in [*shards, "tokenizer.json", "manifest.json"]}

    build(source, out)  # complete: nothing is rewritten
    assert {name: os.stat(out / name).st_mtime_ns for name in times} == times

    (out / "manifest.json").unlink()  # as if killed while tokenizing the last shard
    (out / shards[-1]).unlink()
    manifest = build(source, out)
    assert {name: (out / name).read_bytes() for name in shards} == contents  # the same bytes again
    assert os.stat(out / shards[0]).st_mtime_ns == times[shards[0]]  # finished shards were kept
    assert load_manifest(out, check="sha256")["totals"] == manifest["totals"]


def test_given_tokenizer_and_changed_sources(source, tmp_path):
    first = tmp_path / "first"
    build(source, first)
    second = tmp_path / "second"
    build(source, second, tokenizer=str(first / "tokenizer.json"))
    assert (second / "tokenizer.json").read_bytes() == (first / "tokenizer.json").read_bytes()
    documents = load_manifest(second)["totals"]["documents"]

    (source / "pkg" / "new.py").write_text("print('new')\n")  # the folder changed: the build starts over
    assert build(source, second, tokenizer=str(first / "tokenizer.json"))["totals"]["documents"] == documents + 1


def test_bad_inputs_are_named(tmp_path, source):
    with pytest.raises(BuildError, match="nowhere"):
        build(tmp_path / "nowhere", tmp_path / "out")
    with pytest.raises(BuildError, match="no usable files"):
        build(source, tmp_path / "out", include=["*.rs"])
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(BuildError, match="bad.json"):
        build(source, tmp_path / "out", tokenizer=str(tmp_path / "bad.json"))
    result = subprocess.run([sys.executable, "-m", "seedcoder.cli", "data", "build", str(tmp_path / "missing"),
                             str(tmp_path / "out")], capture_output=True, text=True)
    assert result.returncode == 1 and "missing" in result.stderr
