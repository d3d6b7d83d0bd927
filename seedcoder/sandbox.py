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
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import fcntl
import inspect
import marshal
import math
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

LANGUAGES = ("python", "c", "cpp", "javascript")
LANGUAGE_ALIASES = {"py": "python", "python3": "python", "c++": "cpp", "cxx": "cpp", "js": "javascript", "node": "javascript"}
SOURCE_NAMES = {"python": "main.py", "c": "main.c", "cpp": "main.cpp", "javascript": "main.js"}
# One uid per concurrent run, from a range no real user or container maps (below 2^31: some tools choke above).
UID_BASE = 2_000_000_000
UID_COUNT = 4096
UID_LOCK_DIR = os.environ.get("SEEDCODER_SANDBOX_LOCK_DIR", "/tmp/.seedcoder-sandbox-uids")
SCRUBBED_PATH = "/usr/local/bin:/usr/bin:/bin"
REPORT_TAIL_BYTES = 16 << 10  # compile output kept in a result
LIMIT_NAMES = ("wall_time", "cpu_time", "memory", "output", "file_size", "processes", "open_files")
STATUSES = ("passed", "wrong_output", "runtime_error", "compile_error", "limit_exceeded", "sandbox_error")


class SandboxError(ValueError):
    """A bad argument to the sandbox (unknown language, bad limit, missing compiler): the message names it."""


@dataclass(frozen=True)
class Limits:
    """Per-run limits. The compile step of C/C++ has its own CPU, wall and memory limits (compilers are big)."""

    cpu_s: float = 10.0
    wall_s: float = 20.0
    memory_mb: int = 512
    file_size_mb: int = 16
    processes: int = 32  # processes + threads of the program (RLIMIT_NPROC counts tasks)
    open_files: int = 64
    output_bytes: int = 1 << 20  # stdout and stderr each; more stops the run
    workspace_mb: int = 64  # size of each private tmpfs (the working directory lives in /tmp)
    compile_cpu_s: float = 30.0
    compile_wall_s: float = 60.0
    compile_memory_mb: int = 2048

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or math.isinf(value):
                raise SandboxError(f"Limits.{f.name} must be a positive finite number, got {value!r}")
            if f.type == "int" and not isinstance(value, int):
                raise SandboxError(f"Limits.{f.name} must be an integer, got {value!r}")


@dataclass
class Isolation:
    """What isolation a run actually got; `notes` says why anything is missing."""

    mode: str = "none"  # "root": own uid + namespaces; "userns": a user namespace; "rlimits": resource limits only
    uid: int | None = None
    network_isolated: bool = False
    pid_namespace: bool = False
    filesystem_isolated: bool = False  # read-only file system + private /tmp, /var/tmp, /dev/shm
    notes: list[str] = field(default_factory=list)


@dataclass
class RunResult:
    """The outcome of one program. `limit` names the limit that stopped it (one of LIMIT_NAMES) or is None."""

    name: str
    language: str
    status: str  # one of STATUSES
    limit: str | None = None
    exit_code: int | None = None
    signal: str | None = None  # e.g. "SIGKILL"
    wall_s: float = 0.0  # the program (run step)
    cpu_s: float = 0.0
    max_rss_mb: float = 0.0
    stdout: str = ""
    stderr: str = ""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    compile_output: str = ""
    compile_s: float = 0.0
    total_s: float = 0.0  # host wall time, sandbox set-up included
    error: str | None = None  # a sandbox failure (not the program's)
    isolation: Isolation = field(default_factory=Isolation)

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def to_dict(self, max_output_chars: int | None = None) -> dict:
        record = dataclasses.asdict(self)
        record["passed"] = self.passed
        if max_output_chars is not None:
            for key in ("stdout", "stderr", "compile_output"):
                if len(record[key]) > max_output_chars:
                    record[key] = record[key][:max_output_chars] + f"... [{len(record[key]) - max_output_chars} more chars]"
        return record


@dataclass(frozen=True)
class SandboxJob:
    """One program for `run_tests`; the fields are `run_program`'s arguments."""

    language: str
    source: str
    stdin: str = ""
    tests: str | None = None
    expected_stdout: str | None = None
    limits: Limits | None = None
    name: str = ""


# ------------------------------------------------------------------------------------------------ languages
def normalize_language(language: str) -> str:
    key = str(language).strip().lower()
    key = LANGUAGE_ALIASES.get(key, key)
    if key not in LANGUAGES:
        raise SandboxError(f"language {language!r} is not supported; choose one of {', '.join(LANGUAGES)}")
    return key


_PYTHON_LOCK = threading.Lock()
_PYTHON: dict[str, str | None] = {}


def sandbox_python() -> str | None:
    """The Python that sandboxed programs run with: $SEEDCODER_SANDBOX_PYTHON, else the first of this interpreter,
    its base interpreter and python3 on PATH that starts inside the sandbox (the run's uid may not be allowed to
    reach this interpreter: e.g. one under /root). Probed once per process."""
    forced = os.environ.get("SEEDCODER_SANDBOX_PYTHON")
    if forced:
        return forced
    with _PYTHON_LOCK:
        if "python" not in _PYTHON:
            candidates = [sys.executable, getattr(sys, "_base_executable", None), os.path.realpath(sys.executable),
                          shutil.which("python3", path=SCRUBBED_PATH), shutil.which("python3")]
            _PYTHON["python"] = None
            tried = []
            for candidate in dict.fromkeys(c for c in candidates if c and os.access(c, os.X_OK)):
                argv = [candidate, "-I", "-c", "print(6 * 7)"]
                steps = [{"name": "run", "stdin": "null", "capture": False, "wall_s": 20.0, "argv": argv,
                          "rlimits": _rlimits(10, 512, Limits(), memory_kind="as"), "memory_total_bytes": 512 << 20}]
                probe = _run_steps("python", {}, steps, "", Limits(), None, "python probe")
                tried.append(f"{candidate}: {probe.status} {probe.error or probe.stderr[-300:]}".strip())
                if probe.passed and probe.stdout.strip() == "42":
                    _PYTHON["python"] = candidate
                    break
            _PYTHON["probe"] = "; ".join(tried)
        return _PYTHON["python"]


def _tool(language: str) -> str | None:
    """The executable a language needs (absolute path), or None when it is not installed."""
    if language == "python":
        return sandbox_python()
    name = {"c": "gcc", "cpp": "g++", "javascript": "node"}[language]
    env_override = os.environ.get(f"SEEDCODER_SANDBOX_{name.upper().replace('+', 'X')}")
    found = env_override or shutil.which(name)
    return os.path.realpath(found) if found else None


def available_languages() -> dict[str, bool]:
    """{language: whether its compiler/interpreter is installed here}."""
    return {language: _tool(language) is not None for language in LANGUAGES}


def _steps(language: str, limits: Limits) -> list[dict]:
    tool = _tool(language)
    if tool is None:
        if language == "python":
            raise SandboxError(f"no Python starts inside the sandbox (set SEEDCODER_SANDBOX_PYTHON): {_PYTHON.get('probe')}")
        raise SandboxError(f"language {language!r} needs {'node' if language == 'javascript' else 'a compiler'}, "
                           "which is not installed (see available_languages())")
    source = SOURCE_NAMES[language]
    run_limits = _rlimits(limits.cpu_s, limits.memory_mb, limits, memory_kind="data" if language == "javascript" else "as")
    run_step = {"name": "run", "stdin": "pipe", "capture": False, "wall_s": limits.wall_s, "rlimits": run_limits,
                "memory_total_bytes": int(limits.memory_mb) << 20}
    if language == "python":
        return [{**run_step, "argv": [tool, "-I", "-B", source]}]
    if language == "javascript":
        return [{**run_step, "argv": [tool, source]}]
    standard = ["-std=gnu17"] if language == "c" else ["-std=gnu++17"]
    compile_step = {
        "name": "compile", "stdin": "null", "capture": True, "wall_s": limits.compile_wall_s,
        "argv": [tool, "-O2", *standard, "-o", "main", source] + (["-lm"] if language == "c" else []),
        "rlimits": _rlimits(limits.compile_cpu_s, limits.compile_memory_mb, limits, memory_kind="as"),
        "memory_total_bytes": int(limits.compile_memory_mb) << 20,
    }
    return [compile_step, {**run_step, "argv": ["./main"]}]


def _rlimits(cpu_s: float, memory_mb: int, limits: Limits, *, memory_kind: str) -> dict[str, list[int]]:
    cpu = max(1, math.ceil(cpu_s))
    memory = int(memory_mb) << 20
    table = {
        "CPU": [cpu, cpu + 1],  # SIGXCPU at the soft limit, SIGKILL a second later if it is handled
        "FSIZE": [int(limits.file_size_mb) << 20] * 2,
        "NOFILE": [int(limits.open_files)] * 2,
        "NPROC": [int(limits.processes)] * 2,
        "CORE": [0, 0],
    }
    table["AS" if memory_kind == "as" else "DATA"] = [memory, memory]
    return table


# ------------------------------------------------------------------------------------------------ uids
class _UidPool:
    """Hands out uids from UID_BASE.. that no other run uses, this process or another (flock on a lock file)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._free: list[int] = []
        self._held: dict[int, int] = {}  # uid -> fd of its lock file, kept for the life of the process
        self._next = 0

    def acquire(self) -> int:
        with self._lock:
            if self._free:
                return self._free.pop()
            if not self._held:
                os.makedirs(UID_LOCK_DIR, mode=0o700, exist_ok=True)
                info = os.lstat(UID_LOCK_DIR)
                if info.st_uid != os.geteuid() or not os.path.isdir(UID_LOCK_DIR) or os.path.islink(UID_LOCK_DIR):
                    raise SandboxError(f"uid lock directory {UID_LOCK_DIR} is not a directory owned by this user")
            for _ in range(UID_COUNT):
                offset = self._next
                self._next = (self._next + 1) % UID_COUNT
                uid = UID_BASE + offset
                if uid in self._held:
                    continue
                fd = os.open(os.path.join(UID_LOCK_DIR, f"{uid}.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    os.close(fd)
                    continue
                self._held[uid] = fd
                return uid
            raise SandboxError(f"all {UID_COUNT} sandbox uids are in use (lock files in {UID_LOCK_DIR})")

    def release(self, uid: int) -> None:
        with self._lock:
            self._free.append(uid)


_UIDS = _UidPool()


def _kill_uid(uid: int) -> None:
    """SIGKILL every process of `uid` at once: kill(-1) run as that uid (atomic in the kernel, so a fork bomb
    cannot outrun it). Only safe because the uid belongs to one run alone."""
    try:
        subprocess.run(["kill", "-s", "KILL", "--", "-1"], user=uid, group=uid, extra_groups=[], env={"PATH": SCRUBBED_PATH},
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        for entry in os.listdir("/proc"):  # no kill binary: one pass over /proc
            if entry.isdigit():
                try:
                    if os.stat(f"/proc/{entry}").st_uid == uid:
                        os.kill(int(entry), signal.SIGKILL)
                except OSError:
                    pass


# ------------------------------------------------------------------------------------------------ launcher
def _sandbox_launcher(config_path: str, report_fd: int) -> None:
    """One run, as root (or in a user namespace): namespaces, init, steps, report on `report_fd`; never returns.

    Runs in a child of the zygote (or a fresh `python -I -S`), so it is self-contained: its source is shipped to
    that process, it imports what it needs and uses no module globals."""
    import ctypes
    import marshal  # built in: json would import re, which costs more than the rest of the launcher
    import os
    import resource
    import select
    import signal
    import time

    with open(config_path, "rb") as file:
        config = marshal.load(file)
    os.set_inheritable(report_fd, False)  # the program must not inherit the report pipe
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
    libc.syscall.restype = ctypes.c_long
    ms_nosuid, ms_nodev, ms_noexec, ms_rec, ms_private = 0x2, 0x4, 0x8, 0x4000, 0x40000
    uid = config["uid"]
    isolation = {"mode": config["mode"], "uid": uid, "network_isolated": False, "pid_namespace": False,
                 "filesystem_isolated": False, "notes": []}
    notes = isolation["notes"]

    def error_text(what):
        return f"{what}: {os.strerror(ctypes.get_errno())}"

    def write_report(report):
        data = marshal.dumps(report)
        while data:
            data = data[os.write(report_fd, data):]

    namespaces = {}
    if config["mode"] == "userns":
        outer_uid, outer_gid = os.getuid(), os.getgid()
        if libc.unshare(0x10000000) != 0:  # CLONE_NEWUSER
            notes.append(error_text("user namespace refused") + "; running with resource limits only")
            isolation["mode"] = "rlimits"
        else:
            for path, text in (("/proc/self/setgroups", "deny"), ("/proc/self/uid_map", f"{outer_uid} {outer_uid} 1"),
                               ("/proc/self/gid_map", f"{outer_gid} {outer_gid} 1")):
                with open(path, "w") as file:
                    file.write(text)
    if isolation["mode"] in ("root", "userns"):
        for name, flag in (("mount", 0x20000), ("network", 0x40000000), ("pid", 0x20000000), ("ipc", 0x08000000),
                           ("uts", 0x04000000)):
            namespaces[name] = libc.unshare(flag) == 0
            if not namespaces[name]:
                notes.append(error_text(f"{name} namespace refused"))
    isolation["network_isolated"] = namespaces.get("network", False)
    if not isolation["network_isolated"]:
        notes.append("no network namespace: the program can open network connections")
    isolation["pid_namespace"] = namespaces.get("pid", False)
    launcher_pid = os.getpid()

    init_pid = os.fork()
    if init_pid:
        _, status = os.waitpid(init_pid, 0)
        if status != 0:
            write_report({"setup_error": f"sandbox init exited with status {status}", "isolation": isolation})
        os._exit(0)

    # ---- init: PID 1 of the new PID namespace (when there is one)
    report = {"isolation": isolation, "steps": [], "setup_error": None}
    private_proc = False  # /proc shows only the PID namespace's processes
    try:
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG: the host kills the launcher -> init dies -> all die
        if not isolation["pid_namespace"] and os.getppid() != launcher_pid:
            os._exit(1)
        libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: orphans come to us, so we reap them
        workdir = config["host_workdir"]
        if namespaces.get("mount"):
            if libc.mount(None, b"/", None, ms_rec | ms_private, None) != 0:
                raise OSError(error_text("making / private"))
            # mount_setattr(AT_FDCWD, "/", AT_RECURSIVE, {attr_set: RDONLY | NOSUID}): every mount read-only at once
            attr = (ctypes.c_uint64 * 4)(0x1 | 0x2, 0, 0, 0)
            readonly = libc.syscall(442, -100, b"/", 0x8000, ctypes.byref(attr), ctypes.sizeof(attr)) == 0
            if not readonly:
                notes.append(error_text("read-only remount of / refused") + "; the file system is protected by the uid only")
            size = f"size={config['workspace_mb']}m,nr_inodes=16384,mode=1777".encode()
            for directory in ("/tmp", "/var/tmp", "/dev/shm", "/run"):  # /run: daemons' unix sockets (D-Bus, databases)
                if not os.path.isdir(directory):
                    continue
                if libc.mount(b"tmpfs", directory.encode(), b"tmpfs", ms_nosuid | ms_nodev, size) != 0:
                    raise OSError(error_text(f"mounting a tmpfs on {directory}"))
            proc_flags = ms_nosuid | ms_nodev | ms_noexec
            if isolation["pid_namespace"]:
                private_proc = libc.mount(b"proc", b"/proc", b"proc", proc_flags, None) == 0
                if not private_proc:
                    notes.append(error_text("mounting a fresh /proc"))
            isolation["filesystem_isolated"] = readonly
            workdir = "/tmp/sandbox"
            os.mkdir(workdir, 0o700)
        else:
            notes.append("no mount namespace: the program sees and may write world-writable host directories (/tmp)")
        log_dir = "/tmp" if namespaces.get("mount") else config["host_scratch"]
        for name, text in config["files"].items():
            path = os.path.join(workdir, name)
            with open(path, "w", encoding="utf-8") as file:
                file.write(text)
            if uid is not None:
                os.chown(path, uid, uid)
        if uid is not None:
            os.chown(workdir, uid, uid)
        env = {"PATH": config["path"], "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": workdir, "TMPDIR": workdir,
               "PYTHONIOENCODING": "utf-8", "PYTHONDONTWRITEBYTECODE": "1"}
        extra_nproc = 0
        if isolation["mode"] == "userns":
            extra_nproc = 2  # the launcher and the init share the program's user in the namespace
        elif isolation["mode"] == "rlimits" and uid is None:
            extra_nproc = config["caller_tasks"]  # RLIMIT_NPROC counts every process of the caller's uid

        page_size = os.sysconf("SC_PAGE_SIZE")
        own_pids = {str(os.getpid()), str(launcher_pid)}
        # whose memory counts: everything in our /proc (PID namespace), else the run's own uid, else nobody's
        memory_scan = "namespace" if private_proc else ("uid" if uid is not None else None)

        def resident_bytes():
            """Resident memory of all the run's processes (RLIMIT_AS caps each one; this caps their sum)."""
            total = 0
            for entry in os.listdir("/proc") if memory_scan else ():
                if not entry.isdigit() or entry in own_pids:
                    continue
                try:
                    if memory_scan == "uid" and os.stat(f"/proc/{entry}").st_uid != uid:
                        continue
                    with open(f"/proc/{entry}/statm", "rb") as statm:
                        total += int(statm.read().split()[1]) * page_size
                except (OSError, ValueError, IndexError):
                    continue
            return total

        def sweep(reap=True):
            """Kill every process the step left (kill(-1) as the run's uid, or the whole PID namespace)."""
            if uid is None and not isolation["pid_namespace"]:
                return  # kill(-1) would reach the caller's other processes: only the step's process group was killed
            helper = os.fork()
            if helper == 0:
                try:
                    if uid is not None:
                        os.setresgid(uid, uid, uid)
                        os.setresuid(uid, uid, uid)
                    os.kill(-1, signal.SIGKILL)
                except OSError:
                    pass
                os._exit(0)
            if not reap:
                os.waitpid(helper, 0)
                return
            while True:  # reap everything (we are the subreaper); ECHILD once all are gone
                try:
                    os.waitpid(-1, 0)
                except ChildProcessError:
                    break
                except InterruptedError:
                    continue

        for step in config["steps"]:
            log_path = os.path.join(log_dir, f".sandbox-{step['name']}.log")
            started = time.monotonic()
            exec_error_read, exec_error_write = os.pipe()  # close-on-exec: stays empty when the exec works
            child = os.fork()
            if child == 0:
                try:
                    os.close(exec_error_read)
                    os.setsid()
                    if step["stdin"] == "null":
                        os.dup2(os.open("/dev/null", os.O_RDONLY), 0)
                    if step["capture"]:
                        log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_EXCL, 0o600)
                        os.dup2(log_fd, 1)
                        os.dup2(log_fd, 2)
                    for key, (soft, hard) in step["rlimits"].items():
                        if key == "NPROC":
                            soft, hard = soft + extra_nproc, hard + extra_nproc
                        resource.setrlimit(getattr(resource, "RLIMIT_" + key), (soft, hard))
                    if uid is not None:
                        os.setgroups([])
                        os.setresgid(uid, uid, uid)
                        os.setresuid(uid, uid, uid)
                    if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS: setuid binaries cannot elevate
                        raise OSError(error_text("no_new_privs"))
                    os.chdir(workdir)
                    os.execve(step["argv"][0], step["argv"], env)
                except BaseException as error:  # noqa: BLE001 - anything here is reported as a failed start
                    os.write(exec_error_write, f"cannot start {step['argv'][0]}: {error}".encode()[:4000])
                finally:
                    os._exit(127)
            os.close(exec_error_write)
            timed_out = False
            deadline = started + step["wall_s"]
            try:
                pidfd = os.pidfd_open(child)
            except (AttributeError, OSError):
                pidfd = None
            memory_exceeded = False
            memory_cap = step["memory_total_bytes"]
            poll = 0.02 if memory_scan == "namespace" else 0.1  # without a PID namespace a scan reads all of /proc
            while True:
                finished, status, usage = os.wait4(child, os.WNOHANG)
                if finished:
                    break
                remaining = deadline - time.monotonic()
                over_memory = memory_cap and resident_bytes() > memory_cap
                if remaining <= 0 or over_memory:
                    timed_out, memory_exceeded = not over_memory, bool(over_memory)
                    try:
                        os.killpg(child, signal.SIGKILL)
                    except OSError:
                        pass
                    sweep(reap=False)
                    finished, status, usage = os.wait4(child, 0)
                    break
                if pidfd is not None:
                    select.select([pidfd], [], [], min(remaining, poll))
                else:
                    time.sleep(min(remaining, 0.005))
            if pidfd is not None:
                os.close(pidfd)
            wall = time.monotonic() - started
            exec_error = os.read(exec_error_read, 4096).decode("utf-8", "replace")
            os.close(exec_error_read)
            sweep()
            record = {
                "name": step["name"], "wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime,
                "max_rss_kb": usage.ru_maxrss, "timed_out": timed_out,
                "exit_code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
                "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None, "exec_error": exec_error or None,
                "memory_exceeded": memory_exceeded,
            }
            if step["capture"]:
                try:
                    with open(log_path, "rb") as file:
                        record["output"] = file.read(config["report_tail_bytes"]).decode("utf-8", "replace")
                    os.unlink(log_path)
                except OSError:
                    record["output"] = ""
            report["steps"].append(record)
            if timed_out or record["exit_code"] != 0 or exec_error:
                break
    except BaseException as error:  # noqa: BLE001 - reported to the host as a sandbox failure
        report["setup_error"] = f"{type(error).__name__}: {error}"
    write_report(report)
    os._exit(0)


def _sandbox_zygote(socket_fd: int) -> None:
    """The fork server: started once per host process, it forks a launcher per run request, so a run does not pay
    for a Python start and the launcher's imports. A request on the SOCK_SEQPACKET socket is the config path with
    five fds: stdin, stdout, stderr and report pipe ends for the run, and a socket for the reply (the launcher's
    pid and a pidfd, so the host can kill it without a pid-reuse race). Exits when the host closes the socket."""
    import ctypes  # noqa: F401 - imported once here, so the launchers fork with it loaded
    import marshal  # noqa: F401
    import os
    import resource  # noqa: F401
    import select
    import signal
    import socket

    server = socket.socket(fileno=socket_fd)
    while True:
        while True:  # reap finished launchers (they stay zombies until here, so each pidfd_open below is race-free)
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    break
            except ChildProcessError:
                break
        if not select.select([server], [], [], 1.0)[0]:
            continue
        try:
            message, fds, _, _ = socket.recv_fds(server, 65536, 8, socket.MSG_CMSG_CLOEXEC)
        except InterruptedError:
            continue
        if not message:
            os._exit(0)  # the host is gone
        if len(fds) != 5:
            for fd in fds:
                os.close(fd)
            continue
        stdin_fd, stdout_fd, stderr_fd, report_fd, reply_fd = fds
        pid = os.fork()
        if pid == 0:
            try:
                server.close()
                os.close(reply_fd)
                for target, fd in ((0, stdin_fd), (1, stdout_fd), (2, stderr_fd)):
                    os.dup2(fd, target)
                    os.close(fd)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                os.setsid()
                _sandbox_launcher(message.decode(), report_fd)
            finally:
                os._exit(70)
        for fd in (stdin_fd, stdout_fd, stderr_fd, report_fd):
            os.close(fd)
        reply = socket.socket(fileno=reply_fd)
        try:
            pidfd = os.pidfd_open(pid)
            try:
                socket.send_fds(reply, [str(pid).encode()], [pidfd])
            finally:
                os.close(pidfd)
        except OSError:
            pass  # the host sees the reply socket close without an answer
        reply.close()


_SOURCES: dict[str, str] = {}


def _helper_source(entry: str) -> str:
    """Python source for `python -I -S -c`: the launcher (and the zygote) functions and a call of `entry`."""
    if entry not in _SOURCES:
        parts = [textwrap.dedent(inspect.getsource(_sandbox_launcher))]
        if entry.startswith("_sandbox_zygote"):
            parts.append(textwrap.dedent(inspect.getsource(_sandbox_zygote)))
        _SOURCES[entry] = "\n\n".join(parts) + f"\n\n{entry}\n"
    return _SOURCES[entry]


class _Zygote:
    """The host's handle on its fork server (one per process, started on first use, restarted if it died)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self._socket = None

    def _start(self) -> None:
        import socket

        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            source = _helper_source(f"_sandbox_zygote({theirs.fileno()})")
            self._process = subprocess.Popen([_launcher_python(), "-I", "-S", "-c", source], pass_fds=(theirs.fileno(),),
                                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True,
                                             env={"PATH": SCRUBBED_PATH}, cwd="/")
        finally:
            theirs.close()
        self._socket = ours

    def launch(self, config_path: str, fds: list[int]) -> tuple[int, int]:
        """Send a run request; returns (launcher pid, pidfd). Raises OSError when the zygote cannot be reached."""
        import socket

        reply_ours, reply_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            with self._lock:
                for attempt in range(2):
                    if self._process is None or self._process.poll() is not None:
                        self._start()
                    try:
                        socket.send_fds(self._socket, [config_path.encode()], fds + [reply_theirs.fileno()])
                        break
                    except OSError:
                        self._process = None
                        if attempt:
                            raise
            reply_theirs.close()
            reply_ours.settimeout(30.0)
            message, received, _, _ = socket.recv_fds(reply_ours, 64, 1, socket.MSG_CMSG_CLOEXEC)
            if not message or len(received) != 1:
                for fd in received:
                    os.close(fd)
                raise OSError("the sandbox zygote did not start a launcher")
            return int(message), received[0]
        finally:
            reply_theirs.close()
            reply_ours.close()


_ZYGOTE = _Zygote()


def _launcher_python() -> str:
    """The interpreter that runs the launcher (as the caller, so any Python works: this one)."""
    return os.path.realpath(sys.executable)


def _count_tasks_of(uid: int) -> int:
    """Processes + threads of `uid` (what RLIMIT_NPROC counts)."""
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    count += len(os.listdir(f"/proc/{entry}/task"))
            except OSError:
                pass
    return count


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


# ------------------------------------------------------------------------------------------------ running
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
    "available_languages", "isolation_mode", "normalize_language", "normalize_output", "run_program", "run_tests",
    "summarize",
]
