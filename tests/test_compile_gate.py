"""Compile gate, quick set (every kernel, one representative config of each autotuned one; `make compile-gate`
builds every config): compiles for sm_90a and sm_80 without a GPU, with the divisibility-by-16 specialisation a
real launch gets, spills nothing, and the hot kernels keep their vector loads. Runs
`python -m seedcoder.kernels.compile_gate` in a fresh process (this process runs kernels in the interpreter,
whose functions cannot be compiled)."""

import json
import os
import subprocess
import sys

from seedcoder.kernels._common import COMPILE_SPECS

HOT_OPS = ("rms_norm_fwd", "rms_norm_bwd", "rotary", "cross_entropy_partial", "cross_entropy_grad",
           "cross_entropy_loss_and_grad", "flash_attn_fwd", "flash_attn_dkdv", "flash_attn_dq")


def run_gate(tmp_path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path / "gate.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-m", "seedcoder.kernels.compile_gate", "--json", str(out), *args],
                          env=env, capture_output=True, text=True, timeout=900)
    print(proc.stdout)  # the table, shown with pytest -s or on failure
    return proc, json.loads(out.read_text())


def test_every_triton_kernel_compiles_for_sm90a_and_sm80(tmp_path):
    proc, report = run_gate(tmp_path, "--arch", "90", "80", "--quick", "--jobs", "2")
    assert proc.returncode == 0, f"compile gate failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    assert report["failures"] == []
    compiled = {(r["kernel"], r["arch"]) for r in report["rows"]}
    quick = [s for s in COMPILE_SPECS if s.quick]
    expected = sum(len([a for a in (90, 80) if s.archs is None or a in s.archs]) for s in quick)
    names = {s.name for s in quick}
    assert len(report["rows"]) == expected and {n for n, _ in compiled} == names
    for op in ("rms_norm", "rotary", "cross_entropy", "flash_attn_fwd", "flash_attn_dkdv", "flash_attn_dq"):
        assert any(op in n for n in names), f"no compile spec registered for {op}"
    spilled = [f"{r['kernel']} {r['arch']} {r['constexprs']}: {r['local']} B" for r in report["rows"] if r["local"] > 0]
    assert not spilled, "register spills (local memory):\n" + "\n".join(spilled)
    assert all(r["specialized"] for r in report["rows"])

    # The hot kernels, all in the quick set, read their bf16 tensors in vector accesses at their real-launch shapes.
    assert all(s.quick for s in COMPILE_SPECS if s.hot)
    hot = [r for r in report["rows"] if r["hot"]]
    for op in HOT_OPS:
        assert {r["arch"] for r in hot if r["kernel"].startswith(op + "[")} == {"sm_90a", "sm_80"}, f"no hot {op} spec"
    for r in hot:
        assert r["vector_loads"] + r["cp_async_16"] + r["tma"] > 0 and r["subword_loads"] == 0, r
    # The two examples: flash forward 128x64 pipelines 16-byte cp.async into wgmma on sm_90a, and RMSNorm
    # at width 4096 (with the residual) loads x, residual and weight as 16-byte vectors only.
    fwd = next(r for r in hot if r["kernel"] == "flash_attn_fwd[bf16,d=128,causal=1]" and r["arch"] == "sm_90a")
    assert fwd["cp_async_16"] > 0 and fwd["wgmma"] > 0 and fwd["vector_loads"] > 0 and fwd["shared"] > 64 * 1024
    norm = next(r for r in hot if r["kernel"] == "rms_norm_fwd[bf16,w=bf16,res=1]" and r["constexprs"]["BLOCK_N"] == 4096
                and r["arch"] == "sm_90a")
    assert norm["vector_loads"] == 6 and norm["scalar_loads"] == 0


def test_an_unspecialized_compile_is_detected_as_losing_its_vector_loads(tmp_path):
    """Compiled without the launch's divisibility hints (what the gate did before, and what a misaligned launch
    gets), the same hot kernels load element by element: the gate must fail on them."""
    names = ["flash_attn_fwd[bf16,d=128,causal=1]", "rms_norm_fwd[bf16,w=bf16,res=1]"]
    proc, report = run_gate(tmp_path, "--arch", "90", "--quick", "--unspecialized", "--filter", *names)
    assert proc.returncode != 0
    hot = [r for r in report["rows"] if r["hot"]]
    assert {r["kernel"] for r in hot} == set(names) and not any(r["specialized"] for r in hot)
    for r in hot:
        assert r["vector_loads"] + r["cp_async_16"] == 0 and r["subword_loads"] > 0, r  # bf16 element by element
        assert any(f"{r['kernel']} sm_90a: hot kernel lost its vector loads" in f for f in report["failures"])
    assert "lost its vector loads" in proc.stderr


def test_hopper_builds_show_wgmma_tma_and_warp_specialisation(tmp_path):
    """The sm_90 path's quick builds (bf16, d=128): the forward causal and not, warp-specialised and not, and the
    dK/dV kernel (causal with atomic dQ, non-causal deterministic): wgmma and TMA loads in every one, setmaxnreg
    (the producer/consumer register split) exactly where the forward's KV loop is warp-specialised, registers and
    shared memory read, no spills; each row carries the expectations the gate checked."""
    proc, report = run_gate(tmp_path, "--arch", "90", "--quick", "--jobs", "2", "--filter", "flash_attn_hopper_")
    assert proc.returncode == 0, f"compile gate failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    rows = [r for r in report["rows"] if r["kernel"].startswith("flash_attn_hopper_fwd[")]
    dkdv = [r for r in report["rows"] if r["kernel"].startswith("flash_attn_hopper_dkdv[")]
    assert len(rows) + len(dkdv) == len(report["rows"])
    assert {(r["constexprs"]["CAUSAL"], r["constexprs"]["ATOMIC_DQ"]) for r in dkdv} == {(True, True), (False, False)}
    for r in dkdv:
        assert r["wgmma"] > 0 and r["tma"] > 0 and r["local"] == 0 and r["cp_async_16"] == 0, r
        assert r["expect"] == ["wgmma", "tma"] and r["hot"], r
    assert {(r["constexprs"]["CAUSAL"], r["constexprs"]["WARP_SPECIALIZE"]) for r in rows} == {
        (True, True), (True, False), (False, True), (False, False)}
    for r in rows:
        ws = r["constexprs"]["WARP_SPECIALIZE"]
        assert r["arch"] == "sm_90a" and r["wgmma"] > 0 and r["tma"] > 0 and r["local"] == 0, r
        assert r["registers"] > 0 and r["shared"] > 64 * 1024 and r["cp_async_16"] == 0, r  # K/V come by TMA only
        assert (r["setmaxnreg"] > 0) == ws, r
        assert r["expect"] == ["wgmma", "tma"] + (["setmaxnreg"] if ws else []), r


def test_a_build_that_lacks_an_expected_instruction_fails_the_gate(tmp_path):
    """The failure path of CompileSpec.expect, on real builds: the Hopper forward built without warp specialisation
    has no setmaxnreg and the sm_80 forward has no TMA, so expecting them (--expect) must fail both, by name."""
    hopper = "flash_attn_hopper_fwd[bf16,d=128,causal=1,ws=0]"
    sm80 = "flash_attn_fwd[bf16,d=128,causal=1]"
    proc, report = run_gate(tmp_path, "--arch", "90", "--quick", "--filter", hopper, sm80, "--expect", "setmaxnreg", "tma")
    assert proc.returncode != 0
    assert {r["kernel"] for r in report["rows"]} == {hopper, sm80}
    assert f"{hopper} sm_90a: lost setmaxnreg (expected: wgmma, tma, setmaxnreg)" in report["failures"]
    assert f"{sm80} sm_90a: lost setmaxnreg, tma (expected: setmaxnreg, tma)" in report["failures"]
    assert len(report["failures"]) == 2 and "lost setmaxnreg" in proc.stderr
