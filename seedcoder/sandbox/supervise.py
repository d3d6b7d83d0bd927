"""Host-side supervision of one run: reserve a uid and a scratch directory, start the launcher (through the zygote
or fresh), feed stdin, collect stdout/stderr and the report, enforce the wall time and the output limit, and turn
what came back into a RunResult (status, and which limit stopped the program)."""

from __future__ import annotations

import marshal
import math
import os
import selectors
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass

from seedcoder.sandbox.jobs import Isolation, Limits, RunResult, SandboxError
from seedcoder.sandbox.launcher import _ZYGOTE, SCRUBBED_PATH, _helper_source, _launcher_python
from seedcoder.sandbox.uids import _UIDS, _count_tasks_of, _kill_uid

REPORT_TAIL_BYTES = 16 << 10  # compile output kept in a result


def isolation_mode() -> str:
    """"root" when this process can give each run its own uid and namespaces, else "userns" (which falls back to
    "rlimits" per run when user namespaces are refused). SEEDCODER_SANDBOX_MODE forces one; as root, every mode
    still runs the program under its own uid."""
    forced = os.environ.get("SEEDCODER_SANDBOX_MODE")
    if forced:
        if forced not in ("root", "userns", "rlimits"):
            raise SandboxError(f"SEEDCODER_SANDBOX_MODE={forced!r}: use root, userns or rlimits")
        return forced
    return "root" if os.geteuid() == 0 else "userns"



def _use_zygote(uid: int | None) -> bool:
    # the fork server only with a run uid: then every leftover process is reachable by the uid sweep, so a kill
    # does not depend on the launcher's process group, which the host cannot address race-free
    return uid is not None and os.environ.get("SEEDCODER_SANDBOX_ZYGOTE", "1") != "0"


def _run_steps(language: str, files: dict[str, str], steps: list[dict], stdin: str, limits: Limits,
               expected_stdout: str | None, name: str) -> RunResult:
    mode = isolation_mode()
    if mode == "userns" and os.geteuid() == 0:
        mode = "root"  # root needs no user namespace for the others; its runs get their own uid instead
    uid = _UIDS.acquire() if os.geteuid() == 0 else None  # never run a program as root, whatever the mode
    started = time.perf_counter()
    scratch = tempfile.mkdtemp(prefix="seedcoder-sandbox-")
    try:
        os.chmod(scratch, 0o711)  # the run's uid may pass through to work/ but not list or read the config
        host_workdir = os.path.join(scratch, "work")
        os.mkdir(host_workdir, 0o700)
        if uid is not None:
            os.chown(host_workdir, uid, uid)
        config = {
            "mode": mode, "uid": uid, "files": files, "steps": steps,
            "host_workdir": host_workdir, "host_scratch": scratch, "workspace_mb": limits.workspace_mb,
            "path": SCRUBBED_PATH, "report_tail_bytes": REPORT_TAIL_BYTES,
            "caller_tasks": _count_tasks_of(os.getuid()) if mode == "rlimits" else 0,
        }
        config_path = os.path.join(scratch, "config.marshal")
        with open(os.open(config_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as file:
            marshal.dump(config, file)
        host = _supervise(config_path, stdin, limits, steps, uid, _use_zygote(uid))
        result = _result(name, language, host, steps, limits, expected_stdout, mode, uid)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if uid is not None:
            _UIDS.release(uid)
    result.total_s = time.perf_counter() - started
    return result


@dataclass
class _HostOutcome:
    stdout: bytes
    stderr: bytes
    stdout_truncated: bool
    stderr_truncated: bool
    killed_for: str | None  # "wall_time" | "output" when the host killed the run
    report: dict | None


class _Launched:
    """A started launcher: its pipe ends (ours) and how to kill it and wait for it."""

    def __init__(self, stdin: int, stdout: int, stderr: int, report: int, process: subprocess.Popen | None = None,
                 pidfd: int | None = None):
        self.stdin, self.stdout, self.stderr, self.report = stdin, stdout, stderr, report
        self.process, self.pidfd = process, pidfd

    def kill(self) -> None:
        try:
            if self.process is not None:
                os.killpg(self.process.pid, signal.SIGKILL)  # launcher + init (+ the program unless it left the group)
            elif self.pidfd is not None:
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)  # the init follows (parent-death signal)
        except OSError:
            pass

    def wait(self, timeout: float) -> bool:
        """True once the launcher has exited (within `timeout` seconds)."""
        if self.process is not None:
            try:
                self.process.wait(timeout=timeout)
                return True
            except subprocess.TimeoutExpired:
                return False
        return bool(self.pidfd is None or _fd_readable(self.pidfd, timeout))

    def close(self) -> None:
        for fd in (self.stdin, self.stdout, self.stderr, self.report, self.pidfd):
            if fd is not None and fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        if self.process is not None and self.process.poll() is None:
            self.kill()
            self.process.wait()


def _fd_readable(fd: int, timeout: float) -> bool:
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        return bool(selector.select(timeout))


def _launch(config_path: str, zygote: bool) -> _Launched:
    """Start the launcher for one run: through the fork server, or as a fresh process."""
    pipes = {name: os.pipe() for name in ("stdin", "stdout", "stderr", "report")}
    theirs = [pipes["stdin"][0], pipes["stdout"][1], pipes["stderr"][1], pipes["report"][1]]
    try:
        if zygote:
            try:
                _, pidfd = _ZYGOTE.launch(config_path, theirs)
                return _Launched(pipes["stdin"][1], pipes["stdout"][0], pipes["stderr"][0], pipes["report"][0], pidfd=pidfd)
            except OSError:
                pass  # no fork server: start the launcher directly
        source = _helper_source(f"_sandbox_launcher({config_path!r}, {pipes['report'][1]})")
        process = subprocess.Popen([_launcher_python(), "-I", "-S", "-c", source], stdin=pipes["stdin"][0],
                                   stdout=pipes["stdout"][1], stderr=pipes["stderr"][1], pass_fds=(pipes["report"][1],),
                                   start_new_session=True, env={"PATH": SCRUBBED_PATH}, cwd="/")
        return _Launched(pipes["stdin"][1], pipes["stdout"][0], pipes["stderr"][0], pipes["report"][0], process=process)
    except BaseException:
        for fd in (pipes["stdin"][1], pipes["stdout"][0], pipes["stderr"][0], pipes["report"][0]):
            os.close(fd)
        raise
    finally:
        for fd in theirs:  # ours are closed by _Launched.close; theirs now live in the launcher
            os.close(fd)


def _supervise(config_path: str, stdin: str, limits: Limits, steps: list[dict], uid: int | None,
               zygote: bool) -> _HostOutcome:
    """Start the launcher; feed stdin; collect stdout/stderr (up to the limit) and the report; enforce wall time."""
    launched = _launch(config_path, zygote)
    # every step's wall time + a margin for the launcher itself; the init enforces each step's own wall time
    deadline = time.monotonic() + sum(step["wall_s"] for step in steps) + 5.0
    cap = limits.output_bytes
    buffers = {"stdout": bytearray(), "stderr": bytearray(), "report": bytearray()}
    truncated = {"stdout": False, "stderr": False}
    killed_for = None
    selector = selectors.DefaultSelector()
    for name in ("stdout", "stderr", "report"):
        fd = getattr(launched, name)
        os.set_blocking(fd, False)
        selector.register(fd, selectors.EVENT_READ, name)
    pending = memoryview(stdin.encode("utf-8"))
    if pending:
        os.set_blocking(launched.stdin, False)
        selector.register(launched.stdin, selectors.EVENT_WRITE, "stdin")
    else:
        os.close(launched.stdin)
        launched.stdin = -1

    def kill(reason: str) -> None:
        nonlocal killed_for
        killed_for = killed_for or reason
        launched.kill()
        if uid is not None:
            _kill_uid(uid)

    drain_until = None  # after a kill: read what is left for a few seconds, then give up on the pipes
    try:
        while selector.get_map():
            now = time.monotonic()
            if killed_for is None and now >= deadline:
                kill("wall_time")
            if killed_for is not None and drain_until is None:
                drain_until = now + 5.0
            if drain_until is not None and now >= drain_until:
                break
            timeout = min(1.0, max(0.0, (drain_until or deadline) - now))
            for key, _ in selector.select(timeout=timeout):
                name = key.data
                if name == "stdin":
                    try:
                        written = os.write(launched.stdin, pending[:65536])
                        pending = pending[written:]
                    except BlockingIOError:
                        continue
                    except OSError:  # the program closed stdin or exited
                        pending = pending[:0]
                    if not pending:
                        selector.unregister(launched.stdin)
                        os.close(launched.stdin)
                        launched.stdin = -1
                    continue
                try:
                    data = os.read(key.fd, 65536)
                except BlockingIOError:
                    continue
                if not data:
                    selector.unregister(key.fd)
                    continue
                buffer = buffers[name]
                if name == "report":
                    buffer += data
                    continue
                room = cap - len(buffer)
                buffer += data[:max(0, room)]
                if len(data) > room:
                    truncated[name] = True
                    if killed_for is None:
                        kill("output")
        # the pipes are closed: the launcher is (nearly) done
        if not launched.wait(max(0.1, deadline - time.monotonic()) if killed_for is None else 5.0):
            kill("wall_time")
            launched.wait(10.0)
    finally:
        selector.close()
        launched.close()
    report = None
    try:  # the init's report; or the launcher's, when the init died without one
        report = marshal.loads(bytes(buffers["report"])) if buffers["report"] else None
    except (ValueError, EOFError, TypeError):
        report = None
    return _HostOutcome(bytes(buffers["stdout"]), bytes(buffers["stderr"]), truncated["stdout"], truncated["stderr"],
                        killed_for, report)


MEMORY_MARKERS = ("MemoryError", "std::bad_alloc", "out of memory", "Cannot allocate memory")
PROCESS_MARKERS = ("Resource temporarily unavailable", "BlockingIOError", "can't start new thread", "fork: retry")
OPEN_FILES_MARKERS = ("Too many open files",)
FILE_SIZE_MARKERS = ("File too large",)


def _signal_name(number: int | None) -> str | None:
    if number is None:
        return None
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def normalize_output(text: str) -> list[str]:
    """Lines with surrounding whitespace stripped and trailing blank lines dropped (how stdout is compared)."""
    lines = [line.strip() for line in text.replace("\r\n", "\n").split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def _result(name: str, language: str, host: _HostOutcome, steps: list[dict], limits: Limits, expected_stdout: str | None,
            mode: str, uid: int | None) -> RunResult:
    report = host.report or {}
    isolation = Isolation(**report["isolation"]) if report.get("isolation") else Isolation(mode=mode, uid=uid)
    result = RunResult(
        name=name, language=language, status="sandbox_error", isolation=isolation,
        stdout=host.stdout.decode("utf-8", "replace"), stderr=host.stderr.decode("utf-8", "replace"),
        stdout_truncated=host.stdout_truncated, stderr_truncated=host.stderr_truncated,
    )
    records = {record["name"]: record for record in report.get("steps", [])}
    if "compile" in records:
        result.compile_output = records["compile"].get("output", "")
        result.compile_s = records["compile"]["wall_s"]
    run = records.get("run")
    if run is not None:
        result.exit_code, result.signal = run["exit_code"], _signal_name(run["signal"])
        result.wall_s, result.cpu_s, result.max_rss_mb = run["wall_s"], run["cpu_s"], run["max_rss_kb"] / 1024
    exec_errors = [record["exec_error"] for record in report.get("steps", []) if record.get("exec_error")]
    if report.get("setup_error") or exec_errors:
        result.error = report.get("setup_error") or exec_errors[0]
        result.status = "sandbox_error"
        return result
    elif host.report is None and host.killed_for is None:
        result.error = f"the sandbox launcher ended without a report: {result.stderr[-2000:]}"

    # which limit stopped it
    compile_record = records.get("compile")
    if host.killed_for:
        result.limit = host.killed_for
    elif compile_record is not None and (compile_record["timed_out"] or compile_record["exit_code"] != 0):
        result.limit = "wall_time" if compile_record["timed_out"] else None
        result.status = "compile_error"
        if compile_record["signal"] is not None:
            result.compile_output += f"\n[compiler killed by {_signal_name(compile_record['signal'])}]"
        return result
    elif run is not None:
        result.limit = _limit_from(run, result.stderr, limits)
    if result.limit is not None:
        result.status = "limit_exceeded"
    elif result.error is not None or run is None:
        result.status = "sandbox_error"
        result.error = result.error or "the program did not run"
    elif run["exit_code"] != 0:
        result.status = "runtime_error"
    elif expected_stdout is not None and normalize_output(result.stdout) != normalize_output(expected_stdout):
        result.status = "wrong_output"
    else:
        result.status = "passed"
    return result


def _limit_from(run: dict, stderr: str, limits: Limits) -> str | None:
    if run.get("memory_exceeded"):
        return "memory"
    if run["timed_out"]:
        return "wall_time"
    if run["exit_code"] == 0:
        return None
    signal_number = run["signal"]
    if signal_number == signal.SIGXCPU or (signal_number == signal.SIGKILL and run["cpu_s"] >= math.ceil(limits.cpu_s) - 0.05):
        return "cpu_time"
    if signal_number == signal.SIGXFSZ or any(marker in stderr for marker in FILE_SIZE_MARKERS):
        return "file_size"
    if any(marker in stderr for marker in MEMORY_MARKERS):
        return "memory"
    if any(marker in stderr for marker in PROCESS_MARKERS):
        return "processes"
    if any(marker in stderr for marker in OPEN_FILES_MARKERS):
        return "open_files"
    return None
