"""The sft_self_correct step (issue [14], step 3 of Seed-Coder's §3.1): sandbox self-correction of verifiable
instructions. The generator writes a solution and unit tests, they run in our sandbox, a failure goes back to the
generator with the error for revision; the items that pass (the ones that needed revisions are the hard ones)
are kept with the verified solution as their response, the ones that never pass are dropped with their last error.

    [[steps]]
    step = "sft_self_correct"            # in: the last step of the "sft" line (sft_synthesize's rows)
    generator = {backend = "openai", base_url = "http://127.0.0.1:8000/v1", concurrency = 8}
    max_rounds = 3                       # revisions after the first try
    timeout_s = 10.0                     # wall (and CPU) seconds per sandbox run
    memory_mb = 512                      # memory of a run (all its processes together)
    processes = 32                       # processes + threads of a run (a fork bomb stops here)

The generator is built once per worker process; with backend "engine" or "vllm" (a model in this process) the
shards run one after another in this process, as the oracle step does. Sampling: temperature (0.2), max_tokens
(1024), seed (0).

Per row (one task per input shard; a round is ONE batched `chat` call for every row of the shard still in play
and ONE batch of sandbox runs, `seedcoder.sandbox.run_tests`):

  * `verifiable` false (or null): passes through unchanged; `correction_rounds` and the sandbox columns null.
  * the language the code runs in (`sandbox_language`): the row's language when the sandbox runs it (python, c,
    cpp, javascript, and their aliases); python for rows whose language is not a programming language (markdown,
    notebooks, text, data and config formats, unknown: the seed was prose or data, the task is in Python); a
    programming language the sandbox has no runner for (java, rust, go, ...), or a sandbox language whose
    compiler or interpreter is not installed here, drops the row as "unsupported_language: ...".
  * round 0: `TASK: solve` (the instruction -> "[Solution]\\n```lang\\n...\\n```\\n[Tests]\\n```lang\\n...\\n```",
    tests being plain asserts, or a main() with assert() in C/C++, appended after the solution), then
    solution + "\\n\\n" + tests runs in the sandbox; rounds 1..max_rounds: `TASK: revise` with the instruction,
    the failing solution, its tests and the sandbox's result (status, the error, the tail of stderr / stdout or
    the limit that stopped it), answered in the same format, run again. A row's conversation grows round by
    round (system, solve, answer, revise, answer, ...): the generator sees its earlier attempts, and no round's
    request is an earlier one's (the cache would answer it with the same failing code).
  * passed after r revisions: kept, `correction_rounds` = r (0: the first try), `response` = a short sentence +
    the solution in a ``` fence (`original_response`: the response sft_synthesize wrote, for every row).
  * dropped: "never_passed: after N revision(s): <status>: <the last error, one line>", "off_format: solve|revise:
    <the answer's first 80 characters>" (a revise answer off its format ends the row's rounds),
    "generator_error: solve|revise: <error>", "unsupported_language: ...", "empty: ..." (no instruction),
    "sandbox_failed: ..." (the sandbox itself failed on the run: not the program's fault, so no revision).

Columns added: `solution`, `tests` (the last ones; null when none was parsed), `correction_rounds` (int32),
`sandbox_status` (`seedcoder.sandbox` status of the last run: "passed", "runtime_error", "limit_exceeded", ...),
`sandbox_error` (the last failure as the revise prompt showed it; null when passed), `original_response`. Dropped
rows keep them too, so a never-passing row shows its last code and error.

The revise prompt shows only what a rerun reproduces (a limit hit is named without the killed program's output;
memory addresses are masked), so a rerun of a killed shard asks the generator nothing it was asked before: every
answer comes from the response cache (`generator.cache_dir`, default `<out>/_work/generator-cache`); the sandbox
runs again. _SUCCESS.json holds `correction_rounds`: {"0": n, "1": n, ..., "never": n} summed over the shard
markers' stats (kept rows by the revisions they needed; "never": never_passed drops), and the step directory
holds `self_correction.png`, a bar plot of it.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from seedcoder.config import option
from seedcoder.curate import dataset as ds
from seedcoder.curate.chat_generator import (
    BACKENDS,
    ChatGenerator,
    generator_error_reason,
    generator_settings,
    off_format_reason,
    one_line,
    step_generator,
)
from seedcoder.curate.errors import CurateStateError
from seedcoder.curate.step import StepContext, StepKind, column, say
from seedcoder.fileio import save_png
from seedcoder.sandbox import (
    LANGUAGES,
    Limits,
    RunResult,
    SandboxError,
    SandboxJob,
    available_languages,
    normalize_language,
    run_tests,
)

PLOT_FILE = "self_correction.png"
REQUIRED_COLUMNS = ("text", "response", "verifiable", "language")
NEVER = "never"
ERROR_CHARS = 200  # the last error in a never_passed reason
STDERR_TAIL, STDOUT_TAIL = 2000, 1000  # characters of a failed run's output the revise prompt shows
DISPLAY = {"python": "Python", "c": "C", "cpp": "C++", "javascript": "JavaScript"}
# Rows in these languages hold prose or data (hybrid seeds, config files): the task they ask for is solved in Python
PYTHON_FOR = frozenset({"", "unknown", "text", "markdown", "restructuredtext", "tex", "jupyter", "json", "yaml",
                        "toml", "xml", "ini", "csv", "html", "css"})
TEST_STYLE = {
    "python": "plain `assert` statements at the top level (no test framework, no `if __name__ == \"__main__\":` "
              "guard), so that a failing test raises AssertionError",
    "javascript": "top-level statements using Node's built-in `assert` module (`const assert = require(\"assert\");` "
                  "first), so that a failing test throws",
    "c": "a `main` function that calls the solution, checks the results with `assert` (`#include <assert.h>` at the "
         "top of the tests) and returns 0; the solution itself has no `main`",
    "cpp": "a `main` function that calls the solution, checks the results with `assert` (`#include <cassert>` at "
           "the top of the tests) and returns 0; the solution itself has no `main`",
}
SYSTEM_PROMPT = "You are an expert programmer. You write correct, self-contained code and tests that check it."


# ------------------------------------------------------------------------------------------ languages
def sandbox_language(language: Any, available: Mapping[str, bool]) -> tuple[str | None, str | None]:
    """(the sandbox language a row's code runs in, None) or (None, the unsupported_language detail)."""
    name = str(language or "").strip().lower()
    try:
        chosen = normalize_language(name)
    except SandboxError:
        if name not in PYTHON_FOR:
            return None, (f"{name}: the sandbox runs {', '.join(LANGUAGES)} (and Python for prose and data "
                          "seeds)")
        chosen = "python"
    if not available.get(chosen, False):
        tool = {"python": "a Python", "c": "gcc", "cpp": "g++", "javascript": "node"}[chosen]
        return None, f"{chosen}: {tool} is not installed where the sandbox runs"
    return chosen, None


# ------------------------------------------------------------------------------------------ prompts and answers
def _answer_format(fence: str) -> str:
    return (f"Answer in exactly this format, with nothing before or after it:\n[Solution]\n```{fence}\n<the solution>"
            f"\n```\n[Tests]\n```{fence}\n<the tests>\n```")


def _requirements(language: str, timeout_s: float) -> str:
    name = DISPLAY[language]
    return (f"Requirements:\n- The solution is complete, self-contained {name} code: the standard library only, no "
            "input from stdin, no network, no files.\n"
            f"- The tests are {TEST_STYLE[language]}. They are appended after the solution and run as one program, "
            "which must exit with status 0 when every test passes and with a non-zero status when one fails.\n"
            "- Test the behaviour the task asks for, edge cases included; the whole program must finish well "
            f"within {timeout_s:g} seconds.")


def solve_prompt(instruction: str, language: str, timeout_s: float) -> str:
    return (f"TASK: solve\nWrite a correct {DISPLAY[language]} solution to the programming task below, and unit tests "
            f"that check it.\n\n[Task]\n{instruction.strip()}\n\n{_requirements(language, timeout_s)}\n\n"
            f"{_answer_format(language)}")


def revise_prompt(instruction: str, language: str, solution: str, tests: str, failure: str, timeout_s: float) -> str:
    return (f"TASK: revise\nYour {DISPLAY[language]} solution to the programming task below failed when it ran with "
            "its unit tests in a sandbox. Find the cause in the sandbox's result and write a corrected version. Fix "
            "the solution; change a test only when the test itself is wrong (the tests must still check what the "
            f"task asks for).\n\n[Task]\n{instruction.strip()}\n\n[Failing solution]\n```{language}\n{solution}\n```"
            f"\n\n[Tests]\n```{language}\n{tests}\n```\n\n[Sandbox result]\n{failure}\n\n"
            f"{_requirements(language, timeout_s)}\n\n{_answer_format(language)}")


_ANSWER = re.compile(r"\A\s*\[Solution\][ \t]*\n\s*```[ \t]*[\w+#.-]*[ \t]*\n(?P<solution>.*?)```[ \t]*\n"
                     r"\s*\[Tests\][ \t]*\n\s*```[ \t]*[\w+#.-]*[ \t]*\n(?P<tests>.*?)```\s*\Z", re.DOTALL)


def parse_solution(answer: str) -> tuple[str, str] | None:
    """(solution, tests) of a solve / revise answer in exactly its format (both non-empty), else None."""
    match = _ANSWER.match(answer or "")
    if match is None:
        return None
    solution, tests = (match.group(name).strip("\n").rstrip() for name in ("solution", "tests"))
    return (solution, tests) if solution.strip() and tests.strip() else None


def verified_response(solution: str, language: str) -> str:
    """The response a kept row gets: a short sentence and the verified solution."""
    return f"Here is a {DISPLAY[language]} solution:\n\n```{language}\n{solution}\n```\n"


# ------------------------------------------------------------------------------------------ sandbox results
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{6,}")
_PY_FRAME = re.compile(r'^\s*File "[^"\n]*main\.py", line (\d+), in [^\n]*\n[ \t]*(\S[^\n]*)$', re.MULTILINE)


def _tail(text: str, chars: int) -> str:
    text = _ADDRESS.sub("0x...", text.rstrip())  # addresses differ run to run; the prompt must not
    return text if len(text) <= chars else "..." + text[-chars:]


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def failure_headline(result: RunResult, limits: Limits) -> str:
    """What stopped a failed run, in one line: the limit it hit, the compiler's first error, the program's last
    error line (Python: with the line of main.py that raised it), or how it exited."""
    if result.status == "limit_exceeded":
        limit = result.limit or "a"
        if limit in ("wall_time", "cpu_time"):
            return f"time limit: still running after {limits.wall_s:g} s"
        described = {"memory": f"memory limit: more than {limits.memory_mb} MB",
                     "processes": f"process limit: more than {limits.processes} processes and threads",
                     "output": f"output limit: more than {limits.output_bytes} bytes of output",
                     "file_size": f"file size limit: a file over {limits.file_size_mb} MB",
                     "open_files": f"open files limit: more than {limits.open_files} files open at once"}
        return described.get(limit, f"{limit} limit")
    if result.status == "sandbox_error":
        return f"the sandbox failed: {result.error or 'no detail'}"
    if result.status == "compile_error":
        lines = [line.strip() for line in result.compile_output.splitlines() if line.strip()]
        errors = [line for line in lines if "error" in line.lower()]
        return _ADDRESS.sub("0x...", (errors or lines or ["the compiler failed without a message"])[0])
    error = _ADDRESS.sub("0x...", _last_line(result.stderr))
    frames = _PY_FRAME.findall(result.stderr) if result.language == "python" else []
    if error and frames:
        line, source = frames[-1]
        error = f"{error} (line {line}: {source.strip()})"
    if error:
        return error
    if result.signal:
        return f"killed by {result.signal}"
    return f"exit code {result.exit_code}" if result.exit_code is not None else result.status


def failure_report(result: RunResult, limits: Limits) -> str:
    """The sandbox's result as the revise prompt shows it (and `sandbox_error` keeps): the status, the headline,
    and for a program that ended on its own the tail of its stderr and stdout (a killed program's output depends
    on when it was killed, so it is left out)."""
    how = (f"exit code {result.exit_code}" if result.exit_code is not None else
           f"killed by {result.signal}" if result.signal else "")
    lines = [f"status: {result.status}{f' ({how})' if how and result.status != 'limit_exceeded' else ''}",
             f"error: {failure_headline(result, limits)}"]
    if result.status == "compile_error":
        lines.append(f"compiler output (last {STDERR_TAIL} characters):\n{_tail(result.compile_output, STDERR_TAIL)}")
    elif result.status in ("runtime_error", "wrong_output"):
        if result.stderr.strip():
            lines.append(f"stderr (last {STDERR_TAIL} characters):\n{_tail(result.stderr, STDERR_TAIL)}")
        if result.stdout.strip():
            lines.append(f"stdout (last {STDOUT_TAIL} characters):\n{_tail(result.stdout, STDOUT_TAIL)}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ one shard
@dataclass
class Item:
    """A verifiable row in play: its code, and what became of it."""

    row: int
    language: str
    instruction: str
    solution: str | None = None
    tests: str | None = None
    status: str | None = None
    failure: str | None = None  # failure_report of the last run
    headline: str | None = None  # failure_headline of the last run
    # system, solve, answer, revise, answer, ...: each round sees the attempts before it (and differs from them,
    # so that a round never gets a cached copy of an earlier round's answer)
    conversation: list[dict[str, str]] = dataclasses.field(
        default_factory=lambda: [{"role": "system", "content": SYSTEM_PROMPT}])


def limits_of(options: Mapping[str, Any]) -> Limits:
    return Limits(cpu_s=options["timeout_s"], wall_s=options["timeout_s"], memory_mb=options["memory_mb"],
                  processes=options["processes"])


def self_correct_rows(table: pa.Table, options: Mapping[str, Any], generator: ChatGenerator,
                      available: Mapping[str, bool]) -> tuple[list[str | None], dict[str, list], dict[str, Any]]:
    """The rounds over one shard's rows: (drop reasons, the columns to set, stats)."""
    count = table.num_rows
    texts, instructions = column(table, "text"), column(table, "instruction")
    responses, verifiable, languages = column(table, "response"), column(table, "verifiable"), column(table, "language")
    reasons: list[str | None] = [None] * count
    out: dict[str, list] = {"solution": [None] * count, "tests": [None] * count, "correction_rounds": [None] * count,
                            "sandbox_status": [None] * count, "sandbox_error": [None] * count,
                            "response": list(responses), "original_response": list(responses)}
    max_rounds, limits = options["max_rounds"], limits_of(options)
    histogram = {str(r): 0 for r in range(max_rounds + 1)} | {NEVER: 0}
    sampling = {"temperature": options["temperature"], "max_tokens": options["max_tokens"], "seed": options["seed"]}
    calls, hits = generator.calls, generator.cache_hits
    items: list[Item] = []
    for row in range(count):
        if not verifiable[row]:
            continue
        instruction = instructions[row] or texts[row] or ""
        language, unsupported = sandbox_language(languages[row], available)
        if unsupported:
            reasons[row] = f"unsupported_language: {unsupported}"
        elif not instruction.strip():
            reasons[row] = "empty: the row has no instruction to solve"
        else:
            items.append(Item(row, language, instruction))

    def ask(task: str, playing: list[Item], prompts: list[str]) -> list[Item]:
        """One batched chat call (each item's conversation so far + its new prompt); the items whose answer
        parsed, with their new code (the rest are dropped)."""
        for item, prompt in zip(playing, prompts):
            item.conversation.append({"role": "user", "content": prompt})
        answers = generator.chat([item.conversation for item in playing], **sampling)
        parsed = []
        for item, answer in zip(playing, answers):
            code = None if answer.error else parse_solution(answer.text or "")
            if answer.error:
                reasons[item.row] = generator_error_reason(task, answer.error)
            elif code is None:
                reasons[item.row] = off_format_reason(task, answer.text)
            else:
                item.solution, item.tests = code
                item.conversation.append({"role": "assistant", "content": answer.text})
                parsed.append(item)
        return parsed

    runs = 0
    playing = ask("solve", items, [solve_prompt(i.instruction, i.language, limits.wall_s) for i in items]) if items else []
    for revision in range(max_rounds + 1):
        if not playing:
            break
        results = run_tests([SandboxJob(i.language, i.solution, tests=i.tests, limits=limits, name=str(i.row))
                             for i in playing], workers=options["sandbox_workers"])
        runs += len(playing)
        failing = []
        for item, result in zip(playing, results):
            item.status = result.status
            if result.passed:
                item.failure = item.headline = None
                out["correction_rounds"][item.row] = revision
                out["response"][item.row] = verified_response(item.solution, item.language)
                histogram[str(revision)] += 1
                continue
            item.failure, item.headline = failure_report(result, limits), failure_headline(result, limits)
            if result.status == "sandbox_error":  # not the program's doing: a revision would not help
                reasons[item.row] = f"sandbox_failed: {one_line(item.headline, ERROR_CHARS)}"
            else:
                failing.append(item)
        if revision == max_rounds:
            for item in failing:
                reasons[item.row] = (f"never_passed: after {revision} revision(s): {item.status}: "
                                     f"{one_line(item.headline, ERROR_CHARS)}")
                histogram[NEVER] += 1
            break
        playing = ask("revise", failing, [revise_prompt(i.instruction, i.language, i.solution, i.tests, i.failure,
                                                        limits.wall_s) for i in failing]) if failing else []
    for item in items:
        out["solution"][item.row], out["tests"][item.row] = item.solution, item.tests
        out["sandbox_status"][item.row], out["sandbox_error"][item.row] = item.status, item.failure
    stats = {"correction_rounds": histogram, "verifiable": sum(bool(v) for v in verifiable),
             "sandbox_runs": runs, "generator_requests": generator.calls - calls,
             "cached_answers": generator.cache_hits - hits}
    return reasons, out, stats


COLUMN_TYPES = {"solution": pa.string(), "tests": pa.string(), "correction_rounds": pa.int32(),
                "sandbox_status": pa.string(), "sandbox_error": pa.string(), "response": pa.string(),
                "original_response": pa.string()}


def self_correct_task(in_dir: str, index: int, out_dir: str, options: Mapping[str, Any], generator: Mapping[str, Any],
                      step_name: str) -> dict[str, Any]:
    """Shard `index` of in_dir through the rounds; writes its kept and dropped rows; returns its stats."""
    table = ds.read_part(in_dir, index)
    check_columns(table.column_names, f"{in_dir} part {index}")
    reasons, columns, stats = self_correct_rows(table, options, step_generator(generator, f"{step_name}.generator"),
                                                available_languages())
    table = ds.with_columns(table, {name: pa.array(values, COLUMN_TYPES[name]) for name, values in columns.items()})
    kept, dropped = ds.split_rows(table, [reason is None for reason in reasons], reasons)
    return {**ds.write_part(out_dir, index, kept, dropped), **stats}


# ------------------------------------------------------------------------------------------ the step
def check_columns(names: Sequence[str], where: str) -> None:
    missing = [name for name in REQUIRED_COLUMNS if name not in names]
    if missing:
        raise CurateStateError(f"sft_self_correct: {where} has no column(s) {', '.join(missing)}: its input is the "
                               "rows of sft_synthesize (instruction = text, response, verifiable, language)")


def sum_histograms(markers: Sequence[Mapping[str, Any]], max_rounds: int) -> dict[str, int]:
    """{"0": n, ..., str(max_rounds): n, "never": n} summed over the shard markers' stats."""
    total = {str(r): 0 for r in range(max_rounds + 1)} | {NEVER: 0}
    for marker in markers:
        for key, count in marker.get("stats", {}).get("correction_rounds", {}).items():
            total[key] = total.get(key, 0) + int(count)
    return total


def write_plot(histogram: Mapping[str, int], path: str) -> None:
    """A bar per number of revisions a kept row needed, and one for the rows that never passed; atomic."""
    import matplotlib  # here: the plot is this module's only use of matplotlib (a slow import)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(histogram)
    counts = [histogram[label] for label in labels]
    colors = ["#4c72b0" if label == "0" else "#dd8452" if label != NEVER else "#999999" for label in labels]
    figure, axes = plt.subplots(figsize=(6.5, 4))
    bars = axes.bar(labels, counts, color=colors)
    axes.bar_label(bars, labels=[str(count) for count in counts])
    axes.set_xlabel("revisions before the tests passed (never: dropped)")
    axes.set_ylabel("verifiable items")
    kept = sum(counts) - histogram.get(NEVER, 0)
    axes.set_title(f"sandbox self-correction: {kept} passed, {histogram.get(NEVER, 0)} never passed")
    axes.set_ylim(0, max(counts + [1]) * 1.15)
    figure.tight_layout()
    save_png(figure, path)


def run_sft_self_correct(ctx: StepContext) -> dict[str, Any]:
    in_dir = ctx.inputs["in"]
    parts = ds.finished_parts(in_dir)
    if parts:  # the columns, before any work
        check_columns(ds.part_columns(in_dir, parts[0]), in_dir)
    done = ctx.prepare()
    if done is not None:
        return done
    table = generator_settings(ctx.options["generator"], ctx.out_dir)
    if table.get("backend", "openai") != "openai":  # a model in this process: one, shared by the shards
        ctx.executor = dataclasses.replace(ctx.executor, kind="local", workers=1)
    step_generator(table, f"{ctx.name}.generator")  # settings that cannot work stop the step before any shard
    tasks = ctx.part_tasks("seedcoder.curate.sft_self_correct:self_correct_task", parts, in_dir=in_dir,
                           out_dir=ctx.out_dir, options=ctx.options, generator=table, step_name=ctx.name)
    markers = ctx.run(tasks)
    histogram = sum_histograms(markers, ctx.options["max_rounds"])
    write_plot(histogram, os.path.join(ctx.out_dir, PLOT_FILE))
    stats = [marker.get("stats", {}) for marker in markers]
    requests = sum(int(s.get("generator_requests", 0)) for s in stats)
    runs = sum(int(s.get("sandbox_runs", 0)) for s in stats)
    say(f"{ctx.name}: correction rounds {histogram} ({runs} sandbox run(s), {requests} generator request(s) in this "
        "run)")
    return ctx.finish(markers, {"correction_rounds": histogram, "plot": PLOT_FILE,
                                "verifiable": sum(int(s.get("verifiable", 0)) for s in stats)})


@dataclass
class SftSelfCorrectOptions:
    generator: dict[str, Any] = option({}, "the generator (seedcoder.curate.chat_generator.make_generator's table: "
                                           "backend, base_url, model, checkpoint, concurrency, timeout_s, cache_dir, "
                                           "...; cache_dir default <out>/_work/generator-cache)")
    temperature: float = option(0.2, "sampling temperature of the solve and revise answers")
    max_tokens: int = option(1024, "at most this many tokens per answer")
    seed: int | None = option(0, "sampling seed sent with each request")
    max_rounds: int = option(3, "revisions after the first try (0: the first try only)")
    timeout_s: float = option(10.0, "wall (and CPU) seconds per sandbox run")
    memory_mb: int = option(512, "memory per sandbox run (each process, and all of a run's processes together)")
    processes: int = option(32, "processes and threads per sandbox run (a fork bomb stops here)")
    sandbox_workers: int | None = option(None, "sandbox runs at once per shard (default: 4 per CPU core, at most 32)")

    def __post_init__(self) -> None:
        if not self.generator:
            raise ValueError("generator: the table is empty; give the generator, e.g. generator = {backend = "
                             "\"openai\", base_url = \"http://127.0.0.1:8000/v1\"}")
        backend = self.generator.get("backend", "openai")
        if backend not in BACKENDS:
            raise ValueError(f"generator.backend: one of {', '.join(BACKENDS)}, got {backend!r}")
        if not 0.0 <= self.temperature <= 2.0:
            raise ValueError(f"temperature: must be in [0, 2], got {self.temperature}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens: must be >= 1, got {self.max_tokens}")
        if not 0 <= self.max_rounds <= 20:
            raise ValueError(f"max_rounds: must be in 0..20, got {self.max_rounds}")
        if not (math.isfinite(self.timeout_s) and 0.0 < self.timeout_s <= 3600.0):
            raise ValueError(f"timeout_s: must be in (0, 3600] seconds, got {self.timeout_s}")
        if self.memory_mb < 32:
            raise ValueError(f"memory_mb: must be >= 32 (an interpreter needs that much), got {self.memory_mb}")
        if self.processes < 1:
            raise ValueError(f"processes: must be >= 1, got {self.processes}")
        if self.sandbox_workers is not None and self.sandbox_workers < 1:
            raise ValueError(f"sandbox_workers: must be >= 1, got {self.sandbox_workers}")


STEP = StepKind("sft_self_correct", "SFT: solutions and unit tests run in the sandbox, failures revised with the error; "
                "items that never pass dropped", run_sft_self_correct, SftSelfCorrectOptions, in_line="sft")


__all__ = ["NEVER", "PLOT_FILE", "PYTHON_FOR", "STEP", "SftSelfCorrectOptions", "failure_headline", "failure_report",
           "parse_solution", "revise_prompt", "run_sft_self_correct", "sandbox_language",
           "self_correct_rows", "self_correct_task", "solve_prompt", "sum_histograms",
           "verified_response", "write_plot"]
