"""Test machinery shared by tests and benchmarks: scratch databases and Redis dbs, test clocks."""
