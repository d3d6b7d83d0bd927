"""The sft_seeds step (`seedcoder.curate.sft_seeds`): seed snippets chosen from a small dataset of files built here
(Python with functions, C, Markdown with a fence, reStructuredText, a notebook, empty, unparseable, low-scored
and data files); exactly which rows become seeds, with which text, and why the others are dropped."""

import json
import textwrap

import pyarrow as pa
import pytest

from seedcoder.config import ConfigError
from seedcoder.curate import dataset as ds
from seedcoder.curate.executor import ExecutorConfig
from seedcoder.curate.sft_seeds import STEP, choose_snippet, fence_language, looks_like_signature
from seedcoder.curate.step import StepContext
from seedcoder.curate.web_filter import sample_value

INLINE = ExecutorConfig(kind="local", workers=1, progress=False)
SNIPPET_OPTIONS = {"snippet_lines": [5, 60], "max_chars": 6000, "hybrids": True, "languages": [], "min_score": 0.0}

DOCUMENTED_ADD = '''# Adds with a cap.
@staticmethod
def add_capped(a, b, cap=10):
    """The sum of a and b, at most cap."""
    total = a + b
    if total > cap:
        return cap
    return total'''
GOOD_PY = f'''import os

def tiny(x):
    return x

{DOCUMENTED_ADD}


class Undocumented:
    def first(self):
        return 1

    def second(self):
        return 2
'''
SCRIPT_PY = "import sys\n\nfor line in sys.stdin:\n    print(line.upper())\n    print(len(line))\nprint('done')\n"
BROKEN_PY = "def broken(:\n    return 1\n\n\ndef fine():\n    return 2\n"
SUM_C_FUNCTION = '''/* The sum of the first n items. */
int sum(const int *items, int n)
{
    int total = 0;
    for (int i = 0; i < n; i++) {
        total += items[i];  /* "}" in a comment and '}' in a string do not close it */
    }
    return total;
}'''
SUM_C = f'''#include <stdio.h>

static int helper(int x);

struct point {{
    int x;
    int y;
    int z;
}};

{SUM_C_FUNCTION}

int main(void) {{
    printf("{{ %d\\n", sum((int[]){{1, 2}}, 2));
    return 0;
}}
'''
README_SECTION = '''## Usage

Call `add` to sum two numbers; it never raises.

```python
from mathlib import add

print(add(1, 2))
```

It prints 3.'''
README = f"# mathlib\n\nA tiny library.\n\n{README_SECTION}\n\n## License\n\nMIT, see LICENSE.\n"
NOTES_MD = "# Notes\n\nNothing but prose here.\n\nAnd more prose,\nover lines.\n"
RST = '''Guide
=====

Intro text.

Sorting
-------

Sort a list in place, then print it:

.. code-block:: c

   int items[] = {3, 1, 2};
   qsort(items, 3, sizeof(int), compare);
   print_items(items, 3);

That is all.
'''
NOTEBOOK = {"cells": [{"cell_type": "markdown", "source": ["# Loading\n", "Read the CSV file and count its rows."]},
                      {"cell_type": "code", "source": ["import csv\n", "rows = list(csv.reader(open('d.csv')))\n",
                                                       "print(len(rows))"]},
                      {"cell_type": "code", "source": "print(rows[0])"},
                      {"cell_type": "markdown", "source": "The end."}],
            "metadata": {"kernelspec": {"name": "python3", "language": "python"}}, "nbformat": 4}
NOTEBOOK_SNIPPET = ("# Loading\nRead the CSV file and count its rows.\n\n```python\nimport csv\n"
                    "rows = list(csv.reader(open('d.csv')))\nprint(len(rows))\n```\n\n```python\nprint(rows[0])\n```")


def file_row(path, language, text, score):
    return {"id": ds.stable_id("test", path), "repo": "r", "path": path, "language": language, "text": text,
            "source": "file", "score": score}


FILES = [
    file_row("a/good.py", "python", GOOD_PY, 9.0),
    file_row("a/script.py", "python", SCRIPT_PY, 8.0),
    file_row("a/broken.py", "python", BROKEN_PY, 8.0),
    file_row("a/low.py", "python", GOOD_PY, 2.0),
    file_row("a/unscored.py", "python", GOOD_PY.replace("add_capped", "add_unscored"), None),
    file_row("a/empty.py", "python", "  \n\t\n", 9.0),
    file_row("b/sum.c", "c", SUM_C, 8.0),
    file_row("docs/README.md", "markdown", README, 7.0),
    file_row("docs/notes.md", "markdown", NOTES_MD, 7.0),
    file_row("docs/guide.rst", "restructuredtext", RST, 6.5),
    file_row("nb/demo.ipynb", "jupyter", json.dumps(NOTEBOOK), 7.0),
    file_row("conf/data.json", "json", json.dumps({"key": list(range(20))}, indent=1), 9.5),
]


def make_dataset(directory, rows, shards=2, scored=True):
    """A finished curation dataset of `rows` in `shards` shards (a `score` column when `scored`)."""
    ds.prepare_output(str(directory), {"step": "fixture", "name": "files"})
    extra = pa.schema([("score", pa.float32())]) if scored else None
    size = -(-len(rows) // shards)
    markers = []
    for index in range(shards):
        part = [row if scored else {k: v for k, v in row.items() if k != "score"}
                for row in rows[index * size : (index + 1) * size]]
        stats = ds.write_part(str(directory), index, ds.base_table(part, extra))
        record = {"task": f"part-{index:05d}", "stats": stats}
        ds.write_json(ds.marker_path(str(directory), index), record)
        markers.append(record)
    ds.finish_dataset(str(directory), markers)
    return str(directory)


def run(out, source, options, name="sft_seeds"):
    ctx = StepContext(kind="sft_seeds", name=name, out_dir=str(out), options=STEP.check_options(options),
                      inputs={"in": source}, executor=INLINE)
    return STEP.run(ctx)


def rows_of(directory, dropped=False):
    return [row for _, table in ds.iter_tables(str(directory), dropped=dropped) for row in table.to_pylist()]


def by_path(rows):
    return {row["path"]: row for row in rows}


def test_seeds_from_a_small_dataset(tmp_path):
    source = make_dataset(tmp_path / "files", FILES)
    success = run(tmp_path / "seeds", source, {"min_score": 5.0})
    kept, dropped = by_path(rows_of(tmp_path / "seeds")), by_path(rows_of(tmp_path / "seeds", dropped=True))
    assert len(kept) + len(dropped) == len(FILES)  # nothing lost
    assert sorted(kept) == ["a/good.py", "a/unscored.py", "b/sum.c", "docs/README.md", "docs/guide.rst",
                            "nb/demo.ipynb"]
    reasons = {path: row["drop_reason"] for path, row in dropped.items()}
    assert reasons["a/empty.py"].startswith("empty_seed: ")
    assert reasons["a/low.py"] == "low_score: 2 < min_score 5"
    assert reasons["a/script.py"] == "no_snippet: no top-level function or class of 5-60 lines"
    assert reasons["a/broken.py"].startswith("no_snippet: python does not parse (SyntaxError")
    assert reasons["docs/notes.md"].startswith("no_snippet: a markdown document without a code block")
    assert reasons["conf/data.json"] == "no_snippet: json is data or text, not code"
    assert success["totals"]["drop_reasons"] == {"empty_seed": 1, "low_score": 1, "no_snippet": 4}

    # the snippets: the documented function (not the short one, not the undocumented class); the C function
    # (documented, balanced despite braces in a comment and a string); the section around the fence; the cells
    good = kept["a/good.py"]
    assert good["text"] == good["seed_text"] == DOCUMENTED_ADD
    assert kept["b/sum.c"]["text"] == SUM_C_FUNCTION
    assert kept["docs/README.md"]["text"] == README_SECTION
    assert kept["nb/demo.ipynb"]["text"] == NOTEBOOK_SNIPPET
    guide = kept["docs/guide.rst"]["text"]
    assert guide.startswith("Sorting\n-------\n\nSort a list") and guide.endswith("That is all.")
    assert "Intro text" not in guide
    assert {path: (row["seed_kind"], row["language"]) for path, row in kept.items()} == {
        "a/good.py": ("code", "python"), "a/unscored.py": ("code", "python"), "b/sum.c": ("code", "c"),
        "docs/README.md": ("hybrid", "python"), "docs/guide.rst": ("hybrid", "c"), "nb/demo.ipynb": ("hybrid", "python")}
    source_ids = {row["path"]: row["id"] for row in FILES}
    for path, row in kept.items():  # SFT items: a new stable id, the source row's id, score and path
        assert row["source"] == "sft" and row["seed_id"] == source_ids[path]
        assert row["id"] == ds.stable_id(source_ids[path], "sft")
        assert row["repo"] == "r"
    assert kept["a/good.py"]["score"] == 9.0 and kept["a/unscored.py"]["score"] is None
    # dropped rows are the files as read
    for path, row in dropped.items():
        original = next(item for item in FILES if item["path"] == path)
        assert (row["id"], row["text"], row["language"], row["source"]) == (
            original["id"], original["text"], original["language"], "file")
    assert success["reduce"]["seeds"] == {"c": 2, "python": 4}  # the rst's code is C
    assert success["reduce"]["seed_kinds"] == {"code": 3, "hybrid": 3}


def test_languages_and_hybrids_options(tmp_path):
    source = make_dataset(tmp_path / "files", FILES)
    run(tmp_path / "c_only", source, {"languages": ["c"]})
    kept = by_path(rows_of(tmp_path / "c_only"))
    dropped = by_path(rows_of(tmp_path / "c_only", dropped=True))
    assert sorted(kept) == ["b/sum.c", "docs/guide.rst"]  # a hybrid counts under its code's language
    assert dropped["a/good.py"]["drop_reason"] == "not_selected: language python is not in languages"
    assert dropped["nb/demo.ipynb"]["drop_reason"] == "not_selected: language python is not in languages"
    assert dropped["a/low.py"]["drop_reason"].startswith("not_selected")  # min_score 0: no low_score

    run(tmp_path / "code_only", source, {"hybrids": False})
    dropped = by_path(rows_of(tmp_path / "code_only", dropped=True))
    assert sorted(row["path"] for row in rows_of(tmp_path / "code_only")) == [
        "a/good.py", "a/low.py", "a/unscored.py", "b/sum.c"]
    assert dropped["docs/README.md"]["drop_reason"] == "no_snippet: a markdown document (hybrids = false)"
    assert dropped["nb/demo.ipynb"]["drop_reason"] == "no_snippet: a notebook (hybrids = false)"


def python_file(name, score):
    body = (f'def {name}(values):\n    """Sum of {name}."""\n    total = 0\n    for v in values:\n        total += v\n'
            '    return total\n')
    return file_row(f"p/{name}.py", "python", body, score)


def test_per_language_cap_ranks_by_score_then_a_seeded_hash(tmp_path):
    rows = [python_file("top", 9.0), python_file("tie_a", 7.0), python_file("tie_b", 7.0), python_file("last", 5.0),
            python_file("unscored", None), file_row("b/sum.c", "c", SUM_C, 1.0)]
    source = make_dataset(tmp_path / "files", rows, shards=3)
    run(tmp_path / "seeds", source, {"per_language": 2})
    kept = sorted(row["path"] for row in rows_of(tmp_path / "seeds"))
    tie_a, tie_b = rows[1]["id"], rows[2]["id"]
    winner = "p/tie_a.py" if sample_value(tie_a, 0) < sample_value(tie_b, 0) else "p/tie_b.py"
    assert kept == sorted(["p/top.py", winner, "b/sum.c"])  # c has its own cap
    dropped = {row["path"]: row["drop_reason"] for row in rows_of(tmp_path / "seeds", dropped=True)}
    loser = "p/tie_b.py" if winner == "p/tie_a.py" else "p/tie_a.py"
    assert dropped == {loser: "not_selected: rank 3 of 5 python seeds, per_language = 2",
                       "p/last.py": "not_selected: rank 4 of 5 python seeds, per_language = 2",
                       "p/unscored.py": "not_selected: rank 5 of 5 python seeds, per_language = 2"}
    # the tie goes either way depending on the seed: it is the hash, not the row order
    winners = set()
    for seed in range(12):
        winners.add(sample_value(tie_a, seed) < sample_value(tie_b, seed))
    assert winners == {True, False}

    # the same rows in one shard: the same choice (the ranking does not depend on the shard layout)
    single = make_dataset(tmp_path / "one_shard", rows, shards=1)
    run(tmp_path / "seeds_one", single, {"per_language": 2})
    assert sorted(row["path"] for row in rows_of(tmp_path / "seeds_one")) == kept


def test_input_without_a_score_column(tmp_path):
    rows = [python_file(f"f{i}", None) for i in range(4)]
    source = make_dataset(tmp_path / "files", rows, scored=False)
    run(tmp_path / "seeds", source, {"min_score": 8.0, "per_language": 3})
    kept = rows_of(tmp_path / "seeds")
    assert len(kept) == 3 and all(row["score"] is None for row in kept)  # min_score does not apply
    expected = sorted(rows, key=lambda row: sample_value(row["id"], 0))[:3]
    assert sorted(row["seed_id"] for row in kept) == sorted(row["id"] for row in expected)
    (dropped,) = rows_of(tmp_path / "seeds", dropped=True)
    assert dropped["drop_reason"] == "not_selected: rank 4 of 4 python seeds, per_language = 3"


def test_snippet_length_limits(tmp_path):
    long_function = "def long(x):\n" + "".join(f"    x += {i}\n" for i in range(80)) + "    return x\n"
    assert choose_snippet(long_function, "python", "l.py", SNIPPET_OPTIONS) == (
        "none of its 1 functions/classes/methods has 5-60 lines and <= 6000 characters")
    found = choose_snippet(long_function, "python", "l.py", {**SNIPPET_OPTIONS, "snippet_lines": [5, 90]})
    assert found.text == long_function.rstrip("\n")
    # a class too long to fit: its best method, dedented
    method = ('    def documented(self, x):\n        """Twice x."""\n        y = x * 2\n        z = y + 0\n'
              '        return z\n')
    big_class = "class Big:\n" + "".join(f"    def m{i}(self):\n        return {i}\n\n" for i in range(40)) + method
    found = choose_snippet(big_class, "python", "big.py", SNIPPET_OPTIONS)
    assert found.text == textwrap.dedent(method).rstrip("\n")
    # other languages: the first lines when no block fits
    shell = "#!/bin/sh\nset -e\n" + "".join(f"echo step {i}\n" for i in range(10))
    head = choose_snippet(shell, "shell", "run.sh", {**SNIPPET_OPTIONS, "snippet_lines": [3, 5]})
    assert head.text == "#!/bin/sh\nset -e\necho step 0\necho step 1\necho step 2"
    assert choose_snippet("x=1\ny=2\n", "shell", "s.sh", SNIPPET_OPTIONS).startswith("no block of 5-60 lines")


def test_signatures_and_fence_languages():
    assert looks_like_signature("int sum(const int *items, int n)")
    assert looks_like_signature("pub fn add(a: i32) -> i32 {")
    assert looks_like_signature("export const add = (a, b) => {")
    assert looks_like_signature("    public static void main(String[] args) {")
    assert not looks_like_signature("    if (x > 0) {")
    assert not looks_like_signature("} else if (x) {")
    assert not looks_like_signature("static int helper(int x);")
    assert not looks_like_signature("struct _inittab _PyImport_Inittab[] = {")
    assert looks_like_signature("typedef struct point {")
    assert not looks_like_signature("    return add(a, b);")
    assert [fence_language(tag) for tag in ("py", "Python", "c++", "bash", "rs", "{.js}", "", "nonsense")] == [
        "python", "python", "cpp", "shell", "rust", "javascript", "unknown", "unknown"]


@pytest.mark.parametrize("options, key", [({"snippet_lines": [10, 5]}, "snippet_lines"),
                                          ({"snippet_lines": [5]}, "snippet_lines"),
                                          ({"per_language": 0}, "per_language"),
                                          ({"languages": ["pythn"]}, "languages"),
                                          ({"min_scor": 1.0}, "min_scor")])
def test_bad_options(options, key):
    with pytest.raises(ConfigError, match=key):
        STEP.check_options(options)
