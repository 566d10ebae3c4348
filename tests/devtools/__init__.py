"""Development tools the tests and benchmarks share (not in the wheel)."""
