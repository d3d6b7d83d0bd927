"""Run a step's per-shard tasks on a local process pool (the default) or on Ray; the task code is the same for both.

    tasks = [Task(key="part-00000", function="seedcoder.curate.step:row_step_task", args={...},
                  marker="out/part-00000.done"), ...]
    records = run_tasks(tasks, ExecutorConfig(kind="local", workers=2), log_path="out/log.jsonl", description="syntax")

A task names a module-level function ("module:function") and its keyword arguments, so it pickles cheaply to a
pool worker or a Ray worker. The function writes its outputs atomically and returns a small stats dict; the
worker then writes the task's completion marker (JSON: task, seconds, stats) atomically. Tasks whose marker
exists are skipped, so a rerun after a crash or a kill does only the shards that did not finish. The parent
appends one JSON line per finished task to `log_path` (single `write` calls on an O_APPEND file, so lines are
whole even when a run is killed) and shows its progress (`seedcoder.progress`: a tqdm bar on a terminal, a line
every few seconds in a log).

Local pool: `concurrent.futures.ProcessPoolExecutor` with the `spawn` start method (workers do not inherit the
parent's threads, e.g. torch's), `workers` processes (default: the CPU count), kept for the next steps of the
run (`shutdown_pools` stops them); with one worker, or one task, the tasks run in this process. Workers die with
the run: each asks the kernel for SIGKILL when its parent dies (PR_SET_PDEATHSIG; the signal comes when the
thread that started the pool ends, so start pools from a thread that lives as long as the run, as the pipeline
does), so a `kill -9` of the run leaves no worker behind, and multiprocessing's resource tracker then ends too.
(Not `forkserver`: a killed parent leaves the fork server and the workers it forked running.)
Ray: joins `ray_address` (or RAY_ADDRESS, or a running `ray.init`) or starts a local Ray with `workers` CPUs;
outputs go to the same paths, so on a cluster the output directory must be on a filesystem every node sees.
When a task fails, the tasks already running finish (their markers are kept), the others are not started,
and `TaskError` names the failed task.
"""

from __future__ import annotations

import importlib
import json
import multiprocessing
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

from seedcoder.curate.errors import CurateConfigError
from seedcoder.fileio import atomic_write_text
from seedcoder.processes import die_with_parent
from seedcoder.progress import progress

EXECUTORS = ("local", "ray")


class TaskError(RuntimeError):
    """A task raised; the message names the task and carries the worker's traceback."""


@dataclass(frozen=True)
class Task:
    key: str  # unique within a step, e.g. "part-00003"; used in logs and error messages
    function: str  # "package.module:function", called as function(**args) in the worker
    args: dict[str, Any] = field(default_factory=dict)
    marker: str = ""  # completion marker path; its presence means the task is done


@dataclass
class ExecutorConfig:
    kind: str = "local"  # "local" (process pool) or "ray"
    workers: int | None = None  # processes (local) or CPUs of a local Ray; default: os.cpu_count()
    progress: bool = True  # progress of the tasks on stderr (seedcoder.progress)
    ray_address: str | None = None  # a Ray cluster to join; default RAY_ADDRESS, else a local Ray

    def __post_init__(self) -> None:
        if self.kind not in EXECUTORS:
            raise CurateConfigError(f"executor must be one of {', '.join(EXECUTORS)}, got {self.kind!r}")
        if self.workers is not None and (not isinstance(self.workers, int) or self.workers < 1):
            raise CurateConfigError(f"workers must be a positive integer, got {self.workers!r}")

    @property
    def worker_count(self) -> int:
        return self.workers or os.cpu_count() or 1


def resolve(function: str) -> Callable[..., Any]:
    module_name, _, name = function.partition(":")
    return getattr(importlib.import_module(module_name), name)


def read_marker(path: str) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as file:
            return json.load(file)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):  # unreadable marker: treat the task as not done (it is rerun, outputs rewritten)
        return None


def execute_task(task: Task) -> dict[str, Any]:
    """Run one task in this process and write its marker; returns the marker record. Used by every executor."""
    started = time.perf_counter()
    try:
        stats = resolve(task.function)(**task.args) or {}
    except Exception as error:
        raise TaskError(f"task {task.key} ({task.function}) failed: {type(error).__name__}: {error}\n"
                        f"{traceback.format_exc()}") from None
    record = {"task": task.key, "seconds": round(time.perf_counter() - started, 3), "stats": stats}
    if task.marker:
        atomic_write_text(task.marker, json.dumps(record, sort_keys=True, default=str) + "\n")
    return record


def append_log(log_path: str | None, record: dict[str, Any]) -> None:
    if not log_path:
        return
    line = (json.dumps(record, sort_keys=True, default=str) + "\n").encode("utf-8")
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def _progress_bar(total: int, description: str, enabled: bool):
    return progress(total, description, unit="shard", enabled=enabled)


def run_tasks(tasks: Sequence[Task], config: ExecutorConfig | None = None, *, log_path: str | None = None,
              description: str = "", log_fields: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Run every task whose marker is missing; returns the marker records of all tasks, in task order."""
    config = config or ExecutorConfig()
    keys = [task.key for task in tasks]
    if len(set(keys)) != len(keys):
        raise ValueError(f"{description}: task keys are not unique")
    records: dict[str, dict[str, Any]] = {}
    pending = []
    for task in tasks:
        record = read_marker(task.marker) if task.marker else None
        if record is not None:
            records[task.key] = record
        else:
            pending.append(task)

    def finished(record: dict[str, Any]) -> None:
        records[record["task"]] = record
        append_log(log_path, {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), **(log_fields or {}), **record})
        bar.update(1)

    with _progress_bar(len(pending), description, config.progress) as bar:
        if pending:
            if config.kind == "ray":
                _run_ray(pending, config, finished)
            elif config.worker_count == 1 or len(pending) == 1:
                for task in pending:
                    finished(execute_task(task))
            else:
                _run_pool(pending, config, finished)
    return [records[key] for key in keys]


_POOLS: dict[int, ProcessPoolExecutor] = {}  # workers -> a pool kept for the next steps (worker start-up is slow)
def _pool(workers: int) -> ProcessPoolExecutor:
    pool = _POOLS.get(workers)
    if pool is None or getattr(pool, "_broken", False):
        method = "spawn"
        main_file = getattr(sys.modules.get("__main__"), "__file__", None)
        if main_file is not None and not os.path.exists(main_file) and "fork" in multiprocessing.get_all_start_methods():
            method = "fork"  # a __main__ read from stdin cannot be re-imported by spawned workers
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(method),
                                   initializer=die_with_parent, initargs=(os.getpid(), "the curation run"))
        _POOLS[workers] = pool
    return pool


def shutdown_pools() -> None:
    """Stop the worker processes kept between steps (they also stop when this process exits)."""
    while _POOLS:
        _POOLS.popitem()[1].shutdown(wait=True, cancel_futures=True)


def _run_pool(tasks: Sequence[Task], config: ExecutorConfig, finished: Callable[[dict[str, Any]], None]) -> None:
    workers = config.worker_count
    pool = _pool(workers)
    failure: BaseException | None = None
    queue = list(reversed(tasks))
    running: set[Future] = set()
    while queue or running:
        while queue and failure is None and len(running) < 2 * workers:  # bounded: a failure stops new work
            running.add(pool.submit(execute_task, queue.pop()))
        if not running:
            break
        done, running = wait(running, return_when=FIRST_COMPLETED)
        for future in done:
            try:
                finished(future.result())
            except BaseException as error:  # keep the first failure; let the running tasks finish
                failure = failure or error
    if failure is not None:
        if isinstance(failure, BrokenProcessPool):  # a worker died (killed, out of memory): start afresh next time
            _POOLS.pop(workers, None)
        raise failure


def _ray_init(config: ExecutorConfig):
    import ray

    if not ray.is_initialized():
        address = config.ray_address or os.environ.get("RAY_ADDRESS")
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=config.worker_count, include_dashboard=False, log_to_driver=False)
    return ray


def _run_ray(tasks: Sequence[Task], config: ExecutorConfig, finished: Callable[[dict[str, Any]], None]) -> None:
    ray = _ray_init(config)
    remote = ray.remote(num_cpus=1, max_retries=0)(execute_task)
    running = [remote.remote(task) for task in tasks]
    failure: BaseException | None = None
    while running:
        done, running = ray.wait(running, num_returns=1)
        for reference in done:
            try:
                finished(ray.get(reference))
            except BaseException as error:
                if failure is None:
                    failure = error
                    for other in running:  # not started ones are dropped; running ones end on their own
                        ray.cancel(other, force=False)
    if failure is not None:
        cause = getattr(failure, "cause", None)  # ray.exceptions.RayTaskError wraps the task's exception
        raise cause if isinstance(cause, TaskError) else failure


__all__ = ["EXECUTORS", "ExecutorConfig", "Task", "TaskError", "append_log", "execute_task", "read_marker", "run_tasks",
           "shutdown_pools"]
