"""Depot reconciler: proves PostgreSQL, S3 and the search index agree, and repairs drift.

Only the package skeleton and its command-line entry exist so far; the checks, plan and
apply land with the reconciler issue.
"""
