"""Running an evaluation: generate completions, score them in the sandbox, report pass@k (or FIM exact match).

    from seedcoder.evaluation import OpenAIGenerator, evaluate_problems, load_humaneval
    report = evaluate_problems(load_humaneval(), OpenAIGenerator("http://127.0.0.1:8000/v1", "m"), n=1, ks=[1])

Completions are generated in batches; each batch's programs go to the sandbox's worker pool while the next batch is
generated. pass@k is the unbiased estimator of Chen et al. 2021, 1 - C(n-c, k) / C(n, k), averaged over problems,
computed as a product (no huge binomials).

Chat-style answers in code fences: a completion left inside an open ``` fence (HumanEval's stop sequences cut
"```python\ndef f(..." right after the fence) is continued from prompt + completion up to the closing fence (at
most max_tokens more). HumanEval then runs, as chat evaluators do, the fenced code instead of the completion when
prompt + completion does not parse: the block that defines the entry point (a whole function, which replaces the
prompt's), else the first block that parses after the prompt (a body); samples record it as `code`. MBPP and
stdio problems take the first fenced block (seedcoder/evaluation/problems.py). A Python program that does not
compile counts as `syntax_error`, not `runtime_error`.

Outputs under out_dir: results.json (summary + per-problem outcomes, atomic), problems.jsonl (one record per
problem: completions and each one's sandbox outcome, atomic), log.jsonl (one line per problem as it finishes,
appended and flushed as the run goes: its progress).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import re
import sys
import threading
import time
import warnings
from collections.abc import Sequence

from seedcoder.evaluation.generators import EvaluationError, _describe
from seedcoder.evaluation.problems import Problem, fenced_blocks, fim_exact_match
from seedcoder.fileio import atomic_write_text
from seedcoder.sandbox import Limits, RunResult, default_workers, run_program

FENCE = "```"
FENCE_CLOSE = "\n```"  # the stop sequence of a continued fenced answer
# how CPython reports a program that does not compile: the error, no "Traceback (most recent call last):"
_SYNTAX_ERROR_LINE = re.compile(r"(SyntaxError|IndentationError|TabError): ")


# ------------------------------------------------------------------------------------------------ pass@k
def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem with n samples, c correct: 1 - C(n-c, k) / C(n, k), as a stable product."""
    if not (isinstance(n, int) and isinstance(c, int) and isinstance(k, int)):
        raise EvaluationError(f"pass_at_k needs integers, got n={n!r} c={c!r} k={k!r}")
    if n < 1 or not 0 <= c <= n or not 1 <= k <= n:
        raise EvaluationError(f"pass_at_k needs n >= 1, 0 <= c <= n and 1 <= k <= n; got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    remaining = 1.0  # C(n-c, k) / C(n, k) = prod_{i=n-c+1}^{n} (1 - k / i)
    for i in range(n - c + 1, n + 1):
        remaining *= 1.0 - k / i
    return 1.0 - remaining


def mean_pass_at_k(counts: Sequence[tuple[int, int]], k: int) -> float:
    """pass@k averaged over problems, from (n, c) per problem."""
    if not counts:
        raise EvaluationError("mean_pass_at_k: no problems")
    return sum(pass_at_k(n, c, k) for n, c in counts) / len(counts)


# ------------------------------------------------------------------------------------------------ fenced answers
def _parses(source: str) -> bool:
    """Whether CPython compiles `source` (nothing runs)."""
    try:
        with warnings.catch_warnings():  # e.g. SyntaxWarning for an invalid escape: that still compiles
            warnings.simplefilter("ignore")
            compile(source, "<completion>", "exec", dont_inherit=True)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    return True


def humaneval_code(problem: Problem, completion: str) -> str:
    """The code that follows a HumanEval prompt in the program (module docstring): the completion, or, when
    prompt + completion does not parse, the fenced block that defines the entry point, else the first that parses."""
    if FENCE not in completion or _parses(problem.prompt + completion):
        return completion
    entry = re.escape(problem.meta.get("entry_point") or "")
    defines = re.compile(rf"^\s*(?:async\s+)?def\s+{entry}\s*\(", re.MULTILINE)
    blocks = [block for block in fenced_blocks(completion) if block.strip()]
    for block in sorted(blocks, key=lambda block: not defines.search(block)):  # stable: the definition first
        if _parses(problem.prompt + block):
            return block
    return completion


def _answer_code(problem: Problem, completion: str) -> str:
    return humaneval_code(problem, completion) if problem.kind == "humaneval" else completion


def _close_open_fences(generator, prompts: list[str], rows: list[list[str]], *, temperature: float, top_p: float,
                       max_tokens: int) -> list[list[str]]:
    """Each completion left inside an open fence, continued up to the closing fence (module docstring)."""
    unclosed = [(i, j) for i, row in enumerate(rows) for j, text in enumerate(row) if text.count(FENCE) % 2 == 1]
    if not unclosed:
        return rows
    continued = _generate_checked(generator, [prompts[i] + rows[i][j] for i, j in unclosed], n=1,
                                  temperature=temperature, top_p=top_p, max_tokens=max_tokens, stop=[FENCE_CLOSE])
    rows = [list(row) for row in rows]
    for (i, j), (text,) in zip(unclosed, continued):
        rows[i][j] += text
    return rows


def _is_syntax_error(result: RunResult) -> bool:
    """A Python program that did not compile (a SyntaxError raised while running has a traceback)."""
    if result.status != "runtime_error" or result.language != "python":
        return False
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    return (bool(lines) and "Traceback (most recent call last):" not in result.stderr
            and _SYNTAX_ERROR_LINE.match(lines[-1]) is not None)


# ------------------------------------------------------------------------------------------------ running
def _generate_checked(generator, prompts: list[str], *, n: int, temperature: float, top_p: float, max_tokens: int,
                      stop: list[str]) -> list[list[str]]:
    answers = generator.generate(prompts, n=n, temperature=temperature, top_p=top_p, max_tokens=max_tokens, stop=stop)
    if len(answers) != len(prompts) or any(len(row) != n or not all(isinstance(text, str) for text in row) for row in answers):
        raise EvaluationError(f"generator {type(generator).__name__} must return {len(prompts)} lists of {n} strings")
    return answers


class _JsonlLog:
    """log.jsonl: one line per finished problem, appended and flushed (a progress record, readable while running)."""

    def __init__(self, path: str | None):
        self._lock = threading.Lock()
        self._file = open(path, "w", encoding="utf-8") if path else None  # this run's log (a re-run starts a new one)

    def write(self, record: dict) -> None:
        if self._file is not None:
            with self._lock:
                self._file.write(json.dumps(record) + "\n")
                self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def _sample_record(completion: str, code: str, results: list[RunResult]) -> dict:
    passed = bool(results) and all(result.passed for result in results)
    failed = next((result for result in results if not result.passed), None)
    record = {"completion": completion, "passed": passed, "tests": len(results),
              "tests_passed": sum(result.passed for result in results)}
    if code != completion:
        record["code"] = code  # what ran after the prompt: the fenced code of the completion
    if failed is not None:
        record.update(status="syntax_error" if _is_syntax_error(failed) else failed.status, limit=failed.limit,
                      exit_code=failed.exit_code, signal=failed.signal, error=failed.error,
                      stderr_tail=failed.stderr[-1000:], stdout_tail=failed.stdout[-500:],
                      compile_output=failed.compile_output[-1000:])
    else:
        record["status"] = "passed"
    record["seconds"] = round(sum(result.total_s for result in results), 4)
    return record


def evaluate_problems(
    problems: Sequence[Problem],
    generator,
    *,
    n: int = 1,
    ks: Sequence[int] = (1,),
    temperature: float = 0.0,
    top_p: float = 1.0,
    max_tokens: int = 512,
    stop: list[str] | None = None,
    batch_size: int = 16,
    workers: int | None = None,
    limits: Limits | None = None,
    out_dir: str | None = None,
    benchmark: str = "",
    progress: bool = True,
) -> dict:
    """Generate n completions per problem, run them in the sandbox, and return the report (see the module docstring).

    `stop` overrides the problems' own stop sequences. pass@k is reported for each k in `ks` (each must be <= n).
    """
    problems = list(problems)
    if not problems:
        raise EvaluationError("no problems to evaluate")
    if any(problem.kind == "fim" for problem in problems):
        raise EvaluationError("FIM problems are scored by exact match: use evaluate_fim_line")
    ks = sorted(set(int(k) for k in ks))
    if not isinstance(n, int) or n < 1:
        raise EvaluationError(f"n (samples per problem) must be a positive integer, got {n!r}")
    if not ks or ks[0] < 1 or ks[-1] > n:
        raise EvaluationError(f"every k must be between 1 and n={n}, got k={ks}")
    if temperature < 0 or not 0 < top_p <= 1:
        raise EvaluationError(f"temperature must be >= 0 and top_p in (0, 1], got {temperature} and {top_p}")
    if n > 1 and temperature == 0:
        print(f"[eval] note: n={n} samples at temperature 0 are (nearly) identical; pass@k>1 needs sampling", file=sys.stderr)
    if batch_size < 1 or max_tokens < 1:
        raise EvaluationError(f"batch_size and max_tokens must be >= 1, got {batch_size} and {max_tokens}")
    workers = default_workers() if workers is None else workers
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
    log = _JsonlLog(os.path.join(out_dir, "log.jsonl") if out_dir else None)

    started = time.perf_counter()
    generate_s = 0.0
    samples: list[list[str]] = [[] for _ in problems]
    codes: list[list[str]] = [[] for _ in problems]
    outcomes: list[list[list[RunResult] | None]] = [[None] * n for _ in problems]
    remaining = [n for _ in problems]
    lock = threading.Lock()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(problems), desc=f"eval {benchmark}".strip(), unit="problem", dynamic_ncols=True)

    def sample_done(index: int, sample: int, future) -> None:
        results = future.result()
        with lock:
            outcomes[index][sample] = results
            remaining[index] -= 1
            finished = remaining[index] == 0
        if finished:
            records = [_sample_record(samples[index][j], codes[index][j], outcomes[index][j]) for j in range(n)]
            correct = sum(record["passed"] for record in records)
            log.write({"task_id": problems[index].task_id, "n": n, "correct": correct,
                       "statuses": [record["status"] for record in records], "time": time.time()})
            if bar is not None:
                bar.update(1)

    def run_jobs(jobs) -> list[RunResult]:
        return [run_program(job.language, job.source, stdin=job.stdin, tests=job.tests, expected_stdout=job.expected_stdout,
                            limits=job.limits, name=job.name) for job in jobs]

    pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="eval-sandbox")
    futures = []
    try:
        for begin in range(0, len(problems), batch_size):
            batch = problems[begin:begin + batch_size]
            tick = time.perf_counter()
            prompts = [problem.prompt for problem in batch]
            # problems of one batch may have different stop sequences: group them so each call has one set
            groups: dict[tuple[str, ...], list[int]] = {}
            for offset, problem in enumerate(batch):
                groups.setdefault(tuple(stop if stop is not None else problem.stop), []).append(offset)
            answers: list[list[str] | None] = [None] * len(batch)
            for stops, offsets in groups.items():
                group_prompts = [prompts[o] for o in offsets]
                rows = _generate_checked(generator, group_prompts, n=n, temperature=temperature, top_p=top_p,
                                         max_tokens=max_tokens, stop=list(stops))
                rows = _close_open_fences(generator, group_prompts, rows, temperature=temperature, top_p=top_p,
                                          max_tokens=max_tokens)
                for offset, row in zip(offsets, rows):
                    answers[offset] = row
            generate_s += time.perf_counter() - tick
            for offset, problem in enumerate(batch):
                index = begin + offset
                samples[index] = list(answers[offset])
                codes[index] = [_answer_code(problem, completion) for completion in samples[index]]
                for sample, code in enumerate(codes[index]):
                    future = pool.submit(run_jobs, problem.jobs(code, limits))
                    future.add_done_callback(lambda f, i=index, s=sample: sample_done(i, s, f))
                    futures.append(future)
        concurrent.futures.wait(futures)
        for future in futures:
            future.result()  # re-raise a failure of the harness itself
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        if bar is not None:
            bar.close()
        log.close()

    per_problem = []
    counts = []
    status_counts: dict[str, int] = {}
    isolation = None
    for index, problem in enumerate(problems):
        records = [_sample_record(samples[index][j], codes[index][j], outcomes[index][j]) for j in range(n)]
        correct = sum(record["passed"] for record in records)
        counts.append((n, correct))
        for record in records:
            status_counts[record["status"]] = status_counts.get(record["status"], 0) + 1
        if isolation is None and outcomes[index][0]:
            isolation = _isolation_dict(outcomes[index][0][0])
        per_problem.append({"task_id": problem.task_id, "n": n, "correct": correct,
                            **{f"pass@{k}": pass_at_k(n, correct, k) for k in ks}, "samples": records})
    report = {
        "benchmark": benchmark,
        "generator": _describe(generator),
        "settings": {"n": n, "k": ks, "temperature": temperature, "top_p": top_p, "max_tokens": max_tokens,
                     "stop": stop if stop is not None else sorted({tuple(p.stop) for p in problems}),
                     "workers": workers, "batch_size": batch_size,
                     "limits": dataclasses.asdict(limits or Limits())},
        "problems": len(problems),
        "samples": len(problems) * n,
        "pass_at_k": {f"pass@{k}": mean_pass_at_k(counts, k) for k in ks},
        "status_counts": status_counts,
        "isolation": isolation,
        "timing": {"generate_s": generate_s, "total_s": time.perf_counter() - started},
        "per_problem": per_problem,
    }
    if out_dir:
        _write_outputs(out_dir, report)
    return report


def _isolation_dict(result: RunResult) -> dict:
    return dict(result.isolation.__dict__)


def evaluate_fim_line(
    tasks: Sequence[Problem],
    generator,
    *,
    max_tokens: int = 64,
    batch_size: int = 16,
    out_dir: str | None = None,
    progress: bool = True,
) -> dict:
    """Single-line FIM: greedy middle for each task (fim_line_tasks), exact match after strip."""
    tasks = list(tasks)
    if not tasks or any(task.kind != "fim" for task in tasks):
        raise EvaluationError("evaluate_fim_line needs a non-empty list of FIM tasks (problems.fim_line_tasks)")
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
    log = _JsonlLog(os.path.join(out_dir, "log.jsonl") if out_dir else None)
    started = time.perf_counter()
    per_task = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(tasks), desc="eval fim-line", unit="line", dynamic_ncols=True)
    try:
        for begin in range(0, len(tasks), batch_size):
            batch = tasks[begin:begin + batch_size]
            rows = _generate_checked(generator, [task.prompt for task in batch], n=1, temperature=0.0, top_p=1.0,
                                     max_tokens=max_tokens, stop=list(batch[0].stop))
            for task, row in zip(batch, rows):
                record = {"task_id": task.task_id, "expected": task.middle, "generated": row[0],
                          "exact_match": fim_exact_match(row[0], task.middle)}
                per_task.append(record)
                log.write({**record, "time": time.time()})
            if bar is not None:
                bar.update(len(batch))
    finally:
        if bar is not None:
            bar.close()
        log.close()
    matches = sum(record["exact_match"] for record in per_task)
    report = {
        "benchmark": "fim-line",
        "generator": _describe(generator),
        "settings": {"max_tokens": max_tokens, "stop": list(tasks[0].stop), "batch_size": batch_size,
                     "prompt_format": "SPM: <[fim-suffix]> suffix <[fim-prefix]> prefix <[fim-middle]>"},
        "problems": len({task.meta.get("problem") for task in tasks}),
        "tasks": len(tasks),
        "exact_match": matches / len(tasks),
        "timing": {"total_s": time.perf_counter() - started},
        "per_problem": per_task,
    }
    if out_dir:
        _write_outputs(out_dir, report)
    return report


def _write_outputs(out_dir: str, report: dict) -> None:
    per_problem = report["per_problem"]
    atomic_write_text(os.path.join(out_dir, "problems.jsonl"), "".join(json.dumps(record) + "\n" for record in per_problem))
    summary = {key: value for key, value in report.items() if key != "per_problem"}
    summary["per_problem"] = [{key: value for key, value in record.items() if key != "samples"} for record in per_problem]
    atomic_write_text(os.path.join(out_dir, "results.json"), json.dumps(summary, indent=1, default=str) + "\n")


def format_table(report: dict) -> str:
    """The summary as an aligned text table."""
    rows = [("benchmark", report.get("benchmark", ""))]
    generator = report.get("generator") or {}
    rows.append(("generator", ", ".join(f"{k}={v}" for k, v in generator.items() if v is not None)))
    if "exact_match" in report:
        rows += [("problems", str(report["problems"])), ("masked lines", str(report["tasks"])),
                 ("exact match", f"{report['exact_match']:.4f}")]
    else:
        settings = report["settings"]
        rows += [("problems", str(report["problems"])), ("samples", str(report["samples"])),
                 ("n / temperature / top_p", f"{settings['n']} / {settings['temperature']} / {settings['top_p']}")]
        rows += [(name, f"{value:.4f}") for name, value in report["pass_at_k"].items()]
        rows.append(("outcomes", ", ".join(f"{k} {v}" for k, v in sorted(report["status_counts"].items()))))
        isolation = report.get("isolation") or {}
        if isolation:
            rows.append(("sandbox", f"mode={isolation.get('mode')} network_isolated={isolation.get('network_isolated')} "
                                    f"filesystem_isolated={isolation.get('filesystem_isolated')}"))
    rows.append(("time", f"{report['timing']['total_s']:.1f} s"))
    width = max(len(name) for name, _ in rows)
    line = "-" * (width + 3 + max(len(value) for _, value in rows))
    return "\n".join([line] + [f"{name:<{width}} | {value}" for name, value in rows] + [line])

