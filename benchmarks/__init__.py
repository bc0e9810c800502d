"""Benchmarks (never run as tests): ``make bench`` or ``python -m benchmarks [-n N] [names...]``."""
