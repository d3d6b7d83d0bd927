"""seedcoder benchmarks: `python -m benchmarks.kernels` (kernel throughput vs peers) and the others; measuring in
common.py, reporting in report.py."""
