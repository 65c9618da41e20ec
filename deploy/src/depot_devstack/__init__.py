"""Depot's local stack without Docker: real servers started as local processes.

``servers`` starts PostgreSQL (or finds one), a Kafka-protocol broker (tansu) and an
S3-protocol server (moto); the test fixtures and ``make dev`` both use it.
"""
