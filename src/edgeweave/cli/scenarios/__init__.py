"""Scenarios that measure the stages in front of a served model (semantic cache, input filter):
run by `edgeweave front cache` / `edgeweave front filter` and by the benchmarks of the same
names, so both print the same tables from the same code."""
