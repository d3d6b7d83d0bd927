"""The pretraining loop end to end on CPU (gloo), with the debug model on tiny shards made here:

* 2 FSDP ranks give the same losses as one process on the same global batch;
* a run killed (SIGKILL) in the middle of a checkpoint save resumes from the previous checkpoint and produces
  the same loss sequence as an uninterrupted run, bitwise; a checkpoint from 2 ranks resumes on 1;
* SIGTERM stops a run at a step boundary with a checkpoint, and --resume continues at the next step;
* non-finite steps are skipped with a warning and K in a row stop the run with a checkpoint;
plus the LR schedule shapes and the metrics log.
"""

import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid

import numpy as np
import pytest
import torch

from seedcoder.checkpoint import FAULT_ENV, latest_checkpoint, list_checkpoints
from seedcoder.data.manifest import build_manifest, write_manifest
from seedcoder.data.shard_reader import read_header
from seedcoder.data.shard_writer import ShardWriter
from seedcoder.data.shards import Section
from seedcoder.lr_schedule import LRSchedule
from seedcoder.metrics import MetricsLogger, read_jsonl
from seedcoder.parallelize import mesh_shape

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 6
COMMON = [
    "--model.preset=debug", "--data.seq_len=32", "--data.fim_rate=0", "--data.threads=1", "--train.batch_size=4",
    "--train.micro_batch_size=1", f"--train.steps={STEPS}", "--schedule.warmup_steps=2", "--optimizer.lr=3e-3",
    "--checkpoint.interval=2", "--checkpoint.keep=3", "--logging.tensorboard=false", "--logging.plot=false",
]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Two shards of 300 documents, token ids < 256 with a learnable pattern (arithmetic sequences)."""
    path = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    for shard in range(2):
        with ShardWriter(path / f"shard-{shard}.scs", vocab_size=256, tokenizer_sha256="0" * 64) as writer:
            for index in range(150):
                length, start, stride = int(rng.integers(4, 70)), int(rng.integers(0, 256)), int(rng.integers(1, 5))
                writer.add((start + stride * np.arange(length)) % 256, score=float(index % 10), language="python",
                           source="file", content_hash=shard * 1000 + index)
    write_manifest(path, build_manifest(path))
    return str(path)


def train(out_dir, dataset, *extra, ranks=1, env=None, check=True, wait=True, stdout=subprocess.PIPE):
    """Run `seedcoder.train pretrain` in subprocesses (torchrun for ranks > 1); returns the finished process
    (wait=False: the running one, its output to `stdout`)."""
    command = [sys.executable, "-m", "seedcoder.train", "pretrain", f"--data.path={dataset}", f"--run.out_dir={out_dir}",
               *COMMON, *extra]
    if ranks > 1:
        command[1:3] = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}", "-m", "seedcoder.train"]
    # TRITON_INTERPRET (set by conftest for the kernel tests) stays out: a CPU run takes the torch paths, as a user's does
    environment = {key: value for key, value in os.environ.items()
                   if key not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "TRITON_INTERPRET")}
    environment.update(OMP_NUM_THREADS="1", **(env or {}))
    if not wait:
        return subprocess.Popen(command, cwd=ROOT, env=environment, stdout=stdout, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)
    result = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=240)
    if check and result.returncode != 0:
        raise AssertionError(f"exit {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


def losses(out_dir):
    records = read_jsonl(os.path.join(out_dir, "metrics.jsonl"))
    return [record["step"] for record in records], [record["loss"] for record in records]


def grad_norms(out_dir):
    return [record["grad_norm"] for record in read_jsonl(os.path.join(out_dir, "metrics.jsonl"))]


@pytest.fixture(scope="module")
def reference_run(dataset, tmp_path_factory):
    """An uninterrupted single-process run: its output directory."""
    out_dir = tmp_path_factory.mktemp("reference")
    train(out_dir, dataset)
    return out_dir


@pytest.fixture(scope="module")
def reference(reference_run):
    """The uninterrupted run's (steps, losses)."""
    steps, values = losses(reference_run)
    assert steps == list(range(1, STEPS + 1))
    assert all(math.isfinite(value) for value in values) and values[-1] < values[0]  # it learns
    return steps, values


def test_two_ranks_match_one_process_then_resume_on_one_rank(dataset, reference, tmp_path):
    out_dir = tmp_path / "two"
    result = train(out_dir, dataset, ranks=2)
    assert "2 rank(s)" in result.stdout and "1 row(s) x 2 rank(s) x 2 micro-batch(es)" in result.stdout
    steps, two_ranks = losses(out_dir)
    assert steps == reference[0]
    np.testing.assert_allclose(two_ranks, reference[1], rtol=1e-5)

    # drop the last checkpoint and continue from step 4 on a single process: DCP reshards 2 -> 1
    shutil.rmtree(os.path.join(out_dir, "checkpoints", "step-00000006"))
    result = train(out_dir, dataset, "--resume")
    assert "step 4, written by 2 rank(s), now 1" in result.stdout
    steps, resumed = losses(out_dir)
    assert steps == reference[0]  # the log holds every step once
    np.testing.assert_allclose(resumed, two_ranks, rtol=1e-5)
    np.testing.assert_allclose(resumed, reference[1], rtol=1e-5)


def test_meshes_match_one_process_and_resume_across_meshes(dataset, reference_run, reference, tmp_path):
    """dp 2 x tp 2 (4 ranks, sequence-parallel) trains as one process does (losses and gradient norms); its step-4
    checkpoint resumes on HSDP (dp_replicate 2 x dp_shard 2), on HSDP x cp (dp_replicate 2 x cp 2: ring attention
    over zig-zag shards, FSDP over dp_shard x cp) and on cp 2 x tp 2: DCP reshards between meshes, and every mesh
    continues the single-process run."""
    out_dir = tmp_path / "tp"
    result = train(out_dir, dataset, "--parallel.tp=2", ranks=4)
    assert "mesh dp_replicate 1 x dp_shard 2 x cp 1 x tp 2" in result.stdout
    assert "1 row(s) x 2 rank(s) x 2 micro-batch(es) (each row on 2 cp x tp ranks)" in result.stdout
    steps, tp_losses = losses(out_dir)
    assert steps == reference[0]
    np.testing.assert_allclose(tp_losses, reference[1], rtol=1e-5)
    np.testing.assert_allclose(grad_norms(out_dir), grad_norms(reference_run), rtol=1e-4)

    for mesh, flags in (("dp_replicate 2 x dp_shard 2 x cp 1 x tp 1", ["--parallel.dp_replicate=2"]),
                        ("dp_replicate 2 x dp_shard 1 x cp 2 x tp 1", ["--parallel.dp_replicate=2", "--parallel.cp=2"]),
                        ("dp_replicate 1 x dp_shard 1 x cp 2 x tp 2", ["--parallel.cp=2", "--parallel.tp=2"])):
        shutil.rmtree(os.path.join(out_dir, "checkpoints", "step-00000006"))
        result = train(out_dir, dataset, *flags, "--resume", ranks=4)
        assert f"mesh {mesh}" in result.stdout and "step 4, written by 4 rank(s)" in result.stdout, result.stdout
        np.testing.assert_allclose(losses(out_dir)[1], reference[1], rtol=1e-5, err_msg=mesh)
        np.testing.assert_allclose(grad_norms(out_dir), grad_norms(reference_run), rtol=1e-4, err_msg=mesh)


def test_mesh_shapes():
    assert mesh_shape(8) == (1, 8, 1, 1)
    assert mesh_shape(8, dp_replicate=2, tp=2) == (2, 2, 1, 2)
    assert mesh_shape(16, dp_replicate=2, cp=2, tp=2) == (2, 2, 2, 2)
    with pytest.raises(ValueError, match="dp_replicate 1 x dp_shard 3 x cp 1 x tp 2 = 6 ranks, but there are 8"):
        mesh_shape(8, dp_shard=3, tp=2)
    with pytest.raises(ValueError, match="8 ranks are not a multiple of dp_replicate 3 x cp 1 x tp 1"):
        mesh_shape(8, dp_replicate=3)
    with pytest.raises(ValueError, match="tp must be >= 1"):
        mesh_shape(8, tp=0)


def test_a_mesh_that_does_not_fit_is_one_line(dataset, tmp_path):
    """A mesh that does not multiply to the ranks, or a tp size that does not divide the heads: one line from rank 0
    naming the key (torchrun's own failure report follows), exit 2."""
    for extra, expected in ((["--parallel.tp=3"], "seedcoder.train: config section [parallel] (dp_replicate, dp_shard, "
                                                  "cp, tp): 2 ranks are not a multiple of dp_replicate 1 x cp 1 x tp 3"),
                            (["--parallel.cp=2", "--data.seq_len=30"],
                             "seedcoder.train: config key 'data.seq_len': 30 tokens cannot be split into 2 x parallel.cp 2 "
                             "zig-zag chunks, then parallel.tp 1 sequence slices"),
                            (["--parallel.tp=2", "--model.overrides.n_kv_heads=1"],
                             "seedcoder.train: config key 'parallel.tp': tp 2 does not divide the model's n_kv_heads (1)")):
        result = train(tmp_path / "bad", dataset, *extra, ranks=2, check=False)
        lines = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("seedcoder.train: ")]
        assert lines == [expected], result.stdout + result.stderr
        assert "[rank" not in result.stderr and "exitcode  : 2" in result.stderr


def test_kill_during_save_then_resume_is_bitwise(dataset, reference, tmp_path):
    out_dir = tmp_path / "killed"
    result = train(out_dir, dataset, env={FAULT_ENV: "checkpoint_publish@4"}, check=False)
    assert result.returncode == -signal.SIGKILL, result.stdout + result.stderr
    checkpoints = out_dir / "checkpoints"
    assert (checkpoints / "step-00000004.tmp" / ".metadata").exists()  # written, never published
    assert [step for step, _ in list_checkpoints(checkpoints)] == [2]
    assert losses(out_dir)[0] == [1, 2, 3, 4]

    result = train(out_dir, dataset, "--resume")
    assert "removed an incomplete checkpoint" in result.stdout and "resumed from" in result.stdout
    assert not (checkpoints / "step-00000004.tmp").exists()
    assert losses(out_dir) == reference  # steps 3 and 4 are redone; the sequence is the same to the last bit
    assert latest_checkpoint(checkpoints).endswith("step-00000006")


def test_resume_skips_a_damaged_checkpoint_and_refuses_when_all_are_damaged(dataset, reference_run, reference, tmp_path):
    out_dir = tmp_path / "damaged"
    shutil.copytree(reference_run, out_dir)  # checkpoints at steps 2, 4, 6
    checkpoints = out_dir / "checkpoints"
    shutil.rmtree(checkpoints / "step-00000006")
    shard = checkpoints / "step-00000004" / "__0_0.distcp"
    size = shard.stat().st_size
    os.truncate(shard, size // 2)
    broken_copy = tmp_path / "all-damaged"
    shutil.copytree(out_dir, broken_copy)

    result = train(out_dir, dataset, "--resume")
    warnings = [line for line in result.stdout.splitlines() if "WARNING" in line]
    assert len(warnings) == 1 and str(checkpoints / "step-00000004") in warnings[0], result.stdout
    assert f"__0_0.distcp: truncated ({size // 2:,} bytes, the metadata needs {size:,})" in warnings[0]
    assert f"resumed from {checkpoints / 'step-00000002'} (step 2" in result.stdout
    assert losses(out_dir) == reference  # steps 3..6 redone from step 2, as in the uninterrupted run
    assert (checkpoints / "step-00000004.damaged").is_dir()  # kept for a look, no longer a checkpoint
    assert [step for step, _ in list_checkpoints(checkpoints)] == [2, 4, 6]

    (broken_copy / "checkpoints" / "step-00000002" / ".metadata").write_bytes(b"")
    result = train(broken_copy, dataset, "--resume", check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(f"seedcoder.train: {broken_copy / 'checkpoints'}: "
                                                                       "every checkpoint is damaged (step-00000004: "
                                                                       "__0_0.distcp: truncated"), result.stderr
    assert "step-00000002: .metadata: unreadable" in result.stderr
    assert sorted(os.listdir(broken_copy / "checkpoints")) == ["step-00000002", "step-00000004"]  # nothing moved


def test_sigterm_stops_at_a_step_with_a_checkpoint_and_resume_continues(dataset, tmp_path):
    out_dir = tmp_path / "stopped"
    process = train(out_dir, dataset, "--train.steps=100000", "--checkpoint.interval=0", wait=False)
    jsonl = out_dir / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (jsonl.exists() and jsonl.read_text().count("\n") >= 2):
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGTERM)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 0, output
    stopped_at = losses(out_dir)[0][-1]
    assert f"stopped at step {stopped_at}/100000 on request" in output
    assert latest_checkpoint(out_dir / "checkpoints").endswith(f"step-{stopped_at:08d}")

    result = train(out_dir, dataset, f"--train.steps={stopped_at + 2}", "--resume")
    assert f"step {stopped_at + 1}/{stopped_at + 2}" in result.stdout
    assert losses(out_dir)[0] == list(range(1, stopped_at + 3))


def processes_with(marker):
    """The live processes whose environment holds `marker` (a unique NAME=value), by pid."""
    found = []
    for name in os.listdir("/proc"):
        try:
            with open(f"/proc/{name}/environ", "rb") as file:  # a zombie's is empty
                if marker.encode() in file.read().split(b"\0"):
                    found.append(int(name))
        except (OSError, ValueError):  # not a process, or gone meanwhile
            continue
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc and the Linux parent-death signal")
def test_ranks_die_with_their_torchrun_agent(dataset, tmp_path):
    """kill -9 of the torchrun agent: its ranks (each in a session of its own) must not train on as orphans."""
    marker = f"SEEDCODER_TEST_RUN={uuid.uuid4().hex}"
    out_dir = tmp_path / "orphans"
    with open(tmp_path / "output.txt", "w") as output:
        agent = train(out_dir, dataset, "--train.steps=100000", "--checkpoint.interval=0", ranks=2, wait=False,
                      env=dict([marker.split("=")]), stdout=output)
    try:
        jsonl = out_dir / "metrics.jsonl"
        deadline = time.time() + 120
        while time.time() < deadline and agent.poll() is None and not (jsonl.exists() and jsonl.read_text().count("\n")):
            time.sleep(0.05)  # until step 1 is logged: both ranks are up and training
        ranks = [pid for pid in processes_with(marker) if pid != agent.pid]
        assert agent.poll() is None and len(ranks) == 2, (tmp_path / "output.txt").read_text()
        os.kill(agent.pid, signal.SIGKILL)
        agent.wait(timeout=10)
        deadline = time.time() + 10
        while time.time() < deadline and processes_with(marker):
            time.sleep(0.05)
        assert processes_with(marker) == [], "ranks outlived their torchrun agent"
    finally:
        agent.kill()
        for pid in processes_with(marker):  # only ours: they carry this test's marker
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


ORPHAN = """
import os, sys, time
import seedcoder.train as train
print("ready", flush=True)
while os.getppid() == train._LAUNCHER_PID:  # until the launcher is gone, as if it died before the prctl call
    time.sleep(0.01)
train.die_with_launcher()
print("still running", file=sys.stderr, flush=True)
"""
LAUNCHER = """
import os, subprocess, sys
rank = subprocess.Popen([sys.executable, "-c", sys.argv[1]], stdout=subprocess.PIPE, stderr=open(sys.argv[2], "w"),
                        env={**os.environ, "TORCHELASTIC_RUN_ID": "test"})
rank.stdout.readline()
print(os.getpid(), rank.pid)  # and exit without waiting for the rank
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc and the Linux parent-death signal")
def test_a_rank_whose_launcher_died_before_the_death_signal_was_set_exits(tmp_path):
    """The agent gone between the rank's start and its prctl call: the signal would never come, so the rank exits."""
    log = tmp_path / "rank.txt"
    launched = subprocess.run([sys.executable, "-c", LAUNCHER, ORPHAN, str(log)], cwd=ROOT, capture_output=True, text=True,
                              timeout=120, check=True)
    launcher, rank = map(int, launched.stdout.split())
    try:
        deadline = time.time() + 30
        while time.time() < deadline and "\n" not in log.read_text():
            time.sleep(0.05)
        assert log.read_text() == f"seedcoder.train: the torchrun agent (pid {launcher}) is gone; exiting\n"
    finally:
        if not log.read_text():  # still running after 30 s
            with contextlib.suppress(ProcessLookupError):
                os.kill(rank, signal.SIGKILL)


def test_a_corrupted_shard_is_one_line_from_rank_0(dataset, tmp_path):
    """Bad input ends a torchrun job with one line from rank 0 naming the file, the section and the problem; no rank
    prints a traceback (torchrun's own failure report follows, as for any failed job)."""
    data = tmp_path / "data"
    shutil.copytree(dataset, data)
    shard = data / "shard-1.scs"
    damaged = bytearray(shard.read_bytes())
    damaged[read_header(shard).sections[Section.TOKENS][0] + 3] ^= 0x40
    shard.write_bytes(damaged)
    result = train(tmp_path / "run", data, ranks=2, check=False)
    assert result.returncode != 0
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("seedcoder.train: ")]
    assert len(lines) == 1, result.stdout + result.stderr
    assert lines[0].startswith(f"seedcoder.train: {shard}: checksum mismatch in section 'tokens' (stored 0x"), lines
    assert lines[0].endswith("corrupted data"), lines
    assert "[rank" not in result.stderr and "ShardError" not in result.stderr, result.stderr
    assert "exitcode  : 2" in result.stderr  # torchrun's report: both ranks exited with EXIT_USER_ERROR


def test_non_finite_steps_are_skipped_then_stop_with_a_checkpoint(dataset, tmp_path):
    out_dir = tmp_path / "diverged"
    result = train(out_dir, dataset, "--optimizer.lr=1e30", "--train.max_bad_steps=2", "--schedule.warmup_steps=0",
                   check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.count("update skipped") == 2 and "2 non-finite steps in a row" in result.stdout
    records = read_jsonl(out_dir / "metrics.jsonl")
    assert [record["skipped"] for record in records] == [False, True, True]
    assert latest_checkpoint(out_dir / "checkpoints").endswith("step-00000003")


STAGED = """
[[stages]]
name = "short"
steps = 2
seq_len = 32

[[stages]]
name = "long"
steps = 2
seq_len = 64
batch_size = 2
"""


def test_stages_and_init_from_and_resume_across_a_stage_boundary(dataset, reference_run, tmp_path):
    """Continued pretraining: weights from another run's checkpoint, the context doubling between stages, and a
    kill in the second stage resumed to the same losses (the second stage's loader starts fresh, then resumes)."""
    import torch

    from seedcoder.checkpoint import load_model_only
    from seedcoder.model import Transformer, model_config

    config = tmp_path / "staged.toml"
    config.write_text(STAGED)
    start = latest_checkpoint(reference_run / "checkpoints")  # where continued pretraining starts from
    staged = ["--config", str(config), "--train.steps=4", f"--checkpoint.init_from={start}", "--checkpoint.interval=1",
              "--optimizer.lr=1e-12"]

    whole = tmp_path / "whole"
    result = train(whole, dataset, *staged)
    assert f"model weights from {start}" in result.stdout
    assert "stage short: steps 1-2, seq_len 32" in result.stdout and "stage long: steps 3-4, seq_len 64" in result.stdout
    records = read_jsonl(whole / "metrics.jsonl")
    assert [(r["step"], r["seq_len"], r["tokens"], r["stage"]) for r in records] == \
        [(1, 32, 128, "short"), (2, 32, 128, "short"), (3, 64, 128, "long"), (4, 64, 128, "long")]
    started, finished, fresh = (Transformer(model_config("debug")) for _ in range(3))
    load_model_only(start, started)
    load_model_only(latest_checkpoint(whole / "checkpoints"), finished)
    for (name, a), b, c in zip(started.named_parameters(), finished.parameters(), fresh.parameters()):
        assert torch.allclose(a, b, atol=1e-6), name  # lr 1e-12: the run kept the weights it started from
        assert not torch.allclose(a, c, atol=1e-3) or name.endswith("norm.weight"), name

    killed = tmp_path / "killed"
    result = train(killed, dataset, *staged, env={FAULT_ENV: "after_step@3"}, check=False)
    assert result.returncode == -signal.SIGKILL
    assert latest_checkpoint(killed / "checkpoints").endswith("step-00000002")  # the end of stage "short"
    result = train(killed, dataset, *staged, "--resume")
    assert "step 2, written by 1 rank(s)" in result.stdout and "model weights from" not in result.stdout
    assert losses(killed) == losses(whole)


# ------------------------------------------------------------------------------------------ schedules
def test_warmup_then_constant():
    schedule = LRSchedule("constant", lr=1e-3, total_steps=100, warmup_steps=10)
    assert schedule(1) == pytest.approx(1e-4) and schedule(10) == pytest.approx(1e-3)
    assert [schedule(step) for step in (11, 50, 100)] == [1e-3] * 3


def test_cosine_shape():
    schedule = LRSchedule("cosine", lr=1.0, total_steps=110, warmup_steps=10, min_lr_ratio=0.1)
    values = [schedule(step) for step in range(10, 111)]
    assert values[0] == pytest.approx(1.0) and values[-1] == pytest.approx(0.1)
    assert schedule(60) == pytest.approx(0.55)  # halfway down
    assert all(b <= a for a, b in zip(values, values[1:]))


def test_wsd_shape():
    schedule = LRSchedule("wsd", lr=1.0, total_steps=100, warmup_steps=5, decay_fraction=0.2, min_lr_ratio=0.0)
    assert [schedule(step) for step in (5, 50, 80)] == [1.0, 1.0, 1.0]
    assert schedule(90) == pytest.approx(0.5) and schedule(100) == pytest.approx(0.0)


def test_paper_step_schedule():
    schedule = LRSchedule("step", lr=3e-4, total_steps=100, milestones=[0.5, 0.75], factors=[10**-0.5, 0.1])
    assert schedule(49) == pytest.approx(3e-4)
    assert schedule(50) == pytest.approx(3e-4 / math.sqrt(10)) and schedule(74) == pytest.approx(3e-4 / math.sqrt(10))
    assert schedule(75) == pytest.approx(3e-5) and schedule(100) == pytest.approx(3e-5)


@pytest.mark.parametrize("kwargs", [{"kind": "linear"}, {"lr": 0.0}, {"milestones": [0.5]}, {"kind": "step"}])
def test_bad_schedules_raise(kwargs):
    settings = {"kind": "cosine", "lr": 1e-3, "total_steps": 10, **kwargs}
    with pytest.raises(ValueError):
        LRSchedule(settings.pop("kind"), **settings)


# ------------------------------------------------------------------------------------------ metrics
def test_metrics_log_and_resume_truncation(tmp_path, capsys):
    import torch

    def logger(start_step):
        return MetricsLogger(tmp_path, total_steps=10, start_step=start_step, device=torch.device("cpu"), world_size=2,
                             flops_per_token=1e6, peak_tflops=None, tensorboard=False, progress_bar=False)

    first = logger(0)
    for step in (1, 2, 3):
        record = first.log_step(step, loss=2.0 / step, grad_norm=1.0, lr=1e-3, tokens=4096, loss_tokens=4000,
                                step_time=2.0, data_time=0.5, seq_len=256)
    first.close()
    assert record["tokens_per_s_per_device"] == 1024.0 and record["data_wait_pct"] == 25.0 and record["mfu"] is None
    line = capsys.readouterr().out.splitlines()[-1]
    assert line.startswith("step  3/10 | loss 0.6667") and "1,024 tok/s/dev" in line and "MFU n/a" in line

    resumed = logger(2)  # a checkpoint at step 2: step 3 is redone, its old record dropped
    resumed.log_step(3, loss=0.5, grad_norm=1.0, lr=1e-3, tokens=4096, loss_tokens=4000, step_time=1.0, data_time=0.0,
                     seq_len=256)
    resumed.close()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["loss"]) for r in records] == [(1, 2.0), (2, 1.0), (3, 0.5)]

    with_peak = MetricsLogger(tmp_path / "peak", total_steps=1, start_step=0, device=torch.device("cpu"), world_size=1,
                              flops_per_token=1e9, peak_tflops=1.0, tensorboard=False, progress_bar=False, jsonl=False)
    assert with_peak.log_step(1, loss=1.0, grad_norm=1.0, lr=1.0, tokens=1000, loss_tokens=1000, step_time=2.0,
                              data_time=0.0, seq_len=8)["mfu"] == pytest.approx(0.5)  # 500 tok/s x 1 GFLOP / 1 TFLOP/s


# ------------------------------------------------------------------------------------------ parallelize
def test_activation_checkpointing_keeps_losses_and_gradients(tmp_path):
    """selective / full recomputation give the same loss and gradients as none, bitwise (packed rows included)."""
    import torch
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    from seedcoder.model import Transformer, model_config
    from seedcoder.parallelize import parallelize

    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 256, (2, 32), generator=generator)
    positions = torch.cat([torch.arange(10), torch.arange(22)]).repeat(2, 1)
    cu_seqlens = torch.tensor([0, 10, 32, 42, 64], dtype=torch.int32)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    try:
        mesh = init_device_mesh("cpu", (1,))
        results = {}
        for mode in ("none", "selective", "full"):
            with torch.device("meta"):
                model = Transformer(model_config("debug"))
            parallelize(model, mesh, activation_checkpoint=mode)
            model.to_empty(device="cpu")
            model.init_weights(0)
            loss = model(ids, position_ids=positions, cu_seqlens=cu_seqlens, max_seqlen=22, labels=ids.roll(-1, dims=1))
            loss.backward()
            results[mode] = (loss.detach(), [p.grad.full_tensor() for p in model.parameters()])
            wrapped = "CheckpointWrapper" in type(model.layers[0]).__name__
            assert wrapped == (mode != "none")
    finally:
        dist.destroy_process_group()
    for mode in ("selective", "full"):
        assert torch.equal(results[mode][0], results["none"][0])
        assert all(torch.equal(a, b) for a, b in zip(results[mode][1], results["none"][1], strict=True))


def test_batches_are_checked_on_the_host_before_the_copy_to_the_device():
    """On a GPU the model can check only the shape of cu_seqlens (reading values would sync every step), so the
    training loop checks the host batch before `_to_device` copies it."""
    from seedcoder.train import _to_device

    ids = torch.zeros(2, 8, dtype=torch.long)
    batch = {"input_ids": ids, "labels": ids, "position_ids": ids, "max_seqlen": 8,
             "cu_seqlens": torch.tensor([0, 5, 12, 16], dtype=torch.int32)}  # a document crosses the row end at 8
    with pytest.raises(ValueError, match="crosses a row end"):
        _to_device(batch, torch.device("meta"))
    batch["cu_seqlens"] = torch.tensor([0, 5, 8, 16], dtype=torch.int32)
    assert _to_device(batch, torch.device("meta"))["cu_seqlens"].device.type == "meta"
    batch["max_seqlen"] = 4
    with pytest.raises(ValueError, match="max_seqlen"):
        _to_device(batch, torch.device("meta"))
