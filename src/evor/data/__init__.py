"""Datasets: generation with OGBench's oracles, loading, importing, validation."""
