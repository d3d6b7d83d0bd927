"""Compile gate: build every Triton kernel configuration for real GPU targets without a GPU.

    python -m seedcoder.kernels.compile_gate [--arch 90 80] [--filter NAME ...] [--json out.json] [--quick] [--jobs N]
                                             [--unspecialized] [--expect wgmma tma setmaxnreg]

For each registered CompileSpec and target it compiles the program a real launch runs: the arguments of a
representative launch (CompileSpec.ints, pointers 16-byte aligned) go through Triton's own launch-time
specialisation (the binder and JITFunction._pack_args of triton.runtime.jit), which marks each aligned pointer
and each int divisible by 16 with `tt.divisibility=16` and turns ints equal to 1 into constants; then
`triton.compile(ASTSource(..., attrs=...), target=GPUTarget(...))` with the launch's options. It reads
registers, shared memory and spilled (local) bytes of the cubin with the cuobjdump that ships inside Triton,
and counts in the PTX the global loads (16/8-byte vector `ld.global.v4`/`.v2`, and scalar, with the 1-2 byte
ones among them), 16-byte `cp.async` copies, TMA copies (`cp.async.bulk.tensor`), `wgmma` instructions and
`setmaxnreg` (the register split of warp specialisation: producer warps give registers to the consumers).

Exits non-zero when a kernel fails to compile, spills, is hot (CompileSpec.hot) and has lost its vector
loads, or lacks an instruction its spec expects (CompileSpec.expect: the Hopper kernels' wgmma, TMA and, where
the loop is warp-specialised, setmaxnreg) (see `problems`). --unspecialized compiles without the launch's
specialisation, as this gate did before (what a misaligned launch gets): hot kernels then lose their vector loads
and fail. --expect adds expectations to every selected spec (checks a claim, e.g. that a build is warp-specialised).
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
from typing import Any

if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
    sys.exit("compile_gate: unset TRITON_INTERPRET; interpreted kernels cannot be compiled for a GPU")

import triton  # noqa: E402
from triton import knobs  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource, make_backend  # noqa: E402
from triton.language import str_to_ty  # noqa: E402
from triton.runtime.jit import MockTensor, create_function_from_signature  # noqa: E402

import seedcoder.kernels  # noqa: E402,F401  (importing registers every op's specs)
from seedcoder import fileio  # noqa: E402
from seedcoder.kernels._common import COMPILE_SPECS, CompileSpec  # noqa: E402

CUOBJDUMP = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
_RES = re.compile(r"REG:(\d+)\s+STACK:(\d+)\s+SHARED:(\d+)\s+LOCAL:(\d+)")
_GLOBAL_LOAD = re.compile(r"\bld\.global[\w.:]*")
_VECTOR = re.compile(r"\.v[248]\.")
_SUBWORD = re.compile(r"\.[bsu](?:8|16)$")  # a 1- or 2-byte scalar: element-by-element access of 16-bit data
_CP_ASYNC_16 = re.compile(r"\bcp\.async\.c[ag]\.shared\.global[\w.:]*\s*\[[^\]]*\],\s*\[[^\]]*\],\s*(?:0x10|16)\b")
_TMA = re.compile(r"\bcp\.async\.bulk\.tensor")
_WGMMA = re.compile(r"\bwgmma\.mma_async")
_SETMAXNREG = re.compile(r"\bsetmaxnreg\.")
EXPECTABLE = ("wgmma", "tma", "setmaxnreg", "cp_async_16")  # the counts a CompileSpec.expect may name


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


def memory_instructions(ptx: str) -> dict[str, int]:
    """Static counts in the PTX: vector and scalar global loads (and the 1-2 byte scalars among them), 16-byte
    cp.async copies, TMA copies, wgmma and setmaxnreg instructions."""
    loads = _GLOBAL_LOAD.findall(ptx)
    vector = sum(1 for op in loads if _VECTOR.search(op))
    return {"vector_loads": vector, "scalar_loads": len(loads) - vector,
            "subword_loads": sum(1 for op in loads if _SUBWORD.search(op) and not _VECTOR.search(op)),
            "cp_async_16": len(_CP_ASYNC_16.findall(ptx)),
            "tma": len(_TMA.findall(ptx)), "wgmma": len(_WGMMA.findall(ptx)),
            "setmaxnreg": len(_SETMAXNREG.findall(ptx))}


def launch_arguments(spec: CompileSpec) -> dict[str, Any]:
    """The arguments of a representative real launch as the JIT's specialisation sees them: pointers as 16-byte
    aligned tensors of their dtype (torch allocations are), ints from spec.ints, floats (never specialised) 1.0."""
    names = spec.fn.arg_names
    unknown = sorted(set(spec.signature) - set(names)) + sorted(set(spec.ints) - set(names))
    if unknown:
        raise ValueError(f"{spec.name}: {', '.join(unknown)} not an argument of {spec.fn.__name__}")
    args = {}
    for name in names:
        ty = spec.signature.get(name)
        if ty is None:
            raise ValueError(f"{spec.name}: the signature lacks argument {name!r}")
        if ty == "constexpr":
            args[name] = spec.constexprs[name]
        elif ty.startswith("*"):
            args[name] = MockTensor(str_to_ty(ty, None).element_ty)
        elif ty[0] in "iu":
            if name not in spec.ints:
                raise ValueError(f"{spec.name}: no representative value for int argument {name!r} (CompileSpec.ints)")
            args[name] = spec.ints[name]
        else:
            args[name] = 1.0
    return args


def specialize(spec: CompileSpec, arch: int) -> tuple[ASTSource, dict]:
    """(source, options) of what JITFunction.run compiles for spec's launch arguments on this target: Triton's
    binder specialises the arguments, JITFunction._pack_args turns that into signature, constants and attrs."""
    backend = make_backend(GPUTarget("cuda", arch, 32))
    fn = spec.fn
    kwargs = {**launch_arguments(spec), "num_warps": spec.num_warps, "num_stages": spec.num_stages,
              "debug": fn.debug or knobs.runtime.debug, "instrumentation_mode": knobs.compilation.instrumentation_mode}
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    bound_args, specialization, options = binder(**kwargs)
    options, signature, constexprs, attrs = fn._pack_args(backend, kwargs, bound_args, specialization, options)
    for name, ty in signature.items():  # the declared signature must agree with what the launch derives
        declared = spec.signature[name]
        if ty != declared and ty != "constexpr":
            raise ValueError(f"{spec.name}: argument {name!r} is declared {declared} but a launch with "
                             f"{name}={kwargs[name]!r} passes {ty}")
    return ASTSource(fn, signature, constexprs, attrs), options.__dict__


def compile_spec(spec: CompileSpec, arch: int, *, specialized: bool = True) -> dict:
    unknown = [name for name in spec.expect if name not in EXPECTABLE]
    if unknown:
        raise ValueError(f"{spec.name}: expect names {unknown}, not among the counted instructions {EXPECTABLE}")
    t0 = time.perf_counter()
    if specialized:
        src, options = specialize(spec, arch)
    else:
        src = ASTSource(fn=spec.fn, signature=spec.signature, constexprs=spec.constexprs)
        options = {"num_warps": spec.num_warps, "num_stages": spec.num_stages}
    k = triton.compile(src, target=GPUTarget("cuda", arch, 32), options=options)
    return {
        "kernel": spec.name,
        "arch": f"sm_{arch}{'a' if arch == 90 else ''}",
        "num_warps": spec.num_warps,
        "num_stages": spec.num_stages,
        "constexprs": {k_: v for k_, v in spec.constexprs.items()},
        "specialized": specialized,
        "hot": spec.hot,
        "expect": list(spec.expect),
        **resource_usage(k.asm["cubin"]),
        "shared": k.metadata.shared,
        **memory_instructions(k.asm["ptx"]),
        "seconds": round(time.perf_counter() - t0, 2),
    }


def problems(row: dict) -> list[str]:
    """Why a compiled row fails the gate: it spills, or it is hot (a bf16 kernel of the training step) and has lost
    its vector loads: it has no vector access (ld.global.v2/v4, 16-byte cp.async, TMA), or it reads one of its
    16-bit tensors element by element (1-2 byte scalar loads; its scalar 4-8 byte loads are per-row values such
    as lse, rstd or positions), or it lacks an instruction its spec expects (none of them in the PTX)."""
    out = []
    missing = [name for name in row.get("expect", ()) if row[name] == 0]
    if missing:
        out.append(f"lost {', '.join(missing)} (expected: {', '.join(row['expect'])})")
    if row["local"] > 0:
        out.append(f"spills {row['local']} B to local memory")
    vector = row["vector_loads"] + row["cp_async_16"] + row["tma"]
    if row["hot"] and (vector == 0 or row["subword_loads"] > 0):
        out.append(f"hot kernel lost its vector loads: {vector} vector accesses (ld.global.v2/v4, 16-byte cp.async, "
                   f"TMA), {row['subword_loads']} 1-2 byte scalar ld.global")
    return out


def spec_index(spec: CompileSpec) -> int:
    return next(i for i, s in enumerate(COMPILE_SPECS) if s is spec)


def _compile_job(job: tuple[int, int, bool]) -> tuple[dict | None, str | None]:
    """(row, None) or (None, error): runs in a worker process, which registered the same specs on import."""
    index, arch, specialized = job
    try:
        return compile_spec(COMPILE_SPECS[index], arch, specialized=specialized), None
    except Exception as e:
        return None, f"{type(e).__name__}: {e}"


TABLE_HEADER = ("| kernel | arch | warps | stages | constexprs | regs | shared B | spill B | ld.global vector/scalar "
                "(1-2 B) | cp.async 16 B | TMA | wgmma | setmaxnreg | s |\n"
                "|---|---|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|")


def table_row(r: dict) -> str:
    cx = " ".join(f"{k}={v}" for k, v in r["constexprs"].items())
    name = r["kernel"] + (" (hot)" if r["hot"] else "")
    return (f"| {name} | {r['arch']} | {r['num_warps']} | {r['num_stages']} | {cx} | {r['registers']} | {r['shared']} "
            f"| {r['local']} | {r['vector_loads']}/{r['scalar_loads']} ({r['subword_loads']}) | {r['cp_async_16']} "
            f"| {r['tma']} | {r['wgmma']} | {r['setmaxnreg']} | {r['seconds']} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", type=int, nargs="+", default=[90, 80], help="compute capabilities (90 builds sm_90a)")
    ap.add_argument("--filter", nargs="+", default=[""], help="only kernels whose name contains one of these")
    ap.add_argument("--json", help="also write the rows to this JSON file")
    ap.add_argument("--quick", action="store_true",
                    help="only the specs marked quick (every kernel, a representative config of the autotuned ones)")
    ap.add_argument("--jobs", type=int, default=1, help="compile in this many processes")
    ap.add_argument("--unspecialized", action="store_true",
                    help="compile without the launch's divisibility-by-16 specialisation (what a misaligned launch gets)")
    ap.add_argument("--expect", nargs="+", default=[], choices=EXPECTABLE,
                    help="fail any selected kernel whose PTX lacks these instructions (added to its spec's own)")
    args = ap.parse_args(argv)
    specs = [s for s in COMPILE_SPECS if any(f in s.name for f in args.filter) and (s.quick or not args.quick)]
    if not specs:
        print("compile_gate: no kernels registered (or none match --filter)", file=sys.stderr)
        return 1
    rows, failures = [], []
    print(TABLE_HEADER)
    # An sm_90 autotuning config may hold more pipeline stages than sm_80's shared memory: archs limits it.
    jobs = [(i, arch) for i, spec in enumerate(specs) for arch in args.arch if spec.archs is None or arch in spec.archs]
    with concurrent.futures.ProcessPoolExecutor(max(1, args.jobs)) as pool:
        results = pool.map(_compile_job, [(spec_index(specs[i]), arch, not args.unspecialized) for i, arch in jobs])
        for (i, arch), (r, error) in zip(jobs, results):
            spec = specs[i]
            if error is not None:  # report every failure, then fail once at the end
                failures.append(f"{spec.name} sm_{arch}: {error}")
                print(f"| {spec.name} | sm_{arch} | FAILED: {error.split(':')[0]} |")
                continue
            r["expect"] = list(dict.fromkeys(r["expect"] + args.expect))  # the spec's own, then --expect's
            rows.append(r)
            failures += [f"{r['kernel']} {r['arch']}: {problem}" for problem in problems(r)]
            print(table_row(r), flush=True)
    if args.json:
        fileio.atomic_write_text(args.json, json.dumps({"rows": rows, "failures": failures}, indent=1))
    for msg in failures:
        print("FAILED:", msg, file=sys.stderr)
    print(f"compile_gate: {len(rows)} compiled, {len(failures)} failed", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
