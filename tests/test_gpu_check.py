"""`make gpu-check` (benchmarks/gpu_check.py) without a GPU: its dry run, and its GPU path with the phases replaced
by small commands (test-only fakes: nothing here measures anything), so the script cannot rot between GPU runs."""

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from benchmarks import gpu_check, train
from benchmarks import report as bench_report
from benchmarks.common import Case, Impl, Result, Timing, Traffic

REPO = Path(__file__).resolve().parents[1]


def box_env() -> dict:
    """The environment the script gets from `make`: no interpreter mode (the suite sets it for its own kernels)."""
    return {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "PYTEST_XDIST_WORKER")}


@pytest.mark.skipif(torch.cuda.is_available(), reason="the dry run is what runs without a GPU")
def test_dry_run_says_it_found_no_gpu_checks_its_plumbing_and_exits_nonzero(tmp_path):
    results = tmp_path / "results"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", str(results)], cwd=REPO, env=box_env(),
                          capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out  # 2: no GPU, plumbing fine (1 would be broken plumbing)
    assert "NO GPU" in out and "nothing is measured" in out
    for check in ("results folder", "test selection collects without the packages the box lacks",
                  "benchmark cases and training arguments build", "markdown assembles from empty results"):
        assert f"ok  {check}" in out, out
    assert "plumbing OK" in out
    assert results.is_dir() and list(results.iterdir()) == []  # writable, and nothing measured, nothing written


def test_dry_run_catches_a_test_module_that_needs_a_package_the_box_lacks(tmp_path):
    """A test file importing tree_sitter at top level stops collection on the GPU box: the dry run must say so."""
    pytest.importorskip("tree_sitter")
    test_file = tmp_path / "test_needs_tree_sitter.py"
    test_file.write_text("import pytest\nimport tree_sitter\n\n\n@pytest.mark.gpu\ndef test_x():\n    pass\n")
    code = textwrap.dedent(f"""
        import sys
        from benchmarks import gpu_check
        blocker = gpu_check.BoxImportBlocker()
        assert {{"tree_sitter", "rank_bm25"}} <= blocker.blocked, "modules the box lacks are not blocked"
        assert not {{"torch", "triton", "numpy", "pytest"}} & blocker.blocked, "modules the box has are blocked"
        sys.meta_path.insert(0, blocker)
        gpu_check.TEST_FILES, gpu_check.BF16_NUMERICS = [{str(test_file)!r}], []
        print("PROBLEMS:", gpu_check.check_test_selection())
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=box_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    problems = proc.stdout.split("PROBLEMS:")[-1]
    assert "tree_sitter" in problems and "the GPU box does not have it" in problems, proc.stdout
    assert "no `gpu`-marked test collected" in problems


def test_a_phase_past_its_budget_is_stopped_with_its_children(tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    code = ("import subprocess, sys, time\n"
            "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
            f"open({str(pid_file)!r}, 'w').write(str(p.pid))\n"
            "time.sleep(120)\n")
    log = tmp_path / "phase.log"
    start = time.monotonic()
    rc, seconds = gpu_check.run_command([sys.executable, "-c", code], log_path=str(log), deadline=time.monotonic() + 3)
    assert rc is None and 2.5 < seconds < 30 and time.monotonic() - start < 30
    grandchild = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(grandchild):
        time.sleep(0.1)
    assert not _alive(grandchild), "the phase's own children outlived it"
    assert "[exit TIMEOUT after" in log.read_text()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"  # a zombie is dead, just not reaped by its parent
    except FileNotFoundError:
        return False


# ------------------------------------------------------------------------------------------ the GPU path, faked
FAKE_ENV = {"card": "FAKE GPU (test)", "compute_capability": "9.0", "sm_count": 132, "gpu_memory_gb": 79.6,
            "driver": "000.00", "cuda": "13.0", "torch": torch.__version__, "triton": "3.6.0", "python": "3.12.0",
            "date_utc": "2000-01-01 00:00 UTC", "commit": "abc1234"}


def fake_kernels_report(out_dir: Path) -> None:
    """kernels.md / kernels.json as benchmarks.kernels writes them, from injected (fake) timings."""
    case = Case("rms_norm", "fwd", "16384x4096", "bf16", Traffic().read("x", "N·H", 10**6, 2), [Impl("seedcoder", None, True)])
    report = bench_report.build_report("seedcoder kernel benchmarks", [case],
                                 {case.label: [Result("seedcoder", True, Timing(1.0, 0.9, 1.1), 10**6)]},
                                 {"gpu": "FAKE GPU (test)", "copy_bw_gbps": 3000.0}, [], fake=True)
    bench_report.write_report(report, str(out_dir), "kernels")


def fake_train_report(out_dir: Path) -> None:
    rows = [train.Row("seedcoder", "1b", 1, 8192, "bfloat16", step_ms=100.0, tokens_per_s=81920.0, mfu_pct=42.0,
                      peak_mem_gb=30.0, final_loss=11.9)]
    markdown = train.render_markdown({"gpu": "FAKE GPU (test)"}, rows, ["a note"])
    train.write_outputs(str(out_dir), {"gpu": "FAKE GPU (test)"}, rows, ["a note"], markdown)


def test_gpu_run_writes_at_most_8_files_and_a_markdown_section(tmp_path, monkeypatch):
    """The GPU path with each phase replaced by a small command: tests fail, train runs past its budget; every phase
    still runs, the results folder gets at most 8 files, and the exit status says it failed."""
    staged = tmp_path / "staged"
    fake_kernels_report(staged / "kernels")
    py = sys.executable
    copy = "import shutil, sys; shutil.copytree(sys.argv[1], sys.argv[2])"

    def commands(name, *, full, work):
        show_env = "import os; print('ARCH', os.environ['TORCH_CUDA_ARCH_LIST'], 'INTERPRET', 'TRITON_INTERPRET' in os.environ)"
        return {"install": [[py, "-c", show_env]],
                "tests": [[py, "-c", "print('== 3 passed, 1 failed in 0.50s =='); raise SystemExit(1)"],
                          [py, "-c", "print('== 2 passed in 0.10s ==')"]],
                "kernels": [[py, "-c", copy, str(staged / "kernels"), os.path.join(work, "kernels")]],
                "train": [[py, "-c", "import time; time.sleep(60)"]]}[name]

    monkeypatch.setattr(gpu_check, "gpu_environment", lambda: dict(FAKE_ENV))
    monkeypatch.setattr(gpu_check, "phase_commands", commands)
    monkeypatch.setattr(gpu_check, "BUDGETS", {**gpu_check.BUDGETS, "train": (2, 2)})
    results = tmp_path / "results"
    args = gpu_check.parse_args([str(results)])
    assert gpu_check.check_results_folder(args.results) == []
    rc = gpu_check.run_on_gpu(args, gpu_check.Log(str(results / "gpu-check.log")))
    assert rc == 1
    files = sorted(os.listdir(results))
    assert len(files) <= gpu_check.MAX_FILES and set(files) <= set(gpu_check.RESULT_FILES), files
    assert {"gpu-check.md", "gpu-check.log", "install.log", "tests.log", "bench.log", "kernels.json"} <= set(files)
    md = (results / "gpu-check.md").read_text()
    assert md.startswith("### GPU check: FAKE GPU (test), 2000-01-01 00:00 UTC (`make gpu-check`)")
    for row in ("| driver | 000.00 |", "| CUDA (torch) | 13.0 |", "| triton | 3.6.0 |", f"| torch | {torch.__version__} |"):
        assert row in md
    assert "| install | PASS |" in md and "TORCH_CUDA_ARCH_LIST=9.0a" in md
    assert "ARCH 9.0a INTERPRET False" in (results / "install.log").read_text()  # built for the card present only
    assert "| tests | FAIL |" in md and "3 passed, 1 failed; 2 passed" in md
    assert "| kernels | PASS |" in md and "targets: 0 PASS, 0 MISS, 0 N/A" in md
    assert "| train | TIMEOUT |" in md
    assert f"#### Kernels (quick set)\n\n{bench_report.FAKE_BANNER}\n\n##### Results" in md  # fake stays marked; demoted
    assert "| rms_norm | fwd | 16384x4096 | bf16 | seedcoder | 1.000 |" in md
    assert "#### Training step\n\nnot measured" in md
    assert json.loads((results / "kernels.json").read_text())["fake_timings"] is True
    log = (results / "gpu-check.log").read_text()
    assert "[train] out of its 2 s budget" in log and "FAILED: tests, train" in log


def test_markdown_embeds_both_benchmark_sections(tmp_path):
    fake_kernels_report(tmp_path / "kernels")
    fake_train_report(tmp_path / "train")
    sections = {stem: (tmp_path / stem / f"{stem}.md").read_text() for stem in ("kernels", "train")}
    phases = [gpu_check.Phase(name, budget) for name, (budget, _) in gpu_check.BUDGETS.items()]
    sections["scorer"] = gpu_check.scorer_table(json.dumps({
        "model": "tiny", "parameters": 5_000_000, "device": "cuda", "max_tokens": 1024, "files": 88, "tokens": 90_000,
        "files_per_s": 123.4, "tokens_per_s": 126_000.0, "unsorted_files_per_s": 99.0, "encode_files_per_s": 800.0}))
    md = gpu_check.assemble_markdown(FAKE_ENV, phases, sections, full=True)
    assert "#### Curation scorer throughput" in md
    assert "| tiny (5,000,000 parameters), cuda | 1024 | 88 | 90,000 | 123.4 | 126,000 | 99.0 | 800.0 |" in md
    assert "(`make gpu-bench`)" in md and f"#### Kernels\n\n{bench_report.FAKE_BANNER}\n\n##### Results" in md
    assert "| seedcoder | 1b | 1 x 8192 | bfloat16 | 100.0 | 81,920 | 42.0% | 30.0 | 11.900 |" in md
    assert md.count("# seedcoder") == 0  # the benchmarks' own titles and environment tables are left out
    assert all(f"| {name} | not run |" in md for name in gpu_check.PHASES)


def test_the_attention_grid_check_names_what_is_missing():
    """The [12] rows (fwd/bwd, causal or not, D64/D128 at 8K and 16K, packed vs dense, every peer) build; a grid
    without a row or a peer is reported by name."""
    from benchmarks import kernels

    cases = kernels.build_cases(["attention"], torch.bfloat16, quick=False)
    assert gpu_check.check_attention_grid(cases) == []
    fewer = [case for case in cases if not (case.shape == "dense S16384 D64 non-causal" and case.mode == "bwd")]
    assert gpu_check.check_attention_grid(fewer) == ["attention grid: no bwd row for 'dense S16384 D64 non-causal'"]
    cases[0].impls = [impl for impl in cases[0].impls if impl.name != "seedcoder-sm80"]
    assert gpu_check.check_attention_grid(cases) == [f"attention {cases[0].shape} {cases[0].mode}: no seedcoder-sm80"]
