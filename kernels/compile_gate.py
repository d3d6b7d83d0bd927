"""Compile gate: build every Triton kernel configuration for real GPU targets without a GPU.

    python -m seedcoder.kernels.compile_gate [--arch 90 80] [--json out.json] [--quick] [--jobs N]

For each registered CompileSpec and target it runs `triton.compile(ASTSource(...), target=GPUTarget(...))`,
then reads registers, shared memory and spilled (local) bytes of the cubin with the cuobjdump that ships
inside Triton. Exits non-zero when a kernel fails to compile. On sm_90 it also reports whether the PTX
uses wgmma (only kernels with tl.dot can).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import re
import subprocess
import sys
import tempfile
import time

if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
    sys.exit("compile_gate: unset TRITON_INTERPRET; interpreted kernels cannot be compiled for a GPU")

import seedcoder.kernels  # noqa: E402,F401  (importing registers every op's specs)
import triton  # noqa: E402
from seedcoder.kernels._common import COMPILE_SPECS, CompileSpec  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

CUOBJDUMP = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
_RES = re.compile(r"REG:(\d+)\s+STACK:(\d+)\s+SHARED:(\d+)\s+LOCAL:(\d+)")


def resource_usage(cubin: bytes) -> dict[str, int]:
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run([CUOBJDUMP, "-res-usage", f.name], capture_output=True, text=True, check=True).stdout
    m = _RES.search(out)
    if m is None:
        raise RuntimeError(f"cannot parse cuobjdump -res-usage output:\n{out}")
    reg, stack, shared, local = map(int, m.groups())
    return {"registers": reg, "stack": stack, "static_shared": shared, "local": local}


def compile_spec(spec: CompileSpec, arch: int) -> dict:
    t0 = time.perf_counter()
    src = ASTSource(fn=spec.fn, signature=spec.signature, constexprs=spec.constexprs)
    options = {"num_warps": spec.num_warps, "num_stages": spec.num_stages}
    k = triton.compile(src, target=GPUTarget("cuda", arch, 32), options=options)
    res = resource_usage(k.asm["cubin"])
    return {
        "kernel": spec.name,
        "arch": f"sm_{arch}{'a' if arch == 90 else ''}",
        "num_warps": spec.num_warps,
        "num_stages": spec.num_stages,
        "constexprs": {k_: v for k_, v in spec.constexprs.items()},
        **res,
        "shared": k.metadata.shared,
        "wgmma": "wgmma" in k.asm["ptx"],
        "seconds": round(time.perf_counter() - t0, 2),
    }


def spec_index(spec: CompileSpec) -> int:
    return next(i for i, s in enumerate(COMPILE_SPECS) if s is spec)


def _compile_job(job: tuple[int, int]) -> tuple[dict | None, str | None]:
    """(row, None) or (None, error): runs in a worker process, which registered the same specs on import."""
    index, arch = job
    try:
        return compile_spec(COMPILE_SPECS[index], arch), None
    except Exception as e:
        return None, f"{type(e).__name__}: {e}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", type=int, nargs="+", default=[90, 80], help="compute capabilities (90 builds sm_90a)")
    ap.add_argument("--filter", default="", help="only kernels whose name contains this")
    ap.add_argument("--json", help="also write the rows to this JSON file")
    ap.add_argument("--quick", action="store_true",
                    help="only the specs marked quick (every kernel, a representative config of the autotuned ones)")
    ap.add_argument("--jobs", type=int, default=1, help="compile in this many processes")
    args = ap.parse_args(argv)
    specs = [s for s in COMPILE_SPECS if args.filter in s.name and (s.quick or not args.quick)]
    if not specs:
        print("compile_gate: no kernels registered (or none match --filter)", file=sys.stderr)
        return 1
    rows, failures = [], []
    print("| kernel | arch | warps | stages | constexprs | regs | shared B | spill (local) B | wgmma | s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    # An sm_90 autotuning config may hold more pipeline stages than sm_80's shared memory: archs limits it.
    jobs = [(i, arch) for i, spec in enumerate(specs) for arch in args.arch if spec.archs is None or arch in spec.archs]
    with concurrent.futures.ProcessPoolExecutor(max(1, args.jobs)) as pool:
        results = pool.map(_compile_job, [(spec_index(specs[i]), arch) for i, arch in jobs])
        for (i, arch), (r, error) in zip(jobs, results):
            spec = specs[i]
            if error is not None:  # report every failure, then fail once at the end
                failures.append(f"{spec.name} sm_{arch}: {error}")
                print(f"| {spec.name} | sm_{arch} | FAILED: {error.split(':')[0]} |")
                continue
            rows.append(r)
            cx = " ".join(f"{k}={v}" for k, v in r["constexprs"].items())
            print(f"| {r['kernel']} | {r['arch']} | {r['num_warps']} | {r['num_stages']} | {cx} | {r['registers']} | "
                  f"{r['shared']} | {r['local']} | {'yes' if r['wgmma'] else '-'} | {r['seconds']} |", flush=True)
    if args.json:
        tmp = args.json + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"rows": rows, "failures": failures}, f, indent=1)
        os.replace(tmp, args.json)
    for msg in failures:
        print("FAILED:", msg, file=sys.stderr)
    print(f"compile_gate: {len(rows)} compiled, {len(failures)} failed", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
