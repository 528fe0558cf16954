"""Benchmark scripts (not tests): `python -m benchmarks.throughput | learning | ui_overhead`."""
