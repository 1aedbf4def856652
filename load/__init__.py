"""Load generation and benchmarks (run on purpose with `make bench*`; never part of the tests)."""
