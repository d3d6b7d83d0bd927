"""seedcoder benchmarks: `python -m benchmarks.kernels` (kernel throughput vs peers); measuring in common.py, reporting in report.py."""
