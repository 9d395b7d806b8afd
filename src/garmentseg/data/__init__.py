"""Datasets: the contract, the index and splits, the synthetic studio, DVC versioning."""
