"""Benchmarks: pairs against a bare baseline in the same run, reported as ratios and microseconds."""
