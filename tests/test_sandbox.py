"""The sandbox contains hostile programs (fork bomb, memory bomb, infinite loops, writes outside its directory,
network connections, reads of the parent's secrets) and runs ordinary ones (Python, C, C++, JavaScript, stdin,
many at once). Hostile programs are capped small (32 processes, 256 MB) so that a sandbox bug cannot exhaust
the shared machine, and the fork bomb runs only after a harmless probe proved the process limit holds."""

from __future__ import annotations

import collections
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid

import pytest

from seedcoder import sandbox
from seedcoder.sandbox import Limits, SandboxError, SandboxJob, run_program, run_tests
from seedcoder.sandbox.uids import UID_BASE, UID_COUNT

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IS_ROOT = os.geteuid() == 0
HOSTILE = Limits(cpu_s=2, wall_s=3, memory_mb=256, processes=32, file_size_mb=4, output_bytes=64 << 10)

needs_root = pytest.mark.skipif(not IS_ROOT, reason="the per-run uid (and these checks of it) need root")


def sandbox_processes(program_only: bool = False) -> list[int]:
    """Host pids of processes running under any sandbox uid; program_only: only the program's own (main.py),
    not the sandbox's short-lived kill helpers, which run under the run's uid too."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                uid = os.stat(f"/proc/{entry}").st_uid
                if program_only and UID_BASE <= uid < UID_BASE + UID_COUNT:
                    with open(f"/proc/{entry}/cmdline", "rb") as file:
                        if b"main.py" not in file.read():
                            continue
            except OSError:
                continue
            if UID_BASE <= uid < UID_BASE + UID_COUNT:
                pids.append(int(entry))
    return pids


def _uid_of(pid: int) -> int:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return -1


class ProcessCounter:
    """Samples the number of sandbox-uid processes on the host while a run is going on; keeps the maximum."""

    def __init__(self, interval: float = 0.02):
        self.maximum = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, args=(interval,), daemon=True)

    def _loop(self, interval: float) -> None:
        while not self._stop.is_set():
            # per uid: each run has its own uid and its own limit; an earlier run's programs may still be dying.
            # A process gone since the listing has no uid (-1): not counted (the programs of concurrent runs,
            # vanishing together on a loaded machine, could add up under -1)
            per_run = collections.Counter(uid for uid in map(_uid_of, sandbox_processes(program_only=True)) if uid >= 0)
            self.maximum = max(self.maximum, max(per_run.values(), default=0))
            time.sleep(interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def wait_no_sandbox_processes(timeout: float = 5.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = sandbox_processes()
        if not left:
            return []
        time.sleep(0.05)
    return sandbox_processes()


def test_python_stdin_and_expected_stdout():
    result = run_program("python", "print(input()[::-1])\nprint('  second line  ')", stdin="abc\n",
                         expected_stdout="cba\nsecond line\n\n")
    assert result.passed, result
    assert result.exit_code == 0 and result.signal is None and result.limit is None
    assert result.stdout == "cba\n  second line  \n"
    assert result.wall_s > 0 and result.total_s >= result.wall_s
    wrong = run_program("python", "print(input())", stdin="abc\n", expected_stdout="abd")
    assert wrong.status == "wrong_output" and not wrong.passed
    failing = run_program("python", "import sys\nsys.exit(3)")
    assert failing.status == "runtime_error" and failing.exit_code == 3


def test_tests_are_appended_and_asserts_fail_the_run():
    source = "def add(a, b):\n    return a + b\n"
    assert run_program("python", source, tests="assert add(2, 3) == 5").passed
    result = run_program("python", source, tests="assert add(2, 3) == 6")
    assert result.status == "runtime_error" and "AssertionError" in result.stderr


def test_large_stdin_is_streamed():
    data = "".join(f"{i}\n" for i in range(200_000))  # ~1.3 MB: more than a pipe buffer
    result = run_program("python", "import sys\nprint(sum(int(line) for line in sys.stdin))", stdin=data)
    assert result.passed, result
    assert int(result.stdout) == sum(range(200_000))


@needs_root
def test_isolation_is_reported():
    result = run_program("python", "import os\nprint(os.getuid(), os.getgid(), os.getgroups(), os.getcwd(), os.getpid())")
    assert result.passed, result
    isolation = result.isolation
    assert isolation.mode == "root"
    uid, gid, groups, cwd, pid = result.stdout.split(" ", 4)
    assert UID_BASE <= int(uid) < UID_BASE + UID_COUNT and uid == gid and isolation.uid == int(uid)
    assert groups == "[]"
    if isolation.pid_namespace:
        assert int(pid) <= 3  # init is 1, the program 2
    if isolation.filesystem_isolated:
        assert cwd == "/tmp/sandbox"
        listing = run_program("python", "import os\nprint(sorted(os.listdir('/run')), sorted(os.listdir('/tmp')))")
        assert listing.stdout.strip() == "[] ['sandbox']"  # no daemon sockets, no host temp files
    for missing, flag in (("network", isolation.network_isolated), ("pid", isolation.pid_namespace)):
        if not flag:
            assert any(missing in note for note in isolation.notes), isolation.notes


@pytest.fixture(scope="module")
def process_limit_holds():
    """The harmless probe: a program tries to start 100 sleeping processes under a limit of 16."""
    probe = (
        "import subprocess\n"
        "started, refused = [], 0\n"
        "for _ in range(100):\n"
        "    try:\n"
        "        started.append(subprocess.Popen(['sleep', '5']))\n"
        "    except OSError:\n"
        "        refused += 1\n"
        "print(len(started), refused)\n"
        "for process in started:\n"
        "    process.kill()\n"
        "    process.wait()\n"
    )
    with ProcessCounter() as counter:
        result = run_program("python", probe, limits=Limits(processes=16, wall_s=20, memory_mb=256))
    assert result.passed, result
    started, refused = map(int, result.stdout.split())
    if not (0 < started <= 15 and refused == 100 - started and counter.maximum <= 16):
        pytest.fail(f"the process limit does not hold here (started {started}, at most {counter.maximum} processes "
                    "at once): the fork bomb test is NOT run")
    return started


@needs_root
def test_process_limit_probe(process_limit_holds):
    assert process_limit_holds == 15  # the program itself is the 16th


@needs_root
@pytest.mark.parametrize("catches_errors", [False, True], ids=["dies-on-eagain", "retries-forever"])
def test_fork_bomb_is_contained(process_limit_holds, catches_errors):
    bomb = ("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n" if catches_errors
            else "import os\nwhile True:\n    os.fork()\n")
    started = time.monotonic()
    with ProcessCounter() as counter:
        result = run_program("python", bomb, limits=HOSTILE)
    assert not result.passed and result.status == "limit_exceeded"
    assert result.limit in (("wall_time", "cpu_time") if catches_errors else ("processes",)), result
    assert counter.maximum <= HOSTILE.processes
    assert time.monotonic() - started < HOSTILE.wall_s + 8
    assert wait_no_sandbox_processes() == []
    assert subprocess.run(["true"]).returncode == 0  # the host can still start processes


def test_memory_bomb_is_stopped():
    result = run_program("python", "blocks = []\nwhile True:\n    blocks.append(bytearray(8 << 20))\n", limits=HOSTILE)
    assert result.status == "limit_exceeded" and result.limit == "memory", result
    assert "MemoryError" in result.stderr
    assert result.max_rss_mb <= HOSTILE.memory_mb + 16


def test_memory_of_all_processes_together_is_capped():
    # six children of 100 MB each: every one under the per-process limit, together far over it
    program = (
        "import os, time\n"
        "for _ in range(6):\n"
        "    if os.fork() == 0:\n"
        "        block = bytearray(100 << 20)\n"
        "        time.sleep(10)\n"
        "        os._exit(0)\n"
        "os.wait()\n"
        "print('survived')\n"
    )
    result = run_program("python", program, limits=Limits(memory_mb=256, wall_s=8, processes=16))
    assert result.status == "limit_exceeded" and result.limit == "memory", result
    assert "survived" not in result.stdout


def test_shared_mapping_counts_against_memory():
    # MAP_SHARED anonymous memory escapes RLIMIT_DATA but not RLIMIT_AS
    result = run_program("python", "import mmap\nm = mmap.mmap(-1, 1 << 30)\nm[-1] = 1\n", limits=HOSTILE)
    assert result.status == "limit_exceeded" and result.limit == "memory", result


def test_infinite_loop_hits_the_cpu_limit():
    result = run_program("python", "while True:\n    pass\n", limits=Limits(cpu_s=1, wall_s=30))
    assert result.status == "limit_exceeded" and result.limit == "cpu_time", result
    assert result.signal in ("SIGXCPU", "SIGKILL")
    assert 0.8 <= result.cpu_s <= 3.0


def test_sleeping_program_hits_the_wall_limit():
    started = time.monotonic()
    result = run_program("python", "import time\ntime.sleep(60)\n", limits=Limits(cpu_s=5, wall_s=1))
    assert result.status == "limit_exceeded" and result.limit == "wall_time", result
    assert result.signal == "SIGKILL"
    assert time.monotonic() - started < 10


@needs_root
def test_background_processes_do_not_outlive_the_run():
    program = "import subprocess\nsubprocess.Popen(['sleep', '300'], start_new_session=True)\nprint('started')\n"
    result = run_program("python", program)
    assert result.passed and result.stdout == "started\n"
    assert wait_no_sandbox_processes() == []


@needs_root
def test_writes_outside_the_working_directory_are_denied(tmp_path):
    name = f"seedcoder-sandbox-escape-{uuid.uuid4().hex}"
    targets = {"tmp": f"/tmp/{name}", "repo": os.path.join(ROOT, name), "parent_tmp_path": str(tmp_path / name)}
    os.chmod(tmp_path, 0o777)  # even a world-writable host directory must stay untouched
    program = (
        "import os, sys\n"
        f"targets = {targets!r}\n"
        "for label, path in targets.items():\n"
        "    try:\n"
        "        with open(path, 'w') as f:\n"
        "            f.write('escaped')\n"
        "        print(label, 'written')\n"
        "    except OSError as error:\n"
        "        print(label, 'denied', error.errno)\n"
        "open('inside.txt', 'w').write('ok')\n"
        "print('cwd', open('inside.txt').read())\n"
    )
    result = run_program("python", program)
    assert result.passed, result
    assert "cwd ok" in result.stdout  # the working directory is writable
    for path in targets.values():
        assert not os.path.exists(path), f"the sandbox wrote {path} on the host"
    assert "repo denied" in result.stdout  # read-only file system (or the uid's permissions)


def test_network_connection_does_not_reach_the_host():
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(0.2)
    port = listener.getsockname()[1]
    accepted = []
    stop = threading.Event()

    def accept_loop():
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
                accepted.append(connection)
            except OSError:
                continue

    thread = threading.Thread(target=accept_loop, daemon=True)
    thread.start()
    program = (
        "import socket\n"
        "try:\n"
        f"    socket.create_connection(('127.0.0.1', {port}), timeout=3).sendall(b'leak')\n"
        "    print('connected')\n"
        "except OSError as error:\n"
        "    print('blocked', error.errno)\n"
    )
    try:
        result = run_program("python", program)
    finally:
        time.sleep(0.3)
        stop.set()
        thread.join()
        listener.close()
    if not result.isolation.network_isolated:
        pytest.skip(f"this platform refused a network namespace: {result.isolation.notes}")
    assert result.passed, result
    assert result.stdout.startswith("blocked"), result.stdout
    assert accepted == []


def test_parent_environment_secrets_are_not_visible(monkeypatch):
    secret = f"secret-{uuid.uuid4().hex}"
    monkeypatch.setenv("SECRET_TOKEN", secret)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    program = (
        "import os\n"
        "print(sorted(os.environ))\n"
        "found = [k for k, v in os.environ.items() if v == SECRET]\n"
        "for pid in os.listdir('/proc'):\n"
        "    try:\n"
        "        if SECRET.encode() in open(f'/proc/{pid}/environ', 'rb').read():\n"
        "            found.append(pid)\n"
        "    except OSError:\n"
        "        pass\n"
        "print('found', found)\n"
    )
    result = run_program("python", f"SECRET = {secret!r}\n" + program)
    assert result.passed, result
    assert "found []" in result.stdout
    visible = eval(result.stdout.splitlines()[0])  # the sorted list of names
    assert "SECRET_TOKEN" not in visible and set(visible) <= {"PATH", "LANG", "LC_ALL", "HOME", "TMPDIR", "PYTHONIOENCODING",
                                                               "PYTHONDONTWRITEBYTECODE", "LC_CTYPE"}


def test_output_is_truncated_and_stops_the_run():
    limits = Limits(output_bytes=10_000, wall_s=10)
    result = run_program("python", "while True:\n    print('spam' * 100)\n", limits=limits)
    assert result.status == "limit_exceeded" and result.limit == "output"
    assert result.stdout_truncated and len(result.stdout) == 10_000
    assert result.stdout.startswith("spamspam")
    quiet = run_program("python", "print('x' * 100)", limits=limits)
    assert quiet.passed and not quiet.stdout_truncated


def test_file_size_limit():
    result = run_program("python", "open('big.bin', 'wb').write(b'x' * (8 << 20))\n", limits=Limits(file_size_mb=1))
    assert result.status == "limit_exceeded" and result.limit == "file_size", result


@pytest.mark.parametrize("language, source", [
    ("c", '#include <stdio.h>\nint main(void) { char s[32]; scanf("%31s", s); printf("hello %s\\n", s); return 0; }\n'),
    ("cpp", '#include <iostream>\n#include <string>\n'
            'int main() { std::string s; std::cin >> s; std::cout << "hello " << s << "\\n"; }\n'),
    ("javascript", 'const s = require("fs").readFileSync(0, "utf8").trim();\nconsole.log("hello " + s);\n'),
])
def test_other_languages_hello_world(language, source):
    if not sandbox.available_languages()[language]:
        pytest.skip(f"{language}: compiler/interpreter not installed")
    result = run_program(language, source, stdin="world\n", expected_stdout="hello world")
    assert result.passed, result
    if language in ("c", "cpp"):
        assert result.compile_s > 0


def test_compile_error_is_reported():
    if not sandbox.available_languages()["c"]:
        pytest.skip("gcc not installed")
    result = run_program("c", "int main(void) { return 0 }\n")
    assert result.status == "compile_error" and not result.passed
    assert "error" in result.compile_output and result.exit_code is None


def test_many_tests_at_once_through_the_pool():
    jobs = [SandboxJob("python", f"import sys\nprint({i} * {i})\nsys.exit({i % 3 == 0:d})", name=f"job{i}",
                       expected_stdout=str(i * i)) for i in range(12)]
    results = run_tests(jobs, workers=4)
    assert [r.name for r in results] == [f"job{i}" for i in range(12)]
    assert [r.passed for r in results] == [i % 3 != 0 for i in range(12)]
    assert all(r.stdout.strip() == str(i * i) for i, r in enumerate(results))
    assert sandbox.summarize(results) == {"passed": 8, "runtime_error": 4}


def test_bad_arguments_are_named():
    with pytest.raises(SandboxError, match="language 'cobol'"):
        run_program("cobol", "")
    with pytest.raises(SandboxError, match="Limits.cpu_s"):
        Limits(cpu_s=0)
    with pytest.raises(SandboxError, match="Limits.processes must be an integer"):
        Limits(processes=2.5)
    with pytest.raises(SandboxError, match="workers"):
        run_tests([SandboxJob("python", "pass")], workers=0)
    with pytest.raises(SandboxError, match=r"jobs\[0\]"):
        run_tests(["print(1)"])


@needs_root
def test_fallback_without_namespaces_says_so(monkeypatch):
    # SEEDCODER_SANDBOX_MODE=rlimits: what a platform that refuses namespaces gets (as root: still its own uid)
    monkeypatch.setenv("SEEDCODER_SANDBOX_MODE", "rlimits")
    program = "import subprocess\nsubprocess.Popen(['sleep', '300'], start_new_session=True)\nprint('ok')\n"
    result = run_program("python", program)
    assert result.passed, result
    isolation = result.isolation
    assert isolation.mode == "rlimits" and not isolation.network_isolated and not isolation.filesystem_isolated
    assert any("network" in note for note in isolation.notes)
    assert wait_no_sandbox_processes() == []  # without a PID namespace the uid sweep still kills what was left


@needs_root
@pytest.mark.skipif(shutil.which("setpriv") is None or not os.path.exists("/usr/bin/python3"),
                    reason="needs setpriv and /usr/bin/python3")
def test_unprivileged_caller_gets_a_user_namespace(tmp_path):
    """The sandbox started by a non-root user: a user namespace gives the same isolation and the process limit."""
    os.chmod(tmp_path, 0o777)
    probe = "import subprocess\nn = 0\nfor _ in range(40):\n    try:\n        subprocess.Popen(['sleep', '3'])\n" \
            "        n += 1\n    except OSError:\n        pass\nprint(n)\n"
    escape = f"open({str(tmp_path / 'escape')!r}, 'w')"
    script = textwrap.dedent(f"""
        import json
        from seedcoder.sandbox import Limits, isolation_mode, run_program
        limited = run_program("python", {probe!r}, limits=Limits(processes=8))
        escape = run_program("python", {escape!r})
        print(json.dumps({{"mode": isolation_mode(), "started": limited.stdout.strip(), "status": limited.status,
                          "isolation": limited.isolation.__dict__, "escape": escape.status}}))
    """)
    environment = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": ROOT,
                   "SEEDCODER_SANDBOX_LOCK_DIR": str(tmp_path / "locks")}
    completed = subprocess.run(["setpriv", "--reuid=3917", "--regid=3917", "--clear-groups", "/usr/bin/python3", "-c", script],
                               env=environment, cwd=str(tmp_path), capture_output=True, text=True, timeout=120)
    if completed.returncode != 0 and "No module named" in completed.stderr:
        pytest.skip(f"the unprivileged user cannot import seedcoder from {ROOT}: {completed.stderr[-300:]}")
    assert completed.returncode == 0, completed.stderr
    import json

    outcome = json.loads(completed.stdout.splitlines()[-1])
    assert outcome["mode"] == "userns"
    if outcome["isolation"]["mode"] == "rlimits":
        pytest.skip(f"user namespaces are refused here: {outcome['isolation']['notes']}")
    assert outcome["status"] == "passed"
    assert int(outcome["started"]) == 7  # 8 tasks: the program and 7 children
    assert outcome["isolation"]["network_isolated"] and outcome["isolation"]["uid"] is None
    assert outcome["escape"] == "runtime_error" and not (tmp_path / "escape").exists()


def test_no_python_interpreter_is_named(monkeypatch):
    monkeypatch.setenv("SEEDCODER_SANDBOX_PYTHON", "/nonexistent/python3")
    result = run_program("python", "print(1)")
    assert result.status == "sandbox_error" and "/nonexistent/python3" in (result.error or "")


def test_zygote_and_direct_launch_agree(monkeypatch):
    results = {}
    for zygote in ("1", "0"):
        monkeypatch.setenv("SEEDCODER_SANDBOX_ZYGOTE", zygote)
        results[zygote] = run_program("python", "import sys\nprint(sys.stdin.read().upper())\nsys.exit(4)", stdin="abc")
    assert results["1"].stdout == results["0"].stdout == "ABC\n"
    assert results["1"].exit_code == results["0"].exit_code == 4
    for field in ("mode", "network_isolated", "pid_namespace", "filesystem_isolated"):
        assert getattr(results["1"].isolation, field) == getattr(results["0"].isolation, field)


def test_throughput_benchmark_runs():
    sys.path.insert(0, ROOT)  # `benchmarks` lives at the repo root, not installed
    from benchmarks.sandbox import FORMULA, bench_sandbox, format_report

    result = bench_sandbox([2], problems=3, peers=False, quiet=True)
    (row,) = result["rows"]
    assert row["passed"] == row["tests"] == 3 and row["tests_per_s"] > 0 and row["workers"] == 2
    assert FORMULA in format_report(result)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
