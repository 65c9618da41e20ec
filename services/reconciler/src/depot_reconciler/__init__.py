"""Depot reconciler: proves PostgreSQL, S3 and the search index agree, and repairs drift.

``checks`` (pure classification and the key-ordered merge) → ``scan`` (streams of S3 and
PostgreSQL pages) → ``plan`` (persist the run and its findings) → ``apply`` (re-check, then
emit compensations through ``reconcile.outbox``); ``cli`` is the operator's entry point.
"""
