"""Loopback stand-ins of the destination tools, for tests, benchmarks and `hub demo`."""
