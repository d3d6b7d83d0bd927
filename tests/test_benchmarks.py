"""The benchmark harness without a GPU: model-bytes formulas, derived metrics, target PASS/MISS logic, the
markdown / CSV / JSON writers, peer SKIPs and the CPU-only exit path.

Timings here are FAKE, injected by the tests to check the arithmetic; such reports are built with fake=True,
which every output format states. Nothing here measures anything.
"""

import csv
import io
import json
import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks` lives at the repo root, not installed

from benchmarks import common, kernels  # noqa: E402
from benchmarks import report as bench_report  # noqa: E402
from benchmarks.common import Case, Impl, Result, Skip, Timing, Traffic  # noqa: E402
from benchmarks.report import Target  # noqa: E402

FAKE_ENV = {"gpu": "FAKE GPU (test)", "torch": torch.__version__, "copy_bw_gbps": 3000.0, "matmul_bf16_tflops": 800.0}


def case_by_label(cases, label):
    return next(c for c in cases if c.label == label)


# ------------------------------------------------------------------------------------------ formulas
def test_model_bytes_formulas():
    cases = kernels.build_cases(kernels.OPS, torch.bfloat16, quick=False)
    n, h = 16384, 4096
    fwd = case_by_label(cases, "rms_norm fwd 16384x4096 bf16")
    assert fwd.traffic.total == 2 * n * h * 2 + h * 2 + n * 4  # x, y; w; rstd fp32
    assert fwd.traffic.formula == "read x[N·H]·2B + w[H]·2B; write y[N·H]·2B + rstd[N]·4B"
    bwd = case_by_label(cases, "rms_norm bwd 16384x8192 bf16")
    assert bwd.traffic.total == 3 * n * 8192 * 2 + 2 * 8192 * 2 + n * 4  # x, dy, dx; w, dw; rstd
    assert {c.shape for c in cases if c.op == "rms_norm"} == {"16384x2048", "16384x4096", "16384x8192"}

    rot = case_by_label(cases, "rotary fwd B4 S4096 H32/8 D128 bf16")
    tokens = 4 * 4096
    assert rot.traffic.total == 2 * tokens * (32 + 8) * 128 * 2 + tokens * 8

    v = 155_136
    ce = case_by_label(cases, "cross_entropy fwd+bwd 8192x155136 bf16")
    assert ce.traffic.total == 2 * 8192 * v * 2 + 8192 * 8
    assert case_by_label(cases, "cross_entropy fwd 4096x155136 bf16").traffic.total == 4096 * v * 2 + 4096 * 8

    flce = case_by_label(cases, "fused_linear_cross_entropy fwd+bwd N16384 H4096 V155136 bf16")
    assert flce.flops == 6 * 16384 * 4096 * v
    assert flce.required_output_bytes == (16384 * 4096 + v * 4096) * 2  # dhidden + dweight
    assert flce.traffic.total == 2 * (16384 * 4096 + v * 4096) * 2 + 16384 * 8

    fp32 = case_by_label(kernels.build_cases(["rms_norm"], torch.float32, quick=True), "rms_norm fwd 16384x4096 fp32")
    assert fp32.traffic.total == 2 * n * h * 4 + h * 4 + n * 4


def test_every_case_leads_with_ours_and_names_peers():
    for case in kernels.build_cases(kernels.OPS, torch.bfloat16, quick=False):
        assert case.impls[0].name == "seedcoder" and case.impls[0].ours, case.label
        names = [i.name for i in case.impls]
        assert len(names) == len(set(names)), case.label
        peers = ({"sdpa-cudnn", "sdpa-flash", "sdpa-efficient", "flex-attention", "flash-attn"} if case.op == "attention"
                 else {"torch eager", "torch.compile", "liger"})
        assert peers <= set(names), case.label
    rms = kernels.build_cases(["rms_norm"], torch.bfloat16, quick=True)
    assert "apex" in [i.name for i in rms[0].impls]


# ------------------------------------------------------------------------------------------ report
def fake_case(op="rms_norm", mode="fwd", nbytes=3_000_000_000, **kw):
    traffic = Traffic().read("x", "N", nbytes // 2, 1).write("y", "N", nbytes - nbytes // 2, 1)
    impls = [Impl("seedcoder", lambda: None, ours=True), Impl("torch eager", lambda: None), Impl("torch.compile", lambda: None),
             Impl("liger", lambda: None)]
    return Case(op, mode, "S", "bf16", traffic, impls, **kw)


def ms(t):
    return Timing(t, t * 0.9, t * 1.1)


def test_rows_derive_bandwidth_ratio_and_memory():
    case = fake_case()  # 3 GB of model bytes; copy bandwidth 3000 GB/s -> 1 ms would be 100%
    results = [Result("seedcoder", True, ms(1.25), peak_bytes=500_000_000), Result("torch eager", False, ms(5.0), 2_000_000_000),
               Result("torch.compile", False, skip="error: boom"), Result("liger", False, ms(2.5), 0)]
    report = bench_report.build_report("t", [case], {case.label: results}, FAKE_ENV, [], fake=True)
    ours, eager, comp, liger = report.rows
    assert ours.gbps == pytest.approx(2400.0) and ours.pct_copy_bw == pytest.approx(80.0)
    assert ours.time_vs_ours == pytest.approx(1.0) and eager.time_vs_ours == pytest.approx(4.0)
    assert liger.time_vs_ours == pytest.approx(2.0)
    assert ours.peak_mb == pytest.approx(500.0) and eager.peak_mb == pytest.approx(2000.0)
    assert ours.tflops is None and ours.p20_ms == pytest.approx(1.125)
    assert comp.skip == "error: boom" and comp.median_ms is None and comp.gbps is None


def test_targets_pass_miss_and_not_applicable():
    fwd = fake_case(mode="fwd")
    bwd = fake_case(mode="bwd")
    flce = fake_case(op="flce", mode="fwd+bwd", required_output_bytes=1_500_000_000, flops=int(8e14))
    results = {
        fwd.label: [Result("seedcoder", True, ms(1.10)), Result("torch eager", False, ms(3.0)),
                    Result("torch.compile", False, ms(1.70)), Result("liger", False, skip="liger_kernel not installed")],
        bwd.label: [Result("seedcoder", True, ms(1.50)), Result("torch eager", False, ms(3.0)),
                    Result("torch.compile", False, ms(2.00)), Result("liger", False, ms(1.0))],
        flce.label: [Result("seedcoder", True, ms(1.05), peak_bytes=2_300_000_000),
                     Result("torch eager", False, ms(1.0), peak_bytes=14_000_000_000),
                     Result("torch.compile", False, skip="out of memory"), Result("liger", False, ms(2.0))],
    }
    targets = [
        Target("fwd >= 85%", "rms_norm", "fwd", "pct_copy_bw", ">=", 85.0),  # 3 GB / 1.1 ms = 90.9% -> PASS
        Target("bwd >= 75%", "rms_norm", "bwd", "pct_copy_bw", ">=", 75.0),  # 66.7% -> MISS
        Target("fwd 1.5x compile", "rms_norm", "fwd", "speedup_vs", ">=", 1.5, peer="torch.compile"),  # 1.545 -> PASS
        Target("bwd 1.5x compile", "rms_norm", "bwd", "speedup_vs", ">=", 1.5, peer="torch.compile"),  # 1.333 -> MISS
        Target("fwd 1.8x liger", "rms_norm", "fwd", "speedup_vs", ">=", 1.8, peer="liger"),  # liger skipped -> N/A
        Target("flce mem", "flce", "fwd+bwd", "extra_mem_gb", "<", 1.0),  # 2.3 - 1.5 = 0.8 GB -> PASS
        Target("flce time", "flce", "fwd+bwd", "time_ratio_vs", "<=", 1.1, peer="torch eager"),  # 1.05 -> PASS
        Target("eager mem", "flce", "fwd+bwd", "extra_mem_gb", ">", 10.0, impl="torch eager"),  # 12.5 GB -> PASS
        Target("compile time", "flce", "fwd+bwd", "time_ratio_vs", "<=", 1.0, peer="torch.compile"),  # OOM -> N/A
        Target("absent op", "rotary", "fwd", "pct_copy_bw", ">=", 80.0),  # no rows -> N/A
    ]
    report = bench_report.build_report("t", [fwd, bwd, flce], results, FAKE_ENV, targets, fake=True)
    verdicts = {t.target: t for t in report.targets}
    assert len(report.targets) == len(targets)
    assert verdicts["fwd >= 85%"].status == "PASS" and verdicts["fwd >= 85%"].measured == pytest.approx(100 / 1.1)
    assert verdicts["bwd >= 75%"].status == "MISS" and verdicts["bwd >= 75%"].measured == pytest.approx(200 / 3)
    assert verdicts["fwd 1.5x compile"].status == "PASS" and verdicts["fwd 1.5x compile"].measured == pytest.approx(1.7 / 1.1)
    assert verdicts["bwd 1.5x compile"].status == "MISS"
    assert verdicts["fwd 1.8x liger"].status == "N/A" and "not installed" in verdicts["fwd 1.8x liger"].note
    assert verdicts["flce mem"].status == "PASS" and verdicts["flce mem"].measured == pytest.approx(0.8)
    assert verdicts["flce time"].status == "PASS" and verdicts["flce time"].measured == pytest.approx(1.05)
    assert verdicts["eager mem"].status == "PASS" and verdicts["eager mem"].measured == pytest.approx(12.5)
    assert verdicts["compile time"].status == "N/A" and "out of memory" in verdicts["compile time"].note
    assert verdicts["absent op"].status == "N/A"
    flce_row = next(r for r in report.rows if r.op == "flce" and r.ours)
    assert flce_row.tflops == pytest.approx(8e14 / 1.05e-3 / 1e12) and flce_row.pct_matmul == pytest.approx(flce_row.tflops / 8)


def test_issue_targets_all_evaluate_against_the_real_cases():
    """Every target of the issue finds its rows among the real cases (names of ops, modes and peers match)."""
    cases = kernels.build_cases(kernels.OPS, torch.bfloat16, quick=False)
    results = {c.label: [Result(i.name, i.ours, ms(1.0), peak_bytes=10**9) for i in c.impls] for c in cases}
    report = bench_report.build_report("t", cases, results, FAKE_ENV, kernels.TARGETS, fake=True)
    statuses = {t.target: t.status for t in report.targets}
    assert set(statuses) == {t.description for t in kernels.TARGETS}
    assert all(status in ("PASS", "MISS") for status in statuses.values()), statuses


def test_writers_markdown_csv_json(tmp_path):
    case = fake_case()
    results = {case.label: [Result("seedcoder", True, ms(1.0), 10**8), Result("torch eager", False, ms(2.0), 10**9),
                            Result("torch.compile", False, skip="RuntimeError: compile failed"),
                            Result("liger", False, skip="liger_kernel not installed")]}
    targets = [Target("fwd >= 85%", "rms_norm", "fwd", "pct_copy_bw", ">=", 85.0)]
    report = bench_report.build_report("fake bench", [case], results, FAKE_ENV, targets, notes=["a note"], fake=True)
    out_dir = tmp_path / "out"
    (out_dir).mkdir()
    (out_dir / "bench.csv").write_text("stale")  # an old file is replaced whole
    paths = bench_report.write_report(report, str(out_dir), "bench")
    assert sorted(os.listdir(out_dir)) == ["bench.csv", "bench.json", "bench.md"]  # no temp files left behind

    md = Path(paths["md"]).read_text()
    assert md == bench_report.render_markdown(report)
    assert bench_report.FAKE_BANNER in md and "FAKE GPU (test)" in md
    assert "SKIP(RuntimeError: compile failed)" in md and "SKIP(liger_kernel not installed)" in md
    assert "| fwd >= 85% | rms_norm fwd S bf16 seedcoder | 100.0% | >= 85% | PASS |" in md
    assert "read x[N]·1B; write y[N]·1B" in md and "- a note" in md

    with open(paths["csv"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["impl"] for r in rows] == ["seedcoder", "torch eager", "torch.compile", "liger"]
    assert all(r["fake_timings"] == "True" for r in rows)
    assert float(rows[0]["gbps"]) == pytest.approx(3000.0) and rows[2]["skip"] == "RuntimeError: compile failed"

    payload = json.loads(Path(paths["json"]).read_text())
    assert payload["fake_timings"] is True and payload["environment"]["gpu"] == "FAKE GPU (test)"
    assert payload["targets"][0]["status"] == "PASS" and payload["rows"][1]["time_vs_ours"] == pytest.approx(2.0)
    assert payload["model_bytes"][0]["formula"] == "read x[N]·1B; write y[N]·1B"


def test_real_report_is_not_marked_fake():
    case = fake_case()
    report = bench_report.build_report("t", [case], {case.label: [Result("seedcoder", True, ms(1.0))]}, FAKE_ENV, [])
    assert bench_report.FAKE_BANNER not in bench_report.render_markdown(report)
    assert json.loads(bench_report.render_json(report))["fake_timings"] is False


# ------------------------------------------------------------------------------------------ peers, prepare
def test_peer_skips_and_errors_become_skip_rows():
    def missing():
        common.optional_import("surely_not_an_installed_module_xyz")

    def no_attr():
        common.optional_import("json", "no_such_function")

    def broken():
        raise RuntimeError("kernel exploded | badly\nsecond line")

    case = Case("op", "fwd", "S", "bf16", Traffic(), [Impl("a", missing), Impl("b", no_attr), Impl("c", broken)])
    results = common.measure_case(case)
    assert [r.skip for r in results] == ["surely_not_an_installed_module_xyz not installed",
                                        "json.no_such_function not found (installed version lacks it)",
                                        "RuntimeError: kernel exploded / badly"]
    assert all(r.timing is None for r in results)
    with pytest.raises(Skip, match="not installed"):
        missing()


@pytest.mark.parametrize("mode", ["fwd", "bwd", "fwd+bwd"])
def test_prepare_modes(mode):
    x = torch.randn(5, 3, requires_grad=True)
    w = torch.randn(3, requires_grad=True)
    calls = []

    def f(x, w):
        calls.append(1)
        y = x * w
        return y.sum() if mode == "fwd+bwd" else y

    prepared = common.prepare(mode, f, (x, w))
    assert list(prepared.grad_to_none) == [x, w]
    assert calls  # the warm-up call ran
    x.grad = w.grad = None
    prepared.fn()
    if mode == "fwd":
        assert x.grad is None
    else:
        assert x.grad is not None and w.grad is not None and w.grad.shape == (3,)
    prepared.fn()  # bwd retains the graph: callable again


# ------------------------------------------------------------------------------------------ CLI
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only exit path")
def test_cli_without_gpu_says_so_and_exits_zero(capsys, tmp_path):
    assert kernels.main(["--quick", "--out", str(tmp_path / "r")]) == 0
    assert "needs a CUDA GPU" in capsys.readouterr().out
    assert not (tmp_path / "r").exists()  # nothing measured, nothing written


def test_quick_set_is_what_gpu_check_promises():
    """--quick (make gpu-check): attention fwd/bwd at 2 lengths, RMSNorm, rotary, CE and fused linear CE at the
    Seed-Coder vocabulary, and no peer that compiles per case (torch.compile, FlexAttention)."""
    cases = kernels.build_cases(kernels.OPS, torch.bfloat16, quick=True)
    assert {c.op for c in cases} == set(kernels.OPS)
    attention = [c for c in cases if c.op == "attention"]
    assert {c.shape for c in attention} == {"dense S2048", "dense S8192"} and {c.mode for c in attention} == {"fwd", "bwd"}
    assert all("155136" in c.shape for c in cases if c.op in ("cross_entropy", "fused_linear_cross_entropy"))
    impls = {i.name for c in cases for i in c.impls}
    assert not impls & set(kernels.COMPILING_PEERS) and {"seedcoder", "liger", "sdpa-cudnn"} <= impls
    full = kernels.build_cases(kernels.OPS, torch.bfloat16, quick=False)
    assert {"torch.compile", "flex-attention"} <= {i.name for c in full for i in c.impls}
    assert {"varlen", "dense-matched"} <= {c.shape for c in full if c.op == "attention"}


def test_scaled_units_and_the_train_header():
    """benchmarks.train printed "params 0.000B" and "0.00 GFLOP" for the debug preset: sizes scale with the value."""
    from benchmarks import train
    from seedcoder.model import model_config

    assert common.scaled(0) == "0" and common.scaled(999) == "999" and common.scaled(1000) == "1K"
    assert common.scaled(1.61e9, common.COUNT_PREFIXES) == "1.61B" and common.scaled(2.1e5, unit="FLOP") == "210 KFLOP"
    assert common.scaled(9.36e9, unit="FLOP") == "9.36 GFLOP" and common.scaled(2.5e12, unit="FLOP") == "2.5 TFLOP"
    debug = train.model_summary(model_config("debug"), 256)
    assert debug == {"params": "131K", "flops_per_token": "887 KFLOP at S=256"}
    assert train.model_summary(model_config("1b"), 8192) == {"params": "1.61B", "flops_per_token": "9.36 GFLOP at S=8192"}


def test_cli_dry_run_lists_cases(capsys):
    assert kernels.main(["--dry-run", "--op", "rms_norm", "cross_entropy"]) == 0
    out = capsys.readouterr().out
    assert "rms_norm bwd 16384x8192 bf16" in out and "cross_entropy fwd+bwd 8192x155136 bf16" in out
    assert "rotary" not in out.split("targets:")[0] and "nothing is measured" in out


# ------------------------------------------------------------------------------------------ every implementation runs
@pytest.fixture
def tiny_shapes(monkeypatch, device):
    """The real cases with tiny shapes on the test device (CPU: our kernels and Liger's in Triton's interpreter)."""
    for name, value in [("DEVICE", device), ("RMS_NORM_ROWS", 5), ("RMS_NORM_HIDDEN", (40,)), ("RMS_NORM_HIDDEN_QUICK", (40,)),
                        ("ROTARY_SHAPE", (2, 6, 4, 2, 16)), ("CE_ROWS", (5,)), ("CE_ROWS_QUICK", (5,)), ("VOCAB", 300),
                        ("FLCE_ROWS", 6), ("FLCE_HIDDEN", 32), ("ATTN_HEADS", 4), ("ATTN_KV_HEADS", 2),
                        ("ATTN_HEAD_DIM", 16), ("ATTN_TOKENS", 32), ("ATTN_SEQLENS", (32,)), ("ATTN_SEQLENS_QUICK", (32,)),
                        ("ATTN_DOC_RANGE", (5, 20)), ("ATTN_VARLEN_ROWS", 1)]:
        monkeypatch.setattr(kernels, name, value)


@pytest.mark.parametrize("op", kernels.OPS)
def test_every_implementation_runs_on_tiny_shapes(tiny_shapes, device, op):
    """Each implementation's factory builds its inputs and its timed callable runs (twice: repeated timing calls),
    or it is a SKIP with a reason. torch.compile peers are left out here (minutes of CPU compilation)."""
    # May fail here: the CUDA C++ backend (needs CUDA tensors and the built extension); on the CPU also Liger,
    # some of whose kernels the Triton interpreter cannot run (e.g. its cross-entropy with numpy 2.x), SDPA's
    # cuDNN / efficient backends (CUDA only) and FlexAttention (no CPU backward).
    cpu_only_failures = {"liger", "sdpa-cudnn", "sdpa-efficient", "flex-attention"}
    may_fail = {"seedcoder-cuda"} | (cpu_only_failures if device.type == "cpu" else set())
    ran, skipped = [], {}
    for case in kernels.build_cases([op], torch.float32, quick=op != "attention"):  # attention: varlen too
        for impl in case.impls:
            if impl.name == "torch.compile":
                continue
            try:
                prepared = impl.factory()
                prepared.fn()
                prepared.fn()
                ran.append(impl.name)
            except Skip as s:
                skipped[impl.name] = s.reason
            except Exception as e:
                assert impl.name in may_fail, f"{case.label} {impl.name}: {e!r}"
                skipped[impl.name] = common.error_summary(e)
    if op == "attention":
        assert {"seedcoder", "seedcoder-deterministic"} <= set(ran), skipped
        assert "SDPA's flash backend takes no attention mask" in skipped["sdpa-flash"]  # the varlen cases
        if device.type == "cuda":  # on the CPU, flex has no backward and cuDNN does not exist
            assert {"sdpa-cudnn", "sdpa-efficient", "flex-attention"} <= set(ran), skipped
        return
    if common.module_available(f"seedcoder.kernels.{op}"):
        assert "seedcoder" in ran and "torch eager" in ran, skipped
    else:
        assert "not installed" in skipped["seedcoder"]
    if common.module_available("liger_kernel") and "liger" not in may_fail:
        assert "liger" in ran, skipped
    assert set(skipped) <= {"seedcoder", "seedcoder-cuda", "torch eager", "apex", "liger"}, skipped


def test_measure_case_assembles_results(monkeypatch):
    """The GPU-only timing and memory functions replaced by fakes (test-only): measure_case records what they return."""
    monkeypatch.setattr(common, "peak_memory_of", lambda prepared: 1234)
    monkeypatch.setattr(common, "time_prepared", lambda prepared, **kw: Timing(1.0, 0.9, 1.2))
    x = torch.ones(3)
    impls = [Impl("seedcoder", lambda: common.prepare("fwd", torch.neg, (x,)), ours=True),
             Impl("peer", lambda: common.optional_import("no_such_peer_module"))]
    case = Case("op", "fwd", "S", "fp32", Traffic(), impls)
    log = io.StringIO()
    results = common.measure_case(case, log=log)
    assert results[0] == Result("seedcoder", True, Timing(1.0, 0.9, 1.2), 1234, None)
    assert results[1].skip == "no_such_peer_module not installed" and not results[1].ours
    assert "1.000 ms" in log.getvalue() and "SKIP(no_such_peer_module not installed)" in log.getvalue()
