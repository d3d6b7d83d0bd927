"""What runs in a separate interpreter: the launcher (namespaces, the init, each step under its limits and uid) and
the fork server (zygote) that forks one launcher per run; plus the host's handle on the zygote.

`_sandbox_launcher` and `_sandbox_zygote` are shipped as source text (`_helper_source`) to `python -I -S -c`, so
they are self-contained: they import what they need inside and use no module globals. This module imports none of
ours, so it stays a leaf."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import textwrap
import threading

SCRUBBED_PATH = "/usr/local/bin:/usr/bin:/bin"


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
