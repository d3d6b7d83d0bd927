"""Compile gate, quick set (every kernel, one representative config of each autotuned one; `make compile-gate`
builds every config): compiles for sm_90a and sm_80 without a GPU and spills nothing. Runs
`python -m seedcoder.kernels.compile_gate` in a fresh process (this process runs kernels in the interpreter,
whose functions cannot be compiled)."""

import json
import os
import subprocess
import sys

from seedcoder.kernels._common import COMPILE_SPECS


def test_every_triton_kernel_compiles_for_sm90a_and_sm80(tmp_path):
    out = tmp_path / "gate.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-m", "seedcoder.kernels.compile_gate", "--arch", "90", "80", "--json", str(out),
                           "--quick", "--jobs", "2"],
                          env=env, capture_output=True, text=True, timeout=900)
    print(proc.stdout)  # the registers / shared / spills table, shown with pytest -s or on failure
    assert proc.returncode == 0, f"compile gate failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    report = json.loads(out.read_text())
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
