"""Training metrics: one console line per step, a progress bar, JSONL and TensorBoard logs, a loss-curve PNG.

Each step logs (rank 0 only):

    step 120/2000 | loss 3.2150 | gnorm 0.84 | lr 3.00e-04 | 41,210 tok/s/dev | MFU 52.1% | mem 61.3 GiB | data 0.4% | 1.21 s

* loss: the mean cross-entropy over every non-masked token of the global batch (all ranks, all micro-batches).
* gnorm: the global gradient norm before clipping.
* tok/s/dev: tokens of the global batch (padding included: the compute is spent on them) / step time / ranks.
* MFU: model FLOPs utilization, tok/s/dev x FLOPs per token / the device's dense bf16 peak. FLOPs per token come
  from `Transformer.flops_per_token(seq_len)`: 6 N (N = parameters without the input embedding: forward 2, backward
  4 FLOPs per parameter and token) + 6 L H D S (causal attention scores and values, forward + backward; S the row
  length). Activation recomputation is not counted (it is overhead, not model FLOPs). The peak comes from
  `PEAK_BF16_TFLOPS` by the CUDA device name, or `logging.peak_tflops`; on CPU or an unknown GPU it prints "n/a".
* mem: peak CUDA memory allocated during the step; on CPU the process's resident set size.
* data: the share of the step spent waiting for the data loader.

Files under the run directory: `metrics.jsonl` (one JSON record per step, the fields above and more),
`tensorboard/` (if the tensorboard package is installed; skipped with a warning otherwise), `loss.png`
(`plot_loss_curve`, matplotlib). On resume, records after the resumed step are dropped from the JSONL (they
were from work that the checkpoint did not keep) and TensorBoard purges them, so the logs show each step once.
"""

from __future__ import annotations

import json
import math
import os
import sys
import warnings
from collections.abc import Mapping
from typing import Any

import torch

from seedcoder.fileio import atomic_write_text

# Dense (no sparsity) bf16 tensor-core peak per device, in TFLOP/s, from the vendors' data sheets. Matched as a
# substring of torch.cuda.get_device_name(), first match wins (so the more specific names come first).
PEAK_BF16_TFLOPS: list[tuple[str, float]] = [
    ("GB200", 2500.0),
    ("B200", 2250.0),
    ("B100", 1750.0),
    ("GH200", 989.0),
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),  # SXM
    ("H800", 989.0),
    ("H20", 148.0),
    ("A100", 312.0),
    ("A800", 312.0),
    ("L40S", 362.0),
    ("L40", 181.0),
    ("L4", 121.0),
    ("A10", 125.0),
    ("RTX 6000 Ada", 364.0),
    ("RTX A6000", 155.0),
    ("RTX 4090", 165.0),
    ("RTX 3090", 71.0),
    ("MI300X", 1307.0),
    ("MI250X", 383.0),
]


def device_peak_tflops(device: torch.device) -> tuple[float | None, str]:
    """(dense bf16 peak TFLOP/s or None, the device's name) for `device`."""
    if device.type != "cuda":
        return None, "cpu"
    name = torch.cuda.get_device_name(device)
    for key, tflops in PEAK_BF16_TFLOPS:
        if key in name:
            return tflops, name
    return None, name


def memory_gib(device: torch.device) -> float:
    """Peak CUDA memory allocated since the last reset, or the process's resident memory on CPU, in GiB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    try:
        with open("/proc/self/statm") as file:
            resident_pages = int(file.read().split()[1])
        return resident_pages * os.sysconf("SC_PAGE_SIZE") / 2**30
    except (OSError, ValueError, IndexError):  # not Linux
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a JSONL file (a torn last line from a kill is skipped)."""
    records = []
    try:
        with open(path, encoding="utf-8") as file:
            for line in file:
                try:
                    records.append(json.loads(line))
                except ValueError:
                    continue
    except FileNotFoundError:
        pass
    return records


def truncate_jsonl(path: str | os.PathLike, last_step: int) -> None:
    """Keep only the records with step <= last_step (atomic rewrite)."""
    if not os.path.exists(path):
        return
    kept = [record for record in read_jsonl(path) if record.get("step", 0) <= last_step]
    text = "".join(json.dumps(record) + "\n" for record in kept)
    atomic_write_text(path, text)


def _format_count(value: float) -> str:
    return f"{value:,.0f}"


class MetricsLogger:
    """Logs each training step to the console (rank 0), a tqdm bar, metrics.jsonl and TensorBoard."""

    def __init__(
        self,
        out_dir: str | os.PathLike,
        *,
        total_steps: int,
        start_step: int,
        device: torch.device,
        world_size: int,
        flops_per_token: float,
        peak_tflops: float | None = None,
        jsonl: bool = True,
        tensorboard: bool = True,
        progress_bar: bool = True,
        enabled: bool = True,
    ):
        self.enabled = enabled
        self.out_dir = os.fspath(out_dir)
        self.total_steps, self.device, self.world_size = total_steps, device, world_size
        self.flops_per_token = flops_per_token
        detected, self.device_name = device_peak_tflops(device)
        self.peak_tflops = peak_tflops if peak_tflops is not None else detected
        self.jsonl_path = os.path.join(self.out_dir, "metrics.jsonl") if jsonl else None
        self._jsonl = None
        self._tensorboard = None
        self._bar = None
        if not enabled:
            return
        os.makedirs(self.out_dir, exist_ok=True)
        if self.jsonl_path:
            truncate_jsonl(self.jsonl_path, start_step)  # resumed: drop the steps the checkpoint did not keep
            self._jsonl = open(self.jsonl_path, "a", encoding="utf-8")
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                warnings.warn("tensorboard is not installed: no TensorBoard logs (pip install tensorboard)", stacklevel=2)
            else:
                self._tensorboard = SummaryWriter(os.path.join(self.out_dir, "tensorboard"), purge_step=start_step + 1)
        if progress_bar and sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True, leave=False)

    def print(self, message: str) -> None:
        """A console line that does not break the progress bar (rank 0 only)."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(message)
        else:
            print(message, flush=True)

    def log_step(
        self,
        step: int,
        *,
        loss: float,
        grad_norm: float,
        lr: float,
        tokens: int,
        loss_tokens: int,
        step_time: float,
        data_time: float,
        seq_len: int,
        skipped: bool = False,
        extra: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Record one optimizer step; returns the record (also on ranks other than 0, where nothing is written)."""
        tokens_per_s = tokens / step_time / self.world_size if step_time > 0 else 0.0
        mfu = None
        if self.peak_tflops:
            mfu = tokens_per_s * self.flops_per_token / (self.peak_tflops * 1e12)
        record = {
            "step": step,
            "loss": loss,
            "grad_norm": grad_norm,
            "lr": lr,
            "tokens": tokens,
            "loss_tokens": loss_tokens,
            "tokens_per_s_per_device": tokens_per_s,
            "mfu": mfu,
            "memory_gib": memory_gib(self.device),
            "data_wait_pct": 100.0 * data_time / step_time if step_time > 0 else 0.0,
            "step_time_s": step_time,
            "seq_len": seq_len,
            "skipped": skipped,
            **(extra or {}),
        }
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        if not self.enabled:
            return record
        width = len(str(self.total_steps))
        mfu_text = f"{100 * mfu:.1f}%" if mfu is not None else "n/a"
        line = (
            f"step {step:>{width}}/{self.total_steps} | loss {loss:.4f} | gnorm {grad_norm:.3g} | lr {lr:.2e} | "
            f"{_format_count(tokens_per_s)} tok/s/dev | MFU {mfu_text} | mem {record['memory_gib']:.2f} GiB | "
            f"data {record['data_wait_pct']:.1f}% | {step_time:.2f} s" + (" | SKIPPED (non-finite)" if skipped else "")
        )
        self.print(line)
        if self._jsonl is not None:
            self._jsonl.write(json.dumps(record) + "\n")
            self._jsonl.flush()
        if self._tensorboard is not None:
            for key in ("loss", "grad_norm", "lr", "tokens_per_s_per_device", "mfu", "memory_gib", "data_wait_pct"):
                value = record[key]
                if value is not None and math.isfinite(value):
                    self._tensorboard.add_scalar(f"train/{key}", value, step)
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(loss=f"{loss:.3f}")
        return record

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None


def plot_loss_curve(jsonl_path: str | os.PathLike, png_path: str | os.PathLike, *, title: str = "training loss") -> str | None:
    """Loss (and learning rate) against step from metrics.jsonl into a PNG; None when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        warnings.warn("matplotlib is not installed: no loss curve (pip install matplotlib)", stacklevel=2)
        return None
    records = [r for r in read_jsonl(jsonl_path) if not r.get("skipped") and r.get("loss") is not None]
    if not records:
        return None
    steps = [r["step"] for r in records]
    figure, loss_axis = plt.subplots(figsize=(8, 4.5), dpi=120)
    values = [r["loss"] for r in records]
    loss_axis.plot(steps, values, color="tab:blue", linewidth=0.8, alpha=0.45, label="loss")
    window = max(1, len(values) // 20)  # a trailing mean: one batch is noisy, the trend is what matters
    smoothed = [sum(values[max(0, i - window + 1): i + 1]) / (i + 1 - max(0, i - window + 1)) for i in range(len(values))]
    loss_axis.plot(steps, smoothed, color="tab:blue", linewidth=1.8, label=f"mean of {window} steps")
    loss_axis.legend(loc="upper right")
    loss_axis.set_xlabel("step")
    loss_axis.set_ylabel("loss (nats / token)", color="tab:blue")
    loss_axis.grid(alpha=0.3)
    lr_axis = loss_axis.twinx()
    lr_axis.plot(steps, [r["lr"] for r in records], color="tab:orange", linewidth=1.0, alpha=0.7, label="lr")
    lr_axis.set_ylabel("learning rate", color="tab:orange")
    loss_axis.set_title(title)
    figure.tight_layout()
    png_path = os.fspath(png_path)
    temp = f"{png_path}.{os.getpid()}.tmp.png"
    figure.savefig(temp)
    plt.close(figure)
    os.replace(temp, png_path)
    return png_path


__all__ = ["PEAK_BF16_TFLOPS", "MetricsLogger", "device_peak_tflops", "memory_gib", "plot_loss_curve", "read_jsonl",
           "truncate_jsonl"]
