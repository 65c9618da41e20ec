"""Servers other than Depot that a benchmark measures beside it (installed and run by the bench)."""
