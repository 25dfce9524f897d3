"""Loopback stand-ins of the source platforms' APIs, for tests, benchmarks and `hub demo`."""
