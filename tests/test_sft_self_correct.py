"""sft_self_correct (seedcoder.curate.sft_self_correct): verifiable SFT items solved, run in the sandbox and revised
with the error against the scripted OpenAI-compatible server (real HTTP): kept after 0 or 1 revisions, dropped after
max_rounds, off-format answers, generator errors, languages the sandbox cannot run, a fork bomb and an endless loop
contained; the histogram and its plot; a rerun and a resumed shard that ask the generator nothing; bad options."""

from __future__ import annotations

import os
import time

import pyarrow as pa
import pytest
from sft_script_server import GOOD, TESTS, WRONG, ScriptServer

from seedcoder.config import ConfigError
from seedcoder.curate import dataset as ds
from seedcoder.curate.chat_generator import ChatAnswer, ChatGenerator
from seedcoder.curate.errors import CurateStateError
from seedcoder.curate.executor import ExecutorConfig
from seedcoder.curate.sft_self_correct import (
    PLOT_FILE,
    STEP,
    failure_headline,
    failure_report,
    parse_solution,
    revise_prompt,
    sandbox_language,
    self_correct_rows,
    solve_prompt,
    verified_response,
)
from seedcoder.curate.step import StepContext
from seedcoder.sandbox import Limits, available_languages, run_program
from seedcoder.sandbox.uids import UID_BASE, UID_COUNT

INLINE = ExecutorConfig(kind="local", workers=1, progress=False)
ADD_TASK = "Write a Python function add(a, b) that returns the sum of two numbers"


def sft_row(n, behaviour, *, verifiable=True, language="python", text=None):
    """A row as sft_synthesize writes it; the instruction carries the scripted server's behaviour marker."""
    instruction = text if text is not None else f"{ADD_TASK} (script:{behaviour})."
    return {"id": ds.stable_id("sft-test", str(n)), "repo": "example/repo", "path": f"pkg/m{n}.py",
            "language": language, "text": instruction, "source": "sft", "seed_text": "def f(): pass",
            "seed_kind": "code", "seed_id": f"seed{n}", "score": 7.5, "instruction": instruction,
            "original_instruction": instruction, "style": "concise", "response": f"Original response {n}.",
            "verifiable": verifiable, "generator": "openai:script"}


def make_dataset(directory, shards) -> str:
    """A finished input dataset, one shard per list of rows."""
    directory = str(directory)
    ds.prepare_output(directory, {"step": "fixture", "name": os.path.basename(directory)})
    markers = []
    for index, rows in enumerate(shards):
        record = {"task": f"part-{index:05d}", "stats": ds.write_part(directory, index, pa.Table.from_pylist(rows))}
        ds.write_json(ds.marker_path(directory, index), record)
        markers.append(record)
    ds.finish_dataset(directory, markers)
    return directory


def run_self_correct(out, source, executor=INLINE, **options):
    ctx = StepContext(kind="sft_self_correct", name="sft_self_correct", out_dir=os.path.abspath(str(out)),
                      options=STEP.check_options(options), inputs={"in": os.path.abspath(source)}, executor=executor)
    return STEP.run(ctx)


def generator_options(server):
    return {"backend": "openai", "base_url": server.base_url, "max_retries": 0, "timeout_s": 5}


def read_rows(out):
    kept, dropped = {}, {}
    for _, table in ds.iter_tables(out):
        kept.update({row["id"]: row for row in table.to_pylist()})
    for _, table in ds.iter_tables(out, dropped=True):
        dropped.update({row["id"]: row for row in table.to_pylist()})
    return kept, dropped


def sandbox_processes() -> list[int]:
    """Host pids of processes running under a sandbox uid (as root every run has its own)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                uid = os.stat(f"/proc/{entry}").st_uid
            except OSError:
                continue
            if UID_BASE <= uid < UID_BASE + UID_COUNT:
                pids.append(int(entry))
    return pids


# ------------------------------------------------------------------------------------------ the step
def test_solutions_are_verified_revised_or_dropped_and_a_rerun_asks_nothing(tmp_path):
    rows = [sft_row(0, "good"), sft_row(1, "broken_then_fixed"), sft_row(2, "never_fixed"), sft_row(3, "off_format"),
            sft_row(4, "error"),
            sft_row(5, "prose", verifiable=False, text="Explain list comprehensions (script:prose)."),
            sft_row(6, "good", language="java"),
            sft_row(7, "good", language="markdown", text=ADD_TASK + "."),  # no marker: the server plays "good"
            sft_row(8, "good", text="   ")]
    source = make_dataset(tmp_path / "synth", [rows[:4], rows[4:]])  # two shards: the histogram is a sum
    out = tmp_path / "self_correct"
    with ScriptServer() as server:
        success = run_self_correct(out, source, generator=generator_options(server))
        kept, dropped = read_rows(out)
        ids = [row["id"] for row in rows]

        assert set(kept) == {ids[0], ids[1], ids[5], ids[7]}
        assert len(kept) + len(dropped) == len(rows)  # nothing lost
        good, fixed, prose, markdown = kept[ids[0]], kept[ids[1]], kept[ids[5]], kept[ids[7]]
        assert (good["correction_rounds"], fixed["correction_rounds"], markdown["correction_rounds"]) == (0, 1, 0)
        solution = GOOD.rstrip()  # the script's correct add()
        assert fixed["solution"] == solution and fixed["tests"] == TESTS.rstrip()
        assert fixed["response"] == verified_response(solution, "python") == (
            f"Here is a Python solution:\n\n```python\n{solution}\n```\n")
        assert fixed["original_response"] == "Original response 1."
        assert fixed["sandbox_status"] == "passed" and fixed["sandbox_error"] is None
        assert markdown["response"].startswith("Here is a Python solution")  # prose seed: solved in Python
        assert good["seed_id"] == "seed0" and good["text"] == rows[0]["text"]  # earlier columns kept
        # not verifiable: unchanged, no rounds
        assert prose["correction_rounds"] is None and prose["response"] == "Original response 5."
        assert prose["solution"] is None and prose["sandbox_status"] is None

        never = dropped[ids[2]]
        assert never["drop_reason"] == ("never_passed: after 3 revision(s): runtime_error: AssertionError "
                                        "(line 4: assert add(2, 3) == 5)")
        assert never["solution"] == WRONG.rstrip() and never["sandbox_status"] == "runtime_error"
        assert never["sandbox_error"].startswith("status: runtime_error (exit code 1)\nerror: AssertionError")
        assert "Traceback" in never["sandbox_error"]
        answer = "Sure! Here you go (script:off_format): something without the headers you asked for."
        assert dropped[ids[3]]["drop_reason"] == f"off_format: solve: {answer[:80]}"  # its first 80 characters
        assert dropped[ids[4]]["drop_reason"].startswith("generator_error: solve: ")
        assert "500" in dropped[ids[4]]["drop_reason"]
        assert dropped[ids[6]]["drop_reason"].startswith("unsupported_language: java: the sandbox runs python")
        assert dropped[ids[8]]["drop_reason"] == "empty: the row has no instruction to solve"

        # the requests: solve once per runnable verifiable row, revise per failing round
        assert server.calls["solve"] == 6 and server.calls["revise"] == 1 + 3
        assert server.behaviours["never_fixed"] == 1 + 3 and server.behaviours["broken_then_fixed"] == 2
        assert server.behaviours["prose"] == 0  # not verifiable: never asked

        assert success["correction_rounds"] == {"0": 2, "1": 1, "2": 0, "3": 0, "never": 1}
        assert success["totals"]["kept_rows"] == 4 and success["totals"]["dropped_rows"] == 5
        assert success["totals"]["drop_reasons"] == {"empty": 1, "generator_error": 1, "never_passed": 1,
                                                     "off_format": 1, "unsupported_language": 1}
        with open(out / PLOT_FILE, "rb") as file:
            assert file.read(8) == b"\x89PNG\r\n\x1a\n"
        calls = dict(server.calls)

        # a rerun of the finished step: skipped whole
        assert run_self_correct(out, source, generator=generator_options(server)) == success
        assert dict(server.calls) == calls

        # a killed run: shard 0 lost its marker (and the step its _SUCCESS.json); its rerun reads every answer
        # received before from the cache (the failed request to "error" in shard 1 is not rerun: shard 1 is done)
        os.unlink(out / ds.SUCCESS_FILE)
        os.unlink(ds.marker_path(str(out), 0))
        resumed = run_self_correct(out, source, generator=generator_options(server))
        assert dict(server.calls) == calls
        marker = ds.read_json(ds.marker_path(str(out), 0))
        assert marker["stats"]["generator_requests"] == 0 and marker["stats"]["cached_answers"] == 4 + 1 + 3
        assert resumed["correction_rounds"] == success["correction_rounds"]
        assert read_rows(out) == (kept, dropped)


def test_a_fork_bomb_and_an_endless_loop_are_contained(tmp_path):
    source = make_dataset(tmp_path / "synth", [[sft_row(0, "forkbomb"), sft_row(1, "loop")]])
    out = tmp_path / "self_correct"
    started = time.monotonic()
    with ScriptServer() as server:
        success = run_self_correct(out, source, generator=generator_options(server), timeout_s=2, max_rounds=1)
    assert time.monotonic() - started < 30  # two rounds of runs side by side, 2 s each at most, + set-up
    kept, dropped = read_rows(out)
    assert kept == {} and len(dropped) == 2
    bomb, loop = dropped[ds.stable_id("sft-test", "0")], dropped[ds.stable_id("sft-test", "1")]
    assert bomb["drop_reason"].startswith("never_passed: after 1 revision(s): limit_exceeded: ")
    assert ("process limit: more than 32 processes" in bomb["drop_reason"]
            or "time limit: still running after 2 s" in bomb["drop_reason"])
    assert loop["drop_reason"] == "never_passed: after 1 revision(s): limit_exceeded: time limit: still running after 2 s"
    assert success["correction_rounds"] == {"0": 0, "1": 0, "never": 2}
    assert server.calls["solve"] == 2 and server.calls["revise"] == 2
    if os.geteuid() == 0:  # every run had its own uid: none of its processes is left
        deadline = time.monotonic() + 5
        while sandbox_processes() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sandbox_processes() == []


class ScriptedC(ChatGenerator):
    """A generator that answers solve with a wrong C function and revise with a right one, and keeps the prompts."""

    name = model = "scripted-c"
    TESTS = "#include <assert.h>\nint main(void) {\n    assert(add(2, 3) == 5);\n    return 0;\n}"

    def __init__(self):
        super().__init__(None)
        self.prompts = []

    def _answer_many(self, conversations, sampling, finish):
        for index, conversation in enumerate(conversations):
            prompt = conversation[-1]["content"]
            self.prompts.append(prompt)
            body = "a - b" if prompt.startswith("TASK: solve") else "a + b"
            finish(index, ChatAnswer(f"[Solution]\n```c\nint add(int a, int b) {{ return {body}; }}\n```\n"
                                     f"[Tests]\n```c\n{self.TESTS}\n```\n"))


@pytest.mark.skipif(not available_languages()["c"], reason="needs gcc")
def test_c_rows_run_as_c_and_the_revise_prompt_carries_the_failure():
    table = pa.Table.from_pylist([sft_row(0, "good", language="c", text="Write a C function add(a, b).")])
    options = STEP.check_options({"generator": {"backend": "openai"}, "timeout_s": 5})
    generator = ScriptedC()
    reasons, columns, stats = self_correct_rows(table, options, generator, available_languages())
    assert reasons == [None] and columns["correction_rounds"] == [1]
    assert columns["solution"] == ["int add(int a, int b) { return a + b; }"]
    assert columns["response"][0].startswith("Here is a C solution:\n\n```c\nint add")
    solve, revise = generator.prompts
    assert solve.startswith("TASK: solve\n") and "`#include <assert.h>`" in solve and "[Task]\nWrite a C function" in solve
    assert revise.startswith("TASK: revise\n") and "return a - b;" in revise and ScriptedC.TESTS in revise
    assert "Assertion `add(2, 3) == 5' failed" in revise and "status: runtime_error (killed by SIGABRT)" in revise
    assert stats["correction_rounds"] == {"0": 0, "1": 1, "2": 0, "3": 0, "never": 0} and stats["sandbox_runs"] == 2


# ------------------------------------------------------------------------------------------ the parts
def test_answers_are_parsed_strictly():
    answer = f"[Solution]\n```python\n{GOOD}```\n[Tests]\n```python\n{TESTS}```"
    assert parse_solution(answer) == (GOOD.rstrip(), TESTS.rstrip())
    assert parse_solution(f"\n  {answer}\n\n") == (GOOD.rstrip(), TESTS.rstrip())  # surrounding blank space only
    fence_inside = '[Solution]\n```\nFENCE = "```"\n```\n[Tests]\n```\nassert FENCE\n```'  # no language tag
    assert parse_solution(fence_inside) == ('FENCE = "```"', "assert FENCE")
    for bad in (f"Sure:\n{answer}",  # text before
                f"{answer}\nThis works because ...",  # text after
                f"[Solution]\n```python\n{GOOD}```",  # no tests
                f"[Solution]\n```python\n{GOOD}```\n[Tests]\n```python\n\n```",  # empty tests
                f"[Solution]\n{GOOD}\n[Tests]\n```python\n{TESTS}```",  # no fence
                ""):
        assert parse_solution(bad) is None, bad


def test_the_language_a_row_runs_in():
    available = {"python": True, "c": True, "cpp": False, "javascript": False}
    assert sandbox_language("Python", available) == ("python", None)
    assert sandbox_language("py", available) == ("python", None)
    assert sandbox_language("c", available) == ("c", None)
    for prose in ("markdown", "jupyter", "text", "unknown", "yaml", None, ""):
        assert sandbox_language(prose, available) == ("python", None), prose
    assert sandbox_language("java", available) == (None, "java: the sandbox runs python, c, cpp, javascript (and "
                                                         "Python for prose and data seeds)")
    assert sandbox_language("c++", available) == (None, "cpp: g++ is not installed where the sandbox runs")
    assert sandbox_language("javascript", available) == (None, "javascript: node is not installed where the sandbox runs")


def test_prompts_and_failure_reports():
    prompt = solve_prompt("  Add two numbers (script:good).\n", "python", 10.0)
    assert prompt.startswith("TASK: solve\n") and "[Task]\nAdd two numbers (script:good).\n" in prompt
    assert "Answer in exactly this format" in prompt and prompt.endswith("[Tests]\n```python\n<the tests>\n```")
    limits = Limits(cpu_s=1, wall_s=1, memory_mb=256, processes=16)
    failed = run_program("python", WRONG, tests=TESTS, limits=limits)
    assert failure_headline(failed, limits) == "AssertionError (line 4: assert add(2, 3) == 5)"
    report = failure_report(failed, limits)
    assert report.startswith("status: runtime_error (exit code 1)\nerror: AssertionError (line 4: assert add(2, 3) == 5)")
    assert "stderr (last 2000 characters):\nTraceback (most recent call last):" in report
    assert failure_report(run_program("python", WRONG, tests=TESTS, limits=limits), limits) == report  # reproducible
    revise = revise_prompt("Add two numbers.", "python", WRONG.rstrip(), TESTS.rstrip(), report, 1.0)
    assert revise.startswith("TASK: revise\n") and f"[Failing solution]\n```python\n{WRONG}```" in revise
    assert f"[Tests]\n```python\n{TESTS}```" in revise and f"[Sandbox result]\n{report}\n" in revise
    looped = run_program("python", "while True:\n    pass\n", limits=limits)
    assert failure_report(looped, limits) == "status: limit_exceeded\nerror: time limit: still running after 1 s"


def test_bad_options_and_inputs_are_named(tmp_path):
    with pytest.raises(ConfigError, match=r"\[sft_self_correct\]: generator: the table is empty"):
        STEP.check_options({})
    table = {"backend": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m"}
    for key, value, message in (("max_rounds", -1, "max_rounds: must be in 0..20"),
                                ("temperature", 3.0, "temperature: must be in"),
                                ("timeout_s", 0, "timeout_s: must be in"),
                                ("memory_mb", 8, "memory_mb: must be >= 32"),
                                ("processes", 0, "processes: must be >= 1"),
                                ("max_tokens", 0, "max_tokens: must be >= 1"),
                                ("generator", {"backend": "gpt"}, "generator.backend: one of openai")):
        with pytest.raises(ConfigError, match=rf"sft_self_correct\]: {message}"):
            STEP.check_options({"generator": table, key: value})
    with pytest.raises(ConfigError, match="sft_self_correct.max_round"):
        STEP.check_options({"generator": table, "max_round": 2})
    with pytest.raises(ConfigError, match="sft_self_correct.timeout_s"):
        STEP.check_options({"generator": table, "timeout_s": "long"})

    source = make_dataset(tmp_path / "synth", [[sft_row(0, "good")]])
    with pytest.raises(ConfigError, match=r"sft_self_correct.generator \(backend 'openai'\).*'bogus'"):
        run_self_correct(tmp_path / "out", source, generator={**table, "bogus": 1})
    no_flag = make_dataset(tmp_path / "no_flag", [[{k: v for k, v in sft_row(0, "good").items() if k != "verifiable"}]])
    with pytest.raises(CurateStateError, match="no_flag has no column.s. verifiable"):
        run_self_correct(tmp_path / "out2", no_flag, generator=table)
