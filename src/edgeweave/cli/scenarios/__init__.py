"""Scenarios that measure the stages in front of a served model (semantic cache, input filter):
run by `edgeweave cache-bench` / `edgeweave filter-bench` and by the benchmarks of the same
names, so both print the same tables from the same code."""
