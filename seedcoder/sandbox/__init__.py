"""A sandbox for untrusted programs: Python always; C, C++ (gcc/g++) and JavaScript (node) when installed.

    from seedcoder.sandbox import Limits, SandboxJob, run_program, run_tests
    result = run_program("python", "print(input()[::-1])", stdin="abc\\n", expected_stdout="cba")
    result.passed, result.status, result.limit, result.stdout, result.isolation.network_isolated
    results = run_tests([SandboxJob("python", src, tests=test_code) for src in sources], workers=8)

Every run gets, in this order of strength (what a run actually got is in `RunResult.isolation`):

* its own unprivileged uid (as root: one uid per concurrent run from a range nobody else uses, reserved with
  a lock file so that two processes never share one). RLIMIT_NPROC counts the processes of a uid, and root
  ignores it, so the program must not run as root or share its uid with another run.
* namespaces: network (only a loopback interface that is down: no connection leaves, not even to 127.0.0.1),
  PID (the program sees only its own processes; when the run ends, the kernel kills every process left in it),
  mount (the whole file system read-only, a fresh size-limited tmpfs on /tmp, /var/tmp and /dev/shm, a fresh
  /proc), IPC and UTS. When the platform refuses a namespace, the run says so (`isolation.notes`).
* resource limits: CPU seconds (RLIMIT_CPU), wall seconds (the run is killed), memory (RLIMIT_AS; RLIMIT_DATA
  for node, whose V8 reserves gigabytes of address space it never touches), file size (RLIMIT_FSIZE),
  processes and threads (RLIMIT_NPROC), open files (RLIMIT_NOFILE), no core dumps; stdout/stderr beyond
  `output_bytes` stop the run; no new privileges (setuid binaries do not elevate).
* a fresh working directory (cwd and HOME, a tmpfs when the mount namespace is there) and a scrubbed
  environment (PATH, LANG, HOME, TMPDIR only).

How: the host starts a small launcher (`python -I -S -c <_sandbox_launcher>`), which as root unshares the
namespaces and forks an init process (PID 1 of the new PID namespace) that mounts the file systems, runs each
step (compile, then run) in a child that sets the limits, drops to the uid and execs the program, and kills
whatever the step left behind (kill(-1) as the run's uid). The host thread enforces the overall wall time
and the output limit; on a kill it kills the launcher's process group, the init (parent-death signal) and
every process of the run's uid. Not root: a user namespace gives the same namespaces (the program keeps the
caller's uid, without capabilities); where that is refused too, only the resource limits remain and every
run says so. docs/sandbox.md has the details and the limitations.

This package's parts: `jobs` (SandboxJob, Limits, RunResult, Isolation, SandboxError), `languages` (toolchains,
steps and their rlimits), `uids` (the run uid pool), `launcher` (what runs in the launcher's interpreter: the
launcher, the init and the zygote), `supervise` (the host side of a run: start, feed, collect, kill, judge).
"""

from __future__ import annotations

import concurrent.futures
import os
from collections.abc import Iterable, Sequence

from seedcoder.sandbox.jobs import LIMIT_NAMES, STATUSES, Isolation, Limits, RunResult, SandboxError, SandboxJob
from seedcoder.sandbox.languages import LANGUAGES, SOURCE_NAMES, _steps, available_languages, normalize_language, sandbox_python
from seedcoder.sandbox.supervise import _run_steps, isolation_mode, normalize_output


def run_program(
    language: str,
    source: str,
    *,
    stdin: str = "",
    tests: str | None = None,
    expected_stdout: str | None = None,
    limits: Limits | None = None,
    name: str = "",
) -> RunResult:
    """Run `source` (+ `tests`, appended as code: asserts, a `check(...)` call, a main) in the sandbox.

    Passes when the program exits 0 within the limits and, with `expected_stdout`, prints it (compared line by
    line, each line stripped, trailing blank lines ignored). Never raises for anything the program does; raises
    SandboxError for bad arguments (unknown language, missing compiler, bad limits).
    """
    language = normalize_language(language)
    limits = limits or Limits()
    if not isinstance(limits, Limits):
        raise SandboxError(f"limits must be a seedcoder.sandbox.Limits, got {type(limits).__name__}")
    if not isinstance(source, str):
        raise SandboxError(f"source must be a str, got {type(source).__name__}")
    program = source if tests is None else source.rstrip("\n") + "\n\n" + tests
    steps = _steps(language, limits)
    return _run_steps(language, {SOURCE_NAMES[language]: program}, steps, stdin, limits, expected_stdout, name)


def default_workers() -> int:
    """4 per CPU core, at most 32: a test spends much of its time starting and waiting, so a pool larger than
    the core count keeps the cores busy (python -m benchmarks.sandbox: 2 cores, 8 workers ~2.8x one worker)."""
    return max(1, min(32, 4 * (os.cpu_count() or 1)))


def run_tests(jobs: Iterable[SandboxJob], *, workers: int | None = None, progress: bool = False,
              description: str = "sandbox") -> list[RunResult]:
    """Run many jobs on a pool of threads (each launches its own sandboxed process); results in the jobs' order."""
    jobs = list(jobs)
    for index, job in enumerate(jobs):
        if not isinstance(job, SandboxJob):
            raise SandboxError(f"jobs[{index}] must be a SandboxJob, got {type(job).__name__}")
    workers = default_workers() if workers is None else workers
    if not isinstance(workers, int) or workers < 1:
        raise SandboxError(f"workers must be a positive integer, got {workers!r}")
    if not jobs:
        return []

    def one(job: SandboxJob) -> RunResult:
        return run_program(job.language, job.source, stdin=job.stdin, tests=job.tests, expected_stdout=job.expected_stdout,
                           limits=job.limits, name=job.name)

    results: list[RunResult | None] = [None] * len(jobs)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), desc=description, unit="test")
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(workers, len(jobs)), thread_name_prefix="sandbox") as pool:
        futures = {pool.submit(one, job): index for index, job in enumerate(jobs)}
        for future in concurrent.futures.as_completed(futures):
            results[futures[future]] = future.result()
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    return results  # type: ignore[return-value]


def summarize(results: Sequence[RunResult]) -> dict[str, int]:
    """Counts per status (and per limit) for a batch of results."""
    counts: dict[str, int] = {}
    for result in results:
        counts[result.status] = counts.get(result.status, 0) + 1
        if result.limit:
            counts[f"limit:{result.limit}"] = counts.get(f"limit:{result.limit}", 0) + 1
    return counts


__all__ = [
    "LANGUAGES", "LIMIT_NAMES", "STATUSES", "Isolation", "Limits", "RunResult", "SandboxError", "SandboxJob",
    "available_languages", "default_workers", "isolation_mode", "normalize_language", "normalize_output", "run_program",
    "run_tests", "sandbox_python", "summarize",
]
