"""The run uids (as root, each concurrent run gets its own unprivileged uid, reserved with a lock file) and what is
done with a uid: counting its tasks (what RLIMIT_NPROC counts) and killing all of its processes at once."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import threading

from seedcoder.sandbox.jobs import SandboxError
from seedcoder.sandbox.launcher import SCRUBBED_PATH

# One uid per concurrent run, from a range no real user or container maps (below 2^31: some tools choke above).
UID_BASE = 2_000_000_000
UID_COUNT = 4096
UID_LOCK_DIR = os.environ.get("SEEDCODER_SANDBOX_LOCK_DIR", "/tmp/.seedcoder-sandbox-uids")


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
