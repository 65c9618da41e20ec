"""Depot indexer: keeps the full-text index in step with document events, and serves search."""
