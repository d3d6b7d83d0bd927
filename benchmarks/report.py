"""The reporting half of the benchmarks: rows derived from cases, results and the environment (GB/s of model bytes,
% of the measured ceilings, time relative to ours), target verdicts, and the writers (markdown, CSV, JSON, written
atomically). Tests feed it fake results on a CPU-only machine; such a report is built with fake=True and says so in
every output format. The measuring half is `benchmarks.common`.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from benchmarks.common import GB, MB, Case, Result, atomic_write_text


# ------------------------------------------------------------------------------------------ report
@dataclass
class Row:
    op: str
    mode: str
    shape: str
    dtype: str
    impl: str
    ours: bool
    median_ms: float | None
    p20_ms: float | None
    p80_ms: float | None
    model_bytes: int
    gbps: float | None  # model bytes / median time
    pct_copy_bw: float | None  # gbps / measured copy bandwidth, in %
    tflops: float | None  # model FLOPs / median time (compute-bound cases only)
    pct_matmul: float | None
    time_vs_ours: float | None  # median / median of the case's first 'ours' implementation (>1: ours is faster)
    peak_mb: float | None  # max_memory_allocated delta of one call
    extra_mb: float | None  # peak minus the outputs every implementation must allocate (Case.required_output_bytes)
    skip: str | None

    @property
    def label(self) -> str:
        return f"{self.op} {self.mode} {self.shape} {self.dtype}"


def derive_rows(case: Case, results: Sequence[Result], env: dict) -> list[Row]:
    copy_bw, matmul = env.get("copy_bw_gbps"), env.get("matmul_bf16_tflops")
    ours = next((r for r in results if r.ours), None)
    ours_ms = ours.timing.median_ms if ours is not None and ours.timing is not None else None
    rows = []
    for r in results:
        t = r.timing
        if t is None:
            rows.append(Row(case.op, case.mode, case.shape, case.dtype, r.impl, r.ours, None, None, None, case.traffic.total,
                            None, None, None, None, None, None, None, r.skip or "no result"))
            continue
        seconds = t.median_ms * 1e-3
        gbps = case.traffic.total / seconds / GB
        tflops = case.flops / seconds / 1e12 if case.flops else None
        rows.append(Row(
            case.op, case.mode, case.shape, case.dtype, r.impl, r.ours, t.median_ms, t.p20_ms, t.p80_ms, case.traffic.total,
            gbps, 100 * gbps / copy_bw if copy_bw else None,
            tflops, 100 * tflops / matmul if (tflops is not None and matmul) else None,
            t.median_ms / ours_ms if ours_ms else None,
            r.peak_bytes / MB if r.peak_bytes is not None else None,
            (r.peak_bytes - case.required_output_bytes) / MB if r.peak_bytes is not None else None,
            None))
    return rows


COMPARISONS = {">=": lambda v, t: v >= t, ">": lambda v, t: v > t, "<=": lambda v, t: v <= t, "<": lambda v, t: v < t}


@dataclass(frozen=True)
class Target:
    """A goal from the issue, checked on every matching row (op, mode; impl: ours unless named).

    metric: "pct_copy_bw" (% of measured copy bandwidth), "speedup_vs" (peer time / row time),
    "time_ratio_vs" (row time / peer time), "extra_mem_gb" (peak Δ minus required outputs, in GB),
    "tflops_vs_case" (row TFLOP/s / TFLOP/s of the same impl in the case of shape `peer`).
    """

    description: str
    op: str
    mode: str
    metric: str
    comparison: str
    threshold: float
    peer: str | None = None  # "tflops_vs_case": the shape of the other case (same op, mode, impl)
    impl: str | None = None  # None: every 'ours' row
    shape: str | None = None  # None: rows of every shape

    def needs(self) -> str:
        unit = {"pct_copy_bw": "%", "speedup_vs": "×", "time_ratio_vs": "×", "extra_mem_gb": " GB",
                "tflops_vs_case": "× TFLOP/s of"}[self.metric]
        peer = f" {self.peer}" if self.peer else ""
        return f"{self.comparison} {self.threshold:g}{unit}{peer}"


@dataclass
class TargetResult:
    target: str
    row: str  # case label + impl
    metric: str
    measured: float | None
    needs: str
    status: str  # PASS, MISS, or N/A
    note: str = ""


def format_metric(metric: str, value: float) -> str:
    if metric == "pct_copy_bw":
        return f"{value:.1f}%"
    if metric in ("speedup_vs", "time_ratio_vs", "tflops_vs_case"):
        return f"{value:.2f}×"
    if metric == "extra_mem_gb":
        return f"{value:.2f} GB"
    return f"{value:g}"


def evaluate_targets(targets: Iterable[Target], rows: Sequence[Row]) -> list[TargetResult]:
    """PASS/MISS for each target on each matching row, computed from the measured rows; N/A (with the reason)
    when the row or the peer it needs was skipped. A target with no matching row at all reports N/A."""
    out = []
    for target in targets:
        matching = [r for r in rows if r.op == target.op and r.mode == target.mode
                    and (r.impl == target.impl if target.impl else r.ours)
                    and (target.shape is None or r.shape == target.shape)]
        if not matching:
            out.append(TargetResult(target.description, f"{target.op} {target.mode}", target.metric, None, target.needs(), "N/A",
                                    "no such row measured"))
        for row in matching:
            where = f"{row.label} {row.impl}"
            value, note = None, ""
            peer = None
            if target.metric == "tflops_vs_case":
                peer = next((r for r in rows if (r.op, r.mode, r.dtype, r.impl, r.shape)
                             == (row.op, row.mode, row.dtype, row.impl, target.peer)), None)
            elif target.peer:
                peer = next((r for r in rows if r.label == row.label and r.impl == target.peer), None)
            if row.skip:
                note = f"row skipped: {row.skip}"
            elif target.metric == "pct_copy_bw":
                value = row.pct_copy_bw
                note = "" if value is not None else "no copy bandwidth measured"
            elif target.metric == "extra_mem_gb":
                value = row.extra_mb * MB / GB if row.extra_mb is not None else None
                note = "" if value is not None else "no memory measured"
            elif target.metric == "tflops_vs_case":
                if peer is None or peer.tflops is None or row.tflops is None:
                    note = f"no measured {target.peer} row" if row.tflops is not None else "no TFLOP/s"
                else:
                    value = row.tflops / peer.tflops
                    note = f"{row.tflops:.0f} vs {peer.tflops:.0f} TFLOP/s"
            elif target.metric in ("speedup_vs", "time_ratio_vs"):
                if peer is None:
                    note = f"no {target.peer} row"
                elif peer.skip or peer.median_ms is None:
                    note = f"{target.peer} SKIP({peer.skip})"
                else:
                    value = (peer.median_ms / row.median_ms if target.metric == "speedup_vs" else row.median_ms / peer.median_ms)
                    note = f"{target.peer} {peer.median_ms:.3f} ms vs {row.median_ms:.3f} ms"
            else:
                raise ValueError(f"unknown target metric {target.metric!r}")
            if value is None:
                out.append(TargetResult(target.description, where, target.metric, None, target.needs(), "N/A", note))
            else:
                ok = COMPARISONS[target.comparison](value, target.threshold)
                out.append(TargetResult(target.description, where, target.metric, value, target.needs(), "PASS" if ok else "MISS",
                                        note))
    return out


@dataclass
class Report:
    title: str
    env: dict
    rows: list[Row]
    targets: list[TargetResult]
    formulas: list[dict]  # {"op", "mode", "formula", "example"}
    notes: list[str]
    fake: bool = False  # True only in tests: the timings were injected, not measured


FAKE_BANNER = "**TEST-ONLY REPORT: the timings below were injected by a test, they are NOT measurements.**"


def build_report(title: str, cases: Sequence[Case], results: dict[str, Sequence[Result]], env: dict,
                 targets: Sequence[Target], *, notes: Sequence[str] = (), fake: bool = False) -> Report:
    """results maps Case.label to that case's Results (from measure_case, or a test's fakes)."""
    rows: list[Row] = []
    formulas: list[dict] = []
    seen = set()
    for case in cases:
        rows.extend(derive_rows(case, results.get(case.label, []), env))
        if (case.op, case.mode) not in seen:
            seen.add((case.op, case.mode))
            formulas.append({"op": case.op, "mode": case.mode, "formula": case.traffic.formula,
                             "example": f"{case.shape} {case.dtype}: {case.traffic.total / MB:.1f} MB"
                             + (f", {case.flops / 1e12:.1f} TFLOP" if case.flops else "")})
    return Report(title, dict(env), rows, evaluate_targets(targets, rows), formulas, list(notes), fake)


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "" if value is None else f"{value:{spec}}{suffix}"


ENV_FIELDS = [("gpu", "GPU"), ("compute_capability", "compute capability"), ("gpu_memory_gb", "GPU memory (GB)"),
              ("driver", "driver"), ("cuda_runtime", "CUDA (torch)"), ("torch", "torch"), ("triton", "triton"),
              ("python", "python"), ("date_utc", "date"), ("host", "host")]


def render_markdown(report: Report) -> str:
    env = report.env
    out = io.StringIO()
    w = lambda line="": out.write(line + "\n")
    w(f"# {report.title}")
    w()
    if report.fake:
        w(FAKE_BANNER)
        w()
    w("| | |")
    w("|---|---|")
    for key, name in ENV_FIELDS:
        if key in env:
            w(f"| {name} | {env[key]} |")
    if env.get("copy_bw_gbps") is not None:
        w(f"| measured copy bandwidth | {env['copy_bw_gbps']:.0f} GB/s (device-to-device copy, 2·bytes / time) |")
    if env.get("matmul_bf16_tflops") is not None:
        w(f"| measured bf16 matmul | {env['matmul_bf16_tflops']:.0f} TFLOP/s (8192³, 2·n³ / time) |")
    extra = [k for k in env if k not in dict(ENV_FIELDS) and k not in ("copy_bw_gbps", "matmul_bf16_tflops")]
    for key in extra:
        w(f"| {key} | {env[key]} |")
    w()
    w("## Results")
    w()
    w("| op | mode | shape | dtype | impl | median ms | p20 ms | p80 ms | GB/s | % copy BW | TFLOP/s | % matmul "
      "| t / t(ours) | peak Δ MB |")
    w("|---|---|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for r in report.rows:
        if r.skip:
            w(f"| {r.op} | {r.mode} | {r.shape} | {r.dtype} | {r.impl} | SKIP({r.skip}) | | | | | | | | |")
            continue
        w(f"| {r.op} | {r.mode} | {r.shape} | {r.dtype} | {r.impl} | {r.median_ms:.3f} | {r.p20_ms:.3f} | {r.p80_ms:.3f} "
          f"| {_fmt(r.gbps, '.0f')} | {_fmt(r.pct_copy_bw, '.1f', '%')} | {_fmt(r.tflops, '.0f')} "
          f"| {_fmt(r.pct_matmul, '.1f', '%')} | {_fmt(r.time_vs_ours, '.2f', '×')} | {_fmt(r.peak_mb, '.1f')} |")
    w()
    w("## Targets (computed from the rows above)")
    w()
    w("| target | row | measured | needs | result | detail |")
    w("|---|---|--:|---|---|---|")
    for t in report.targets:
        measured = format_metric(t.metric, t.measured) if t.measured is not None else ""
        w(f"| {t.target} | {t.row} | {measured} | {t.needs} | {t.status} | {t.note} |")
    w()
    w("## Model bytes (minimum traffic each op must move; GB/s and % copy BW use these)")
    w()
    w("| op | mode | model bytes | example |")
    w("|---|---|---|---|")
    for f in report.formulas:
        w(f"| {f['op']} | {f['mode']} | {f['formula']} | {f['example']} |")
    if report.notes:
        w()
        for note in report.notes:
            w(f"- {note}")
    return out.getvalue()


CSV_FIELDS = [f.name for f in dataclasses.fields(Row)]


def render_csv(report: Report) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS + ["fake_timings"], lineterminator="\n")
    writer.writeheader()
    for row in report.rows:
        writer.writerow({**dataclasses.asdict(row), "fake_timings": report.fake})
    return out.getvalue()


def render_json(report: Report) -> str:
    payload = {
        "title": report.title,
        "fake_timings": report.fake,
        "environment": report.env,
        "rows": [dataclasses.asdict(r) for r in report.rows],
        "targets": [dataclasses.asdict(t) for t in report.targets],
        "model_bytes": report.formulas,
        "notes": report.notes,
    }
    return json.dumps(payload, indent=2, default=str) + "\n"


def write_report(report: Report, out_dir: str, stem: str) -> dict[str, str]:
    """Write <stem>.md, <stem>.csv and <stem>.json under out_dir; returns {format: path}."""
    paths = {ext: os.path.join(out_dir, f"{stem}.{ext}") for ext in ("md", "csv", "json")}
    atomic_write_text(paths["md"], render_markdown(report))
    atomic_write_text(paths["csv"], render_csv(report))
    atomic_write_text(paths["json"], render_json(report))
    return paths
