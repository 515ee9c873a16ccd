"""Test machinery shared by tests and benchmarks: scratch servers state, test clocks."""
