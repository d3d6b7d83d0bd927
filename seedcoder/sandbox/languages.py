"""The languages the sandbox runs: names and aliases, the interpreter or compiler each needs, the steps of a run
(compile, run) and the resource limits of each step."""

from __future__ import annotations

import math
import os
import shutil
import sys
import threading

from seedcoder.sandbox.jobs import Limits, SandboxError
from seedcoder.sandbox.launcher import SCRUBBED_PATH
from seedcoder.sandbox.supervise import _run_steps

LANGUAGES = ("python", "c", "cpp", "javascript")
LANGUAGE_ALIASES = {"py": "python", "python3": "python", "c++": "cpp", "cxx": "cpp", "js": "javascript", "node": "javascript"}
SOURCE_NAMES = {"python": "main.py", "c": "main.c", "cpp": "main.cpp", "javascript": "main.js"}


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
