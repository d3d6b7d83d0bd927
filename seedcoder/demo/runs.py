"""Training runs as the demos start and judge them: the torchrun command line of a training stage, and whether a
run's loss fell. Shared by `seedcoder.demo.pretrain` (steps 2-6) and `seedcoder.demo.posttrain` (SFT, step 7), which
calls no code of the former.
"""

from __future__ import annotations

import sys


def launch_command(nproc: int, stage: str = "pretrain") -> list[str]:
    """`torchrun --standalone --nproc_per_node=N -m seedcoder.train STAGE`, with this interpreter."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m",
            "seedcoder.train", stage]


def loss_fall(records: list[dict]) -> tuple[float, float, int]:
    """Mean loss of the first and last fifth of a run (single batches are noisy), and the window size."""
    records = [r for r in records if not r.get("skipped")]
    window = max(1, len(records) // 5)
    first = sum(r["loss"] for r in records[:window]) / window
    last = sum(r["loss"] for r in records[-window:]) / window
    return first, last, window


__all__ = ["launch_command", "loss_fall"]
