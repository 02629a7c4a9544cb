"""Benchmarks behind ``coarsegrad bench``: training epochs and inference throughput."""
