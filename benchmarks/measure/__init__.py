"""Measurement scripts: each prints figures that the README or docs cite (`python -m latticegym.benchmarks.measure.<name>`)."""
