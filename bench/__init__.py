"""Benchmarks for issue-bridge; see bench/README.md and docs/benchmarks.md."""
