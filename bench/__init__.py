"""Benchmarks (not tests): `make bench` prints the figures."""
