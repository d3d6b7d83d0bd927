"""What a sandbox run is given (SandboxJob, Limits) and what it gives back (RunResult, Isolation), and SandboxError."""

from __future__ import annotations  # Limits.__post_init__ reads the annotations as strings ("int")

import dataclasses
import math
from dataclasses import dataclass, field

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

