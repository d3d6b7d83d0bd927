"""seedcoder.processes: how a process that ran torch.distributed ends (exit_process)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from seedcoder import processes

# Collectives still in flight on gloo's worker threads when the main thread reaches the end, and the group kept
# alive past destroy_process_group (as DTensor's caches keep it under FSDP2): with sys.exit, interpreter
# finalization meets those threads and the rank aborts ("terminate called without an active exception") in most runs.
RANK_SCRIPT = """
import atexit, os, sys, torch, torch.distributed as dist
from seedcoder.processes import exit_process, init_process_group
init_process_group("gloo")
rank = dist.get_rank()
atexit.register(lambda: open(os.path.join(sys.argv[1], f"atexit-{rank}"), "w").close())
works = [dist.all_gather_into_tensor(torch.empty(2 * 100_000), torch.full((100_000,), float(i)), async_op=True)
         for i in range(50)]
del works  # gloo's threads hold the last references: they free the tensors
kept = dist.group.WORLD
dist.destroy_process_group()
print(f"rank {rank} done", end="")  # no newline and no flush: exit_process must flush it
exit_process(int(sys.argv[2]))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("code", [0, 3])
def test_ranks_with_collectives_in_flight_exit_with_their_code(tmp_path, code):
    script = tmp_path / "ranks.py"
    script.write_text(RANK_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TRITON_INTERPRET": "0"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port",
                             str(free_port()), "--tee=1", "--log-dir", str(tmp_path / "logs"), str(script),
                             str(tmp_path), str(code)],
                            capture_output=True, text=True, env=env, timeout=240)
    assert "terminate called" not in result.stderr, result.stderr[-3000:]
    if code == 0:
        assert result.returncode == 0, result.stderr[-3000:]
    else:
        assert result.returncode != 0 and f"exitcode  : {code}" in result.stderr, result.stderr[-3000:]
    for rank in range(2):
        assert (tmp_path / f"atexit-{rank}").exists(), f"rank {rank}: atexit handlers did not run"
        assert f"rank {rank} done" in result.stdout, result.stdout


def test_exit_process_without_a_process_group_is_sys_exit(monkeypatch):
    monkeypatch.setattr(processes, "_process_group_started", False)
    with pytest.raises(SystemExit) as exit_info:
        processes.exit_process(5)
    assert exit_info.value.code == 5
