"""Benchmark evaluation: FTRL test environments and τ-bench-style stateful domains."""
